/*
 * test/test_timer.c - timed Events (shard/timer.c and the timer half of shard/event.c):
 * order, never early, cancel, foreign threads, the per-iteration cap, moves, shutdown.
 *
 * Like h2o's unit tests, some checks read the Event's private deadline (white box): that
 * is the only way to make deadlines exactly equal or to check "never early" against the
 * monotonic clock the scheduler uses.
 */
#include "unit.h"

#include "event.h"
#include "framework/internal.h"
#include "scheduler.h"
#include "shard/shard.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

static void start_with(int shards, const char *extra)
{
  static const char *set[UNIT_MAX_SET + 2];
  ec_framework_options o = unit_options(shards);
  int n = 0;

  while (unit_set[n] != NULL) {
    set[n] = unit_set[n];
    n++;
  }
  set[n++] = extra;
  set[n] = NULL;
  o.set = extra ? set : unit_set;
  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
}

static void finish(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
}

static int load(const int *v)
{
  return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static int64_t tv_us(const struct timeval *tv)
{
  return (int64_t)tv->tv_sec * 1000000 + tv->tv_usec;
}

/* ---- order and never early ----------------------------------------------------------------- */

enum { ORDER_N = 10000 };

struct rec {
  int index; /* scheduling order */
  uint64_t deadline;
  struct timeval trigger;
};

struct order_state {
  struct rec recs[ORDER_N];
  int fired[ORDER_N]; /* scheduling indexes in firing order (shard-written) */
  int nfired;
  int early_mono, early_wall, early_now, wrong_type;
};

static struct order_state *os;

static int order_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct rec *r = closure;
  struct timeval tv;

  if (type != E_TIMEOUT)
    os->wrong_type++;
  if (fw__mono_ns() < r->deadline)
    os->early_mono++;
  gettimeofday(&tv, NULL);
  if (tv_us(&tv) < tv_us(&r->trigger))
    os->early_wall++;
  if (tv_us(now) < tv_us(&r->trigger))
    os->early_now++;
  os->fired[os->nfired] = r->index;
  __atomic_store_n(&os->nfired, os->nfired + 1, __ATOMIC_RELEASE);
  return 0;
}

struct batch {
  Event **ev;
  int n;
};

static void schedule_batch(void *arg)
{
  struct batch *b = arg;

  for (int i = 0; i < b->n; i++)
    schedule_event(b->ev[i]);
}

static void t_order_never_early(void)
{
  int n = (int)unit_scale(ORDER_N);
  Event **ev = calloc((size_t)n, sizeof(*ev));
  struct batch b = {ev, n};

  os = calloc(1, sizeof(*os));
  srand(42);
  start_with(2, NULL);
  for (int i = 0; i < n; i++) {
    float secs = (float)(rand() % 200) / 1000.0f; /* 0..199 ms */

    os->recs[i].index = i;
    ev[i] = build_event_from_now_f(secs, -1, order_cb, &os->recs[i]);
    ASSERT_NOT_NULL(ev[i]);
    /* Every tenth timer shares the deadline of the one before it exactly. */
    if (i % 10 == 9) {
      ev[i]->_priv.deadline_ns = ev[i - 1]->_priv.deadline_ns;
      ev[i]->trigger = ev[i - 1]->trigger;
    }
    os->recs[i].deadline = ev[i]->_priv.deadline_ns;
    os->recs[i].trigger = ev[i]->trigger;
    ASSERT_EQ(ec_event_place(ev[i], 1), 0);
  }
  ASSERT_EQ(ec_shard_call(1, schedule_batch, &b), 0); /* scheduling order = index order */
  ASSERT_TRUE(unit_wait_ge(&os->nfired, n, 30000));
  finish();
  ASSERT_EQ(os->wrong_type, 0);
  ASSERT_EQ(os->early_mono, 0);
  ASSERT_EQ(os->early_wall, 0);
  ASSERT_EQ(os->early_now, 0);
  for (int k = 1; k < n; k++) {
    struct rec *a = &os->recs[os->fired[k - 1]], *c = &os->recs[os->fired[k]];

    ASSERT_TRUE(a->deadline <= c->deadline);
    if (a->deadline == c->deadline)
      ASSERT_TRUE(a->index < c->index); /* equal deadlines: scheduling order */
  }
  free(ev);
  free(os);
}

/* ---- cancel -----------------------------------------------------------------------------------
 */

static int fired_count;
static int count_cb(Event *e, int type, void *closure, struct timeval *now)
{
  __atomic_add_fetch(&fired_count, 1, __ATOMIC_RELEASE);
  return 0;
}

struct cancel {
  Event *e;
  int rc;
};

static void cancel_it(void *arg)
{
  struct cancel *c = arg;

  c->rc = clear_timed_event(c->e);
}

static void t_cancel_before_fire(void)
{
  int64_t before;
  struct cancel c;

  start_with(1, NULL);
  before = unit_live(MEMTYPE_EVENT);
  __atomic_store_n(&fired_count, 0, __ATOMIC_RELEASE);
  c.e = build_event_from_now_f(5.0f, -1, count_cb, NULL);
  schedule_event(c.e);
  usleep(10000);
  ASSERT_EQ(ec_shard_call(0, cancel_it, &c), 0);
  ASSERT_EQ(c.rc, 1); /* found: freed by the framework */
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before);
  usleep(100000);
  ASSERT_EQ(load(&fired_count), 0);
  /* Never scheduled: 0, the caller still owns it. */
  c.e = build_event_from_now_f(0.05f, -1, count_cb, NULL);
  ASSERT_EQ(clear_timed_event(c.e), 0);
  event_free(c.e);
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before);
  finish();
}

/* A timer whose schedule request is still queued in the mailbox when it is cancelled:
 * found (1), the request is dropped and the Event freed once, and it never fires. */
#include "sp_async.h"

static void post_then_cancel(void *arg)
{
  struct cancel *c = arg;

  sp_async_schedule_event(c->e, 0); /* always through the mailbox, even on the owner */
  c->rc = clear_timed_event(c->e);
}

static void t_cancel_queued(void)
{
  int64_t before;
  struct cancel c;

  start_with(1, NULL);
  before = unit_live(MEMTYPE_EVENT);
  __atomic_store_n(&fired_count, 0, __ATOMIC_RELEASE);
  c.e = build_event_from_now_f(0.0f, -1, count_cb, NULL);
  ASSERT_EQ(ec_event_place(c.e, 0), 0);
  ASSERT_EQ(ec_shard_call(0, post_then_cancel, &c), 0);
  ASSERT_EQ(c.rc, 1);
  for (int i = 0; i < 1000 && unit_live(MEMTYPE_EVENT) != before; i++)
    usleep(1000);
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before);
  usleep(20000);
  ASSERT_EQ(load(&fired_count), 0);
  finish();
}

struct pair {
  Event *a, *b;
  int rc, b_fired, self_rc;
};

static int b_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct pair *p = closure;

  __atomic_store_n(&p->b_fired, 1, __ATOMIC_RELEASE);
  return 0;
}

static int a_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct pair *p = closure;

  p->rc = clear_timed_event(p->b);   /* another pending timer: cancelled and freed */
  p->self_rc = clear_timed_event(e); /* itself, while firing: 1, freed after return */
  __atomic_add_fetch(&fired_count, 1, __ATOMIC_RELEASE);
  return 0;
}

static void t_cancel_from_timer_callback(void)
{
  struct pair p = {0};
  int64_t before;

  start_with(2, NULL);
  before = unit_live(MEMTYPE_EVENT);
  __atomic_store_n(&fired_count, 0, __ATOMIC_RELEASE);
  p.a = build_event_from_now_f(0.01f, -1, a_cb, &p);
  p.b = build_event_from_now_f(0.03f, -1, b_cb, &p);
  ASSERT_EQ(ec_event_place(p.a, 1), 0);
  ASSERT_EQ(ec_event_place(p.b, 1), 0);
  schedule_event(p.a);
  schedule_event(p.b);
  ASSERT_TRUE(unit_wait_ge(&fired_count, 1, 5000));
  usleep(60000);
  ASSERT_EQ(p.rc, 1);
  ASSERT_EQ(p.self_rc, 1);
  ASSERT_EQ(load(&p.b_fired), 0);
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before);
  finish();
}

/* ---- foreign threads wake a sleeping shard at once ------------------------------------------- */

static int late_fired, early_fired;
static int late_cb(Event *e, int type, void *closure, struct timeval *now)
{
  __atomic_store_n(&late_fired, 1, __ATOMIC_RELEASE);
  return 0;
}
static int early_cb(Event *e, int type, void *closure, struct timeval *now)
{
  /* The 2 s timer must still be pending: the shard re-armed its wait for us. */
  __atomic_store_n(&early_fired, load(&late_fired) ? 2 : 1, __ATOMIC_RELEASE);
  return 0;
}

static void t_foreign_thread_timer_wakes_shard(void)
{
  Event *late, *early;

  start_with(1, NULL);
  late = build_event_from_now_f(2.0f, -1, late_cb, NULL);
  schedule_event(late); /* the shard now sleeps towards +2 s */
  usleep(50000);
  early = build_event_from_now_f(0.01f, -1, early_cb, NULL);
  schedule_event(early); /* from this (foreign) thread, through the mailbox */
  ASSERT_TRUE(unit_wait_ge(&early_fired, 1, 1500));
  ASSERT_EQ(load(&early_fired), 1);
  finish(); /* the +2 s timer is freed unfired */
  ASSERT_EQ(late_fired, 0);
}

/* ---- the per-iteration cap ------------------------------------------------------------------- */

enum { CAP = 100, CAP_TIMERS = 3000 };
static uint64_t cap_iter[CAP_TIMERS];
static int cap_n;

static int cap_cb(Event *e, int type, void *closure, struct timeval *now)
{
  ec_shard_stats st;

  ec_shard_stats_get(ec_shard_self(), &st);
  cap_iter[cap_n] = st.iterations;
  __atomic_store_n(&cap_n, cap_n + 1, __ATOMIC_RELEASE);
  return 0;
}

static void t_per_iteration_cap(void)
{
  Event **ev = calloc(CAP_TIMERS, sizeof(*ev));
  struct batch b = {ev, CAP_TIMERS};
  int run = 1, max_run = 1;

  start_with(1, "event_loop.max_timed_events_per_iter=100");
  for (int i = 0; i < CAP_TIMERS; i++)
    ev[i] = build_event_from_now_f(0.0f, -1, cap_cb, NULL);
  ASSERT_EQ(ec_shard_call(0, schedule_batch, &b), 0);
  ASSERT_TRUE(unit_wait_ge(&cap_n, CAP_TIMERS, 10000));
  finish();
  for (int i = 1; i < CAP_TIMERS; i++) {
    run = cap_iter[i] == cap_iter[i - 1] ? run + 1 : 1;
    if (run > max_run)
      max_run = run;
  }
  ASSERT_EQ(max_run, CAP); /* full batches of exactly the cap, never more */
  free(ev);
}

/* ---- shutdown, misuse, moves, constructors --------------------------------------------------- */

static void t_pending_at_shutdown_freed(void)
{
  int64_t before = unit_live(MEMTYPE_EVENT);

  start_with(2, NULL);
  for (int i = 0; i < 1000; i++)
    schedule_event(build_event_from_now_f(3600.0f, -1, count_cb, NULL));
  usleep(20000);
  finish();
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before);
}

static int bad_ret_calls;
static int bad_ret_cb(Event *e, int type, void *closure, struct timeval *now)
{
  __atomic_add_fetch(&bad_ret_calls, 1, __ATOMIC_RELEASE);
  return E_READ; /* wrong: timed events are one-shot */
}

static void t_timer_must_return_zero(void)
{
  int64_t before;

  start_with(1, NULL);
  before = unit_live(MEMTYPE_EVENT);
  schedule_event(build_event_from_now_f(0.0f, -1, bad_ret_cb, NULL));
  ASSERT_TRUE(unit_wait_ge(&bad_ret_calls, 1, 5000));
  for (int i = 0; i < 1000 && unit_live(MEMTYPE_EVENT) != before; i++)
    usleep(1000);
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before); /* logged and freed */
  usleep(50000);
  ASSERT_EQ(load(&bad_ret_calls), 1);
  finish();
}

struct mv {
  Event *e;
  uint64_t deadline;
  int fired, early, rc;
};

static int mv_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct mv *m = closure;

  if (fw__mono_ns() < m->deadline)
    m->early = 1;
  __atomic_store_n(&m->fired, 1, __ATOMIC_RELEASE);
  return 0;
}

static void move_it(void *arg)
{
  struct mv *m = arg;
  struct timeval when = {0, 0};

  when.tv_usec = 100000; /* +100 ms */
  if (m->deadline == 1)
    when.tv_usec = 10000; /* earlier: +10 ms */
  m->rc = ec_timed_event_move(m->e, when, E_FROM_NOW);
  m->deadline = m->e->_priv.deadline_ns;
}

static void t_move(void)
{
  struct mv later = {0}, earlier = {0};

  start_with(1, NULL);
  later.e = build_event_from_now_f(0.02f, -1, mv_cb, &later);
  later.deadline = later.e->_priv.deadline_ns;
  schedule_event(later.e);
  earlier.e = build_event_from_now_f(5.0f, -1, mv_cb, &earlier);
  earlier.deadline = 1;
  schedule_event(earlier.e);
  ASSERT_EQ(ec_shard_call(0, move_it, &later), 0);
  ASSERT_EQ(ec_shard_call(0, move_it, &earlier), 0);
  ASSERT_EQ(later.rc, 0);
  ASSERT_EQ(earlier.rc, 0);
  ASSERT_TRUE(unit_wait_ge(&earlier.fired, 1, 2000)); /* moved from +5 s to +10 ms */
  ASSERT_TRUE(unit_wait_ge(&later.fired, 1, 5000));
  ASSERT_EQ(later.early, 0); /* not at its old +20 ms deadline */
  ASSERT_EQ(earlier.early, 0);
  {
    struct timeval tv = {1, 0};
    Event *e = build_event_from_now_f(1.0f, -1, mv_cb, &later);

    ASSERT_EQ(ec_timed_event_move(e, tv, 99), -EINVAL);
    ASSERT_EQ(ec_timed_event_move(e, tv, E_FROM_NOW), 0); /* not scheduled: just set */
    event_free(e);
  }
  finish();
}

/* ---- the wheel: every level, moves and cancels while timers cascade ---------------------- */

enum { CHURN_N = 3000 };

struct churn_rec {
  Event *e;
  uint64_t deadline; /* final: after any move */
  int cancelled, fired;
};

static struct churn_state {
  struct churn_rec r[CHURN_N];
  int n;
  int order[CHURN_N]; /* firing order */
  int nfired, early, twice, cancelled_fired, moved, nexpected;
} * cs;

static int churn_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct churn_rec *r = closure;

  (void)e;
  (void)now;
  if (fw__mono_ns() < r->deadline || type != E_TIMEOUT)
    cs->early++;
  if (r->fired++)
    cs->twice++;
  if (r->cancelled)
    cs->cancelled_fired++;
  cs->order[cs->nfired] = (int)(r - cs->r);
  __atomic_store_n(&cs->nfired, cs->nfired + 1, __ATOMIC_RELEASE);
  return 0;
}

/* Deadlines log-uniform from 20 us to 1.3 s: every timer starts on wheel level 0 to 4 and
 * cascades down as time passes. */
static void churn_schedule(void *arg)
{
  (void)arg;
  for (int i = 0; i < cs->n; i++) {
    double secs = 20e-6 * (double)(1 << (rand() % 16)) * (1.0 + (double)rand() / RAND_MAX);
    struct churn_rec *r = &cs->r[i];

    r->e = build_event_from_now_f((float)secs, -1, churn_cb, r);
    if (r->e == NULL || ec_schedule_event(r->e) != 0) {
      cs->early++; /* counted as a failure */
      continue;
    }
    r->deadline = r->e->_priv.deadline_ns;
  }
}

/* On the shard, while timers fire and cascade: moves a third of the pending ones (half
 * later, half earlier) and cancels a sixth. */
static void churn_disturb(void *arg)
{
  (void)arg;
  for (int i = 0; i < cs->n; i++) {
    struct churn_rec *r = &cs->r[i];
    struct timeval when = {0, 0};
    int k;

    if (r->fired || r->cancelled || r->e == NULL)
      continue;
    k = rand() % 6;
    switch (k) {
    case 0:
      ASSERT_EQ(clear_timed_event(r->e), 1);
      r->cancelled = 1;
      break;
    case 1: /* mostly later: 0 to 600 ms from now */
    case 2: /* mostly earlier: 0 to 1.2 ms from now */
      when.tv_usec = rand() % (k == 1 ? 600000 : 1200);
      ASSERT_EQ(ec_timed_event_move(r->e, when, E_FROM_NOW), 0);
      r->deadline = r->e->_priv.deadline_ns;
      cs->moved++;
      break;
    default:
      break;
    }
  }
}

static void t_wheel_churn(void)
{
  cs = calloc(1, sizeof(*cs));
  cs->n = (int)unit_scale(CHURN_N);
  srand(7);
  start_with(1, NULL);
  ASSERT_EQ(ec_shard_call(0, churn_schedule, NULL), 0);
  usleep(30000);
  ASSERT_EQ(ec_shard_call(0, churn_disturb, NULL), 0);
  usleep(200000);
  ASSERT_EQ(ec_shard_call(0, churn_disturb, NULL), 0);
  for (int i = 0; i < cs->n; i++)
    cs->nexpected += !cs->r[i].cancelled && cs->r[i].e != NULL; /* stable: no more changes */
  ASSERT_TRUE(unit_wait_ge(&cs->nfired, cs->nexpected, 10000));
  usleep(20000); /* a cancelled timer that fired anyway would show up now */
  finish();
  ASSERT_TRUE(cs->moved > cs->n / 10);
  ASSERT_EQ(cs->nfired, cs->nexpected);
  ASSERT_EQ(cs->early, 0);
  ASSERT_EQ(cs->twice, 0);
  ASSERT_EQ(cs->cancelled_fired, 0);
  for (int k = 1; k < cs->nfired; k++) /* one shard: deadline order */
    ASSERT_TRUE(cs->r[cs->order[k - 1]].deadline <= cs->r[cs->order[k]].deadline);
  free(cs);
}

/* ---- the timers' clock (shard/clock.c) ------------------------------------------------------ */

static struct clock_check {
  long checks, below, far, fallbacks, migrations;
  int tsc;
} ck;

static void noop_call(void *arg)
{
  (void)arg;
}

static void read_mult(void *arg)
{
  *(uint64_t *)arg = shard__self()->tsc_mult;
}

/* On the shard: the timers' clock is never behind CLOCK_MONOTONIC read just before it, and
 * not far ahead of the one read just after. The loop runs past the 1 ms extrapolation
 * limit several times, so the kernel-clock fallback and its new base are checked too. */
/* The same check across migrations: the shard thread is moved to another CPU between
 * the base and the read, so that the TSC it reads is another CPU's (the slack covers a
 * small skew; a large one would show up here as reads below the monotonic clock). */
static void migrate_check(shard *s)
{
  cpu_set_t all, one;
  int ncpu;

  if (pthread_getaffinity_np(pthread_self(), sizeof(all), &all) != 0)
    return;
  ncpu = CPU_COUNT(&all);
  for (int i = 0, cpu = 0; ncpu > 1 && i < 2000; i++) {
    uint64_t a, b;

    do
      cpu = (cpu + 1) % CPU_SETSIZE;
    while (!CPU_ISSET(cpu, &all));
    (void)shard__clock_now(s); /* a base on this CPU, if it was stale */
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (pthread_setaffinity_np(pthread_self(), sizeof(one), &one) != 0)
      break;
    a = fw__mono_ns();
    b = shard__clock_now(s);
    ck.below += b < a;
    ck.migrations++;
  }
  pthread_setaffinity_np(pthread_self(), sizeof(all), &all);
}

static void clock_check(void *arg)
{
  shard *s = shard__self();

  (void)arg;
  ck.tsc = s->tsc_mult != 0;
  for (int i = 0; i < 100000; i++) {
    uint64_t a = fw__mono_ns(), base = s->tsc_base, b = shard__clock_now(s), c = fw__mono_ns();

    ck.below += b < a;
    ck.far += b > c + 20000; /* slack 1 us + 0.2% of at most 1 ms, with room for a preemption */
    ck.fallbacks += s->tsc_base != base;
    ck.checks++;
  }
  migrate_check(s);
}

static void t_clock_upper_bound(void)
{
  static const char *const modes[] = {NULL, "event_loop.timer_clock=kernel",
                                      "event_loop.timer_clock=tsc"};

  for (int m = 0; m < 3; m++) {
    memset(&ck, 0, sizeof(ck));
    uint64_t mult = 0;

    start_with(1, modes[m]);
    /* The rate is measured between iterations at least 5 ms apart (longer if the clock
     * reads are slow, as under sanitizers). */
    for (int i = 0; i < 100 && mult == 0; i++) {
      usleep(10000);
      ASSERT_EQ(ec_shard_call(0, read_mult, &mult), 0);
    }
    ASSERT_EQ(ec_shard_call(0, clock_check, NULL), 0);
    finish();
    ASSERT_EQ(ck.checks, 100000);
    ASSERT_EQ(ck.below, 0);
    ASSERT_EQ(ck.far, 0);
    if (fw__cpu_count() > 1)
      ASSERT_TRUE(ck.migrations > 0);
    /* The TSC is used wherever the CPU allows it, unless "kernel" says otherwise. */
    ASSERT_EQ(ck.tsc, m == 1 ? 0 : shard__clock_mode("auto"));
    if (ck.tsc)
      ASSERT_TRUE(ck.fallbacks > 0);
  }
}

/* ---- a burst of timers gives its memory back ------------------------------------------------ */

enum { BURST_N = 50000 };
static int burst_fired;

static int burst_cb(Event *e, int type, void *closure, struct timeval *now)
{
  (void)e;
  (void)type;
  (void)closure;
  (void)now;
  __atomic_add_fetch(&burst_fired, 1, __ATOMIC_RELEASE);
  return 0;
}

static void burst_schedule(void *arg)
{
  int n = *(int *)arg;

  for (int i = 0; i < n; i++) /* all in one slot, then all due together */
    ASSERT_EQ(ec_schedule_event(build_event_from_now_f(0.05f, -1, burst_cb, NULL)), 0);
}

static int64_t timer_memory(void)
{
  ec_memtype_stats st;

  CU_ASSERT_EQUAL(ec_memtype_stats_get(MEMTYPE_FD_TABLE, &st), 0);
  return st.live_bytes;
}

static void t_burst_memory_returned(void)
{
  int n = (int)unit_scale(BURST_N);
  int64_t before, during, after = 0;

  burst_fired = 0;
  start_with(1, NULL);
  ASSERT_EQ(ec_shard_call(0, noop_call, NULL), 0);
  before = timer_memory();
  ASSERT_EQ(ec_shard_call(0, burst_schedule, &n), 0);
  during = timer_memory();
  ASSERT_TRUE(unit_wait_ge(&burst_fired, n, 10000));
  /* The arrays are given back in the iterations that empty them. */
  for (int i = 0; i < 100; i++) {
    ASSERT_EQ(ec_shard_call(0, noop_call, NULL), 0);
    after = timer_memory();
    if (after - before < 128 * 1024)
      break;
    usleep(10000);
  }
  finish();
  ASSERT_TRUE(during - before >= (int64_t)n * (int64_t)sizeof(Event *));
  /* What stays is bounded: the heap and scratch arrays up to ARRAY_KEEP entries, and slot
   * arrays up to SLOT_KEEP (shard/timer.c), 64 KiB in all; the burst held ~0.5 MiB. */
  ASSERT_TRUE(after - before < 128 * 1024);
}

/* ---- allocation failures while timers cascade --------------------------------------------- */

enum { FAULT_N = 3000 };
static struct churn_rec fault_recs[FAULT_N];
static int fault_fired, fault_early, fault_twice;

static int fault_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct churn_rec *r = closure;

  (void)e;
  (void)type;
  (void)now;
  fault_early += fw__mono_ns() < r->deadline;
  fault_twice += r->fired++ > 0;
  __atomic_add_fetch(&fault_fired, 1, __ATOMIC_RELEASE);
  return 0;
}

static void fault_schedule(void *arg)
{
  int n = *(int *)arg;

  for (int i = 0; i < n; i++) {
    struct churn_rec *r = &fault_recs[i];

    /* 0.2 to 150 ms: levels 0 to 2, so they move between slots and into the heap while
     * every third allocation fails. */
    r->e = build_event_from_now_f(0.0002f + (float)(rand() % 150000) * 1e-6f, -1, fault_cb, r);
    ASSERT_NOT_NULL(r->e);
    r->deadline = r->e->_priv.deadline_ns;
    ASSERT_EQ(ec_schedule_event(r->e), 0);
  }
}

/* Every timer that was scheduled fires exactly once and never early, although the arrays
 * the wheel and the heap grow while timers move cannot always be had: a failed move is
 * retried at the next iteration. */
static void t_alloc_failures_while_cascading(void)
{
  int n = (int)unit_scale(FAULT_N);
  unsigned injected;

  memset(fault_recs, 0, sizeof(fault_recs));
  fault_fired = fault_early = fault_twice = 0;
  srand(11);
  start_with(1, NULL);
  ASSERT_EQ(ec_shard_call(0, fault_schedule, &n), 0);
  fw__alloc_fail_every(3);
  usleep(100000);
  injected = fw__alloc_failures_injected();
  fw__alloc_fail_every(0);
  ASSERT_TRUE(unit_wait_ge(&fault_fired, n, 10000));
  usleep(20000);
  finish();
  fprintf(stderr, " %u allocation failures injected ", injected);
  ASSERT_EQ(fault_fired, n);
  ASSERT_EQ(fault_early, 0);
  ASSERT_EQ(fault_twice, 0);
}

static int kinds_fired;
static int kind_cb(Event *e, int type, void *closure, struct timeval *now)
{
  if (type == E_TIMEOUT && tv_us(now) >= tv_us(&e->trigger))
    __atomic_add_fetch(&kinds_fired, 1, __ATOMIC_RELEASE);
  return 0;
}

static void t_constructors(void)
{
  struct timeval tv = {0, 20000}, abs;

  start_with(2, NULL);
  schedule_event(build_event_from_now(tv, -1, kind_cb, NULL));
  gettimeofday(&abs, NULL);
  abs.tv_usec += 30000;
  if (abs.tv_usec >= 1000000) {
    abs.tv_sec++;
    abs.tv_usec -= 1000000;
  }
  schedule_event(build_event_from_epoch(abs, -1, kind_cb, NULL));
  schedule_event(build_event(tv, E_FROM_NOW, -1, kind_cb, NULL));
  schedule_event(build_event_from_now_f(0.01f, -1, kind_cb, NULL));
  abs.tv_sec -= 10; /* in the past: fires at once */
  schedule_event(build_event_from_epoch(abs, -1, kind_cb, NULL));
  ASSERT_TRUE(unit_wait_ge(&kinds_fired, 5, 5000));
  errno = 0;
  ASSERT_NULL(build_event(tv, 0, -1, kind_cb, NULL));
  ASSERT_EQ(errno, EINVAL);
  ASSERT_NULL(build_event_from_now_f(1.0f, -1, NULL, NULL));
  finish();
}

static const unit_test tests[] = {
    UNIT_TEST(t_order_never_early),
    UNIT_TEST(t_cancel_before_fire),
    UNIT_TEST(t_cancel_queued),
    UNIT_TEST(t_cancel_from_timer_callback),
    UNIT_TEST(t_foreign_thread_timer_wakes_shard),
    UNIT_TEST(t_per_iteration_cap),
    UNIT_TEST(t_pending_at_shutdown_freed),
    UNIT_TEST(t_timer_must_return_zero),
    UNIT_TEST(t_move),
    UNIT_TEST(t_wheel_churn),
    UNIT_TEST(t_clock_upper_bound),
    UNIT_TEST(t_burst_memory_returned),
    UNIT_TEST(t_alloc_failures_while_cascading),
    UNIT_TEST(t_constructors),
    {NULL, NULL},
};

UNIT_MAIN("timer", tests)
