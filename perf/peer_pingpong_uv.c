/*
 * perf/peer_pingpong_uv.c - bench_pingpong's libuv equivalent.
 *
 *   peer_pingpong_uv [--rounds N] [--warmup W] [--json]
 *
 * Two threads each run a libuv loop with one uv_async_t. The token is a slot (an atomic
 * counter) written before each uv_async_send: loop 0 sends to loop 1, whose callback
 * sends back. Round trips are timed on loop 0's thread with CLOCK_MONOTONIC, exactly as
 * bench_pingpong times them on shard 0. Same output keys.
 */
#include "bench_common.h"

#include <uv.h>

static struct {
  bench_opts o;
  long target, started;
  uint64_t t_send, t_first, *lat;
  uv_loop_t loop[2];
  uv_async_t async[2];
  _Atomic long slot; /* the token: round number, written before each send */
  atomic_int stopping;
  bench_latch done;
} U;

static void on_async0(uv_async_t *h)
{
  uint64_t t = bench_now_ns();

  if (atomic_load_explicit(&U.stopping, memory_order_acquire)) {
    uv_close((uv_handle_t *)h, NULL);
    return;
  }
  if (U.started > U.o.warmup)
    U.lat[U.started - U.o.warmup - 1] = t - U.t_send;
  if (U.started == U.target) {
    bench_latch_open(&U.done);
    return;
  }
  U.started++;
  if (U.started == U.o.warmup + 1)
    U.t_first = t;
  U.t_send = t;
  /* Pairs with the acquire load in on_async1 (uv_async_send also orders, but say it). */
  atomic_store_explicit(&U.slot, U.started, memory_order_release);
  uv_async_send(&U.async[1]);
}

static void on_async1(uv_async_t *h)
{
  if (atomic_load_explicit(&U.stopping, memory_order_acquire)) {
    uv_close((uv_handle_t *)h, NULL);
    return;
  }
  (void)atomic_load_explicit(&U.slot, memory_order_acquire);
  uv_async_send(&U.async[0]);
}

static void *loop_main(void *arg)
{
  uv_run(arg, UV_RUN_DEFAULT);
  return NULL;
}

int main(int argc, char **argv)
{
  bench_opts o = {.rounds = 50000, .warmup = 1000, .mode = "async"};
  pthread_t th[2];
  uint64_t x0, x1;
  bench_lat l;
  int finished;
  double secs;

  bench_parse(argc, argv, &o, NULL);
  U.o = o;
  U.target = o.warmup + o.rounds;
  U.lat = calloc((size_t)o.rounds, sizeof(*U.lat));
  if (U.lat == NULL)
    return 1;
  bench_latch_init(&U.done);
  if (uv_loop_init(&U.loop[0]) != 0 || uv_loop_init(&U.loop[1]) != 0 ||
      uv_async_init(&U.loop[0], &U.async[0], on_async0) != 0 ||
      uv_async_init(&U.loop[1], &U.async[1], on_async1) != 0)
    return 1;
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, loop_main, &U.loop[i]);

  x0 = bench_write8();
  uv_async_send(&U.async[0]); /* the first callback on loop 0 starts round 1 */
  finished = bench_latch_wait(&U.done, 120);
  x1 = bench_write8();
  secs = finished ? (double)(U.done.at_ns - U.t_first) / 1e9 : 0;
  l = bench_lat_summary(U.lat, finished ? (size_t)o.rounds : 0);

  BENCH_PRINT(o.json, BF_S("bench", "pingpong"), BF_S("impl", "libuv"), BF_U("rounds", o.rounds),
              BF_D("seconds", secs), BF_D("rtt_per_s", secs > 0 ? (double)o.rounds / secs : 0),
              BF_D("p50_us", l.p50_us), BF_D("p99_us", l.p99_us), BF_D("p999_us", l.p999_us),
              BF_D("max_us", l.max_us), BF_D("mean_us", l.mean_us),
              BF_D("wakeups_per_rt", (double)(x1 - x0) / (double)U.target),
              BF_D("write8_per_rt", (double)(x1 - x0) / (double)U.target), BF_U("errors", 0),
              BF_B("ok", finished));

  atomic_store_explicit(&U.stopping, 1, memory_order_release);
  uv_async_send(&U.async[0]);
  uv_async_send(&U.async[1]);
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    uv_loop_close(&U.loop[i]);
  }
  bench_latch_destroy(&U.done);
  free(U.lat);
  return finished ? 0 : 1;
}
