/*
 * perf/bench_pingpong.c - cross-shard round-trip latency.
 *
 *   bench_pingpong [--rounds N] [--warmup W] [--mode run|event] [--json]
 *
 * Two shards bounce one token: shard 0 -> shard 1 -> shard 0, N measured round trips
 * after W unmeasured ones. Each round trip is timed on shard 0 with CLOCK_MONOTONIC, from
 * just before it posts to shard 1 until shard 1's reply runs on shard 0.
 *
 *   --mode run    ec_shard_run() of a closure on the other shard (default)
 *   --mode event  schedule_event_and_dispatch() of an Event owned by the other shard (each
 *                 shard owns one Event on a socketpair end nobody writes to; callbacks
 *                 return E_READ, the registered mask, so the Events stay)
 *
 * Only one message is ever in flight, so both shards sleep between hops: this measures
 * the wakeup path (eventfd write, epoll_wait return, context switch) more than the queue.
 * Reports round trips/s, latency p50/p99/p99.9/max and eventfd writes per round trip.
 */
#include "ec_framework.h"
#include "event.h"
#include "scheduler.h"
#include "sp_async.h"

#include "bench_common.h"

#include <sys/socket.h>

static struct {
  bench_opts o;
  int event_mode;
  long target;      /* warmup + rounds */
  long started;     /* shard 0: round trips started */
  uint64_t t_send;  /* shard 0: when the current round trip started */
  uint64_t t_first; /* shard 0: start of the first measured round trip */
  uint64_t *lat;    /* shard 0: measured round-trip times */
  Event *ev[2];     /* event mode: ev[i] owned by shard i */
  int fds[2][2];
  atomic_int errors; /* posts that failed (any shard) */
  bench_latch done;
} P;

static void on_shard0(void);

/* ---- transport --------------------------------------------------------------------------- */

static void run_on0(void *arg)
{
  (void)arg;
  on_shard0();
}

static void run_on1(void *arg)
{
  (void)arg;
  if (ec_shard_run(0, run_on0, NULL) < 0)
    atomic_fetch_add(&P.errors, 1);
}

static int ev_on0(Event *e, int eventtype, void *closure, struct timeval *now)
{
  (void)eventtype;
  (void)closure;
  (void)now;
  on_shard0();
  return e->mask;
}

static int ev_on1(Event *e, int eventtype, void *closure, struct timeval *now)
{
  (void)eventtype;
  (void)closure;
  (void)now;
  if (ec_schedule_event_and_dispatch(P.ev[0], E_READ) < 0)
    atomic_fetch_add(&P.errors, 1);
  return e->mask;
}

static int send_to(int shard)
{
  if (P.event_mode)
    return ec_schedule_event_and_dispatch(P.ev[shard], E_READ);
  return ec_shard_run(shard, shard == 0 ? run_on0 : run_on1, NULL);
}

/* ---- the measurement (shard 0) -------------------------------------------------------------- */

/* Called on shard 0 once to start and then once per returning token. */
static void on_shard0(void)
{
  uint64_t t = bench_now_ns();

  if (P.started > P.o.warmup)
    P.lat[P.started - P.o.warmup - 1] = t - P.t_send;
  if (P.started == P.target) {
    bench_latch_open(&P.done);
    return;
  }
  P.started++;
  if (P.started == P.o.warmup + 1)
    P.t_first = t;
  P.t_send = t;
  if (send_to(1) < 0) {
    atomic_fetch_add(&P.errors, 1);
    bench_latch_open(&P.done);
  }
}

/* ---- setup ------------------------------------------------------------------------------------
 */

static void noop(void *arg)
{
  (void)arg;
}

static int setup_events(void)
{
  EventFunc cb[2] = {ev_on0, ev_on1};

  for (int i = 0; i < 2; i++) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, P.fds[i]) < 0) {
      perror("socketpair");
      return -1;
    }
    P.ev[i] = build_fd_event(P.fds[i][0], E_READ, E_AGGRESSIVE_NONE, cb[i], NULL);
    if (P.ev[i] == NULL || ec_event_place(P.ev[i], i) < 0 || ec_schedule_event(P.ev[i]) < 0) {
      fprintf(stderr, "bench_pingpong: cannot build and schedule Event %d\n", i);
      return -1;
    }
  }
  return 0;
}

static uint64_t wakeups(void)
{
  ec_shard_stats a, b;

  ec_shard_stats_get(0, &a);
  ec_shard_stats_get(1, &b);
  return a.wakeups_sent + b.wakeups_sent;
}

int main(int argc, char **argv)
{
  bench_opts o = {.rounds = 50000, .warmup = 1000, .shards = 2, .mode = "run"};
  ec_framework_options fo;
  uint64_t w0, w1, x0, x1;
  bench_lat l;
  int finished, ok, rc;
  double secs;

  bench_parse(argc, argv, &o,
              "  --mode run    ec_shard_run closures (default)\n"
              "  --mode event  schedule_event_and_dispatch on the other shard's Event\n");
  if (strcmp(o.mode, "event") != 0 && strcmp(o.mode, "run") != 0)
    bench_usage(argv[0], "  --mode is run or event\n");
  if (o.shards < 2)
    o.shards = 2;
  P.o = o;
  P.event_mode = strcmp(o.mode, "event") == 0;
  P.target = o.warmup + o.rounds;
  P.fds[0][0] = P.fds[0][1] = P.fds[1][0] = P.fds[1][1] = -1;
  P.lat = calloc((size_t)o.rounds, sizeof(*P.lat));
  if (P.lat == NULL)
    return 1;
  bench_latch_init(&P.done);

  memset(&fo, 0, sizeof(fo));
  fo.shards = o.shards;
  rc = ec_framework_init(&fo);
  if (rc < 0) {
    fprintf(stderr, "bench_pingpong: ec_framework_init: %s\n", strerror(-rc));
    return 1;
  }
  if (P.event_mode && setup_events() < 0)
    return 1;
  rc = ec_framework_start();
  if (rc < 0) {
    fprintf(stderr, "bench_pingpong: ec_framework_start: %s\n", strerror(-rc));
    return 1;
  }
  /* The Events' schedules are handled before these return (per-producer order). */
  ec_shard_call(0, noop, NULL);
  ec_shard_call(1, noop, NULL);

  w0 = wakeups();
  x0 = bench_write8();
  if (send_to(0) < 0)
    atomic_fetch_add(&P.errors, 1);
  finished = bench_latch_wait(&P.done, 120);
  w1 = wakeups();
  x1 = bench_write8();
  secs = finished ? (double)(P.done.at_ns - P.t_first) / 1e9 : 0;
  ok = finished && atomic_load(&P.errors) == 0;
  l = bench_lat_summary(P.lat, ok ? (size_t)o.rounds : 0);

  BENCH_PRINT(o.json, BF_S("bench", "pingpong"),
              BF_S("impl", P.event_mode ? "ecshard-event" : "ecshard-run"),
              BF_U("rounds", o.rounds), BF_D("seconds", secs),
              BF_D("rtt_per_s", secs > 0 ? (double)o.rounds / secs : 0), BF_D("p50_us", l.p50_us),
              BF_D("p99_us", l.p99_us), BF_D("p999_us", l.p999_us), BF_D("max_us", l.max_us),
              BF_D("mean_us", l.mean_us),
              BF_D("wakeups_per_rt", (double)(w1 - w0) / (double)P.target),
              BF_D("write8_per_rt", (double)(x1 - x0) / (double)P.target),
              BF_U("errors", atomic_load(&P.errors)), BF_B("ok", ok));

  ec_framework_stop();
  ec_framework_join(); /* closes the Events' descriptors (fds[i][0]) and frees them */
  for (int i = 0; i < 2; i++)
    if (P.fds[i][1] >= 0)
      close(P.fds[i][1]);
  bench_latch_destroy(&P.done);
  free(P.lat);
  return ok ? 0 : 1;
}
