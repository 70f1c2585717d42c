/*
 * perf/bench_jobs.c - thread-pool job round trips: shard -> worker -> owning shard.
 *
 *   bench_jobs [--shards S] [--workers T] [--window W] [--jobs N] [--work NS] [--json]
 *
 * Each of S shards keeps W jobs in flight on a pool of T worker threads until it has
 * completed N round trips. A round trip is what a suspended session costs: the shard
 * queues a job (ec_queue_async_job), a worker runs its work function (NS nanoseconds of
 * spinning, 0 by default: the cost of the machinery alone), and the completion
 * (ECTP_COMPLETE_CALLBACK_SCHED) runs back on the shard that queued it, which queues the
 * job again until N are done. Latency is measured per round trip on the shard, from the
 * queue call to the completion callback. With --window 1 every round trip waits for the
 * previous one: the latency of one job on an idle system.
 *
 * peer_jobs_uv does the same with S libuv loops and uv_queue_work on a libuv thread pool of
 * T threads (UV_THREADPOOL_SIZE). Same keys in the result line. Exit status 0 when every
 * check passed (every shard completed exactly N, every completion on the right shard, no
 * refused queue call).
 */
#include "ec_framework.h"
#include "ec_thread_pool.h"

#include "bench_common.h"

#include <sched.h>

#define MAX_SHARDS 64

typedef struct bjob {
  ec_async_job job; /* first: the completion gets &bjob->job */
  uint64_t t0;
} bjob;

typedef struct shard_state {
  _Alignas(64) int id;
  long issued, done;
  long wrong_shard, refused;
  uint64_t *lat;
  bjob *jobs;
} shard_state;

static struct {
  int shards, workers, window, json, job_class;
  long jobs;
  uint64_t work_ns;
  shard_state st[MAX_SHARDS];
  atomic_int remaining; /* shards not finished yet */
  bench_latch done;
} B;

static void spin(uint64_t ns)
{
  uint64_t end;

  if (ns == 0)
    return;
  end = bench_now_ns() + ns;
  while (bench_now_ns() < end)
    ;
}

static void work(ec_async_job *job, void *closure)
{
  (void)job;
  (void)closure;
  spin(B.work_ns);
}

static void completed(ec_async_job *job, void *closure)
{
  bjob *j = (bjob *)job;
  shard_state *st = closure;
  uint64_t t = bench_now_ns();

  if (ec_shard_self() != st->id)
    st->wrong_shard++;
  st->lat[st->done++] = t - j->t0;
  if (st->issued < B.jobs) {
    st->issued++;
    j->t0 = t;
    if (ec_queue_async_job(&j->job) != 1)
      st->refused++;
  }
  if (st->done == B.jobs && atomic_fetch_sub(&B.remaining, 1) == 1)
    bench_latch_open(&B.done);
}

/* Runs on shard st->id: puts the first window of jobs in flight. */
static void kick(void *arg)
{
  shard_state *st = arg;

  for (int i = 0; i < B.window && st->issued < B.jobs; i++) {
    bjob *j = &st->jobs[i];

    st->issued++;
    j->t0 = bench_now_ns();
    if (ec_queue_async_job(&j->job) != 1)
      st->refused++;
  }
}

static void usage(const char *prog)
{
  fprintf(stderr,
          "usage: %s [--shards S] [--workers T] [--window W] [--jobs N] [--work NS] [--json]\n",
          prog);
  exit(2);
}

static void parse(int argc, char **argv)
{
  B.shards = 1;
  B.workers = 1;
  B.window = 256;
  B.jobs = 1000000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(a, "--json") == 0) {
      B.json = 1;
      continue;
    }
    if (strcmp(a, "--shards") == 0)
      B.shards = (int)bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--workers") == 0)
      B.workers = (int)bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--window") == 0)
      B.window = (int)bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--jobs") == 0)
      B.jobs = bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--work") == 0)
      B.work_ns = (uint64_t)bench_parse_long(argv[0], a, v, 0);
    else
      usage(argv[0]);
    i++;
  }
  if (B.shards > MAX_SHARDS || B.workers > 1024)
    usage(argv[0]);
}

int main(int argc, char **argv)
{
  char config[256];
  ec_framework_options o = {0};
  uint64_t t0, c0, c1, x0, x1, w0 = 0, w1 = 0, m0 = 0, m1 = 0;
  uint64_t *all;
  long total, errors = 0;
  ec_thread_pool_stats ps;
  bench_lat l;
  double secs;
  int ok;

  parse(argc, argv);
  snprintf(config, sizeof(config),
           "log = { level = \"error\"; }; threadpool = { Bench = { concurrency = %d; }; };",
           B.workers);
  o.shards = B.shards;
  o.config_text = config;
  if (ec_framework_init(&o) < 0 || ec_framework_start() < 0) {
    fprintf(stderr, "bench_jobs: cannot start the framework\n");
    return 1;
  }
  B.job_class = ec_thread_pool_name_to_class("Bench");
  bench_latch_init(&B.done);
  atomic_store(&B.remaining, B.shards);
  for (int s = 0; s < B.shards; s++) {
    shard_state *st = &B.st[s];

    st->id = s;
    st->lat = calloc((size_t)B.jobs, sizeof(uint64_t));
    st->jobs = calloc((size_t)B.window, sizeof(bjob));
    if (st->lat == NULL || st->jobs == NULL) {
      fprintf(stderr, "bench_jobs: out of memory\n");
      return 1;
    }
    memset(st->lat, 0xff, sizeof(uint64_t) * (size_t)B.jobs); /* pre-fault: no page faults
                                                                 while the clock runs */
    for (int i = 0; i < B.window; i++) {
      ec_async_job *j = &st->jobs[i].job;

      j->job_class = B.job_class;
      j->worker = work;
      j->completion = ECTP_COMPLETE_CALLBACK_SCHED;
      j->r.cb.func = completed;
      j->r.cb.closure = st;
    }
  }
  usleep(50000); /* let every thread reach its first sleep */
  for (int s = 0; s < B.shards; s++) {
    ec_shard_stats ss;

    if (ec_shard_stats_get(s, &ss) == 0) {
      w0 += ss.wakeups_sent;
      m0 += ss.messages;
    }
  }
  x0 = bench_write8();
  c0 = bench_cpu_ns();
  t0 = bench_now_ns();
  for (int s = 0; s < B.shards; s++)
    ec_shard_run(s, kick, &B.st[s]);
  ok = bench_latch_wait(&B.done, 120);
  c1 = bench_cpu_ns();
  x1 = bench_write8();
  for (int s = 0; s < B.shards; s++) {
    ec_shard_stats ss;

    if (ec_shard_stats_get(s, &ss) == 0) {
      w1 += ss.wakeups_sent;
      m1 += ss.messages;
    }
  }
  secs = ok ? (double)(B.done.at_ns - t0) / 1e9 : 0;
  ec_thread_pool_stats_get(B.job_class, &ps);
  ec_framework_stop();
  ec_framework_join();

  total = B.jobs * B.shards;
  all = malloc(sizeof(uint64_t) * (size_t)total);
  for (int s = 0; s < B.shards; s++) {
    shard_state *st = &B.st[s];

    if (st->done != B.jobs || st->wrong_shard != 0 || st->refused != 0)
      errors++;
    memcpy(all + s * B.jobs, st->lat, sizeof(uint64_t) * (size_t)B.jobs);
    free(st->lat);
    free(st->jobs);
  }
  l = bench_lat_summary(all, (size_t)total);
  free(all);
  ok = ok && errors == 0;
  BENCH_PRINT(B.json, BF_S("bench", "jobs"), BF_S("impl", "ecshard"), BF_U("shards", B.shards),
              BF_U("workers", B.workers), BF_U("window", B.window), BF_U("work_ns", B.work_ns),
              BF_U("jobs", total), BF_D("seconds", secs),
              BF_D("jobs_per_s", secs > 0 ? (double)total / secs : 0), BF_D("p50_us", l.p50_us),
              BF_D("p99_us", l.p99_us), BF_D("p999_us", l.p999_us), BF_D("max_us", l.max_us),
              BF_D("cpu_ns_per_job", (double)(c1 - c0) / (double)total),
              BF_D("write8_per_1000", 1000.0 * (double)(x1 - x0) / (double)total),
              BF_D("shard_wakeups_per_1000", 1000.0 * (double)(w1 - w0) / (double)total),
              BF_D("shard_messages_per_1000", 1000.0 * (double)(m1 - m0) / (double)total),
              BF_D("worker_wakeups_per_1000", 1000.0 * (double)ps.wakeups / (double)total),
              BF_U("pool_done", ps.done), BF_U("errors", errors), BF_B("ok", ok));
  bench_latch_destroy(&B.done);
  return ok ? 0 : 1;
}
