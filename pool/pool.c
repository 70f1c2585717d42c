/*
 * pool/pool.c - named worker pools: configuration, the job queue, workers, shutdown,
 * ec_queue_async_job and the pool statistics.
 *
 * The queue has two halves. Submitters (shards, any thread) push onto an intrusive
 * Treiber stack, the inbox, with one CAS and no lock, so a shard never contends with
 * workers for a mutex. Workers own a FIFO under the pool's mutex: a worker that finds the
 * FIFO empty takes the whole inbox with one exchange, reverses it (oldest first) and
 * appends it. Jobs therefore start in the order they were queued, each one taken by a
 * single worker, so a job that blocks holds up nothing but its own worker. (A lock-free
 * multi-consumer queue would save the workers' mutex, but the workers need that lock for
 * the idle list anyway, and the submit side is where the shards are.) perf/README.md,
 * "Jobs", has the measurements behind the design.
 *
 * Idle workers sleep on a semaphore each, on a LIFO list (the most recently active,
 * cache-warm worker is woken first). Nobody spins. A submitter wakes a sleeper only for
 * jobs that no "searching" worker will take: a worker that just finished a job, or was
 * just woken, looks at the queue before it sleeps, so a busy pool runs on no wakeups at
 * all, while jobs queued behind workers stuck in long jobs still get a thread each. No
 * job is stranded: a worker going to sleep registers (nidle, searching), issues a full
 * fence and looks at the inbox once more; a submitter pushes, issues a full fence and
 * reads nidle and searching. One of the two sees the other (the mailbox's argument,
 * docs/architecture.md §2.3).
 *
 * Backlog: the queued jobs are inbox_count (reserved by submitters before they push)
 * plus fifo_len (kept by the workers); a refill moves a batch from one to the other. A
 * shard never waits: when the backlog is full it gets 0 with errno EAGAIN at once. Any
 * other thread waits on the `room` condition variable, which a worker signals when it
 * takes a job and somebody waits.
 *
 * Completion callbacks that queue follow-up jobs have them spliced into the inbox in
 * batches (deferred submission, below push's helpers).
 */
#include "pool/pool.h"

#include "framework/atomic.h"
#include "framework/internal.h"

#include <ck_cc.h>
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>

#define MAX_POOLS     64
#define MAX_CLASSES   (ECTP_CLASS_FIRST_USER + MAX_POOLS)
#define POOL_NAME_MAX 32

/* _priv.phase: who finishes a job with skip_completion (see finish_job). */
#define PHASE_RETURNED 0x1u /* the work function has returned */
#define PHASE_TAIL     0x2u /* ec_async_complete_tail was called */

/* _priv.flags */
#define JOB_SKIPPED 0x1u

typedef struct pool pool;

typedef struct worker {
  pthread_t thread;
  sem_t wake; /* posted once per removal from the idle list */
  struct worker *next_idle;
  pool *pool;
  int index;
  /* Written only by this worker (relaxed stores), summed by ec_thread_pool_stats_get:
   * counted before the job's completion runs, with no shared cache line written. */
  uint64_t done, run_ns;
} worker;

/*
 * The fields sit on three kinds of cache line, so that the per-job traffic between a
 * submitting shard and a worker is the inbox line (per job) and the worker line (per
 * batch of jobs, at refill):
 */
struct pool {
  /* ---- written by submitters on every job (any thread, atomics) ---- */
  ec_async_job *inbox CK_CC_CACHELINE; /* Treiber stack, newest first */
  int64_t inbox_count;                 /* jobs pushed and not yet moved to the FIFO */
  uint64_t rejected;
  /* ---- read on every job, written rarely (atomics) ---- */
  int stopping CK_CC_CACHELINE; /* set once by pool_stop */
  int nidle;                    /* workers asleep or going to sleep */
  /* ---- workers: under lock (fifo_len and searching also read by submitters) ---- */
  pthread_mutex_t lock CK_CC_CACHELINE;
  ec_async_job *head, *tail; /* FIFO, oldest first */
  int64_t fifo_len;          /* jobs in the FIFO (stored atomically) */
  int searching;             /* workers about to look at the queue (atomic) */
  worker *idle;              /* sleeping workers, most recent first */
  pthread_cond_t room;       /* producers (not shards) waiting for backlog room */
  int room_waiters;
  uint64_t started, blocked, skipped, wait_ns, peak, sleeps, wakeups;
  uint64_t done, run_ns; /* work not done by the workers: SYNC jobs, the drain at join */
  uint64_t reject_log_ns, rejects_unlogged;
  /* ---- set at init ---- */
  char name[POOL_NAME_MAX];
  int job_class;
  int nthreads;
  int64_t backlog; /* 0: no limit */
  size_t stack_size;
  uint64_t start_ns; /* pool__start (stats: saturation) */
  worker *workers;
  int nstarted;
};

typedef struct pool_set {
  int npools;
  pool *pools[MAX_POOLS];
  pool *by_class[MAX_CLASSES];
} pool_set;

/* Published by pool__init (release) and read by ec_queue_async_job on any thread
 * (acquire); cleared by pool__fini, after which callers get ESHUTDOWN. */
static pool_set *g_pools;

/* Momentum's built-in pool names keep their class numbers. */
static const struct {
  const char *name;
  int job_class;
} builtin[] = {
    {"CPU", ECTP_CLASS_CPU},
    {"IO", ECTP_CLASS_IO},
    {"SwapOut", ECTP_CLASS_SWAPOUT},
    {"SwapIn", ECTP_CLASS_SWAPIN},
    {"Close", ECTP_CLASS_CLOSE},
    {"Unlink", ECTP_CLASS_UNLINK},
    {"Batch_Unlink", ECTP_CLASS_BATCH_UNLINK},
    {"SpoolIn", ECTP_CLASS_SPOOL_IN},
    {"Async_Bounce", ECTP_CLASS_ASYNC_BOUNCE},
    {"Sieve_IO", ECTP_CLASS_SIEVE_IO},
};

#define DEFAULT_IO_THREADS 16

static pool_set *pools_get(void)
{
  return ec__load_acquire(&g_pools); /* pairs with the release store in pool__init */
}

static pool *pool_by_class(pool_set *ps, int job_class)
{
  if (ps == NULL || job_class < 0 || job_class >= MAX_CLASSES)
    return NULL;
  return ps->by_class[job_class];
}

/* ---- workers ------------------------------------------------------------------------- */

/* After the work function returned: run the completion, unless skip_completion hands it
 * to ec_async_complete_tail. The two sides meet on _priv.phase: whoever comes second
 * runs it, so the job is never completed (and maybe freed) while the other side still
 * reads it. skip_completion is read before RETURNED is published: afterwards the job may
 * already belong to the tail's thread. */
static void finish_job(ec_async_job *job)
{
  unsigned old;

  if (!job->skip_completion) {
    pool__complete(job);
    return;
  }
  /* Pairs with the fetch_or in ec_async_complete_tail. */
  old = __atomic_fetch_or(&job->_priv.phase, PHASE_RETURNED, __ATOMIC_ACQ_REL);
  if (old & PHASE_TAIL)
    pool__complete(job);
}

void ec_async_complete_tail(ec_async_job *job)
{
  unsigned old;

  if (job == NULL)
    return;
  /* Pairs with the fetch_or in finish_job. */
  old = __atomic_fetch_or(&job->_priv.phase, PHASE_TAIL, __ATOMIC_ACQ_REL);
  if (old & PHASE_RETURNED)
    pool__complete(job);
}

int ec_async_job_skipped(const ec_async_job *job)
{
  return job != NULL && (job->_priv.flags & JOB_SKIPPED) != 0;
}

/* Runs one job's work, bounded by its own semaphore if it has one. */
static void run_work(ec_async_job *job)
{
  sem_t *limit = job->concurrency;

  if (limit != NULL)
    while (sem_wait(limit) < 0 && errno == EINTR)
      ;
  job->worker(job, job->closure);
  if (limit != NULL)
    sem_post(limit);
}

/* Moves the inbox, oldest first, to the end of the FIFO (lock held). */
static void refill(pool *p)
{
  /* Pairs with the release CAS in push: the jobs' contents are visible. */
  ec_async_job *j = __atomic_exchange_n(&p->inbox, NULL, __ATOMIC_ACQUIRE);
  ec_async_job *fifo = NULL, *last = j;
  int64_t k = 0;

  if (j == NULL)
    return;
  while (j != NULL) {
    ec_async_job *next = j->next;

    j->next = fifo;
    fifo = j;
    j = next;
    k++;
  }
  if (p->tail != NULL)
    p->tail->next = fifo;
  else
    p->head = fifo;
  p->tail = last;
  /* The batch moves from the inbox's count to the FIFO's: the sum, what the backlog
   * limits, never drops below the jobs still queued. */
  ec__store(&p->fifo_len, p->fifo_len + k);
  ec__fetch_add(&p->inbox_count, -k);
  if ((uint64_t)p->fifo_len > p->peak)
    p->peak = (uint64_t)p->fifo_len;
}

/* Takes the next job (lock held); NULL if none. Wakes a producer waiting for room. `*now`
 * is a recent clock reading (the end of the previous job), refreshed if the job is newer. */
static ec_async_job *take(pool *p, uint64_t *now)
{
  ec_async_job *job = p->head;

  if (job == NULL) {
    refill(p);
    if ((job = p->head) == NULL)
      return NULL;
  }
  p->head = job->next;
  if (p->head == NULL)
    p->tail = NULL;
  /* Read by submitters checking the backlog and deciding on wakeups (relaxed: a stale
   * value costs an early refusal or a spare wakeup, never a lost job). */
  ec__store(&p->fifo_len, p->fifo_len - 1);
  p->started++;
  if (job->_priv.queued_ns > *now)
    *now = fw__mono_ns(); /* it came after our last reading */
  p->wait_ns += *now - job->_priv.queued_ns;
  if (p->room_waiters > 0)
    pthread_cond_signal(&p->room);
  return job;
}

/* The worker found nothing to do (lock held): sleeps until a submitter or pool_stop wakes
 * it, unless a job arrived meanwhile. Returns with the lock held. */
static void idle_wait(pool *p, worker *w)
{
  w->next_idle = p->idle;
  p->idle = w;
  ec__fetch_add(&p->nidle, 1);
  ec__fetch_add(&p->searching, -1);
  /* Pairs with the fence in push: either we see its job below, or it sees us idle. */
  ec__fence();
  if (ec__load(&p->inbox) != NULL) {
    /* We are still at the head of the list: nobody else changes it without the lock. */
    p->idle = w->next_idle;
    ec__fetch_add(&p->nidle, -1);
    ec__fetch_add(&p->searching, 1);
    return;
  }
  p->sleeps++;
  pthread_mutex_unlock(&p->lock);
  /* Whoever posts took us off the list and counted us as searching again. */
  while (sem_wait(&w->wake) < 0 && errno == EINTR)
    ;
  pthread_mutex_lock(&p->lock);
}

/* Worker loop (also run by pool__stop, with w NULL, for pools that never started: then it
 * never sleeps). Returns when the pool stops and its queue is empty. */
static void work(pool *p, worker *w)
{
  /* One clock reading per job: the end of one job is the start of the next. */
  uint64_t now = fw__mono_ns(), end;

  if (w != NULL)
    ec__fetch_add(&p->searching, 1); /* a new worker looks at the queue first */
  pthread_mutex_lock(&p->lock);
  for (;;) {
    ec_async_job *job = take(p, &now);

    if (job == NULL) {
      if (ec__load_acquire(&p->stopping) || w == NULL)
        break;
      idle_wait(p, w);
      now = fw__mono_ns();
      continue;
    }
    if (w != NULL)
      ec__fetch_add(&p->searching, -1); /* found work: no longer searching */
    pthread_mutex_unlock(&p->lock);
    run_work(job);
    if (w != NULL) {
      /* Single writer; pairs with the relaxed loads in ec_thread_pool_stats_get. Counted
       * before the completion, which may tell somebody who then reads the stats. */
      ec__store(&w->done, w->done + 1);
      finish_job(job); /* the job may be gone after this */
      /* The worker's time on the job: its work and a completion run here (CALLBACK). */
      end = fw__mono_ns();
      ec__store(&w->run_ns, w->run_ns + (end - now));
      /* Searching again: a submitter that counts us need not wake a sleeper for the job
       * we are about to take (read in push). */
      ec__fetch_add(&p->searching, 1);
      pthread_mutex_lock(&p->lock);
    } else {
      end = fw__mono_ns();
      pthread_mutex_lock(&p->lock);
      p->done++;
      p->run_ns += end - now;
      pthread_mutex_unlock(&p->lock);
      finish_job(job);
      pthread_mutex_lock(&p->lock);
    }
    now = end;
  }
  pthread_mutex_unlock(&p->lock);
}

static void *worker_main(void *arg)
{
  worker *w = arg;
  char name[64];

  snprintf(name, sizeof(name), "pool %s/%d", w->pool->name, w->index);
  fw__log_thread_name(name);
  snprintf(name, sizeof(name), "ecpool/%s", w->pool->name);
  name[15] = '\0'; /* the kernel's limit for thread names */
  pthread_setname_np(pthread_self(), name);
  work(w->pool, w);
  fw__alloc_thread_exit();
  return NULL;
}

/* ---- queueing ------------------------------------------------------------------------ */

/* Logs refusals at most once a second per pool. */
static void log_reject(pool *p, const ec_async_job *job)
{
  uint64_t now = fw__mono_ns();

  pthread_mutex_lock(&p->lock);
  p->rejects_unlogged++;
  if (p->reject_log_ns == 0 || now - p->reject_log_ns >= 1000000000u) {
    ec_debug_printf(DWARNING, EC_LOG_POOL,
                    "ec_queue_async_job(%s:%d): pool %s backlog full (%lld jobs); refused on "
                    "shard %d (%llu refusals since the last report)",
                    job->file ? job->file : "?", job->line, p->name, (long long)p->backlog,
                    ec_shard_self(), (unsigned long long)p->rejects_unlogged);
    p->reject_log_ns = now;
    p->rejects_unlogged = 0;
  }
  pthread_mutex_unlock(&p->lock);
}

/* Jobs queued: pushed but not yet taken. */
static int64_t queued(pool *p)
{
  return ec__load(&p->inbox_count) + ec__load(&p->fifo_len);
}

/* Backlog full and the caller may wait: waits for room (or shutdown). 0 or -1 (errno). */
static int wait_for_room(pool *p)
{
  pthread_mutex_lock(&p->lock);
  p->blocked++;
  p->room_waiters++;
  /* take() decrements count and signals under this lock: no lost wakeup. */
  while (!ec__load(&p->stopping) && queued(p) >= p->backlog)
    pthread_cond_wait(&p->room, &p->lock);
  p->room_waiters--;
  pthread_mutex_unlock(&p->lock);
  if (ec__load(&p->stopping)) {
    errno = ESHUTDOWN;
    return -1;
  }
  return 0;
}

/* Removes one sleeper from the idle list and wakes it, if there still is one. */
static void wake_one(pool *p)
{
  worker *w;

  pthread_mutex_lock(&p->lock);
  w = p->idle;
  if (w != NULL) {
    p->idle = w->next_idle;
    ec__fetch_add(&p->nidle, -1);
    ec__fetch_add(&p->searching, 1); /* it looks at the queue once it runs */
    p->wakeups++;
  }
  pthread_mutex_unlock(&p->lock);
  /* Outside the lock, so that the woken worker does not block on it right away. */
  if (w != NULL)
    sem_post(&w->wake);
}

/*
 * Deferred submission. Completion callbacks that queue follow-up jobs (a pipeline of
 * CALLBACK_SCHED stages, or a shard keeping a window of jobs in flight) run in batches
 * (pool/completion.c drains a shard's completions in one go). Jobs they queue on pools
 * without a backlog limit are collected on a per-thread chain and spliced into the inbox
 * with one CAS, one fence and one wakeup decision per batch, at the end of the drain or
 * every DEFER_MAX jobs: the cost per job of the shared cache line is divided by the batch.
 * The jobs become visible to workers at most DEFER_MAX completions later. Pools with a
 * backlog take jobs one by one, so that their limit stays exact.
 */
#define DEFER_MAX   32
#define DEFER_POOLS 4

typedef struct deferred {
  pool *p;
  ec_async_job *head, *tail; /* oldest first */
  int64_t n;
} deferred;

static __thread struct {
  int depth; /* > 0 inside a drain */
  deferred q[DEFER_POOLS];
} defer;

/* Wakes sleepers for the jobs no searching worker will take. At most `max` wakeups. */
static void wake_for(pool *p, int64_t max)
{
  /* Pairs with the fence in idle_wait (see the file comment). */
  ec__fence();
  while (max-- > 0 && ec__load(&p->nidle) > 0 && queued(p) > ec__load(&p->searching))
    wake_one(p);
}

static void defer_flush(deferred *d)
{
  ec_async_job *newest = NULL, *oldest = d->head;
  uint64_t now = fw__mono_ns();
  pool *p = d->p;
  int64_t n = d->n;

  if (oldest == NULL)
    return;
  /* The inbox is newest first: reverse the chain onto it. */
  for (ec_async_job *j = d->head, *next; j != NULL; j = next) {
    next = j->next;
    j->_priv.queued_ns = now;
    j->next = newest;
    newest = j;
  }
  d->head = d->tail = NULL;
  d->n = 0;
  d->p = NULL;
  ec__fetch_add(&p->inbox_count, n); /* moved to fifo_len by refill */
  oldest->next = ec__load(&p->inbox);
  /* Release pairs with the acquire exchange in refill. */
  while (!__atomic_compare_exchange_n(&p->inbox, &oldest->next, newest, 1, __ATOMIC_RELEASE,
                                      __ATOMIC_RELAXED))
    ;
  wake_for(p, n);
}

void pool__defer_begin(void)
{
  defer.depth++;
}

void pool__defer_end(void)
{
  if (--defer.depth > 0)
    return;
  for (int i = 0; i < DEFER_POOLS; i++)
    defer_flush(&defer.q[i]);
}

/* Adds a job to this thread's chain for p; 0 if not deferred (push it now). */
static int defer_push(pool *p, ec_async_job *job)
{
  deferred *d = NULL;

  if (defer.depth == 0 || p->backlog != 0)
    return 0;
  for (int i = 0; i < DEFER_POOLS && d == NULL; i++)
    if (defer.q[i].p == p)
      d = &defer.q[i];
  for (int i = 0; i < DEFER_POOLS && d == NULL; i++)
    if (defer.q[i].p == NULL)
      d = &defer.q[i];
  if (d == NULL) {
    d = &defer.q[0]; /* more pools than slots: make room */
    defer_flush(d);
  }
  d->p = p;
  job->next = NULL;
  if (d->tail != NULL)
    d->tail->next = job;
  else
    d->head = job;
  d->tail = job;
  if (++d->n >= DEFER_MAX)
    defer_flush(d);
  return 1;
}

static int push(pool *p, ec_async_job *job, int may_wait)
{
  int64_t n;

  for (;;) {
    if (ec__load_acquire(&p->stopping)) { /* pairs with the release in pool_stop */
      errno = ESHUTDOWN;
      return 0;
    }
    if (defer_push(p, job))
      return 1;
    /* Reserves a place; moved to fifo_len by refill. */
    n = ec__fetch_add(&p->inbox_count, (int64_t)1) + 1;
    if (p->backlog == 0 || n + ec__load(&p->fifo_len) <= p->backlog)
      break;
    ec__fetch_add(&p->inbox_count, (int64_t)-1);
    if (!may_wait) {
      ec__fetch_add(&p->rejected, 1);
      log_reject(p, job);
      errno = EAGAIN;
      return 0;
    }
    if (wait_for_room(p) < 0)
      return 0;
  }
  job->_priv.queued_ns = fw__mono_ns();
  job->next = ec__load(&p->inbox);
  /* Release pairs with the acquire exchange in refill. */
  while (!__atomic_compare_exchange_n(&p->inbox, &job->next, job, 1, __ATOMIC_RELEASE,
                                      __ATOMIC_RELAXED))
    ;
  wake_for(p, 1);
  return 1;
}

/* Logs a refused call and sets errno; returns -1. */
static int refuse(int err, const ec_async_job *job, const char *why)
{
  ec_debug_printf(DERROR, EC_LOG_POOL, "ec_queue_async_job(%p) from %s:%d: %s", (const void *)job,
                  job && job->file ? job->file : "?", job ? job->line : 0, why);
  errno = err;
  return -1;
}

/* Checks the completion fields and picks the shard that runs the completion, if any.
 * 0, or -1 with errno (logged). */
static int completion_target(ec_async_job *job, int *target)
{
  int self = ec_shard_self();
  int home = self >= 0 ? self : 0; /* off the shards: shard 0 */

  *target = -1;
  switch (job->completion) {
  case ECTP_COMPLETE_NONE:
    return 0;
  case ECTP_COMPLETE_CALLBACK:
    return job->r.cb.func ? 0 : refuse(EINVAL, job, "ECTP_COMPLETE_CALLBACK without r.cb.func");
  case ECTP_COMPLETE_SEMAPHORE:
    return job->r.sema ? 0 : refuse(EINVAL, job, "ECTP_COMPLETE_SEMAPHORE without r.sema");
  case ECTP_COMPLETE_EVENT:
    if (job->r.e.event == NULL)
      return refuse(EINVAL, job, "ECTP_COMPLETE_EVENT without r.e.event");
    /* The Event's owner; an Event not placed yet is placed where the completion runs. */
    *target = ec_event_shard(job->r.e.event);
    if (*target < 0 || *target >= ec_shard_count())
      *target = home;
    return 0;
  case ECTP_COMPLETE_EVENT_INST:
    if (job->r.e.event == NULL)
      return refuse(EINVAL, job, "ECTP_COMPLETE_EVENT_INST without r.e.event");
    *target = ec_scheduler_inst_index(job->r.e.inst);
    return *target >= 0 ? 0 : refuse(EINVAL, job, "ECTP_COMPLETE_EVENT_INST: invalid r.e.inst");
  case ECTP_COMPLETE_CALLBACK_SCHED:
    if (job->r.cb.func == NULL)
      return refuse(EINVAL, job, "ECTP_COMPLETE_CALLBACK_SCHED without r.cb.func");
    *target = home;
    return 0;
  case ECTP_COMPLETE_CALLBACK_SCHED_INST:
    if (job->r.cb.func == NULL)
      return refuse(EINVAL, job, "ECTP_COMPLETE_CALLBACK_SCHED_INST without r.cb.func");
    *target = ec_scheduler_inst_index(job->r.cb.inst);
    return *target >= 0
               ? 0
               : refuse(EINVAL, job, "ECTP_COMPLETE_CALLBACK_SCHED_INST: invalid r.cb.inst");
  case ECTP_COMPLETE_MODULE:
    return refuse(ENOTSUP, job, "ECTP_COMPLETE_MODULE: ecshard has no validation modules");
  case ECTP_COMPLETE_SYNC:
    break; /* handled by the caller */
  }
  return refuse(EINVAL, job, "unknown completion mode");
}

/* ECTP_COMPLETE_SYNC: the work runs here and now; the return is its completion. */
static int run_sync(pool *p, ec_async_job *job)
{
  int mt = job->free_on_completion_memtype;
  uint64_t t0 = fw__mono_ns(), ran;

  if (p != NULL) {
    pthread_mutex_lock(&p->lock);
    p->started++;
    pthread_mutex_unlock(&p->lock);
  }
  run_work(job);
  ran = fw__mono_ns() - t0;
  if (p != NULL) {
    pthread_mutex_lock(&p->lock);
    p->done++;
    p->run_ns += ran;
    pthread_mutex_unlock(&p->lock);
  }
  if (mt != 0)
    ec_free(mt, job);
  return 1;
}

int ec_queue_async_job_(ec_async_job *job, const char *file, int line, int flags)
{
  pool_set *ps = pools_get();
  pool *p;
  int target;

  if (job == NULL) {
    refuse(EINVAL, NULL, "NULL job");
    return 0;
  }
  job->file = file;
  job->line = line;
  if (job->worker == NULL) {
    refuse(EINVAL, job, "no worker function");
    return 0;
  }
  p = pool_by_class(ps, job->job_class);
  memset(&job->_priv, 0, sizeof(job->_priv));
  if (ps != NULL && p == NULL) {
    char why[64];

    snprintf(why, sizeof(why), "no pool of job_class %d", job->job_class);
    refuse(EINVAL, job, why);
    return 0;
  }
  if (job->completion == ECTP_COMPLETE_SYNC)
    return run_sync(p, job);
  if (ps == NULL) {
    errno = ESHUTDOWN; /* not logged: expected around init and join */
    return 0;
  }
  if (completion_target(job, &target) < 0)
    return 0;
  job->_priv.pool = p;
  job->_priv.target = target;
  /* A shard never waits for room; other threads do, unless told not to. */
  return push(p, job, ec_shard_self() < 0 && !(flags & EC_QUEUE_NOWAIT));
}

/* ---- names and classes --------------------------------------------------------------- */

static int builtin_class(const char *name)
{
  for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
    if (strcasecmp(builtin[i].name, name) == 0)
      return builtin[i].job_class;
  return -1;
}

static int class_in(const pool_set *ps, const char *name)
{
  for (int i = 0; i < ps->npools; i++)
    if (strcasecmp(ps->pools[i]->name, name) == 0)
      return ps->pools[i]->job_class;
  return -1;
}

int ec_thread_pool_name_to_class(const char *name)
{
  pool_set *ps = pools_get();

  if (name == NULL)
    return -1;
  if (ps == NULL) {
    int c = builtin_class(name);

    return c == ECTP_CLASS_CPU || c == ECTP_CLASS_IO ? c : -1;
  }
  return class_in(ps, name);
}

const char *ec_thread_pool_name(int job_class)
{
  pool *p = pool_by_class(pools_get(), job_class);

  return p ? p->name : NULL;
}

int ec_thread_pool_count(void)
{
  pool_set *ps = pools_get();

  return ps ? ps->npools : 0;
}

int ec_thread_pool_stats_get(int job_class, ec_thread_pool_stats *out)
{
  pool_set *ps = pools_get();
  pool *p = pool_by_class(ps, job_class);
  uint64_t now = fw__mono_ns(), elapsed, done = 0, run_ns = 0;

  if (ps == NULL)
    return -ESHUTDOWN;
  if (p == NULL || out == NULL)
    return -EINVAL;
  memset(out, 0, sizeof(*out));
  /* The workers' counts first, `started` second: a job counted done was started before,
   * so running = started - done never goes below zero. */
  for (int i = 0; i < p->nthreads; i++) {
    done += ec__load(&p->workers[i].done); /* pairs with the stores in work() */
    run_ns += ec__load(&p->workers[i].run_ns);
  }
  pthread_mutex_lock(&p->lock);
  done += p->done;
  run_ns += p->run_ns;
  out->name = p->name;
  out->job_class = p->job_class;
  out->threads = p->nthreads;
  out->backlog = (size_t)p->backlog;
  out->queued = (uint64_t)queued(p);
  out->running = p->started - done;
  out->peak_queued = p->peak;
  out->submitted = p->started + out->queued;
  out->done = done;
  out->rejected = ec__load(&p->rejected);
  out->blocked = p->blocked;
  out->skipped = p->skipped;
  out->sleeps = p->sleeps;
  out->wakeups = p->wakeups;
  out->wait_ns = p->wait_ns;
  out->run_ns = run_ns;
  elapsed = p->start_ns ? now - p->start_ns : 0;
  if (p->started > 0)
    out->mean_wait_us = (double)p->wait_ns / (double)p->started / 1e3;
  pthread_mutex_unlock(&p->lock);
  if (done > 0)
    out->mean_run_us = (double)run_ns / (double)done / 1e3;
  if (elapsed > 0) {
    out->avg_concurrency = (double)run_ns / (double)elapsed;
    out->saturation = out->threads > 0 ? out->avg_concurrency / out->threads : 0;
    if (out->saturation > 1)
      out->saturation = 1; /* SYNC work in callers' threads counts too */
  }
  return 0;
}

/* ---- life cycle ---------------------------------------------------------------------- */

static void pool_free(pool *p)
{
  if (p == NULL)
    return;
  if (p->workers != NULL) {
    for (int i = 0; i < p->nthreads; i++)
      sem_destroy(&p->workers[i].wake);
    ec_free(MEMTYPE_GENERIC, p->workers);
  }
  pthread_cond_destroy(&p->room);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

static pool *pool_new(const char *name, int job_class, long long threads, long long backlog,
                      long long stack_size)
{
  /* Cache-line aligned (the submit side has lines of its own), which the memtyped
   * allocator's 16-byte alignment would not honour. */
  pool *p = aligned_alloc(CK_MD_CACHELINE, sizeof(*p));

  if (p == NULL)
    return NULL;
  memset(p, 0, sizeof(*p));
  /* A plain mutex: an adaptive one (spinning before it sleeps) cost more than it saved
   * with workers and shards outnumbering the CPUs (perf/README.md, "Jobs"). */
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->room, NULL);
  snprintf(p->name, sizeof(p->name), "%s", name);
  p->job_class = job_class;
  p->nthreads = threads > 0 ? (int)threads : fw__cpu_count();
  p->backlog = backlog > 0 ? backlog : 0;
  p->stack_size = stack_size > 0 ? (size_t)stack_size : 0;
  p->workers = ec_malloc_size(MEMTYPE_GENERIC, sizeof(worker) * (size_t)p->nthreads);
  if (p->workers == NULL) {
    free(p);
    return NULL;
  }
  memset(p->workers, 0, sizeof(worker) * (size_t)p->nthreads);
  for (int i = 0; i < p->nthreads; i++) {
    p->workers[i].pool = p;
    p->workers[i].index = i;
    sem_init(&p->workers[i].wake, 0, 0);
  }
  return p;
}

static long long member_int(const config_setting_t *g, const char *name, long long def)
{
  long long v;

  return config_setting_lookup_int64(g, name, &v) ? v : def;
}

/* Adds a pool; -EINVAL for a duplicate name (case-insensitive) or too many pools. */
static int add_pool(pool_set *ps, const char *name, long long threads, long long backlog,
                    long long stack_size, int *next_user)
{
  int c = builtin_class(name);
  pool *p;

  if (class_in(ps, name) >= 0) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG,
                    "threadpool.%s: a pool of that name exists already (names are "
                    "case-insensitive)",
                    name);
    return -EINVAL;
  }
  if (ps->npools == MAX_POOLS || (c < 0 && *next_user >= MAX_CLASSES)) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "threadpool.%s: more than %d pools", name, MAX_POOLS);
    return -EINVAL;
  }
  if (c < 0)
    c = (*next_user)++;
  p = pool_new(name, c, threads, backlog, stack_size);
  if (p == NULL)
    return -ENOMEM;
  ps->pools[ps->npools++] = p;
  ps->by_class[c] = p;
  return 0;
}

static void set_free(pool_set *ps)
{
  for (int i = 0; i < ps->npools; i++)
    pool_free(ps->pools[i]);
  ec_free(MEMTYPE_GENERIC, ps);
}

int pool__init(void)
{
  const config_t *cfg = fw__config();
  const config_setting_t *tp = cfg ? config_lookup(cfg, "threadpool") : NULL;
  int next_user = ECTP_CLASS_FIRST_USER;
  pool_set *ps;
  int rc = 0;

  if (g_pools != NULL)
    return -EALREADY;
  ps = ec_malloc_size(MEMTYPE_GENERIC, sizeof(*ps));
  if (ps == NULL)
    return -ENOMEM;
  memset(ps, 0, sizeof(*ps));
  for (int i = 0; rc == 0 && tp != NULL && i < config_setting_length(tp); i++) {
    const config_setting_t *m = config_setting_get_elem(tp, (unsigned)i);

    rc = add_pool(ps, config_setting_name(m), member_int(m, "concurrency", 0),
                  member_int(m, "backlog", 0), member_int(m, "stack_size", 0), &next_user);
  }
  /* The built-in classes exist whatever the configuration says. */
  if (rc == 0 && ps->by_class[ECTP_CLASS_CPU] == NULL)
    rc = add_pool(ps, "CPU", 0, 0, 0, &next_user);
  if (rc == 0 && ps->by_class[ECTP_CLASS_IO] == NULL)
    rc = add_pool(ps, "IO", DEFAULT_IO_THREADS, 0, 0, &next_user);
  if (rc == 0)
    rc = pool__completions_init(ec_shard_count());
  if (rc < 0) {
    set_free(ps);
    return rc;
  }
  pool__io_configure();
  /* Pairs with the acquire in pools_get: the pools are complete before anyone sees them. */
  ec__store_release(&g_pools, ps);
  return 0;
}

static int start_workers(pool *p)
{
  pthread_attr_t attr;
  int rc = 0;

  pthread_attr_init(&attr);
  if (p->stack_size > 0 && (rc = pthread_attr_setstacksize(&attr, p->stack_size)) != 0)
    ec_debug_printf(DERROR, EC_LOG_POOL, "pool %s: stack_size %zu: %s; using the default", p->name,
                    p->stack_size, strerror(rc));
  p->start_ns = fw__mono_ns();
  for (int i = 0; i < p->nthreads; i++) {
    rc = pthread_create(&p->workers[i].thread, &attr, worker_main, &p->workers[i]);
    if (rc != 0) {
      ec_debug_printf(DCRITICAL, EC_LOG_POOL, "pool %s: pthread_create(worker %d) failed: %s",
                      p->name, i, strerror(rc));
      break;
    }
    p->nstarted++;
  }
  pthread_attr_destroy(&attr);
  return -rc;
}

int pool__start(void)
{
  pool_set *ps = pools_get();
  sigset_t all, old;
  int rc = 0;

  if (ps == NULL)
    return -EINVAL;
  /* Workers never take process signals, like the shards. */
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (int i = 0; rc == 0 && i < ps->npools; i++)
    rc = start_workers(ps->pools[i]);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc < 0)
    pool__stop(); /* joins what started; queued jobs stay for the join */
  else
    ec_debug_printf(DINFO, EC_LOG_POOL, "%d thread pools started", ps->npools);
  return rc;
}

/* Detaches the queued jobs flagged skip_on_shutdown (lock held). */
static ec_async_job *detach_skipped(pool *p)
{
  ec_async_job *keep = NULL, *keep_tail = NULL, *skip = NULL, **skip_tail = &skip;

  refill(p);
  for (ec_async_job *j = p->head, *next; j != NULL; j = next) {
    next = j->next;
    j->next = NULL;
    if (j->skip_on_shutdown) {
      *skip_tail = j;
      skip_tail = &j->next;
      ec__store(&p->fifo_len, p->fifo_len - 1);
      p->skipped++;
    } else {
      if (keep_tail)
        keep_tail->next = j;
      else
        keep = j;
      keep_tail = j;
    }
  }
  p->head = keep;
  p->tail = keep_tail;
  return skip;
}

/* Stops one pool: refuses new jobs, wakes everybody, completes the dropped jobs. */
static void pool_stop(pool *p)
{
  ec_async_job *skip;
  worker *idle;

  /* Pairs with the acquire loads in push and work: no new job from now on. */
  ec__store_release(&p->stopping, 1);
  pthread_mutex_lock(&p->lock);
  skip = detach_skipped(p);
  idle = p->idle;
  p->idle = NULL;
  for (worker *w = idle; w != NULL; w = w->next_idle) {
    ec__fetch_add(&p->nidle, -1);
    ec__fetch_add(&p->searching, 1);
  }
  pthread_cond_broadcast(&p->room); /* waiting producers now fail with ESHUTDOWN */
  pthread_mutex_unlock(&p->lock);
  for (worker *w = idle, *next; w != NULL; w = next) {
    next = w->next_idle;
    sem_post(&w->wake);
  }
  while (skip != NULL) {
    ec_async_job *j = skip;

    skip = j->next;
    j->next = NULL;
    j->_priv.flags |= JOB_SKIPPED;
    pool__complete(j);
  }
}

void pool__stop(void)
{
  pool_set *ps = pools_get();

  if (ps == NULL)
    return;
  for (int i = 0; i < ps->npools; i++)
    pool_stop(ps->pools[i]);
  /* Workers finish the queue before they exit; a pool that never started has the
   * joining thread do its work. Completions meant for shards are in their mailboxes. */
  for (int i = 0; i < ps->npools; i++) {
    pool *p = ps->pools[i];

    for (int w = 0; w < p->nstarted; w++)
      pthread_join(p->workers[w].thread, NULL);
    p->nstarted = 0;
    work(p, NULL);
  }
}

void pool__fini(void)
{
  pool_set *ps = pools_get();

  if (ps == NULL)
    return;
  ec__store_release(&g_pools, NULL);
  set_free(ps);
  pool__completions_fini();
  pool__io_reset();
}
