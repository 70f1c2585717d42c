/*
 * shard/poll_uring.c - the Linux backend that waits through io_uring.
 *
 * Readiness is epoll's, exactly as in poll_epoll.c (level-triggered, the generation in
 * epoll_data, one epoll_ctl per change of interest); only the wait differs: it is an
 * IORING_OP_EPOLL_WAIT request (Linux 6.15) submitted to a ring, together with the sends
 * the core queued during the iteration (write-behind Events, shard/wbuf.c). One
 * io_uring_enter(2) then writes the answers of the whole batch and waits for the next one:
 * a lock-step peer costs a read and that one call per round trip, instead of a read, a send
 * and an epoll_wait.
 *
 * Sends come in two kinds (shard/poller.h):
 * - fast: MSG_DONTWAIT | MSG_WAITALL with IOSQE_CQE_SKIP_SUCCESS. The kernel issues it
 *   inline while it takes the submission, and a send that cannot complete is failed rather
 *   than parked (REQ_F_NOWAIT), so by the time io_uring_enter returns every fast send is
 *   done; only a short one (its CQE carries the bytes sent) or a failed one posts a
 *   completion. The rest are reported done in full.
 * - slow: MSG_WAITALL without MSG_DONTWAIT: the ring parks it on the socket's poll queue
 *   and finishes it when the peer has taken everything. The core uses these for the
 *   remainder of a fast send that came back short, and for output of Events that are gone.
 *
 * user_data: 0 is the epoll wait; a tag | 1 a slow send; index << 2 | 2 a fast send (its
 * slot in `done`); 3 a cancellation, whose own completion is ignored.
 *
 * An epoll wait left in flight by a wait() that returned without it (timeout, or a poll
 * with timeout 0) may complete while the shard runs callbacks; its events could be out of
 * date by the time they are read, so they are dropped and a fresh wait is issued (which
 * completes at once if anything is still ready). That keeps the promise that a callback is
 * never handed a bit its descriptor does not have.
 */
#if defined(HAVE_SYS_EPOLL_H) && defined(HAVE_LIBURING)

#include "event.h"
#include "shard/poller.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif

#ifndef IORING_OP_EPOLL_WAIT
#define IORING_OP_EPOLL_WAIT 59 /* Linux 6.15; liburing 2.3's enum stops before it */
#endif
#ifndef IORING_ASYNC_CANCEL_ANY
#define IORING_ASYNC_CANCEL_ANY (1U << 2)
#endif

#define UD_EPOLL   0ull
#define UD_CANCEL  3ull
#define RING_SQ    1024
#define RING_CQ    8192
#define EXIT_WAITS 100 /* destroy: waits of 10 ms for cancelled requests to report */

typedef struct uring_state {
  struct io_uring ring;
  int epfd;
  struct epoll_event *evs; /* the epoll wait's output; fixed while a wait is in flight */
  int nevs;
  int ew_inflight;        /* an epoll wait has been submitted and has not completed */
  int ew_stale;           /* ... by an earlier wait(): its events may be out of date */
  int ew_fresh;           /* ... and it was issued by the last wait() or poll() */
  int slow_inflight;      /* slow sends not yet reported */
  int stopped;            /* stop() ran: no more requests */
  int ring_open;          /* the ring is set up (by the shard thread) */
  shard__send_done *done; /* outcomes for sent(); fast sends get their slot at send() */
  int ndone, done_cap;
} uring_state;

/* Sets up the ring, with what the wait and the fast sends rest on: the timeout passed with
 * the wait (5.11), CQE_SKIP_SUCCESS (5.17) and the epoll wait request (6.15). 0 or -errno
 * (-ENOSYS: too old a kernel; -EPERM: io_uring not allowed). */
static int ring_open(struct io_uring *ring)
{
  struct io_uring_params p;
  struct io_uring_probe *probe;
  int rc, ok;

  memset(&p, 0, sizeof(p));
  /* Completions are run when the shard enters the kernel, not by interrupting it; the ring
   * flags when some are waiting, so that a poll (timeout 0) knows to enter. */
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  p.cq_entries = RING_CQ;
  rc = io_uring_queue_init_params(RING_SQ, ring, &p);
  if (rc == -EINVAL) { /* before Linux 5.19: neither flag */
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = RING_CQ;
    rc = io_uring_queue_init_params(RING_SQ, ring, &p);
  }
  if (rc < 0)
    return rc;
  probe = io_uring_get_probe_ring(ring);
  ok = (p.features & IORING_FEAT_EXT_ARG) && (p.features & IORING_FEAT_CQE_SKIP) && probe != NULL &&
       io_uring_opcode_supported(probe, IORING_OP_EPOLL_WAIT);
  if (probe != NULL)
    io_uring_free_probe(probe);
  if (!ok) {
    io_uring_queue_exit(ring);
    return -ENOSYS;
  }
  return 0;
}

/* The ring is set up by the thread that uses it (the shard's), at its first wait or send:
 * see uring_stop for why no other thread may have a hand in it. create() only checks that
 * one can be set up here. */
static int ring_ready(uring_state *st)
{
  int rc;

  if (st->ring_open)
    return 0;
  if ((rc = ring_open(&st->ring)) < 0)
    return rc;
  st->ring_open = 1;
  return 0;
}

/* The check of create(), on a thread of its own: the kernel links a ring to the thread that
 * set it up, and when the ring goes, it interrupts that thread's next blocking call (task
 * work with TWA_SIGNAL: a recv with a timeout fails with EINTR). A thread that has exited
 * is not linked any more. */
static void *probe_thread(void *arg)
{
  struct io_uring ring;
  int *rc = arg;

  if ((*rc = ring_open(&ring)) == 0)
    io_uring_queue_exit(&ring);
  return NULL;
}

/*
 * Valgrind runs one thread at a time and lets another run only while a thread is in a
 * system call it knows may block; io_uring_enter is not one of them (3.19), so a shard
 * waiting in it stops the whole process, signals included: ecshardd under valgrind would
 * not even stop on SIGTERM. RUNNING_ON_VALGRIND where valgrind's header was there at build
 * time, else its preload library in the environment.
 */
static int under_valgrind(void)
{
  const char *pre = getenv("LD_PRELOAD");

#ifdef RUNNING_ON_VALGRIND
  if (RUNNING_ON_VALGRIND)
    return 1;
#endif
  return pre != NULL && strstr(pre, "vgpreload") != NULL;
}

static int uring_create(void **state, int size_hint)
{
  uring_state *st;
  pthread_t t;
  int rc = -ENOSYS;

  (void)size_hint;
  if (under_valgrind())
    return -ENOTSUP; /* the caller logs it and uses epoll */
  if ((st = calloc(1, sizeof(*st))) == NULL)
    return -ENOMEM;
  if ((errno = pthread_create(&t, NULL, probe_thread, &rc)) != 0) {
    rc = -errno;
    free(st);
    return rc;
  }
  pthread_join(t, NULL);
  if (rc < 0) {
    free(st);
    return rc;
  }
  st->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (st->epfd < 0) {
    rc = -errno;
    free(st);
    return rc;
  }
  *state = st;
  return 0;
}

/* A free submission slot, submitting what is queued if the ring is full (fast sends then
 * complete there and then; their slots in `done` stay valid until sent()). */
static struct io_uring_sqe *get_sqe(uring_state *st)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe(&st->ring);

  if (sqe == NULL && io_uring_submit(&st->ring) >= 0)
    sqe = io_uring_get_sqe(&st->ring);
  return sqe;
}

static void reap(uring_state *st, int *events, int *interrupted);

/* The shard thread, leaving its loop: requests still in flight point into memory about to
 * be freed (the epoll wait's array, the core's send buffers), so they are cancelled here
 * and seen to report. It must be this thread: a ring used from another one (the joining
 * thread) makes that thread a submitter, and the kernel's completion work for it then
 * interrupts its blocking calls with EINTR. */
static void uring_stop(void *state)
{
  uring_state *st = state;

  if (st->ring_open && (st->ew_inflight || st->slow_inflight > 0)) {
    struct io_uring_sqe *sqe = get_sqe(st);

    if (sqe != NULL) {
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
      sqe->user_data = UD_CANCEL;
    }
    for (int i = 0; i < EXIT_WAITS && (st->ew_inflight || st->slow_inflight > 0); i++) {
      struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10000000} /* 10 ms */;
      struct io_uring_cqe *cqe;
      int ignored = -1, intr = 0;

      io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1, &ts, NULL);
      st->ew_stale = 1; /* whatever it reports is not wanted */
      reap(st, &ignored, &intr);
    }
  }
  st->stopped = 1;
}

static void uring_destroy(void *state)
{
  uring_state *st = state;

  if (st == NULL)
    return;
  if (st->ring_open)
    io_uring_queue_exit(&st->ring); /* nothing in flight: stop() ran, or wait() never did */
  close(st->epfd);
  free(st->evs);
  free(st->done);
  free(st);
}

static int uring_ctl(void *state, int fd, uint32_t gen, int oldmask, int newmask)
{
  return shard__epoll_ctl(((uring_state *)state)->epfd, fd, gen, oldmask, newmask);
}

static int done_push(uring_state *st, void *tag, int32_t res, uint32_t len)
{
  if (st->ndone == st->done_cap) {
    int cap = st->done_cap ? st->done_cap * 2 : 64;
    shard__send_done *d = realloc(st->done, sizeof(*d) * (size_t)cap);

    if (d == NULL)
      return -ENOMEM;
    st->done = d;
    st->done_cap = cap;
  }
  st->done[st->ndone].tag = tag;
  st->done[st->ndone].res = res;
  st->done[st->ndone].len = len;
  return st->ndone++;
}

static int uring_send(void *state, int fd, const void *buf, uint32_t len, void *tag, int slow)
{
  uring_state *st = state;
  struct io_uring_sqe *sqe;
  int idx = -1, rc;

  if (((uintptr_t)tag & 3) != 0)
    return -EINVAL;
  if (st->stopped)
    return -ESHUTDOWN;
  if ((rc = ring_ready(st)) < 0)
    return rc;
  /* The outcome slot first: a fast send cannot be issued without a place to report it. */
  if (!slow && (idx = done_push(st, tag, (int32_t)len, len)) < 0)
    return idx;
  if ((sqe = get_sqe(st)) == NULL) {
    if (idx >= 0)
      st->ndone--;
    return -EBUSY;
  }
  io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL | MSG_WAITALL | (slow ? 0 : MSG_DONTWAIT));
  if (slow) {
    sqe->user_data = (uint64_t)(uintptr_t)tag | 1;
    st->slow_inflight++;
  } else {
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data = (uint64_t)idx << 2 | 2;
  }
  return 0;
}

static int uring_cancel(void *state, void *tag)
{
  uring_state *st = state;
  struct io_uring_sqe *sqe = st->stopped || !st->ring_open ? NULL : get_sqe(st);

  if (sqe == NULL)
    return -EBUSY;
  io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)tag | 1, 0);
  sqe->user_data = UD_CANCEL;
  return 0;
}

static int uring_sent(void *state, shard__send_done **done)
{
  uring_state *st = state;
  int n = st->ndone;

  *done = st->done;
  /* A fast send is done once the kernel has taken it. While submissions are still queued
   * (an io_uring_enter failed: ENOMEM, EAGAIN), nothing is reported, so that no buffer the
   * queue points into is reused; the next wait submits them and they report then. */
  if (st->ring_open && io_uring_sq_ready(&st->ring) > 0)
    return 0;
  st->ndone = 0;
  return n;
}

/* Takes every completion: the epoll wait's (*events: how many it returned, -1 if none
 * came or it was stale), sends' and cancellations'. */
static void reap(uring_state *st, int *events, int *interrupted)
{
  struct io_uring_cqe *cqe;
  unsigned head, seen = 0;

  io_uring_for_each_cqe(&st->ring, head, cqe)
  {
    uint64_t ud = cqe->user_data;

    seen++;
    if (ud == UD_EPOLL) {
      st->ew_inflight = 0;
      if (cqe->res == -EINTR)
        *interrupted = 1;
      else if (!st->ew_stale)
        *events = cqe->res < 0 ? 0 : cqe->res;
      st->ew_stale = 0;
    } else if ((ud & 3) == 1) {
      st->slow_inflight--;
      /* A slow send is asked for `len` bytes and reports them all, or an error. */
      done_push(st, (void *)(uintptr_t)(ud & ~3ull), cqe->res, 0);
    } else if ((ud & 3) == 2) {
      st->done[ud >> 2].res = cqe->res; /* a fast send that failed or came back short */
    }
  }
  io_uring_cq_advance(&st->ring, seen);
}

/* What wait() and poll() return once the completions are reaped. */
static int wait_result(uring_state *st, shard__poll_event *out, int events, int interrupted)
{
  /* Still in flight after returning: whatever it reports later is read late, unless the
   * next call is a poll() with nothing run in between. */
  if (st->ew_inflight) {
    st->ew_fresh = !st->ew_stale;
    st->ew_stale = 1;
  }
  if (events > 0)
    shard__epoll_convert(st->evs, out, events);
  if (events <= 0 && interrupted)
    return -EINTR;
  return events < 0 ? 0 : events;
}

static int uring_wait(void *state, shard__poll_event *out, int max, int64_t timeout_ns)
{
  uring_state *st = state;
  int events = -1, interrupted = 0, rc0;

  if ((rc0 = ring_ready(st)) < 0)
    return rc0;
  if (st->nevs < max && !st->ew_inflight) {
    struct epoll_event *ev = realloc(st->evs, sizeof(*ev) * (size_t)max);

    if (ev == NULL)
      return -ENOMEM;
    st->evs = ev;
    st->nevs = max;
  }
  for (int round = 0; round < 2; round++) {
    int rc;

    if (!st->ew_inflight) {
      struct io_uring_sqe *sqe = get_sqe(st);

      if (sqe == NULL)
        return -EBUSY;
      io_uring_prep_rw(IORING_OP_EPOLL_WAIT, sqe, st->epfd, st->evs,
                       (unsigned)(max < st->nevs ? max : st->nevs), 0);
      sqe->user_data = UD_EPOLL;
      st->ew_inflight = 1;
      st->ew_stale = 0;
    }
    if (timeout_ns == 0) {
      rc = io_uring_submit(&st->ring);
    } else {
      struct __kernel_timespec ts, *tsp = NULL;
      struct io_uring_cqe *cqe;

      if (timeout_ns > 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
      }
      rc = io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1, tsp, NULL);
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY)
      return rc;
    if (rc == -EINTR)
      interrupted = 1;
    reap(st, &events, &interrupted);
    /* A stale wait that completed is not reported; go round once more without blocking,
     * so that what is still ready is seen now, as it would have been. */
    if (events >= 0 || st->ew_inflight || interrupted)
      break;
    timeout_ns = 0;
  }
  return wait_result(st, out, events, interrupted);
}

/*
 * Called right after a wait() or poll() that returned nothing, with no callback run since:
 * an epoll wait that the last call issued is still current, so what it reports now is
 * taken. It completes through task work that the kernel runs when the shard enters it
 * (COOP_TASKRUN), and flags in the ring meanwhile, so a poll that finds neither a
 * completion nor the flag costs no system call.
 */
static int uring_poll(void *state, shard__poll_event *out, int max)
{
  uring_state *st = state;
  int events = -1, interrupted = 0;

  if (!st->ring_open || !st->ew_inflight || !st->ew_fresh || io_uring_sq_ready(&st->ring) > 0)
    return uring_wait(state, out, max, 0);
  if (io_uring_cq_ready(&st->ring) == 0) {
    if (!(IO_URING_READ_ONCE(*st->ring.sq.kflags) & IORING_SQ_TASKRUN))
      return 0;
    io_uring_get_events(&st->ring); /* runs the task work: the completions are posted */
  }
  st->ew_stale = 0;
  reap(st, &events, &interrupted);
  return wait_result(st, out, events, interrupted);
}

const shard__poller_ops shard__poller_uring = {
    .name = "uring",
    .create = uring_create,
    .destroy = uring_destroy,
    .ctl = uring_ctl,
    .wait = uring_wait,
    .poll = uring_poll,
    .send = uring_send,
    .cancel = uring_cancel,
    .sent = uring_sent,
    .stop = uring_stop,
};

#endif /* HAVE_SYS_EPOLL_H && HAVE_LIBURING */
