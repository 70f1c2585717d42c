/*
 * ec_thread_pool.h - worker thread pools and the async jobs that leave a shard to block
 * and come back (Momentum's thread-pool API).
 *
 * A shard must never block. Work that blocks (disk, DNS, a remote fetch, a CPU-heavy
 * computation) is packaged as an ec_async_job and queued on a named pool of worker
 * threads; when the work is done, the job's completion mode says what happens next:
 * nothing, a callback on the worker, a callback or an Event dispatch on a shard, a
 * semaphore post. Completions that run on a shard travel through that shard's mailbox;
 * a worker never touches an Event.
 *
 * Pools come from the configuration (see docs/reference/ec_thread_pool.md):
 *
 *   threadpool = {
 *     CPU = { concurrency = 0; };                  # 0: one thread per CPU
 *     IO  = { concurrency = 16; backlog = 10000; };
 *     Resolver = { concurrency = 4; };             # user-defined: any name
 *   };
 *
 * CPU and IO always exist. A pool whose name is one of Momentum's built-in classes gets
 * that class number (SwapOut = 2, ...); other pools get numbers from
 * ECTP_CLASS_FIRST_USER on, in configuration order (ec_thread_pool_name_to_class).
 *
 * Threads: ec_queue_async_job may be called from any thread after ec_framework_init.
 * Jobs queued before ec_framework_start run once the pools start. A job is "single
 * thread-safe": between ec_queue_async_job and its completion only the framework
 * touches it (the worker, then the completion).
 */
#ifndef EC_THREAD_POOL_H
#define EC_THREAD_POOL_H

#include "ec_config.h"
#include "event.h"
#include "scheduler.h"

#include <semaphore.h>

typedef struct ec_thread_pool_job ec_async_job;

/* The blocking work, run on a worker thread of the job's pool (closure = job->closure). */
typedef void (*ec_thread_pool_work_func)(ec_async_job *job, void *closure);
/* A completion callback (closure = job->r.cb.closure). */
typedef void (*ec_thread_pool_completion_func)(ec_async_job *job, void *closure);

/* Job classes (pool ids). CPU and IO always exist; the others exist when configured. */
#define ECTP_CLASS_SHORT_LIVED  -1 /* Momentum: a thread per job; not supported (EINVAL) */
#define ECTP_CLASS_CPU          0
#define ECTP_CLASS_IO           1
#define ECTP_CLASS_SWAPOUT      2
#define ECTP_CLASS_SWAPIN       3
#define ECTP_CLASS_CLOSE        4
#define ECTP_CLASS_UNLINK       5
#define ECTP_CLASS_BATCH_UNLINK 6
#define ECTP_CLASS_SPOOL_IN     7
#define ECTP_CLASS_ASYNC_BOUNCE 8
#define ECTP_CLASS_SIEVE_IO     9
#define ECTP_CLASS_FIRST_USER   10 /* ecshard: first number of other configured pools */

/* Framework-private state of a job: set by ec_queue_async_job, never read before. */
struct ec_thread_pool_job_priv {
  uint64_t queued_ns; /* CLOCK_MONOTONIC at queue time (stats) */
  void *pool;         /* the pool it was queued on */
  int target;         /* shard that runs EVENT / *_SCHED completions */
  unsigned phase;     /* skip_completion hand-off with ec_async_complete_tail (atomic) */
  unsigned flags;     /* skipped at shutdown, ... */
};

struct ec_thread_pool_job {
  struct ec_thread_pool_job *next; /* the framework's queues link jobs through it */
  enum _ec_thread_pool_job_completion {
    ECTP_COMPLETE_NONE,      /* nothing (free_on_completion_memtype still applies) */
    ECTP_COMPLETE_EVENT,     /* schedule_event_and_dispatch(r.e.event, r.e.mask) on its shard */
    ECTP_COMPLETE_MODULE,    /* Momentum's validation modules: not supported (ENOTSUP) */
    ECTP_COMPLETE_CALLBACK,  /* r.cb.func(job, r.cb.closure) on the worker thread */
    ECTP_COMPLETE_SEMAPHORE, /* sem_post(r.sema) */
    ECTP_COMPLETE_SYNC,      /* run the work in the caller of ec_queue_async_job */
    ECTP_COMPLETE_CALLBACK_SCHED,      /* r.cb.func on the shard that queued the job */
    ECTP_COMPLETE_EVENT_INST,          /* EVENT, with the Event moved to shard r.e.inst */
    ECTP_COMPLETE_CALLBACK_SCHED_INST, /* CALLBACK_SCHED on shard r.cb.inst */
  } completion;
  int job_class;      /* the pool: ECTP_CLASS_* or ec_thread_pool_name_to_class() */
  sem_t *concurrency; /* optional: sem_wait before the work, sem_post after */
  ec_thread_pool_work_func worker;
  void *closure; /* passed to worker */
  union _ec_thread_pool_job_r {
    struct _ec_thread_pool_job_r_e {
      Event *event;
      int mask;
      void *ctx; /* Momentum's validate_context; unused */
      ec_scheduler_inst *inst;
    } e;
    struct _ec_thread_pool_job_r_cb {
      ec_thread_pool_completion_func func;
      void *closure;
      ec_scheduler_inst *inst;
    } cb;
    sem_t *sema;
  } r;
  int free_on_completion_memtype; /* non-zero: ec_free(it, job) after the completion */
  unsigned skip_completion : 1;   /* no automatic completion: ec_async_complete_tail */
  unsigned skip_on_shutdown : 1;  /* at shutdown: drop the work, still complete */
  unsigned _spare_bits : 30;
  const char *file; /* where it was queued (ec_queue_async_job) */
  int line;
  struct ec_thread_pool_job_priv _priv;
};

/* ec_queue_async_job_ flags. */
#define EC_QUEUE_NOWAIT 0x1 /* fail with EAGAIN when the backlog is full, on any thread */

/*
 * Queues `job` on the pool job->job_class. Returns 1 on success, 0 on failure with errno:
 *   EAGAIN    the pool's backlog is full and the caller is a shard (or passed
 *             EC_QUEUE_NOWAIT). A shard never waits for room: it gets this at once (and
 *             a rate-limited log line). Any other thread blocks until there is room.
 *   EINVAL    NULL job or worker, no pool of that class, or a completion mode whose
 *             fields are missing (r.e.event, r.cb.func, r.sema, an invalid inst);
 *   ENOTSUP   ECTP_COMPLETE_MODULE;
 *   ESHUTDOWN the framework is not initialised, or its pools are shutting down.
 * On failure the caller still owns the job and nothing ran.
 *
 * ECTP_COMPLETE_SYNC runs the work (and frees the job if asked) in the calling thread
 * before returning 1, whatever the pool; on a shard that blocks the shard for as long as
 * the work takes. Any thread, after ec_framework_init (SYNC also before).
 */
EC_API int ec_queue_async_job_(ec_async_job *job, const char *file, int line, int flags);
#define ec_queue_async_job(job) ec_queue_async_job_((job), __FILE__, __LINE__, 0)

/*
 * Makes the job's completion resume `e`: schedule_event_and_dispatch(e, mask) on e's
 * owner shard once the work is done (ECTP_COMPLETE_EVENT). This is how a suspended
 * session (the seed's duplicate Event) comes back. Call it before queueing the job, on
 * the thread that owns `e` (the shard that suspended it). If `e` was closed meanwhile
 * (e->fd == -1), its callback is still dispatched with `mask`, unscheduled, so that it can
 * release its state and return 0.
 */
EC_API void ec_async_wake_event(ec_async_job *job, Event *e, int mask);

/*
 * Runs the completion of a job queued with skip_completion set (before queueing, or by
 * its worker function): the job stays with whoever finishes the work later, who calls
 * this from any thread. If the worker function has not returned yet, the completion runs
 * when it does. Only for jobs with skip_completion; once per queueing.
 */
EC_API void ec_async_complete_tail(ec_async_job *job);

/* 1 if the pool dropped the job's work at shutdown (skip_on_shutdown) and only ran its
 * completion. Valid in and after the completion. */
EC_API int ec_async_job_skipped(const ec_async_job *job);

/* Class of the pool named `name` (case-insensitive), or -1. CPU and IO are known before
 * ec_framework_init; other pools between init and join. Any thread. */
EC_API int ec_thread_pool_name_to_class(const char *name);

/* Name of the pool of class `job_class`, or NULL. Between init and join. */
EC_API const char *ec_thread_pool_name(int job_class);

/* Number of pools (0 outside init..join). */
EC_API int ec_thread_pool_count(void);

/* Counters of one pool, read under its lock. Times are nanoseconds. */
typedef struct ec_thread_pool_stats {
  const char *name;
  int job_class;
  int threads;            /* worker threads (the pool's concurrency) */
  size_t backlog;         /* queue limit, 0 = none */
  uint64_t queued;        /* jobs waiting now */
  uint64_t running;       /* jobs whose work is running now */
  uint64_t peak_queued;   /* most jobs ever waiting at once */
  uint64_t submitted;     /* jobs accepted since the pool was created (SYNC included) */
  uint64_t done;          /* jobs whose work finished */
  uint64_t rejected;      /* refused because the backlog was full */
  uint64_t blocked;       /* queue calls that waited for room (threads other than shards) */
  uint64_t skipped;       /* work dropped at shutdown (skip_on_shutdown) */
  uint64_t sleeps;        /* times a worker found nothing to do and slept */
  uint64_t wakeups;       /* sleeping workers woken for new jobs */
  uint64_t wait_ns;       /* total time jobs waited in the queue */
  uint64_t run_ns;        /* total time of the work functions */
  double mean_wait_us;    /* wait_ns / jobs started */
  double mean_run_us;     /* run_ns / done */
  double avg_concurrency; /* run_ns / time since the pool started: busy workers on average */
  double saturation;      /* avg_concurrency / threads, 0..1 */
} ec_thread_pool_stats;

/* 0, -EINVAL (no such pool), -ESHUTDOWN (not initialised). Any thread. */
EC_API int ec_thread_pool_stats_get(int job_class, ec_thread_pool_stats *out);

#endif /* EC_THREAD_POOL_H */
