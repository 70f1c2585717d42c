/*
 * test/test_pool.c - worker pools and async jobs (pool/pool.c, pool/completion.c): every
 * completion mode and where it runs, skip_completion and ec_async_complete_tail, the
 * backlog (a shard fails fast, other threads wait), a completion for a session whose
 * connection was closed meanwhile, 100k jobs from shards and foreign threads, jobs
 * queued before start, shutdown that drains or drops, configuration and statistics.
 */
#include "unit.h"

#include "ec_thread_pool.h"
#include "event.h"
#include "scheduler.h"
#include "sp_async.h"

#include <pthread.h>
#include <semaphore.h>
#include <sys/socket.h>
#include <time.h>

/* A small pool to make queue states deterministic: one worker, backlog 2. */
static const char tiny_config[] = "threadpool = { Tiny = { concurrency = 1; backlog = 2; }; "
                                  "Solo = { concurrency = 1; }; Quad = { concurrency = 4; }; };";

static int load(const int *v)
{
  return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static void bump(int *v)
{
  __atomic_add_fetch(v, 1, __ATOMIC_ACQ_REL);
}

static void start_with(int shards, const char *text)
{
  ec_framework_options o = unit_options(shards);

  o.config_text = text;
  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
}

static void finish(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
}

static int wait_sem(sem_t *s, int ms)
{
  struct timespec dl;
  int rc;

  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += ms / 1000;
  dl.tv_nsec += (long)(ms % 1000) * 1000000;
  if (dl.tv_nsec >= 1000000000) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000;
  }
  while ((rc = sem_timedwait(s, &dl)) < 0 && errno == EINTR)
    ;
  return rc == 0;
}

/* A test job: records where its work and its completion ran. */
typedef struct tjob {
  ec_async_job job; /* first: completions get &tjob->job */
  int work_ran, done_ran;
  int work_shard, done_shard;
  pthread_t work_thread, done_thread;
  int expect_shard;
  sem_t *gate;      /* work waits on it when set */
  int *counter;     /* completion adds 1 when set */
  int skipped_seen; /* ec_async_job_skipped() in the completion */
} tjob;

static void t_work(ec_async_job *job, void *closure)
{
  tjob *t = (tjob *)job;

  (void)closure;
  if (t->gate != NULL)
    while (sem_wait(t->gate) < 0 && errno == EINTR)
      ;
  t->work_shard = ec_shard_self();
  t->work_thread = pthread_self();
  bump(&t->work_ran);
}

static void t_done(ec_async_job *job, void *closure)
{
  tjob *t = (tjob *)job;

  (void)closure;
  t->done_shard = ec_shard_self();
  t->done_thread = pthread_self();
  t->skipped_seen = ec_async_job_skipped(job);
  if (t->counter != NULL)
    bump(t->counter);
  bump(&t->done_ran);
}

static void tjob_init(tjob *t, int job_class, int completion)
{
  memset(t, 0, sizeof(*t));
  t->job.job_class = job_class;
  t->job.worker = t_work;
  t->job.completion = completion;
  t->job.r.cb.func = t_done;
  t->expect_shard = -2;
}

/* ---- NONE, CALLBACK, SEMAPHORE, SYNC ------------------------------------------------------ */

static int none_count, none_bad;

static void none_work(ec_async_job *job, void *closure)
{
  (void)job;
  if (ec_shard_self() != -1 || is_scheduler_thread())
    bump(&none_bad); /* the work must run on a worker, not on a shard */
  bump((int *)closure);
}

/* NONE with free_on_completion_memtype: the work runs on a worker, the job is freed. */
static void t_none_frees(void)
{
  int64_t base;

  start_with(2, NULL);
  base = unit_live(MEMTYPE_EC_ASYNC_JOB);
  none_count = none_bad = 0;
  for (int i = 0; i < 100; i++) {
    ec_async_job *j = ec_malloc_size(MEMTYPE_EC_ASYNC_JOB, sizeof(*j));

    memset(j, 0, sizeof(*j));
    j->job_class = i % 2 ? ECTP_CLASS_IO : ECTP_CLASS_CPU;
    j->worker = none_work;
    j->closure = &none_count;
    j->free_on_completion_memtype = MEMTYPE_EC_ASYNC_JOB;
    ASSERT_EQ(ec_queue_async_job(j), 1);
  }
  ASSERT_TRUE(unit_wait_ge(&none_count, 100, 10000));
  for (int i = 0; i < 5000 && unit_live(MEMTYPE_EC_ASYNC_JOB) != base; i++)
    usleep(1000);
  ASSERT_EQ(unit_live(MEMTYPE_EC_ASYNC_JOB), base);
  ASSERT_EQ(load(&none_bad), 0);
  finish();
}

/* CALLBACK runs on the worker thread that ran the work, right after it. */
static void t_callback_on_worker(void)
{
  tjob t[8];

  start_with(2, NULL);
  for (int i = 0; i < 8; i++) {
    tjob_init(&t[i], ECTP_CLASS_IO, ECTP_COMPLETE_CALLBACK);
    ASSERT_EQ(ec_queue_async_job(&t[i].job), 1);
  }
  for (int i = 0; i < 8; i++) {
    ASSERT_TRUE(unit_wait_ge(&t[i].done_ran, 1, 10000));
    ASSERT_EQ(t[i].work_ran, 1);
    ASSERT_EQ(t[i].done_shard, -1);
    ASSERT_TRUE(pthread_equal(t[i].work_thread, t[i].done_thread));
    ASSERT_TRUE(!pthread_equal(t[i].done_thread, pthread_self()));
  }
  finish();
}

static void sema_work(ec_async_job *job, void *closure)
{
  (void)job;
  usleep(20000); /* the waiter must really wait */
  bump((int *)closure);
}

/* SEMAPHORE posts r.sema after the work. */
static void t_semaphore(void)
{
  ec_async_job j;
  sem_t s;
  int ran = 0;

  start_with(1, NULL);
  sem_init(&s, 0, 0);
  memset(&j, 0, sizeof(j));
  j.job_class = ECTP_CLASS_CPU;
  j.worker = sema_work;
  j.closure = &ran;
  j.completion = ECTP_COMPLETE_SEMAPHORE;
  j.r.sema = &s;
  ASSERT_EQ(ec_queue_async_job(&j), 1);
  ASSERT_TRUE(wait_sem(&s, 10000));
  ASSERT_EQ(load(&ran), 1);
  sem_destroy(&s);
  finish();
}

struct on_shard {
  tjob *t;
  int rc, err;
};

static void queue_here(void *arg)
{
  struct on_shard *q = arg;

  q->t->expect_shard = ec_shard_self();
  errno = 0;
  q->rc = ec_queue_async_job(&q->t->job);
  q->err = errno;
}

/* SYNC runs the work in the caller: a foreign thread, a shard, or before init. */
static void t_sync(void)
{
  tjob t;
  struct on_shard q = {.t = &t};
  int64_t base;
  ec_async_job *heap;
  int count = 0;

  tjob_init(&t, ECTP_CLASS_IO, ECTP_COMPLETE_SYNC);
  ASSERT_EQ(ec_queue_async_job(&t.job), 1); /* no framework: still runs */
  ASSERT_EQ(t.work_ran, 1);
  ASSERT_TRUE(pthread_equal(t.work_thread, pthread_self()));

  start_with(2, NULL);
  tjob_init(&t, ECTP_CLASS_CPU, ECTP_COMPLETE_SYNC);
  ASSERT_EQ(ec_queue_async_job(&t.job), 1);
  ASSERT_EQ(t.work_ran, 1); /* done when the call returns */
  ASSERT_TRUE(pthread_equal(t.work_thread, pthread_self()));
  ASSERT_EQ(t.work_shard, -1);

  tjob_init(&t, ECTP_CLASS_CPU, ECTP_COMPLETE_SYNC);
  ASSERT_EQ(ec_shard_call(1, queue_here, &q), 0);
  ASSERT_EQ(q.rc, 1);
  ASSERT_EQ(t.work_ran, 1);
  ASSERT_EQ(t.work_shard, 1); /* inline on the calling shard */

  base = unit_live(MEMTYPE_EC_ASYNC_JOB);
  heap = ec_malloc_size(MEMTYPE_EC_ASYNC_JOB, sizeof(*heap));
  memset(heap, 0, sizeof(*heap));
  heap->job_class = ECTP_CLASS_IO;
  heap->worker = none_work;
  heap->closure = &count;
  heap->completion = ECTP_COMPLETE_SYNC;
  heap->free_on_completion_memtype = MEMTYPE_EC_ASYNC_JOB;
  ASSERT_EQ(ec_queue_async_job(heap), 1);
  ASSERT_EQ(count, 1);
  ASSERT_EQ(unit_live(MEMTYPE_EC_ASYNC_JOB), base);
  finish();
}

/* ---- CALLBACK_SCHED and CALLBACK_SCHED_INST ----------------------------------------------- */

/* CALLBACK_SCHED runs on the shard that queued the job; off the shards, on shard 0. */
static void t_callback_sched(void)
{
  tjob t[3];
  struct on_shard q;

  start_with(2, NULL);
  for (int s = 0; s < 2; s++) {
    tjob_init(&t[s], ECTP_CLASS_IO, ECTP_COMPLETE_CALLBACK_SCHED);
    q = (struct on_shard){.t = &t[s]};
    ASSERT_EQ(ec_shard_call(s, queue_here, &q), 0);
    ASSERT_EQ(q.rc, 1);
  }
  tjob_init(&t[2], ECTP_CLASS_IO, ECTP_COMPLETE_CALLBACK_SCHED);
  t[2].expect_shard = 0;
  ASSERT_EQ(ec_queue_async_job(&t[2].job), 1);
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(unit_wait_ge(&t[i].done_ran, 1, 10000));
    ASSERT_EQ(t[i].work_ran, 1);
    ASSERT_EQ(t[i].work_shard, -1);
    ASSERT_EQ(t[i].done_shard, t[i].expect_shard);
  }
  finish();
}

/* CALLBACK_SCHED_INST runs on the instance named in r.cb.inst. */
static void t_callback_sched_inst(void)
{
  tjob t[2];

  start_with(2, NULL);
  for (int s = 0; s < 2; s++) {
    tjob_init(&t[s], ECTP_CLASS_CPU, ECTP_COMPLETE_CALLBACK_SCHED_INST);
    t[s].job.r.cb.inst = ec_scheduler_inst_get(1 - s);
    ASSERT_EQ(ec_queue_async_job(&t[s].job), 1);
  }
  for (int s = 0; s < 2; s++) {
    ASSERT_TRUE(unit_wait_ge(&t[s].done_ran, 1, 10000));
    ASSERT_EQ(t[s].done_shard, 1 - s);
  }
  finish();
}

/* ---- EVENT and EVENT_INST ------------------------------------------------------------------ */

struct resumed {
  int calls, mask, shard, fd_was, owner;
};

static int resume_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct resumed *r = closure;

  (void)now;
  r->mask = type;
  r->shard = ec_shard_self();
  r->owner = ec_event_shard(e);
  r->fd_was = e->fd;
  if (e->fd >= 0)
    event_close(e);
  bump(&r->calls);
  return 0;
}

/* A suspended Event (built, placed, never scheduled) is resumed on its owner with the mask
 * given to ec_async_wake_event, wherever the job was queued. */
static void t_event_completion(void)
{
  struct resumed r[3];
  tjob t[3];
  int fd[3][2];
  Event *e[3];
  struct on_shard q;
  int64_t base;

  start_with(2, NULL);
  base = unit_live(MEMTYPE_EVENT);
  memset(r, 0, sizeof(r));
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd[i]), 0);
    e[i] = build_fd_event(fd[i][0], E_READ, 0, resume_cb, &r[i]);
    ASSERT_NOT_NULL(e[i]);
    tjob_init(&t[i], ECTP_CLASS_IO, ECTP_COMPLETE_NONE);
    ec_async_wake_event(&t[i].job, e[i], E_READ | E_WRITE);
    ASSERT_EQ(t[i].job.completion, ECTP_COMPLETE_EVENT);
  }
  /* 0: owned by shard 1, queued by main; 1: owned by 1, queued on shard 0; 2: no owner,
   * queued by main (placed on shard 0, where its completion runs). */
  ASSERT_EQ(ec_event_place(e[0], 1), 0);
  ASSERT_EQ(ec_event_place(e[1], 1), 0);
  ASSERT_EQ(ec_queue_async_job(&t[0].job), 1);
  q = (struct on_shard){.t = &t[1]};
  ASSERT_EQ(ec_shard_call(0, queue_here, &q), 0);
  ASSERT_EQ(q.rc, 1);
  ASSERT_EQ(ec_queue_async_job(&t[2].job), 1);
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(unit_wait_ge(&r[i].calls, 1, 10000));
    ASSERT_EQ(r[i].mask, E_READ | E_WRITE);
    ASSERT_EQ(r[i].shard, i < 2 ? 1 : 0);
    ASSERT_EQ(r[i].owner, r[i].shard);
    ASSERT_EQ(t[i].work_ran, 1);
  }
  for (int i = 0; i < 5000 && unit_live(MEMTYPE_EVENT) != base; i++)
    usleep(1000);
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), base); /* each callback returned 0: freed */
  for (int i = 0; i < 3; i++)
    close(fd[i][1]);
  finish();
}

/* EVENT_INST moves a suspended Event to r.e.inst's shard and resumes it there. */
static void t_event_inst(void)
{
  struct resumed r = {0};
  tjob t;
  int fd[2];
  Event *e;

  start_with(2, NULL);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
  e = build_fd_event(fd[0], E_READ, 0, resume_cb, &r);
  ASSERT_EQ(ec_event_place(e, 0), 0);
  tjob_init(&t, ECTP_CLASS_IO, ECTP_COMPLETE_EVENT_INST);
  t.job.r.e.event = e;
  t.job.r.e.mask = E_WRITE;
  t.job.r.e.inst = ec_scheduler_inst_get(1);
  ASSERT_EQ(ec_queue_async_job(&t.job), 1);
  ASSERT_TRUE(unit_wait_ge(&r.calls, 1, 10000));
  ASSERT_EQ(r.shard, 1);
  ASSERT_EQ(r.owner, 1);
  ASSERT_EQ(r.mask, E_WRITE);
  close(fd[1]);
  finish();
}

/* ---- a session suspended while its job runs, and its connection closed meanwhile ---------- */

/*
 * The seed's pattern: a callback reads a request, duplicates its Event, clears it, queues a
 * job that resumes the duplicate, and returns 0. While the job blocks, the connection goes
 * away: the peer closes it, or the application closes the suspended Event itself (say, on
 * a timeout). The completion must still resume the callback so that it can clean up, on
 * the right shard, and nothing may leak.
 */
struct session {
  tjob t;
  Event *dup;
  int state; /* 0 reading, 1 waiting for the job */
  int resumed, resumed_mask, resumed_fd, write_err, read_rc;
  int suspended;
};

static int session_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct session *s = closure;
  char c;
  int needmask;

  (void)now;
  if (s->state == 0) {
    if (event_read(e, &c, 1, &needmask) != 1)
      return needmask ? needmask : E_READ;
    s->dup = ec_malloc(MEMTYPE_EVENT);
    memcpy(s->dup, e, sizeof(*e));
    event_post_dup(s->dup, e);
    clear_event_by_fd(e->fd);
    ec_async_wake_event(&s->t.job, s->dup, E_READ | E_WRITE);
    if (ec_queue_async_job(&s->t.job) != 1)
      return 0; /* the test fails on suspended never being set */
    s->state = 1;
    bump(&s->suspended);
    return 0; /* the scheduler frees the original */
  }
  s->resumed_mask = type;
  s->resumed_fd = e->fd;
  if (e->fd >= 0) {
    errno = 0;
    if (event_write(e, "reply", 5, &needmask) < 0)
      s->write_err = errno;
    s->read_rc = event_read(e, &c, 1, &needmask);
    event_close(e);
  }
  bump(&s->resumed);
  return 0;
}

static void close_dup(void *arg)
{
  struct session *s = arg;

  event_close(s->dup); /* suspended: not scheduled, so this only closes the descriptor */
}

static void run_closed_meanwhile(int app_closes)
{
  struct session s;
  sem_t gate;
  int fd[2];
  Event *e;
  int64_t base;

  start_with(2, NULL);
  base = unit_live(MEMTYPE_EVENT);
  memset(&s, 0, sizeof(s));
  sem_init(&gate, 0, 0);
  tjob_init(&s.t, ECTP_CLASS_IO, ECTP_COMPLETE_NONE);
  s.t.gate = &gate;
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
  e = build_fd_event(fd[0], E_READ, 0, session_cb, &s);
  ASSERT_EQ(ec_event_place(e, 1), 0);
  ASSERT_EQ(ec_schedule_event(e), 0);
  ASSERT_EQ(write(fd[1], "x", 1), 1);
  ASSERT_TRUE(unit_wait_ge(&s.suspended, 1, 10000));
  if (app_closes) {
    ASSERT_EQ(ec_shard_call(1, close_dup, &s), 0);
  } else {
    close(fd[1]);
    fd[1] = -1;
  }
  sem_post(&gate); /* the job finishes only now */
  ASSERT_TRUE(unit_wait_ge(&s.resumed, 1, 10000));
  ASSERT_EQ(s.resumed_mask, E_READ | E_WRITE);
  if (app_closes) {
    ASSERT_EQ(s.resumed_fd, -1);
  } else {
    ASSERT_TRUE(s.resumed_fd >= 0);
    ASSERT_EQ(s.write_err, EPIPE); /* the peer is gone */
    ASSERT_EQ(s.read_rc, 0);
  }
  for (int i = 0; i < 5000 && unit_live(MEMTYPE_EVENT) != base; i++)
    usleep(1000);
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), base); /* original and duplicate both freed */
  if (fd[1] >= 0)
    close(fd[1]);
  sem_destroy(&gate);
  finish();
}

static void t_peer_closed_meanwhile(void)
{
  run_closed_meanwhile(0);
}

static void t_app_closed_meanwhile(void)
{
  run_closed_meanwhile(1);
}

/* ---- skip_completion and ec_async_complete_tail ------------------------------------------- */

struct tail_hand {
  tjob t;
  sem_t handed, tail_done;
  int tail_first; /* 1: the tail runs before the work function returns */
};

static void *tail_thread(void *arg)
{
  struct tail_hand *h = arg;

  while (sem_wait(&h->handed) < 0 && errno == EINTR)
    ;
  if (!h->tail_first)
    usleep(20000); /* well after the work function returned */
  ec_async_complete_tail(&h->t.job);
  sem_post(&h->tail_done);
  return NULL;
}

static void tail_work(ec_async_job *job, void *closure)
{
  struct tail_hand *h = closure;

  job->skip_completion = 1; /* decided by the work: somebody else finishes it */
  sem_post(&h->handed);
  if (h->tail_first)
    while (sem_wait(&h->tail_done) < 0 && errno == EINTR)
      ;
  bump(&h->t.work_ran);
}

/* The completion runs exactly once, after both the work returned and the tail was called,
 * in either order. */
static void t_complete_tail(void)
{
  start_with(1, NULL);
  for (int first = 0; first < 2; first++) {
    struct tail_hand h;
    pthread_t th;

    memset(&h, 0, sizeof(h));
    tjob_init(&h.t, ECTP_CLASS_IO, ECTP_COMPLETE_CALLBACK_SCHED);
    h.t.job.worker = tail_work;
    h.t.job.closure = &h;
    h.tail_first = first;
    sem_init(&h.handed, 0, 0);
    sem_init(&h.tail_done, 0, 0);
    pthread_create(&th, NULL, tail_thread, &h);
    ASSERT_EQ(ec_queue_async_job(&h.t.job), 1);
    ASSERT_TRUE(unit_wait_ge(&h.t.done_ran, 1, 10000));
    pthread_join(th, NULL);
    usleep(20000);
    ASSERT_EQ(load(&h.t.done_ran), 1);
    ASSERT_EQ(load(&h.t.work_ran), 1);
    ASSERT_EQ(h.t.done_shard, 0);
    sem_destroy(&h.handed);
    sem_destroy(&h.tail_done);
  }
  finish();
}

/* ---- refusals ------------------------------------------------------------------------------ */

static void expect_refused(ec_async_job *j, int err)
{
  errno = 0;
  CU_ASSERT_EQUAL(ec_queue_async_job(j), 0);
  CU_ASSERT_EQUAL(errno, err);
}

static void t_refusals(void)
{
  tjob t;

  tjob_init(&t, ECTP_CLASS_IO, ECTP_COMPLETE_NONE);
  expect_refused(&t.job, ESHUTDOWN); /* not initialised */
  start_with(1, NULL);
  expect_refused(NULL, EINVAL);
  tjob_init(&t, 42, ECTP_COMPLETE_NONE);
  expect_refused(&t.job, EINVAL); /* no such pool */
  tjob_init(&t, ECTP_CLASS_SHORT_LIVED, ECTP_COMPLETE_NONE);
  expect_refused(&t.job, EINVAL);
  tjob_init(&t, ECTP_CLASS_IO, ECTP_COMPLETE_NONE);
  t.job.worker = NULL;
  expect_refused(&t.job, EINVAL);
  tjob_init(&t, ECTP_CLASS_IO, ECTP_COMPLETE_MODULE);
  expect_refused(&t.job, ENOTSUP);
  tjob_init(&t, ECTP_CLASS_IO, ECTP_COMPLETE_EVENT);
  t.job.r.e.event = NULL;
  expect_refused(&t.job, EINVAL);
  tjob_init(&t, ECTP_CLASS_IO, ECTP_COMPLETE_SEMAPHORE);
  t.job.r.sema = NULL;
  expect_refused(&t.job, EINVAL);
  tjob_init(&t, ECTP_CLASS_IO, ECTP_COMPLETE_CALLBACK_SCHED_INST);
  expect_refused(&t.job, EINVAL); /* r.cb.inst NULL */
  tjob_init(&t, ECTP_CLASS_IO, ECTP_COMPLETE_CALLBACK);
  t.job.r.cb.func = NULL;
  expect_refused(&t.job, EINVAL);
  tjob_init(&t, ECTP_CLASS_IO, (int)ECTP_COMPLETE_CALLBACK_SCHED_INST + 5);
  expect_refused(&t.job, EINVAL);
  ASSERT_EQ(load(&t.work_ran), 0);
  finish();
}

/* ---- backlog ------------------------------------------------------------------------------- */

static int tiny_class(void)
{
  return ec_thread_pool_name_to_class("tiny");
}

/* Occupies Tiny's only worker until `gate` is posted; returns once it runs. */
static int occupy(tjob *blocker, sem_t *gate)
{
  ec_thread_pool_stats st;

  tjob_init(blocker, tiny_class(), ECTP_COMPLETE_NONE);
  blocker->gate = gate;
  if (ec_queue_async_job(&blocker->job) != 1)
    return 0;
  for (int i = 0; i < 10000; i++) {
    if (ec_thread_pool_stats_get(tiny_class(), &st) == 0 && st.running == 1 && st.queued == 0)
      return 1;
    usleep(1000);
  }
  return 0;
}

/* Backlog full: a shard gets EAGAIN at once, a foreign thread with EC_QUEUE_NOWAIT too. */
static void t_backlog_shard_fails_fast(void)
{
  tjob blocker, t[4];
  struct on_shard q;
  ec_thread_pool_stats st;
  sem_t gate;
  struct timespec a, b;

  start_with(2, tiny_config);
  sem_init(&gate, 0, 0);
  ASSERT_TRUE(occupy(&blocker, &gate));
  for (int i = 0; i < 2; i++) {
    tjob_init(&t[i], tiny_class(), ECTP_COMPLETE_NONE);
    ASSERT_EQ(ec_queue_async_job(&t[i].job), 1);
  }
  tjob_init(&t[2], tiny_class(), ECTP_COMPLETE_NONE);
  q = (struct on_shard){.t = &t[2]};
  clock_gettime(CLOCK_MONOTONIC, &a);
  ASSERT_EQ(ec_shard_call(1, queue_here, &q), 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  ASSERT_EQ(q.rc, 0);
  ASSERT_EQ(q.err, EAGAIN);
  ASSERT_LT((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000, 2000);
  tjob_init(&t[3], tiny_class(), ECTP_COMPLETE_NONE);
  errno = 0;
  ASSERT_EQ(ec_queue_async_job_(&t[3].job, __FILE__, __LINE__, EC_QUEUE_NOWAIT), 0);
  ASSERT_EQ(errno, EAGAIN);
  ASSERT_EQ(ec_thread_pool_stats_get(tiny_class(), &st), 0);
  ASSERT_UEQ(st.rejected, 2);
  ASSERT_UEQ(st.queued, 2);
  ASSERT_UEQ(st.backlog, 2);
  sem_post(&gate);
  ASSERT_TRUE(unit_wait_ge(&t[1].work_ran, 1, 10000));
  ASSERT_EQ(load(&t[2].work_ran), 0);
  ASSERT_EQ(load(&t[3].work_ran), 0);
  sem_destroy(&gate);
  finish();
}

struct blocked_producer {
  tjob t;
  int returned, rc;
};

static void *produce_blocking(void *arg)
{
  struct blocked_producer *p = arg;

  p->rc = ec_queue_async_job(&p->t.job);
  bump(&p->returned);
  return NULL;
}

/* Backlog full: a foreign thread waits until a worker makes room. */
static void t_backlog_foreign_blocks(void)
{
  tjob blocker, t[2];
  struct blocked_producer p;
  ec_thread_pool_stats st;
  pthread_t th;
  sem_t gate;

  start_with(1, tiny_config);
  sem_init(&gate, 0, 0);
  ASSERT_TRUE(occupy(&blocker, &gate));
  for (int i = 0; i < 2; i++) {
    tjob_init(&t[i], tiny_class(), ECTP_COMPLETE_NONE);
    ASSERT_EQ(ec_queue_async_job(&t[i].job), 1);
  }
  memset(&p, 0, sizeof(p));
  tjob_init(&p.t, tiny_class(), ECTP_COMPLETE_NONE);
  pthread_create(&th, NULL, produce_blocking, &p);
  usleep(200000);
  ASSERT_EQ(load(&p.returned), 0); /* still waiting for room */
  ASSERT_EQ(ec_thread_pool_stats_get(tiny_class(), &st), 0);
  ASSERT_UEQ(st.blocked, 1);
  sem_post(&gate);
  ASSERT_TRUE(unit_wait_ge(&p.returned, 1, 10000));
  pthread_join(th, NULL);
  ASSERT_EQ(p.rc, 1);
  ASSERT_TRUE(unit_wait_ge(&p.t.work_ran, 1, 10000));
  sem_destroy(&gate);
  finish();
}

/* ---- volume: 100k jobs from shards and foreign threads ------------------------------------ */

#define VOL_SHARDS  2
#define VOL_FOREIGN 2

static tjob *vol_jobs;
static long vol_n;
static int vol_done;

struct vol_batch {
  long from, to;
  int fails;
};

static void vol_queue_batch(void *arg)
{
  struct vol_batch *b = arg;

  for (long i = b->from; i < b->to; i++) {
    vol_jobs[i].expect_shard = ec_shard_self();
    if (ec_queue_async_job(&vol_jobs[i].job) != 1)
      b->fails++;
  }
}

static void *vol_foreign(void *arg)
{
  struct vol_batch *b = arg;

  for (long i = b->from; i < b->to; i++) {
    tjob *t = &vol_jobs[i];
    int s = (int)(i % VOL_SHARDS);

    /* Alternate CALLBACK_SCHED_INST (on a chosen shard) and CALLBACK (on the worker). */
    if (i % 3 == 0) {
      t->job.completion = ECTP_COMPLETE_CALLBACK;
      t->expect_shard = -1;
    } else {
      t->job.completion = ECTP_COMPLETE_CALLBACK_SCHED_INST;
      t->job.r.cb.inst = ec_scheduler_inst_get(s);
      t->expect_shard = s;
    }
    if (ec_queue_async_job(&t->job) != 1)
      b->fails++;
  }
  return NULL;
}

static void t_many_jobs(void)
{
  const long n = unit_scale(100000);
  const long per = n / (VOL_SHARDS + VOL_FOREIGN);
  struct vol_batch shard_batches[VOL_SHARDS][10], foreign[VOL_FOREIGN];
  pthread_t th[VOL_FOREIGN];
  long total = per * (VOL_SHARDS + VOL_FOREIGN);

  start_with(VOL_SHARDS, NULL);
  vol_n = total;
  vol_done = 0;
  vol_jobs = calloc((size_t)total, sizeof(tjob));
  for (long i = 0; i < total; i++) {
    tjob_init(&vol_jobs[i], i % 2 ? ECTP_CLASS_IO : ECTP_CLASS_CPU, ECTP_COMPLETE_CALLBACK_SCHED);
    vol_jobs[i].counter = &vol_done;
  }
  /* Shards queue in batches (closures posted to them), foreign threads in a loop. */
  for (int s = 0; s < VOL_SHARDS; s++) {
    for (int b = 0; b < 10; b++) {
      struct vol_batch *vb = &shard_batches[s][b];

      vb->from = s * per + b * per / 10;
      vb->to = b == 9 ? (s + 1) * per : s * per + (b + 1) * per / 10;
      vb->fails = 0;
      ASSERT_EQ(ec_shard_run(s, vol_queue_batch, vb), 0);
    }
  }
  for (int f = 0; f < VOL_FOREIGN; f++) {
    foreign[f] =
        (struct vol_batch){.from = (VOL_SHARDS + f) * per, .to = (VOL_SHARDS + f + 1) * per};
    pthread_create(&th[f], NULL, vol_foreign, &foreign[f]);
  }
  for (int f = 0; f < VOL_FOREIGN; f++)
    pthread_join(th[f], NULL);
  ASSERT_TRUE(unit_wait_ge(&vol_done, (int)total, 120000));
  usleep(20000);
  finish(); /* everything is quiet: plain reads below */
  ASSERT_EQ(vol_done, total);
  for (int f = 0; f < VOL_FOREIGN; f++)
    ASSERT_EQ(foreign[f].fails, 0);
  for (int s = 0; s < VOL_SHARDS; s++)
    for (int b = 0; b < 10; b++)
      ASSERT_EQ(shard_batches[s][b].fails, 0);
  for (long i = 0; i < total; i++) {
    tjob *t = &vol_jobs[i];

    if (t->work_ran != 1 || t->done_ran != 1 || t->done_shard != t->expect_shard ||
        t->work_shard != -1) {
      char m[160];

      snprintf(m, sizeof(m), "job %ld: work %d, done %d, shard %d (want %d), work shard %d", i,
               t->work_ran, t->done_ran, t->done_shard, t->expect_shard, t->work_shard);
      free(vol_jobs);
      UNIT_FAIL_(m);
    }
  }
  free(vol_jobs);
}

/* ---- chains: completions that queue the next job (deferred, batched submission) ----------- */

#define CHAIN_WINDOW 48

struct chain {
  tjob t[CHAIN_WINDOW];
  long issued, done, target, wrong_shard, refused;
  int shard, finished;
};

static void chain_work(ec_async_job *job, void *closure)
{
  tjob *t = (tjob *)job;

  (void)closure;
  bump(&t->work_ran);
  if (t->work_ran % 97 == 0)
    usleep(500); /* now and then a job blocks: the others must not wait for it */
}

static void chain_done(ec_async_job *job, void *closure)
{
  struct chain *c = closure;

  if (ec_shard_self() != c->shard)
    c->wrong_shard++;
  c->done++;
  if (c->issued < c->target) {
    c->issued++;
    if (ec_queue_async_job(job) != 1)
      c->refused++;
  }
  if (c->done == c->target)
    bump(&c->finished);
}

static void chain_kick(void *arg)
{
  struct chain *c = arg;

  for (int i = 0; i < CHAIN_WINDOW; i++) {
    c->issued++;
    if (ec_queue_async_job(&c->t[i].job) != 1)
      c->refused++;
  }
}

/* Each shard keeps a window of jobs in flight, re-queueing from the completion (the path
 * where submissions are batched), on a pool of four workers, some jobs blocking: every
 * round trip completes, on its shard. */
static void t_chains(void)
{
  struct chain *c = calloc(2, sizeof(*c));
  ec_thread_pool_stats st;
  int cls;

  start_with(2, tiny_config);
  cls = ec_thread_pool_name_to_class("Quad");
  for (int s = 0; s < 2; s++) {
    c[s].shard = s;
    c[s].target = unit_scale(50000);
    for (int i = 0; i < CHAIN_WINDOW; i++) {
      tjob_init(&c[s].t[i], cls, ECTP_COMPLETE_CALLBACK_SCHED);
      c[s].t[i].job.worker = chain_work;
      c[s].t[i].job.r.cb.func = chain_done;
      c[s].t[i].job.r.cb.closure = &c[s];
    }
  }
  for (int s = 0; s < 2; s++)
    ASSERT_EQ(ec_shard_run(s, chain_kick, &c[s]), 0);
  for (int s = 0; s < 2; s++)
    ASSERT_TRUE(unit_wait_ge(&c[s].finished, 1, 120000));
  ASSERT_EQ(ec_thread_pool_stats_get(cls, &st), 0);
  finish();
  for (int s = 0; s < 2; s++) {
    ASSERT_EQ(c[s].done, c[s].target);
    ASSERT_EQ(c[s].issued, c[s].target);
    ASSERT_EQ(c[s].wrong_shard, 0);
    ASSERT_EQ(c[s].refused, 0);
  }
  ASSERT_UEQ(st.done, (uint64_t)(c[0].target + c[1].target));
  free(c);
}

/* ---- life cycle: before start, join without start, shutdown drain and skip ---------------- */

/* Jobs queued between init and start wait, then run once the pools start. */
static void t_queued_before_start(void)
{
  ec_framework_options o = unit_options(2);
  tjob t[10];
  int done = 0;

  ASSERT_EQ(ec_framework_init(&o), 0);
  for (int i = 0; i < 10; i++) {
    tjob_init(&t[i], ECTP_CLASS_IO, ECTP_COMPLETE_CALLBACK_SCHED);
    t[i].counter = &done;
    ASSERT_EQ(ec_queue_async_job(&t[i].job), 1);
  }
  usleep(50000);
  for (int i = 0; i < 10; i++)
    ASSERT_EQ(load(&t[i].work_ran), 0); /* no workers yet */
  ASSERT_EQ(ec_framework_start(), 0);
  ASSERT_TRUE(unit_wait_ge(&done, 10, 10000));
  finish();
  for (int i = 0; i < 10; i++)
    ASSERT_EQ(t[i].done_shard, 0);
}

/* Init, queue, join without start: the joining thread runs the work and the completions. */
static void t_join_without_start(void)
{
  ec_framework_options o = unit_options(2);
  tjob t[4];
  int done = 0;

  ASSERT_EQ(ec_framework_init(&o), 0);
  for (int i = 0; i < 4; i++) {
    tjob_init(&t[i], ECTP_CLASS_CPU, i % 2 ? ECTP_COMPLETE_CALLBACK : ECTP_COMPLETE_CALLBACK_SCHED);
    t[i].counter = &done;
    t[i].job.skip_on_shutdown = i == 3;
    ASSERT_EQ(ec_queue_async_job(&t[i].job), 1);
  }
  ec_framework_stop();
  ASSERT_EQ(ec_framework_join(), 0);
  ASSERT_EQ(done, 4);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(t[i].work_ran, i == 3 ? 0 : 1);
    ASSERT_EQ(t[i].skipped_seen, i == 3);
    ASSERT_TRUE(pthread_equal(t[i].done_thread, pthread_self()));
  }
}

struct releaser {
  sem_t *gate;
  int ms;
};

static void *release_later(void *arg)
{
  struct releaser *r = arg;

  usleep((useconds_t)r->ms * 1000);
  sem_post(r->gate);
  return NULL;
}

/* Shutdown with jobs queued: those flagged skip_on_shutdown are dropped (their completion
 * still runs, and says so), the others run before join returns; nothing is lost. */
static void t_shutdown_drains_and_skips(void)
{
  tjob blocker, t[6];
  sem_t gate, posted;
  struct releaser rel;
  pthread_t th;
  int done = 0;

  start_with(2, tiny_config);
  sem_init(&gate, 0, 0);
  sem_init(&posted, 0, 0);
  tjob_init(&blocker, ec_thread_pool_name_to_class("Solo"), ECTP_COMPLETE_NONE);
  blocker.gate = &gate;
  ASSERT_EQ(ec_queue_async_job(&blocker.job), 1);
  for (int i = 0; i < 6; i++) {
    int mode = i % 3 == 0   ? ECTP_COMPLETE_CALLBACK_SCHED
               : i % 3 == 1 ? ECTP_COMPLETE_CALLBACK
                            : ECTP_COMPLETE_SEMAPHORE;

    tjob_init(&t[i], ec_thread_pool_name_to_class("Solo"), mode);
    t[i].counter = &done;
    t[i].job.skip_on_shutdown = i >= 3;
    if (mode == ECTP_COMPLETE_SEMAPHORE)
      t[i].job.r.sema = &posted;
    ASSERT_EQ(ec_queue_async_job(&t[i].job), 1);
  }
  ec_framework_stop();
  rel = (struct releaser){.gate = &gate, .ms = 200};
  pthread_create(&th, NULL, release_later, &rel);
  ASSERT_EQ(ec_framework_join(), 0); /* waits for the blocker, then the drain */
  pthread_join(th, NULL);
  ASSERT_EQ(blocker.work_ran, 1);
  for (int i = 0; i < 6; i++) {
    ASSERT_EQ(t[i].work_ran, i < 3 ? 1 : 0);
    if (t[i].job.completion != ECTP_COMPLETE_SEMAPHORE) {
      ASSERT_EQ(t[i].done_ran, 1);
      ASSERT_EQ(t[i].skipped_seen, i >= 3);
    }
  }
  ASSERT_EQ(done, 4); /* the two callbacks of each half */
  ASSERT_TRUE(wait_sem(&posted, 100));
  ASSERT_TRUE(wait_sem(&posted, 100));
  sem_destroy(&gate);
  sem_destroy(&posted);
}

/* ---- configuration, names, statistics, the per-job semaphore ------------------------------ */

static void t_config_and_names(void)
{
  ec_framework_options o = unit_options(1);
  ec_thread_pool_stats st;

  ASSERT_EQ(ec_thread_pool_name_to_class("cpu"), ECTP_CLASS_CPU); /* before init */
  ASSERT_EQ(ec_thread_pool_name_to_class("Io"), ECTP_CLASS_IO);
  ASSERT_EQ(ec_thread_pool_name_to_class("Resolver"), -1);
  o.config_text = "threadpool = { Resolver = { concurrency = 2; backlog = 7; }; "
                  "swapout = { concurrency = 1; }; IO = { concurrency = 3; }; };";
  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_thread_pool_count(), 4);
  ASSERT_EQ(ec_thread_pool_name_to_class("RESOLVER"), ECTP_CLASS_FIRST_USER);
  ASSERT_EQ(ec_thread_pool_name_to_class("SwapOut"), ECTP_CLASS_SWAPOUT);
  ASSERT_STR_EQ(ec_thread_pool_name(ECTP_CLASS_FIRST_USER), "Resolver");
  ASSERT_NULL(ec_thread_pool_name(ECTP_CLASS_UNLINK));
  ASSERT_EQ(ec_thread_pool_stats_get(ECTP_CLASS_FIRST_USER, &st), 0);
  ASSERT_EQ(st.threads, 2);
  ASSERT_UEQ(st.backlog, 7);
  ASSERT_EQ(ec_thread_pool_stats_get(ECTP_CLASS_IO, &st), 0);
  ASSERT_EQ(st.threads, 3);
  ASSERT_EQ(ec_thread_pool_stats_get(ECTP_CLASS_CPU, &st), 0);
  ASSERT_GE(st.threads, 1); /* concurrency 0: one per CPU */
  ASSERT_EQ(ec_thread_pool_stats_get(ECTP_CLASS_UNLINK, &st), -EINVAL);
  ec_framework_stop();
  ASSERT_EQ(ec_framework_join(), 0);
  ASSERT_EQ(ec_thread_pool_stats_get(ECTP_CLASS_IO, &st), -ESHUTDOWN);

  /* The defaults: IO has 16 threads. */
  o = unit_options(1);
  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_thread_pool_stats_get(ECTP_CLASS_IO, &st), 0);
  ASSERT_EQ(st.threads, 16);
  ec_framework_stop();
  ASSERT_EQ(ec_framework_join(), 0);

  /* Two spellings of one name are refused; so is a bad value. */
  o.config_text = "threadpool = { io = { concurrency = 2; }; };";
  ASSERT_EQ(ec_framework_init(&o), -EINVAL);
  o.config_text = "threadpool = { X = { concurrency = -1; }; };";
  ASSERT_EQ(ec_framework_init(&o), -EINVAL);
  o.config_text = "threadpool = { X = { threads = 1; }; };";
  ASSERT_EQ(ec_framework_init(&o), -EINVAL);
}

static void slow_work(ec_async_job *job, void *closure)
{
  (void)job;
  (void)closure;
  usleep(2000);
}

static void t_stats(void)
{
  tjob t[50];
  ec_thread_pool_stats st;
  int done = 0;
  int cls;

  start_with(1, tiny_config);
  cls = ec_thread_pool_name_to_class("Quad");
  for (int i = 0; i < 50; i++) {
    tjob_init(&t[i], cls, ECTP_COMPLETE_CALLBACK);
    t[i].job.worker = slow_work;
    t[i].counter = &done;
    ASSERT_EQ(ec_queue_async_job(&t[i].job), 1);
  }
  ASSERT_TRUE(unit_wait_ge(&done, 50, 10000));
  ASSERT_EQ(ec_thread_pool_stats_get(cls, &st), 0);
  ASSERT_STR_EQ(st.name, "Quad");
  ASSERT_EQ(st.threads, 4);
  ASSERT_UEQ(st.submitted, 50);
  ASSERT_UEQ(st.done, 50);
  ASSERT_UEQ(st.queued, 0);
  ASSERT_UEQ(st.running, 0);
  ASSERT_GE(st.peak_queued, 1);
  ASSERT_TRUE(st.mean_run_us >= 2000.0);
  ASSERT_TRUE(st.mean_wait_us > 0.0);
  ASSERT_TRUE(st.saturation > 0.0 && st.saturation <= 1.0);
  ASSERT_TRUE(st.avg_concurrency > 0.0 && st.avg_concurrency <= 4.0);
  finish();
}

/* job->concurrency: at most as many of these jobs run at once as the semaphore allows. */
static int conc_now, conc_max;

static void conc_work(ec_async_job *job, void *closure)
{
  int now = __atomic_add_fetch(&conc_now, 1, __ATOMIC_ACQ_REL);
  int max = __atomic_load_n(&conc_max, __ATOMIC_ACQUIRE);

  (void)job;
  (void)closure;
  while (now > max &&
         !__atomic_compare_exchange_n(&conc_max, &max, now, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    ;
  usleep(3000);
  __atomic_sub_fetch(&conc_now, 1, __ATOMIC_ACQ_REL);
}

static void t_job_semaphore(void)
{
  tjob t[12];
  sem_t limit;
  int done = 0;

  start_with(1, tiny_config);
  sem_init(&limit, 0, 2);
  conc_now = conc_max = 0;
  for (int i = 0; i < 12; i++) {
    tjob_init(&t[i], ec_thread_pool_name_to_class("Quad"), ECTP_COMPLETE_CALLBACK);
    t[i].job.worker = conc_work;
    t[i].job.concurrency = &limit;
    t[i].counter = &done;
    ASSERT_EQ(ec_queue_async_job(&t[i].job), 1);
  }
  ASSERT_TRUE(unit_wait_ge(&done, 12, 10000));
  ASSERT_LE(load(&conc_max), 2);
  ASSERT_GE(load(&conc_max), 1);
  sem_destroy(&limit);
  finish();
}

static const unit_test tests[] = {
    UNIT_TEST(t_none_frees),
    UNIT_TEST(t_callback_on_worker),
    UNIT_TEST(t_semaphore),
    UNIT_TEST(t_sync),
    UNIT_TEST(t_callback_sched),
    UNIT_TEST(t_callback_sched_inst),
    UNIT_TEST(t_event_completion),
    UNIT_TEST(t_event_inst),
    UNIT_TEST(t_peer_closed_meanwhile),
    UNIT_TEST(t_app_closed_meanwhile),
    UNIT_TEST(t_complete_tail),
    UNIT_TEST(t_refusals),
    UNIT_TEST(t_backlog_shard_fails_fast),
    UNIT_TEST(t_backlog_foreign_blocks),
    UNIT_TEST(t_many_jobs),
    UNIT_TEST(t_chains),
    UNIT_TEST(t_queued_before_start),
    UNIT_TEST(t_join_without_start),
    UNIT_TEST(t_shutdown_drains_and_skips),
    UNIT_TEST(t_config_and_names),
    UNIT_TEST(t_stats),
    UNIT_TEST(t_job_semaphore),
    {NULL, NULL},
};

UNIT_MAIN("pool", tests)
