/*
 * shard/poll_kqueue.c - the BSD and macOS backend.
 *
 * kqueue keeps one knote per (descriptor, filter): E_READ is an EVFILT_READ knote, E_WRITE
 * an EVFILT_WRITE one. The knotes are level-triggered (no EV_CLEAR): one still ready after
 * it was returned is queued again at the tail, which gives DESIGN §2's level-triggered
 * readiness and the round-robin fairness that poll_poll.c has to build by hand. The
 * registration's generation rides in udata. Both filters of one descriptor come back as
 * separate kevents, so wait() merges them through a small fd-indexed table.
 */
#if defined(HAVE_SYS_EVENT_H)

#include "event.h"
#include "shard/poller.h"

/* First: older BSDs' <sys/event.h> uses its types without including it. */
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/event.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define INTEREST (E_READ | E_WRITE | E_EXCEPTION)

/*
 * kqueue has no filter for out-of-band data; what shows of it shows through EVFILT_READ,
 * which need not fire for a lone urgent byte. So E_EXCEPTION is served by the read knote:
 * an exception waiter is woken by any readable data, and told E_EXCEPTION only (it did
 * not ask for E_READ). An approximation, the best kqueue allows portably.
 */
#define READ_BITS (E_READ | E_EXCEPTION)

typedef struct fd_slot {
  uint32_t seq; /* the wait() that last reported this fd, 0 = none */
  int out;      /* its index in that wait's output */
  int mask;     /* registered interest */
} fd_slot;

typedef struct kqueue_state {
  int kq;
  struct kevent *evs; /* wait() buffer */
  int nevs;
  fd_slot *fds; /* indexed by fd */
  int nfds;
  uint32_t seq; /* numbers the waits, so fds[] never needs clearing */
} kqueue_state;

/* Returns arr (*cap elements of `size` bytes) grown by doubling to hold index `need`, or
 * NULL (arr untouched) when out of memory. */
static void *grow(void *arr, int *cap, int need, size_t size)
{
  size_t n = *cap > 0 ? (size_t)*cap : 16;

  if (need < *cap)
    return arr;
  while (n <= (size_t)need)
    n *= 2;
  if (n > INT_MAX)
    n = INT_MAX; /* need < INT_MAX, so this still holds it */
  if (n > SIZE_MAX / size || (arr = realloc(arr, n * size)) == NULL)
    return NULL;
  *cap = (int)n;
  return arr;
}

static int fds_reserve(kqueue_state *st, int fd)
{
  int old = st->nfds;
  fd_slot *t = grow(st->fds, &st->nfds, fd, sizeof(*t));

  if (t == NULL)
    return -ENOMEM;
  for (int i = old; i < st->nfds; i++)
    t[i] = (fd_slot){0, 0, 0};
  st->fds = t;
  return 0;
}

static void kq_destroy(void *state)
{
  kqueue_state *st = state;

  if (st == NULL)
    return;
  if (st->kq >= 0)
    close(st->kq);
  free(st->evs);
  free(st->fds);
  free(st);
}

static int kq_create(void **state, int size_hint)
{
  kqueue_state *st = calloc(1, sizeof(*st));
  int rc;

  if (st == NULL)
    return -ENOMEM;
  /* A kqueue is not inherited across fork(2), but its descriptor number would survive an
   * exec(2); kqueue() has no close-on-exec flag everywhere, so set it afterwards. */
  st->kq = kqueue();
  if (st->kq < 0 || fcntl(st->kq, F_SETFD, FD_CLOEXEC) < 0) {
    rc = -errno;
    kq_destroy(st);
    return rc;
  }
  if ((rc = fds_reserve(st, size_hint > 0 ? size_hint - 1 : 63)) < 0) {
    kq_destroy(st);
    return rc;
  }
  *state = st;
  return 0;
}

/* EV_DELETE of a knote the kernel already dropped: close(2) removes a descriptor's knotes
 * (EBADF if the number is free, ENOENT if it was reused). Nothing is left to undo. */
static int gone(int err)
{
  return err == ENOENT || err == EBADF;
}

/*
 * Applies `n` changes in one kevent call. With EV_RECEIPT every change reports its own
 * result and the call never collects pending events; without it the first failing change
 * aborts the rest, so callers put additions before deletions.
 */
static int apply(kqueue_state *st, struct kevent *ch, int n, int nadd)
{
  static const struct timespec zero = {0, 0};
#if defined(EV_RECEIPT)
  struct kevent res[2];
  int got, rc = 0;

  for (int i = 0; i < n; i++)
    ch[i].flags |= EV_RECEIPT;
  got = kevent(st->kq, ch, n, res, n, &zero);
  if (got < 0)
    return -errno;
  /* FreeBSD and OpenBSD overwrite flags with EV_ERROR (macOS ORs it in), so a receipt is
   * matched to its change by filter, each of which appears once. Anything without
   * EV_ERROR is a pending event from a kernel that ignored EV_RECEIPT: level-triggered, it
   * is reported again by the next wait. */
  for (int i = 0; i < got; i++) {
    int err = (int)res[i].data;
    int j = (res[i].filter == ch[0].filter) ? 0 : 1;

    if (!(res[i].flags & EV_ERROR) || err == 0 || j >= n)
      continue;
    if (j >= nadd && gone(err))
      continue;
    if (rc == 0)
      rc = -err;
  }
  return rc;
#else
  if (kevent(st->kq, ch, n, NULL, 0, &zero) == 0)
    return 0;
  /* An addition that succeeded proves the descriptor open, so EBADF must come from an
   * addition unless there was none. Additions never fail with ENOENT. */
  if (errno == ENOENT || (nadd == 0 && gone(errno)))
    return 0;
  return -errno;
#endif
}

/* A function rather than EV_SET(&ch[n++], ...): older BSDs' EV_SET expands its first
 * argument once per field. udata carries the generation. */
static void change(struct kevent *kev, int fd, int filter, int flags, uint32_t gen)
{
  EV_SET(kev, fd, filter, flags, 0, 0, (void *)(uintptr_t)gen);
}

static int kq_ctl(void *state, int fd, uint32_t gen, int oldmask, int newmask)
{
  kqueue_state *st = state;
  struct kevent ch[2];
  int n = 0, nadd, rc;

  if (fd < 0)
    return -EBADF;
  oldmask &= INTEREST;
  newmask &= INTEREST;
  if (newmask != 0 && (rc = fds_reserve(st, fd)) < 0)
    return rc;
  /* EV_ADD on an existing knote updates it in place, udata included: every filter still
   * wanted is added again, which is how a new gen reaches a filter that did not change. */
  if (newmask & READ_BITS)
    change(&ch[n++], fd, EVFILT_READ, EV_ADD | EV_ENABLE, gen);
  if (newmask & E_WRITE)
    change(&ch[n++], fd, EVFILT_WRITE, EV_ADD | EV_ENABLE, gen);
  nadd = n;
  if ((oldmask & READ_BITS) && !(newmask & READ_BITS))
    change(&ch[n++], fd, EVFILT_READ, EV_DELETE, 0);
  if ((oldmask & E_WRITE) && !(newmask & E_WRITE))
    change(&ch[n++], fd, EVFILT_WRITE, EV_DELETE, 0);
  if (n > 0 && (rc = apply(st, ch, n, nadd)) < 0)
    return rc;
  if (fd < st->nfds)
    st->fds[fd].mask = newmask;
  return 0;
}

/* The readiness bits of one kevent, for a descriptor registered with `mask`. */
static int from_kevent(const struct kevent *kev, int mask)
{
  int r;

  if (kev->flags & EV_ERROR)
    return SHARD__POLL_ERR;
  r = kev->filter == EVFILT_WRITE ? E_WRITE : (mask & READ_BITS);
  /* EV_EOF: the peer shut down its writing side (read filter) or stopped reading (write
   * filter); for sockets fflags then holds the pending socket error, if any. */
  if (kev->flags & EV_EOF)
    r |= kev->fflags ? SHARD__POLL_HUP | SHARD__POLL_ERR : SHARD__POLL_HUP;
  return r;
}

static int kq_wait(void *state, shard__poll_event *out, int max, int64_t timeout_ns)
{
  kqueue_state *st = state;
  struct timespec ts, *tsp = NULL;
  int got, n = 0;

  if (max <= 0)
    return -EINVAL;
  if (max > st->nevs) {
    struct kevent *e = grow(st->evs, &st->nevs, max - 1, sizeof(*e));

    if (e == NULL)
      return -ENOMEM;
    st->evs = e;
  }
  if (timeout_ns >= 0) {
    ts.tv_sec = (time_t)(timeout_ns / 1000000000);
    ts.tv_nsec = (long)(timeout_ns % 1000000000);
    tsp = &ts;
  }
  /* At most `max` kevents, so at most `max` descriptors; one ready both ways takes two, so
   * a full wait may report fewer. Fetching more and dropping the surplus would starve: a
   * dropped knote is requeued behind the ones reported. A descriptor whose second kevent
   * did not fit loses nothing: that knote stays queued for the next wait. */
  got = kevent(st->kq, NULL, 0, st->evs, max, tsp);
  if (got < 0)
    return -errno;
  if (++st->seq == 0) {
    for (int i = 0; i < st->nfds; i++)
      st->fds[i].seq = 0;
    st->seq = 1;
  }
  for (int i = 0; i < got; i++) {
    const struct kevent *kev = &st->evs[i];
    int fd = (int)kev->ident;
    fd_slot *s;
    int r;

    if (fd < 0 || fd >= st->nfds)
      continue; /* never registered here: ctl() grows the table first */
    s = &st->fds[fd];
    if ((r = from_kevent(kev, s->mask)) == 0)
      continue;
    if (s->seq == st->seq) {
      out[s->out].revents |= r;
      continue;
    }
    s->seq = st->seq;
    s->out = n;
    out[n].fd = fd;
    out[n].gen = (uint32_t)(uintptr_t)kev->udata;
    out[n].revents = r;
    n++;
  }
  return n;
}

const shard__poller_ops shard__poller_kqueue = {
    .name = "kqueue",
    .create = kq_create,
    .destroy = kq_destroy,
    .ctl = kq_ctl,
    .wait = kq_wait,
};

#endif /* HAVE_SYS_EVENT_H */
