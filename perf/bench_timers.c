/*
 * perf/bench_timers.c - cost of ecshard's timed Events with N timers pending.
 *
 *   bench_timers --pending N --ops M [--mode addcancel|addfire|lateness] [--json]
 *                [--warmup W] [--batch B] [--timers L] [--inflight K] [--timerslack NS]
 *   bench_timers --mode lateness --baseline [--timers L] [--timerslack NS]
 *
 * One shard. Timers are owner-thread objects, so everything below runs on the shard thread,
 * inside ec_shard_call() closures or timer callbacks; the main thread only waits. First N
 * timers are scheduled 1 to 2 hours ahead (none fires during the run), then:
 *
 *   addcancel  M x build_event_from_now_f(1..2 h) + schedule_event + clear_timed_event: the
 *              user-visible cost of a timer that is cancelled, allocation and free included.
 *              Then M x ec_timed_event_move() of a random pending timer to now + 2 h (the
 *              idle-timeout pattern). Each loop is timed with CLOCK_MONOTONIC: ns/op.
 *   addfire    M timers due now (build_event_from_now_f(0)), B per batch; the last callback
 *              of a batch adds the next one. Time from the first add to the last callback,
 *              per timer: build + schedule + the loop iteration that fires it + dispatch +
 *              free.
 *   lateness   L timers due 1..50 ms ahead (uniform, microsecond offsets), K at a time
 *              among the N pending ones: the first K are scheduled together, then every
 *              callback schedules the next, so scheduling is spread over the run (about
 *              L / K x 25 ms). Each callback records CLOCK_MONOTONIC minus the deadline
 *              asked for (a clock read just before build_event + the offset). Reports
 *              p50/p99/max in microseconds and the number of early firings, which must be
 *              0 (checked against the Event's own deadline too).
 *
 * BENCH_TIMER_CLOCK=kernel in the environment sets event_loop.timer_clock (auto, tsc or
 * kernel): "kernel" shows what the TSC-extrapolated clock saves.
 *
 * --baseline measures the machine instead: how late clock_nanosleep wakes a plain thread
 * (impl "nanosleep"). --timerslack sets PR_SET_TIMERSLACK on the shard thread.
 *
 * Each measurement is preceded by W unmeasured operations. The shard's counters
 * (ec_shard_stats) cross-check that no pending timer fired and that the heap holds N timers
 * at the end. The exit status is 1 if a check failed.
 */
#include "ec_framework.h"
#include "event.h"
#include "scheduler.h"

#include "timers_common.h"

#include <pthread.h>
#include <unistd.h>

typedef struct late_slot {
  uint64_t intended; /* CLOCK_MONOTONIC ns the caller asked for */
} late_slot;

static struct {
  tb_opts o;
  tb_rng rng; /* the shard thread (the main thread for --baseline) */
  Event **pending;
  long failures;   /* API calls that did not do what they should */
  long unexpected; /* callbacks of timers that must not fire */

  /* addcancel */
  double addcancel_ns, rearm_ns;

  /* addfire */
  long target, added, fired;
  uint64_t t0, t1;

  /* lateness */
  late_slot *slots;
  int64_t *late;
  long scheduled, nlate;
  long early_own; /* fired before the Event's own deadline (_priv.deadline_ns) */

  /* Signalled by the shard when an asynchronous phase is over. */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int done;
} B = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void finish(void)
{
  pthread_mutex_lock(&B.lock);
  B.done = 1;
  pthread_cond_signal(&B.cond);
  pthread_mutex_unlock(&B.lock);
}

static void wait_finished(void)
{
  pthread_mutex_lock(&B.lock);
  while (!B.done)
    pthread_cond_wait(&B.cond, &B.lock);
  B.done = 0;
  pthread_mutex_unlock(&B.lock);
}

static float pending_offset(void)
{
  return (float)((double)tb_pending_us(&B.rng) * 1e-6);
}

static int never_cb(Event *e, int eventtype, void *closure, struct timeval *now)
{
  (void)e;
  (void)eventtype;
  (void)closure;
  (void)now;
  B.unexpected++;
  return 0;
}

/* ---- setup -------------------------------------------------------------------------------- */

static void setup(void *arg)
{
  (void)arg;
  tb_timerslack(&B.o);
  for (long i = 0; i < B.o.pending; i++) {
    Event *e = build_event_from_now_f(pending_offset(), -1, never_cb, NULL);

    if (e == NULL || ec_schedule_event(e) < 0) {
      B.failures++;
      event_free(e);
      e = NULL;
    }
    B.pending[i] = e;
  }
}

/* ---- addcancel ---------------------------------------------------------------------------- */

static void add_cancel(long m)
{
  for (long i = 0; i < m; i++) {
    Event *e = build_event_from_now_f(pending_offset(), -1, never_cb, NULL);

    if (e == NULL) {
      B.failures++;
      continue;
    }
    schedule_event(e);
    if (!clear_timed_event(e)) { /* 0: it was not pending, so scheduling failed */
      B.failures++;
      event_free(e);
    }
  }
}

static void rearm(long m)
{
  const struct timeval later = {TB_REARM_SEC, 0};

  for (long i = 0; i < m; i++) {
    Event *e = B.pending[tb_below(&B.rng, (uint64_t)B.o.pending)];

    if (e == NULL || ec_timed_event_move(e, later, E_FROM_NOW) != 0)
      B.failures++;
  }
}

static void addcancel_run(void *arg)
{
  uint64_t t0, t1;

  (void)arg;
  add_cancel(B.o.warmup);
  t0 = tb_now_ns();
  add_cancel(B.o.ops);
  t1 = tb_now_ns();
  B.addcancel_ns = (double)(t1 - t0) / (double)B.o.ops;
  if (B.o.pending == 0)
    return;
  rearm(B.o.warmup);
  t0 = tb_now_ns();
  rearm(B.o.ops);
  t1 = tb_now_ns();
  B.rearm_ns = (double)(t1 - t0) / (double)B.o.ops;
}

/* ---- addfire ------------------------------------------------------------------------------ */

static int fire_cb(Event *e, int eventtype, void *closure, struct timeval *now);

static void add_batch(void)
{
  long n = B.target - B.added < B.o.batch ? B.target - B.added : B.o.batch;

  for (long i = 0; i < n; i++) {
    Event *e = build_event_from_now_f(0.0f, -1, fire_cb, NULL);

    if (e == NULL || ec_schedule_event(e) < 0) {
      B.failures++;
      B.target--; /* keeps the end condition reachable */
      event_free(e);
      continue;
    }
    B.added++;
  }
}

static int fire_cb(Event *e, int eventtype, void *closure, struct timeval *now)
{
  (void)e;
  (void)eventtype;
  (void)closure;
  (void)now;
  if (++B.fired != B.added)
    return 0;
  while (B.fired == B.added && B.added < B.target) /* loops only if a whole batch failed */
    add_batch();
  if (B.fired == B.added) {
    B.t1 = tb_now_ns();
    finish();
  }
  return 0; /* the scheduler frees the Event */
}

static void addfire_start(void *arg)
{
  B.target = *(const long *)arg;
  B.added = B.fired = 0;
  B.t0 = tb_now_ns();
  while (B.added == 0 && B.added < B.target)
    add_batch();
  if (B.added == 0) /* nothing to do, or every add failed */
    finish();
}

/* ---- lateness ----------------------------------------------------------------------------- */

static int late_cb(Event *e, int eventtype, void *closure, struct timeval *now);

/* Schedules lateness timer number B.scheduled, 1..50 ms ahead. */
static void late_next(void)
{
  late_slot *slot = &B.slots[B.scheduled++];
  uint32_t off_us = tb_late_us(&B.rng);
  struct timeval when = {0, (suseconds_t)off_us};
  Event *e;

  /* The deadline asked for: the clock read here, before build_event reads its own. */
  slot->intended = tb_now_ns() + (uint64_t)off_us * 1000u;
  e = build_event_from_now(when, -1, late_cb, slot);
  if (e == NULL || ec_schedule_event(e) < 0) {
    B.failures++;
    B.target--; /* keeps the end condition reachable */
    event_free(e);
  }
}

static int late_cb(Event *e, int eventtype, void *closure, struct timeval *now)
{
  uint64_t t = tb_now_ns();
  const late_slot *slot = closure;

  (void)eventtype;
  (void)now;
  if (t < e->_priv.deadline_ns)
    B.early_own++;
  B.late[B.nlate++] = (int64_t)(t - slot->intended);
  if (B.scheduled < B.o.timers)
    late_next();
  if (B.nlate == B.target)
    finish();
  return 0;
}

static void lateness_start(void *arg)
{
  (void)arg;
  B.target = B.o.timers;
  while (B.scheduled < B.o.inflight)
    late_next();
  if (B.target == 0)
    finish();
}

/* ---- baseline ---------------------------------------------------------------------------- */

/* How late this machine wakes a thread that sleeps until an absolute CLOCK_MONOTONIC time
 * (min(L, 500) sleeps of 0.5 to 1.5 ms, on the main thread, no framework): the floor
 * under every loop's lateness, timer slack and scheduler delays included. */
static void baseline(tb_result *r)
{
  long count = B.o.timers < 500 ? B.o.timers : 500;

  tb_timerslack(&B.o);
  for (long i = 0; i < count; i++) {
    uint64_t target = tb_now_ns() + 500000u + tb_below(&B.rng, 1000001);
    struct timespec ts = {(time_t)(target / 1000000000u), (long)(target % 1000000000u)};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
      ;
    B.late[i] = (int64_t)(tb_now_ns() - target);
  }
  *r = (tb_result){.impl = "nanosleep", .ok = 1, .fired = count};
  r->late = tb_late_summary(B.late, count);
}

/* ---- checks ------------------------------------------------------------------------------- */

static void noop(void *arg)
{
  (void)arg;
}

/* The shard publishes timers_pending once per iteration, after firing timers: a few
 * round trips through its mailbox make it iterate past our last closure. */
static int expect_counters(uint64_t fired, uint64_t pending, ec_shard_stats *st)
{
  for (int i = 0; i < 50; i++) {
    ec_shard_call(0, noop, NULL);
    if (ec_shard_stats_get(0, st) == 0 && st->timers_fired == fired &&
        st->timers_pending == pending)
      return 1;
    usleep(1000);
  }
  return 0;
}

int main(int argc, char **argv)
{
  ec_framework_options fo = {.shards = 1};
  static char clock_set[64];
  static const char *set[2];
  tb_result r = {.impl = "ecshard", .ok = 1};
  ec_shard_stats st = {0};
  uint64_t want_fired = 0;
  int rc;

  tb_parse(argc, argv, &B.o);
  B.rng.s = 0x9e3779b97f4a7c15ull;
  if (B.o.mode == TB_LATENESS && B.o.baseline) {
    B.late = calloc((size_t)B.o.timers, sizeof(*B.late));
    if (B.late == NULL)
      return 1;
    baseline(&r);
    tb_print(&B.o, &r);
    free(B.late);
    return 0;
  }
  B.pending = calloc((size_t)B.o.pending + 1, sizeof(*B.pending));
  if (B.pending == NULL)
    return 1;
  if (getenv("BENCH_TIMER_CLOCK") != NULL) { /* auto | tsc | kernel: the timers' clock */
    snprintf(clock_set, sizeof(clock_set), "event_loop.timer_clock=%s",
             getenv("BENCH_TIMER_CLOCK"));
    set[0] = clock_set;
    fo.set = set;
  }
  rc = ec_framework_init(&fo);
  if (rc == 0)
    rc = ec_framework_start();
  if (rc < 0) {
    fprintf(stderr, "bench_timers: ec_framework_init/start: %s\n", strerror(-rc));
    return 1;
  }
  ec_shard_call(0, setup, NULL);

  if (B.o.mode == TB_ADDCANCEL) {
    ec_shard_call(0, addcancel_run, NULL);
    r.addcancel_ns = B.addcancel_ns;
    r.rearm_ns = B.rearm_ns;
  } else if (B.o.mode == TB_ADDFIRE) {
    ec_shard_call(0, addfire_start, &B.o.warmup);
    wait_finished(); /* finish() runs once per phase, even an empty one */
    want_fired = (uint64_t)B.fired;
    ec_shard_call(0, addfire_start, &B.o.ops);
    wait_finished();
    want_fired += (uint64_t)B.fired;
    r.addfire_ns = B.fired > 0 ? (double)(B.t1 - B.t0) / (double)B.fired : 0;
  } else {
    B.slots = calloc((size_t)B.o.timers, sizeof(*B.slots));
    B.late = calloc((size_t)B.o.timers, sizeof(*B.late));
    if (B.slots == NULL || B.late == NULL)
      return 1;
    /* Touched now: no page faults while the timers are scheduled and fire. */
    memset(B.slots, 0xff, sizeof(*B.slots) * (size_t)B.o.timers);
    memset(B.late, 0, sizeof(*B.late) * (size_t)B.o.timers);
    ec_shard_call(0, lateness_start, NULL);
    wait_finished();
    want_fired = (uint64_t)B.nlate;
    r.fired = B.nlate;
    r.late = tb_late_summary(B.late, B.nlate);
  }

  if (B.failures > 0) {
    r.ok = 0;
    r.note = "API calls failed";
  } else if (!expect_counters(want_fired, (uint64_t)B.o.pending, &st)) {
    r.ok = 0;
    r.note = "shard counters: wrong timers_fired or timers_pending";
  } else if (B.unexpected > 0) {
    r.ok = 0;
    r.note = "a pending timer fired";
  } else if (r.late.early > 0 || B.early_own > 0) {
    r.ok = 0;
    r.note = "a timer fired early";
  } else if (B.o.mode == TB_LATENESS && r.fired != B.o.timers) {
    r.ok = 0;
    r.note = "not every timer fired";
  }
  tb_print(&B.o, &r);
  if (!r.ok)
    fprintf(stderr,
            "bench_timers: failures %ld, unexpected fires %ld, early %ld/%ld, counters fired "
            "%" PRIu64 " (want %" PRIu64 ") pending %" PRIu64 " (want %ld)\n",
            B.failures, B.unexpected, r.late.early, B.early_own, st.timers_fired, want_fired,
            st.timers_pending, B.o.pending);
  ec_framework_stop();
  ec_framework_join(); /* frees the N pending timers without firing them */
  free(B.pending);
  free(B.slots);
  free(B.late);
  return r.ok ? 0 : 1;
}
