/*
 * test/test_mailbox.c - cross-thread messages (shard/mailbox.c): storms from several
 * producers, per-producer order, Events freed while requests for them are queued, the
 * coalesced wakeup, the poll before sleeping, the backlog count, and producer threads
 * that come and go (their lanes are adopted, not multiplied).
 */
#include "unit.h"

#include "framework/internal.h" /* fw__cpu_count */

#include "event.h"
#include "scheduler.h"
#include "sp_async.h"

#include <pthread.h>
#include <semaphore.h>
#include <sys/socket.h>

#define PRODUCERS 4

static int load(const int *v)
{
  return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static void start(int shards)
{
  ec_framework_options o = unit_options(shards);

  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
}

static void finish(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
}

/* ---- storm of schedule_event_and_dispatch ---------------------------------------------------- */

struct target {
  int fd[2];
  Event *e;
  int calls;       /* written by the owner shard only */
  int wrong_shard; /* ditto */
  int wrong_type;
};

static int count_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct target *t = closure;

  if (ec_shard_self() != ec_event_shard(e))
    t->wrong_shard++;
  if (type != E_READ)
    t->wrong_type++;
  __atomic_add_fetch(&t->calls, 1, __ATOMIC_RELEASE);
  return E_EXCEPTION; /* stay scheduled; a socketpair never raises it */
}

struct producer {
  pthread_t thread;
  struct target *targets; /* one per shard */
  int nshards;
  long n;
};

static void *produce_dispatches(void *arg)
{
  struct producer *p = arg;

  for (long i = 0; i < p->n; i++)
    schedule_event_and_dispatch(p->targets[i % p->nshards].e, E_READ);
  return NULL;
}

/* Several threads x many requests: each runs exactly once, on the Event's owner. */
static void t_dispatch_storm(void)
{
  const long n = unit_scale(100000);
  struct target targets[PRODUCERS][2];
  struct producer prod[PRODUCERS];

  start(2);
  for (int p = 0; p < PRODUCERS; p++) {
    for (int s = 0; s < 2; s++) {
      struct target *t = &targets[p][s];

      memset(t, 0, sizeof(*t));
      ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, t->fd), 0);
      t->e = build_fd_event(t->fd[0], 0, 0, count_cb, t);
      ASSERT_EQ(ec_event_place(t->e, s), 0);
      ASSERT_EQ(ec_schedule_event(t->e), 0);
    }
    prod[p] = (struct producer){.targets = targets[p], .nshards = 2, .n = n};
  }
  for (int p = 0; p < PRODUCERS; p++)
    pthread_create(&prod[p].thread, NULL, produce_dispatches, &prod[p]);
  for (int p = 0; p < PRODUCERS; p++)
    pthread_join(prod[p].thread, NULL);
  for (int p = 0; p < PRODUCERS; p++) {
    for (int s = 0; s < 2; s++) {
      struct target *t = &targets[p][s];
      int want = (int)(n / 2 + (s == 0 ? n % 2 : 0));

      ASSERT_TRUE(unit_wait_ge(&t->calls, want, 60000));
    }
  }
  usleep(20000);
  finish(); /* the shards are gone: their counters can be read plainly */
  for (int p = 0; p < PRODUCERS; p++) {
    for (int s = 0; s < 2; s++) {
      struct target *t = &targets[p][s];

      ASSERT_EQ(t->calls, (int)(n / 2 + (s == 0 ? n % 2 : 0))); /* nothing twice */
      ASSERT_EQ(t->wrong_shard, 0);
      ASSERT_EQ(t->wrong_type, 0);
      close(t->fd[1]); /* fd[0] was closed with its Event at shutdown */
    }
  }
}

/* ---- per-producer order through ec_shard_run --------------------------------------------------
 */

struct order {
  long next[PRODUCERS]; /* next sequence expected per producer (shard-owned) */
  long violations;
  long received;
};

struct seqmsg {
  struct order *o;
  int producer;
  long seq;
};

static struct seqmsg *seqmsgs[PRODUCERS];

static void on_seq(void *arg)
{
  struct seqmsg *m = arg;
  struct order *o = m->o;

  if (o->next[m->producer] != m->seq)
    o->violations++;
  o->next[m->producer] = m->seq + 1;
  __atomic_add_fetch(&o->received, 1, __ATOMIC_RELEASE);
}

struct seqprod {
  pthread_t thread;
  int id, shard;
  long n;
  struct order *o;
  int failures;
};

static void *produce_seq(void *arg)
{
  struct seqprod *p = arg;

  for (long i = 0; i < p->n; i++) {
    struct seqmsg *m = &seqmsgs[p->id][i];

    *m = (struct seqmsg){.o = p->o, .producer = p->id, .seq = i};
    if (ec_shard_run(p->shard, on_seq, m) != 0)
      p->failures++;
  }
  return NULL;
}

static void t_per_producer_order(void)
{
  const long n = unit_scale(100000);
  struct order o = {{0}, 0, 0};
  struct seqprod prod[PRODUCERS];
  long total = n * PRODUCERS;

  start(2);
  for (int p = 0; p < PRODUCERS; p++) {
    seqmsgs[p] = calloc((size_t)n, sizeof(struct seqmsg));
    prod[p] = (struct seqprod){.id = p, .shard = 1, .n = n, .o = &o};
  }
  for (int p = 0; p < PRODUCERS; p++)
    pthread_create(&prod[p].thread, NULL, produce_seq, &prod[p]);
  for (int p = 0; p < PRODUCERS; p++)
    pthread_join(prod[p].thread, NULL);
  for (int i = 0; i < 60000 && __atomic_load_n(&o.received, __ATOMIC_ACQUIRE) < total; i++)
    usleep(1000);
  finish();
  ASSERT_EQ(o.received, total);
  ASSERT_EQ(o.violations, 0);
  for (int p = 0; p < PRODUCERS; p++) {
    ASSERT_EQ(prod[p].failures, 0);
    ASSERT_EQ(o.next[p], n);
    free(seqmsgs[p]);
  }
}

/* ---- an Event that ends while requests for it are queued --------------------------------------
 */

struct dying {
  int calls;
};

static int die_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct dying *d = closure;

  __atomic_add_fetch(&d->calls, 1, __ATOMIC_RELEASE);
  event_close(e);
  return 0; /* ends on the first dispatch; 999 requests for it are still queued */
}

static sem_t gate;
static int blocked; /* times block_shard started */
static void block_shard(void *arg)
{
  __atomic_add_fetch(&blocked, 1, __ATOMIC_RELEASE);
  sem_wait(&gate);
}

static void t_free_while_in_flight(void)
{
  struct dying d = {0};
  int fd[2];
  int64_t before;
  Event *e;

  start(1);
  before = unit_live(MEMTYPE_EVENT);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
  e = build_fd_event(fd[0], 0, 0, die_cb, &d);
  sem_init(&gate, 0, 0);
  ASSERT_EQ(ec_shard_run(0, block_shard, NULL), 0); /* hold the shard while we post */
  for (int i = 0; i < 1000; i++)
    ASSERT_EQ(ec_schedule_event_and_dispatch(e, E_READ), 0);
  sem_post(&gate);
  ASSERT_TRUE(unit_wait_ge(&d.calls, 1, 5000));
  for (int i = 0; i < 5000 && unit_live(MEMTYPE_EVENT) != before; i++)
    usleep(1000);
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before); /* freed once, by the last request */
  ASSERT_EQ(load(&d.calls), 1);
  finish();
  sem_destroy(&gate);
  close(fd[1]);
}

/* ---- the wakeup is written only to a sleeping shard, once per sleep ----------------------------
 */

static int ran;
static void note_run(void *arg)
{
  __atomic_add_fetch(&ran, 1, __ATOMIC_RELEASE);
}

static void t_wakeup_coalesced(void)
{
  ec_shard_stats a, b;

  start(1);
  /* Awake (blocked in a closure): 1000 posts need no wakeup at all. */
  sem_init(&gate, 0, 0);
  __atomic_store_n(&ran, 0, __ATOMIC_RELEASE);
  ASSERT_EQ(ec_shard_run(0, block_shard, NULL), 0);
  usleep(50000); /* the shard has picked up the blocking closure */
  ec_shard_stats_get(0, &a);
  for (int i = 0; i < 1000; i++)
    ASSERT_EQ(ec_shard_run(0, note_run, NULL), 0);
  ec_shard_stats_get(0, &b);
  ASSERT_UEQ(b.wakeups_sent, a.wakeups_sent);
  sem_post(&gate);
  ASSERT_TRUE(unit_wait_ge(&ran, 1000, 5000));
  /* Asleep (idle, nothing scheduled, no timeout): the first post wakes it with one write,
   * and a burst posted before it runs adds at most that one. */
  for (int i = 0; i < 5000; i++) { /* until it sleeps (busy == 0), bounded */
    ec_shard_stats_get(0, &a);
    if (!a.busy)
      break;
    usleep(1000);
  }
  ASSERT_EQ(a.busy, 0);
  ASSERT_EQ(ec_shard_run(0, note_run, NULL), 0);
  ASSERT_TRUE(unit_wait_ge(&ran, 1001, 5000));
  ec_shard_stats_get(0, &b);
  ASSERT_UEQ(b.wakeups_sent, a.wakeups_sent + 1);
  finish();
  sem_destroy(&gate);
}

/* ---- shard to shard ---------------------------------------------------------------------------
 */

struct hop {
  int hops, wrong, max;
};

static void hop_fn(void *arg)
{
  struct hop *h = arg;
  int me = ec_shard_self();
  int n = __atomic_add_fetch(&h->hops, 1, __ATOMIC_ACQ_REL);

  if (me != (n - 1) % 2)
    h->wrong++;
  if (n < h->max)
    ec_shard_run(1 - me, hop_fn, h); /* shard to shard, no other thread involved */
}

static void t_shard_to_shard(void)
{
  struct hop h = {.max = (int)unit_scale(10000)};

  start(2);
  ASSERT_EQ(ec_shard_run(0, hop_fn, &h), 0);
  ASSERT_TRUE(unit_wait_ge(&h.hops, h.max, 30000));
  finish();
  ASSERT_EQ(h.wrong, 0);
  ASSERT_EQ(h.hops, h.max);
}

/* ---- the backlog count, and the poll before sleeping --------------------------------------------
 */

static void t_backlog_and_spin(void)
{
  ec_shard_stats a, b;
  ec_framework_options o = unit_options(1);
  int entered = __atomic_load_n(&blocked, __ATOMIC_ACQUIRE);

  start(1);
  sem_init(&gate, 0, 0);
  __atomic_store_n(&ran, 0, __ATOMIC_RELEASE);
  ASSERT_EQ(ec_shard_run(0, block_shard, NULL), 0);
  ASSERT_TRUE(unit_wait_ge(&blocked, entered + 1, 5000)); /* the shard is held */
  for (int i = 0; i < 1000; i++) /* 1000 messages: more than 8 lane chunks */
    ASSERT_EQ(ec_shard_run(0, note_run, NULL), 0);
  ec_shard_stats_get(0, &a);
  ASSERT_UEQ(a.mailbox_backlog, 1000);
  sem_post(&gate);
  ASSERT_TRUE(unit_wait_ge(&ran, 1000, 5000));
  /* Handled, then idle: one poll before the sleep (waited for, not timed). */
  for (int i = 0; i < 5000; i++) {
    ec_shard_stats_get(0, &b);
    if (b.spins >= 1)
      break;
    usleep(1000);
  }
  ASSERT_UEQ(b.mailbox_backlog, 0);
  ASSERT_TRUE(b.spins >= 1);
  ASSERT_TRUE(b.spin_hits <= b.spins);
  finish();

  /* mailbox_spin_ns = 0: the shard sleeps at once. */
  o.config_text = "event_loop = { mailbox_spin_ns = 0; };";
  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
  for (int i = 0; i < 100; i++) {
    ASSERT_EQ(ec_shard_run(0, note_run, NULL), 0);
    usleep(100);
  }
  ASSERT_TRUE(unit_wait_ge(&ran, 1100, 5000));
  ec_shard_stats_get(0, &b);
  ASSERT_UEQ(b.spins, 0);
  finish();

  /* More shards than CPUs: no shard polls, whatever the configuration says. */
  o = unit_options(fw__cpu_count() + 1);
  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
  for (int i = 0; i < 100; i++) {
    ASSERT_EQ(ec_shard_run(0, note_run, NULL), 0);
    usleep(100);
  }
  ASSERT_TRUE(unit_wait_ge(&ran, 1200, 5000));
  usleep(50000);
  ec_shard_stats_get(0, &b);
  ASSERT_UEQ(b.spins, 0);
  finish();
  sem_destroy(&gate);
}

/* ---- producer threads that come and go ----------------------------------------------------------
 */

enum { CHURN_THREADS = 8, CHURN_MSGS = 300 }; /* 300: each thread fills more than 2 chunks */

struct churn {
  long next[CHURN_THREADS]; /* per slot: next sequence expected (shard-owned) */
  long violations;
  int received;
};

struct churn_msg {
  struct churn *c;
  int slot;
  long seq;
};

static void on_churn(void *arg)
{
  struct churn_msg *m = arg;
  struct churn *c = m->c;

  if (c->next[m->slot] != m->seq)
    c->violations++;
  c->next[m->slot] = m->seq + 1;
  __atomic_add_fetch(&c->received, 1, __ATOMIC_RELEASE);
}

struct churn_thread {
  pthread_t thread;
  struct churn_msg *msgs; /* CHURN_MSGS */
  int failures;
};

static void *churn_main(void *arg)
{
  struct churn_thread *t = arg;

  for (int i = 0; i < CHURN_MSGS; i++)
    if (ec_shard_run(0, on_churn, &t->msgs[i]) != 0)
      t->failures++;
  return NULL;
}

/* Rounds of short-lived producer threads: every message arrives once and in its thread's
 * order, and the lanes of exited threads are adopted, so the chunks held stay bounded by
 * the threads alive at once, not by all the threads that ever posted. */
static void t_threads_come_and_go(void)
{
  const int rounds = (int)unit_scale(40);
  struct churn c;
  struct churn_thread th[CHURN_THREADS];
  int64_t chunks_after_first = 0, chunks;

  memset(&c, 0, sizeof(c));
  start(1);
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < CHURN_THREADS; k++) {
      th[k].failures = 0;
      th[k].msgs = calloc(CHURN_MSGS, sizeof(struct churn_msg));
      for (int i = 0; i < CHURN_MSGS; i++)
        th[k].msgs[i] = (struct churn_msg){&c, k, (long)r * CHURN_MSGS + i};
      pthread_create(&th[k].thread, NULL, churn_main, &th[k]);
    }
    for (int k = 0; k < CHURN_THREADS; k++)
      pthread_join(th[k].thread, NULL);
    ASSERT_TRUE(unit_wait_ge(&c.received, (r + 1) * CHURN_THREADS * CHURN_MSGS, 30000));
    for (int k = 0; k < CHURN_THREADS; k++) {
      ASSERT_EQ(th[k].failures, 0);
      free(th[k].msgs);
    }
    if (r == 0)
      chunks_after_first = unit_live(MEMTYPE_SHARD_MSG);
  }
  chunks = unit_live(MEMTYPE_SHARD_MSG);
  finish();
  ASSERT_EQ(c.violations, 0);
  ASSERT_EQ(c.received, rounds * CHURN_THREADS * CHURN_MSGS);
  /* Each lane keeps its current chunk and at most one spare. A new lane per thread would
   * have grown this by CHURN_THREADS lanes every round. */
  ASSERT_TRUE(chunks <= chunks_after_first + 2 * CHURN_THREADS);
  ASSERT_TRUE(chunks <= 2 * (CHURN_THREADS + 2));
}

static const unit_test tests[] = {
    UNIT_TEST(t_dispatch_storm),       UNIT_TEST(t_per_producer_order),
    UNIT_TEST(t_free_while_in_flight), UNIT_TEST(t_wakeup_coalesced),
    UNIT_TEST(t_shard_to_shard),       UNIT_TEST(t_backlog_and_spin),
    UNIT_TEST(t_threads_come_and_go),  {NULL, NULL},
};

UNIT_MAIN("mailbox", tests)
