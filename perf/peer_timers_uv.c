/*
 * perf/peer_timers_uv.c - bench_timers for libuv: the same modes on one uv_loop_t.
 *
 *   peer_timers_uv --pending N --ops M [--mode addcancel|addfire|lateness] [--json]
 *                  [--warmup W] [--batch B] [--timers L] [--inflight K] [--ring R]
 *
 * As libuv users write it: handles are pre-allocated and uv_timer_init'ed once, then
 * started and stopped as often as needed (no allocation per timer, unlike ecshard's
 * build_event). The N pending handles get random 1..2 h timeouts. All measurements run in
 * a callback of the loop (a 0 ms "kick" timer), as timers are normally handled:
 *
 *   addcancel  M x uv_timer_start (1..2 h) + uv_timer_stop on a handle that is not pending
 *              (cycling through R = 64 handles initialised once), then M x uv_timer_start
 *              of a random pending handle with a 2 h timeout: libuv's way to move a timer
 *              (it removes the handle from the heap and inserts it again).
 *   addfire    M x uv_timer_start(0 ms) in batches of B handles; the last callback of a
 *              batch starts the next. libuv 1.44 runs a timer started with 0 ms from a
 *              timer callback in the same uv__run_timers pass, so batches after the first
 *              need no loop iteration.
 *   lateness   L timers started 1..50 ms ahead (whole milliseconds: libuv's resolution),
 *              K at a time: each callback starts the next. Each callback compares
 *              uv_hrtime() with uv_hrtime() at the start + the timeout. Two libuv properties show
 * here: timeouts count from uv_now(), the loop time cached at the start of the iteration (stale by
 * the time spent in callbacks since), and that time is truncated to the millisecond, so a timer may
 * fire up to ~1 ms before hrtime + timeout
 *              ("early" in the output is not an error for libuv); the wait itself is an
 *              epoll_wait with a millisecond timeout.
 *
 * Handles are not closed at exit (closing 1M handles is not what is measured).
 */
#include <uv.h>

#include "timers_common.h"

static struct {
  tb_opts o;
  tb_rng rng;
  uv_loop_t loop;
  uv_timer_t kick;
  uv_timer_t *pending; /* N */
  uv_timer_t *ring;    /* addcancel: R */
  uv_timer_t *batch;   /* addfire: B */
  uv_timer_t *late_h;  /* lateness: L */
  long failures;
  long unexpected;
  double addcancel_ns, rearm_ns;
  long target, added, fired, measured;
  uint64_t t0, t1;
  uint64_t *intended;
  int64_t *late;
  long scheduled, nlate;
} U;

static void never_cb(uv_timer_t *h)
{
  (void)h;
  U.unexpected++;
}

static uv_timer_t *alloc_timers(long n)
{
  uv_timer_t *t = calloc((size_t)n + 1, sizeof(*t));

  if (t == NULL) {
    fprintf(stderr, "peer_timers_uv: out of memory\n");
    exit(1);
  }
  for (long i = 0; i < n; i++)
    uv_timer_init(&U.loop, &t[i]);
  return t;
}

static void setup(void)
{
  U.pending = alloc_timers(U.o.pending);
  for (long i = 0; i < U.o.pending; i++)
    if (uv_timer_start(&U.pending[i], never_cb, tb_pending_us(&U.rng) / 1000, 0) != 0)
      U.failures++;
}

/* ---- addcancel ---------------------------------------------------------------------------- */

static void add_cancel(long m)
{
  for (long i = 0; i < m; i++) {
    uv_timer_t *h = &U.ring[i % U.o.ring];

    if (uv_timer_start(h, never_cb, tb_pending_us(&U.rng) / 1000, 0) != 0)
      U.failures++;
    uv_timer_stop(h);
  }
}

static void rearm(long m)
{
  for (long i = 0; i < m; i++) {
    uv_timer_t *h = &U.pending[tb_below(&U.rng, (uint64_t)U.o.pending)];

    if (uv_timer_start(h, never_cb, (uint64_t)TB_REARM_SEC * 1000, 0) != 0)
      U.failures++;
  }
}

static void addcancel_run(void)
{
  uint64_t t0, t1;

  add_cancel(U.o.warmup);
  t0 = tb_now_ns();
  add_cancel(U.o.ops);
  t1 = tb_now_ns();
  U.addcancel_ns = (double)(t1 - t0) / (double)U.o.ops;
  if (U.o.pending > 0) {
    rearm(U.o.warmup);
    t0 = tb_now_ns();
    rearm(U.o.ops);
    t1 = tb_now_ns();
    U.rearm_ns = (double)(t1 - t0) / (double)U.o.ops;
  }
  uv_stop(&U.loop);
}

/* ---- addfire ------------------------------------------------------------------------------ */

static void fire_cb(uv_timer_t *h);

static void add_batch(void)
{
  long n = U.target - U.added < U.o.batch ? U.target - U.added : U.o.batch;

  for (long i = 0; i < n; i++)
    if (uv_timer_start(&U.batch[i], fire_cb, 0, 0) != 0)
      U.failures++;
  U.added += n;
}

static void phase_start(long target)
{
  U.target = target;
  U.added = U.fired = 0;
  U.t0 = tb_now_ns();
  add_batch();
}

static void fire_cb(uv_timer_t *h)
{
  (void)h;
  if (++U.fired != U.added)
    return;
  if (U.added < U.target) {
    add_batch();
  } else if (U.measured == 0) {
    /* Warm-up over: the measured phase starts from here. */
    U.measured = 1;
    phase_start(U.o.ops);
  } else {
    U.t1 = tb_now_ns();
    uv_stop(&U.loop);
  }
}

static void addfire_run(void)
{
  if (U.o.warmup > 0) {
    phase_start(U.o.warmup);
  } else {
    U.measured = 1;
    phase_start(U.o.ops);
  }
}

/* ---- lateness ----------------------------------------------------------------------------- */

static void late_cb(uv_timer_t *h);

/* Starts lateness timer number U.scheduled, 1..50 whole milliseconds ahead. */
static void late_next(void)
{
  long i = U.scheduled++;
  uint64_t off_ms = 1 + tb_below(&U.rng, 50);

  U.intended[i] = uv_hrtime() + off_ms * 1000000u;
  if (uv_timer_start(&U.late_h[i], late_cb, off_ms, 0) != 0)
    U.failures++;
}

static void late_cb(uv_timer_t *h)
{
  uint64_t t = uv_hrtime();
  long i = (long)(h - U.late_h);

  U.late[U.nlate++] = (int64_t)(t - U.intended[i]);
  if (U.scheduled < U.o.timers)
    late_next();
  if (U.nlate == U.o.timers)
    uv_stop(&U.loop);
}

static void lateness_run(void)
{
  while (U.scheduled < U.o.inflight)
    late_next();
}

static void kick_cb(uv_timer_t *h)
{
  (void)h;
  if (U.o.mode == TB_ADDCANCEL)
    addcancel_run();
  else if (U.o.mode == TB_ADDFIRE)
    addfire_run();
  else
    lateness_run();
}

int main(int argc, char **argv)
{
  tb_result r = {.impl = "libuv", .ok = 1};

  tb_parse(argc, argv, &U.o);
  tb_timerslack(&U.o);
  U.rng.s = 0x9e3779b97f4a7c15ull;
  if (uv_loop_init(&U.loop) != 0)
    return 1;
  setup();
  /* Everything is allocated (and touched) before the loop runs: page faults in the
   * measured callback would be charged to the timers. */
  if (U.o.mode == TB_ADDCANCEL) {
    U.ring = alloc_timers(U.o.ring);
  } else if (U.o.mode == TB_ADDFIRE) {
    U.batch = alloc_timers(U.o.batch);
  } else {
    U.late_h = alloc_timers(U.o.timers);
    U.intended = calloc((size_t)U.o.timers, sizeof(*U.intended));
    U.late = calloc((size_t)U.o.timers, sizeof(*U.late));
    if (U.intended == NULL || U.late == NULL)
      return 1;
    memset(U.intended, 0xff, sizeof(*U.intended) * (size_t)U.o.timers);
    memset(U.late, 0, sizeof(*U.late) * (size_t)U.o.timers);
  }
  uv_timer_init(&U.loop, &U.kick);
  uv_timer_start(&U.kick, kick_cb, 0, 0);
  uv_run(&U.loop, UV_RUN_DEFAULT);

  if (U.o.mode == TB_ADDCANCEL) {
    r.addcancel_ns = U.addcancel_ns;
    r.rearm_ns = U.rearm_ns;
  } else if (U.o.mode == TB_ADDFIRE) {
    r.addfire_ns = U.fired > 0 ? (double)(U.t1 - U.t0) / (double)U.fired : 0;
    if (U.fired != U.o.ops) {
      r.ok = 0;
      r.note = "not every timer fired";
    }
  } else {
    r.fired = U.nlate;
    r.late = tb_late_summary(U.late, U.nlate);
    if (r.fired != U.o.timers) {
      r.ok = 0;
      r.note = "not every timer fired";
    }
  }
  if (U.failures > 0) {
    r.ok = 0;
    r.note = "uv_timer_start failed";
  } else if (U.unexpected > 0) {
    r.ok = 0;
    r.note = "a pending timer fired";
  }
  tb_print(&U.o, &r);
  return r.ok ? 0 : 1;
}
