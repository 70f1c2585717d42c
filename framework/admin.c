/*
 * framework/admin.c - the framework's own protocols: "admin" (metrics over HTTP) and
 * "console" (line commands on a Unix socket). docs/operations.md describes both.
 *
 *   listener = {
 *     admin   = { listen = "127.0.0.1:9090"; protocol = "admin"; };
 *     console = { listen = "unix:/run/ecshard/console"; protocol = "console"; };
 *   };
 *
 * "admin" is a minimal HTTP/1.0 responder: one GET or HEAD per connection (/metrics in
 * Prometheus text format 0.0.4, /stats in JSON, /health), read-only, answered from the
 * live counters and closed. It is meant for loopback or a management network: it has no
 * authentication, like most exporters. "console" takes one command per line and answers
 * each with its output and a line holding a single "."; lines of output that start with
 * "." get another one in front (SMTP's dot-stuffing). It refuses clients whose user is
 * neither root nor the server's (SO_PEERCRED), and any listener that is not a Unix socket.
 * Both run on the shard that accepted the connection and never block it: output is
 * written as far as the socket takes and the rest when it is writable again.
 */
#include "ec_log.h"
#include "ec_malloc.h"
#include "ec_stats.h"
#include "ec_thread_pool.h"
#include "event.h"
#include "framework/internal.h"
#include "framework/listener.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define IN_MAX 8192 /* request head (admin) or one command line (console) */

typedef struct conn {
  int console;
  int closing; /* close once the output is written */
  size_t inlen;
  char *out;
  size_t outlen, outcap, outoff;
  int oom;
  char in[IN_MAX];
} conn;

/* ---- output --------------------------------------------------------------------------- */

static void out_put(conn *c, const char *s, size_t n)
{
  if (c->oom)
    return;
  if (c->outlen + n > c->outcap) {
    size_t cap = c->outcap ? c->outcap : 4096;
    char *p;

    while (cap < c->outlen + n)
      cap *= 2;
    p = ec_realloc(MEMTYPE_GENERIC, c->out, cap);
    if (p == NULL) {
      c->oom = 1;
      return;
    }
    c->out = p;
    c->outcap = cap;
  }
  memcpy(c->out + c->outlen, s, n);
  c->outlen += n;
}

EC_PRINTF_LIKE(2, 3) static void out_printf(conn *c, const char *fmt, ...)
{
  char buf[1024];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n > 0)
    out_put(c, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Console output: dot-stuffed lines. */
static void out_lines(conn *c, const char *text, size_t len)
{
  const char *p = text, *end = text + len;

  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

    if (n > 0 && p[0] == '.')
      out_put(c, ".", 1);
    out_put(c, p, n);
    out_put(c, "\n", 1);
    p += n + 1;
  }
}

/* Writes what is pending; 1 when all is out, 0 to wait for *need (E_WRITE, or E_READ
 * under TLS), -1 on error. */
static int flush(Event *e, conn *c, int *need)
{
  while (c->outoff < c->outlen) {
    int n = event_write(e, c->out + c->outoff, (int)(c->outlen - c->outoff), need);

    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    c->outoff += (size_t)n;
  }
  c->outoff = c->outlen = 0;
  return 1;
}

static void conn_free(conn *c)
{
  ec_free(MEMTYPE_GENERIC, c->out);
  ec_free(MEMTYPE_GENERIC, c);
}

static int conn_close(Event *e, conn *c)
{
  event_close(e);
  conn_free(c);
  return 0;
}

/* ---- admin: HTTP ---------------------------------------------------------------------- */

static void http_reply(conn *c, int head, int status, const char *reason, const char *ctype,
                       const char *extra, const char *body, size_t len)
{
  out_printf(c,
             "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
             "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
             status, reason, ctype, len, extra ? extra : "");
  if (!head)
    out_put(c, body, len);
  c->closing = 1;
}

static void http_text(conn *c, int head, int status, const char *reason, const char *text)
{
  http_reply(c, head, status, reason, "text/plain; charset=utf-8", NULL, text, strlen(text));
}

static void http_request(conn *c, char *req)
{
  char *method = req, *target, *version, *q;
  int head;

  /* "METHOD SP TARGET SP HTTP/x.y" (RFC 9112 §3); anything else is a 400. */
  target = strchr(method, ' ');
  if (target == NULL) {
    http_text(c, 0, 400, "Bad Request", "bad request line\n");
    return;
  }
  *target++ = '\0';
  version = strchr(target, ' ');
  if (version == NULL || strncmp(version + 1, "HTTP/1.", 7) != 0) {
    http_text(c, 0, 400, "Bad Request", "bad request line\n");
    return;
  }
  *version = '\0';
  head = strcmp(method, "HEAD") == 0;
  if (!head && strcmp(method, "GET") != 0) {
    http_reply(c, 0, 405, "Method Not Allowed", "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n",
               "only GET and HEAD\n", 18);
    return;
  }
  if ((q = strchr(target, '?')) != NULL)
    *q = '\0';
  if (strcmp(target, "/metrics") == 0 || strcmp(target, "/stats") == 0) {
    int json = strcmp(target, "/stats") == 0;
    char *body = NULL;
    int n = ec_stats_render(json ? EC_STATS_JSON : EC_STATS_PROMETHEUS, &body);

    if (n < 0) {
      http_text(c, head, 503, "Service Unavailable", "statistics unavailable\n");
      return;
    }
    http_reply(c, head, 200, "OK",
               json ? "application/json" : "text/plain; version=0.0.4; charset=utf-8", NULL, body,
               (size_t)n);
    ec_free(MEMTYPE_GENERIC, body);
  } else if (strcmp(target, "/health") == 0) {
    if (ec_framework_stopping())
      http_text(c, head, 503, "Service Unavailable", "stopping\n");
    else
      http_text(c, head, 200, "OK", "ok\n");
  } else if (strcmp(target, "/") == 0) {
    http_text(c, head, 200, "OK", "ecshard admin: /metrics (Prometheus), /stats (JSON), /health\n");
  } else {
    http_text(c, head, 404, "Not Found", "not found: /metrics, /stats, /health\n");
  }
}

/* 1 when a whole request head is buffered (and handled). */
static int http_input(conn *c)
{
  char *end = NULL, *eol;

  for (size_t i = 0; i + 1 < c->inlen; i++) {
    if (c->in[i] == '\n' && c->in[i + 1] == '\n') {
      end = &c->in[i];
      break;
    }
    if (i + 3 < c->inlen && memcmp(&c->in[i], "\r\n\r\n", 4) == 0) {
      end = &c->in[i];
      break;
    }
  }
  if (end == NULL)
    return 0;
  /* The head ends in a blank line, so the request line has its newline. */
  eol = memchr(c->in, '\n', c->inlen);
  *eol = '\0';
  if (eol > c->in && eol[-1] == '\r')
    eol[-1] = '\0';
  http_request(c, c->in);
  return 1;
}

/* ---- console commands ------------------------------------------------------------------- */

static void cmd_help(conn *c)
{
  static const char text[] =
      "stats                 summary counters\n"
      "stats prometheus|json every metric, as GET /metrics or /stats\n"
      "shards                per-shard counters\n"
      "memory                allocator, jemalloc and memtype counters\n"
      "threads               the process's threads\n"
      "listeners             per-listener counters\n"
      "log level             every subsystem's level\n"
      "log level LEVEL       set every subsystem (debug info notice warning error critical "
      "off)\n"
      "log level SUBSYS LEVEL  set one subsystem (SHARD, NET, SSL, CONFIG, ...)\n"
      "log reopen            reopen the log file (as SIGUSR1)\n"
      "timing on|off         callback timing (histogram, exact slow-callback reports)\n"
      "reload                reload the configuration (as SIGHUP)\n"
      "shutdown              graceful stop (as SIGTERM)\n"
      "quit                  close this console\n";

  out_lines(c, text, sizeof(text) - 1);
}

static void cmd_stats(conn *c, const char *arg)
{
  uint64_t it = 0, cb = 0, in = 0, out = 0, msgs = 0, stalls = 0, acc = 0, ref = 0;
  char buf[2048];
  int n;

  if (arg != NULL && (strcmp(arg, "prometheus") == 0 || strcmp(arg, "json") == 0)) {
    char *body = NULL;
    int len = ec_stats_render(arg[0] == 'j' ? EC_STATS_JSON : EC_STATS_PROMETHEUS, &body);

    if (len < 0) {
      out_printf(c, "error: %s\n", strerror(-len));
      return;
    }
    out_lines(c, body, (size_t)len);
    ec_free(MEMTYPE_GENERIC, body);
    return;
  }
  if (arg != NULL) {
    out_printf(c, "error: stats [prometheus|json]\n");
    return;
  }
  for (int i = 0; i < ec_shard_count(); i++) {
    ec_shard_stats st;

    if (ec_shard_stats_get(i, &st) < 0)
      continue;
    it += st.iterations;
    cb += st.dispatched;
    in += st.bytes_in;
    out += st.bytes_out;
    msgs += st.messages;
    stalls += st.stalls;
  }
  for (int i = 0; i < fw__listener_count(); i++) {
    ec_listener_stats ls;

    if (ec_listener_stats_get(fw__listener_get(i)->name, &ls) == 0) {
      acc += ls.accepted;
      ref += ls.refused;
    }
  }
  n = snprintf(buf, sizeof(buf),
               "version %s\nshards %d\npoller %s\nallocator %s\nsessions_active %llu\n"
               "accepted %llu\nrefused %llu\niterations %llu\ncallbacks %llu\n"
               "mailbox_messages %llu\nbytes_in %llu\nbytes_out %llu\nstalls %llu\n"
               "callback_timing %s\nlog_dropped %llu\nreloads %llu\nreload_failures %llu\n"
               "stopping %d\n",
               ECSHARD_VERSION_STRING, ec_shard_count(), ec_poller_name(), ec_allocator_name(),
               (unsigned long long)ec_sessions_active(), (unsigned long long)acc,
               (unsigned long long)ref, (unsigned long long)it, (unsigned long long)cb,
               (unsigned long long)msgs, (unsigned long long)in, (unsigned long long)out,
               (unsigned long long)stalls, ec_stats_set_callback_timing(-1) ? "on" : "off",
               (unsigned long long)ec_log_dropped(),
               (unsigned long long)ec_framework_reload_count(0),
               (unsigned long long)ec_framework_reload_count(1), ec_framework_stopping());
  out_lines(c, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static void cmd_shards(conn *c)
{
  out_printf(c, "%-5s %-7s %-4s %12s %12s %10s %7s %5s %7s %12s %12s %6s\n", "shard", "tid", "busy",
             "iterations", "callbacks", "messages", "backlog", "fds", "timers", "bytes_in",
             "bytes_out", "stalls");
  for (int i = 0; i < ec_shard_count(); i++) {
    ec_shard_stats st;

    if (ec_shard_stats_get(i, &st) < 0)
      continue;
    out_printf(c, "%-5d %-7d %-4s %12llu %12llu %10llu %7llu %5llu %7llu %12llu %12llu %6llu\n", i,
               st.thread_id,
               st.stalled ? "STALL"
               : st.busy  ? "yes"
                          : "no",
               (unsigned long long)st.iterations, (unsigned long long)st.dispatched,
               (unsigned long long)st.messages, (unsigned long long)st.mailbox_backlog,
               (unsigned long long)st.scheduled_fds, (unsigned long long)st.timers_pending,
               (unsigned long long)st.bytes_in, (unsigned long long)st.bytes_out,
               (unsigned long long)st.stalls);
  }
}

static void memtype_line(int id, const ec_memtype_stats *st, void *arg)
{
  out_printf(arg, "%-4d %-32s %12lld %14lld %12lld %14lld %14llu\n", id, st->name ? st->name : "?",
             (long long)st->live_objects, (long long)st->live_bytes, (long long)st->peak_objects,
             (long long)st->peak_bytes, (unsigned long long)st->total_allocs);
}

static void cmd_memory(conn *c)
{
  static const char *const je[] = {"stats.allocated", "stats.active", "stats.resident",
                                   "stats.mapped", "stats.retained"};

  out_printf(c, "allocator %s\n", ec_allocator_name());
  for (size_t i = 0; i < sizeof(je) / sizeof(je[0]); i++) {
    uint64_t v;

    if (fw__jemalloc_stat(je[i], &v) == 0)
      out_printf(c, "jemalloc %s %llu\n", je[i] + 6, (unsigned long long)v);
  }
  out_printf(c, "%-4s %-32s %12s %14s %12s %14s %14s\n", "id", "memtype", "live", "live_bytes",
             "peak", "peak_bytes", "allocs");
  ec_memtype_stats_foreach(memtype_line, c);
}

static void cmd_threads(conn *c)
{
  DIR *d = opendir("/proc/self/task");
  struct dirent *de;

  if (d == NULL) {
    out_printf(c, "error: /proc/self/task: %s\n", strerror(errno));
    return;
  }
  out_printf(c, "%-8s %-16s %-5s %s\n", "tid", "name", "state", "role");
  while ((de = readdir(d)) != NULL) {
    char path[64], comm[32] = "", stat[256] = "", role[64] = "";
    int tid = atoi(de->d_name);
    char state = '?';
    FILE *f;

    if (tid <= 0)
      continue;
    snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tid);
    if ((f = fopen(path, "re")) != NULL) {
      if (fgets(comm, sizeof(comm), f) != NULL)
        comm[strcspn(comm, "\n")] = '\0';
      fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
    if ((f = fopen(path, "re")) != NULL) {
      /* "tid (comm) S ...": the state follows the last ')'. */
      if (fgets(stat, sizeof(stat), f) != NULL) {
        char *rp = strrchr(stat, ')');

        if (rp != NULL && rp[1] == ' ')
          state = rp[2];
      }
      fclose(f);
    }
    for (int i = 0; i < ec_shard_count(); i++) {
      ec_shard_stats st;

      if (ec_shard_stats_get(i, &st) == 0 && st.thread_id == tid)
        snprintf(role, sizeof(role), "shard %d%s", i, st.stalled ? " (stalled)" : "");
    }
    if (tid == (int)getpid())
      snprintf(role, sizeof(role), "main");
    out_printf(c, "%-8d %-16s %-5c %s\n", tid, comm, state, role);
  }
  closedir(d);
  for (int i = 0; i < ec_thread_pool_count() + 8 && i < 1024; i++) {
    ec_thread_pool_stats ps;

    if (ec_thread_pool_stats_get(i, &ps) == 0)
      out_printf(c, "pool %s: %d threads, %llu queued, %llu running\n", ps.name, ps.threads,
                 (unsigned long long)ps.queued, (unsigned long long)ps.running);
  }
}

static void cmd_listeners(conn *c)
{
  out_printf(c, "%-16s %-12s %10s %8s %8s %8s %6s %6s\n", "listener", "protocol", "accepted",
             "refused", "active", "timeouts", "proxy", "pauses");
  for (int i = 0; i < fw__listener_count(); i++) {
    fw__listener *l = fw__listener_get(i);
    ec_listener_stats st;

    if (l == NULL || ec_listener_stats_get(l->name, &st) < 0)
      continue;
    out_printf(c, "%-16s %-12s %10llu %8llu %8llu %8llu %6llu %6llu\n", l->name, l->proto->name,
               (unsigned long long)st.accepted, (unsigned long long)st.refused,
               (unsigned long long)st.active, (unsigned long long)st.timeouts,
               (unsigned long long)st.proxy_errors, (unsigned long long)st.accept_pauses);
  }
}

static void cmd_log(conn *c, char *args)
{
  char *words[4];
  int n = 0, level;
  unsigned mask;

  for (char *save = NULL, *w = strtok_r(args, " \t", &save); w != NULL && n < 4;
       w = strtok_r(NULL, " \t", &save))
    words[n++] = w;
  if (n == 1 && strcmp(words[0], "reopen") == 0) {
    fw__log_reopen();
    out_printf(c, "ok: log reopened\n");
    return;
  }
  if (n == 0 || strcmp(words[0], "level") != 0 || n > 3) {
    out_printf(c, "error: log level [SUBSYS] LEVEL | log reopen\n");
    return;
  }
  if (n == 1) {
    char buf[1024];

    fw__log_describe(buf, sizeof(buf));
    for (char *p = buf; *p; p++)
      if (*p == ' ')
        *p = '\n';
    out_lines(c, buf, strlen(buf));
    return;
  }
  level = ec_log_level_by_name(words[n - 1]);
  if (level < 0) {
    out_printf(c, "error: unknown level '%s' (debug info notice warning error critical off)\n",
               words[n - 1]);
    return;
  }
  mask = n == 3 ? ec_log_subsystem_by_name(words[1]) : EC_LOG_ALL;
  if (mask == 0) {
    out_printf(c, "error: unknown subsystem '%s'\n", words[1]);
    return;
  }
  ec_log_set_subsystem_level(mask, level);
  ec_debug_printf(DNOTICE, EC_LOG_CONFIG, "console: log level %s set to %s",
                  n == 3 ? words[1] : "of every subsystem", ec_log_level_name(level));
  out_printf(c, "ok: %s %s\n", n == 3 ? words[1] : "ALL", ec_log_level_name(level));
}

static void console_command(conn *c, char *line)
{
  char *cmd, *rest;

  while (isspace((unsigned char)*line))
    line++;
  for (size_t n = strlen(line); n > 0 && isspace((unsigned char)line[n - 1]); n--)
    line[n - 1] = '\0';
  cmd = line;
  rest = strpbrk(line, " \t");
  if (rest != NULL) {
    *rest++ = '\0';
    while (isspace((unsigned char)*rest))
      rest++;
    if (*rest == '\0')
      rest = NULL;
  }
  if (*cmd == '\0') {
    /* An empty line: just the terminator (a client's keep-alive). */
  } else if (strcmp(cmd, "help") == 0) {
    cmd_help(c);
  } else if (strcmp(cmd, "stats") == 0) {
    cmd_stats(c, rest);
  } else if (strcmp(cmd, "shards") == 0 && rest == NULL) {
    cmd_shards(c);
  } else if (strcmp(cmd, "memory") == 0 && rest == NULL) {
    cmd_memory(c);
  } else if (strcmp(cmd, "threads") == 0 && rest == NULL) {
    cmd_threads(c);
  } else if (strcmp(cmd, "listeners") == 0 && rest == NULL) {
    cmd_listeners(c);
  } else if (strcmp(cmd, "log") == 0) {
    char empty[1] = "";

    cmd_log(c, rest ? rest : empty);
  } else if (strcmp(cmd, "timing") == 0 && rest != NULL &&
             (strcmp(rest, "on") == 0 || strcmp(rest, "off") == 0)) {
    ec_stats_set_callback_timing(strcmp(rest, "on") == 0);
    out_printf(c, "ok: callback timing %s\n", rest);
  } else if (strcmp(cmd, "reload") == 0 && rest == NULL) {
    int rc = ec_framework_request(EC_REQUEST_RELOAD);

    if (rc < 0)
      out_printf(c, "error: reload: %s (the host does not run ec_framework_run)\n", strerror(-rc));
    else
      out_printf(c, "ok: reload requested; the log says what changed\n");
  } else if (strcmp(cmd, "shutdown") == 0 && rest == NULL) {
    ec_debug_printf(DNOTICE, EC_LOG_SIG, "console: shutdown");
    out_printf(c, "ok: stopping\n");
    ec_framework_stop();
    c->closing = 1;
  } else if ((strcmp(cmd, "quit") == 0 || strcmp(cmd, "exit") == 0) && rest == NULL) {
    c->closing = 1;
  } else {
    out_printf(c, "error: unknown command '%.64s' (try help)\n", cmd);
  }
  out_put(c, ".\n", 2);
}

/* Handles every complete line buffered; 0, or -1 when a line is too long. */
static int console_input(conn *c)
{
  char *nl;

  while (!c->closing && (nl = memchr(c->in, '\n', c->inlen)) != NULL) {
    size_t used = (size_t)(nl - c->in) + 1;

    *nl = '\0';
    console_command(c, c->in);
    memmove(c->in, c->in + used, c->inlen - used);
    c->inlen -= used;
  }
  if (c->inlen == sizeof(c->in)) {
    out_printf(c, "error: line longer than %d bytes\n.\n", IN_MAX);
    c->closing = 1;
  }
  return 0;
}

/* ---- the session callback ----------------------------------------------------------------- */

static int session_cb(Event *e, int mask, void *closure, struct timeval *now)
{
  conn *c = closure;
  int rc, need = E_WRITE;

  (void)now;
  if (mask & E_TIMEOUT)
    return conn_close(e, c);
  for (;;) {
    rc = flush(e, c, &need);
    if (rc < 0 || c->oom)
      return conn_close(e, c);
    if (rc == 0)
      return need ? need : E_WRITE;
    if (c->closing)
      return conn_close(e, c);
    if (c->console && ec_framework_stopping())
      return conn_close(e, c); /* let the drain finish */
    {
      int n = event_read(e, c->in + c->inlen, (int)(sizeof(c->in) - c->inlen), &need);

      if (n == 0)
        return conn_close(e, c);
      if (n < 0) /* `need`: E_READ, or E_WRITE when TLS must write first */
        return errno == EAGAIN || errno == EWOULDBLOCK ? (need ? need : E_READ) : conn_close(e, c);
      c->inlen += (size_t)n;
    }
    if (c->console) {
      console_input(c);
    } else if (!http_input(c) && c->inlen == sizeof(c->in)) {
      http_text(c, 0, 431, "Request Header Fields Too Large", "request head too large\n");
    }
  }
}

static int session_start(Event *e, const ec_accept_info *info, void *closure)
{
  int console = closure != NULL;
  conn *c;

  if (console) {
    struct ucred cred;
    socklen_t len = sizeof(cred);

    /* Anybody who can connect can stop the server: only its own user and root may. */
    if (info->local.ss_family != AF_UNIX) {
      ec_debug_printf(DERROR, EC_LOG_NET,
                      "listener %s: the console protocol serves only unix: addresses; "
                      "connection closed",
                      info->listener);
      event_close(e);
      return 0;
    }
    if (getsockopt(e->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
        (cred.uid != 0 && cred.uid != geteuid())) {
      ec_debug_printf(DWARNING, EC_LOG_NET, "listener %s: console refused to uid %d",
                      info->listener, len == sizeof(cred) ? (int)cred.uid : -1);
      event_close(e);
      return 0;
    }
  }
  c = ec_malloc_size(MEMTYPE_GENERIC, sizeof(*c));
  if (c == NULL) {
    event_close(e);
    return 0;
  }
  memset(c, 0, offsetof(conn, in));
  c->console = console;
  e->callback = session_cb;
  e->closure = c;
  return E_READ;
}

int fw__admin_register(void)
{
  static const ec_protocol admin = {.name = "admin", .session_start = session_start};
  /* A non-NULL closure marks the console. */
  static const ec_protocol console = {
      .name = "console", .session_start = session_start, .closure = (void *)&console};
  int rc = ec_protocol_register(&admin);

  /* A host that registered its own protocol of that name keeps it. */
  if (rc < 0 && rc != -EEXIST)
    return rc;
  rc = ec_protocol_register(&console);
  return rc == -EEXIST ? 0 : rc;
}
