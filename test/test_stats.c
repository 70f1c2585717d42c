/*
 * test/test_stats.c - operations: counters, rendering, module sources, callback timing,
 * the watchdog, per-subsystem log levels, log reopen and configuration reload.
 *
 * Log output goes to a temporary file (log.file) that the tests read after ec_log_flush.
 * Stall tests make a callback sleep on purpose; their assertions are about what was
 * reported, never about how long anything took.
 */
#include "ec_log.h"
#include "ec_malloc.h"
#include "ec_stats.h"
#include "event.h"
#include "framework/internal.h"
#include "framework/listener.h"
#include "scheduler.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>

static char *read_path(const char *path)
{
  int fd = open(path, O_RDONLY);
  size_t len = 0, cap = 4096;
  char *out = malloc(cap);
  ssize_t n;

  if (fd < 0 || out == NULL) {
    if (fd >= 0)
      close(fd);
    free(out);
    return NULL;
  }
  while ((n = read(fd, out + len, cap - len - 1)) > 0) {
    len += (size_t)n;
    if (cap - len < 1024) {
      cap *= 2;
      out = realloc(out, cap);
    }
  }
  out[len] = '\0';
  close(fd);
  return out;
}

static void temp_path(char *path, size_t len, const char *what)
{
  int fd;

  snprintf(path, len, "/tmp/ecshard-test-%s-XXXXXX", what);
  fd = mkstemp(path);
  if (fd >= 0)
    close(fd);
}

/* init with `shards` shards, the command line's --set values and `extra`. */
static int fw_init(int shards, const char *const *extra)
{
  const char *set[UNIT_MAX_SET + 16];
  ec_framework_options o = unit_options(shards);
  int n = 0;

  for (int i = 0; unit_set[i] != NULL && n < UNIT_MAX_SET; i++)
    set[n++] = unit_set[i];
  for (int i = 0; extra != NULL && extra[i] != NULL && i < 15; i++)
    set[n++] = extra[i];
  set[n] = NULL;
  o.set = set;
  return ec_framework_init(&o);
}

static void fw_stop(void)
{
  ec_framework_stop();
  ec_framework_join();
}

/* ---- rendering and sources -------------------------------------------------------------- */

static int source_calls;

static void my_source(ec_stats_writer *w, void *arg)
{
  const char *lb[] = {"queue", "in\"box\\\n", NULL};
  const char *bad[] = {"0bad", "x", NULL};

  __atomic_fetch_add(&source_calls, 1, __ATOMIC_RELAXED);
  ec_stats_emit_u64(w, "mymod_messages_total", EC_STATS_COUNTER, "Messages seen", lb,
                    (uint64_t)(uintptr_t)arg);
  ec_stats_emit(w, "mymod_ratio", EC_STATS_GAUGE, "A ratio", NULL, 0.5);
  ec_stats_emit(w, "bad name", EC_STATS_GAUGE, "dropped", NULL, 1);
  ec_stats_emit(w, "mymod_badlabel", EC_STATS_GAUGE, "dropped", bad, 1);
}

static void t_render_and_sources(void)
{
  char *prom = NULL, *json = NULL;
  int n;

  ASSERT_EQ(ec_stats_render(EC_STATS_PROMETHEUS, &prom), -EINVAL); /* not initialised */
  ASSERT_EQ(fw_init(2, NULL), 0);
  ASSERT_EQ(ec_stats_register_source("mymod", my_source, (void *)(uintptr_t)42), 0);
  ASSERT_EQ(ec_stats_register_source("mymod", my_source, NULL), -EEXIST);
  ASSERT_EQ(ec_stats_register_source("", my_source, NULL), -EINVAL);
  ASSERT_EQ(ec_framework_start(), 0);
  n = ec_stats_render(EC_STATS_PROMETHEUS, &prom);
  ASSERT_GT(n, 0);
  ASSERT_EQ((int)strlen(prom), n);
  ASSERT_TRUE(strstr(prom, "# TYPE ecshard_shard_iterations_total counter\n") != NULL);
  ASSERT_TRUE(strstr(prom, "ecshard_shard_iterations_total{shard=\"1\"} ") != NULL);
  ASSERT_TRUE(strstr(prom, "# TYPE ecshard_shard_callback_duration_seconds histogram\n") != NULL);
  ASSERT_TRUE(
      strstr(prom, "ecshard_shard_callback_duration_seconds_bucket{shard=\"0\",le=\"+Inf\"}") !=
      NULL);
  ASSERT_TRUE(strstr(prom, "ecshard_memtype_live_objects{memtype=") != NULL);
  ASSERT_TRUE(strstr(prom, "ecshard_pool_threads{pool=\"IO\"}") != NULL);
  /* The module's sample, with its label value escaped as the text format wants. */
  ASSERT_TRUE(strstr(prom, "mymod_messages_total{queue=\"in\\\"box\\\\\\n\"} 42\n") != NULL);
  ASSERT_TRUE(strstr(prom, "mymod_ratio 0.5\n") != NULL);
  ASSERT_TRUE(strstr(prom, "bad name") == NULL);
  ASSERT_TRUE(strstr(prom, "mymod_badlabel") == NULL);
#ifdef ECSHARD_JEMALLOC
  ASSERT_TRUE(strstr(prom, "ecshard_jemalloc_resident_bytes ") != NULL);
#else
  ASSERT_TRUE(strstr(prom, "ecshard_jemalloc_") == NULL);
#endif
  /* Every family is announced once, before its samples. */
  {
    const char *p = strstr(prom, "# TYPE ecshard_shard_fds gauge");

    ASSERT_TRUE(p != NULL && strstr(p + 1, "# TYPE ecshard_shard_fds ") == NULL);
  }
  n = ec_stats_render(EC_STATS_JSON, &json);
  ASSERT_GT(n, 0);
  ASSERT_TRUE(json[0] == '{' && json[n - 2] == '}');
  ASSERT_TRUE(strstr(json, "\"mymod_messages_total\":{\"type\":\"counter\"") != NULL);
  ASSERT_TRUE(strstr(json, "{\"labels\":{\"queue\":\"in\\\"box\\\\\\u000a\"},\"value\":42}") !=
              NULL);
  ASSERT_EQ(__atomic_load_n(&source_calls, __ATOMIC_RELAXED), 2);
  ASSERT_EQ(ec_stats_unregister_source("mymod"), 0);
  ASSERT_EQ(ec_stats_unregister_source("mymod"), -ENOENT);
  ec_free(MEMTYPE_GENERIC, prom);
  ec_free(MEMTYPE_GENERIC, json);
  ASSERT_GT(ec_stats_render(EC_STATS_PROMETHEUS, &prom), 0);
  ASSERT_TRUE(strstr(prom, "mymod_") == NULL); /* unregistered */
  ec_free(MEMTYPE_GENERIC, prom);
  ASSERT_EQ(ec_stats_render(9, &json), -EINVAL);
  fw_stop();
  /* Sources are forgotten at join. */
  ASSERT_EQ(ec_stats_unregister_source("mymod"), -ENOENT);
}

/* ---- bytes in and out --------------------------------------------------------------------- */

static int read_total;

static int reader_cb(Event *e, int mask, void *closure, struct timeval *now)
{
  char buf[512];
  int need, n;

  (void)mask;
  (void)closure;
  (void)now;
  while ((n = event_read(e, buf, sizeof(buf), &need)) > 0) {
    event_write(e, buf, n, &need); /* echo: counted as bytes out */
    __atomic_fetch_add(&read_total, n, __ATOMIC_RELEASE);
  }
  if (n == 0) {
    event_close(e);
    return 0;
  }
  return E_READ;
}

static void t_bytes_counted(void)
{
  ec_shard_stats before, after;
  char buf[1000], back[1000];
  size_t got = 0;
  int sv[2];
  Event *e;

  memset(buf, 'x', sizeof(buf));
  ASSERT_EQ(fw_init(1, NULL), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  ASSERT_EQ(ec_shard_stats_get(0, &before), 0);
  e = build_fd_event(sv[0], E_READ, 0, reader_cb, NULL);
  ASSERT_NOT_NULL(e);
  schedule_event(e);
  ASSERT_EQ(write(sv[1], buf, sizeof(buf)), (int)sizeof(buf));
  ASSERT_TRUE(unit_wait_ge(&read_total, (int)sizeof(buf), 10000));
  while (got < sizeof(back)) {
    ssize_t n = read(sv[1], back + got, sizeof(back) - got);

    if (n <= 0) {
      usleep(1000);
      continue;
    }
    got += (size_t)n;
  }
  ASSERT_EQ(ec_shard_stats_get(0, &after), 0);
  ASSERT_UEQ(after.bytes_in - before.bytes_in, sizeof(buf));
  ASSERT_UEQ(after.bytes_out - before.bytes_out, sizeof(buf));
  ASSERT_GT(after.thread_id, 0);
  close(sv[1]);
  fw_stop();
}

/* ---- callback timing and the watchdog ------------------------------------------------------ */

static int slept;

/* Exported (not static) so that the stall report can name it. */
int test_stats_slow_callback(Event *e, int mask, void *closure, struct timeval *now);
int test_stats_slow_callback(Event *e, int mask, void *closure, struct timeval *now)
{
  (void)e;
  (void)mask;
  (void)closure;
  (void)now;
  usleep(150000); /* past the 40 ms threshold set below */
  __atomic_store_n(&slept, 1, __ATOMIC_RELEASE);
  return 0;
}

static void t_stall_reports(void)
{
  char path[64], set[128], *log;
  const char *extra[] = {set,
                         "log.level=\"notice\"",
                         "watchdog.stall_threshold=0.04",
                         "watchdog.stuck_timeout=0.1",
                         "watchdog.callback_timing=true",
                         NULL};
  ec_shard_stats st;
  uint64_t hist = 0, buckets[EC_SHARD_HIST_BUCKETS];

  temp_path(path, sizeof(path), "stall");
  snprintf(set, sizeof(set), "log.file=\"%s\"", path);
  __atomic_store_n(&slept, 0, __ATOMIC_RELAXED);
  ASSERT_EQ(fw_init(1, extra), 0);
  ASSERT_EQ(ec_stats_set_callback_timing(-1), 1);
  ASSERT_EQ(ec_framework_start(), 0);
  schedule_event(build_event_from_now_f(0.001f, -1, test_stats_slow_callback, NULL));
  ASSERT_TRUE(unit_wait_ge(&slept, 1, 10000));
  /* The watchdog reports when it sees the shard iterate again; wait for that. */
  for (int i = 0; i < 5000; i++) {
    ASSERT_EQ(ec_shard_stats_get(0, &st), 0);
    if (st.stalls > 0 && !st.stalled)
      break;
    usleep(1000);
  }
  ASSERT_GE(st.stalls, 1);
  ASSERT_GE(st.slow_callbacks, 1);
  ASSERT_GE(st.callbacks_timed, 1);
  ASSERT_EQ(ec_shard_callback_hist_get(0, buckets), 0);
  ASSERT_EQ(ec_shard_callback_hist_get(1, buckets), -EINVAL);
  for (int b = 0; b < EC_SHARD_HIST_BUCKETS; b++)
    hist += buckets[b];
  ASSERT_UEQ(hist, st.callbacks_timed);
  /* 150 ms is 150000 us: bucket 18 holds [131072, 262144) us. */
  ASSERT_GE(buckets[18], 1);
  ASSERT_GE(st.callback_ns, 100000000ull);
  ASSERT_EQ(ec_stats_set_callback_timing(0), 1);
  ASSERT_EQ(ec_stats_set_stall_thresholds(1, 0.5), -EINVAL);
  ASSERT_EQ(ec_stats_set_stall_thresholds(-1, 0), -EINVAL);
  ASSERT_EQ(ec_log_flush(5000), 0);
  fw_stop();
  log = read_path(path);
  ASSERT_NOT_NULL(log);
  /* The exact report (callback timing) and the watchdog's: both name the callback. */
  ASSERT_TRUE(strstr(log, "shard 0: callback test_stats_slow_callback ran for") != NULL ||
              strstr(log, "shard 0: callback test_stats+0x") != NULL);
  ASSERT_TRUE(strstr(log, "shard 0: stall: one iteration has been running for at least") != NULL);
  ASSERT_TRUE(strstr(log, "shard 0: stuck: no iteration finished") != NULL);
  ASSERT_TRUE(strstr(log, "shard 0: running again after") != NULL);
  free(log);
  unlink(path);
}

/* An idle shard is not a stalled one. */
static void t_idle_is_not_stalled(void)
{
  const char *extra[] = {"watchdog.stall_threshold=0.02", NULL};
  ec_shard_stats st;

  ASSERT_EQ(fw_init(2, extra), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  usleep(200000);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(ec_shard_stats_get(i, &st), 0);
    ASSERT_UEQ(st.stalls, 0);
    ASSERT_EQ(st.busy, 0);
  }
  fw_stop();
}

/* ---- reading while the shards are busy (run under TSan) ------------------------------------- */

static int producers_stop;
static int handled;

static void bump(void *arg)
{
  (void)arg;
  __atomic_fetch_add(&handled, 1, __ATOMIC_RELAXED);
}

static void *producer(void *arg)
{
  int shard = (int)(intptr_t)arg;

  while (!__atomic_load_n(&producers_stop, __ATOMIC_ACQUIRE))
    if (ec_shard_run(shard, bump, NULL) < 0)
      usleep(100);
  return NULL;
}

static void *timing_toggler(void *arg)
{
  (void)arg;
  while (!__atomic_load_n(&producers_stop, __ATOMIC_ACQUIRE)) {
    ec_stats_set_callback_timing(1);
    usleep(500);
    ec_stats_set_callback_timing(0);
    usleep(500);
  }
  return NULL;
}

static void t_read_under_load(void)
{
  pthread_t p[2], tog;
  uint64_t last[2] = {0, 0};
  long rounds = unit_scale(200);

  __atomic_store_n(&producers_stop, 0, __ATOMIC_RELAXED);
  ASSERT_EQ(fw_init(2, NULL), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  for (int i = 0; i < 2; i++)
    ASSERT_EQ(pthread_create(&p[i], NULL, producer, (void *)(intptr_t)i), 0);
  ASSERT_EQ(pthread_create(&tog, NULL, timing_toggler, NULL), 0);
  for (long r = 0; r < rounds; r++) {
    char *text = NULL;
    int n = ec_stats_render(r % 2 ? EC_STATS_JSON : EC_STATS_PROMETHEUS, &text);

    ASSERT_GT(n, 0);
    ec_free(MEMTYPE_GENERIC, text);
    for (int i = 0; i < 2; i++) {
      ec_shard_stats st;

      ASSERT_EQ(ec_shard_stats_get(i, &st), 0);
      ASSERT_TRUE(st.messages >= last[i]); /* counters never go back */
      last[i] = st.messages;
    }
  }
  __atomic_store_n(&producers_stop, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < 2; i++)
    pthread_join(p[i], NULL);
  pthread_join(tog, NULL);
  ASSERT_GT(__atomic_load_n(&handled, __ATOMIC_RELAXED), 0);
  fw_stop();
}

/* ---- log levels per subsystem and log reopen --------------------------------------------------
 */

static void t_subsystem_levels(void)
{
  unsigned saved[EC_LOG_LEVELS];

  for (int l = 0; l < EC_LOG_LEVELS; l++)
    saved[l] = ec_log_get_mask(l);
  ec_log_set_level(DWARNING);
  ASSERT_EQ(ec_log_set_subsystem_level(EC_LOG_SHARD, DDEBUG), 0);
  ASSERT_TRUE(ec_log_enabled(DDEBUG, EC_LOG_SHARD));
  ASSERT_TRUE(!ec_log_enabled(DDEBUG, EC_LOG_NET));
  ASSERT_TRUE(ec_log_enabled(DWARNING, EC_LOG_NET));
  ASSERT_EQ(ec_log_subsystem_level(EC_LOG_SHARD), DDEBUG);
  ASSERT_EQ(ec_log_subsystem_level(EC_LOG_NET), DWARNING);
  ASSERT_EQ(ec_log_set_subsystem_level(EC_LOG_NET, ec_log_level_by_name("off")), 0);
  ASSERT_TRUE(!ec_log_enabled(DCRITICAL, EC_LOG_NET));
  ASSERT_STR_EQ(ec_log_level_name(ec_log_subsystem_level(EC_LOG_NET)), "off");
  ASSERT_EQ(ec_log_set_subsystem_level(0, DDEBUG), -EINVAL);
  ASSERT_EQ(ec_log_set_subsystem_level(EC_LOG_NET, 99), -EINVAL);
  ASSERT_NULL(ec_log_level_name(42));
  for (int l = 0; l < EC_LOG_LEVELS; l++)
    ec_log_set_mask(l, saved[l]);
}

static void t_log_reopen(void)
{
  char path[64], moved[80], set[128], *a, *b;
  const char *extra[] = {set, NULL};

  temp_path(path, sizeof(path), "reopen");
  snprintf(moved, sizeof(moved), "%s.1", path);
  snprintf(set, sizeof(set), "log.file=\"%s\"", path);
  ASSERT_EQ(fw_init(1, extra), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  ec_debug_printf(DERROR, EC_LOG_ERROR, "before rotation");
  ASSERT_EQ(ec_log_flush(5000), 0);
  ASSERT_EQ(rename(path, moved), 0); /* what logrotate does, then SIGUSR1 */
  ASSERT_EQ(ec_framework_request(EC_REQUEST_LOGREOPEN), -ENOTSUP); /* no ec_framework_run */
  fw__log_reopen();
  /* The reopen happens on the logger thread; a line logged after it lands in the new
   * file, and lines before may land in either: wait for the new file. */
  for (int i = 0; i < 5000 && access(path, F_OK) != 0; i++)
    usleep(1000);
  ec_debug_printf(DERROR, EC_LOG_ERROR, "after rotation");
  ASSERT_EQ(ec_log_flush(5000), 0);
  fw_stop();
  a = read_path(moved);
  b = read_path(path);
  ASSERT_NOT_NULL(a);
  ASSERT_NOT_NULL(b);
  ASSERT_TRUE(strstr(a, "before rotation") != NULL);
  ASSERT_TRUE(strstr(b, "after rotation") != NULL);
  ASSERT_TRUE(strstr(a, "after rotation") == NULL);
  free(a);
  free(b);
  unlink(path);
  unlink(moved);
}

/* ---- reload ------------------------------------------------------------------------------------
 */

static int hook_calls;
static long long hook_value;

static int my_hook(void *arg)
{
  (void)arg;
  hook_calls++;
  hook_value = ec_config_get_int("mymod.value", -1);
  return 0;
}

static int write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");

  if (f == NULL)
    return -1;
  fputs(text, f);
  return fclose(f);
}

static const ec_config_item mymod_items[] = {{"value", EC_CONFIG_INT, 0, 100, NULL},
                                             {NULL, 0, 0, 0, NULL}};

static void t_reload(void)
{
  char cfg[64], logp[64], text[1024], *log;
  ec_framework_options o = unit_options(1);
  const char *set[UNIT_MAX_SET + 2];
  fw__listener *l;
  int n = 0;

  for (int i = 0; unit_set[i] != NULL && n < UNIT_MAX_SET; i++)
    set[n++] = unit_set[i];
  set[n] = NULL;
  temp_path(cfg, sizeof(cfg), "cfg");
  temp_path(logp, sizeof(logp), "rlog");
  snprintf(text, sizeof(text),
           "log = { level = \"warning\"; file = \"%s\"; };\n"
           "listener = { t = { listen = \"unix:%s.sock\"; protocol = \"admin\";\n"
           "                   max_connections = 5; idle_timeout = 30.0; }; };\n"
           "mymod = { value = 1; };\n",
           logp, logp);
  ASSERT_EQ(write_file(cfg, text), 0);
  o.config_file = cfg;
  o.set = set;
  ASSERT_EQ(ec_config_section_register("mymod", mymod_items, "value = 0;"), 0);
  ASSERT_EQ(ec_reload_register("mymod", my_hook, NULL), 0);
  ASSERT_EQ(ec_reload_register("mymod", my_hook, NULL), -EEXIST);
  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  ASSERT_TRUE(!ec_log_enabled(DNOTICE, EC_LOG_CONFIG));
  /* Run-time settings, a module section, and two that need a restart. */
  snprintf(text, sizeof(text),
           "log = { level = \"notice\"; file = \"%s\"; };\n"
           "event_loop = { events_per_wait = 64; };\n"
           "listener = { t = { listen = \"unix:%s.other\"; protocol = \"admin\";\n"
           "                   max_connections = 7; idle_timeout = 2.5; }; };\n"
           "mymod = { value = 3; };\n",
           logp, logp);
  ASSERT_EQ(write_file(cfg, text), 0);
  ASSERT_EQ(ec_framework_reload(), 0);
  ASSERT_EQ(hook_calls, 1);
  ASSERT_EQ(hook_value, 3);
  ASSERT_TRUE(ec_log_enabled(DNOTICE, EC_LOG_CONFIG));
  l = fw__listener_get(0);
  ASSERT_NOT_NULL(l);
  ASSERT_EQ(__atomic_load_n(&l->max_connections, __ATOMIC_RELAXED), 7);
  ASSERT_UEQ(__atomic_load_n(&l->idle_ns, __ATOMIC_RELAXED), 2500000000ull);
  ASSERT_EQ(ec_config_get_int("event_loop.events_per_wait", 0), 64);
  ASSERT_UEQ(ec_framework_reload_count(0), 1);
  /* A broken file changes nothing. */
  ASSERT_EQ(write_file(cfg, "log = { level = \"loud\"; };\n"), 0);
  ASSERT_EQ(ec_framework_reload(), -EINVAL);
  ASSERT_UEQ(ec_framework_reload_count(1), 1);
  ASSERT_EQ(hook_calls, 1);
  ASSERT_TRUE(ec_log_enabled(DNOTICE, EC_LOG_CONFIG));
  ASSERT_EQ(ec_config_get_int("mymod.value", 0), 3);
  ASSERT_EQ(ec_log_flush(5000), 0);
  fw_stop();
  log = read_path(logp);
  ASSERT_NOT_NULL(log);
  ASSERT_TRUE(strstr(log, "reload: listener.t.max_connections: 5 -> 7 (applied)") != NULL);
  ASSERT_TRUE(strstr(log, "reload: mymod.value: 1 -> 3 (applied)") != NULL);
  snprintf(text, sizeof(text),
           "reload: listener.t.listen: \"unix:%s.sock\" -> \"unix:%s.other\" NOT applied", logp,
           logp);
  ASSERT_TRUE(strstr(log, text) != NULL);
  ASSERT_TRUE(strstr(log, "reload: event_loop.events_per_wait: 512 -> 64 NOT applied") != NULL);
  ASSERT_TRUE(strstr(log, "reload: the configuration was refused") != NULL);
  free(log);
  unlink(cfg);
  unlink(logp);
  snprintf(text, sizeof(text), "%s.sock", logp);
  unlink(text);
  ASSERT_EQ(ec_framework_reload(), -ESHUTDOWN);
}

static const unit_test tests[] = {UNIT_TEST(t_subsystem_levels),
                                  UNIT_TEST(t_render_and_sources),
                                  UNIT_TEST(t_bytes_counted),
                                  UNIT_TEST(t_stall_reports),
                                  UNIT_TEST(t_idle_is_not_stalled),
                                  UNIT_TEST(t_read_under_load),
                                  UNIT_TEST(t_log_reopen),
                                  UNIT_TEST(t_reload),
                                  {NULL, NULL}};

UNIT_MAIN("stats", tests)
