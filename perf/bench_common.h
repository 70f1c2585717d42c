/*
 * perf/bench_common.h - helpers shared by the mailbox and ping-pong benchmarks and their
 * libuv / libevent peers: option parsing, clocks, a one-shot completion latch, latency
 * percentiles, result lines, and a write(2) counter.
 *
 * Include it from exactly one .c file per executable: it defines write() (see below).
 * Every benchmark prints one result line, human-readable or (--json) one flat JSON object
 * whose keys are the same for ecshard and its peers, so that perf/run-*.sh can put them
 * side by side.
 */
#ifndef EC_PERF_BENCH_COMMON_H
#define EC_PERF_BENCH_COMMON_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- write(2) counter ------------------------------------------------------------------ */

/*
 * libuv and libevent keep no count of the eventfd writes they make to wake a loop, so every
 * benchmark binary interposes write(2): the executable's definition wins over libc's for
 * the calls the libraries make through the PLT (and for libecshard.a, linked statically).
 * An eventfd write is always 8 bytes; nothing else in these programs writes 8 bytes while
 * a measurement runs (results are printed afterwards). For ecshard the count cross-checks
 * ec_shard_stats.wakeups_sent.
 */
static atomic_ulong bench_write8_count;

ssize_t write(int fd, const void *buf, size_t count)
{
  if (count == 8)
    atomic_fetch_add_explicit(&bench_write8_count, 1, memory_order_relaxed);
  return syscall(SYS_write, fd, buf, count);
}

static inline uint64_t bench_write8(void)
{
  return atomic_load_explicit(&bench_write8_count, memory_order_relaxed);
}

/* ---- clocks ---------------------------------------------------------------------------- */

static inline uint64_t bench_now_ns(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of the whole process (all threads), to report CPU cost per message. */
static inline uint64_t bench_cpu_ns(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- options ----------------------------------------------------------------------------- */

typedef struct bench_opts {
  int producers;    /* mailbox: producer threads */
  long messages;    /* mailbox: messages per producer */
  int shards;       /* ecshard: shards to start */
  long rounds;      /* ping-pong: measured round trips */
  long warmup;      /* ping-pong: round trips before measuring */
  const char *mode; /* ecshard: "event" or "run"; peers: queue kind */
  int json;
} bench_opts;

static inline void bench_usage(const char *prog, const char *extra)
{
  fprintf(stderr,
          "usage: %s [--producers P] [--messages M] [--rounds N] [--warmup W] [--shards S]\n"
          "       [--mode MODE] [--json]\n%s",
          prog, extra ? extra : "");
  exit(2);
}

static inline long bench_parse_long(const char *prog, const char *flag, const char *v, long min)
{
  char *end;
  long n;

  errno = 0;
  n = v ? strtol(v, &end, 10) : 0;
  if (v == NULL || errno != 0 || *end != '\0' || n < min) {
    fprintf(stderr, "%s: %s needs an integer >= %ld\n", prog, flag, min);
    exit(2);
  }
  return n;
}

/* Parses the common flags into *o (which holds the defaults on entry). */
static inline void bench_parse(int argc, char **argv, bench_opts *o, const char *extra_usage)
{
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(a, "--json") == 0) {
      o->json = 1;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
      bench_usage(argv[0], extra_usage);
    if (strcmp(a, "--producers") == 0)
      o->producers = (int)bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--messages") == 0)
      o->messages = bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--shards") == 0)
      o->shards = (int)bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--rounds") == 0)
      o->rounds = bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--warmup") == 0)
      o->warmup = bench_parse_long(argv[0], a, v, 0);
    else if (strcmp(a, "--mode") == 0 && v != NULL)
      o->mode = v;
    else
      bench_usage(argv[0], extra_usage);
    i++;
  }
  /* Sequence numbers travel in 40 bits, producer ids in the bits above (mailbox). */
  if (o->messages >= (1L << 40) || o->producers > 4096) {
    fprintf(stderr, "%s: too many messages or producers\n", argv[0]);
    exit(2);
  }
}

/* ---- a one-shot latch: the consumer says "done", the main thread waits ----------------- */

typedef struct bench_latch {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int done;
  uint64_t at_ns; /* when it was opened, by the opener's clock */
} bench_latch;

static inline void bench_latch_init(bench_latch *l)
{
  pthread_mutex_init(&l->lock, NULL);
  pthread_cond_init(&l->cond, NULL);
  l->done = 0;
  l->at_ns = 0;
}

static inline void bench_latch_open(bench_latch *l)
{
  uint64_t t = bench_now_ns();

  pthread_mutex_lock(&l->lock);
  if (!l->done) {
    l->done = 1;
    l->at_ns = t;
    pthread_cond_broadcast(&l->cond);
  }
  pthread_mutex_unlock(&l->lock);
}

/* Waits at most timeout_s seconds; returns 1 if opened, 0 on timeout. */
static inline int bench_latch_wait(bench_latch *l, int timeout_s)
{
  struct timespec dl;
  int ok;

  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += timeout_s;
  pthread_mutex_lock(&l->lock);
  while (!l->done)
    if (pthread_cond_timedwait(&l->cond, &l->lock, &dl) == ETIMEDOUT)
      break;
  ok = l->done;
  pthread_mutex_unlock(&l->lock);
  return ok;
}

static inline void bench_latch_destroy(bench_latch *l)
{
  pthread_cond_destroy(&l->cond);
  pthread_mutex_destroy(&l->lock);
}

/* ---- latency percentiles ----------------------------------------------------------------- */

static inline int bench_cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

  return x < y ? -1 : x > y;
}

typedef struct bench_lat {
  double p50_us, p99_us, p999_us, max_us, mean_us;
} bench_lat;

/* Sorts v in place and summarises it (nearest-rank percentiles). */
static inline bench_lat bench_lat_summary(uint64_t *v, size_t n)
{
  bench_lat r = {0, 0, 0, 0, 0};
  double sum = 0;

  if (n == 0)
    return r;
  qsort(v, n, sizeof(*v), bench_cmp_u64);
  for (size_t i = 0; i < n; i++)
    sum += (double)v[i];
  r.p50_us = (double)v[(n - 1) * 50 / 100] / 1e3;
  r.p99_us = (double)v[(n - 1) * 99 / 100] / 1e3;
  r.p999_us = (double)v[(n - 1) * 999 / 1000] / 1e3;
  r.max_us = (double)v[n - 1] / 1e3;
  r.mean_us = sum / (double)n / 1e3;
  return r;
}

/* ---- result lines -------------------------------------------------------------------------- */

/*
 * A result is a list of fields printed either as `impl key=value ...` or as one JSON
 * object. Field kinds: 's' string, 'u' unsigned, 'b' boolean, 'd' double (printed with 3
 * decimals when below 100, as integers above: msgs/s need no decimals).
 */
typedef struct bench_field {
  const char *key;
  char kind;
  const char *s;
  uint64_t u;
  double d;
} bench_field;

#define BF_S(k, v) ((bench_field){.key = (k), .kind = 's', .s = (v)})
#define BF_U(k, v) ((bench_field){.key = (k), .kind = 'u', .u = (uint64_t)(v)})
#define BF_D(k, v) ((bench_field){.key = (k), .kind = 'd', .d = (double)(v)})
#define BF_B(k, v) ((bench_field){.key = (k), .kind = 'b', .u = (v) ? 1 : 0})

static inline void bench_print(int json, const bench_field *f, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    const char *sep = i == 0 ? (json ? "{" : "") : (json ? "," : " ");

    if (json)
      printf("%s\"%s\":", sep, f[i].key);
    else if (i > 0)
      printf("%s%s=", sep, f[i].key);
    switch (f[i].kind) {
    case 's':
      printf(json ? "\"%s\"" : "%s", f[i].s);
      break;
    case 'u':
      printf("%llu", (unsigned long long)f[i].u);
      break;
    case 'b':
      printf("%s", f[i].u ? "true" : "false");
      break;
    default:
      printf(f[i].d >= 100 || f[i].d <= -100 ? "%.0f" : "%.3f", f[i].d);
      break;
    }
  }
  printf(json ? "}\n" : "\n");
  fflush(stdout);
}

#define BENCH_PRINT(json, ...)                                                                     \
  do {                                                                                             \
    const bench_field bench_f_[] = {__VA_ARGS__};                                                  \
    bench_print((json), bench_f_, sizeof(bench_f_) / sizeof(bench_f_[0]));                         \
  } while (0)

/* ---- payload encoding (mailbox) ------------------------------------------------------------ */

/* A message is (producer id, sequence 1..M) packed in 64 bits: no allocation of our own. */
#define BENCH_SEQ_BITS 40
#define BENCH_SEQ_MASK ((UINT64_C(1) << BENCH_SEQ_BITS) - 1)

static inline uint64_t bench_pack(unsigned id, uint64_t seq)
{
  return ((uint64_t)id << BENCH_SEQ_BITS) | seq;
}

/*
 * Per-producer order check on the consumer side: seq must be exactly last + 1. A smaller
 * value is a duplicate or a reordering, a larger one a gap (lost or reordered message).
 * Counts violations; `last` advances to max(last, seq) so one bad message is counted
 * once, not once per message after it.
 */
static inline void bench_check_seq(uint64_t *last, uint64_t seq, uint64_t *violations)
{
  if (seq != *last + 1)
    (*violations)++;
  if (seq > *last)
    *last = seq;
}

#endif /* EC_PERF_BENCH_COMMON_H */
