/*
 * pool/completion.c - what happens when a job's work is done: the completion modes, and
 * the per-shard completion queues that carry EVENT and CALLBACK_SCHED completions to
 * their shard.
 *
 * A worker never touches an Event, and never runs shard code. It pushes the finished job
 * on the target shard's completion queue, an intrusive Treiber stack linked through
 * job->next (one CAS, no allocation). Only the push that finds the stack empty posts a
 * mailbox message (ec_shard_run) to drain it; the shard takes the whole stack with one
 * exchange and runs the batch in completion order. The mailbox's own wakeup writes the
 * shard's eventfd only when it sleeps, so a busy shard gets a burst of completions for
 * one message and no system call, a sleeping one for one eventfd write (the anchors'
 * "empty -> non-empty" rule, as in h2o and Envoy).
 *
 * No message is lost: a job pushed on a non-empty stack sits above the job that found
 * it empty, whose message is posted after that push and drains everything present when
 * it runs. A handler that finds the stack empty (an earlier one took its jobs) does
 * nothing.
 */
#include "pool/pool.h"

#include "framework/atomic.h"
#include "framework/internal.h"
#include "shard/shard.h"
#include "sp_async.h"

#include <ck_cc.h>

typedef struct completion_queue {
  ec_async_job *head CK_CC_CACHELINE; /* Treiber stack, any thread pushes */
  int shard;
} completion_queue;

static completion_queue *queues;
static int nqueues;

int pool__completions_init(int nshards)
{
  if (nshards <= 0)
    return -EINVAL;
  /* Cache-line aligned: producers on different shards' queues must not share lines. */
  queues = aligned_alloc(CK_MD_CACHELINE, sizeof(*queues) * (size_t)nshards);
  if (queues == NULL)
    return -ENOMEM;
  memset(queues, 0, sizeof(*queues) * (size_t)nshards);
  for (int i = 0; i < nshards; i++)
    queues[i].shard = i;
  nqueues = nshards;
  return 0;
}

void pool__completions_fini(void)
{
  free(queues);
  queues = NULL;
  nqueues = 0;
}

static void free_job(ec_async_job *job, int memtype)
{
  if (memtype != 0)
    ec_free(memtype, job);
}

/* ---- on the shard -------------------------------------------------------------------- */

static void deliver(ec_async_job *job, int target);

/* Resumes the Event of an EVENT / EVENT_INST completion; runs on shard `me`. */
static void complete_event(ec_async_job *job, int me)
{
  Event *e = job->r.e.event;
  int mask = job->r.e.mask;
  int owner = ec_event_shard(e);
  shard *s = shard__self();
  int rc;

  /* An Event without owner is placed here; EVENT_INST moves a suspended (unscheduled,
   * unreferenced) Event to this shard. ec_event_place refuses one that is busy. */
  if (owner != me && (owner < 0 || job->completion == ECTP_COMPLETE_EVENT_INST) &&
      ec_event_place(e, me) == 0)
    owner = me;
  if (owner != me && owner >= 0) {
    deliver(job, owner); /* it lives elsewhere: complete it there */
    return;
  }
  free_job(job, job->free_on_completion_memtype);
  if (e->fd < 0 && !(e->_priv.flags & SHARD__EVF_TIMER)) {
    /* Closed while suspended: nothing to schedule, but its callback still learns that
     * the job is done, so that it can release its state and return 0. */
    ec_debug_printf(DDEBUG, EC_LOG_POOL, "job completion: Event %p was closed meanwhile",
                    (void *)e);
    shard__request_dispatch(s, e, mask);
    return;
  }
  rc = ec_schedule_event_and_dispatch(e, mask);
  if (rc < 0) {
    ec_debug_printf(DERROR, EC_LOG_POOL,
                    "job completion: cannot schedule Event %p (fd %d): %s; dispatching it "
                    "unscheduled so that its callback can clean up",
                    (void *)e, e->fd, strerror(-rc));
    shard__request_dispatch(s, e, mask);
  }
}

static void complete_on_shard(ec_async_job *job, int me)
{
  int mt = job->free_on_completion_memtype;

  switch (job->completion) {
  case ECTP_COMPLETE_EVENT:
  case ECTP_COMPLETE_EVENT_INST:
    complete_event(job, me);
    break;
  case ECTP_COMPLETE_CALLBACK_SCHED:
  case ECTP_COMPLETE_CALLBACK_SCHED_INST:
    /* The memtype is read first: without it the callback may free the job itself. */
    job->r.cb.func(job, job->r.cb.closure);
    free_job(job, mt);
    break;
  default:
    free_job(job, mt);
    break;
  }
}

/* Mailbox handler: the batch of completions queued for this shard. */
static void drain(void *arg)
{
  completion_queue *q = arg;
  /* Pairs with the release CAS in deliver: the jobs' results are visible here. */
  ec_async_job *j = __atomic_exchange_n(&q->head, NULL, __ATOMIC_ACQUIRE);
  ec_async_job *fifo = NULL;

  /* The stack is newest first; reversed, completions run in the order they came. */
  while (j != NULL) {
    ec_async_job *next = j->next;

    j->next = fifo;
    fifo = j;
    j = next;
  }
  pool__defer_begin(); /* jobs the callbacks queue go out in batches */
  while (fifo != NULL) {
    ec_async_job *next = fifo->next;

    fifo->next = NULL;
    complete_on_shard(fifo, q->shard);
    fifo = next;
  }
  pool__defer_end();
}

/* ---- any thread ---------------------------------------------------------------------- */

static void deliver(ec_async_job *job, int target)
{
  completion_queue *q = &queues[target];
  ec_async_job *old = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
  int rc, tries = 0;

  do
    job->next = old;
  /* Release pairs with the acquire exchange in drain. */
  while (!__atomic_compare_exchange_n(&q->head, &old, job, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
  if (old != NULL)
    return; /* a drain is already on its way */
  /* Only ENOMEM can fail here, and a lost message would strand this queue for good. */
  while ((rc = ec_shard_run(target, drain, q)) == -ENOMEM) {
    if (tries++ % 1000 == 0)
      ec_debug_printf(DCRITICAL, EC_LOG_POOL,
                      "job completion for shard %d: out of memory posting to its mailbox; "
                      "retrying",
                      target);
    usleep(1000);
  }
  if (rc < 0)
    ec_debug_printf(DCRITICAL, EC_LOG_POOL, "job completion for shard %d lost: %s", target,
                    strerror(-rc));
}

void pool__complete(ec_async_job *job)
{
  int mt = job->free_on_completion_memtype;
  sem_t *sema;

  switch (job->completion) {
  case ECTP_COMPLETE_EVENT:
  case ECTP_COMPLETE_EVENT_INST:
  case ECTP_COMPLETE_CALLBACK_SCHED:
  case ECTP_COMPLETE_CALLBACK_SCHED_INST:
    if (job->_priv.target >= 0 && job->_priv.target < nqueues) {
      deliver(job, job->_priv.target);
      return;
    }
    ec_debug_printf(DCRITICAL, EC_LOG_POOL, "job from %s:%d: completion shard %d is gone",
                    job->file ? job->file : "?", job->line, job->_priv.target);
    return;
  case ECTP_COMPLETE_CALLBACK:
    job->r.cb.func(job, job->r.cb.closure);
    free_job(job, mt);
    return;
  case ECTP_COMPLETE_SEMAPHORE:
    /* Freed before the post: the waiter may reuse or free the job's container. */
    sema = job->r.sema;
    free_job(job, mt);
    sem_post(sema);
    return;
  default:
    free_job(job, mt);
    return;
  }
}

void ec_async_wake_event(ec_async_job *job, Event *e, int mask)
{
  if (job == NULL)
    return;
  job->completion = ECTP_COMPLETE_EVENT;
  job->r.e.event = e;
  job->r.e.mask = mask;
  job->r.e.ctx = NULL;
  job->r.e.inst = NULL;
}
