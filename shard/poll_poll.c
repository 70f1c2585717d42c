/*
 * shard/poll_poll.c - the portable backend, on poll(2) (ppoll where the system has it).
 *
 * poll takes the whole interest set on every call, so the set is kept as the array the
 * kernel wants: a dense pollfd array, plus an fd-indexed map from each descriptor to its
 * slot in that array and its generation. Adding appends, removing moves the last slot
 * into the hole: both O(1), and the kernel never walks holes. A wait costs O(registered
 * descriptors), which is the price of poll and why this is the fallback, not the default.
 */
#include "event.h"
#include "shard/poller.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>

/* ppoll takes a timespec, so a deadline is honoured to the nanosecond instead of being
 * rounded up to poll's milliseconds. macOS and older NetBSD have no ppoll. */
#if !defined(HAVE_PPOLL) &&                                                                        \
    (defined(__linux__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__DragonFly__))
#define HAVE_PPOLL 1
#endif

#if defined(POLLRDHUP)
#define RDHUP POLLRDHUP
#else
#define RDHUP 0
#endif

#define INTEREST (E_READ | E_WRITE | E_EXCEPTION)

typedef struct fd_slot {
  int idx;      /* index in pfds, -1 when the descriptor is not registered */
  uint32_t gen; /* reported with every event of the registration */
} fd_slot;

typedef struct poll_state {
  struct pollfd *pfds; /* pfds[i].events is the registered interest, in poll's bits */
  int npfds, pfds_cap;
  fd_slot *map; /* indexed by fd */
  int map_cap;
  int next; /* the slot the next scan starts at (see poll_wait) */
} poll_state;

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

static int map_reserve(poll_state *st, int fd)
{
  int old = st->map_cap;
  fd_slot *m = grow(st->map, &st->map_cap, fd, sizeof(*m));

  if (m == NULL)
    return -ENOMEM;
  for (int i = old; i < st->map_cap; i++)
    m[i].idx = -1;
  st->map = m;
  return 0;
}

static int pfds_reserve(poll_state *st, int need)
{
  struct pollfd *p = grow(st->pfds, &st->pfds_cap, need, sizeof(*p));

  if (p == NULL)
    return -ENOMEM;
  st->pfds = p;
  return 0;
}

static int poll_create(void **state, int size_hint)
{
  poll_state *st = calloc(1, sizeof(*st));
  int hint = size_hint > 0 ? size_hint : 64;

  if (st == NULL)
    return -ENOMEM;
  if (map_reserve(st, hint - 1) < 0 || pfds_reserve(st, hint - 1) < 0) {
    free(st->map);
    free(st);
    return -ENOMEM;
  }
  *state = st;
  return 0;
}

static void poll_destroy(void *state)
{
  poll_state *st = state;

  if (st == NULL)
    return;
  free(st->pfds);
  free(st->map);
  free(st);
}

static short to_poll(int mask)
{
  short ev = 0;

  /* POLLRDHUP (Linux) reports a peer's shutdown(SHUT_WR) on its own; POLLHUP needs both
   * directions shut. kqueue's EV_EOF and the epoll backend report the half-close too. */
  if (mask & E_READ)
    ev |= POLLIN | RDHUP;
  if (mask & E_WRITE)
    ev |= POLLOUT;
  if (mask & E_EXCEPTION)
    ev |= POLLPRI;
  return ev;
}

static int from_poll(short rev)
{
  int r = 0;

  if (rev & POLLIN)
    r |= E_READ;
  if (rev & POLLOUT)
    r |= E_WRITE;
  if (rev & POLLPRI)
    r |= E_EXCEPTION;
  if (rev & (POLLHUP | RDHUP))
    r |= SHARD__POLL_HUP;
  /* POLLNVAL: the descriptor was closed while registered (epoll and kqueue would have
   * dropped it silently). It is an error on every wait until the core removes it. */
  if (rev & (POLLERR | POLLNVAL))
    r |= SHARD__POLL_ERR;
  return r;
}

static void remove_slot(poll_state *st, int fd)
{
  int idx = st->map[fd].idx;
  int last = --st->npfds;

  if (idx != last) {
    st->pfds[idx] = st->pfds[last];
    st->map[st->pfds[idx].fd].idx = idx;
  }
  st->map[fd].idx = -1;
}

static int poll_ctl(void *state, int fd, uint32_t gen, int oldmask, int newmask)
{
  poll_state *st = state;
  fd_slot *s;
  int rc;

  /* The map, not oldmask, says whether fd has a slot. A descriptor closed while still
   * registered (which epoll and kqueue forget on their own) and reused comes back with
   * oldmask 0; believing that would put the number in the array twice. */
  (void)oldmask;
  if (fd < 0)
    return -EBADF;
  newmask &= INTEREST;
  if (newmask == 0) {
    if (fd < st->map_cap && st->map[fd].idx >= 0)
      remove_slot(st, fd);
    return 0;
  }
  if ((rc = map_reserve(st, fd)) < 0)
    return rc;
  s = &st->map[fd];
  if (s->idx < 0) {
    if ((rc = pfds_reserve(st, st->npfds)) < 0)
      return rc;
    s->idx = st->npfds++;
    st->pfds[s->idx].fd = fd;
    st->pfds[s->idx].revents = 0;
  }
  st->pfds[s->idx].events = to_poll(newmask);
  s->gen = gen;
  return 0;
}

static int sys_poll(poll_state *st, int64_t timeout_ns)
{
  int n;

#if defined(HAVE_PPOLL)
  struct timespec ts, *tsp = NULL;

  if (timeout_ns >= 0) {
    ts.tv_sec = (time_t)(timeout_ns / 1000000000);
    ts.tv_nsec = (long)(timeout_ns % 1000000000);
    tsp = &ts;
  }
  n = ppoll(st->pfds, (nfds_t)st->npfds, tsp, NULL);
#else
  /* Round up: a timer must never fire early. Past INT_MAX ms (24 days) the wait ends
   * early, which the core sees as an ordinary wakeup with nothing due. */
  int ms = -1;

  if (timeout_ns >= 0)
    ms = timeout_ns / 1000000 >= INT_MAX ? INT_MAX : (int)((timeout_ns + 999999) / 1000000);
  n = poll(st->pfds, (nfds_t)st->npfds, ms);
#endif
  return n < 0 ? -errno : n;
}

static int poll_wait(void *state, shard__poll_event *out, int max, int64_t timeout_ns)
{
  poll_state *st = state;
  int ready, n = 0, i, last = 0;

  if (max <= 0)
    return -EINVAL;
  ready = sys_poll(st, timeout_ns);
  if (ready <= 0)
    return ready;
  /* With more ready descriptors than `max`, scanning from slot 0 every time would starve
   * the tail of the array. The scan starts after the last slot reported by the previous
   * call instead, so the ready set is served round-robin (as epoll's ready list is). A
   * removal that moves the last slot into a hole behind the cursor costs that descriptor
   * one round, no more. */
  i = st->next < st->npfds ? st->next : 0;
  for (int seen = 0; seen < st->npfds && ready > 0 && n < max; seen++) {
    struct pollfd *p = &st->pfds[i];

    if (p->revents != 0) {
      out[n].fd = p->fd;
      out[n].gen = st->map[p->fd].gen;
      out[n].revents = from_poll(p->revents);
      n++;
      ready--;
      last = i;
    }
    i = i + 1 < st->npfds ? i + 1 : 0;
  }
  st->next = last + 1;
  return n;
}

const shard__poller_ops shard__poller_poll = {
    .name = "poll",
    .create = poll_create,
    .destroy = poll_destroy,
    .ctl = poll_ctl,
    .wait = poll_wait,
};
