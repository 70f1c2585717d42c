/*
 * perf/peer_timers_libevent.c - bench_timers for libevent 2.1: the same modes on one
 * event_base.
 *
 *   peer_timers_libevent --pending N --ops M [--mode addcancel|addfire|lateness] [--json]
 *                        [--warmup W] [--batch B] [--timers L] [--inflight K] [--ring R]
 *                        [--precise]
 *
 * Events are pre-allocated and evtimer_assign'ed once, then added and deleted as often as
 * needed. libevent keeps timers in a binary min-heap of event pointers (its "common
 * timeouts" queues, an opt-in O(1) path for many timers of one duration, are not used).
 * No evthread_use_pthreads(): the base takes no locks, libevent's fastest configuration.
 * All measurements run in a callback of the loop (event_base_once, 0 s), as timers are
 * normally handled; there libevent reuses the time cached at the start of the iteration
 * instead of reading the clock on every evtimer_add.
 *
 *   addcancel  M x evtimer_add (1..2 h) + evtimer_del on an event that is not pending
 *              (cycling through R = 64 events), then M x evtimer_add of a random pending
 *              event with 2 h (libevent adjusts it in place in the heap).
 *   addfire    M x evtimer_add(0 s) in batches of B events; the last callback of a batch
 *              adds the next one, which fires in the next loop iteration.
 *   lateness   L timers added 1..50 ms ahead (microsecond offsets, struct timeval), K at
 *              a time: each callback adds the next. Each callback compares CLOCK_MONOTONIC
 *              with the clock read at the add + the offset. By default libevent reads
 * CLOCK_MONOTONIC_COARSE (tick resolution) and waits with epoll_wait's millisecond timeout;
 * --precise sets EVENT_BASE_FLAG_PRECISE_TIMER (CLOCK_MONOTONIC and a timerfd). Deadlines count
 * from the cached time, so "early" is possible and not an error here.
 *
 * Events are not deleted at exit (the measurement is over).
 */
#include <event2/event.h>
#include <event2/event_struct.h>

#include "timers_common.h"

static struct {
  tb_opts o;
  tb_rng rng;
  struct event_base *base;
  struct event *pending; /* N */
  struct event *ring;    /* addcancel: R */
  struct event *batch;   /* addfire: B */
  struct event *late_ev; /* lateness: L */
  long failures;
  long unexpected;
  double addcancel_ns, rearm_ns;
  long target, added, fired, measured;
  uint64_t t0, t1;
  uint64_t *intended;
  int64_t *late;
  long scheduled, nlate;
} L;

static void never_cb(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  (void)arg;
  L.unexpected++;
}

static struct event *alloc_events(long n, event_callback_fn cb)
{
  struct event *ev = calloc((size_t)n + 1, sizeof(*ev));

  if (ev == NULL) {
    fprintf(stderr, "peer_timers_libevent: out of memory\n");
    exit(1);
  }
  for (long i = 0; i < n; i++)
    evtimer_assign(&ev[i], L.base, cb, &ev[i]);
  return ev;
}

static struct timeval tv_us(uint64_t us)
{
  return (struct timeval){(time_t)(us / 1000000u), (suseconds_t)(us % 1000000u)};
}

static void setup(void)
{
  L.pending = alloc_events(L.o.pending, never_cb);
  for (long i = 0; i < L.o.pending; i++) {
    struct timeval tv = tv_us(tb_pending_us(&L.rng));

    if (evtimer_add(&L.pending[i], &tv) != 0)
      L.failures++;
  }
}

/* ---- addcancel ---------------------------------------------------------------------------- */

static void add_cancel(long m)
{
  for (long i = 0; i < m; i++) {
    struct event *ev = &L.ring[i % L.o.ring];
    struct timeval tv = tv_us(tb_pending_us(&L.rng));

    if (evtimer_add(ev, &tv) != 0 || evtimer_del(ev) != 0)
      L.failures++;
  }
}

static void rearm(long m)
{
  const struct timeval later = {TB_REARM_SEC, 0};

  for (long i = 0; i < m; i++) {
    struct event *ev = &L.pending[tb_below(&L.rng, (uint64_t)L.o.pending)];

    if (evtimer_add(ev, &later) != 0)
      L.failures++;
  }
}

static void addcancel_run(void)
{
  uint64_t t0, t1;

  add_cancel(L.o.warmup);
  t0 = tb_now_ns();
  add_cancel(L.o.ops);
  t1 = tb_now_ns();
  L.addcancel_ns = (double)(t1 - t0) / (double)L.o.ops;
  if (L.o.pending > 0) {
    rearm(L.o.warmup);
    t0 = tb_now_ns();
    rearm(L.o.ops);
    t1 = tb_now_ns();
    L.rearm_ns = (double)(t1 - t0) / (double)L.o.ops;
  }
  event_base_loopbreak(L.base);
}

/* ---- addfire ------------------------------------------------------------------------------ */

static void add_batch(void)
{
  const struct timeval zero = {0, 0};
  long n = L.target - L.added < L.o.batch ? L.target - L.added : L.o.batch;

  for (long i = 0; i < n; i++)
    if (evtimer_add(&L.batch[i], &zero) != 0)
      L.failures++;
  L.added += n;
}

static void phase_start(long target)
{
  L.target = target;
  L.added = L.fired = 0;
  L.t0 = tb_now_ns();
  add_batch();
}

static void fire_cb(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  (void)arg;
  if (++L.fired != L.added)
    return;
  if (L.added < L.target) {
    add_batch();
  } else if (L.measured == 0) {
    /* Warm-up over: the measured phase starts from here. */
    L.measured = 1;
    phase_start(L.o.ops);
  } else {
    L.t1 = tb_now_ns();
    event_base_loopbreak(L.base);
  }
}

static void addfire_run(void)
{
  if (L.o.warmup > 0) {
    phase_start(L.o.warmup);
  } else {
    L.measured = 1;
    phase_start(L.o.ops);
  }
}

/* ---- lateness ----------------------------------------------------------------------------- */

/* Adds lateness timer number L.scheduled, 1..50 ms ahead. */
static void late_next(void)
{
  long i = L.scheduled++;
  uint64_t off_us = tb_late_us(&L.rng);
  struct timeval tv = tv_us(off_us);

  L.intended[i] = tb_now_ns() + off_us * 1000u;
  if (evtimer_add(&L.late_ev[i], &tv) != 0)
    L.failures++;
}

static void late_cb(evutil_socket_t fd, short what, void *arg)
{
  uint64_t t = tb_now_ns();
  long i = (long)((struct event *)arg - L.late_ev);

  (void)fd;
  (void)what;
  L.late[L.nlate++] = (int64_t)(t - L.intended[i]);
  if (L.scheduled < L.o.timers)
    late_next();
  if (L.nlate == L.o.timers)
    event_base_loopbreak(L.base);
}

static void lateness_run(void)
{
  while (L.scheduled < L.o.inflight)
    late_next();
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  (void)arg;
  if (L.o.mode == TB_ADDCANCEL)
    addcancel_run();
  else if (L.o.mode == TB_ADDFIRE)
    addfire_run();
  else
    lateness_run();
}

int main(int argc, char **argv)
{
  const struct timeval zero = {0, 0};
  tb_result r = {.ok = 1};
  struct event_config *cfg;

  tb_parse(argc, argv, &L.o);
  tb_timerslack(&L.o);
  r.impl = L.o.precise ? "libevent-precise" : "libevent";
  L.rng.s = 0x9e3779b97f4a7c15ull;
  cfg = event_config_new();
  if (cfg == NULL)
    return 1;
  if (L.o.precise)
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
  L.base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  if (L.base == NULL)
    return 1;
  setup();
  /* Everything is allocated (and touched) before the loop runs: page faults in the
   * measured callback would be charged to the timers. */
  if (L.o.mode == TB_ADDCANCEL) {
    L.ring = alloc_events(L.o.ring, never_cb);
  } else if (L.o.mode == TB_ADDFIRE) {
    L.batch = alloc_events(L.o.batch, fire_cb);
  } else {
    L.late_ev = alloc_events(L.o.timers, late_cb);
    L.intended = calloc((size_t)L.o.timers, sizeof(*L.intended));
    L.late = calloc((size_t)L.o.timers, sizeof(*L.late));
    if (L.intended == NULL || L.late == NULL)
      return 1;
    memset(L.intended, 0xff, sizeof(*L.intended) * (size_t)L.o.timers);
    memset(L.late, 0, sizeof(*L.late) * (size_t)L.o.timers);
  }
  if (event_base_once(L.base, -1, EV_TIMEOUT, kick_cb, NULL, &zero) != 0)
    return 1;
  event_base_dispatch(L.base);

  if (L.o.mode == TB_ADDCANCEL) {
    r.addcancel_ns = L.addcancel_ns;
    r.rearm_ns = L.rearm_ns;
  } else if (L.o.mode == TB_ADDFIRE) {
    r.addfire_ns = L.fired > 0 ? (double)(L.t1 - L.t0) / (double)L.fired : 0;
    if (L.fired != L.o.ops) {
      r.ok = 0;
      r.note = "not every timer fired";
    }
  } else {
    r.fired = L.nlate;
    r.late = tb_late_summary(L.late, L.nlate);
    if (r.fired != L.o.timers) {
      r.ok = 0;
      r.note = "not every timer fired";
    }
  }
  if (L.failures > 0) {
    r.ok = 0;
    r.note = "evtimer_add/evtimer_del failed";
  } else if (L.unexpected > 0) {
    r.ok = 0;
    r.note = "a pending timer fired";
  }
  tb_print(&L.o, &r);
  return r.ok ? 0 : 1;
}
