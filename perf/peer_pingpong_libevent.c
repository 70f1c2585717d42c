/*
 * perf/peer_pingpong_libevent.c - bench_pingpong's libevent equivalent.
 *
 *   peer_pingpong_libevent [--rounds N] [--warmup W] [--json]
 *
 * Two threads each run an event_base (evthread_use_pthreads) with one persistent user
 * event; each side event_active()s the other's event from its own thread. Timed on
 * base 0's thread, as bench_pingpong. Same output keys.
 */
#include "bench_common.h"

#include <event2/event.h>
#include <event2/thread.h>

static struct {
  bench_opts o;
  long target, started;
  uint64_t t_send, t_first, *lat;
  struct event_base *base[2];
  struct event *ev[2];
  bench_latch done;
} L;

static void on_ev0(evutil_socket_t fd, short what, void *arg)
{
  uint64_t t = bench_now_ns();

  (void)fd;
  (void)what;
  (void)arg;
  if (L.started > L.o.warmup)
    L.lat[L.started - L.o.warmup - 1] = t - L.t_send;
  if (L.started == L.target) {
    bench_latch_open(&L.done);
    return;
  }
  L.started++;
  if (L.started == L.o.warmup + 1)
    L.t_first = t;
  L.t_send = t;
  event_active(L.ev[1], EV_READ, 0);
}

static void on_ev1(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  (void)arg;
  event_active(L.ev[0], EV_READ, 0);
}

static void *loop_main(void *arg)
{
  event_base_loop(arg, EVLOOP_NO_EXIT_ON_EMPTY);
  return NULL;
}

int main(int argc, char **argv)
{
  bench_opts o = {.rounds = 50000, .warmup = 1000, .mode = "active"};
  event_callback_fn cb[2] = {on_ev0, on_ev1};
  pthread_t th[2];
  uint64_t x0, x1;
  bench_lat l;
  int finished;
  double secs;

  bench_parse(argc, argv, &o, NULL);
  L.o = o;
  L.target = o.warmup + o.rounds;
  L.lat = calloc((size_t)o.rounds, sizeof(*L.lat));
  if (L.lat == NULL)
    return 1;
  bench_latch_init(&L.done);
  if (evthread_use_pthreads() != 0)
    return 1;
  for (int i = 0; i < 2; i++) {
    L.base[i] = event_base_new();
    if (L.base[i] == NULL || (L.ev[i] = event_new(L.base[i], -1, EV_PERSIST, cb[i], NULL)) == NULL)
      return 1;
  }
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, loop_main, L.base[i]);

  x0 = bench_write8();
  event_active(L.ev[0], EV_READ, 0); /* the first callback on base 0 starts round 1 */
  finished = bench_latch_wait(&L.done, 120);
  x1 = bench_write8();
  secs = finished ? (double)(L.done.at_ns - L.t_first) / 1e9 : 0;
  l = bench_lat_summary(L.lat, finished ? (size_t)o.rounds : 0);

  BENCH_PRINT(o.json, BF_S("bench", "pingpong"), BF_S("impl", "libevent"), BF_U("rounds", o.rounds),
              BF_D("seconds", secs), BF_D("rtt_per_s", secs > 0 ? (double)o.rounds / secs : 0),
              BF_D("p50_us", l.p50_us), BF_D("p99_us", l.p99_us), BF_D("p999_us", l.p999_us),
              BF_D("max_us", l.max_us), BF_D("mean_us", l.mean_us),
              BF_D("wakeups_per_rt", (double)(x1 - x0) / (double)L.target),
              BF_D("write8_per_rt", (double)(x1 - x0) / (double)L.target), BF_U("errors", 0),
              BF_B("ok", finished));

  for (int i = 0; i < 2; i++)
    event_base_loopbreak(L.base[i]); /* thread-safe with evthread */
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    event_free(L.ev[i]);
    event_base_free(L.base[i]);
  }
  bench_latch_destroy(&L.done);
  free(L.lat);
  return finished ? 0 : 1;
}
