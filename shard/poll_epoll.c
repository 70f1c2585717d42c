/*
 * shard/poll_epoll.c - the Linux backend.
 *
 * Level-triggered epoll: as callbacks see it readiness is level-triggered (DESIGN §2), and
 * with EPOLLLT the kernel gives exactly that without bookkeeping of our own; a callback
 * that returns the mask already registered costs no epoll_ctl at all. The registration's
 * generation travels in epoll_data next to the fd, so the core can drop readiness that
 * was collected for a descriptor closed earlier in the same batch (nginx's instance bit).
 */
#if defined(HAVE_SYS_EPOLL_H)

#include "event.h"
#include "shard/poller.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

typedef struct epoll_state {
  int epfd;
  int nevents;
  struct epoll_event *events;
  int have_pwait2; /* 0 once the kernel said ENOSYS */
} epoll_state;

static int epoll_create_(void **state, int size_hint)
{
  epoll_state *st = calloc(1, sizeof(*st));

  if (st == NULL)
    return -ENOMEM;
  st->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (st->epfd < 0) {
    int err = errno;

    free(st);
    return -err;
  }
  st->have_pwait2 = 1;
  *state = st;
  return 0;
}

static void epoll_destroy(void *state)
{
  epoll_state *st = state;

  if (st == NULL)
    return;
  close(st->epfd);
  free(st->events);
  free(st);
}

static uint32_t to_epoll(int mask)
{
  uint32_t ev = 0;

  if (mask & E_READ)
    ev |= EPOLLIN | EPOLLRDHUP;
  if (mask & E_WRITE)
    ev |= EPOLLOUT;
  if (mask & E_EXCEPTION)
    ev |= EPOLLPRI;
  return ev;
}

int shard__epoll_ctl(int epfd, int fd, uint32_t gen, int oldmask, int newmask)
{
  struct epoll_event ev = {0};
  int op;

  if (newmask == 0) {
    if (oldmask == 0)
      return 0;
    op = EPOLL_CTL_DEL;
  } else {
    op = oldmask == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  }
  ev.events = to_epoll(newmask);
  ev.data.u64 = (uint64_t)gen << 32 | (uint32_t)fd;
  if (epoll_ctl(epfd, op, fd, &ev) == 0)
    return 0;
  /* A descriptor closed behind our back has already left the epoll set (for its last
   * reference), so a DEL that fails with EBADF/ENOENT leaves nothing to undo. */
  if (op == EPOLL_CTL_DEL && (errno == EBADF || errno == ENOENT))
    return 0;
  return -errno;
}

void shard__epoll_convert(const struct epoll_event *ev, shard__poll_event *out, int n)
{
  for (int i = 0; i < n; i++) {
    uint32_t e = ev[i].events;
    int r = 0;

    if (e & EPOLLIN)
      r |= E_READ;
    if (e & EPOLLOUT)
      r |= E_WRITE;
    if (e & EPOLLPRI)
      r |= E_EXCEPTION;
    if (e & (EPOLLHUP | EPOLLRDHUP))
      r |= SHARD__POLL_HUP;
    if (e & EPOLLERR)
      r |= SHARD__POLL_ERR;
    out[i].fd = (int)(uint32_t)ev[i].data.u64;
    out[i].gen = (uint32_t)(ev[i].data.u64 >> 32);
    out[i].revents = r;
  }
}

static int epoll_ctl_(void *state, int fd, uint32_t gen, int oldmask, int newmask)
{
  return shard__epoll_ctl(((epoll_state *)state)->epfd, fd, gen, oldmask, newmask);
}

static int epoll_wait_(void *state, shard__poll_event *out, int max, int64_t timeout_ns)
{
  epoll_state *st = state;
  int n;

  if (st->nevents < max) {
    struct epoll_event *ev = realloc(st->events, sizeof(*ev) * (size_t)max);

    if (ev == NULL)
      return -ENOMEM;
    st->events = ev;
    st->nevents = max;
  }
#if defined(HAVE_EPOLL_PWAIT2)
  /* epoll_pwait2 takes nanoseconds, so a timer deadline is honoured exactly; epoll_wait's
   * milliseconds would have to be rounded (up: a timer must never fire early). */
  if (st->have_pwait2) {
    struct timespec ts, *tsp = NULL;

    if (timeout_ns >= 0) {
      ts.tv_sec = timeout_ns / 1000000000;
      ts.tv_nsec = timeout_ns % 1000000000;
      tsp = &ts;
    }
    n = epoll_pwait2(st->epfd, st->events, max, tsp, NULL);
    if (n >= 0 || errno != ENOSYS)
      goto done;
    st->have_pwait2 = 0;
  }
#endif
  {
    /* Rounded up (a timer must not fire early), clamped to what an int holds. */
    int64_t ms64 = timeout_ns < 0 ? -1 : timeout_ns / 1000000 + (timeout_ns % 1000000 != 0);
    int ms = ms64 > INT32_MAX ? INT32_MAX : (int)ms64;

    n = epoll_wait(st->epfd, st->events, max, ms);
  }
#if defined(HAVE_EPOLL_PWAIT2)
done:
#endif
  if (n < 0)
    return -errno;
  shard__epoll_convert(st->events, out, n);
  return n;
}

const shard__poller_ops shard__poller_epoll = {
    .name = "epoll",
    .create = epoll_create_,
    .destroy = epoll_destroy,
    .ctl = epoll_ctl_,
    .wait = epoll_wait_,
};

#endif /* HAVE_SYS_EPOLL_H */
