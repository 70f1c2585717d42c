/*
 * framework/log.c - leveled, per-subsystem logging (ec_log.h) with an asynchronous writer.
 *
 * A call is filtered first (one relaxed load of its level's mask), then formatted on the
 * calling thread. While the logger thread runs (fw__log_start .. fw__log_stop) the line is
 * copied into a MEMTYPE_LOG_MSG block and pushed onto a bounded ck_ring; when the ring is
 * full the line is dropped and counted, so a burst of logging never makes a shard wait
 * for the disk. The logger writes batches with writev and sleeps on an eventfd when idle;
 * producers wake it with at most one write per sleep (the `sleeping` handshake, as in the
 * shard mailbox). Outside that window each line is a single write(2) to stderr.
 */
#include "ec_config.h"
#include "ec_framework.h"
#include "ec_log.h"
#include "ec_malloc.h"
#include "framework/internal.h"

#include <ck_pr.h>
#include <ck_ring.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#ifdef HAVE_SYS_EVENTFD_H
#include <sys/eventfd.h>
#endif

#define CACHELINE 64
#define LINE_STACK 1024 /* lines up to this size are formatted without a heap allocation */
#define BATCH 64        /* messages per writev */
#define THREAD_NAME_MAX 32
#define QUEUE_DEFAULT 8192
#define QUEUE_MAX (1u << 24)

typedef struct log_msg {
  size_t len;
  char text[];
} log_msg;

/* Default: every subsystem at DWARNING and above, nothing below. */
static unsigned level_masks[EC_LOG_LEVELS] = {0, 0, 0, EC_LOG_ALL, EC_LOG_ALL, EC_LOG_ALL};

static const char *const level_names[EC_LOG_LEVELS] = {"debug",   "info",  "notice",
                                                       "warning", "error", "critical"};

static const struct {
  const char *name;
  unsigned mask;
} subsystems[] = {
  {"ERROR", EC_LOG_ERROR}, {"TIME", EC_LOG_TIME},   {"FD", EC_LOG_FD},
  {"SMTP", EC_LOG_SMTP},   {"LOG1", EC_LOG_LOG1},   {"DNS", EC_LOG_DNS},
  {"NET", EC_LOG_NET},     {"SIG", EC_LOG_SIG},     {"MEM", EC_LOG_MEM},
  {"SSL", EC_LOG_SSL},     {"MOD", EC_LOG_MOD},     {"START", EC_LOG_START},
  {"SHARD", EC_LOG_SHARD}, {"POOL", EC_LOG_POOL},   {"CONFIG", EC_LOG_CONFIG},
  {"HTTP", EC_LOG_HTTP},   {"ALL", EC_LOG_ALL},
};

/* Serialises fw__log_start and fw__log_stop. */
static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
  /* Written by every producer. */
  _Alignas(CACHELINE) unsigned inflight; /* producers between their check of `running` and
                                            the end of their enqueue */
  uint64_t dropped;
  /* Written by the logger thread. */
  _Alignas(CACHELINE) int sleeping; /* 1: the logger is blocked, or about to block */
  uint32_t written;                 /* ring positions written out (wraps with p_tail) */
  uint64_t reported;                /* drops already reported (logger only) */
  /* Set by start/stop. */
  _Alignas(CACHELINE) int running; /* producers enqueue while 1 */
  int stopping;                    /* the logger drains the ring and exits */
  unsigned stops;                  /* completed stops, so that a flush can tell */
  int fd;                          /* destination */
  int wake_rd, wake_wr;            /* eventfd (both the same) or pipe */
  ck_ring_buffer_t *buf;
  pthread_t thread;
  ck_ring_t ring;
} lg = {.fd = -1, .wake_rd = -1, .wake_wr = -1};

static _Thread_local char thread_name[THREAD_NAME_MAX];

/* ---- filtering ----------------------------------------------------------------------- */

static int clamp_level(int level)
{
  return level < DDEBUG ? DDEBUG : level > DCRITICAL ? DCRITICAL : level;
}

int ec_log_enabled(int level, unsigned mask)
{
  /* Relaxed: a mask orders nothing else; a call racing with a change may use either. */
  return (__atomic_load_n(&level_masks[clamp_level(level)], __ATOMIC_RELAXED) & mask) != 0;
}

void ec_log_set_mask(int level, unsigned mask)
{
  if (level < DDEBUG || level > DCRITICAL)
    return;
  /* Relaxed: pairs with the relaxed load in ec_log_enabled. */
  __atomic_store_n(&level_masks[level], mask, __ATOMIC_RELAXED);
}

unsigned ec_log_get_mask(int level)
{
  if (level < DDEBUG || level > DCRITICAL)
    return 0;
  /* Relaxed: pairs with the relaxed store in ec_log_set_mask. */
  return __atomic_load_n(&level_masks[level], __ATOMIC_RELAXED);
}

void ec_log_set_level(int level)
{
  for (int l = DDEBUG; l <= DCRITICAL; l++)
    ec_log_set_mask(l, l >= level ? EC_LOG_ALL : 0);
}

int ec_log_level_by_name(const char *name)
{
  if (name == NULL)
    return -1;
  for (int l = DDEBUG; l <= DCRITICAL; l++)
    if (strcasecmp(name, level_names[l]) == 0)
      return l;
  return -1;
}

unsigned ec_log_subsystem_by_name(const char *name)
{
  if (name == NULL)
    return 0;
  for (size_t i = 0; i < sizeof(subsystems) / sizeof(subsystems[0]); i++)
    if (strcasecmp(name, subsystems[i].name) == 0)
      return subsystems[i].mask;
  return 0;
}

uint64_t ec_log_dropped(void)
{
  /* Relaxed: a statistic; pairs with the relaxed increment in emit. */
  return __atomic_load_n(&lg.dropped, __ATOMIC_RELAXED);
}

/* ---- formatting ---------------------------------------------------------------------- */

void fw__log_thread_name(const char *name)
{
  if (name == NULL) {
    thread_name[0] = '\0';
    return;
  }
  snprintf(thread_name, sizeof(thread_name), "%s", name);
}

static const char *self_name(void)
{
  if (thread_name[0] == '\0') {
#ifdef SYS_gettid
    long tid = syscall(SYS_gettid);

    /* The initial thread's id is the process id. */
    if (tid == (long)getpid())
      snprintf(thread_name, sizeof(thread_name), "main");
    else
      snprintf(thread_name, sizeof(thread_name), "thread %ld", tid);
#else
    snprintf(thread_name, sizeof(thread_name), "thread %p", (void *)pthread_self());
#endif
  }
  return thread_name;
}

/* "2026-11-29T15:25:46.123Z [name] level: " into buf; returns its length (< cap). */
static size_t format_prefix(char *buf, size_t cap, int level)
{
  struct timespec ts;
  struct tm tm;
  int n;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  n = snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ [%s] %s: ", tm.tm_year + 1900,
               tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
               (int)(ts.tv_nsec / 1000000), self_name(), level_names[level]);
  return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

/* Drops one trailing newline (ours is added) and turns other control characters except
 * tab into '?', so that a message can neither forge a line nor drive a terminal.
 * Returns the new length. */
static size_t sanitize(char *s, size_t n)
{
  if (n > 0 && s[n - 1] == '\n')
    n--;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];

    if ((c < 0x20 && c != '\t') || c == 0x7f)
      s[i] = '?';
  }
  return n;
}

/*
 * Formats a whole line, newline included, into `stack` (LINE_STACK bytes) or, when it
 * does not fit, into a malloc'd buffer that is returned instead. NULL on failure.
 */
__attribute__((format(printf, 3, 0))) static char *format_line(char *stack, int level,
                                                               const char *fmt, va_list ap,
                                                               size_t *len)
{
  size_t pre = format_prefix(stack, LINE_STACK, level);
  char *line = stack;
  va_list aq;
  int n;

  va_copy(aq, ap);
  n = vsnprintf(stack + pre, LINE_STACK - pre, fmt, aq);
  va_end(aq);
  if (n < 0)
    return NULL;
  if (pre + (size_t)n + 1 > LINE_STACK) {
    line = malloc(pre + (size_t)n + 1);
    if (line == NULL)
      return NULL;
    memcpy(line, stack, pre);
    vsnprintf(line + pre, (size_t)n + 1, fmt, ap);
  }
  /* The NUL vsnprintf wrote (or the stripped newline) becomes our newline. */
  *len = pre + sanitize(line + pre, (size_t)n);
  line[(*len)++] = '\n';
  return line;
}

__attribute__((format(printf, 4, 5))) static char *format_linef(char *stack, size_t *len,
                                                                int level, const char *fmt, ...)
{
  va_list ap;
  char *line;

  va_start(ap, fmt);
  line = format_line(stack, level, fmt, ap, len);
  va_end(ap);
  return line;
}

/* ---- output -------------------------------------------------------------------------- */

static void write_all(int fd, const char *p, size_t len)
{
  while (len > 0) {
    ssize_t r = write(fd, p, len);

    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};

        poll(&pfd, 1, 100);
        continue;
      }
      return; /* nowhere left to report it */
    }
    p += r;
    len -= (size_t)r;
  }
}

static void writev_all(int fd, struct iovec *iov, int cnt)
{
  while (cnt > 0) {
    ssize_t r = writev(fd, iov, cnt);

    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};

        poll(&pfd, 1, 100);
        continue;
      }
      return;
    }
    while (cnt > 0 && (size_t)r >= iov->iov_len) {
      r -= (ssize_t)iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt > 0) {
      iov->iov_base = (char *)iov->iov_base + r;
      iov->iov_len -= (size_t)r;
    }
  }
}

static int wake_open(void)
{
#ifdef HAVE_SYS_EVENTFD_H
  int fd = eventfd(0, EFD_CLOEXEC);

  if (fd < 0)
    return -errno;
  lg.wake_rd = lg.wake_wr = fd;
#else
  int p[2];

  if (pipe(p) < 0)
    return -errno;
  fcntl(p[0], F_SETFD, FD_CLOEXEC);
  fcntl(p[1], F_SETFD, FD_CLOEXEC);
  /* A full pipe already means "wake up": never block a producer on it. */
  fcntl(p[1], F_SETFL, O_NONBLOCK);
  lg.wake_rd = p[0];
  lg.wake_wr = p[1];
#endif
  return 0;
}

static void wake_close(void)
{
  if (lg.wake_wr >= 0 && lg.wake_wr != lg.wake_rd)
    close(lg.wake_wr);
  if (lg.wake_rd >= 0)
    close(lg.wake_rd);
  lg.wake_rd = lg.wake_wr = -1;
}

static void wake_post(void)
{
  uint64_t one = 1;
  ssize_t r;

  do
    r = write(lg.wake_wr, &one, lg.wake_wr == lg.wake_rd ? sizeof(one) : 1);
  while (r < 0 && errno == EINTR);
}

static void wake_wait(void)
{
  uint64_t buf[8];
  ssize_t r;

  do
    r = read(lg.wake_rd, buf, lg.wake_wr == lg.wake_rd ? sizeof(buf[0]) : sizeof(buf));
  while (r < 0 && errno == EINTR);
}

/* Producer side of the sleep handshake: wakes the logger if it sleeps, once per sleep. */
static void wake_logger(void)
{
  int one = 1;

  /* Pairs with the fence in logger_sleep: either the logger's second look at the ring
   * (and at `dropped`) sees what we just did, or we see its `sleeping` store here. */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&lg.sleeping, __ATOMIC_RELAXED))
    return;
  /* Only the producer that wins 1 -> 0 writes the eventfd: one wakeup per sleep. */
  if (__atomic_compare_exchange_n(&lg.sleeping, &one, 0, false, __ATOMIC_RELAXED,
                                  __ATOMIC_RELAXED))
    wake_post();
}

static int emit(const char *line, size_t len)
{
  log_msg *m;
  bool ok;

  /* Pairs with the seq_cst store of `running` in fw__log_stop: either the stopper sees us
   * counted and waits before it frees the ring, or we see running == 0. */
  __atomic_fetch_add(&lg.inflight, 1, __ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&lg.running, __ATOMIC_SEQ_CST)) {
    /* Pairs with the acquire load in fw__log_stop's wait. */
    __atomic_fetch_sub(&lg.inflight, 1, __ATOMIC_RELEASE);
    write_all(STDERR_FILENO, line, len);
    return 1;
  }
  m = ec_malloc_size(MEMTYPE_LOG_MSG, sizeof(*m) + len);
  ok = m != NULL;
  if (ok) {
    m->len = len;
    memcpy(m->text, line, len);
    ok = ck_ring_enqueue_mpsc(&lg.ring, lg.buf, m);
    if (!ok)
      ec_free(MEMTYPE_LOG_MSG, m);
  }
  if (!ok)
    /* Relaxed: a statistic; wake_logger's fence publishes it to the sleeping logger. */
    __atomic_fetch_add(&lg.dropped, 1, __ATOMIC_RELAXED);
  wake_logger();
  /* Pairs with the acquire load in fw__log_stop's wait: our ring and eventfd accesses
   * happen before the stopper frees them. */
  __atomic_fetch_sub(&lg.inflight, 1, __ATOMIC_RELEASE);
  return ok;
}

int ec_log_vprintf(int level, unsigned mask, const char *fmt, va_list ap)
{
  char stack[LINE_STACK];
  size_t len;
  char *line;
  int rc;

  if (!ec_log_enabled(level, mask) || fmt == NULL)
    return 0;
  line = format_line(stack, clamp_level(level), fmt, ap, &len);
  if (line == NULL)
    return 0;
  rc = emit(line, len);
  if (line != stack)
    free(line);
  return rc;
}

int ec_debug_printf(int level, int mask, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  ec_log_vprintf(level, (unsigned)mask, fmt, ap);
  va_end(ap);
  return 1;
}

int log1_printf(int level, const char *fmt, ...)
{
  va_list ap;
  int rc;

  va_start(ap, fmt);
  rc = ec_log_vprintf(level, EC_LOG_LOG1, fmt, ap);
  va_end(ap);
  return rc;
}

/* ---- the logger thread --------------------------------------------------------------- */

/* Writes out up to BATCH queued messages; returns how many. */
static int drain(void)
{
  struct iovec iov[BATCH];
  log_msg *m[BATCH];
  int n = 0;

  while (n < BATCH && ck_ring_dequeue_mpsc(&lg.ring, lg.buf, &m[n])) {
    iov[n].iov_base = m[n]->text;
    iov[n].iov_len = m[n]->len;
    n++;
  }
  if (n == 0)
    return 0;
  writev_all(lg.fd, iov, n);
  for (int i = 0; i < n; i++)
    ec_free(MEMTYPE_LOG_MSG, m[i]);
  /* Pairs with the acquire load in ec_log_flush: once a flusher sees the new count, these
   * lines have been handed to the kernel. Only this thread writes `written`. */
  __atomic_store_n(&lg.written, lg.written + (uint32_t)n, __ATOMIC_RELEASE);
  return n;
}

static void report_drops(void)
{
  /* Relaxed: pairs with the relaxed increment in emit; an increment we miss is reported
   * after the wakeup its producer sends. */
  uint64_t d = __atomic_load_n(&lg.dropped, __ATOMIC_RELAXED);
  char stack[LINE_STACK];
  size_t len;
  char *line;

  if (d == lg.reported)
    return;
  line = format_linef(stack, &len, DWARNING, "%llu log messages dropped",
                      (unsigned long long)(d - lg.reported));
  if (line == NULL)
    return;
  write_all(lg.fd, line, len);
  if (line != stack)
    free(line);
  lg.reported = d;
}

static void logger_sleep(void)
{
  int one = 1;

  __atomic_store_n(&lg.sleeping, 1, __ATOMIC_RELAXED);
  /* Pairs with the fence in wake_logger: a producer that enqueued (or dropped) before
   * this fence is seen below; one that does so after it sees sleeping == 1. */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (ck_ring_size(&lg.ring) == 0 &&
      __atomic_load_n(&lg.dropped, __ATOMIC_RELAXED) == lg.reported &&
      /* Pairs with the release store in fw__log_stop, which then posts the eventfd. */
      !__atomic_load_n(&lg.stopping, __ATOMIC_ACQUIRE)) {
    wake_wait();
    return;
  }
  /* Work arrived: take the flag back. If a producer took it first, its eventfd write
   * stays pending and only makes the next wait return at once. */
  __atomic_compare_exchange_n(&lg.sleeping, &one, 0, false, __ATOMIC_RELAXED,
                              __ATOMIC_RELAXED);
}

static void *logger_main(void *arg)
{
  (void)arg;
  fw__log_thread_name("logger");
  for (;;) {
    if (drain() > 0)
      continue;
    report_drops();
    /* Pairs with the release store in fw__log_stop, made after the last producer left:
     * from here on the ring only shrinks. */
    if (__atomic_load_n(&lg.stopping, __ATOMIC_ACQUIRE)) {
      if (drain() == 0)
        break;
      continue;
    }
    logger_sleep();
  }
  report_drops();
  return NULL;
}

/* ---- start, stop, flush -------------------------------------------------------------- */

static int apply_debug_flags(void)
{
  const config_t *cfg = fw__config();
  config_setting_t *group = cfg ? config_lookup(cfg, "debug_flags") : NULL;

  /* debug_flags = { DEBUG = ["LOG1", "FD"]; ... }: adds subsystems to a level's mask. */
  for (int i = 0; group && i < config_setting_length(group); i++) {
    config_setting_t *lv = config_setting_get_elem(group, (unsigned)i);
    const char *lname = config_setting_name(lv);
    int level = ec_log_level_by_name(lname);
    int count = config_setting_type(lv) == CONFIG_TYPE_STRING ? 1 : config_setting_length(lv);
    unsigned mask = 0;

    if (level < 0) {
      ec_debug_printf(DERROR, EC_LOG_CONFIG, "debug_flags: unknown level '%s'",
                      lname ? lname : "");
      return -EINVAL;
    }
    for (int j = 0; j < count; j++) {
      const char *s = config_setting_type(lv) == CONFIG_TYPE_STRING
                          ? config_setting_get_string(lv)
                          : config_setting_get_string_elem(lv, (unsigned)j);
      unsigned m = ec_log_subsystem_by_name(s);

      if (m == 0) {
        ec_debug_printf(DERROR, EC_LOG_CONFIG, "debug_flags.%s: unknown subsystem '%s'",
                        lname, s ? s : "(not a string)");
        return -EINVAL;
      }
      mask |= m;
    }
    ec_log_set_mask(level, ec_log_get_mask(level) | mask);
  }
  return 0;
}

/* Reads the log settings and applies the level masks. 0 or -EINVAL (logged). */
static int apply_config(const char **file, unsigned *qsize)
{
  const char *name = getenv("ECSHARD_LOG_LEVEL");
  const char *origin = "ECSHARD_LOG_LEVEL";
  long long q;
  int level;

  if (name == NULL || name[0] == '\0') {
    name = ec_config_get_string("log.level", "warning");
    origin = "log.level";
  }
  level = ec_log_level_by_name(name);
  if (level < 0) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG,
                    "%s: unknown log level '%s' (debug, info, notice, warning, error, "
                    "critical)",
                    origin, name ? name : "");
    return -EINVAL;
  }
  q = ec_config_get_int("log.queue_size", QUEUE_DEFAULT);
  /* ck_ring needs a power of two; it holds one entry less. */
  if (q < 16 || q > (long long)QUEUE_MAX || (q & (q - 1)) != 0) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG,
                    "log.queue_size: %lld is not a power of two between 16 and %u", q,
                    QUEUE_MAX);
    return -EINVAL;
  }
  *qsize = (unsigned)q;
  *file = ec_config_get_string("log.file", "");
  ec_log_set_level(level);
  return apply_debug_flags();
}

static int open_dest(const char *file)
{
  if (file == NULL || file[0] == '\0') {
    lg.fd = STDERR_FILENO;
    return 0;
  }
  lg.fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (lg.fd < 0) {
    int rc = -errno;

    ec_debug_printf(DERROR, EC_LOG_CONFIG, "log.file: open(%s): %s", file, strerror(-rc));
    return rc;
  }
  return 0;
}

static void release_resources(void)
{
  if (lg.fd >= 0 && lg.fd != STDERR_FILENO)
    close(lg.fd);
  lg.fd = -1;
  wake_close();
  ec_free(MEMTYPE_LOG_MSG, lg.buf);
  lg.buf = NULL;
}

int fw__log_start(void)
{
  const char *file = NULL;
  sigset_t all, old;
  unsigned qsize = 0;
  int rc;

  pthread_mutex_lock(&ctl_lock);
  if (__atomic_load_n(&lg.running, __ATOMIC_RELAXED)) {
    rc = -EALREADY;
    goto out;
  }
  rc = apply_config(&file, &qsize);
  if (rc == 0)
    rc = open_dest(file);
  if (rc == 0)
    rc = wake_open();
  if (rc == 0) {
    lg.buf = ec_malloc_size(MEMTYPE_LOG_MSG, qsize * sizeof(*lg.buf));
    if (lg.buf == NULL)
      rc = -ENOMEM;
  }
  if (rc != 0) {
    release_resources();
    goto out;
  }
  ck_ring_init(&lg.ring, qsize);
  /* Atomic stores: a flush left over from a previous run may still be reading. */
  __atomic_store_n(&lg.written, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&lg.sleeping, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&lg.stopping, 0, __ATOMIC_RELAXED);
  lg.reported = ec_log_dropped();

  /* The logger never handles signals: they belong to the threads that wait for them. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = -pthread_create(&lg.thread, NULL, logger_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    release_resources();
    ec_debug_printf(DERROR, EC_LOG_START, "log: pthread_create: %s", strerror(-rc));
    goto out;
  }
  /* Pairs with the seq_cst load in emit: producers only see a ring that is set up. */
  __atomic_store_n(&lg.running, 1, __ATOMIC_SEQ_CST);
out:
  pthread_mutex_unlock(&ctl_lock);
  return rc;
}

void fw__log_stop(void)
{
  pthread_mutex_lock(&ctl_lock);
  if (!__atomic_load_n(&lg.running, __ATOMIC_RELAXED)) {
    pthread_mutex_unlock(&ctl_lock);
    return;
  }
  /* Pairs with the seq_cst increment of `inflight` in emit and ec_log_flush. */
  __atomic_store_n(&lg.running, 0, __ATOMIC_SEQ_CST);
  /* Pairs with the release decrement in emit: once this reads 0, no producer touches the
   * ring again and everything they pushed is visible. The wait is bounded by one
   * enqueue. */
  while (__atomic_load_n(&lg.inflight, __ATOMIC_ACQUIRE) != 0)
    sched_yield();
  /* Pairs with the acquire loads in logger_main and logger_sleep. */
  __atomic_store_n(&lg.stopping, 1, __ATOMIC_RELEASE);
  wake_post();
  pthread_join(lg.thread, NULL);
  release_resources();
  /* Pairs with the acquire load in ec_log_flush: everything queued has been written. */
  __atomic_fetch_add(&lg.stops, 1, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&ctl_lock);
}

int ec_log_flush(int timeout_ms)
{
  uint64_t deadline = fw__mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
  uint32_t target;
  unsigned stops;

  /* Same handshake as emit: the ring is not freed while we read it. */
  __atomic_fetch_add(&lg.inflight, 1, __ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&lg.running, __ATOMIC_SEQ_CST)) {
    __atomic_fetch_sub(&lg.inflight, 1, __ATOMIC_RELEASE);
    return 0; /* synchronous mode: everything is written already */
  }
  /*
   * ck_ring's p_tail counts the entries published so far, in ring order, so every
   * message whose log call returned before this point lies below it. (A counter of our
   * own, bumped after each enqueue, would not be: a producer preempted between its
   * enqueue and its increment lets later messages be counted first.)
   */
  target = ck_pr_load_uint(&lg.ring.p_tail);
  /* Pairs with the release increment at the end of fw__log_stop. */
  stops = __atomic_load_n(&lg.stops, __ATOMIC_ACQUIRE);
  __atomic_fetch_sub(&lg.inflight, 1, __ATOMIC_RELEASE);

  for (;;) {
    /* Pairs with the release store in drain. Wrapping compare: at most 2^24 in flight. */
    if ((int32_t)(__atomic_load_n(&lg.written, __ATOMIC_ACQUIRE) - target) >= 0)
      return 0;
    /* A stop drains the whole ring before it counts itself. */
    if (__atomic_load_n(&lg.stops, __ATOMIC_ACQUIRE) != stops)
      return 0;
    if (fw__mono_ns() >= deadline)
      return -ETIMEDOUT;
    nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
  }
}
