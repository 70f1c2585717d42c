/*
 * samples/smtp/smtp.c - the "smtp" protocol module: an inbound ESMTP server (RFC 5321)
 * built only on the public API. docs/smtp.md is its guide.
 *
 * A session reads its commands and message bodies with tryread_until on one construct
 * (LF for commands, CRLF.CRLF for bodies) and answers a pipelined batch of commands
 * with one gathered write (ec_event_io_queue + event_io_retry). In spool mode the body
 * record goes to a pool job that writes it to tmp/, fsyncs it, renames it into new/ and
 * fsyncs the directory; the session is suspended meanwhile (the seed's event_post_dup
 * pattern, resumed by ec_async_wake_event) and answers 250 only after the job succeeded.
 * In sink mode it answers 250 at once and stores nothing.
 *
 * Safety: only CRLF "." CRLF ends a body; bare CR or LF in commands is refused and in
 * bodies refused or accepted as configured (SMTP smuggling); bytes a client pipelines
 * after STARTTLS are refused or dropped (CVE-2011-0411); every input is bounded (line
 * length, message size, recipients, errors, sessions per client and in total, timeouts).
 */
#include "smtp.h"

#include "ec_config.h"
#include "ec_framework.h"
#include "ec_growbuf.h"
#include "ec_log.h"
#include "ec_malloc.h"
#include "ec_ssl.h"
#include "ec_thread_pool.h"
#include "event.h"
#include "scheduler.h"
#include "sp_async.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define SMTP_MAX_SHARDS   1024
#define SMTP_OUT_HIGH     65536 /* stop reading commands while this much output waits */
#define SMTP_IDLE_OUT_MAX 4096  /* largest reply buffer an idle session keeps */
#define SMTP_ADDR_MAX     256   /* RFC 5321 4.5.3.1.3: a path is at most 256 octets */
#define SMTP_HELO_MAX     255
#define SMTP_IP_BUCKETS   1024
#define SMTP_IP_STRIPES   16
#define SMTP_TIMER_MIN_S  0.05
#define SMTP_DATA_END     "\r\n.\r\n"
#define SMTP_DATA_END_LEN 5

/* ---- settings ------------------------------------------------------------------------ */

enum { BARE_REJECT, BARE_DISCONNECT, BARE_ACCEPT };
enum { INJECT_REJECT, INJECT_DISCARD };

/* The `smtp` section, read once per framework run (settings_load) and then read-only. */
typedef struct smtp_settings {
  int sink;
  char hostname[256];
  char spool_dir[1024];
  int max_line;            /* command line, CRLF included */
  long long size_limit;    /* message bytes on the wire, CRLF.CRLF excluded */
  int max_recipients;      /* per transaction */
  int max_sessions;        /* process-wide, 0 = unlimited */
  int max_sessions_per_ip; /* 0 = unlimited */
  double command_timeout;  /* seconds, 0 = none */
  double data_timeout;
  int max_errors;
  int bare_newline; /* BARE_* */
  int injection;    /* INJECT_* */
  int smtputf8;
  int pool; /* job class of the spool writers */
  int fsync;
  int tmp_fd, new_fd; /* spool directories, -1 when unusable */
} smtp_settings;

/* Per-shard counters, one cache line each; written by their shard only. */
typedef struct smtp_shard {
  uint64_t sessions, sessions_refused, messages, bytes, rejects, spool_errors, fsyncs;
  uint64_t next_id; /* queue-id sequence of the shard */
} __attribute__((aligned(64))) smtp_shard;

/* A client address that holds sessions (for max_sessions_per_ip). */
typedef struct ip_entry {
  struct ip_entry *next;
  unsigned char addr[16];
  int family;
  int count;
} ip_entry;

static struct {
  pthread_mutex_t load_lock;
  int loaded; /* settings valid (atomic: acquire pairs with the release in settings_get) */
  smtp_settings set;
  smtp_shard shards[SMTP_MAX_SHARDS];
  int sessions; /* open sessions, process-wide (atomic) */
  pthread_mutex_t ip_lock[SMTP_IP_STRIPES];
  ip_entry *ip[SMTP_IP_BUCKETS];
} g = {.load_lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t ip_once = PTHREAD_ONCE_INIT;

static void ip_locks_init(void)
{
  for (int i = 0; i < SMTP_IP_STRIPES; i++)
    pthread_mutex_init(&g.ip_lock[i], NULL);
}

static const char *const modes[] = {"spool", "sink", NULL};
static const char *const bare_choices[] = {"reject", "disconnect", "accept", NULL};
static const char *const inject_choices[] = {"reject", "discard", NULL};

static const ec_config_item smtp_items[] = {
    {"mode", EC_CONFIG_STRING, 0, 0, modes},
    {"hostname", EC_CONFIG_STRING, 0, 0, NULL},
    {"spool_dir", EC_CONFIG_STRING, 0, 0, NULL},
    {"spool_fsync", EC_CONFIG_BOOL, 0, 0, NULL},
    {"spool_pool", EC_CONFIG_STRING, 0, 0, NULL},
    {"max_line_length", EC_CONFIG_INT, 512, 65536, NULL},
    {"message_size_limit", EC_CONFIG_INT, 1024, 1073741824, NULL},
    {"max_recipients", EC_CONFIG_INT, 1, 100000, NULL},
    {"max_sessions", EC_CONFIG_INT, 0, 10000000, NULL},
    {"max_sessions_per_ip", EC_CONFIG_INT, 0, 10000000, NULL},
    {"command_timeout", EC_CONFIG_FLOAT, 0, 86400, NULL},
    {"data_timeout", EC_CONFIG_FLOAT, 0, 86400, NULL},
    {"max_errors", EC_CONFIG_INT, 1, 1000000, NULL},
    {"bare_newline", EC_CONFIG_STRING, 0, 0, bare_choices},
    {"starttls_injection_policy", EC_CONFIG_STRING, 0, 0, inject_choices},
    {"smtputf8", EC_CONFIG_BOOL, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static const char smtp_defaults[] =
    "mode = \"spool\"; hostname = \"\"; spool_dir = \"spool\"; spool_fsync = true;"
    " spool_pool = \"IO\"; max_line_length = 1000; message_size_limit = 10485760;"
    " max_recipients = 100; max_sessions = 10000; max_sessions_per_ip = 50;"
    " command_timeout = 300.0; data_timeout = 300.0; max_errors = 20;"
    " bare_newline = \"reject\"; starttls_injection_policy = \"reject\"; smtputf8 = true;";

/* Creates dir (mode 0700) if missing; 0 or -errno. */
static int mkdir_one(const char *dir)
{
  if (mkdir(dir, 0700) == 0 || errno == EEXIST)
    return 0;
  return -errno;
}

/* Creates the spool's tmp/ and new/ (and the spool directory itself) and opens them. */
static void spool_open(smtp_settings *s)
{
  char path[1100];
  int rc;

  s->tmp_fd = s->new_fd = -1;
  if ((rc = mkdir_one(s->spool_dir)) < 0) {
    log1_printf(DERROR, "smtp: mkdir(%s) failed: %s; messages will be refused with 451",
                s->spool_dir, strerror(-rc));
    return;
  }
  snprintf(path, sizeof(path), "%s/tmp", s->spool_dir);
  if ((rc = mkdir_one(path)) == 0)
    s->tmp_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  snprintf(path, sizeof(path), "%s/new", s->spool_dir);
  if (rc == 0 && (rc = mkdir_one(path)) == 0)
    s->new_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s->tmp_fd < 0 || s->new_fd < 0) {
    log1_printf(DERROR, "smtp: cannot open the spool %s/{tmp,new}: %s; messages will be refused",
                s->spool_dir, strerror(rc < 0 ? -rc : errno));
    if (s->tmp_fd >= 0)
      close(s->tmp_fd);
    if (s->new_fd >= 0)
      close(s->new_fd);
    s->tmp_fd = s->new_fd = -1;
    return;
  }
  log1_printf(DNOTICE, "smtp: spooling to %s/new (maildir-style)", s->spool_dir);
}

static int choice(const char *v, const char *const *list, int def)
{
  for (int i = 0; v != NULL && list[i] != NULL; i++)
    if (strcasecmp(v, list[i]) == 0)
      return i;
  return def;
}

/* The settings of this framework run, read from the configuration on first use. */
static const smtp_settings *settings_get(void)
{
  smtp_settings *s = &g.set;
  const char *v;

  /* Acquire pairs with the release store below: a reader that sees loaded = 1 sees the
   * settings written before it. */
  if (__atomic_load_n(&g.loaded, __ATOMIC_ACQUIRE))
    return s;
  pthread_mutex_lock(&g.load_lock);
  if (!g.loaded) {
    s->sink = choice(ec_config_get_string("smtp.mode", "spool"), modes, 0) == 1;
    v = ec_config_get_string("smtp.hostname", "");
    if (v[0] != '\0')
      snprintf(s->hostname, sizeof(s->hostname), "%s", v);
    else if (gethostname(s->hostname, sizeof(s->hostname) - 1) != 0 || s->hostname[0] == '\0')
      snprintf(s->hostname, sizeof(s->hostname), "localhost");
    snprintf(s->spool_dir, sizeof(s->spool_dir), "%s",
             ec_config_get_string("smtp.spool_dir", "spool"));
    s->fsync = ec_config_get_bool("smtp.spool_fsync", 1);
    s->pool = ec_thread_pool_name_to_class(ec_config_get_string("smtp.spool_pool", "IO"));
    if (s->pool < 0) {
      log1_printf(DERROR, "smtp: no thread pool named '%s'; spooling on IO",
                  ec_config_get_string("smtp.spool_pool", "IO"));
      s->pool = ECTP_CLASS_IO;
    }
    s->max_line = (int)ec_config_get_int("smtp.max_line_length", 1000);
    s->size_limit = ec_config_get_int("smtp.message_size_limit", 10485760);
    s->max_recipients = (int)ec_config_get_int("smtp.max_recipients", 100);
    s->max_sessions = (int)ec_config_get_int("smtp.max_sessions", 10000);
    s->max_sessions_per_ip = (int)ec_config_get_int("smtp.max_sessions_per_ip", 50);
    s->command_timeout = ec_config_get_double("smtp.command_timeout", 300.0);
    s->data_timeout = ec_config_get_double("smtp.data_timeout", 300.0);
    s->max_errors = (int)ec_config_get_int("smtp.max_errors", 20);
    s->bare_newline =
        choice(ec_config_get_string("smtp.bare_newline", "reject"), bare_choices, BARE_REJECT);
    s->injection = choice(ec_config_get_string("smtp.starttls_injection_policy", "reject"),
                          inject_choices, INJECT_REJECT);
    s->smtputf8 = ec_config_get_bool("smtp.smtputf8", 1);
    s->tmp_fd = s->new_fd = -1;
    if (!s->sink)
      spool_open(s);
    __atomic_store_n(&g.loaded, 1, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&g.load_lock);
  return s;
}

/* ---- counters -------------------------------------------------------------------------- */

/* The calling shard's counters (a shard index beyond the table shares the last slot). */
static smtp_shard *shard_self(void)
{
  int i = ec_shard_self();

  return &g.shards[i < 0 ? 0 : i < SMTP_MAX_SHARDS ? i : SMTP_MAX_SHARDS - 1];
}

/* Counters are written by their shard only; relaxed atomics keep readers on other threads
 * free of torn values (no ordering with anything else is needed). */
#define STAT_ADD(sh, field, n) __atomic_fetch_add(&(sh)->field, (uint64_t)(n), __ATOMIC_RELAXED)

int smtp_stats_get(int shard, smtp_stats *out)
{
  int n = ec_shard_count(), lo = shard, hi = shard;

  if (out == NULL || shard < -1 || shard >= SMTP_MAX_SHARDS || (shard >= 0 && n > 0 && shard >= n))
    return -EINVAL;
  if (shard == -1) {
    lo = 0;
    hi = (n > 0 ? n : 1) - 1;
    if (hi >= SMTP_MAX_SHARDS)
      hi = SMTP_MAX_SHARDS - 1;
  }
  memset(out, 0, sizeof(*out));
  for (int i = lo; i <= hi; i++) {
    const smtp_shard *sh = &g.shards[i];

    out->sessions += __atomic_load_n(&sh->sessions, __ATOMIC_RELAXED);
    out->sessions_refused += __atomic_load_n(&sh->sessions_refused, __ATOMIC_RELAXED);
    out->messages += __atomic_load_n(&sh->messages, __ATOMIC_RELAXED);
    out->bytes += __atomic_load_n(&sh->bytes, __ATOMIC_RELAXED);
    out->rejects += __atomic_load_n(&sh->rejects, __ATOMIC_RELAXED);
    out->spool_errors += __atomic_load_n(&sh->spool_errors, __ATOMIC_RELAXED);
    out->fsyncs += __atomic_load_n(&sh->fsyncs, __ATOMIC_RELAXED);
  }
  return 0;
}

/* ---- sessions per client address ------------------------------------------------------ */

/* Extracts the address bytes of `ss` (IPv4-mapped IPv6 counts as IPv4). 0 if not IP. */
static int ip_key(const struct sockaddr_storage *ss, unsigned char addr[16], int *family)
{
  memset(addr, 0, 16);
  if (ss->ss_family == AF_INET) {
    memcpy(addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    *family = AF_INET;
    return 1;
  }
  if (ss->ss_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;

    if (IN6_IS_ADDR_V4MAPPED(a)) {
      memcpy(addr, a->s6_addr + 12, 4);
      *family = AF_INET;
    } else {
      memcpy(addr, a->s6_addr, 16);
      *family = AF_INET6;
    }
    return 1;
  }
  return 0;
}

static unsigned ip_hash(const unsigned char addr[16])
{
  uint32_t h = 2166136261u;

  for (int i = 0; i < 16; i++)
    h = (h ^ addr[i]) * 16777619u;
  return h % SMTP_IP_BUCKETS;
}

/* Counts a session of `addr`: 1 if taken, 0 if the client is at its limit (or out of
 * memory, which refuses too). */
static int ip_take(const unsigned char addr[16], int family, int limit)
{
  unsigned b = ip_hash(addr);
  pthread_mutex_t *lock = &g.ip_lock[b % SMTP_IP_STRIPES];
  ip_entry *e;
  int ok = 0;

  pthread_mutex_lock(lock);
  for (e = g.ip[b]; e != NULL; e = e->next)
    if (e->family == family && memcmp(e->addr, addr, 16) == 0)
      break;
  if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
    memcpy(e->addr, addr, 16);
    e->family = family;
    e->next = g.ip[b];
    g.ip[b] = e;
  }
  if (e != NULL && (limit == 0 || e->count < limit)) {
    e->count++;
    ok = 1;
  }
  pthread_mutex_unlock(lock);
  return ok;
}

static void ip_release(const unsigned char addr[16], int family)
{
  unsigned b = ip_hash(addr);
  pthread_mutex_t *lock = &g.ip_lock[b % SMTP_IP_STRIPES];
  ip_entry **pp, *e;

  pthread_mutex_lock(lock);
  for (pp = &g.ip[b]; (e = *pp) != NULL; pp = &e->next) {
    if (e->family == family && memcmp(e->addr, addr, 16) == 0) {
      if (--e->count <= 0) {
        *pp = e->next;
        free(e);
      }
      break;
    }
  }
  pthread_mutex_unlock(lock);
}

/* ---- the session ----------------------------------------------------------------------- */

enum phase {
  PH_COMMAND, /* reading commands */
  PH_BODY,    /* after 354: reading the body up to CRLF.CRLF */
  PH_SPOOL,   /* suspended: a pool job is writing the message */
};

/* Results of one input step. */
enum { STEP_MORE, STEP_BLOCKED, STEP_SUSPENDED, STEP_CLOSE };

typedef struct spool_job spool_job;

typedef struct smtp_session {
  Event *ev;    /* the session's Event (a duplicate after each suspension) */
  Event *timer; /* command/data timeout, NULL when none */
  minimal_tryread_construct in;
  event_io_state out;
  const smtp_settings *set;
  smtp_shard *sh;
  enum phase phase;
  unsigned helo : 1, esmtp : 1, tls : 1, quitting : 1, in_mail : 1, utf8 : 1, ip_held : 1,
      toobig : 1, starttls : 1;
  SSL_CTX *tls_ctx; /* the listener's, for STARTTLS; NULL: not offered */
  int errors;
  int lf_scan; /* PH_BODY: read-ahead bytes already searched for LF "." LF */
  time_t last; /* last activity, the shard's clock in seconds */
  unsigned char ip[16];
  int ip_family;
  char peer[INET6_ADDRSTRLEN + 8];
  char helo_name[SMTP_HELO_MAX + 1];
  char *sender;
  char **rcpt;
  int nrcpt, rcpt_cap;
  spool_job *job; /* while PH_SPOOL */
  char id[32];    /* queue id of the message being spooled */
} smtp_session;

/* Queues a reply (no I/O). 0, or -1: out of memory, close. */
static int reply(smtp_session *s, const char *text, int len)
{
  if (text[0] == '4' || text[0] == '5')
    STAT_ADD(s->sh, rejects, 1);
  return ec_event_io_queue(&s->out, text, len) == EVENT_IO_ERROR ? -1 : 0;
}
#define REPLY(s, lit) reply((s), lit, (int)sizeof(lit) - 1)

/* A protocol error: replies, and past max_errors ends the session with 421. */
static int error_reply(smtp_session *s, const char *text, int len)
{
  if (reply(s, text, len) < 0)
    return -1;
  if (++s->errors >= s->set->max_errors) {
    char buf[320];
    int n = snprintf(buf, sizeof(buf), "421 4.7.0 %s Error: too many errors\r\n", s->set->hostname);

    log1_printf(DINFO, "smtp: %s: too many errors, disconnecting", s->peer);
    s->quitting = 1;
    return reply(s, buf, n);
  }
  return 0;
}
#define ERROR(s, lit) error_reply((s), lit, (int)sizeof(lit) - 1)

static void transaction_reset(smtp_session *s)
{
  free(s->sender);
  s->sender = NULL;
  for (int i = 0; i < s->nrcpt; i++)
    free(s->rcpt[i]);
  s->nrcpt = 0;
  s->in_mail = 0;
  s->utf8 = 0;
  /* Keep the recipient array of an ordinary transaction, free a big one. */
  if (s->rcpt_cap > 8) {
    free(s->rcpt);
    s->rcpt = NULL;
    s->rcpt_cap = 0;
  }
}

static void timer_cancel(smtp_session *s)
{
  if (s->timer != NULL && !clear_timed_event(s->timer))
    event_free(s->timer);
  s->timer = NULL;
}

/* Frees everything of the session but the Event. */
static void session_free(smtp_session *s)
{
  timer_cancel(s);
  transaction_reset(s);
  free(s->rcpt);
  minimal_tryread_construct_free(&s->in);
  event_io_state_clean(&s->out);
  if (s->ip_held)
    ip_release(s->ip, s->ip_family);
  __atomic_fetch_sub(&g.sessions, 1, __ATOMIC_RELAXED); /* a count, no data depends on it */
  free(s);
}

/* Ends the session: frees its state and closes the connection. Returns 0 for the callback. */
static int session_end(Event *e, smtp_session *s)
{
  session_free(s);
  e->closure = NULL;
  event_close(e);
  return 0;
}

/* ---- timeouts ---------------------------------------------------------------------------- */

static double phase_timeout(const smtp_session *s)
{
  return s->phase == PH_BODY ? s->set->data_timeout : s->set->command_timeout;
}

static int timer_cb(Event *t, int eventtype, void *closure, struct timeval *now);

/* Arms the session's timer `secs` from now. */
static void timer_arm(smtp_session *s, double secs)
{
  if (secs < SMTP_TIMER_MIN_S)
    secs = SMTP_TIMER_MIN_S;
  s->timer = build_event_from_now_f((float)secs, -1, timer_cb, s);
  if (s->timer != NULL && ec_schedule_event(s->timer) < 0) {
    event_free(s->timer);
    s->timer = NULL;
  }
  if (s->timer == NULL)
    log1_printf(DERROR, "smtp: %s: cannot arm the session timer", s->peer);
}

/*
 * The timer is lazy: activity only updates s->last, and when the timer fires it either
 * finds the session idle for its phase's timeout (and dispatches E_TIMEOUT to it) or
 * re-arms itself for the rest of the period. So a busy session costs one timer fire per
 * period, not a timer move per command.
 */
static int timer_cb(Event *t, int eventtype, void *closure, struct timeval *now)
{
  smtp_session *s = closure;
  double limit = phase_timeout(s), idle = (double)(now->tv_sec - s->last);

  s->timer = NULL; /* this one is freed when we return 0 */
  if (s->phase == PH_SPOOL || limit <= 0) {
    timer_arm(s, limit > 0 ? limit : 60.0);
  } else if (idle >= limit) {
    schedule_event_and_dispatch(s->ev, E_TIMEOUT);
  } else {
    timer_arm(s, limit - idle);
  }
  return 0;
}

/* ---- commands ---------------------------------------------------------------------------- */

/* 1 if p[0..len) holds a CR or LF (a bare one: the record's own line end is excluded). */
static int has_bare_newline(const char *p, int len)
{
  return memchr(p, '\n', (size_t)len) != NULL || memchr(p, '\r', (size_t)len) != NULL;
}

/* The first four bytes of a command, upper-cased, as one number (0 if shorter). */
#define VERB(a, b, c, d)                                                                           \
  ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))
static uint32_t verb_of(const char *line, int len)
{
  if (len < 4)
    return 0;
  /* & 0xdf upper-cases letters; other bytes change too, but then match no verb. */
  return VERB(line[0] & 0xdf, line[1] & 0xdf, line[2] & 0xdf, line[3] & 0xdf);
}

/*
 * Parses "<path>" after "FROM:" / "TO:" (leading spaces tolerated, as Postfix does).
 * Copies the address (without <>) into `out` and returns a pointer past '>', or NULL for
 * a syntax error. Sets *nonascii when the address has 8-bit bytes.
 */
static const char *parse_path(const char *p, char *out, size_t outlen, int *nonascii)
{
  const char *end;
  size_t n;

  while (*p == ' ')
    p++;
  if (*p != '<')
    return NULL;
  end = strchr(p, '>');
  if (end == NULL)
    return NULL;
  n = (size_t)(end - p - 1);
  if (n >= outlen || n > SMTP_ADDR_MAX)
    return NULL;
  *nonascii = 0;
  for (size_t i = 1; i <= n; i++) {
    unsigned char c = (unsigned char)p[i];

    if (c <= ' ' || c == 0x7f || c == '<')
      return NULL;
    if (c >= 0x80)
      *nonascii = 1;
  }
  /* A source route (@a,@b:user@c) is accepted and ignored, as RFC 5321 4.1.1.3 asks. */
  memcpy(out, p + 1, n);
  out[n] = '\0';
  if (out[0] == '@') {
    char *colon = strchr(out, ':');

    if (colon == NULL)
      return NULL;
    memmove(out, colon + 1, strlen(colon + 1) + 1);
  }
  return end + 1;
}

static int cmd_helo(smtp_session *s, const char *arg, int esmtp)
{
  char buf[512];
  int n;

  while (*arg == ' ')
    arg++;
  if (*arg == '\0' || strlen(arg) > SMTP_HELO_MAX)
    return esmtp ? ERROR(s, "501 5.5.4 Syntax: EHLO hostname\r\n")
                 : ERROR(s, "501 5.5.4 Syntax: HELO hostname\r\n");
  snprintf(s->helo_name, sizeof(s->helo_name), "%s", arg);
  for (char *c = s->helo_name; *c; c++)
    if ((unsigned char)*c < ' ' || (unsigned char)*c >= 0x7f)
      *c = '?';
  transaction_reset(s); /* RFC 5321 4.1.4: EHLO/HELO resets the transaction */
  s->helo = 1;
  s->esmtp = esmtp;
  if (!esmtp) {
    n = snprintf(buf, sizeof(buf), "250 %s\r\n", s->set->hostname);
    return reply(s, buf, n);
  }
  n = snprintf(buf, sizeof(buf),
               "250-%s\r\n250-PIPELINING\r\n250-SIZE %lld\r\n%s250-8BITMIME\r\n"
               "250-ENHANCEDSTATUSCODES\r\n%s250 HELP\r\n",
               s->set->hostname, s->set->size_limit,
               s->tls_ctx != NULL && !s->tls ? "250-STARTTLS\r\n" : "",
               s->set->smtputf8 ? "250-SMTPUTF8\r\n" : "");
  return reply(s, buf, n);
}

/* MAIL FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] */
static int cmd_mail(smtp_session *s, const char *arg)
{
  char addr[SMTP_ADDR_MAX + 2];
  const char *p;
  int nonascii, utf8 = 0;

  if (!s->helo)
    return ERROR(s, "503 5.5.1 Error: send HELO/EHLO first\r\n");
  if (s->in_mail)
    return ERROR(s, "503 5.5.1 Error: nested MAIL command\r\n");
  if (strncasecmp(arg, "FROM:", 5) != 0 ||
      (p = parse_path(arg + 5, addr, sizeof(addr), &nonascii)) == NULL)
    return ERROR(s, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  /* ESMTP parameters, only after EHLO. */
  while (*p == ' ') {
    char kw[32];
    const char *v;
    size_t klen;

    while (*p == ' ')
      p++;
    if (*p == '\0')
      break;
    if (!s->esmtp)
      return ERROR(s, "555 5.5.4 Error: parameters need EHLO\r\n");
    klen = strcspn(p, "= ");
    if (klen == 0 || klen >= sizeof(kw))
      return ERROR(s, "501 5.5.4 Bad MAIL parameter syntax\r\n");
    memcpy(kw, p, klen);
    kw[klen] = '\0';
    v = p[klen] == '=' ? p + klen + 1 : NULL;
    p += klen + (v ? 1 + strcspn(v, " ") : 0);
    if (strcasecmp(kw, "SIZE") == 0 && v != NULL) {
      char *end;
      unsigned long long n = strtoull(v, &end, 10);

      if (end == v || (*end != ' ' && *end != '\0') || !isdigit((unsigned char)*v))
        return ERROR(s, "501 5.5.4 Bad SIZE parameter\r\n");
      if (n > (unsigned long long)s->set->size_limit)
        return ERROR(s, "552 5.3.4 Message size exceeds fixed limit\r\n");
    } else if (strcasecmp(kw, "BODY") == 0 && v != NULL) {
      size_t vl = strcspn(v, " ");

      if (!((vl == 4 && strncasecmp(v, "7BIT", 4) == 0) ||
            (vl == 8 && strncasecmp(v, "8BITMIME", 8) == 0)))
        return ERROR(s, "501 5.5.4 Bad BODY parameter\r\n");
    } else if (strcasecmp(kw, "SMTPUTF8") == 0 && v == NULL && s->set->smtputf8) {
      utf8 = 1;
    } else {
      return ERROR(s, "555 5.5.4 Unsupported option\r\n");
    }
  }
  if (*p != '\0')
    return ERROR(s, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  if (nonascii && !utf8)
    return ERROR(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8\r\n");
  s->sender = strdup(addr);
  if (s->sender == NULL)
    return -1;
  s->in_mail = 1;
  s->utf8 = utf8;
  return REPLY(s, "250 2.1.0 Ok\r\n");
}

/* RCPT TO:<path> */
static int cmd_rcpt(smtp_session *s, const char *arg)
{
  char addr[SMTP_ADDR_MAX + 2];
  const char *p;
  int nonascii;

  if (!s->in_mail)
    return ERROR(s, "503 5.5.1 Error: need MAIL command\r\n");
  if (strncasecmp(arg, "TO:", 3) != 0 ||
      (p = parse_path(arg + 3, addr, sizeof(addr), &nonascii)) == NULL)
    return ERROR(s, "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
  while (*p == ' ')
    p++;
  if (*p != '\0')
    return ERROR(s, "555 5.5.4 Unsupported option\r\n");
  if (addr[0] == '\0')
    return ERROR(s, "501 5.1.3 Bad recipient address syntax\r\n");
  if (nonascii && !s->utf8)
    return ERROR(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8\r\n");
  if (s->nrcpt >= s->set->max_recipients)
    return ERROR(s, "452 4.5.3 Error: too many recipients\r\n");
  if (s->nrcpt == s->rcpt_cap) {
    int cap = s->rcpt_cap ? s->rcpt_cap * 2 : 4;
    char **r = realloc(s->rcpt, sizeof(*r) * (size_t)cap);

    if (r == NULL)
      return -1;
    s->rcpt = r;
    s->rcpt_cap = cap;
  }
  if ((s->rcpt[s->nrcpt] = strdup(addr)) == NULL)
    return -1;
  s->nrcpt++;
  return REPLY(s, "250 2.1.5 Ok\r\n");
}

static void body_begin(smtp_session *s);

/*
 * STARTTLS (RFC 3207). The upgrade itself happens once the 220 is written (smtp_cb).
 * Bytes the client pipelined behind the command were sent in plaintext and must never be
 * taken as sent under TLS (CVE-2011-0411): by default the session is refused and closed;
 * with starttls_injection_policy = "discard" they are dropped and the upgrade goes on.
 */
static int cmd_starttls(smtp_session *s, int n)
{
  if (s->tls_ctx == NULL)
    return ERROR(s, "502 5.5.1 Error: command not implemented\r\n");
  if (s->tls)
    return ERROR(s, "503 5.5.1 Error: TLS already active\r\n");
  if (n != 8)
    return ERROR(s, "501 5.5.4 Syntax: STARTTLS\r\n");
  if (s->in_mail)
    return ERROR(s, "503 5.5.1 Error: MAIL transaction in progress\r\n");
  if (ec_tryread_pending(&s->in) > 0) {
    log1_printf(DNOTICE, "smtp: %s: %zu bytes pipelined after STARTTLS (command injection)%s",
                s->peer, ec_tryread_pending(&s->in),
                s->set->injection == INJECT_REJECT ? "; closing" : "; dropped");
    if (s->set->injection == INJECT_REJECT) {
      s->quitting = 1;
      return REPLY(s, "554 5.5.1 Error: command pipelining after STARTTLS\r\n");
    }
    ec_tryread_discard(&s->in);
  }
  s->starttls = 1;
  return REPLY(s, "220 2.0.0 Ready to start TLS\r\n");
}

/*
 * One command line of `len` bytes, its LF included: a line ends at the first LF, so a
 * client that ends its lines with a bare LF gets an answer to each one instead of
 * silence until a CRLF comes. 0, or -1 (out of memory: close). Sets s->quitting for QUIT
 * and fatal errors.
 */
static int command(smtp_session *s, char *line, int len)
{
  int crlf = len >= 2 && line[len - 2] == '\r';
  int n = crlf ? len - 2 : len - 1;

  if (!crlf || has_bare_newline(line, n)) {
    log1_printf(DINFO, "smtp: %s: bare CR or LF in a command", s->peer);
    if (s->set->bare_newline == BARE_DISCONNECT)
      s->quitting = 1;
    return ERROR(s, "500 5.5.2 Error: bare <CR> or <LF> received\r\n");
  }
  line[n] = '\0';
  if (memchr(line, '\0', (size_t)n) != NULL)
    return ERROR(s, "500 5.5.2 Error: NUL in command\r\n");
  /* A four-letter verb ends the line or is followed by a space. */
  switch (n == 4 || (n > 4 && line[4] == ' ') ? verb_of(line, n) : 0) {
  case VERB('E', 'H', 'L', 'O'):
    return cmd_helo(s, line + 4, 1);
  case VERB('H', 'E', 'L', 'O'):
    return cmd_helo(s, line + 4, 0);
  case VERB('M', 'A', 'I', 'L'):
    return cmd_mail(s, line + 4 + (line[4] == ' '));
  case VERB('R', 'C', 'P', 'T'):
    return cmd_rcpt(s, line + 4 + (line[4] == ' '));
  case VERB('D', 'A', 'T', 'A'):
    if (n != 4)
      return ERROR(s, "501 5.5.4 Syntax: DATA\r\n");
    if (!s->in_mail)
      return ERROR(s, "503 5.5.1 Error: need MAIL command\r\n");
    if (s->nrcpt == 0)
      return ERROR(s, "554 5.5.1 Error: no valid recipients\r\n");
    body_begin(s);
    return REPLY(s, "354 End data with <CR><LF>.<CR><LF>\r\n");
  case VERB('R', 'S', 'E', 'T'):
    if (n != 4)
      return ERROR(s, "501 5.5.4 Syntax: RSET\r\n");
    transaction_reset(s);
    return REPLY(s, "250 2.0.0 Ok\r\n");
  case VERB('N', 'O', 'O', 'P'):
    return REPLY(s, "250 2.0.0 Ok\r\n");
  case VERB('Q', 'U', 'I', 'T'): {
    char buf[320];
    int k = snprintf(buf, sizeof(buf), "221 2.0.0 %s Bye\r\n", s->set->hostname);

    s->quitting = 1;
    return reply(s, buf, k);
  }
  case VERB('V', 'R', 'F', 'Y'):
    return REPLY(s, "252 2.0.0 Cannot VRFY user, but will accept message\r\n");
  case VERB('H', 'E', 'L', 'P'):
    return REPLY(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\r\n");
  case VERB('E', 'X', 'P', 'N'):
  case VERB('B', 'D', 'A', 'T'):
  case VERB('E', 'T', 'R', 'N'):
  case VERB('A', 'U', 'T', 'H'):
    return ERROR(s, "502 5.5.1 Error: command not implemented\r\n");
  default:
    break;
  }
  if (n >= 8 && strncasecmp(line, "STARTTLS", 8) == 0 && (n == 8 || line[8] == ' '))
    return cmd_starttls(s, n);
  return ERROR(s, "500 5.5.2 Error: command not recognized\r\n");
}

/* ---- bodies -------------------------------------------------------------------------------- */

/* Bytes beyond max_region_size stream through here instead of failing with E2BIG: they
 * are dropped, and the message is refused once its end is found. */
static void body_overflow(minimal_tryread_construct *mtc, void *closure, const char *buf, int len)
{
  smtp_session *s = closure;

  s->toobig = 1;
}

static void body_begin(smtp_session *s)
{
  long long limit = s->set->size_limit + SMTP_DATA_END_LEN;

  s->phase = PH_BODY;
  s->toobig = 0;
  s->lf_scan = 0;
  s->in.max_region_size = limit > 0x7ffffff0LL ? 0x7ffffff0 : (int)limit;
  s->in.page_out_hook = body_overflow;
  s->in.page_out_closure = s;
}

static void body_end(smtp_session *s)
{
  s->phase = PH_COMMAND;
  s->in.max_region_size = s->set->max_line;
  s->in.page_out_hook = NULL;
  s->in.page_out_closure = NULL;
  s->toobig = 0;
}

/*
 * Checks and dot-unstuffs a body of `len` bytes (its last line ends with CRLF; the final
 * "." line is not included). Every line must end with CRLF and hold no other CR or LF,
 * unless bare newlines are accepted. Unstuffing happens in place when `unstuff`. Returns
 * the unstuffed length, or -1 for a bare CR or LF.
 */
static int body_scan(char *p, int len, int unstuff, int accept_bare)
{
  int r = 0, w = 0;

  while (r < len) {
    const char *nl;
    int end;

    if (p[r] == '.') /* RFC 5321 4.5.2: a leading period is removed */
      r++;
    nl = memchr(p + r, '\n', (size_t)(len - r));
    end = nl != NULL ? (int)(nl - p) + 1 : len;
    if (!accept_bare && (nl == NULL || end - r < 2 || p[end - 2] != '\r' ||
                         memchr(p + r, '\r', (size_t)(end - 2 - r)) != NULL))
      return -1;
    if (unstuff && w != r)
      memmove(p + w, p + r, (size_t)(end - r));
    w += end - r;
    r = end;
  }
  return w;
}

/* Writes v as `digits` upper-case hex digits (at least 1, as many as v needs when 0). */
static char *hex(char *p, uint64_t v, int digits)
{
  char tmp[16];
  int n = 0;

  do {
    tmp[n++] = "0123456789ABCDEF"[v & 15];
    v >>= 4;
  } while ((v != 0 || n < digits) && n < 16);
  while (n > 0)
    *p++ = tmp[--n];
  return p;
}

/* A queue id: seconds, microseconds, shard and the shard's sequence, in hex (formatted by
 * hand: snprintf costs more than the rest of a sink-mode message). */
static void make_id(smtp_session *s, char id[32])
{
  struct timespec ts;
  int shard = ec_shard_self();
  char *p = id;

  clock_gettime(CLOCK_REALTIME, &ts);
  p = hex(p, (uint64_t)ts.tv_sec & 0xffffffffu, 8);
  p = hex(p, (uint64_t)ts.tv_nsec / 1000, 5);
  p = hex(p, (uint64_t)(shard < 0 ? 0 : shard) & 0xff, 2);
  p = hex(p, s->sh->next_id++, 1);
  *p = '\0';
}

static int reply_queued(smtp_session *s, const char *id)
{
  static const char head[] = "250 2.0.0 Ok: queued as ";
  char buf[sizeof(head) + 40];
  size_t n = strlen(id);

  if (n > 31) /* make_id writes fewer; keeps the copy in bounds for the analyzer */
    n = 31;
  memcpy(buf, head, sizeof(head) - 1);
  memcpy(buf + sizeof(head) - 1, id, n + 1); /* the NUL is overwritten next */
  buf[sizeof(head) - 1 + n] = '\r';
  buf[sizeof(head) + n] = '\n';
  return reply(s, buf, (int)(sizeof(head) - 1 + n + 2));
}

/* The spool write of one message, done by a pool worker. */
struct spool_job {
  ec_async_job job; /* first */
  int tmp_fd, new_fd, fsync;
  char id[32];
  char *head; /* the envelope block */
  int head_len;
  char *body; /* MEMTYPE_MESSAGE_BODY: the tryread record, unstuffed */
  int body_len;
  int err; /* 0, or the errno of the failed step */
  int fsyncs;
  const char *what; /* the failed step */
};

static int write_all(int fd, struct iovec *iov, int cnt)
{
  while (cnt > 0) {
    ssize_t n = writev(fd, iov, cnt);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    while (cnt > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt > 0) {
      iov->iov_base = (char *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return 0;
}

/*
 * Group commit of new/: a rename is durable once an fsync of the directory that STARTED
 * after it has finished. Workers that renamed while another worker's fsync of new/ runs
 * wait for the next one, which a single worker then makes for all of them; so N messages
 * finishing together cost one directory fsync instead of N (each file still gets its own
 * fsync: maildir keeps one file per message).
 */
static struct {
  pthread_mutex_t lock;
  pthread_cond_t done_cond;
  uint64_t started; /* tickets handed to directory fsyncs */
  uint64_t done;    /* ticket of the last one finished */
  uint64_t last_ok; /* ticket of the last one that succeeded */
  int err;          /* errno of the last one that failed */
  int running;
} dsync = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0};

/* Makes the caller's completed rename in `dirfd` durable: 0 once a directory fsync that
 * started after it succeeded, else the errno of the failed one. *did is set when this
 * caller made the fsync itself. */
static int dir_sync(int dirfd, int *did)
{
  uint64_t need;
  int rc;

  *did = 0;
  pthread_mutex_lock(&dsync.lock);
  need = dsync.started + 1; /* the first ticket handed out after our rename */
  while (dsync.done < need) {
    if (!dsync.running) {
      uint64_t mine = ++dsync.started;
      int r;

      dsync.running = 1;
      pthread_mutex_unlock(&dsync.lock);
      r = fsync(dirfd) < 0 ? errno : 0;
      pthread_mutex_lock(&dsync.lock);
      *did = 1;
      dsync.running = 0;
      dsync.done = mine;
      if (r == 0)
        dsync.last_ok = mine;
      else
        dsync.err = r;
      pthread_cond_broadcast(&dsync.done_cond);
    } else {
      pthread_cond_wait(&dsync.done_cond, &dsync.lock);
    }
  }
  /* Any success from ticket `need` on persisted the directory with our entry in it. */
  rc = dsync.last_ok >= need ? 0 : dsync.err;
  pthread_mutex_unlock(&dsync.lock);
  return rc;
}

/*
 * On a worker: tmp/ID is written and fsynced, renamed to new/ID, and new/ is fsynced, so
 * that a message answered 250 survives a crash of the process or the machine. A failure
 * leaves no file in new/ (and removes the one in tmp/).
 */
static void spool_work(ec_async_job *job, void *closure)
{
  spool_job *j = (spool_job *)job;
  struct iovec iov[2] = {{j->head, (size_t)j->head_len}, {j->body, (size_t)j->body_len}};
  int fd;

  j->err = 0;
  fd = openat(j->tmp_fd, j->id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    j->err = errno;
    j->what = "open";
    return;
  }
  if (write_all(fd, iov, j->body_len > 0 ? 2 : 1) < 0) {
    j->what = "write";
  } else if (j->fsync && fsync(fd) < 0) {
    j->what = "fsync";
  } else {
    j->fsyncs += j->fsync;
    if (close(fd) < 0) {
      fd = -1;
      j->what = "close";
    } else if (fd = -1, renameat(j->tmp_fd, j->id, j->new_fd, j->id) < 0) {
      j->what = "rename";
    } else {
      int did = 0;

      if (j->fsync && (j->err = dir_sync(j->new_fd, &did)) != 0) {
        /* The file is in new/, but its directory entry may not be durable: say so. */
        j->what = "fsync of new/";
      }
      j->fsyncs += did;
      return;
    }
  }
  j->err = errno;
  if (fd >= 0)
    close(fd);
  unlinkat(j->tmp_fd, j->id, 0);
}

/* The envelope block written before the message. */
static char *envelope_block(smtp_session *s, const char *id, int *len)
{
  size_t cap = 512 + strlen(s->sender) + strlen(s->helo_name);
  char date[64], *p;
  struct tm tm;
  time_t t = time(NULL);
  int n;

  for (int i = 0; i < s->nrcpt; i++)
    cap += strlen(s->rcpt[i]) + 24;
  p = ec_malloc_size(MEMTYPE_MESSAGE_BODY, cap);
  if (p == NULL)
    return NULL;
  gmtime_r(&t, &tm);
  strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
  n = snprintf(p, cap, "Return-Path: <%s>\r\n", s->sender);
  for (int i = 0; i < s->nrcpt; i++)
    n += snprintf(p + n, cap - (size_t)n, "X-Envelope-To: <%s>\r\n", s->rcpt[i]);
  n += snprintf(p + n, cap - (size_t)n,
                "Received: from %s (%s)\r\n\tby %s (ecshard) with %s id %s;\r\n\t%s\r\n",
                s->helo_name, s->peer, s->set->hostname,
                s->utf8    ? "UTF8SMTP"
                : s->esmtp ? (s->tls ? "ESMTPS" : "ESMTP")
                           : "SMTP",
                id, date);
  *len = n;
  return p;
}

/*
 * Hands the message to a pool worker and suspends the session until it is written: the
 * Event is duplicated, cleared from the shard and freed by returning 0; the job's
 * completion dispatches the duplicate. STEP_SUSPENDED, or STEP_MORE after a refusal (the
 * body is freed and 451 queued).
 */
static int spool_start(smtp_session *s, Event *e, char *body, int len)
{
  spool_job *j;
  Event *dup;

  if (s->set->tmp_fd < 0)
    goto tempfail;
  j = ec_malloc_size(MEMTYPE_EC_ASYNC_JOB, sizeof(*j));
  if (j == NULL)
    goto tempfail;
  memset(j, 0, sizeof(*j));
  make_id(s, j->id);
  j->head = envelope_block(s, j->id, &j->head_len);
  if (j->head == NULL) {
    ec_free(MEMTYPE_EC_ASYNC_JOB, j);
    goto tempfail;
  }
  j->tmp_fd = s->set->tmp_fd;
  j->new_fd = s->set->new_fd;
  j->fsync = s->set->fsync;
  j->body = body;
  j->body_len = len;
  j->job.job_class = s->set->pool;
  j->job.worker = spool_work;
  dup = ec_malloc(MEMTYPE_EVENT);
  if (dup == NULL) {
    ec_free(MEMTYPE_MESSAGE_BODY, j->head);
    ec_free(MEMTYPE_EC_ASYNC_JOB, j);
    goto tempfail;
  }
  memcpy(dup, e, sizeof(*e));
  event_post_dup(dup, e);
  clear_event_by_fd(e->fd);
  ec_async_wake_event(&j->job, dup, E_READ | E_WRITE);
  s->ev = dup;
  s->job = j;
  s->phase = PH_SPOOL;
  if (!ec_queue_async_job(&j->job)) {
    /* The pool refused (backlog full, shutting down): answer 451 on the duplicate, which
     * holds the connection now; the caller returns 0 for `e` and we schedule `dup`. */
    log1_printf(DWARNING, "smtp: %s: cannot queue the spool write: %s", s->peer, strerror(errno));
    s->job = NULL;
    s->phase = PH_COMMAND;
    ec_free(MEMTYPE_MESSAGE_BODY, j->head);
    ec_free(MEMTYPE_EC_ASYNC_JOB, j);
    ec_free(MEMTYPE_MESSAGE_BODY, body);
    STAT_ADD(s->sh, spool_errors, 1);
    transaction_reset(s);
    if (REPLY(s, "451 4.3.0 Error: queue busy, try again later\r\n") < 0)
      s->quitting = 1;
    schedule_event_and_dispatch(dup, E_WRITE);
  }
  return STEP_SUSPENDED;
tempfail:
  ec_free(MEMTYPE_MESSAGE_BODY, body);
  STAT_ADD(s->sh, spool_errors, 1);
  transaction_reset(s);
  return REPLY(s, "451 4.3.0 Error: queue file write error\r\n") < 0 ? STEP_CLOSE : STEP_MORE;
}

/* Back from the pool: the answer to the message. */
static int spool_done(smtp_session *s)
{
  spool_job *j = s->job;
  int rc;

  s->job = NULL;
  s->phase = PH_COMMAND;
  STAT_ADD(s->sh, fsyncs, j->fsyncs);
  if (j->err == 0) {
    STAT_ADD(s->sh, messages, 1);
    STAT_ADD(s->sh, bytes, j->body_len);
    rc = reply_queued(s, j->id);
  } else {
    log1_printf(DERROR, "smtp: spool %s of %s/tmp/%s failed: %s", j->what, s->set->spool_dir, j->id,
                strerror(j->err));
    STAT_ADD(s->sh, spool_errors, 1);
    rc = j->err == ENOSPC || j->err == EDQUOT
             ? REPLY(s, "452 4.3.1 Error: insufficient system storage\r\n")
             : REPLY(s, "451 4.3.0 Error: queue file write error\r\n");
  }
  ec_free(MEMTYPE_MESSAGE_BODY, j->head);
  ec_free(MEMTYPE_MESSAGE_BODY, j->body);
  ec_free(MEMTYPE_EC_ASYNC_JOB, j);
  transaction_reset(s);
  return rc;
}

/*
 * 1 if p[from..len) holds LF "." LF, or (from 0) p starts with "." LF: where a client
 * that ends its lines with a bare LF ends its message. Also right on a body that
 * body_scan refused, although it may have unstuffed part of it in place: the lines it
 * moved were valid (CRLF only), and the bytes from the refused line on are untouched.
 */
static int lf_end_from(const char *p, int len, int from)
{
  const char *q = p + from, *end = p + len;

  if (from == 0 && len >= 2 && p[0] == '.' && p[1] == '\n')
    return 1;
  while (end - q >= 3 && (q = memchr(q, '\n', (size_t)(end - q - 2))) != NULL) {
    if (q[1] == '.' && q[2] == '\n')
      return 1;
    q++;
  }
  return 0;
}

/* A complete body record (`len` bytes ending with CRLF.CRLF, or NULL for an empty body). */
static int body_done(smtp_session *s, Event *e, char *rec, int len)
{
  int mlen = len >= SMTP_DATA_END_LEN ? len - 3 : 0; /* keep the last line's CRLF */
  int toobig = s->toobig;
  char id[32];

  body_end(s);
  if (toobig) {
    ec_free(MEMTYPE_MESSAGE_BODY, rec);
    transaction_reset(s);
    return ERROR(s, "552 5.3.4 Error: message size exceeds fixed limit\r\n") < 0 ? STEP_CLOSE
                                                                                 : STEP_MORE;
  }
  if (rec != NULL) {
    mlen = body_scan(rec, mlen, !s->set->sink, s->set->bare_newline == BARE_ACCEPT);
    if (mlen < 0) {
      /* LF "." LF inside: a smuggling attempt or a client that ends lines with bare LFs.
       * Closing whether or not CRLF.CRLF came in the same read keeps the outcome
       * independent of how the bytes were segmented (see buffered_lf_end). */
      if (s->set->bare_newline == BARE_DISCONNECT || lf_end_from(rec, len, 0))
        s->quitting = 1;
      ec_free(MEMTYPE_MESSAGE_BODY, rec);
      transaction_reset(s);
      log1_printf(DINFO, "smtp: %s: bare CR or LF in a message; refused", s->peer);
      return ERROR(s, "554 5.5.2 Error: bare <CR> or <LF> in message; message refused\r\n") < 0
                 ? STEP_CLOSE
                 : STEP_MORE;
    }
  }
  if (!s->set->sink)
    return spool_start(s, e, rec, mlen);
  ec_free(MEMTYPE_MESSAGE_BODY, rec);
  make_id(s, id);
  STAT_ADD(s->sh, messages, 1);
  STAT_ADD(s->sh, bytes, mlen);
  transaction_reset(s);
  return reply_queued(s, id) < 0 ? STEP_CLOSE : STEP_MORE;
}

/* ---- input --------------------------------------------------------------------------------- */

/* 1 if the read-ahead holds `delim` (a complete record can be had without reading). */
static int buffered_record(const minimal_tryread_construct *mtc, const char *delim, int dlen)
{
  const grow_buf *gb = &mtc->gb_buffer;

  return gb->end - gb->start >= dlen &&
         memmem(gb->data + gb->start, (size_t)(gb->end - gb->start), delim, (size_t)dlen) != NULL;
}

/* 1 if the read-ahead starts with the end-of-data line ".\r\n": an empty body. */
static int buffered_empty_body(const minimal_tryread_construct *mtc)
{
  const grow_buf *gb = &mtc->gb_buffer;

  return gb->end - gb->start >= 3 && memcmp(gb->data + gb->start, ".\r\n", 3) == 0;
}

/*
 * 1 if the body read so far holds LF "." LF (or starts with "." LF): the end of data of a
 * client that ends its lines with a bare LF. Unless bare newlines are accepted it is never
 * part of an acceptable body, and only CRLF.CRLF ends one, so such a client would wait for
 * the data timeout. Searches only the bytes not searched before (and the two before them).
 */
static int buffered_lf_end(smtp_session *s)
{
  const grow_buf *gb = &s->in.gb_buffer;
  int len = gb->end - gb->start, from = s->lf_scan < 2 ? 0 : s->lf_scan - 2;

  if (s->set->bare_newline == BARE_ACCEPT)
    return 0;
  if (from > len)
    from = 0; /* the read-ahead was paged out (an oversized message): search it all */
  s->lf_scan = len;
  return len > 0 && lf_end_from(gb->data + gb->start, len, from); /* data is NULL when empty */
}

/* Refuses a body that ended with LF "." LF and closes: where the client meant the message
 * to end is ambiguous (SMTP smuggling), so no byte after it may be read as a command. */
static int bare_lf_end(smtp_session *s)
{
  log1_printf(DINFO, "smtp: %s: message ended with bare LF \".\" LF; refused, disconnecting",
              s->peer);
  ec_tryread_discard(&s->in);
  body_end(s);
  transaction_reset(s);
  s->quitting = 1;
  return ERROR(s, "554 5.5.2 Error: bare <CR> or <LF> in message; message refused\r\n") < 0
             ? STEP_CLOSE
             : STEP_MORE;
}

/* What to do when the read failed: EAGAIN waits, anything else ends the session. */
static int read_failed(smtp_session *s, int n)
{
  if (n == -1 && errno == EAGAIN)
    return STEP_BLOCKED;
  if (n < 0 && errno != EPIPE && errno != ECONNRESET)
    log1_printf(DINFO, "smtp: %s: read failed: %s", s->peer, strerror(errno));
  s->quitting = 1; /* end of stream: send what is queued, then close */
  return STEP_BLOCKED;
}

/*
 * One step of input: a command or a body. `*did_read` keeps a dispatch to one read of
 * the socket on plain connections: once it has read, records are taken only from the
 * read-ahead, and level-triggered readiness brings the rest (so no read ends in EAGAIN
 * after a batch). TLS connections loop until EAGAIN, since OpenSSL may hold decrypted
 * bytes that the descriptor's readiness does not show.
 */
static int step(smtp_session *s, Event *e, int *need, int *did_read)
{
  int n;

  if (s->phase == PH_BODY) {
    if (buffered_empty_body(&s->in)) {
      n = ec_tryread_bytes(e, need, &s->in, 3);
      if (n != 3)
        return read_failed(s, n);
      ec_free(MEMTYPE_MESSAGE_BODY, s->in.gb_donebuffer);
      return body_done(s, e, NULL, 0);
    }
    if (!buffered_record(&s->in, SMTP_DATA_END, SMTP_DATA_END_LEN)) {
      if (*did_read && !s->tls) {
        /* The LF "." LF may already be in the read-ahead (sent with DATA): no readiness
         * would come for it. */
        if (buffered_lf_end(s))
          return bare_lf_end(s);
        return STEP_BLOCKED;
      }
      *did_read = 1;
    }
    n = tryread_until(e, need, &s->in, SMTP_DATA_END);
    if (n <= 0) {
      if (n == -1 && errno == EAGAIN && buffered_empty_body(&s->in))
        return STEP_MORE; /* ".\r\n" arrived: the next step takes it */
      if (n == -1 && errno == EAGAIN && buffered_lf_end(s))
        return bare_lf_end(s);
      return read_failed(s, n);
    }
    if (n >= 3 && memcmp(s->in.gb_donebuffer, ".\r\n", 3) == 0) {
      /* An empty body, and behind it in the same read another end-of-data line: the
       * client sent a message body before our 354 (RFC 2920 forbids sending past DATA).
       * Those bytes are gone into this record, so refuse and close rather than guess. */
      ec_free(MEMTYPE_MESSAGE_BODY, s->in.gb_donebuffer);
      body_end(s);
      transaction_reset(s);
      log1_printf(DINFO, "smtp: %s: improper pipelining after DATA", s->peer);
      s->quitting = 1;
      return ERROR(s, "554 5.5.0 Error: improper pipelining after DATA\r\n") < 0 ? STEP_CLOSE
                                                                                 : STEP_MORE;
    }
    return body_done(s, e, s->in.gb_donebuffer, n);
  }
  if (!buffered_record(&s->in, "\n", 1)) {
    if (*did_read && !s->tls)
      return STEP_BLOCKED;
    *did_read = 1;
  }
  n = tryread_until(e, need, &s->in, "\n"); /* command() refuses a bare LF */
  if (n > 0) {
    int rc = command(s, s->in.gb_donebuffer, n);

    ec_free(MEMTYPE_MESSAGE_BODY, s->in.gb_donebuffer);
    return rc < 0 ? STEP_CLOSE : STEP_MORE;
  }
  if (n == -1 && errno == E2BIG)
    return ERROR(s, "500 5.5.0 Error: line too long\r\n") < 0 ? STEP_CLOSE : STEP_MORE;
  return read_failed(s, n);
}

static int smtp_cb(Event *e, int eventtype, void *closure, struct timeval *now)
{
  smtp_session *s = closure;
  int need = E_READ, did_read = 0, blocked = 0, rc;

  if (s->phase == PH_SPOOL) {
    /* The spool job's completion. A connection closed meanwhile (the framework's join)
     * only releases its state. */
    if (e->fd < 0) {
      spool_done(s);
      session_free(s);
      e->closure = NULL;
      return 0;
    }
    if (spool_done(s) < 0)
      return session_end(e, s);
  }
  s->ev = e;
  if (eventtype & E_TIMEOUT) {
    /* Our timer, the listener's idle timeout or a stop's drain deadline: one best-effort
     * line, then close. */
    char buf[320];
    int k =
        snprintf(buf, sizeof(buf), "421 4.4.2 %s Error: timeout exceeded\r\n", s->set->hostname);

    STAT_ADD(s->sh, rejects, 1);
    event_io_write(e, buf, k, &s->out);
    return session_end(e, s);
  }
  s->last = now->tv_sec;
  for (;;) {
    if (s->out.needmask) {
      rc = event_io_retry(e, &s->out);
      if (rc == EVENT_IO_PENDING)
        return s->out.needmask;
      if (rc == EVENT_IO_ERROR)
        return session_end(e, s);
    }
    if (s->quitting)
      return session_end(e, s);
    if (s->starttls) {
      /* The 220 is out: switch to TLS. Plaintext read ahead is dropped by ec_ssl_starttls;
       * the session forgets what it knew (RFC 3207 4.2) and waits for the new EHLO. */
      if (ec_event_flush(e) < 0) /* the 220 may still be with the shard (write-behind) */
        return errno == EAGAIN ? E_WRITE : session_end(e, s);
      s->starttls = 0;
      rc = ec_ssl_starttls(e, s->tls_ctx, &s->in);
      if (rc < 0) {
        log1_printf(DINFO, "smtp: %s: STARTTLS failed: %s", s->peer, strerror(-rc));
        return session_end(e, s);
      }
      s->tls = 1;
      s->helo = s->esmtp = 0;
      transaction_reset(s);
      blocked = 0;
      did_read = 0;
      continue;
    }
    if (blocked) {
      if (ec_framework_stopping() && s->phase == PH_COMMAND && !s->in_mail) {
        /* A graceful stop: no transaction open, say goodbye. */
        char buf[320];
        int k =
            snprintf(buf, sizeof(buf), "421 4.3.2 %s Service shutting down\r\n", s->set->hostname);

        s->quitting = 1;
        if (reply(s, buf, k) < 0)
          return session_end(e, s);
        continue;
      }
      /* Going idle: a reply buffer grown by a pipelined burst goes back (the framework
       * keeps up to 64 KiB); the read-ahead is already released when empty. */
      if (s->out.needmask == 0 && s->out.bufsize > SMTP_IDLE_OUT_MAX)
        event_io_state_clean(&s->out);
      return need;
    }
    while (!s->quitting && !s->starttls && ec_event_io_pending(&s->out) < SMTP_OUT_HIGH) {
      rc = step(s, e, &need, &did_read);
      if (rc == STEP_SUSPENDED)
        return 0; /* `e` is freed; the duplicate comes back with the job's completion */
      if (rc == STEP_CLOSE)
        return session_end(e, s);
      if (rc == STEP_BLOCKED) {
        blocked = 1;
        break;
      }
    }
  }
}

/* ---- start --------------------------------------------------------------------------------- */

/* Refuses a connection with one best-effort line and closes it. */
static int refuse(Event *e, const smtp_settings *set, const char *why)
{
  char buf[320];
  int need, k = snprintf(buf, sizeof(buf), "421 4.7.0 %s Error: %s, try again later\r\n",
                         set->hostname, why);

  STAT_ADD(shard_self(), sessions_refused, 1);
  event_write(e, buf, k, &need);
  event_close(e);
  return 0;
}

static int smtp_start(Event *e, const ec_accept_info *info, void *closure)
{
  const smtp_settings *set = settings_get();
  smtp_session *s;
  unsigned char ip[16];
  int family = 0, have_ip, total, rc;
  char buf[320];

  /* Counting first, then checking, so that two shards racing for the last slot cannot
   * both get it; relaxed: a count, nothing else is published through it. */
  total = __atomic_add_fetch(&g.sessions, 1, __ATOMIC_RELAXED);
  if (set->max_sessions > 0 && total > set->max_sessions) {
    __atomic_fetch_sub(&g.sessions, 1, __ATOMIC_RELAXED);
    log1_printf(DINFO, "smtp: too many sessions (%d); refusing a client", set->max_sessions);
    return refuse(e, set, "too many sessions");
  }
  have_ip = ip_key(&info->peer, ip, &family);
  if (have_ip && set->max_sessions_per_ip > 0 && !ip_take(ip, family, set->max_sessions_per_ip)) {
    __atomic_fetch_sub(&g.sessions, 1, __ATOMIC_RELAXED);
    log1_printf(DINFO, "smtp: too many sessions from one client address; refusing it");
    return refuse(e, set, "too many connections from your address");
  }
  s = calloc(1, sizeof(*s));
  if (s == NULL) {
    if (have_ip && set->max_sessions_per_ip > 0)
      ip_release(ip, family);
    __atomic_fetch_sub(&g.sessions, 1, __ATOMIC_RELAXED);
    return refuse(e, set, "out of memory");
  }
  s->ev = e;
  s->set = set;
  s->tls_ctx = info->tls_ctx;
  s->tls = info->tls != 0;
  s->sh = shard_self();
  s->phase = PH_COMMAND;
  s->in.max_region_size = set->max_line;
  s->ip_held = have_ip && set->max_sessions_per_ip > 0;
  memcpy(s->ip, ip, sizeof(ip));
  s->ip_family = family;
  s->last = get_now_ts();
  if (info->peer.ss_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)&info->peer)->sin_addr, s->peer,
              sizeof(s->peer));
  else if (info->peer.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&info->peer)->sin6_addr, s->peer,
              sizeof(s->peer));
  else
    snprintf(s->peer, sizeof(s->peer), "local");
  snprintf(s->helo_name, sizeof(s->helo_name), "unknown");
  e->callback = smtp_cb;
  e->closure = s;
  if (!s->tls)
    (void)ec_event_write_behind(e, 1); /* replies go out with the shard's next wait */
  STAT_ADD(s->sh, sessions, 1);
  if (set->command_timeout > 0 || set->data_timeout > 0) {
    double t = set->command_timeout;

    if (t <= 0 || (set->data_timeout > 0 && set->data_timeout < t))
      t = set->data_timeout;
    timer_arm(s, t);
  }
  rc = snprintf(buf, sizeof(buf), "220 %s ESMTP ecshard\r\n", set->hostname);
  rc = event_io_write(e, buf, rc, &s->out);
  if (rc == EVENT_IO_ERROR)
    return session_end(e, s);
  return rc == EVENT_IO_PENDING ? s->out.needmask : E_READ;
}

int smtp_register(void)
{
  ec_protocol p = {
      .name = "smtp",
      .session_start = smtp_start,
      .busy_reply = "421 4.3.2 Service not available, too busy\r\n",
  };
  int rc;

  pthread_once(&ip_once, ip_locks_init);
  /* A new framework run: settings are read again on first use, counters start at 0. */
  pthread_mutex_lock(&g.load_lock);
  if (g.loaded) {
    if (g.set.tmp_fd >= 0)
      close(g.set.tmp_fd);
    if (g.set.new_fd >= 0)
      close(g.set.new_fd);
  }
  memset(&g.set, 0, sizeof(g.set));
  memset(g.shards, 0, sizeof(g.shards));
  __atomic_store_n(&g.loaded, 0, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&g.load_lock);
  rc = ec_config_section_register("smtp", smtp_items, smtp_defaults);
  if (rc < 0 && rc != -EEXIST)
    return rc;
  return ec_protocol_register(&p);
}
