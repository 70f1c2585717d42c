/*
 * framework/log.c - leveled, per-subsystem logging (ec_log.h) with an asynchronous writer.
 *
 * A call is filtered first (one relaxed load of its level's mask), then formatted on the
 * calling thread. While the logger thread runs (fw__log_start .. fw__log_stop) the line is
 * copied into a MEMTYPE_LOG_MSG block and pushed onto a lock-free ck_stack, bounded by a
 * counter of queued messages; when the bound is reached the line is dropped and counted,
 * so a burst of logging never makes a shard wait for the disk. The logger takes the whole
 * stack with one exchange, restores posting order, writes batches with writev and sleeps
 * on an eventfd when idle; producers wake it with at most one write per sleep (the
 * `sleeping` handshake of the shard mailbox). Outside that window each line is a single
 * write(2) to stderr.
 *
 * Why not ck_ring's MPSC enqueue: after winning its slot a producer spins until every
 * earlier producer has published. A producer preempted in that window stalls all the
 * others, and with more logging threads than CPUs the spinners keep getting preempted
 * while holding slots themselves: a convoy that was measured at one message per timeslice
 * (minutes for a 200k-message burst on 2 CPUs). A Treiber push never waits for another
 * producer.
 */
#include "ec_config.h"
#include "ec_framework.h"
#include "ec_log.h"
#include "ec_malloc.h"
#include "framework/atomic.h"
#include "framework/internal.h"

#include <ck_stack.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <syslog.h>
#ifdef HAVE_SYS_EVENTFD_H
#include <sys/eventfd.h>
#endif

#define CACHELINE       64
#define LINE_STACK      1024 /* lines up to this size are formatted without a heap allocation */
#define IOV_BATCH       256  /* lines per writev */
#define THREAD_NAME_MAX 32
#define QUEUE_DEFAULT   8192
#define QUEUE_MIN       16
#define QUEUE_MAX       (1u << 24)

typedef struct log_msg {
  ck_stack_entry_t entry; /* first: the stack hands entries back */
  size_t len;             /* bytes of text */
  int marker;             /* a flush marker: no text; see ec_log_flush */
  int done;               /* markers: set once everything pushed before it is written */
  int refs;               /* markers: one for the flusher, one for the logger */
  int level;              /* for syslog */
  unsigned skip;          /* bytes of timestamp before the rest (syslog has its own) */
  char text[];
} log_msg;

_Static_assert(offsetof(log_msg, entry) == 0, "a stack entry is its message");

/* Default: every subsystem at DWARNING and above, nothing below. */
static unsigned level_masks[EC_LOG_LEVELS] = {0, 0, 0, EC_LOG_ALL, EC_LOG_ALL, EC_LOG_ALL};

static const char *const level_names[EC_LOG_LEVELS] = {"debug",   "info",  "notice",
                                                       "warning", "error", "critical"};

static const struct {
  const char *name;
  unsigned mask;
} subsystems[] = {
    {"ERROR", EC_LOG_ERROR}, {"TIME", EC_LOG_TIME}, {"FD", EC_LOG_FD},
    {"SMTP", EC_LOG_SMTP},   {"LOG1", EC_LOG_LOG1}, {"DNS", EC_LOG_DNS},
    {"NET", EC_LOG_NET},     {"SIG", EC_LOG_SIG},   {"MEM", EC_LOG_MEM},
    {"SSL", EC_LOG_SSL},     {"MOD", EC_LOG_MOD},   {"START", EC_LOG_START},
    {"SHARD", EC_LOG_SHARD}, {"POOL", EC_LOG_POOL}, {"CONFIG", EC_LOG_CONFIG},
    {"HTTP", EC_LOG_HTTP},   {"ALL", EC_LOG_ALL},
};

/* Serialises fw__log_start and fw__log_stop. */
static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
  /* Written by every producer. */
  _Alignas(CACHELINE) unsigned inflight; /* producers between their check of `running` and
                                            the end of their push */
  unsigned queued;                       /* pushed and not yet written: the bound */
  uint64_t dropped;
  _Alignas(CACHELINE) ck_stack_t stack;
  /* Written by the logger thread. */
  _Alignas(CACHELINE) int sleeping; /* 1: the logger is blocked, or about to block */
  uint64_t reported;                /* drops already reported (logger only) */
  /* Set by start and stop, read by producers only after they saw running == 1. */
  _Alignas(CACHELINE) int running; /* producers push while 1 */
  int stopping;                    /* the logger drains the stack and exits */
  unsigned capacity;
  int fd;               /* destination (logger thread while running) */
  int syslog;           /* 1: lines go to syslog(3) instead of fd (logger thread) */
  int wake_rd, wake_wr; /* eventfd (both the same) or pipe */
  pthread_t thread;
  int reopen; /* fw__log_reopen asked the logger to reopen its destination (atomic) */
} lg = {.stack = CK_STACK_INITIALIZER, .fd = -1, .wake_rd = -1, .wake_wr = -1};

/* The destination the configuration asks for; the logger thread applies it when it
 * (re)opens. Guarded by dest_lock. */
static pthread_mutex_t dest_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  int target; /* DEST_* */
  char path[4096];
  char ident[64];
  int facility;
} dest;

enum { DEST_STDERR, DEST_FILE, DEST_SYSLOG };

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

int ec_log_set_subsystem_level(unsigned mask, int level)
{
  if (mask == 0 || level < DDEBUG || level > DCRITICAL + 1)
    return -EINVAL;
  /* Each level's mask gains the subsystems at `level` and above and loses them below;
   * DCRITICAL + 1 silences them. Concurrent changes of other subsystems are not lost. */
  for (int l = DDEBUG; l <= DCRITICAL; l++) {
    if (l >= level)
      __atomic_fetch_or(&level_masks[l], mask, __ATOMIC_RELAXED);
    else
      __atomic_fetch_and(&level_masks[l], ~mask, __ATOMIC_RELAXED);
  }
  return 0;
}

int ec_log_subsystem_level(unsigned mask)
{
  for (int l = DDEBUG; l <= DCRITICAL; l++)
    if (ec_log_get_mask(l) & mask)
      return l;
  return DCRITICAL + 1;
}

const char *ec_log_level_name(int level)
{
  return level >= DDEBUG && level <= DCRITICAL ? level_names[level]
         : level == DCRITICAL + 1              ? "off"
                                               : NULL;
}

void fw__log_describe(char *buf, size_t len)
{
  size_t n = 0;

  buf[0] = '\0';
  /* Every named subsystem but ALL, with the lowest level it is enabled at. */
  for (size_t i = 0; i + 1 < sizeof(subsystems) / sizeof(subsystems[0]) && n < len; i++) {
    int l = ec_log_subsystem_level(subsystems[i].mask);

    n += (size_t)snprintf(buf + n, len - n, "%s%s=%s", i ? " " : "", subsystems[i].name,
                          ec_log_level_name(l));
  }
}

int ec_log_level_by_name(const char *name)
{
  if (name == NULL)
    return -1;
  for (int l = DDEBUG; l <= DCRITICAL; l++)
    if (strcasecmp(name, level_names[l]) == 0)
      return l;
  if (strcasecmp(name, "off") == 0)
    return DCRITICAL + 1;
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
__attribute__((format(printf, 3, 0))) static char *
format_line(char *stack, int level, const char *fmt, va_list ap, size_t *len)
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

__attribute__((format(printf, 4, 5))) static char *format_linef(char *stack, size_t *len, int level,
                                                                const char *fmt, ...)
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

/* A full fence for the sleep handshake. GCC warns that TSan does not model fences
 * (-Wtsan); TSan needs none here, since the data hand-off is annotated and the fence only
 * orders the wakeup, so the warning is silenced in that build alone. */
static inline void full_fence(void)
{
#if defined(__SANITIZE_THREAD__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
#if defined(__SANITIZE_THREAD__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

/* Producer side of the sleep handshake: wakes the logger if it sleeps, once per sleep. */
static void wake_logger(void)
{
  int one = 1;

  /* Pairs with the fence in logger_sleep: either the logger's second look at the stack
   * (and at `dropped`) sees what we just did, or we see its `sleeping` store here. */
  full_fence();
  if (!__atomic_load_n(&lg.sleeping, __ATOMIC_RELAXED))
    return;
  /* Only the producer that wins 1 -> 0 writes the eventfd: one wakeup per sleep. */
  if (__atomic_compare_exchange_n(&lg.sleeping, &one, 0, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    wake_post();
}

static int emit(const char *line, size_t len, int level)
{
  log_msg *m = NULL;

  /* Pairs with the seq_cst store of `running` in fw__log_stop: either the stopper sees us
   * counted and waits for us before it closes the eventfd, or we see running == 0. */
  __atomic_fetch_add(&lg.inflight, 1, __ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&lg.running, __ATOMIC_SEQ_CST)) {
    /* Pairs with the acquire load in fw__log_stop's wait. */
    __atomic_fetch_sub(&lg.inflight, 1, __ATOMIC_RELEASE);
    write_all(STDERR_FILENO, line, len);
    return 1;
  }
  /* Relaxed: the count is only a bound (pairs with the decrement in write_batch); the
   * push below orders the message itself. */
  if (__atomic_fetch_add(&lg.queued, 1, __ATOMIC_RELAXED) < lg.capacity)
    m = ec_malloc_size(MEMTYPE_LOG_MSG, sizeof(*m) + len);
  if (m != NULL) {
    const char *sp = memchr(line, ' ', len);

    m->len = len;
    m->marker = 0;
    m->level = level;
    m->skip = sp ? (unsigned)(sp + 1 - line) : 0;
    memcpy(m->text, line, len);
    /* The CAS inside the push publishes the message; TSan cannot see ck's ordering, so
     * tell it (pairs with the acquire in drain). */
    ec__tsan_release(&lg.stack);
    ck_stack_push_upmc(&lg.stack, &m->entry);
  } else {
    /* Relaxed: statistics; wake_logger's fence publishes the drop to a sleeping logger. */
    __atomic_fetch_sub(&lg.queued, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&lg.dropped, 1, __ATOMIC_RELAXED);
  }
  wake_logger();
  /* Pairs with the acquire load in fw__log_stop's wait: our push and eventfd write happen
   * before the stopper drains and closes. */
  __atomic_fetch_sub(&lg.inflight, 1, __ATOMIC_RELEASE);
  return m != NULL;
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
  rc = emit(line, len, clamp_level(level));
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

static void dest_reopen(void);

static void marker_unref(log_msg *m)
{
  /* Acq_rel: whichever of flusher and logger lets go last frees the marker after the
   * other's last access. */
  if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0)
    ec_free(MEMTYPE_LOG_MSG, m);
}

/* Writes the pending lines and frees them. */
static void write_batch(struct iovec *iov, log_msg **msgs, int *n)
{
  if (*n == 0)
    return;
  if (lg.syslog) {
    static const int prio[EC_LOG_LEVELS] = {LOG_DEBUG,   LOG_INFO, LOG_NOTICE,
                                            LOG_WARNING, LOG_ERR,  LOG_CRIT};

    for (int i = 0; i < *n; i++) {
      log_msg *m = msgs[i];

      syslog(prio[m->level], "%.*s", (int)(m->len - m->skip - 1), m->text + m->skip);
    }
  } else {
    writev_all(lg.fd, iov, *n);
  }
  for (int i = 0; i < *n; i++)
    ec_free(MEMTYPE_LOG_MSG, msgs[i]);
  /* Release: pairs with the acquire loads in ec_log_flush, which take a count that
   * dropped to 0 as "written"; emit's relaxed increment only needs the bound. */
  __atomic_fetch_sub(&lg.queued, (unsigned)*n, __ATOMIC_RELEASE);
  *n = 0;
}

/* Writes out everything queued so far, in posting order; returns how many entries. */
static int drain(void)
{
  ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&lg.stack), *fifo = NULL, *next;
  struct iovec iov[IOV_BATCH];
  log_msg *msgs[IOV_BATCH];
  int n = 0, total = 0;

  if (e == NULL)
    return 0;
  /* Pairs with the release before each push in emit and ec_log_flush. */
  ec__tsan_acquire(&lg.stack);
  /* The stack hands entries back newest first. Each producer's own entries are in its
   * posting order, so reversing restores that order for every producer. */
  for (; e != NULL; e = next) {
    next = e->next;
    e->next = fifo;
    fifo = e;
  }
  for (e = fifo; e != NULL; e = next) {
    log_msg *m = (log_msg *)e;

    next = e->next;
    total++;
    if (m->marker) {
      write_batch(iov, msgs, &n);
      /* Pairs with the acquire load in ec_log_flush: all lines before it are written. */
      __atomic_store_n(&m->done, 1, __ATOMIC_RELEASE);
      marker_unref(m);
      continue;
    }
    iov[n].iov_base = m->text;
    iov[n].iov_len = m->len;
    msgs[n++] = m;
    if (n == IOV_BATCH)
      write_batch(iov, msgs, &n);
  }
  write_batch(iov, msgs, &n);
  return total;
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
  if (lg.syslog)
    syslog(LOG_WARNING, "%llu log messages dropped", (unsigned long long)(d - lg.reported));
  else
    write_all(lg.fd, line, len);
  if (line != stack)
    free(line);
  lg.reported = d;
}

static void logger_sleep(void)
{
  int one = 1;

  __atomic_store_n(&lg.sleeping, 1, __ATOMIC_RELAXED);
  /* Pairs with the fence in wake_logger: a producer that pushed (or dropped) before this
   * fence is seen below; one that does so after it sees sleeping == 1. */
  full_fence();
  if (__atomic_load_n(&lg.stack.head, __ATOMIC_RELAXED) == NULL &&
      __atomic_load_n(&lg.dropped, __ATOMIC_RELAXED) == lg.reported &&
      /* Relaxed: fw__log_reopen sets it before its wake_logger fence. */
      !__atomic_load_n(&lg.reopen, __ATOMIC_RELAXED) &&
      /* Pairs with the release store in fw__log_stop, which then posts the eventfd. */
      !__atomic_load_n(&lg.stopping, __ATOMIC_ACQUIRE)) {
    wake_wait();
    return;
  }
  /* Work arrived: take the flag back. If a producer took it first, its eventfd write
   * stays pending and only makes the next wait return at once. */
  __atomic_compare_exchange_n(&lg.sleeping, &one, 0, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

static void *logger_main(void *arg)
{
  (void)arg;
  fw__log_thread_name("logger");
  pthread_setname_np(pthread_self(), "ecshard/log");
  for (;;) {
    if (drain() > 0)
      continue;
    /* Relaxed: the flag carries no data; dest is read under dest_lock. */
    if (__atomic_exchange_n(&lg.reopen, 0, __ATOMIC_RELAXED))
      dest_reopen();
    report_drops();
    /* Pairs with the release store in fw__log_stop, made after the last producer left:
     * what the stack holds now is all there will be. */
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
      ec_debug_printf(DERROR, EC_LOG_CONFIG, "debug_flags: unknown level '%s'", lname ? lname : "");
      return -EINVAL;
    }
    for (int j = 0; j < count; j++) {
      const char *s = config_setting_type(lv) == CONFIG_TYPE_STRING
                          ? config_setting_get_string(lv)
                          : config_setting_get_string_elem(lv, (unsigned)j);
      unsigned m = ec_log_subsystem_by_name(s);

      if (m == 0) {
        ec_debug_printf(DERROR, EC_LOG_CONFIG, "debug_flags.%s: unknown subsystem '%s'", lname,
                        s ? s : "(not a string)");
        return -EINVAL;
      }
      mask |= m;
    }
    ec_log_set_mask(level, ec_log_get_mask(level) | mask);
  }
  return 0;
}

static int facility_by_name(const char *f)
{
  static const struct {
    const char *name;
    int fac;
  } tab[] = {{"daemon", LOG_DAEMON}, {"user", LOG_USER},     {"mail", LOG_MAIL},
             {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
             {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
             {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7}};

  for (size_t i = 0; f != NULL && i < sizeof(tab) / sizeof(tab[0]); i++)
    if (strcmp(f, tab[i].name) == 0)
      return tab[i].fac;
  return LOG_DAEMON;
}

/* The destination settings into `dest`. */
static void read_dest(void)
{
  const char *target = ec_config_get_string("log.target", "auto");
  const char *file = ec_config_get_string("log.file", "");

  pthread_mutex_lock(&dest_lock);
  if (strcmp(target, "syslog") == 0)
    dest.target = DEST_SYSLOG;
  else if (strcmp(target, "stderr") == 0 || file[0] == '\0')
    dest.target = DEST_STDERR;
  else
    dest.target = DEST_FILE;
  snprintf(dest.path, sizeof(dest.path), "%s", file);
  snprintf(dest.ident, sizeof(dest.ident), "%s",
           ec_config_get_string("log.syslog_ident", "ecshard"));
  dest.facility = facility_by_name(ec_config_get_string("log.syslog_facility", "daemon"));
  pthread_mutex_unlock(&dest_lock);
}

/* Reads the log settings and applies the level masks. 0 or -EINVAL (logged). */
static int apply_config(unsigned *capacity)
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
  /* The configuration schema asks for a power of two, as a ring would; the stack does not
   * care, but the bounds keep a typo from disabling the bound. */
  if (q < QUEUE_MIN || q > (long long)QUEUE_MAX) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "log.queue_size: %lld is not between %u and %u", q,
                    QUEUE_MIN, QUEUE_MAX);
    return -EINVAL;
  }
  if (capacity != NULL)
    *capacity = (unsigned)q;
  if (strcmp(ec_config_get_string("log.target", "auto"), "file") == 0 &&
      ec_config_get_string("log.file", "")[0] == '\0') {
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "log.target = \"file\" needs log.file");
    return -EINVAL;
  }
  read_dest();
  ec_log_set_level(level);
  return apply_debug_flags();
}

/* Opens what `dest` names: sets *fd (or *use_syslog). 0 or -errno (logged). */
static int open_dest(int *fd, int *use_syslog)
{
  int rc = 0;

  pthread_mutex_lock(&dest_lock); /* a reload may be changing it */
  *use_syslog = 0;
  *fd = STDERR_FILENO;
  if (dest.target == DEST_SYSLOG) {
    /* openlog keeps the ident pointer: dest.ident lives as long as the process. */
    closelog();
    openlog(dest.ident, LOG_PID | LOG_NDELAY, dest.facility);
    *use_syslog = 1;
  } else if (dest.target == DEST_FILE) {
    *fd = open(dest.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0) {
      rc = -errno;
      ec_debug_printf(DERROR, EC_LOG_CONFIG, "log.file: open(%s): %s", dest.path, strerror(-rc));
    }
  }
  pthread_mutex_unlock(&dest_lock);
  return rc;
}

/* Logger thread: reopens the destination (SIGUSR1 after a log rotation, or a reload).
 * When the new one cannot be opened the old one stays, and says why. */
static void dest_reopen(void)
{
  int fd, use_syslog, old = lg.fd;
  int rc = open_dest(&fd, &use_syslog);

  if (rc < 0) {
    char stack[LINE_STACK];
    size_t len;
    /* open_dest logged the path; this line reaches the destination still in use. */
    char *line = format_linef(stack, &len, DERROR,
                              "log: cannot reopen the log: %s; still writing here", strerror(-rc));

    if (line != NULL && !lg.syslog)
      write_all(lg.fd, line, len);
    if (line != NULL && line != stack)
      free(line);
    return;
  }
  if (lg.syslog && !use_syslog)
    closelog();
  lg.fd = fd;
  lg.syslog = use_syslog;
  if (old >= 0 && old != STDERR_FILENO && old != fd)
    close(old);
}

static void release_resources(void)
{
  if (lg.fd >= 0 && lg.fd != STDERR_FILENO)
    close(lg.fd);
  if (lg.syslog)
    closelog();
  lg.syslog = 0;
  lg.fd = -1;
  wake_close();
}

int fw__log_start(void)
{
  unsigned capacity = 0;
  sigset_t all, old;
  int rc;

  pthread_mutex_lock(&ctl_lock);
  if (__atomic_load_n(&lg.running, __ATOMIC_RELAXED)) {
    rc = -EALREADY;
    goto out;
  }
  rc = apply_config(&capacity);
  if (rc == 0)
    rc = open_dest(&lg.fd, &lg.syslog);
  if (rc == 0)
    rc = wake_open();
  if (rc != 0) {
    release_resources();
    goto out;
  }
  lg.capacity = capacity;
  /* Atomic: a flush may still be polling from a previous run. */
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
  /* Pairs with the seq_cst load in emit: a producer that sees 1 also sees the capacity,
   * the destination and the eventfd. */
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
  /* Pairs with the release decrement in emit: once this reads 0 no producer touches the
   * stack or the eventfd again, and everything pushed is visible. The wait is bounded by
   * one push. */
  while (__atomic_load_n(&lg.inflight, __ATOMIC_ACQUIRE) != 0)
    sched_yield();
  /* Pairs with the acquire loads in logger_main and logger_sleep. */
  __atomic_store_n(&lg.stopping, 1, __ATOMIC_RELEASE);
  wake_post();
  pthread_join(lg.thread, NULL);
  release_resources();
  pthread_mutex_unlock(&ctl_lock);
}

void fw__log_reopen(void)
{
  /* Same handshake as emit: the eventfd stays open while we may write it. */
  __atomic_fetch_add(&lg.inflight, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&lg.running, __ATOMIC_SEQ_CST)) {
    /* Relaxed: wake_logger's fence orders it before the logger's second look. */
    __atomic_store_n(&lg.reopen, 1, __ATOMIC_RELAXED);
    wake_logger();
  }
  /* Pairs with the acquire load in fw__log_stop's wait. */
  __atomic_fetch_sub(&lg.inflight, 1, __ATOMIC_RELEASE);
}

int fw__log_reconfigure(void)
{
  int rc;

  pthread_mutex_lock(&ctl_lock);
  rc = apply_config(NULL);
  pthread_mutex_unlock(&ctl_lock);
  if (rc == 0)
    fw__log_reopen();
  return rc;
}

/* Out of memory for a marker: wait until the queue has been empty once, which also means
 * that everything queued before the call has been written, but may not happen under
 * sustained logging. */
static int flush_until_empty(uint64_t deadline)
{
  for (;;) {
    /* Pairs with the release decrement in write_batch, made after write(2) returned. */
    if (__atomic_load_n(&lg.queued, __ATOMIC_ACQUIRE) == 0)
      return 0;
    if (fw__mono_ns() >= deadline)
      return -ETIMEDOUT;
    nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
  }
}

int ec_log_flush(int timeout_ms)
{
  uint64_t deadline = fw__mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
  log_msg *mk = NULL;
  int rc;

  /* Same handshake as emit: the eventfd stays open while we may write it. */
  __atomic_fetch_add(&lg.inflight, 1, __ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&lg.running, __ATOMIC_SEQ_CST)) {
    __atomic_fetch_sub(&lg.inflight, 1, __ATOMIC_RELEASE);
    return 0; /* synchronous mode: everything is written already */
  }
  /* Nothing queued: every earlier message has been written (the logger decrements after
   * writing). Pairs with the release decrement in write_batch. */
  if (__atomic_load_n(&lg.queued, __ATOMIC_ACQUIRE) != 0) {
    /*
     * A marker pushed behind everything queued so far: the logger writes in posting
     * order, so once it reaches the marker all earlier lines are out. A counter of
     * pushed lines would not do: a producer preempted between its push and its
     * increment lets later lines be counted first. The marker is outside the bound, so
     * the push cannot fail.
     */
    mk = ec_malloc_size(MEMTYPE_LOG_MSG, sizeof(*mk));
    if (mk != NULL) {
      mk->len = 0;
      mk->marker = 1;
      mk->done = 0;
      mk->refs = 2;
      /* Pairs with the acquire in drain, as in emit. */
      ec__tsan_release(&lg.stack);
      ck_stack_push_upmc(&lg.stack, &mk->entry);
      wake_logger();
    }
  }
  /* Pairs with the acquire load in fw__log_stop's wait. */
  __atomic_fetch_sub(&lg.inflight, 1, __ATOMIC_RELEASE);
  if (mk == NULL)
    return flush_until_empty(deadline);
  for (;;) {
    /* Pairs with the release store in drain. A stop drains the marker too. */
    if (__atomic_load_n(&mk->done, __ATOMIC_ACQUIRE)) {
      rc = 0;
      break;
    }
    if (fw__mono_ns() >= deadline) {
      rc = -ETIMEDOUT;
      break;
    }
    nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
  }
  marker_unref(mk);
  return rc;
}
