/*
 * test/test_log.c - leveled logging and the asynchronous logger (framework/log.c).
 *
 * Synchronous mode (no framework) is checked by capturing fd 2; the logger thread is
 * started through ec_framework_init with `log.file` pointing at a temporary file, and
 * stopped by ec_framework_join.
 */
#include "unit.h"

#include "ec_log.h"
#include "ec_malloc.h"
#include "framework/internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>

/* ---- helpers ------------------------------------------------------------------------- */

typedef struct capture {
  int saved;
  int fd;
} capture;

static int capture_begin(capture *c)
{
  char path[] = "/tmp/ecshard-test-log-XXXXXX";

  c->fd = mkstemp(path);
  if (c->fd < 0)
    return -1;
  unlink(path);
  fflush(stderr);
  c->saved = dup(STDERR_FILENO);
  dup2(c->fd, STDERR_FILENO);
  return 0;
}

static char *read_fd(int fd)
{
  off_t len = lseek(fd, 0, SEEK_END);
  char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
  ssize_t n;

  if (buf == NULL)
    return NULL;
  n = pread(fd, buf, (size_t)len, 0);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

static char *capture_end(capture *c)
{
  char *out;

  fflush(stderr);
  dup2(c->saved, STDERR_FILENO);
  close(c->saved);
  out = read_fd(c->fd);
  close(c->fd);
  return out;
}

static char *read_path(const char *path)
{
  int fd = open(path, O_RDONLY);
  char *out;

  if (fd < 0)
    return NULL;
  out = read_fd(fd);
  close(fd);
  return out;
}

/* A fresh temporary file name for log.file (the file itself is created by the logger). */
static void temp_log_path(char *path, size_t len, char *set, size_t setlen)
{
  int fd;

  snprintf(path, len, "/tmp/ecshard-test-log-XXXXXX");
  fd = mkstemp(path);
  if (fd >= 0)
    close(fd);
  snprintf(set, setlen, "log.file=%s", path);
}

/* ec_framework_init with one shard, the command line's --set values and `extra`. */
static int fw_init(const char *const *extra)
{
  const char *set[UNIT_MAX_SET + 16];
  ec_framework_options o = unit_options(1);
  int n = 0;

  for (int i = 0; unit_set[i] != NULL && n < UNIT_MAX_SET; i++)
    set[n++] = unit_set[i];
  for (int i = 0; extra != NULL && extra[i] != NULL && i < 15; i++)
    set[n++] = extra[i];
  set[n] = NULL;
  o.set = set;
  return ec_framework_init(&o);
}

static int matches(const char *text, const char *pattern)
{
  regex_t re;
  int rc;

  if (regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE | REG_NOSUB) != 0)
    return 0;
  rc = regexec(&re, text, 0, NULL, 0);
  regfree(&re);
  return rc == 0;
}

static int count_lines(const char *text)
{
  int n = 0;

  for (; *text; text++)
    n += *text == '\n';
  return n;
}

#define TS "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

/* ---- names, levels, masks ------------------------------------------------------------ */

/* Runs first: the defaults are those of a fresh process. */
static void t_default_masks(void)
{
  unsetenv("ECSHARD_LOG_LEVEL");
  ASSERT_UEQ(ec_log_get_mask(DDEBUG), 0);
  ASSERT_UEQ(ec_log_get_mask(DINFO), 0);
  ASSERT_UEQ(ec_log_get_mask(DNOTICE), 0);
  ASSERT_UEQ(ec_log_get_mask(DWARNING), EC_LOG_ALL);
  ASSERT_UEQ(ec_log_get_mask(DERROR), EC_LOG_ALL);
  ASSERT_UEQ(ec_log_get_mask(DCRITICAL), EC_LOG_ALL);
  ASSERT_UEQ(ec_log_dropped(), 0);
}

static void t_names(void)
{
  static const char *const levels[] = {"debug", "info", "notice", "warning", "error", "critical"};
  static const struct {
    const char *name;
    unsigned mask;
  } subs[] = {
      {"ERROR", EC_LOG_ERROR}, {"TIME", EC_LOG_TIME}, {"FD", EC_LOG_FD},
      {"SMTP", EC_LOG_SMTP},   {"LOG1", EC_LOG_LOG1}, {"DNS", EC_LOG_DNS},
      {"NET", EC_LOG_NET},     {"SIG", EC_LOG_SIG},   {"MEM", EC_LOG_MEM},
      {"SSL", EC_LOG_SSL},     {"MOD", EC_LOG_MOD},   {"START", EC_LOG_START},
      {"SHARD", EC_LOG_SHARD}, {"POOL", EC_LOG_POOL}, {"CONFIG", EC_LOG_CONFIG},
      {"HTTP", EC_LOG_HTTP},   {"ALL", EC_LOG_ALL},
  };

  for (int i = 0; i < EC_LOG_LEVELS; i++)
    ASSERT_EQ(ec_log_level_by_name(levels[i]), i);
  ASSERT_EQ(ec_log_level_by_name("WARNING"), DWARNING);
  ASSERT_EQ(ec_log_level_by_name("Critical"), DCRITICAL);
  ASSERT_EQ(ec_log_level_by_name("verbose"), -1);
  ASSERT_EQ(ec_log_level_by_name(""), -1);
  ASSERT_EQ(ec_log_level_by_name(NULL), -1);

  for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
    ASSERT_UEQ(ec_log_subsystem_by_name(subs[i].name), subs[i].mask);
  ASSERT_UEQ(ec_log_subsystem_by_name("log1"), EC_LOG_LOG1);
  ASSERT_UEQ(ec_log_subsystem_by_name("BOGUS"), 0);
  ASSERT_UEQ(ec_log_subsystem_by_name(NULL), 0);
}

static void t_set_level_and_masks(void)
{
  ec_log_set_level(DINFO);
  ASSERT_UEQ(ec_log_get_mask(DDEBUG), 0);
  ASSERT_UEQ(ec_log_get_mask(DINFO), EC_LOG_ALL);
  ASSERT_UEQ(ec_log_get_mask(DCRITICAL), EC_LOG_ALL);

  ec_log_set_level(DWARNING);
  ec_log_set_mask(DDEBUG, EC_LOG_FD);
  ASSERT_TRUE(ec_log_enabled(DDEBUG, EC_LOG_FD));
  ASSERT_TRUE(ec_log_enabled(DDEBUG, EC_LOG_FD | EC_LOG_DNS));
  ASSERT_TRUE(!ec_log_enabled(DDEBUG, EC_LOG_DNS));
  ASSERT_TRUE(!ec_log_enabled(DINFO, EC_LOG_FD));
  ASSERT_TRUE(ec_log_enabled(DWARNING, EC_LOG_DNS));
  /* Out-of-range levels are clamped when filtering and ignored when setting. */
  ASSERT_TRUE(ec_log_enabled(-3, EC_LOG_FD));
  ASSERT_TRUE(ec_log_enabled(42, EC_LOG_DNS));
  ec_log_set_mask(EC_LOG_LEVELS, 0);
  ec_log_set_mask(-1, 0);
  ASSERT_UEQ(ec_log_get_mask(EC_LOG_LEVELS), 0);
  ASSERT_UEQ(ec_log_get_mask(DCRITICAL), EC_LOG_ALL);
  ASSERT_UEQ(ec_log_get_mask(DDEBUG), EC_LOG_FD);

  ec_log_set_level(DCRITICAL + 1);
  ASSERT_TRUE(!ec_log_enabled(DCRITICAL, EC_LOG_ALL));
  ec_log_set_level(DWARNING);
  ASSERT_UEQ(ec_log_get_mask(DDEBUG), 0);
}

/* ---- synchronous output -------------------------------------------------------------- */

/* Line format, trailing newline and control characters, long lines, thread names. */
static void t_sync_line_format(void)
{
  char *long_msg = malloc(3001), *out;
  capture cap;
  int r1, r2;

  ASSERT_NOT_NULL(long_msg);
  memset(long_msg, 'L', 3000);
  long_msg[3000] = '\0';
  ASSERT_EQ(capture_begin(&cap), 0);
  fw__log_thread_name("tester");
  r1 = log1_printf(DWARNING, "hello %d", 42);
  r2 = log1_printf(DERROR, "a\001b\tc\rd\177e\n");
  log1_printf(DCRITICAL, "x\n\n");
  log1_printf(DWARNING, "%s", long_msg);
  fw__log_thread_name(NULL);
  ec_debug_printf(DWARNING, EC_LOG_NET, "default name");
  out = capture_end(&cap);
  free(long_msg);
  ASSERT_NOT_NULL(out);
  ASSERT_EQ(r1, 1);
  ASSERT_EQ(r2, 1);
  ASSERT_EQ(count_lines(out), 5);
  ASSERT_TRUE(matches(out, "^" TS " \\[tester\\] warning: hello 42$"));
  ASSERT_TRUE(matches(out, "^" TS " \\[tester\\] error: a\\?b\tc\\?d\\?e$"));
  ASSERT_TRUE(matches(out, "^" TS " \\[tester\\] critical: x\\?$"));
  ASSERT_TRUE(matches(out, "^" TS " \\[tester\\] warning: L{3000}$"));
  ASSERT_TRUE(matches(out, "^" TS " \\[main\\] warning: default name$"));
  free(out);
}

static void *named_thread(void *arg)
{
  (void)arg;
  log1_printf(DWARNING, "from a thread");
  return NULL;
}

static void t_sync_default_thread_name(void)
{
  capture cap;
  pthread_t t;
  char *out;

  ASSERT_EQ(capture_begin(&cap), 0);
  if (pthread_create(&t, NULL, named_thread, NULL) == 0)
    pthread_join(t, NULL);
  out = capture_end(&cap);
  ASSERT_NOT_NULL(out);
  ASSERT_TRUE(matches(out, "^" TS " \\[thread [0-9]+\\] warning: from a thread$"));
  free(out);
}

/* Filtering by level and subsystem, before any formatting. */
static void t_sync_filtering(void)
{
  /* Formatting this would crash: filtered calls must never look at their arguments. */
  const char *poison = (const char *)(uintptr_t)8;
  int r_filtered, r_debug_filtered, r_log1_off, r_log1_on;
  capture cap;
  char *out;

  unsetenv("ECSHARD_LOG_LEVEL");
  ec_log_set_level(DWARNING);
  ASSERT_EQ(capture_begin(&cap), 0);
  r_filtered = log1_printf(DDEBUG, "%s", poison);
  log1_printf(DNOTICE, "%s", poison);
  r_debug_filtered = ec_debug_printf(DINFO, EC_LOG_FD, "%s", poison);
  ec_log_set_mask(DDEBUG, EC_LOG_FD);
  ec_debug_printf(DDEBUG, EC_LOG_FD | EC_LOG_DNS, "fd-or-dns %d", 1);
  ec_debug_printf(DDEBUG, EC_LOG_DNS, "%s", poison);
  r_log1_off = log1_printf(DDEBUG, "%s", poison);
  ec_log_set_mask(DDEBUG, EC_LOG_FD | EC_LOG_LOG1);
  r_log1_on = log1_printf(DDEBUG, "log1 at debug");
  ec_log_set_level(DWARNING);
  out = capture_end(&cap);
  ASSERT_NOT_NULL(out);
  ASSERT_EQ(r_filtered, 0);
  ASSERT_EQ(r_debug_filtered, 1); /* Momentum's contract: always 1 */
  ASSERT_EQ(r_log1_off, 0);
  ASSERT_EQ(r_log1_on, 1);
  ASSERT_EQ(count_lines(out), 2);
  ASSERT_TRUE(matches(out, "^" TS " \\[main\\] debug: fd-or-dns 1$"));
  ASSERT_TRUE(matches(out, "^" TS " \\[main\\] debug: log1 at debug$"));
  free(out);
}

/* ---- the logger thread --------------------------------------------------------------- */

/* Lines go to log.file through the logger; flush waits for them; after join, stderr. */
static void t_async_file_and_flush(void)
{
  char path[64], set_file[96], *text, *out;
  const char *extra[] = {set_file, "log.level=info", NULL};
  int rc, flushed, again, last = -1, seen = 0, in_order = 1;
  capture cap;

  unsetenv("ECSHARD_LOG_LEVEL");
  temp_log_path(path, sizeof(path), set_file, sizeof(set_file));
  rc = fw_init(extra);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(fw__log_start(), -EALREADY);
  ASSERT_TRUE(ec_log_enabled(DINFO, EC_LOG_LOG1));
  for (int i = 0; i < 100; i++)
    log1_printf(DINFO, "async line %d", i);
  flushed = ec_log_flush(30000);
  text = read_path(path);
  again = ec_log_flush(0); /* nothing new queued: done at once */
  ASSERT_EQ(ec_framework_join(), 0);
  ec_log_set_level(DWARNING);

  ASSERT_EQ(capture_begin(&cap), 0);
  log1_printf(DWARNING, "after join");
  out = capture_end(&cap);

  ASSERT_EQ(flushed, 0);
  ASSERT_EQ(again, 0);
  ASSERT_NOT_NULL(text);
  for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    const char *m = strstr(l, "async line ");
    int n;

    if (m == NULL)
      continue;
    n = atoi(m + strlen("async line "));
    in_order &= n == last + 1;
    last = n;
    seen++;
    in_order &= matches(l, "^" TS " \\[main\\] info: async line [0-9]+$");
  }
  free(text);
  ASSERT_EQ(seen, 100);
  ASSERT_TRUE(in_order);

  /* After join: synchronous, to stderr, not to the file. */
  ASSERT_NOT_NULL(out);
  ASSERT_TRUE(matches(out, "^" TS " \\[main\\] warning: after join$"));
  free(out);
  text = read_path(path);
  ASSERT_NOT_NULL(text);
  ASSERT_TRUE(strstr(text, "after join") == NULL);
  free(text);
  unlink(path);
  ASSERT_EQ(ec_log_flush(100), 0);
}

#define PRODUCERS 4

typedef struct producer {
  int index;
  long n;
  long accepted;
  pthread_barrier_t *go;
} producer;

static void *producer_main(void *arg)
{
  producer *p = arg;

  pthread_barrier_wait(p->go);
  for (long i = 0; i < p->n; i++)
    p->accepted += log1_printf(DWARNING, "burst p%d seq %ld", p->index, i);
  return NULL;
}

/*
 * A burst from four threads into a 16-entry queue: producers never wait, and every
 * message is either written (in its producer's order) or counted as dropped, with the
 * drops reported in the file.
 */
static void t_burst_tiny_queue(void)
{
  char path[64], set_file[96], *text;
  const char *extra[] = {set_file, "log.queue_size=16", "log.level=warning", NULL};
  long n = unit_scale(50000), written[PRODUCERS] = {0}, last[PRODUCERS];
  long total_written = 0, bad_order = 0, bad_lines = 0;
  uint64_t dropped0 = ec_log_dropped(), dropped, reported = 0;
  producer prod[PRODUCERS];
  pthread_t th[PRODUCERS];
  pthread_barrier_t go;
  int rc, flushed;

  unsetenv("ECSHARD_LOG_LEVEL");
  temp_log_path(path, sizeof(path), set_file, sizeof(set_file));
  rc = fw_init(extra);
  ASSERT_EQ(rc, 0);
  pthread_barrier_init(&go, NULL, PRODUCERS);
  for (int i = 0; i < PRODUCERS; i++) {
    prod[i] = (producer){.index = i, .n = n, .go = &go};
    last[i] = -1;
    if (pthread_create(&th[i], NULL, producer_main, &prod[i]) != 0)
      abort(); /* the others would wait at the barrier forever */
  }
  for (int i = 0; i < PRODUCERS; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&go);
  flushed = ec_log_flush(120000);
  dropped = ec_log_dropped() - dropped0;
  rc = ec_framework_join(); /* the logger reports the last drops before it exits */
  ASSERT_EQ(flushed, 0);
  ASSERT_EQ(rc, 0);

  text = read_path(path);
  ASSERT_NOT_NULL(text);
  for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    const char *m;
    long seq;
    int p;

    if ((m = strstr(l, "] warning: burst p")) != NULL) {
      if (sscanf(m, "] warning: burst p%d seq %ld", &p, &seq) != 2 || p < 0 || p >= PRODUCERS) {
        bad_lines++;
        continue;
      }
      bad_order += seq <= last[p];
      last[p] = seq;
      written[p]++;
      total_written++;
    } else if ((m = strstr(l, "[logger] warning: ")) != NULL &&
               strstr(m, " log messages dropped")) {
      reported += strtoull(m + strlen("[logger] warning: "), NULL, 10);
    }
  }
  free(text);
  unlink(path);
  printf("(%ld written, %" PRIu64 " dropped) ", total_written, dropped);

  ASSERT_EQ(bad_lines, 0);
  ASSERT_EQ(bad_order, 0);
  for (int i = 0; i < PRODUCERS; i++)
    ASSERT_EQ(written[i], prod[i].accepted);
  ASSERT_UEQ((uint64_t)total_written + dropped, (uint64_t)PRODUCERS * n);
  ASSERT_UEQ(reported, dropped);
}

/* ECSHARD_LOG_LEVEL overrides log.level; a bad value fails the start. */
static void t_env_level_override(void)
{
  const char *extra[] = {"log.level=error", NULL};
  capture cap;
  int rc_ok, rc_bad;
  unsigned dbg, warn;
  char *out;

  setenv("ECSHARD_LOG_LEVEL", "debug", 1);
  rc_ok = fw_init(extra);
  dbg = ec_log_get_mask(DDEBUG);
  if (rc_ok == 0)
    ec_framework_join();
  unsetenv("ECSHARD_LOG_LEVEL");
  rc_bad = fw_init(extra);
  warn = ec_log_get_mask(DWARNING);
  if (rc_bad == 0)
    ec_framework_join();

  ASSERT_EQ(capture_begin(&cap), 0);
  setenv("ECSHARD_LOG_LEVEL", "loud", 1);
  rc_bad = fw_init(extra);
  if (rc_bad == 0)
    ec_framework_join();
  unsetenv("ECSHARD_LOG_LEVEL");
  out = capture_end(&cap);
  ec_log_set_level(DWARNING);

  ASSERT_EQ(rc_ok, 0);
  ASSERT_UEQ(dbg, EC_LOG_ALL);
  ASSERT_UEQ(warn, 0); /* log.level = error applies without the variable */
  ASSERT_EQ(rc_bad, -EINVAL);
  ASSERT_NOT_NULL(out);
  ASSERT_TRUE(strstr(out, "ECSHARD_LOG_LEVEL: unknown log level 'loud'") != NULL);
  free(out);
}

/* debug_flags add subsystems at a level on top of log.level. */
static void t_debug_flags(void)
{
  char path[64], set_file[96], *text;
  const char *extra[] = {set_file, "debug_flags.DEBUG=LOG1,FD", NULL};
  unsigned dbg, info, warn;
  int rc;

  unsetenv("ECSHARD_LOG_LEVEL");
  temp_log_path(path, sizeof(path), set_file, sizeof(set_file));
  rc = fw_init(extra);
  ASSERT_EQ(rc, 0);
  dbg = ec_log_get_mask(DDEBUG);
  info = ec_log_get_mask(DINFO);
  warn = ec_log_get_mask(DWARNING);
  log1_printf(DDEBUG, "debug via flags");
  ec_debug_printf(DDEBUG, EC_LOG_NET, "not enabled");
  ASSERT_EQ(ec_framework_join(), 0);
  ec_log_set_level(DWARNING);
  text = read_path(path);
  unlink(path);

  ASSERT_UEQ(dbg, EC_LOG_LOG1 | EC_LOG_FD);
  ASSERT_UEQ(info, 0);
  ASSERT_UEQ(warn, EC_LOG_ALL);
  ASSERT_NOT_NULL(text);
  ASSERT_TRUE(matches(text, "^" TS " \\[main\\] debug: debug via flags$"));
  ASSERT_TRUE(strstr(text, "not enabled") == NULL);
  free(text);
}

/* Bad destinations and queue sizes fail the start with a clear result. */
static void t_bad_settings(void)
{
  const char *bad_file[] = {"log.file=/nonexistent-ecshard-dir/x.log", NULL};
  const char *bad_queue[] = {"log.queue_size=100", NULL};
  capture cap;
  int rc_file, rc_queue;
  char *out;

  unsetenv("ECSHARD_LOG_LEVEL");
  ASSERT_EQ(capture_begin(&cap), 0);
  rc_file = fw_init(bad_file);
  if (rc_file == 0)
    ec_framework_join();
  rc_queue = fw_init(bad_queue);
  if (rc_queue == 0)
    ec_framework_join();
  out = capture_end(&cap);
  ASSERT_EQ(rc_file, -ENOENT);
  ASSERT_EQ(rc_queue, -EINVAL);
  ASSERT_NOT_NULL(out);
  ASSERT_TRUE(strstr(out, "open(/nonexistent-ecshard-dir/x.log)") != NULL);
  free(out);
  /* Nothing leaked: the queued-message memtype is back to zero. */
  ec_memtype_stats st;
  ASSERT_EQ(ec_memtype_stats_get(MEMTYPE_LOG_MSG, &st), 0);
  ASSERT_EQ(st.live_objects, 0);
}

static const unit_test tests[] = {
    UNIT_TEST(t_default_masks),
    UNIT_TEST(t_names),
    UNIT_TEST(t_set_level_and_masks),
    UNIT_TEST(t_sync_line_format),
    UNIT_TEST(t_sync_default_thread_name),
    UNIT_TEST(t_sync_filtering),
    UNIT_TEST(t_async_file_and_flush),
    UNIT_TEST(t_burst_tiny_queue),
    UNIT_TEST(t_env_level_override),
    UNIT_TEST(t_debug_flags),
    UNIT_TEST(t_bad_settings),
    {NULL, NULL},
};

UNIT_MAIN("log", tests)
