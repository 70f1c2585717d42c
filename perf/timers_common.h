/*
 * perf/timers_common.h - what bench_timers.c and its libuv / libevent peers share: option
 * parsing, the clock, a seeded PRNG (so that every implementation draws the same deadlines
 * and the same re-armed timers), lateness percentiles and the result line.
 *
 * Every program prints one result line per run: human-readable, or with --json one flat
 * JSON object whose keys are the same for ecshard and its peers, so that
 * perf/run-timers.sh can put them side by side. Header-only: include it from one .c file.
 */
#ifndef EC_PERF_TIMERS_COMMON_H
#define EC_PERF_TIMERS_COMMON_H

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

/* The N pending timers: deadlines uniform in [+1 h, +2 h], so none fires during a run. */
#define TB_PENDING_MIN_US  3600000000ull
#define TB_PENDING_SPAN_US 3600000000ull
/* Re-arm: every re-armed timer moves to now + 2 h, later than any initial deadline (the
 * idle-timeout pattern: one fixed timeout pushed back on every request). */
#define TB_REARM_SEC 7200
/* Lateness: timers due in [+1 ms, +50 ms], K of them in flight: every callback schedules
 * the next one, so scheduling is spread over the run as in a server, not one burst. */
#define TB_LATE_MIN_US  1000u
#define TB_LATE_SPAN_US 49000u

enum tb_mode { TB_ADDCANCEL, TB_ADDFIRE, TB_LATENESS };

typedef struct tb_opts {
  long pending;  /* N: timers pending in the loop throughout */
  long ops;      /* M: measured operations (addcancel, re-arm, addfire) */
  long warmup;   /* unmeasured operations before each measurement */
  long batch;    /* addfire: timers added per batch */
  long timers;   /* lateness: timers scheduled 1..50 ms ahead, in all */
  long inflight; /* lateness: timers pending at once (each callback schedules the next) */
  int ring;      /* peers, addcancel: handles cycled through (initialised once) */
  int mode;
  int json;
  int precise;   /* libevent: EVENT_BASE_FLAG_PRECISE_TIMER */
  int baseline;  /* bench_timers, lateness: clock_nanosleep instead of timers */
  long slack_ns; /* >= 0: PR_SET_TIMERSLACK of the loop thread; -1: the default (50 us) */
} tb_opts;

static inline const char *tb_mode_name(int mode)
{
  return mode == TB_ADDCANCEL ? "addcancel" : mode == TB_ADDFIRE ? "addfire" : "lateness";
}

static inline void tb_usage(const char *prog)
{
  fprintf(stderr,
          "usage: %s --pending N --ops M [--mode addcancel|addfire|lateness] [--json]\n"
          "       [--warmup W] [--batch B] [--timers L] [--inflight K] [--ring R]\n"
          "       [--timerslack NS] [--precise] [--baseline]\n"
          "  addcancel  M x (add a timer 1-2 h ahead + cancel it), then M x re-arm of a\n"
          "             random pending timer to now + 2 h; ns per operation\n"
          "  addfire    M timers due now, added in batches of B (default 1000), run until\n"
          "             all fired; ns per timer (add + fire)\n"
          "  lateness   L timers (default 2000) due 1..50 ms ahead, K (default 100) at a\n"
          "             time: each callback schedules the next; fire time - asked deadline\n"
          "  --timerslack NS  prctl(PR_SET_TIMERSLACK) on the loop thread (default: untouched)\n"
          "  --precise  libevent only: EVENT_BASE_FLAG_PRECISE_TIMER\n"
          "  --baseline bench_timers, lateness: how late clock_nanosleep wakes on this machine\n",
          prog);
  exit(2);
}

static inline long tb_long(const char *prog, const char *flag, const char *v, long min)
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

static inline void tb_parse(int argc, char **argv, tb_opts *o)
{
  *o = (tb_opts){.pending = 10000,
                 .ops = 1000000,
                 .warmup = -1,
                 .batch = 1000,
                 .timers = 2000,
                 .inflight = 100,
                 .ring = 64,
                 .slack_ns = -1,
                 .mode = TB_ADDCANCEL};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(a, "--json") == 0) {
      o->json = 1;
      continue;
    }
    if (strcmp(a, "--precise") == 0) {
      o->precise = 1;
      continue;
    }
    if (strcmp(a, "--baseline") == 0) {
      o->baseline = 1;
      continue;
    }
    if (strcmp(a, "--pending") == 0)
      o->pending = tb_long(argv[0], a, v, 0);
    else if (strcmp(a, "--ops") == 0)
      o->ops = tb_long(argv[0], a, v, 1);
    else if (strcmp(a, "--warmup") == 0)
      o->warmup = tb_long(argv[0], a, v, 0);
    else if (strcmp(a, "--batch") == 0)
      o->batch = tb_long(argv[0], a, v, 1);
    else if (strcmp(a, "--timers") == 0)
      o->timers = tb_long(argv[0], a, v, 1);
    else if (strcmp(a, "--inflight") == 0)
      o->inflight = tb_long(argv[0], a, v, 1);
    else if (strcmp(a, "--timerslack") == 0)
      o->slack_ns = tb_long(argv[0], a, v, 1);
    else if (strcmp(a, "--ring") == 0)
      o->ring = (int)tb_long(argv[0], a, v, 1);
    else if (strcmp(a, "--mode") == 0 && v != NULL) {
      if (strcmp(v, "addcancel") == 0)
        o->mode = TB_ADDCANCEL;
      else if (strcmp(v, "addfire") == 0)
        o->mode = TB_ADDFIRE;
      else if (strcmp(v, "lateness") == 0)
        o->mode = TB_LATENESS;
      else
        tb_usage(argv[0]);
    } else {
      tb_usage(argv[0]);
    }
    i++;
  }
  if (o->inflight > o->timers)
    o->inflight = o->timers;
  if (o->warmup < 0)
    o->warmup = o->ops < 100000 ? o->ops / 10 : 10000;
}

/* Applies --timerslack to the calling thread (the loop's). */
static inline void tb_timerslack(const tb_opts *o)
{
  if (o->slack_ns >= 0 && prctl(PR_SET_TIMERSLACK, (unsigned long)o->slack_ns, 0, 0, 0) != 0)
    perror("prctl(PR_SET_TIMERSLACK)");
}

static inline uint64_t tb_now_ns(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: a few cycles per draw, the same sequence in every program. */
typedef struct tb_rng {
  uint64_t s;
} tb_rng;

static inline uint64_t tb_next(tb_rng *r)
{
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 0x2545f4914f6cdd1dull;
}

/* Uniform in [0, n) (the modulo bias is irrelevant here). */
static inline uint64_t tb_below(tb_rng *r, uint64_t n)
{
  return (tb_next(r) >> 11) % n;
}

/* Offset of a pending timer, in microseconds: [+1 h, +2 h]. */
static inline uint64_t tb_pending_us(tb_rng *r)
{
  return TB_PENDING_MIN_US + tb_below(r, TB_PENDING_SPAN_US + 1);
}

/* ---- lateness --------------------------------------------------------------------------- */

/* Offset of a lateness timer, in microseconds: [+1 ms, +50 ms]. */
static inline uint32_t tb_late_us(tb_rng *r)
{
  return TB_LATE_MIN_US + (uint32_t)tb_below(r, TB_LATE_SPAN_US + 1);
}

static inline int tb_cmp_i64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

  return (x > y) - (x < y);
}

typedef struct tb_late {
  double p50_us, p99_us, max_us, min_us;
  long early; /* fired before the deadline the caller asked for */
} tb_late;

/* Summarises n signed lateness values (ns; negative = early). Sorts the array. */
static inline tb_late tb_late_summary(int64_t *late_ns, long n)
{
  tb_late r = {0, 0, 0, 0, 0};

  if (n <= 0)
    return r;
  qsort(late_ns, (size_t)n, sizeof(*late_ns), tb_cmp_i64);
  for (long i = 0; i < n && late_ns[i] < 0; i++)
    r.early++;
  /* Nearest rank. */
  r.p50_us = (double)late_ns[(n - 1) * 50 / 100] / 1e3;
  r.p99_us = (double)late_ns[(n - 1) * 99 / 100] / 1e3;
  r.max_us = (double)late_ns[n - 1] / 1e3;
  r.min_us = (double)late_ns[0] / 1e3;
  return r;
}

/* ---- result lines ------------------------------------------------------------------------ */

typedef struct tb_result {
  const char *impl;
  double addcancel_ns; /* addcancel mode */
  double rearm_ns;     /* addcancel mode */
  double addfire_ns;   /* addfire mode */
  tb_late late;        /* lateness mode */
  long fired;          /* lateness: callbacks seen */
  int ok;              /* every check passed */
  const char *note;    /* why not ok, or NULL */
} tb_result;

static inline void tb_print(const tb_opts *o, const tb_result *r)
{
  if (o->json) {
    printf("{\"bench\":\"timers\",\"impl\":\"%s\",\"mode\":\"%s\",\"pending\":%ld,\"ops\":%ld",
           r->impl, tb_mode_name(o->mode), o->pending, o->ops);
    if (o->mode == TB_ADDCANCEL)
      printf(",\"addcancel_ns\":%.1f,\"rearm_ns\":%.1f", r->addcancel_ns, r->rearm_ns);
    else if (o->mode == TB_ADDFIRE)
      printf(",\"batch\":%ld,\"addfire_ns\":%.1f", o->batch, r->addfire_ns);
    else
      printf(",\"timers\":%ld,\"inflight\":%ld,\"fired\":%ld,\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_"
             "us\":%.1f,"
             "\"min_us\":%.1f,\"early\":%ld",
             o->timers, o->inflight, r->fired, r->late.p50_us, r->late.p99_us, r->late.max_us,
             r->late.min_us, r->late.early);
    printf(",\"ok\":%s", r->ok ? "true" : "false");
    if (r->note)
      printf(",\"note\":\"%s\"", r->note);
    printf("}\n");
  } else {
    printf("%-16s %-9s pending=%-8ld ", r->impl, tb_mode_name(o->mode), o->pending);
    if (o->mode == TB_ADDCANCEL)
      printf("ops=%ld  add+cancel %.1f ns/op  re-arm %.1f ns/op", o->ops, r->addcancel_ns,
             r->rearm_ns);
    else if (o->mode == TB_ADDFIRE)
      printf("ops=%ld batch=%ld  add+fire %.1f ns/op", o->ops, o->batch, r->addfire_ns);
    else
      printf("timers=%ld fired=%ld  lateness p50 %.1f us  p99 %.1f us  max %.1f us  min %.1f us"
             "  early %ld",
             o->timers, r->fired, r->late.p50_us, r->late.p99_us, r->late.max_us, r->late.min_us,
             r->late.early);
    printf("%s%s%s\n", r->ok ? "" : "  CHECK FAILED", r->note ? ": " : "", r->note ? r->note : "");
  }
  fflush(stdout);
}

#endif /* EC_PERF_TIMERS_COMMON_H */
