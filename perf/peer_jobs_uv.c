/*
 * perf/peer_jobs_uv.c - bench_jobs's libuv equivalent: uv_queue_work round trips.
 *
 *   peer_jobs_uv [--shards S] [--workers T] [--window W] [--jobs N] [--work NS] [--json]
 *
 * S threads each run a uv_loop_t and keep W uv_work_t requests in flight on libuv's thread
 * pool, sized to T threads with UV_THREADPOOL_SIZE (set before the pool starts). The work
 * callback spins NS nanoseconds on a pool thread; the after-work callback runs on the loop
 * that queued the request, records the round trip and queues the request again until the
 * loop has completed N. This is libuv's documented way to run blocking work and come back
 * to the loop, so it is the same round trip bench_jobs measures. Same output keys.
 */
#include "bench_common.h"

#include <uv.h>

#define MAX_LOOPS 64

typedef struct ujob {
  uv_work_t req;
  uint64_t t0;
  struct loop_state *st;
} ujob;

typedef struct loop_state {
  _Alignas(64) uv_loop_t loop;
  pthread_t thread;
  long issued, done, refused;
  uint64_t *lat;
  ujob *jobs;
} loop_state;

static struct {
  int loops, workers, window, json;
  long jobs;
  uint64_t work_ns;
  loop_state st[MAX_LOOPS];
  atomic_int remaining;
  pthread_barrier_t go;
  uint64_t t_start;
  bench_latch done;
} U;

static void spin(uint64_t ns)
{
  uint64_t end;

  if (ns == 0)
    return;
  end = bench_now_ns() + ns;
  while (bench_now_ns() < end)
    ;
}

static void work_cb(uv_work_t *req)
{
  (void)req;
  spin(U.work_ns);
}

static void after_cb(uv_work_t *req, int status)
{
  ujob *j = (ujob *)req;
  loop_state *st = j->st;
  uint64_t t = bench_now_ns();

  (void)status;
  st->lat[st->done++] = t - j->t0;
  if (st->issued < U.jobs) {
    st->issued++;
    j->t0 = t;
    if (uv_queue_work(&st->loop, &j->req, work_cb, after_cb) != 0)
      st->refused++;
  }
  if (st->done == U.jobs && atomic_fetch_sub(&U.remaining, 1) == 1)
    bench_latch_open(&U.done);
}

static void *loop_main(void *arg)
{
  loop_state *st = arg;

  pthread_barrier_wait(&U.go);
  for (int i = 0; i < U.window && st->issued < U.jobs; i++) {
    ujob *j = &st->jobs[i];

    j->st = st;
    st->issued++;
    j->t0 = bench_now_ns();
    if (uv_queue_work(&st->loop, &j->req, work_cb, after_cb) != 0)
      st->refused++;
  }
  uv_run(&st->loop, UV_RUN_DEFAULT); /* returns when no request is left */
  return NULL;
}

static void usage(const char *prog)
{
  fprintf(stderr,
          "usage: %s [--shards S] [--workers T] [--window W] [--jobs N] [--work NS] [--json]\n",
          prog);
  exit(2);
}

int main(int argc, char **argv)
{
  char threads[16];
  uint64_t c0, c1, x0, x1, *all;
  long total, errors = 0;
  bench_lat l;
  double secs;
  int ok;

  U.loops = 1;
  U.workers = 1;
  U.window = 256;
  U.jobs = 1000000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(a, "--json") == 0) {
      U.json = 1;
      continue;
    }
    if (strcmp(a, "--shards") == 0)
      U.loops = (int)bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--workers") == 0)
      U.workers = (int)bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--window") == 0)
      U.window = (int)bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--jobs") == 0)
      U.jobs = bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--work") == 0)
      U.work_ns = (uint64_t)bench_parse_long(argv[0], a, v, 0);
    else
      usage(argv[0]);
    i++;
  }
  if (U.loops > MAX_LOOPS || U.workers > 1024)
    usage(argv[0]);
  /* libuv sizes its pool from the environment when the first request starts it. */
  snprintf(threads, sizeof(threads), "%d", U.workers);
  setenv("UV_THREADPOOL_SIZE", threads, 1);

  bench_latch_init(&U.done);
  atomic_store(&U.remaining, U.loops);
  pthread_barrier_init(&U.go, NULL, (unsigned)U.loops + 1);
  for (int s = 0; s < U.loops; s++) {
    loop_state *st = &U.st[s];

    uv_loop_init(&st->loop);
    st->lat = calloc((size_t)U.jobs, sizeof(uint64_t));
    st->jobs = calloc((size_t)U.window, sizeof(ujob));
    if (st->lat == NULL || st->jobs == NULL) {
      fprintf(stderr, "peer_jobs_uv: out of memory\n");
      return 1;
    }
    memset(st->lat, 0xff, sizeof(uint64_t) * (size_t)U.jobs); /* pre-fault: no page faults
                                                                 while the clock runs */
    pthread_create(&st->thread, NULL, loop_main, st);
  }
  /* Start libuv's pool before the clock runs, as ecshard's pool is started by then. */
  {
    uv_loop_t warm;
    uv_work_t w;

    uv_loop_init(&warm);
    uv_queue_work(&warm, &w, work_cb, NULL);
    uv_run(&warm, UV_RUN_DEFAULT);
    uv_loop_close(&warm);
  }
  usleep(50000);
  x0 = bench_write8();
  c0 = bench_cpu_ns();
  U.t_start = bench_now_ns();
  pthread_barrier_wait(&U.go);
  ok = bench_latch_wait(&U.done, 120);
  c1 = bench_cpu_ns();
  x1 = bench_write8();
  secs = ok ? (double)(U.done.at_ns - U.t_start) / 1e9 : 0;
  for (int s = 0; s < U.loops; s++)
    pthread_join(U.st[s].thread, NULL);

  total = U.jobs * U.loops;
  all = malloc(sizeof(uint64_t) * (size_t)total);
  for (int s = 0; s < U.loops; s++) {
    loop_state *st = &U.st[s];

    if (st->done != U.jobs || st->refused != 0)
      errors++;
    memcpy(all + s * U.jobs, st->lat, sizeof(uint64_t) * (size_t)U.jobs);
    uv_loop_close(&st->loop);
    free(st->lat);
    free(st->jobs);
  }
  l = bench_lat_summary(all, (size_t)total);
  free(all);
  ok = ok && errors == 0;
  BENCH_PRINT(U.json, BF_S("bench", "jobs"), BF_S("impl", "libuv"), BF_U("shards", U.loops),
              BF_U("workers", U.workers), BF_U("window", U.window), BF_U("work_ns", U.work_ns),
              BF_U("jobs", total), BF_D("seconds", secs),
              BF_D("jobs_per_s", secs > 0 ? (double)total / secs : 0), BF_D("p50_us", l.p50_us),
              BF_D("p99_us", l.p99_us), BF_D("p999_us", l.p999_us), BF_D("max_us", l.max_us),
              BF_D("cpu_ns_per_job", (double)(c1 - c0) / (double)total),
              BF_D("write8_per_1000", 1000.0 * (double)(x1 - x0) / (double)total),
              BF_D("shard_wakeups_per_1000", 0), BF_U("pool_done", total), BF_U("errors", errors),
              BF_B("ok", ok));
  pthread_barrier_destroy(&U.go);
  bench_latch_destroy(&U.done);
  return ok ? 0 : 1;
}
