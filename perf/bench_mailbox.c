/*
 * perf/bench_mailbox.c - cross-thread messages into one shard: throughput and wakeups.
 *
 *   bench_mailbox --producers P --messages M [--shards S] [--mode event|run] [--json]
 *
 * P producer threads (not shards) each post M messages to shard 0 as fast as they can,
 * through the calls users make:
 *
 *   --mode event  schedule_event_and_dispatch(e, E_READ) on an Event the producer owns
 *                 (ec_schedule_event_and_dispatch, to see errors). This is how a worker
 *                 thread resumes a suspended session. The Event watches E_READ on one end
 *                 of a socketpair nobody writes to, so it is never dispatched by readiness,
 *                 and its callback returns E_READ (the registered mask: no system call)
 *                 so that it stays scheduled. A mask of 0 would not do: returning 0 from a
 *                 callback ends the Event.
 *   --mode run    ec_shard_run(0, fn, arg), arg = (producer id, sequence) packed in the
 *                 pointer: a closure per message, no allocation of ours.
 *
 * The clock runs from the moment the producers are released until the shard has handled
 * all P*M messages (the consumer opens a latch, stamping its own clock). Shard counters
 * (ec_shard_stats_get) before and after give the eventfd writes producers made
 * (wakeups_sent), the shard's sleeps and loop iterations.
 *
 * Checks. Run mode: every closure carries (id, seq); the consumer requires seq == last + 1
 * per producer (order violations, duplicates and gaps all count) and exactly M per
 * producer. Event mode: a dispatch request carries no payload of its own, so the producer
 * publishes its sequence in the Event's closure (every PUBLISH_EVERY posts and before the
 * last); the callback requires it never to go backwards, the k-th callback to see at
 * least k rounded down to PUBLISH_EVERY, and the last to see M.
 * The shard's `messages` counter must grow by exactly P*M (nothing lost, nothing handled
 * twice), and there must be one callback per message, unless the library merges requests
 * for an Event already queued (as libevent merges event_active on an active event): then
 * there may be fewer, never more.
 *
 * Exit status 0 when every check passed.
 */
#include "ec_framework.h"
#include "event.h"
#include "scheduler.h"
#include "sp_async.h"

#include "bench_common.h"

#include <sched.h>
#include <sys/socket.h>

_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t), "payload travels in a pointer");

/* Event mode: how often a producer publishes its sequence for the consumer's checks. */
#define PUBLISH_EVERY 256

typedef struct producer {
  /* Written by the producer, read by the shard (event mode): its own cache line so that
   * the consumer's bookkeeping below does not bounce with it. */
  _Alignas(64) _Atomic uint64_t published;

  /* Consumer (shard 0) only. */
  _Alignas(64) uint64_t last; /* highest sequence seen */
  uint64_t received;          /* run mode: messages; event mode: callbacks */
  uint64_t violations;

  /* Set up by main before the threads start. */
  unsigned id;
  Event *ev;
  int fds[2];
  pthread_t thread;
  int post_errors; /* producer-written, read after join */
} producer;

static struct {
  bench_opts o;
  int event_mode;
  uint64_t total;
  producer *p;
  pthread_barrier_t start;
  bench_latch done;
  uint64_t messages_base; /* shard 0's `messages` before the run (event mode's end test) */
  uint64_t received;      /* consumer: messages (run) or callbacks (event) so far */
  int finished;           /* consumer: latch opened */
} B;

/* ---- consumer side (shard 0) ---------------------------------------------------------- */

static void on_run(void *arg)
{
  uint64_t v = (uint64_t)(uintptr_t)arg;
  producer *p = &B.p[v >> BENCH_SEQ_BITS];

  bench_check_seq(&p->last, v & BENCH_SEQ_MASK, &p->violations);
  p->received++;
  if (++B.received == B.total)
    bench_latch_open(&B.done);
}

static int on_event(Event *e, int eventtype, void *closure, struct timeval *now)
{
  producer *p = closure;
  /* Pairs with the release store in post_events: what the producer published before
   * posting is visible once its message has been handled. */
  uint64_t seq = atomic_load_explicit(&p->published, memory_order_acquire);
  uint64_t k = p->received + 1; /* this callback's number */

  (void)now;
  /* The published sequence never goes backwards, and the k-th callback cannot run before
   * message k was posted, when at least k rounded down to PUBLISH_EVERY was published
   * (when requests are merged, k is smaller still). */
  if (seq < p->last || seq < k / PUBLISH_EVERY * PUBLISH_EVERY || eventtype != E_READ)
    p->violations++;
  else
    p->last = seq;
  p->received = k;
  B.received++;
  if (B.finished)
    return e->mask;
  /*
   * Done when every message has been handled. The shard dispatches each posted request
   * from inside the mailbox drain, so one callback per message: count them. Should
   * requests for a queued Event be merged and dispatched after the drain instead, the
   * drain's `messages` count is already updated when the last producer's final dispatch
   * runs: that is the second test.
   */
  if (B.received == B.total) {
    B.finished = 1;
  } else if (seq == (uint64_t)B.o.messages) {
    ec_shard_stats st;

    ec_shard_stats_get(0, &st);
    B.finished = st.messages - B.messages_base >= B.total;
  }
  if (B.finished)
    bench_latch_open(&B.done);
  return e->mask; /* E_READ, already registered: stays scheduled, no system call */
}

/* ---- producers ------------------------------------------------------------------------ */

static void post_events(producer *p)
{
  for (uint64_t seq = 1; seq <= (uint64_t)B.o.messages; seq++) {
    /* Pairs with the acquire load in on_event. Published every PUBLISH_EVERY messages and
     * at the last: each store the shard reads costs a cache-line transfer both ways,
     * which the peers' payload queues do not pay per message either. */
    if (seq % PUBLISH_EVERY == 0 || seq == (uint64_t)B.o.messages)
      atomic_store_explicit(&p->published, seq, memory_order_release);
    if (ec_schedule_event_and_dispatch(p->ev, E_READ) < 0) {
      p->post_errors++;
      return;
    }
  }
}

static void post_runs(producer *p)
{
  for (uint64_t seq = 1; seq <= (uint64_t)B.o.messages; seq++) {
    int rc;

    /* -ENOMEM is the only transient failure: let the shard catch up and retry. */
    while ((rc = ec_shard_run(0, on_run, (void *)(uintptr_t)bench_pack(p->id, seq))) == -ENOMEM)
      sched_yield();
    if (rc < 0) {
      p->post_errors++;
      return;
    }
  }
}

static void *producer_main(void *arg)
{
  producer *p = arg;

  pthread_barrier_wait(&B.start);
  if (B.event_mode)
    post_events(p);
  else
    post_runs(p);
  return NULL;
}

/* ---- setup and report ------------------------------------------------------------------- */

static void noop(void *arg)
{
  (void)arg;
}

/*
 * Returns once shard 0 is idle, so that its counters are stable. ec_shard_call alone is not
 * enough: the closure runs in the middle of a drain, and the drain adds to `messages`
 * after it. An idle shard sleeps without iterating (no timers, no recurrent functions).
 */
static void wait_idle(ec_shard_stats *out)
{
  ec_shard_stats a;
  struct timespec ms = {0, 1000000};

  ec_shard_call(0, noop, NULL);
  ec_shard_stats_get(0, out);
  do {
    a = *out;
    nanosleep(&ms, NULL);
    ec_shard_stats_get(0, out);
  } while (out->iterations != a.iterations || out->messages != a.messages);
}

static int setup_event(producer *p)
{
  /* A socketpair end nobody writes to: never readable, so never dispatched by the poller. */
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p->fds) < 0) {
    perror("socketpair");
    return -1;
  }
  p->ev = build_fd_event(p->fds[0], E_READ, E_AGGRESSIVE_NONE, on_event, p);
  if (p->ev == NULL || ec_event_place(p->ev, 0) < 0 || ec_schedule_event(p->ev) < 0) {
    fprintf(stderr, "bench_mailbox: cannot build and schedule the Event of producer %u\n", p->id);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv)
{
  bench_opts o = {.producers = 1, .messages = 200000, .shards = 1, .mode = "event"};
  ec_framework_options fo;
  ec_shard_stats s0, sd, s1;
  uint64_t t0, cpu0, cpu1, w0, w1, lost = 0, dup = 0, violations = 0, callbacks = 0;
  int errors = 0, ok, finished, rc;
  double secs;

  bench_parse(argc, argv, &o,
              "  --mode event  schedule_event_and_dispatch on a per-producer Event (default)\n"
              "  --mode run    ec_shard_run closures\n");
  if (strcmp(o.mode, "event") != 0 && strcmp(o.mode, "run") != 0)
    bench_usage(argv[0], "  --mode is event or run\n");
  B.o = o;
  B.event_mode = strcmp(o.mode, "event") == 0;
  B.total = (uint64_t)o.producers * (uint64_t)o.messages;
  bench_latch_init(&B.done);
  B.p = aligned_alloc(64, sizeof(producer) * (size_t)o.producers);
  if (B.p == NULL)
    return 1;
  memset(B.p, 0, sizeof(producer) * (size_t)o.producers);

  memset(&fo, 0, sizeof(fo));
  fo.shards = o.shards;
  rc = ec_framework_init(&fo);
  if (rc < 0) {
    fprintf(stderr, "bench_mailbox: ec_framework_init: %s\n", strerror(-rc));
    return 1;
  }
  for (int i = 0; i < o.producers; i++) {
    B.p[i].id = (unsigned)i;
    B.p[i].fds[0] = B.p[i].fds[1] = -1;
    if (B.event_mode && setup_event(&B.p[i]) < 0)
      return 1;
  }
  rc = ec_framework_start();
  if (rc < 0) {
    fprintf(stderr, "bench_mailbox: ec_framework_start: %s\n", strerror(-rc));
    return 1;
  }
  /* The schedules posted before start are handled before ec_shard_call returns (one
   * producer, order kept), so the run starts with registered Events and an idle shard. */
  wait_idle(&s0);
  B.messages_base = s0.messages;

  pthread_barrier_init(&B.start, NULL, (unsigned)o.producers + 1);
  for (int i = 0; i < o.producers; i++)
    pthread_create(&B.p[i].thread, NULL, producer_main, &B.p[i]);
  w0 = bench_write8();
  cpu0 = bench_cpu_ns();
  pthread_barrier_wait(&B.start);
  t0 = bench_now_ns();
  finished = bench_latch_wait(&B.done, 120);
  for (int i = 0; i < o.producers; i++) {
    pthread_join(B.p[i].thread, NULL);
    errors += B.p[i].post_errors;
  }
  cpu1 = bench_cpu_ns();
  w1 = bench_write8();
  /* Producers are joined: wakeups_sent is final. sleeps and iterations may still move by
   * one while the shard goes back to sleep. */
  ec_shard_stats_get(0, &sd);
  /* Also waits for whatever a failed run left queued. */
  wait_idle(&s1);
  secs = finished ? (double)(B.done.at_ns - t0) / 1e9 : 0;

  for (int i = 0; i < o.producers; i++) {
    producer *p = &B.p[i];

    violations += p->violations;
    callbacks += p->received;
    if (!B.event_mode) {
      if (p->received < (uint64_t)o.messages)
        lost += (uint64_t)o.messages - p->received;
      else
        dup += p->received - (uint64_t)o.messages;
    } else if (p->last != (uint64_t)o.messages || p->received > (uint64_t)o.messages) {
      violations++;
    }
  }
  if (B.event_mode) {
    /* -1: wait_idle's own message. */
    uint64_t handled = s1.messages - s0.messages - 1;

    lost = handled < B.total ? B.total - handled : 0;
    dup = handled > B.total ? handled - B.total : 0;
  }
  ok = finished && errors == 0 && violations == 0 && lost == 0 && dup == 0;

  BENCH_PRINT(o.json, BF_S("bench", "mailbox"),
              BF_S("impl", B.event_mode ? "ecshard-event" : "ecshard-run"),
              BF_U("producers", o.producers), BF_U("messages", o.messages), BF_U("total", B.total),
              BF_D("seconds", secs), BF_D("msgs_per_s", secs > 0 ? (double)B.total / secs : 0),
              BF_U("wakeups", sd.wakeups_sent - s0.wakeups_sent),
              BF_D("wakeups_per_1000",
                   (double)(sd.wakeups_sent - s0.wakeups_sent) * 1000.0 / (double)B.total),
              BF_U("write8", w1 - w0), BF_U("sleeps", sd.sleeps - s0.sleeps),
              BF_U("iterations", sd.iterations - s0.iterations), BF_U("callbacks", callbacks),
              BF_D("cpu_ns_per_msg", (double)(cpu1 - cpu0) / (double)B.total),
              BF_U("order_violations", violations), BF_U("lost", lost), BF_U("dup", dup),
              BF_U("post_errors", errors), BF_B("ok", ok));

  ec_framework_stop();
  ec_framework_join(); /* closes the scheduled Events' descriptors (fds[0]) and frees them */
  for (int i = 0; i < o.producers; i++)
    if (B.p[i].fds[1] >= 0)
      close(B.p[i].fds[1]);
  pthread_barrier_destroy(&B.start);
  bench_latch_destroy(&B.done);
  free(B.p);
  return ok ? 0 : 1;
}
