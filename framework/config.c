/*
 * framework/config.c - the effective configuration: embedded defaults, then a file (or a
 * text), then --set overrides, then the shards option; every layer checked against a
 * schema table before it is merged.
 *
 * Thread rules: fw__config_load() and fw__config_unload() run on one thread (bootstrap)
 * while no other thread reads the configuration. In between the configuration is never
 * written, so the ec_config_get_*() readers take no lock: threads started after load see
 * it through the happens-before edge of pthread_create().
 *
 * Errors name their origin the way compilers do ("FILE:LINE: message"). To keep that
 * possible after merging, every setting of the effective configuration carries the file
 * and line it came from (see set_origin()), so that sections which iterate groups later
 * (listeners, thread pools) can report file:line too.
 */
#include "framework/internal.h"

#include <ctype.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- the embedded defaults ------------------------------------------------------------ */

static const char default_text[] =
    "# ecshard embedded defaults (libconfig syntax). A configuration file, then\n"
    "# --set KEY=VALUE, then --shards N override these values.\n"
    "\n"
    "# The reactor: N scheduler threads (\"shards\"), each with its own poller.\n"
    "event_loop = {\n"
    "  concurrency = 0;        # shards; 0 = number of CPUs\n"
    "  # uring (Linux 6.15+) waits on epoll through io_uring and sends write-behind output\n"
    "  # in the same system call. auto: uring where the kernel runs it, else epoll on Linux,\n"
    "  # kqueue on the BSDs and macOS; poll works everywhere.\n"
    "  poller = \"auto\";        # auto | epoll | uring | poll | kqueue\n"
    "  # The three budgets bound the work of one iteration so that no source (mailbox,\n"
    "  # I/O readiness, timers) starves the others; leftovers wait for the next one.\n"
    "  mailbox_budget = 1024;  # mailbox messages handled per shard iteration\n"
    "  events_per_wait = 512;  # readiness events fetched per poller wait\n"
    "  max_timed_events_per_iter = 1024;  # timers fired per shard iteration\n"
    "  # Linux lets a sleeping thread wake up to its timer slack late (50 us by default) to\n"
    "  # batch wakeups; shards ask for this much instead (0 = leave the default).\n"
    "  timer_slack_ns = 1000;\n"
    "  # After an iteration that handled cross-thread messages, a shard with nothing else to\n"
    "  # do polls its mailbox this long before it sleeps, so that a steady stream from other\n"
    "  # threads does not cost a wakeup per burst (0 = always sleep at once).\n"
    "  mailbox_spin_ns = 20000;\n"
    "  # After an iteration that handled I/O, a shard polls for readiness up to this long\n"
    "  # before it sleeps, so that a peer answering within it finds the shard awake: no\n"
    "  # wakeup on either side, one more system call. The window adapts to the traffic.\n"
    "  # Worth it with a CPU to spare and peers on this host or LAN (0 = sleep at once).\n"
    "  io_spin_ns = 0;\n"
    "  # The clock timers count from: \"tsc\" extrapolates the monotonic clock with the\n"
    "  # CPU's invariant TSC (never early, 1 us late), \"kernel\" calls clock_gettime;\n"
    "  # auto = tsc where the CPU and the kernel's clock source allow it.\n"
    "  timer_clock = \"auto\";   # auto | tsc | kernel\n"
    "  # Seconds a peer gets to read the output a write-behind connection left when it was\n"
    "  # closed (ec_event_write_behind); after that the rest is dropped.\n"
    "  write_behind_linger = 30.0;\n"
    "};\n"
    "\n"
    "# Log lines go through a bounded queue to a logger thread; when the queue is full a\n"
    "# message is dropped and counted rather than stalling a shard.\n"
    "log = {\n"
    "  level = \"warning\";      # debug | info | notice | warning | error | critical\n"
    "  file = \"\";              # empty: stderr; reopened on SIGUSR1 (log rotation)\n"
    "  target = \"auto\";        # auto (file if set, else stderr) | stderr | file | syslog\n"
    "  syslog_facility = \"daemon\";\n"
    "  syslog_ident = \"ecshard\";\n"
    "  queue_size = 8192;      # queued messages; a power of two >= 16\n"
    "};\n"
    "\n"
    "# Stall detection (docs/operations.md): an iteration or callback running longer than\n"
    "# stall_threshold seconds is logged with the callback's name; a shard that finishes no\n"
    "# iteration for stuck_timeout seconds is reported as stuck. callback_timing times every\n"
    "# callback (two clock reads each) for the duration histogram and exact reports.\n"
    "watchdog = {\n"
    "  stall_threshold = 0.2;\n"
    "  stuck_timeout = 5.0;\n"
    "  callback_timing = false;\n"
    "};\n"
    "\n"
    "# Connections: process-wide limits (0 = none) and what happens on EMFILE/ENFILE.\n"
    "limits = {\n"
    "  max_connections = 0;    # sessions open at once over all listeners\n"
    "  accept_retry_delay = 0.1;  # seconds accepting pauses after EMFILE/ENFILE\n"
    "};\n"
    "\n"
    "# A graceful stop (SIGTERM, ec_framework_stop) closes the listeners at once and lets\n"
    "# sessions finish for up to drain_timeout seconds; then they get E_TIMEOUT.\n"
    "shutdown = {\n"
    "  drain_timeout = 10.0;\n"
    "};\n"
    "\n"
    "# Listeners: NAME = { listen = \"ADDR:PORT\" or [ ... ]; protocol = \"NAME\"; ... }.\n"
    "# See docs/configuration.md for every option. None by default.\n"
    "listener = { };\n"
    "\n"
    "# Worker thread pools (Momentum's ThreadPool): blocking work leaves the shards on them\n"
    "# (ec_queue_async_job, io_wrapper). CPU and IO always exist; any other name adds a pool.\n"
    "threadpool = {\n"
    "  CPU = { concurrency = 0; backlog = 0; };  # 0 threads: one per CPU; 0 backlog: no limit\n"
    "  IO = { concurrency = 16; backlog = 0; };  # threads that mostly wait: more than CPUs\n"
    "};\n"
    "\n"
    "# io_wrapper read jobs: files, file://, http:// and https:// URLs.\n"
    "io_wrapper = {\n"
    "  max_size = 67108864;     # bytes; a larger resource fails (IOJ_STORE_FAILED, EFBIG)\n"
    "  connect_timeout = 10.0;  # seconds\n"
    "  timeout = 60.0;          # seconds for a whole HTTP transfer\n"
    "  max_redirects = 5;\n"
    "  verify_peer = true;      # https: check the certificate and the host name\n"
    "  ca_file = \"\";            # \"\": the system's CA certificates\n"
    "  proxy = \"\";              # \"\": none (http_proxy & co. are ignored)\n"
    "};\n"
    "\n"
    "# Momentum's Debug_Flags: subsystems enabled at a level beyond what log.level enables.\n"
    "debug_flags = { };        # e.g. DEBUG = [ \"LOG1\", \"FD\" ]; keys are level names "
    "(upper case)\n";

const char *ec_config_default_text(void)
{
  return default_text;
}

/* ---- the schema ----------------------------------------------------------------------- */

/*
 * One table entry per setting. A group lists its members in a table ended by a NULL name;
 * an "open" group (CFG_GROUP_OF: thread pools, listeners, debug_flags) accepts any member
 * name that key_check allows, and every member follows the single entry `of` (often a
 * CFG_GROUP with its own table). Adding a section is adding rows; the validator, the --set
 * parser and the merge need no change.
 */
typedef enum cfg_type {
  CFG_INT,         /* int or int64, within [min, max] */
  CFG_FLOAT,       /* float, or an integer */
  CFG_BOOL,        /* true / false */
  CFG_STRING,      /* optionally one of `choices` */
  CFG_STRING_LIST, /* array or list of strings; `check` applies to each element */
  CFG_GROUP,       /* members described by `members` */
  CFG_GROUP_OF,    /* free member names (key_check), each member described by `of` */
} cfg_type;

#define CFG_REQUIRED 0x1u /* must be present in the effective configuration */

typedef struct cfg_entry cfg_entry;
struct cfg_entry {
  const char *name;
  cfg_type type;
  unsigned flags;
  long long min, max;         /* CFG_INT */
  double fmin, fmax;          /* CFG_FLOAT bounds, when fmin < fmax */
  const char *const *choices; /* CFG_STRING: NULL-terminated allowed values */
  /* Further rule on a scalar (or each element of a string list): NULL if the value is
   * fine, else the requirement it misses ("must be a power of two"). */
  const char *(*check)(const config_setting_t *s);
  const cfg_entry *members; /* CFG_GROUP */
  const cfg_entry *of;      /* CFG_GROUP_OF */
  /* CFG_GROUP_OF: NULL if `name` may be a member, else why not. */
  const char *(*key_check)(const char *name);
};

static const char *check_pow2(const config_setting_t *s)
{
  long long v = config_setting_get_int64(s);

  return v > 0 && (v & (v - 1)) == 0 ? NULL : "must be a power of two";
}

static const char *check_log_level(const config_setting_t *s)
{
  if (ec_log_level_by_name(config_setting_get_string(s)) >= 0)
    return NULL;
  return "must be a level name (debug, info, notice, warning, error, critical)";
}

static const char *check_subsystem(const config_setting_t *s)
{
  if (ec_log_subsystem_by_name(config_setting_get_string(s)) != 0)
    return NULL;
  return "must be a subsystem name (LOG1, FD, NET, SHARD, CONFIG, ALL, ...)";
}

/* One spelling per level, so that a file's "DEBUG" merges with the defaults' "DEBUG". */
static const char *check_level_key(const char *name)
{
  for (const char *p = name; *p; p++)
    if (islower((unsigned char)*p))
      return "keys are level names in upper case: DEBUG, INFO, NOTICE, WARNING, ERROR, "
             "CRITICAL";
  if (ec_log_level_by_name(name) < 0)
    return "keys are level names in upper case: DEBUG, INFO, NOTICE, WARNING, ERROR, "
           "CRITICAL";
  return NULL;
}

static const char *const poller_names[] = {"auto", "epoll", "uring", "poll", "kqueue", NULL};
static const char *const timer_clocks[] = {"auto", "tsc", "kernel", NULL};

static const cfg_entry event_loop_schema[] = {
    {.name = "concurrency", .type = CFG_INT, .min = 0, .max = 1024},
    {.name = "poller", .type = CFG_STRING, .choices = poller_names},
    {.name = "mailbox_budget", .type = CFG_INT, .min = 1, .max = 1 << 20},
    {.name = "events_per_wait", .type = CFG_INT, .min = 1, .max = 1 << 16},
    {.name = "max_timed_events_per_iter", .type = CFG_INT, .min = 1, .max = 1 << 20},
    {.name = "timer_slack_ns", .type = CFG_INT, .min = 0, .max = 100000000},
    {.name = "mailbox_spin_ns", .type = CFG_INT, .min = 0, .max = 10000000},
    {.name = "io_spin_ns", .type = CFG_INT, .min = 0, .max = 10000000},
    {.name = "timer_clock", .type = CFG_STRING, .choices = timer_clocks},
    {.name = "write_behind_linger", .type = CFG_FLOAT, .fmin = 0.001, .fmax = 86400},
    {.name = NULL},
};

static const char *const log_targets[] = {"auto", "stderr", "file", "syslog", NULL};
static const char *const syslog_facilities[] = {"daemon", "user",   "mail",   "local0",
                                                "local1", "local2", "local3", "local4",
                                                "local5", "local6", "local7", NULL};

static const cfg_entry log_schema[] = {
    {.name = "level", .type = CFG_STRING, .check = check_log_level},
    {.name = "file", .type = CFG_STRING},
    {.name = "target", .type = CFG_STRING, .choices = log_targets},
    {.name = "syslog_facility", .type = CFG_STRING, .choices = syslog_facilities},
    {.name = "syslog_ident", .type = CFG_STRING},
    {.name = "queue_size", .type = CFG_INT, .min = 16, .max = 1 << 24, .check = check_pow2},
    {.name = NULL},
};

static const char *check_nonneg(const config_setting_t *s)
{
  double v = config_setting_type(s) == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                         : (double)config_setting_get_int64(s);

  return v >= 0 && v < 1e9 ? NULL : "must be a number of seconds >= 0";
}

static const char *check_listen(const config_setting_t *s)
{
  return fw__listen_addr_check(config_setting_get_string(s));
}

static const char *const accept_modes[] = {"reuseport", "single", NULL};
static const char *const tls_modes[] = {"implicit", "starttls", NULL};
static const char *const tls_versions[] = {"TLSv1.2", "TLSv1.3", NULL};
static const char *const tls_client_auth[] = {"none", "optional", "required", NULL};

/* listener.NAME.tls.sni.LABEL: a further certificate, chosen by the client's SNI. */
static const cfg_entry listener_tls_sni_schema[] = {
    {.name = "certificate", .type = CFG_STRING, .flags = CFG_REQUIRED},
    {.name = "key", .type = CFG_STRING},
    {.name = "names", .type = CFG_STRING_LIST},
    {.name = NULL},
};

static const cfg_entry listener_tls_sni_entry = {
    .name = "sni", .type = CFG_GROUP, .members = listener_tls_sni_schema};

/* listener.NAME.tls: the listener's server certificates (framework/listener.c, tls.c).
 * docs/tls.md describes every member. */
static const cfg_entry listener_tls_schema[] = {
    {.name = "certificate", .type = CFG_STRING, .flags = CFG_REQUIRED},
    {.name = "key", .type = CFG_STRING},
    {.name = "mode", .type = CFG_STRING, .choices = tls_modes},
    {.name = "sni", .type = CFG_GROUP_OF, .of = &listener_tls_sni_entry},
    {.name = "min_version", .type = CFG_STRING, .choices = tls_versions},
    {.name = "max_version", .type = CFG_STRING, .choices = tls_versions},
    {.name = "ciphers", .type = CFG_STRING},
    {.name = "ciphersuites", .type = CFG_STRING},
    {.name = "alpn", .type = CFG_STRING_LIST},
    {.name = "client_auth", .type = CFG_STRING, .choices = tls_client_auth},
    {.name = "client_ca", .type = CFG_STRING},
    {.name = "verify_depth", .type = CFG_INT, .min = 1, .max = 32},
    {.name = "session_tickets", .type = CFG_BOOL},
    {.name = "session_lifetime", .type = CFG_FLOAT, .fmin = 1, .fmax = 604800},
    {.name = "ticket_key_files", .type = CFG_STRING_LIST},
    {.name = NULL},
};

/* listener = { NAME = { ... }; }: one listener per member (framework/listener.c). */
static const cfg_entry listener_schema[] = {
    {.name = "listen", .type = CFG_STRING_LIST, .flags = CFG_REQUIRED, .check = check_listen},
    {.name = "protocol", .type = CFG_STRING, .flags = CFG_REQUIRED},
    {.name = "enabled", .type = CFG_BOOL},
    {.name = "accept_mode", .type = CFG_STRING, .choices = accept_modes},
    {.name = "backlog", .type = CFG_INT, .min = 1, .max = 65535},
    {.name = "tcp_nodelay", .type = CFG_BOOL},
    {.name = "rcvbuf", .type = CFG_INT, .min = 0, .max = 1 << 30},
    {.name = "sndbuf", .type = CFG_INT, .min = 0, .max = 1 << 30},
    {.name = "max_connections", .type = CFG_INT, .min = 0, .max = 1 << 30},
    {.name = "accepts_per_iteration", .type = CFG_INT, .min = 1, .max = 1 << 16},
    {.name = "idle_timeout", .type = CFG_FLOAT, .check = check_nonneg},
    {.name = "handshake_timeout", .type = CFG_FLOAT, .check = check_nonneg},
    {.name = "proxy_protocol", .type = CFG_BOOL},
    {.name = "tls", .type = CFG_GROUP, .members = listener_tls_schema},
    {.name = NULL},
};

static const cfg_entry listener_member = {
    .name = "listener", .type = CFG_GROUP, .members = listener_schema};

static const cfg_entry limits_schema[] = {
    {.name = "max_connections", .type = CFG_INT, .min = 0, .max = 1 << 30},
    {.name = "accept_retry_delay", .type = CFG_FLOAT, .check = check_nonneg},
    {.name = NULL},
};

static const cfg_entry shutdown_schema[] = {
    {.name = "drain_timeout", .type = CFG_FLOAT, .check = check_nonneg},
    {.name = NULL},
};

/* threadpool = { NAME = { ... }; }: one pool per member (pool/pool.c). Pool names go into
 * thread names and log lines. */
static const char *check_pool_name(const char *name)
{
  return strlen(name) < 32 ? NULL : "pool names have at most 31 characters";
}

static const cfg_entry threadpool_schema[] = {
    {.name = "concurrency", .type = CFG_INT, .min = 0, .max = 1024},
    {.name = "backlog", .type = CFG_INT, .min = 0, .max = 1 << 30},
    {.name = "stack_size", .type = CFG_INT, .min = 0, .max = 1 << 30},
    {.name = NULL},
};

static const cfg_entry threadpool_member = {
    .name = "threadpool", .type = CFG_GROUP, .members = threadpool_schema};

static const char *check_seconds(const config_setting_t *s)
{
  double v = config_setting_type(s) == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                         : (double)config_setting_get_int64(s);

  return v > 0 && v <= 86400 ? NULL : "must be a number of seconds in (0, 86400]";
}

/* io_wrapper read jobs (pool/io_wrapper.c). */
static const cfg_entry io_wrapper_schema[] = {
    {.name = "max_size", .type = CFG_INT, .min = 1, .max = INT_MAX - 1},
    {.name = "connect_timeout", .type = CFG_FLOAT, .check = check_seconds},
    {.name = "timeout", .type = CFG_FLOAT, .check = check_seconds},
    {.name = "max_redirects", .type = CFG_INT, .min = 0, .max = 50},
    {.name = "verify_peer", .type = CFG_BOOL},
    {.name = "ca_file", .type = CFG_STRING},
    {.name = "proxy", .type = CFG_STRING},
    {.name = NULL},
};

/* Stall detection and callback timing (shard/stats.c). */
static const cfg_entry watchdog_schema[] = {
    {.name = "stall_threshold", .type = CFG_FLOAT, .check = check_seconds},
    {.name = "stuck_timeout", .type = CFG_FLOAT, .check = check_seconds},
    {.name = "callback_timing", .type = CFG_BOOL},
    {.name = NULL},
};

static const cfg_entry debug_flags_member = {
    .name = "debug_flags member", .type = CFG_STRING_LIST, .check = check_subsystem};

#define MAX_SECTIONS 32 /* module sections (ec_config_section_register) */
#define ROOT_BUILTIN 9  /* the framework's own sections, the first rows below */

/* Not const: module sections are appended before the NULL row (ec_config_section_register,
 * before init, under section_lock), so the validator and --set see them like the built-in
 * ones. Readers run only while no registration can happen (after init). */
static cfg_entry root_members[] = {
    {.name = "event_loop", .type = CFG_GROUP, .members = event_loop_schema},
    {.name = "log", .type = CFG_GROUP, .members = log_schema},
    {.name = "debug_flags",
     .type = CFG_GROUP_OF,
     .of = &debug_flags_member,
     .key_check = check_level_key},
    {.name = "listener", .type = CFG_GROUP_OF, .of = &listener_member},
    {.name = "limits", .type = CFG_GROUP, .members = limits_schema},
    {.name = "shutdown", .type = CFG_GROUP, .members = shutdown_schema},
    {.name = "threadpool",
     .type = CFG_GROUP_OF,
     .of = &threadpool_member,
     .key_check = check_pool_name},
    {.name = "io_wrapper", .type = CFG_GROUP, .members = io_wrapper_schema},
    {.name = "watchdog", .type = CFG_GROUP, .members = watchdog_schema},
    {.name = NULL},
    [ROOT_BUILTIN + MAX_SECTIONS] = {.name = NULL},
};

static const cfg_entry root_schema = {.name = "", .type = CFG_GROUP, .members = root_members};

/* ---- module sections ------------------------------------------------------------------ */

static int valid_name(const char *s);
static int config_loaded(void);

/*
 * A module's section is one more row of root_members whose member table is built from the
 * caller's ec_config_item array (deep-copied, so the caller's tables may be temporary).
 * Registrations last until the configuration is unloaded (ec_framework_join), like
 * protocol registrations.
 */
typedef struct module_section {
  char *name;
  char *defaults; /* "NAME = { ... };", or NULL */
  cfg_entry *members;
  int nmembers;
  const ec_config_item *items; /* the caller's pointer: registering it again is a no-op */
} module_section;

static pthread_mutex_t section_lock = PTHREAD_MUTEX_INITIALIZER;
static module_section sections[MAX_SECTIONS];
static int nsections;

static void section_free(module_section *m)
{
  for (int i = 0; i < m->nmembers; i++) {
    free((char *)m->members[i].name);
    if (m->members[i].choices != NULL) {
      for (const char *const *c = m->members[i].choices; *c; c++)
        free((char *)*c);
      free((void *)m->members[i].choices);
    }
  }
  free(m->members);
  free(m->name);
  free(m->defaults);
  memset(m, 0, sizeof(*m));
}

static const char *const *choices_dup(const char *const *src)
{
  size_t n = 0;
  char **c;

  while (src[n] != NULL)
    n++;
  c = calloc(n + 1, sizeof(*c));
  for (size_t i = 0; c != NULL && i < n; i++) {
    if ((c[i] = strdup(src[i])) == NULL) {
      while (i > 0)
        free(c[--i]);
      free(c);
      c = NULL;
    }
  }
  return (const char *const *)c;
}

/* Why `items` cannot describe a section, or NULL. */
static const char *items_check(const ec_config_item *items)
{
  for (const ec_config_item *it = items; it->name != NULL; it++) {
    if (!valid_name(it->name))
      return "an item name is not a valid setting name";
    if (it->kind < EC_CONFIG_INT || it->kind > EC_CONFIG_STRING_LIST)
      return "an item has an unknown kind";
    if (it->min > it->max)
      return "an item has min > max";
    for (const ec_config_item *o = items; o != it; o++)
      if (strcmp(o->name, it->name) == 0)
        return "an item name appears twice";
  }
  return NULL;
}

static int section_build(module_section *m, const char *name, const ec_config_item *items,
                         const char *defaults)
{
  static const cfg_type kinds[] = {
      [EC_CONFIG_INT] = CFG_INT,
      [EC_CONFIG_FLOAT] = CFG_FLOAT,
      [EC_CONFIG_BOOL] = CFG_BOOL,
      [EC_CONFIG_STRING] = CFG_STRING,
      [EC_CONFIG_STRING_LIST] = CFG_STRING_LIST,
  };
  int n = 0;

  while (items[n].name != NULL)
    n++;
  m->items = items;
  m->name = strdup(name);
  m->members = calloc((size_t)n + 1, sizeof(cfg_entry));
  if (defaults != NULL) {
    size_t len = strlen(name) + strlen(defaults) + 16;

    if ((m->defaults = malloc(len)) != NULL)
      snprintf(m->defaults, len, "%s = {\n%s\n};\n", name, defaults);
  }
  if (m->name == NULL || m->members == NULL || (defaults != NULL && m->defaults == NULL))
    return -ENOMEM;
  for (int i = 0; i < n; i++, m->nmembers++) {
    cfg_entry *e = &m->members[i];
    int bounded = items[i].min < items[i].max;

    e->type = kinds[items[i].kind];
    e->min = bounded && items[i].min > (double)LLONG_MIN ? (long long)items[i].min : LLONG_MIN;
    e->max = bounded && items[i].max < (double)LLONG_MAX ? (long long)items[i].max : LLONG_MAX;
    e->fmin = items[i].min;
    e->fmax = items[i].max;
    if ((e->name = strdup(items[i].name)) == NULL)
      return -ENOMEM;
    if (items[i].choices != NULL && (e->choices = choices_dup(items[i].choices)) == NULL)
      return -ENOMEM;
  }
  return 0;
}

int ec_config_section_register(const char *name, const ec_config_item *items, const char *defaults)
{
  const char *why = NULL;
  int rc = 0, nroot = 0;

  if (name == NULL || items == NULL)
    why = "NULL name or items";
  else if (!valid_name(name))
    why = "not a valid setting name";
  else
    why = items_check(items);
  if (why != NULL) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "ec_config_section_register(%s): %s",
                    name ? name : "NULL", why);
    return -EINVAL;
  }
  pthread_mutex_lock(&section_lock);
  while (root_members[nroot].name != NULL)
    nroot++;
  for (int i = 0; i < nroot && rc == 0; i++)
    if (strcmp(root_members[i].name, name) == 0)
      rc = -EEXIST;
  for (int i = 0; rc == -EEXIST && i < nsections; i++)
    if (strcmp(sections[i].name, name) == 0 && sections[i].items == items)
      rc = 1; /* the same module again (a test's second run): nothing to do */
  if (rc == 0 && config_loaded())
    rc = -EBUSY;
  if (rc == 0 && (nsections == MAX_SECTIONS ||
                  nroot + 2 > (int)(sizeof(root_members) / sizeof(root_members[0]))))
    rc = -ENOSPC;
  if (rc == 0) {
    module_section *m = &sections[nsections];

    rc = section_build(m, name, items, defaults);
    if (rc == 0) {
      root_members[nroot] = (cfg_entry){.name = m->name, .type = CFG_GROUP, .members = m->members};
      root_members[nroot + 1] = (cfg_entry){.name = NULL};
      nsections++;
    } else {
      section_free(m);
    }
  }
  pthread_mutex_unlock(&section_lock);
  if (rc < 0)
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "ec_config_section_register(%s): %s", name,
                    rc == -EEXIST   ? "the name is taken"
                    : rc == -EBUSY  ? "call it before ec_framework_init"
                    : rc == -ENOSPC ? "too many sections"
                                    : strerror(-rc));
  return rc < 0 ? rc : 0;
}

/* At unload: the module sections go, as protocol registrations do at join. */
static void sections_clear(void)
{
  int nroot = 0;

  pthread_mutex_lock(&section_lock);
  while (root_members[nroot].name != NULL)
    nroot++;
  for (int i = 0; i < nsections; i++)
    section_free(&sections[i]);
  root_members[nroot - nsections] = (cfg_entry){.name = NULL};
  nsections = 0;
  pthread_mutex_unlock(&section_lock);
}

/* ---- error reporting ------------------------------------------------------------------ */

typedef struct cfg_errors {
  char *buf; /* receives the first error; may be NULL */
  size_t len;
  int count;
  int log; /* log every error (load), or only keep the first (check_text) */
} cfg_errors;

static void report(cfg_errors *er, const char *origin, unsigned line, const char *fmt, ...)
    EC_PRINTF_LIKE(4, 5);

/* "ORIGIN:LINE: message", or "ORIGIN: message" when there is no line (--set). */
static void report(cfg_errors *er, const char *origin, unsigned line, const char *fmt, ...)
{
  char msg[1024];
  int n;
  va_list ap;

  if (line > 0)
    n = snprintf(msg, sizeof(msg), "%s:%u: ", origin, line);
  else
    n = snprintf(msg, sizeof(msg), "%s: ", origin);
  if (n < 0 || (size_t)n >= sizeof(msg))
    n = 0;
  va_start(ap, fmt);
  vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
  va_end(ap);

  if (er->count++ == 0 && er->buf != NULL && er->len > 0)
    snprintf(er->buf, er->len, "%s", msg);
  if (er->log)
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "config: %s", msg);
}

/* Dotted path of a setting, with [i] for array and list elements. */
static void setting_path(const config_setting_t *s, char *buf, size_t len)
{
  const config_setting_t *parent = config_setting_parent(s);
  size_t used;

  if (parent == NULL) {
    buf[0] = '\0';
    return;
  }
  setting_path(parent, buf, len);
  used = strlen(buf);
  if (config_setting_name(s) != NULL)
    snprintf(buf + used, len - used, "%s%s", used ? "." : "", config_setting_name(s));
  else
    snprintf(buf + used, len - used, "[%d]", config_setting_index(s));
}

/* ---- validation ----------------------------------------------------------------------- */

typedef struct vctx {
  cfg_errors *er;
  const char *origin; /* for settings that have no source file (text, --set) */
  int final;          /* the whole effective configuration: check required members too */
} vctx;

static void bad(vctx *v, const config_setting_t *s, const char *fmt, ...) EC_PRINTF_LIKE(3, 4);

/* Reports "FILE:LINE: 'path' <fmt...>" at setting s. */
static void bad(vctx *v, const config_setting_t *s, const char *fmt, ...)
{
  char path[256], what[512];
  va_list ap;
  const char *file = config_setting_source_file(s);

  setting_path(s, path, sizeof(path));
  va_start(ap, fmt);
  vsnprintf(what, sizeof(what), fmt, ap);
  va_end(ap);
  report(v->er, file ? file : v->origin, config_setting_source_line(s), "'%s' %s", path, what);
}

static int is_int(const config_setting_t *s)
{
  return config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64;
}

static void check_members(vctx *v, const config_setting_t *group, const cfg_entry *members);

static double setting_number(const config_setting_t *s)
{
  return config_setting_type(s) == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                     : (double)config_setting_get_int64(s);
}

static void check_string(vctx *v, const config_setting_t *s, const cfg_entry *e)
{
  const char *str = config_setting_get_string(s);
  const char *why;

  if (e->choices != NULL) {
    char list[256] = "";
    int found = 0;

    for (const char *const *c = e->choices; *c; c++) {
      found |= strcmp(*c, str) == 0;
      snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
               c == e->choices ? "" : ", ", *c);
    }
    if (!found) {
      bad(v, s, "must be one of %s (got '%s')", list, str);
      return;
    }
  }
  if (e->check != NULL && (why = e->check(s)) != NULL)
    bad(v, s, "%s (got '%s')", why, str);
}

static void check_string_list(vctx *v, const config_setting_t *s, const cfg_entry *e)
{
  int n = config_setting_length(s);
  const char *why0;

  if (config_setting_type(s) == CONFIG_TYPE_STRING) {
    /* A lone string is a one-element list: listen = "127.0.0.1:7007"; */
    if (e->check != NULL && (why0 = e->check(s)) != NULL)
      bad(v, s, "%s (got '%s')", why0, config_setting_get_string(s));
    return;
  }
  if (config_setting_type(s) != CONFIG_TYPE_ARRAY && config_setting_type(s) != CONFIG_TYPE_LIST) {
    bad(v, s, "must be a string or an array of strings");
    return;
  }
  for (int i = 0; i < n; i++) {
    const config_setting_t *el = config_setting_get_elem(s, (unsigned)i);
    const char *why;

    if (config_setting_type(el) != CONFIG_TYPE_STRING)
      bad(v, el, "must be a string");
    else if (e->check != NULL && (why = e->check(el)) != NULL)
      bad(v, el, "%s (got '%s')", why, config_setting_get_string(el));
  }
}

static void check_entry(vctx *v, const config_setting_t *s, const cfg_entry *e)
{
  const char *why;
  long long n;

  switch (e->type) {
  case CFG_INT:
    if (!is_int(s)) {
      bad(v, s, "must be an integer");
      return;
    }
    n = config_setting_get_int64(s);
    if (n < e->min || n > e->max)
      bad(v, s, "must be between %lld and %lld (got %lld)", e->min, e->max, n);
    else if (e->check != NULL && (why = e->check(s)) != NULL)
      bad(v, s, "%s (got %lld)", why, n);
    return;
  case CFG_FLOAT:
    if (!is_int(s) && config_setting_type(s) != CONFIG_TYPE_FLOAT)
      bad(v, s, "must be a number");
    else if (e->fmin < e->fmax && !(setting_number(s) >= e->fmin && setting_number(s) <= e->fmax))
      bad(v, s, "must be between %g and %g (got %g)", e->fmin, e->fmax, setting_number(s));
    else if (e->check != NULL && (why = e->check(s)) != NULL)
      bad(v, s, "%s", why);
    return;
  case CFG_BOOL:
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
      bad(v, s, "must be a boolean (true or false)");
    return;
  case CFG_STRING:
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
      bad(v, s, "must be a string");
    else
      check_string(v, s, e);
    return;
  case CFG_STRING_LIST:
    check_string_list(v, s, e);
    return;
  case CFG_GROUP:
    if (!config_setting_is_group(s))
      bad(v, s, "must be a group { ... }");
    else
      check_members(v, s, e->members);
    return;
  case CFG_GROUP_OF:
    if (!config_setting_is_group(s)) {
      bad(v, s, "must be a group { ... }");
      return;
    }
    for (int i = 0; i < config_setting_length(s); i++) {
      const config_setting_t *m = config_setting_get_elem(s, (unsigned)i);
      char path[256];

      if (e->key_check != NULL && (why = e->key_check(config_setting_name(m))) != NULL) {
        const char *file = config_setting_source_file(m);

        setting_path(m, path, sizeof(path));
        report(v->er, file ? file : v->origin, config_setting_source_line(m),
               "unknown setting '%s' (%s)", path, why);
      } else {
        check_entry(v, m, e->of);
      }
    }
    return;
  }
}

static void check_members(vctx *v, const config_setting_t *group, const cfg_entry *members)
{
  int n = config_setting_length(group);

  for (int i = 0; i < n; i++) {
    const config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
    const cfg_entry *e = members;

    while (e->name != NULL && strcmp(e->name, config_setting_name(m)) != 0)
      e++;
    if (e->name != NULL) {
      check_entry(v, m, e);
    } else {
      const char *file = config_setting_source_file(m);
      char path[256];

      setting_path(m, path, sizeof(path));
      report(v->er, file ? file : v->origin, config_setting_source_line(m), "unknown setting '%s'",
             path);
    }
  }
  if (!v->final)
    return;
  /* A layer may leave anything out; only the merged result must be complete. */
  for (const cfg_entry *e = members; e->name != NULL; e++) {
    if ((e->flags & CFG_REQUIRED) && config_setting_get_member(group, e->name) == NULL) {
      char path[256];
      const char *file = config_setting_source_file(group);

      setting_path(group, path, sizeof(path));
      report(v->er, file ? file : v->origin, config_setting_source_line(group),
             "'%s%s%s' is required", path, path[0] ? "." : "", e->name);
    }
  }
}

/* Checks a whole configuration against `schema`; returns the number of new errors. */
static int check_config(const config_t *c, const cfg_entry *schema, const char *origin, int final,
                        cfg_errors *er)
{
  vctx v = {.er = er, .origin = origin, .final = final};
  int before = er->count;

  check_entry(&v, config_root_setting(c), schema);
  return er->count - before;
}

/* ---- the effective configuration ------------------------------------------------------ */

/* Source names (file paths, "<defaults>", "--set '...'") that settings of the effective
 * configuration point to; they live as long as the configuration. */
typedef struct origin_name {
  struct origin_name *next;
  char text[];
} origin_name;

typedef struct cfg_state {
  config_t cfg;
  origin_name *origins;
  struct cfg_state *prev; /* the configuration a reload replaced, kept until unload */
} cfg_state;

/* Written at load, reload (release) and unload; read by any thread (acquire): a reload
 * publishes a complete new state, and the old one stays alive until unload, so that
 * pointers ec_config_get_string returned stay valid. */
static cfg_state *g_state;

static cfg_state *state_get(void)
{
  return __atomic_load_n(&g_state, __ATOMIC_ACQUIRE); /* pairs with the release stores */
}

static int config_loaded(void)
{
  return state_get() != NULL;
}

static const char *intern(cfg_state *st, const char *text)
{
  origin_name *o;
  size_t len = strlen(text);

  for (o = st->origins; o != NULL; o = o->next)
    if (strcmp(o->text, text) == 0)
      return o->text;
  /* Plain malloc, like libconfig's own nodes: the configuration is read before the
   * memtyped allocator is set up from it. */
  o = malloc(sizeof(*o) + len + 1);
  if (o == NULL)
    return NULL;
  memcpy(o->text, text, len + 1);
  o->next = st->origins;
  st->origins = o;
  return o->text;
}

static void state_free(cfg_state *st)
{
  origin_name *o, *next;

  if (st->prev != NULL)
    state_free(st->prev);
  config_destroy(&st->cfg);
  for (o = st->origins; o != NULL; o = next) {
    next = o->next;
    free(o);
  }
  free(st);
}

/*
 * libconfig has no setter for a setting's source: config_setting_add() leaves it 0/NULL.
 * The two fields are the documented ones behind config_setting_source_line/_file(), and
 * config_destroy() does not free `file` (it frees its own filename table), so pointing it
 * at an interned copy is safe for as long as the state lives.
 */
static int set_origin(cfg_state *st, config_setting_t *dst, const config_setting_t *src,
                      const char *origin)
{
  const char *file = config_setting_source_file(src);

  file = intern(st, file ? file : origin);
  if (file == NULL)
    return -ENOMEM;
  dst->file = file;
  dst->line = config_setting_source_line(src);
  return 0;
}

static int copy_value(cfg_state *st, config_setting_t *dst, const config_setting_t *src,
                      const char *origin);

static int copy_setting(cfg_state *st, config_setting_t *parent, const config_setting_t *src,
                        const char *origin)
{
  config_setting_t *d =
      config_setting_add(parent, config_setting_name(src), config_setting_type(src));

  if (d == NULL)
    return -ENOMEM;
  return copy_value(st, d, src, origin);
}

/* dst has src's type; gives it src's value (children copied), format and origin. */
static int copy_value(cfg_state *st, config_setting_t *dst, const config_setting_t *src,
                      const char *origin)
{
  int ok = CONFIG_TRUE, rc;

  rc = set_origin(st, dst, src, origin);
  if (rc != 0)
    return rc;
  switch (config_setting_type(src)) {
  case CONFIG_TYPE_INT:
  case CONFIG_TYPE_INT64:
    ok = config_setting_set_int64(dst, config_setting_get_int64(src));
    config_setting_set_format(dst, config_setting_get_format(src));
    break;
  case CONFIG_TYPE_FLOAT:
    ok = config_setting_set_float(dst, config_setting_get_float(src));
    break;
  case CONFIG_TYPE_BOOL:
    ok = config_setting_set_bool(dst, config_setting_get_bool(src));
    break;
  case CONFIG_TYPE_STRING:
    ok = config_setting_set_string(dst, config_setting_get_string(src));
    break;
  case CONFIG_TYPE_GROUP:
  case CONFIG_TYPE_ARRAY:
  case CONFIG_TYPE_LIST:
    for (int i = 0; i < config_setting_length(src); i++) {
      rc = copy_setting(st, dst, config_setting_get_elem(src, (unsigned)i), origin);
      if (rc != 0)
        return rc;
    }
    break;
  default:
    break;
  }
  return ok ? 0 : -ENOMEM;
}

/* An integer fits dst in place when dst is int64 or the value fits an int. */
static int int_fits(const config_setting_t *dst, const config_setting_t *src)
{
  long long v;

  if (!is_int(dst) || !is_int(src))
    return 0;
  v = config_setting_get_int64(src);
  return config_setting_type(dst) == CONFIG_TYPE_INT64 || (v >= INT_MIN && v <= INT_MAX);
}

/*
 * Deep merge of layer group src into dst: groups merge member by member; scalars, arrays
 * and lists replace. A replaced setting keeps its place, so ec_config_print() lists
 * settings in the defaults' order; only a change of type (say a string where a list was)
 * makes libconfig remove it and add it again at the end of its group.
 */
static int merge_group(cfg_state *st, config_setting_t *dst, const config_setting_t *src,
                       const char *origin)
{
  for (int i = 0; i < config_setting_length(src); i++) {
    const config_setting_t *m = config_setting_get_elem(src, (unsigned)i);
    config_setting_t *d = config_setting_get_member(dst, config_setting_name(m));
    int rc;

    if (d == NULL) {
      rc = copy_setting(st, dst, m, origin);
    } else if (config_setting_is_group(d) && config_setting_is_group(m)) {
      rc = merge_group(st, d, m, origin);
    } else if (config_setting_type(d) == config_setting_type(m) || int_fits(d, m)) {
      while (config_setting_is_aggregate(d) && config_setting_length(d) > 0)
        config_setting_remove_elem(d, 0);
      rc = copy_value(st, d, m, origin);
    } else {
      config_setting_remove(dst, config_setting_name(m));
      rc = copy_setting(st, dst, m, origin);
    }
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Checks one parsed layer, then merges it. 0, -EINVAL (reported) or -ENOMEM. */
static int add_layer(cfg_state *st, const config_t *layer, const char *origin, cfg_errors *er)
{
  int rc;

  if (check_config(layer, &root_schema, origin, 0, er) > 0)
    return -EINVAL;
  rc = merge_group(st, config_root_setting(&st->cfg), config_root_setting(layer), origin);
  if (rc != 0)
    report(er, origin, 0, "out of memory while merging the configuration");
  return rc;
}

static void report_parse_error(const config_t *c, const char *origin, cfg_errors *er)
{
  const char *file = config_error_file(c);

  report(er, file ? file : origin, (unsigned)config_error_line(c), "%s",
         config_error_text(c) ? config_error_text(c) : "cannot parse");
}

/* Parses text into c (initialised by the caller). 0 or -EINVAL (reported). */
static int parse_text(config_t *c, const char *text, const char *origin, cfg_errors *er)
{
  if (config_read_string(c, text))
    return 0;
  report_parse_error(c, origin, er);
  return -EINVAL;
}

/* Parses a configuration file into c. 0, -EINVAL (syntax) or the -errno of the read. */
static int parse_file(config_t *c, const char *path, cfg_errors *er)
{
  struct stat sb;
  char *dir;
  int ok, err;

  /* libconfig reads a directory as an empty, valid file: refuse it here. */
  if (stat(path, &sb) != 0) {
    err = errno;
    report(er, path, 0, "cannot read configuration file: %s", strerror(err));
    return -err;
  }
  if (S_ISDIR(sb.st_mode)) {
    report(er, path, 0, "cannot read configuration file: %s", strerror(EISDIR));
    return -EISDIR;
  }
  /* @include "x.conf" is found next to the including file, not in the working directory.
   * libconfig keeps its own copy of the directory (config_destroy frees it). */
  dir = strdup(path);
  if (dir == NULL) {
    report(er, path, 0, "out of memory");
    return -ENOMEM;
  }
  config_set_include_dir(c, dirname(dir));
  free(dir);
  errno = 0;
  ok = config_read_file(c, path);
  err = errno;
  if (ok)
    return 0;
  if (config_error_type(c) == CONFIG_ERR_FILE_IO) {
    /* libconfig returns right after fopen() fails, so errno is fopen's; EIO covers a
     * failure that left no errno. */
    err = err ? err : EIO;
    report(er, path, 0, "cannot read configuration file: %s", strerror(err));
    return -err;
  }
  report_parse_error(c, path, er);
  return -EINVAL;
}

/* ---- --set KEY=VALUE ------------------------------------------------------------------ */

typedef enum { SV_INT, SV_FLOAT, SV_BOOL, SV_STRING } sv_kind;

typedef struct set_value {
  sv_kind kind;
  long long i;
  double d;
  int b;
  int hex; /* SV_INT written 0x..., kept on print */
  char *s; /* SV_STRING: the unquoted string; other kinds: the text as given. malloc'd */
} set_value;

/* Decimal or 0x integer with an optional sign, nothing else. 0 or -1. */
static int parse_int(const char *t, long long *out, int *hex)
{
  const char *p = t;
  unsigned long long u;
  int neg = 0, base = 10;
  char *end;

  if (*p == '+' || *p == '-')
    neg = *p++ == '-';
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    base = 16;
    p += 2;
  }
  if (*p == '\0')
    return -1;
  for (const char *q = p; *q; q++)
    if (base == 16 ? !isxdigit((unsigned char)*q) : !isdigit((unsigned char)*q))
      return -1;
  errno = 0;
  u = strtoull(p, &end, base);
  if (errno != 0 || *end != '\0')
    return -1;
  if (neg ? u > (unsigned long long)LLONG_MAX + 1 : u > (unsigned long long)LLONG_MAX)
    return -1;
  /* -(LLONG_MAX + 1) without overflowing: negate in unsigned, then convert. */
  *out = neg ? (long long)(0 - u) : (long long)u;
  *hex = base == 16;
  return 0;
}

static int parse_bool(const char *t, int *out)
{
  static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};

  for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
    if (strcasecmp(t, yes[i]) == 0 || strcasecmp(t, no[i]) == 0) {
      *out = strcasecmp(t, yes[i]) == 0;
      return 0;
    }
  }
  return -1;
}

/* Parses `text` as "v = TEXT;" so that libconfig's own escapes apply; returns the setting
 * v of c, or NULL if the text is not exactly one value. */
static config_setting_t *parse_libconfig_value(config_t *c, const char *text)
{
  size_t len = strlen(text);
  char *src = malloc(len + 8);
  config_setting_t *v = NULL;

  if (src == NULL)
    return NULL;
  snprintf(src, len + 8, "v = %s;\n", text);
  if (config_read_string(c, src) && config_setting_length(config_root_setting(c)) == 1)
    v = config_lookup(c, "v");
  free(src);
  return v;
}

/*
 * Classifies a --set value: integer (decimal or 0x), float, true/false/yes/no/on/off, a
 * "quoted string" (libconfig escapes), or else a bare string. 0, -EINVAL (a malformed
 * quoted string) or -ENOMEM. out->s must be freed.
 */
static int parse_set_value(const char *text, set_value *out)
{
  char *end;

  memset(out, 0, sizeof(*out));
  if (text[0] == '"') {
    config_t c;
    config_setting_t *v;
    int rc = -EINVAL;

    config_init(&c);
    v = parse_libconfig_value(&c, text);
    if (v != NULL && config_setting_type(v) == CONFIG_TYPE_STRING) {
      out->s = strdup(config_setting_get_string(v));
      rc = out->s ? 0 : -ENOMEM;
    }
    config_destroy(&c);
    out->kind = SV_STRING;
    return rc;
  }
  out->s = strdup(text);
  if (out->s == NULL)
    return -ENOMEM;
  if (parse_int(text, &out->i, &out->hex) == 0) {
    out->kind = SV_INT;
    return 0;
  }
  /* Only text that starts like a number is one: "inf" and "nan" stay strings. */
  if (text[0] != '\0' && (isdigit((unsigned char)text[0]) || strchr("+-.", text[0]) != NULL)) {
    errno = 0;
    out->d = strtod(text, &end);
    if (end != text && *end == '\0' && errno == 0 && isfinite(out->d)) {
      out->kind = SV_FLOAT;
      return 0;
    }
  }
  out->kind = parse_bool(text, &out->b) == 0 ? SV_BOOL : SV_STRING;
  return 0;
}

static int add_string_elem(config_setting_t *list, const char *str)
{
  return config_setting_set_string_elem(list, -1, str) ? 0 : -ENOMEM;
}

/* A string list from "[ "A", "B" ]" / "( ... )" (libconfig syntax) or "A,B" (bare). */
static int set_string_list(config_setting_t *leaf, const char *text)
{
  int rc = 0;

  if (text[0] == '[' || text[0] == '(') {
    config_t c;
    config_setting_t *v;

    config_init(&c);
    v = parse_libconfig_value(&c, text);
    if (v == NULL || !(config_setting_is_array(v) || config_setting_is_list(v)))
      rc = -EINVAL;
    for (int i = 0; rc == 0 && i < config_setting_length(v); i++) {
      const char *str = config_setting_get_string_elem(v, i);

      rc = str ? add_string_elem(leaf, str) : -EINVAL;
    }
    config_destroy(&c);
    return rc;
  }
  for (const char *p = text; rc == 0 && *p;) {
    size_t n = strcspn(p, ",");
    char word[256];

    while (n > 0 && isspace((unsigned char)*p))
      p++, n--;
    while (n > 0 && isspace((unsigned char)p[n - 1]))
      n--;
    if (n == 0 || n >= sizeof(word))
      return -EINVAL;
    memcpy(word, p, n);
    word[n] = '\0';
    rc = add_string_elem(leaf, word);
    p += strcspn(p, ",");
    p += *p == ',';
  }
  return rc;
}

/*
 * Adds member `name` of type e->type to `parent`, converting `text` to it (so
 * "poller=poll" is a string and "concurrency=2" an integer whatever they look like).
 * 0, -EINVAL (the text does not fit; *why says so) or -ENOMEM.
 */
static int set_leaf(config_setting_t *parent, const char *name, const cfg_entry *e,
                    const char *text, const char **why)
{
  set_value sv;
  config_setting_t *leaf = NULL;
  int rc, ok = CONFIG_TRUE;

  *why = "is not a well-formed \"quoted string\"";
  rc = parse_set_value(text, &sv);
  if (rc != 0)
    goto out;
  rc = -EINVAL;
  switch (e->type) {
  case CFG_INT:
    *why = "must be an integer";
    if (sv.kind != SV_INT)
      goto out;
    leaf = config_setting_add(
        parent, name, sv.i >= INT_MIN && sv.i <= INT_MAX ? CONFIG_TYPE_INT : CONFIG_TYPE_INT64);
    if (leaf != NULL) {
      ok = config_setting_set_int64(leaf, sv.i);
      config_setting_set_format(leaf, sv.hex ? CONFIG_FORMAT_HEX : CONFIG_FORMAT_DEFAULT);
    }
    break;
  case CFG_FLOAT:
    *why = "must be a number";
    if (sv.kind != SV_INT && sv.kind != SV_FLOAT)
      goto out;
    leaf = config_setting_add(parent, name, CONFIG_TYPE_FLOAT);
    if (leaf != NULL)
      ok = config_setting_set_float(leaf, sv.kind == SV_INT ? (double)sv.i : sv.d);
    break;
  case CFG_BOOL:
    *why = "must be a boolean (true/false, yes/no, on/off, 1/0)";
    if (sv.kind == SV_INT && (sv.i == 0 || sv.i == 1))
      sv.b = (int)sv.i;
    else if (sv.kind != SV_BOOL)
      goto out;
    leaf = config_setting_add(parent, name, CONFIG_TYPE_BOOL);
    if (leaf != NULL)
      ok = config_setting_set_bool(leaf, sv.b);
    break;
  case CFG_STRING:
    leaf = config_setting_add(parent, name, CONFIG_TYPE_STRING);
    if (leaf != NULL)
      ok = config_setting_set_string(leaf, sv.s);
    break;
  case CFG_STRING_LIST:
    *why = "must be an array of strings: [ \"A\", \"B\" ] or A,B";
    leaf = config_setting_add(parent, name, CONFIG_TYPE_ARRAY);
    if (leaf == NULL)
      break;
    /* A lone "quoted string" is a one-element list. */
    rc = text[0] == '"' ? add_string_elem(leaf, sv.s) : set_string_list(leaf, text);
    if (rc != 0)
      goto out;
    break;
  case CFG_GROUP:
  case CFG_GROUP_OF:
    *why = "is a group; set one of its members";
    goto out;
  }
  rc = leaf != NULL && ok ? 0 : -ENOMEM;
out:
  free(sv.s);
  return rc;
}

/* libconfig's rule for setting names: [A-Za-z*][-A-Za-z0-9_*]*. */
static int valid_name(const char *s)
{
  if (!isalpha((unsigned char)*s) && *s != '*')
    return 0;
  for (s++; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr("-_*", *s))
      return 0;
  return 1;
}

static void trim(char **s)
{
  char *e;

  while (isspace((unsigned char)**s))
    (*s)++;
  e = *s + strlen(*s);
  while (e > *s && isspace((unsigned char)e[-1]))
    *--e = '\0';
}

/*
 * Builds the one-setting layer for "a.b.c=value" in `layer`, following the schema for the
 * path and the value's type. 0, -EINVAL (reported under `origin`) or -ENOMEM.
 */
static int build_set_layer(config_t *layer, char *key, const char *value, const char *origin,
                           cfg_errors *er)
{
  const cfg_entry *e = &root_schema;
  config_setting_t *parent = config_root_setting(layer);
  char *save = NULL, *comp, *next;
  const char *why;
  char path[256] = "";
  int rc;

  if (*key == '\0' || *key == '.' || key[strlen(key) - 1] == '.' || strstr(key, "..") != NULL) {
    report(er, origin, 0, "malformed setting path '%s'", key);
    return -EINVAL;
  }
  for (comp = strtok_r(key, ".", &save); comp != NULL; comp = next) {
    next = strtok_r(NULL, ".", &save);
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "%s%s", path[0] ? "." : "", comp);
    if (!valid_name(comp)) {
      report(er, origin, 0, "malformed setting name '%s' in '%s'", comp, path);
      return -EINVAL;
    }
    if (e->type == CFG_GROUP) {
      const cfg_entry *m = e->members;

      while (m->name != NULL && strcmp(m->name, comp) != 0)
        m++;
      if (m->name == NULL) {
        report(er, origin, 0, "unknown setting '%s'", path);
        return -EINVAL;
      }
      e = m;
    } else if (e->type == CFG_GROUP_OF) {
      if (e->key_check != NULL && (why = e->key_check(comp)) != NULL) {
        report(er, origin, 0, "unknown setting '%s' (%s)", path, why);
        return -EINVAL;
      }
      e = e->of;
    } else {
      report(er, origin, 0, "unknown setting '%s'", path);
      return -EINVAL;
    }
    if (next == NULL)
      break;
    /* The schema says comp is a group; a scalar there fails the lookup above next turn. */
    if (e->type == CFG_GROUP || e->type == CFG_GROUP_OF) {
      parent = config_setting_add(parent, comp, CONFIG_TYPE_GROUP);
      if (parent == NULL)
        goto nomem;
    }
  }
  rc = set_leaf(parent, comp, e, value, &why);
  if (rc == -EINVAL)
    report(er, origin, 0, "'%s' %s", path, why);
  else if (rc == -ENOMEM)
    goto nomem;
  return rc;
nomem:
  report(er, origin, 0, "out of memory");
  return -ENOMEM;
}

/* Applies one --set entry ("a.b=value") as a layer of its own. */
static int apply_set(cfg_state *st, const char *entry, cfg_errors *er)
{
  size_t len = strlen(entry);
  char *origin = malloc(len + 16), *copy = strdup(entry), *eq, *key, *value;
  config_t layer;
  int rc;

  if (origin == NULL || copy == NULL) {
    free(origin);
    free(copy);
    report(er, "--set", 0, "out of memory");
    return -ENOMEM;
  }
  snprintf(origin, len + 16, "--set '%s'", entry);
  config_init(&layer);
  eq = strchr(copy, '=');
  if (eq == NULL) {
    report(er, origin, 0, "expected KEY=VALUE, e.g. event_loop.concurrency=4");
    rc = -EINVAL;
    goto out;
  }
  *eq = '\0';
  key = copy;
  value = eq + 1;
  trim(&key);
  trim(&value);
  rc = build_set_layer(&layer, key, value, origin, er);
  if (rc == 0)
    rc = add_layer(st, &layer, origin, er);
out:
  config_destroy(&layer);
  free(copy);
  free(origin);
  return rc;
}

/* opts->shards > 0 overrides event_loop.concurrency, checked like any other layer. */
static int apply_shards(cfg_state *st, int shards, cfg_errors *er)
{
  char origin[64];
  config_t layer;
  config_setting_t *g, *n;
  int rc = -ENOMEM;

  snprintf(origin, sizeof(origin), "shards option (%d)", shards);
  config_init(&layer);
  g = config_setting_add(config_root_setting(&layer), "event_loop", CONFIG_TYPE_GROUP);
  n = g ? config_setting_add(g, "concurrency", CONFIG_TYPE_INT) : NULL;
  if (n != NULL && config_setting_set_int(n, shards))
    rc = add_layer(st, &layer, origin, er);
  else
    report(er, origin, 0, "out of memory");
  config_destroy(&layer);
  return rc;
}

static int add_text_layer(cfg_state *st, const char *text, const char *origin, cfg_errors *er)
{
  config_t layer;
  int rc;

  config_init(&layer);
  rc = parse_text(&layer, text, origin, er);
  if (rc == 0)
    rc = add_layer(st, &layer, origin, er);
  config_destroy(&layer);
  return rc;
}

static int add_file_layer(cfg_state *st, const char *path, cfg_errors *er)
{
  config_t layer;
  int rc;

  config_init(&layer);
  rc = parse_file(&layer, path, er);
  if (rc == 0)
    rc = add_layer(st, &layer, path, er);
  config_destroy(&layer);
  return rc;
}

/* All layers in order into st->cfg. 0 or a negative errno; every problem is reported. */
static int config_build(const ec_framework_options *opts, cfg_state *st, cfg_errors *er)
{
  int rc;

  rc = add_text_layer(st, default_text, "<defaults>", er);
  for (int i = 0; rc == 0 && i < nsections; i++) {
    char origin[96];

    snprintf(origin, sizeof(origin), "<%s defaults>", sections[i].name);
    if (sections[i].defaults != NULL)
      rc = add_text_layer(st, sections[i].defaults, origin, er);
  }
  if (rc == 0 && opts != NULL && opts->config_file != NULL)
    rc = add_file_layer(st, opts->config_file, er);
  else if (rc == 0 && opts != NULL && opts->config_text != NULL)
    rc = add_text_layer(st, opts->config_text, "<config_text>", er);
  if (rc != 0)
    return rc;
  if (opts == NULL)
    return check_config(&st->cfg, &root_schema, "<config>", 1, er) ? -EINVAL : 0;

  /* Every --set entry is tried, so that one run reports all the bad ones. */
  for (const char *const *s = opts->set; s != NULL && *s != NULL; s++) {
    int r = apply_set(st, *s, er);

    if (r == -ENOMEM)
      return r;
    rc = rc ? rc : r;
  }
  if (opts->shards < 0) {
    report(er, "shards option", 0, "must be >= 0 (got %d; 0 takes event_loop.concurrency)",
           opts->shards);
    rc = -EINVAL;
  } else if (opts->shards > 0 && rc == 0) {
    rc = apply_shards(st, opts->shards, er);
  }
  if (rc != 0)
    return rc;
  /* Each layer was checked alone; this catches what only the merged result can show
   * (required members, and later cross-setting rules). */
  return check_config(&st->cfg, &root_schema, "<config>", 1, er) ? -EINVAL : 0;
}

/* What init read, kept for fw__config_reload. */
static struct {
  char *file, *text;
  char **set;
  int shards;
} src;

static void src_free(void)
{
  free(src.file);
  free(src.text);
  for (char **p = src.set; p != NULL && *p != NULL; p++)
    free(*p);
  free(src.set);
  memset(&src, 0, sizeof(src));
}

static int src_keep(const ec_framework_options *opts)
{
  size_t n = 0;

  src_free();
  if (opts == NULL)
    return 0;
  src.shards = opts->shards;
  if ((opts->config_file && !(src.file = strdup(opts->config_file))) ||
      (opts->config_text && !(src.text = strdup(opts->config_text))))
    goto oom;
  while (opts->set != NULL && opts->set[n] != NULL)
    n++;
  src.set = calloc(n + 1, sizeof(*src.set));
  if (src.set == NULL)
    goto oom;
  for (size_t i = 0; i < n; i++)
    if ((src.set[i] = strdup(opts->set[i])) == NULL)
      goto oom;
  return 0;
oom:
  src_free();
  return -ENOMEM;
}

int fw__config_reload(const config_t **old_cfg, const config_t **new_cfg)
{
  ec_framework_options o = {.config_file = src.file,
                            .config_text = src.text,
                            .set = (const char *const *)src.set,
                            .shards = src.shards};
  cfg_errors er = {.log = 1};
  cfg_state *st, *cur = state_get();

  if (cur == NULL)
    return -ESHUTDOWN;
  st = calloc(1, sizeof(*st));
  if (st == NULL)
    return -ENOMEM;
  config_init(&st->cfg);
  config_set_options(&st->cfg, CONFIG_OPTION_SEMICOLON_SEPARATORS);
  if (config_build(&o, st, &er) != 0) {
    state_free(st);
    return -EINVAL;
  }
  st->prev = cur;
  *old_cfg = &cur->cfg;
  *new_cfg = &st->cfg;
  /* Pairs with the acquire load in state_get. */
  __atomic_store_n(&g_state, st, __ATOMIC_RELEASE);
  return 0;
}

/* "value" of a scalar, array or list setting, for fw__config_diff. */
static void value_text(const config_setting_t *s, char *buf, size_t len)
{
  size_t n = 0;

  buf[0] = '\0';
  if (s == NULL) {
    snprintf(buf, len, "(unset)");
    return;
  }
  switch (config_setting_type(s)) {
  case CONFIG_TYPE_INT:
  case CONFIG_TYPE_INT64:
    snprintf(buf, len, "%lld", config_setting_get_int64(s));
    return;
  case CONFIG_TYPE_FLOAT:
    snprintf(buf, len, "%g", config_setting_get_float(s));
    return;
  case CONFIG_TYPE_BOOL:
    snprintf(buf, len, "%s", config_setting_get_bool(s) ? "true" : "false");
    return;
  case CONFIG_TYPE_STRING:
    snprintf(buf, len, "\"%s\"", config_setting_get_string(s));
    return;
  default:
    break;
  }
  n += (size_t)snprintf(buf + n, len - n, "[");
  for (int i = 0; i < config_setting_length(s) && n < len; i++) {
    char el[256];

    value_text(config_setting_get_elem(s, (unsigned)i), el, sizeof(el));
    n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", el);
  }
  if (n < len)
    snprintf(buf + n, len - n, "]");
}

static int is_group(const config_setting_t *s)
{
  return s != NULL && config_setting_type(s) == CONFIG_TYPE_GROUP;
}

static void diff_walk(const config_setting_t *a, const config_setting_t *b, const char *path,
                      void (*fn)(const char *, const char *, const char *, void *), void *arg)
{
  char pa[512], va[512], vb[512];

  if (is_group(a) || is_group(b)) {
    /* Every member of either side, once: a's members, then b's that a lacks. */
    for (int side = 0; side < 2; side++) {
      const config_setting_t *g = side ? b : a, *other = side ? a : b;

      for (int i = 0; is_group(g) && i < config_setting_length(g); i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);
        const config_setting_t *om =
            is_group(other) ? config_setting_get_member(other, name) : NULL;

        if (side == 1 && om != NULL)
          continue;
        snprintf(pa, sizeof(pa), "%s%s%s", path, path[0] ? "." : "", name);
        if (side == 0)
          diff_walk(m, om, pa, fn, arg);
        else
          diff_walk(NULL, m, pa, fn, arg);
      }
    }
    return;
  }
  value_text(a, va, sizeof(va));
  value_text(b, vb, sizeof(vb));
  if (strcmp(va, vb) != 0)
    fn(path, va, vb, arg);
}

void fw__config_diff(const config_t *a, const config_t *b,
                     void (*fn)(const char *path, const char *old, const char *now, void *arg),
                     void *arg)
{
  diff_walk(config_root_setting(a), config_root_setting(b), "", fn, arg);
}

int fw__config_load(const ec_framework_options *opts)
{
  cfg_errors er = {.log = 1};
  cfg_state *st;
  int rc;

  if (state_get() != NULL) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "config: already loaded (unload it first)");
    return -EALREADY;
  }
  st = calloc(1, sizeof(*st));
  if (st == NULL) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "config: out of memory");
    return -ENOMEM;
  }
  config_init(&st->cfg);
  /* "name = { ... };" in ec_config_print, as in the default text (libconfig's default
   * puts "name :" and the brace on lines of their own). */
  config_set_options(&st->cfg, CONFIG_OPTION_SEMICOLON_SEPARATORS);
  rc = config_build(opts, st, &er);
  if (rc == 0)
    rc = src_keep(opts);
  if (rc != 0) {
    state_free(st);
    return rc;
  }
  __atomic_store_n(&g_state, st, __ATOMIC_RELEASE); /* pairs with state_get */
  return 0;
}

void fw__config_unload(void)
{
  cfg_state *st = state_get();

  if (st == NULL)
    return;
  __atomic_store_n(&g_state, NULL, __ATOMIC_RELEASE);
  state_free(st);
  src_free();
  sections_clear();
}

const config_t *fw__config(void)
{
  cfg_state *st = state_get();

  return st ? &st->cfg : NULL;
}

int fw__config_check_text(const char *text, const char *origin, char *errbuf, size_t errlen)
{
  /* No logging: the caller (a tool, a test) gets the first error in errbuf and decides
   * how to show it. */
  cfg_errors er = {.buf = errbuf, .len = errlen};
  config_t c;
  int rc;

  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';
  if (origin == NULL)
    origin = "<text>";
  if (text == NULL) {
    report(&er, origin, 0, "no configuration text");
    return -EINVAL;
  }
  config_init(&c);
  rc = parse_text(&c, text, origin, &er);
  if (rc == 0 && check_config(&c, &root_schema, origin, 0, &er) > 0)
    rc = -EINVAL;
  config_destroy(&c);
  return rc;
}

/* ---- readers -------------------------------------------------------------------------- */

static const config_setting_t *lookup(const char *path)
{
  cfg_state *st = state_get();

  if (st == NULL || path == NULL)
    return NULL;
  return config_lookup(&st->cfg, path);
}

long long ec_config_get_int(const char *path, long long def)
{
  const config_setting_t *s = lookup(path);

  return s != NULL && is_int(s) ? config_setting_get_int64(s) : def;
}

double ec_config_get_double(const char *path, double def)
{
  const config_setting_t *s = lookup(path);

  if (s == NULL)
    return def;
  if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
    return config_setting_get_float(s);
  return is_int(s) ? (double)config_setting_get_int64(s) : def;
}

int ec_config_get_bool(const char *path, int def)
{
  const config_setting_t *s = lookup(path);

  if (s == NULL)
    return def;
  if (config_setting_type(s) == CONFIG_TYPE_BOOL)
    return config_setting_get_bool(s);
  return is_int(s) ? config_setting_get_int64(s) != 0 : def;
}

const char *ec_config_get_string(const char *path, const char *def)
{
  const config_setting_t *s = lookup(path);

  return s != NULL && config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                                   : def;
}

int ec_config_get_list_count(const char *path)
{
  const config_setting_t *s = lookup(path);

  if (s == NULL)
    return -ENOENT;
  if (config_setting_type(s) == CONFIG_TYPE_STRING)
    return 1; /* a lone string is a one-element list, as the validator allows */
  return config_setting_is_array(s) || config_setting_is_list(s) ? config_setting_length(s)
                                                                 : -EINVAL;
}

const char *ec_config_get_list_string(const char *path, int index)
{
  const config_setting_t *s = lookup(path);

  if (s == NULL || index < 0)
    return NULL;
  if (config_setting_type(s) == CONFIG_TYPE_STRING)
    return index == 0 ? config_setting_get_string(s) : NULL;
  if (!config_setting_is_array(s) && !config_setting_is_list(s))
    return NULL;
  s = config_setting_get_elem(s, (unsigned)index);
  return s != NULL && config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                                   : NULL;
}

int ec_config_print(FILE *out)
{
  cfg_state *st = state_get();

  if (out == NULL || st == NULL) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "ec_config_print: %s",
                    out == NULL ? "NULL stream" : "no configuration loaded (init first)");
    return -EINVAL;
  }
  errno = 0;
  config_write(&st->cfg, out);
  if (ferror(out) || fflush(out) != 0) {
    int err = errno ? errno : EIO;

    ec_debug_printf(DERROR, EC_LOG_CONFIG, "ec_config_print: write: %s", strerror(err));
    return -err;
  }
  return 0;
}
