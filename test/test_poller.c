/*
 * test/test_poller.c - the readiness backends, driven directly through their ops table.
 *
 * ctest runs this suite once per backend (--set event_loop.poller=NAME, default epoll).
 * No shard is started: every test checks one promise of shard/poller.h, so a backend that
 * passes here is interchangeable with the others as far as the shard core can tell.
 */
#include "unit.h"

#include "event.h"
#include "shard/poller.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HUP     SHARD__POLL_HUP
#define ERR     SHARD__POLL_ERR
#define MAX_FDS 2048

/*
 * What a test made, so that it is torn down even when an ASSERT returns early: the next
 * test's fx_open() (or exit) cleans up after a failed one.
 */
static struct {
  const shard__poller_ops *ops;
  void *st;
  int fd[MAX_FDS];
  int nfd;
} fx;

static void fx_close(void)
{
  if (fx.st != NULL)
    fx.ops->destroy(fx.st);
  fx.st = NULL;
  for (int i = 0; i < fx.nfd; i++)
    if (fx.fd[i] >= 0)
      close(fx.fd[i]);
  fx.nfd = 0;
}

/* The backend named by the last --set event_loop.poller=NAME. */
static const char *backend_name(void)
{
  static const char key[] = "event_loop.poller=";
  const char *name = "epoll";

  for (int i = 0; unit_set[i] != NULL; i++)
    if (strncmp(unit_set[i], key, sizeof(key) - 1) == 0)
      name = unit_set[i] + sizeof(key) - 1;
  return name;
}

/* Room for the 1000-descriptor test and the fd 900 test: raise the soft limit. */
static rlim_t fd_limit(void)
{
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 256;
  if (rl.rlim_cur < MAX_FDS && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max < MAX_FDS ? rl.rlim_max : MAX_FDS;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

static int fx_open(int size_hint)
{
  static int once;

  if (!once) {
    atexit(fx_close);
    once = 1;
  }
  fx_close();
  fx.ops = shard__poller_by_name(backend_name());
  if (fx.ops == NULL) {
    fprintf(stderr, "poller '%s' is not built on this platform\n", backend_name());
    return -ENOSYS;
  }
  return fx.ops->create(&fx.st, size_hint);
}

static void fx_track(int fd)
{
  if (fd >= 0 && fx.nfd < MAX_FDS)
    fx.fd[fx.nfd++] = fd;
}

/* Closes a descriptor the fixture tracks. */
static void fx_closefd(int fd)
{
  for (int i = 0; i < fx.nfd; i++)
    if (fx.fd[i] == fd)
      fx.fd[i] = -1;
  close(fd);
}

/* A non-blocking AF_UNIX stream pair (SOCK_NONBLOCK is not portable). 0 or -errno. */
static int fx_pair(int sv[2])
{
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
    return -errno;
  for (int i = 0; i < 2; i++) {
    fx_track(sv[i]);
    if (fcntl(sv[i], F_SETFL, fcntl(sv[i], F_GETFL) | O_NONBLOCK) != 0)
      return -errno;
  }
  return 0;
}

static int ctl(int fd, uint32_t gen, int oldmask, int newmask)
{
  return fx.ops->ctl(fx.st, fd, gen, oldmask, newmask);
}

/* wait(), retried on EINTR. */
static int wait_ev(shard__poll_event *out, int max, int64_t timeout_ns)
{
  int n;

  do
    n = fx.ops->wait(fx.st, out, max, timeout_ns);
  while (n == -EINTR);
  return n;
}

static int64_t mono_ns(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Index of fd's event in ev[0..n), -1 if absent, -2 if it appears twice. */
static int find(const shard__poll_event *ev, int n, int fd)
{
  int at = -1;

  for (int i = 0; i < n; i++)
    if (ev[i].fd == fd)
      at = at == -1 ? i : -2;
  return at;
}

/* ---- the tests ---------------------------------------------------------------------- */

static void t_by_name(void)
{
  const shard__poller_ops *ops = shard__poller_by_name(backend_name());

  ASSERT_NOT_NULL(ops);
  ASSERT_STR_EQ(ops->name, backend_name());
  ASSERT_TRUE(ops->create && ops->destroy && ops->ctl && ops->wait);
  ASSERT_PTR_EQ(shard__poller_by_name("poll"), &shard__poller_poll);
  ASSERT_NOT_NULL(shard__poller_by_name(NULL));
  ASSERT_PTR_EQ(shard__poller_by_name("auto"), shard__poller_by_name(NULL));
  ASSERT_NULL(shard__poller_by_name("select"));
  ASSERT_NULL(shard__poller_by_name(""));
}

static void t_create_destroy(void)
{
  shard__poll_event ev[4];
  int hints[] = {0, 1, 1024};

  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(fx_open(hints[i]), 0);
    ASSERT_EQ(wait_ev(ev, 4, 0), 0);
    fx_close();
  }
}

static void t_idle(void)
{
  shard__poll_event ev[4];
  int sv[2];

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 1, 0, E_READ), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 0);
  fx_close();
}

static void t_read_ready(void)
{
  shard__poll_event ev[4];
  int sv[2];

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 7, 0, E_READ), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_EQ(ev[0].fd, sv[0]);
  ASSERT_UEQ(ev[0].gen, 7);
  ASSERT_EQ(ev[0].revents, E_READ);
  fx_close();
}

/* The shard's readiness poll (shard.c spin_for_io): poll() right after a wait() or poll()
 * that found nothing, nothing run in between; wait(..., 0) where a backend has no poll(). */
static int poll_ev(shard__poll_event *out, int max)
{
  int n;

  do
    n = fx.ops->poll != NULL ? fx.ops->poll(fx.st, out, max) : fx.ops->wait(fx.st, out, max, 0);
  while (n == -EINTR);
  return n;
}

/* Polls until something is reported; bounded by a count of polls, not by time. */
static int poll_until(shard__poll_event *out, int max)
{
  int n = 0;

  for (int i = 0; i < 100000 && n == 0; i++) {
    n = poll_ev(out, max);
    if (n == 0 && i % 64 == 63)
      sched_yield();
  }
  return n;
}

/* A wait and 100 polls that find nothing; then a byte from the peer, which a poll reports. */
static void quiet_then_byte(const int sv[2], char byte, shard__poll_event *ev)
{
  ASSERT_EQ(wait_ev(ev, 4, 0), 0);
  for (int i = 0; i < 100; i++)
    ASSERT_EQ(poll_ev(ev, 4), 0);
  ASSERT_EQ(write(sv[1], &byte, 1), 1);
  ASSERT_EQ(poll_until(ev, 4), 1);
  ASSERT_EQ(ev[0].fd, sv[0]);
}

static void t_poll_after_wait(void)
{
  shard__poll_event ev[4];
  int sv[2];
  char c;

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 5, 0, E_READ), 0);
  quiet_then_byte(sv, 'x', ev);
  ASSERT_UEQ(ev[0].gen, 5);
  ASSERT_EQ(ev[0].revents, E_READ);
  /* Level-triggered, as wait(): still unread, so reported again. */
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_EQ(ev[0].fd, sv[0]);
  /* Read away: a second round, on a fresh wait, works the same. */
  ASSERT_EQ(read(sv[0], &c, 1), 1);
  quiet_then_byte(sv, 'y', ev);
  ASSERT_EQ(read(sv[0], &c, 1), 1);
  ASSERT_EQ(wait_ev(ev, 4, 0), 0);
  fx_close();
}

/* timeout -1 waits forever, so it must return at once when something is ready. */
static void t_forever_when_ready(void)
{
  shard__poll_event ev[4];
  int sv[2], n;

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 3, 0, E_READ), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  alarm(10); /* a backend that ignores readiness here would hang the suite */
  n = wait_ev(ev, 4, -1);
  alarm(0);
  ASSERT_EQ(n, 1);
  ASSERT_EQ(ev[0].fd, sv[0]);
  fx_close();
}

static void t_level_triggered(void)
{
  shard__poll_event ev[4];
  char c;
  int sv[2];

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 1, 0, E_READ), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(wait_ev(ev, 4, 0), 1);
    ASSERT_EQ(ev[0].fd, sv[0]);
    ASSERT_TRUE(ev[0].revents & E_READ);
  }
  ASSERT_EQ(read(sv[0], &c, 1), 1);
  ASSERT_EQ(wait_ev(ev, 4, 0), 0);
  fx_close();
}

/* Interest changes take effect, and an fd ready both ways is still one event. */
static void t_change_interest(void)
{
  shard__poll_event ev[4];
  int sv[2];

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 1, 0, E_READ), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT_EQ(ctl(sv[0], 1, E_READ, E_WRITE), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_EQ(ev[0].fd, sv[0]);
  ASSERT_EQ(ev[0].revents, E_WRITE);
  ASSERT_EQ(ctl(sv[0], 1, E_WRITE, E_READ | E_WRITE), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_EQ(ev[0].revents, E_READ | E_WRITE);
  ASSERT_EQ(ctl(sv[0], 1, E_READ | E_WRITE, E_READ), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_EQ(ev[0].revents, E_READ);
  fx_close();
}

static void t_remove(void)
{
  shard__poll_event ev[4];
  int sv[2];

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 1, 0, E_READ | E_WRITE), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_EQ(ctl(sv[0], 1, E_READ | E_WRITE, 0), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 0);
  ASSERT_EQ(wait_ev(ev, 4, 1000000), 0);
  fx_close();
}

/* A new generation, on a live registration or after a removal, is what gets reported. */
static void t_new_gen(void)
{
  shard__poll_event ev[4];
  int sv[2];

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 1, 0, E_READ | E_WRITE), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_UEQ(ev[0].gen, 1);
  ASSERT_EQ(ctl(sv[0], 2, E_READ | E_WRITE, E_READ | E_WRITE), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_UEQ(ev[0].gen, 2);
  ASSERT_EQ(ev[0].revents, E_READ | E_WRITE);
  ASSERT_EQ(ctl(sv[0], 2, E_READ | E_WRITE, 0), 0);
  ASSERT_EQ(ctl(sv[0], UINT32_MAX, 0, E_READ), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_UEQ(ev[0].gen, UINT32_MAX);
  fx_close();
}

static void t_peer_close(void)
{
  shard__poll_event ev[4];
  char buf[4096] = {0};
  int r[2], w[2], i;

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(r), 0);
  ASSERT_EQ(fx_pair(w), 0);
  ASSERT_EQ(ctl(r[0], 5, 0, E_READ), 0);
  ASSERT_EQ(ctl(w[0], 6, 0, E_WRITE), 0);
  /* Fill w[0]'s buffer, so that only the hangup can make it reportable. */
  while (write(w[0], buf, sizeof(buf)) > 0)
    continue;
  ASSERT_EQ(errno, EAGAIN);
  ASSERT_EQ(wait_ev(ev, 4, 0), 0);
  fx_closefd(r[1]);
  fx_closefd(w[1]);
  ASSERT_EQ(wait_ev(ev, 4, 0), 2);
  /* A reader must learn of the EOF: its read returns 0. */
  ASSERT_GE(i = find(ev, 2, r[0]), 0);
  ASSERT_UEQ(ev[i].gen, 5);
  ASSERT_TRUE(ev[i].revents & (E_READ | HUP));
  /* A writer must learn of it too: its write fails with EPIPE. */
  ASSERT_GE(i = find(ev, 2, w[0]), 0);
  ASSERT_UEQ(ev[i].gen, 6);
  ASSERT_TRUE(ev[i].revents & (E_WRITE | HUP | ERR));
  fx_close();
}

/* A half-close (shutdown(SHUT_WR)) reaches a reader as readiness or as a hangup. */
static void t_peer_shutdown(void)
{
  shard__poll_event ev[4];
  int sv[2];

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 5, 0, E_READ), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 0);
  ASSERT_EQ(shutdown(sv[1], SHUT_WR), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_TRUE(ev[0].revents & (E_READ | HUP));
  fx_close();
}

/* A bad descriptor is refused by ctl() or reported as an error by wait(), never silent. */
static void t_bad_fd(void)
{
  shard__poll_event ev[4];
  int sv[2], num, rc;

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_LT(ctl(-1, 1, 0, E_READ), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  num = sv[0];
  fx_closefd(sv[0]);
  rc = ctl(num, 1, 0, E_READ | E_WRITE);
  if (rc < 0) {
    ASSERT_EQ(rc, -EBADF);
  } else {
    ASSERT_EQ(wait_ev(ev, 4, 0), 1);
    ASSERT_EQ(ev[0].fd, num);
    ASSERT_TRUE(ev[0].revents & ERR);
    ASSERT_EQ(ctl(num, 1, E_READ | E_WRITE, 0), 0);
  }
  ASSERT_EQ(wait_ev(ev, 4, 0), 0);
  fx_close();
}

/* Out-of-band data is what E_EXCEPTION waits for (TCP urgent data over loopback). */
static void t_exception(void)
{
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  shard__poll_event ev[4];
  int ls, c, s, n;

  ASSERT_EQ(fx_open(64), 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  fx_track(ls = socket(AF_INET, SOCK_STREAM, 0));
  fx_track(c = socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_TRUE(ls >= 0 && c >= 0);
  ASSERT_EQ(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
  ASSERT_EQ(listen(ls, 1), 0);
  ASSERT_EQ(getsockname(ls, (struct sockaddr *)&a, &len), 0);
  ASSERT_EQ(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
  fx_track(s = accept(ls, NULL, NULL));
  ASSERT_GE(s, 0);
  ASSERT_EQ(ctl(s, 4, 0, E_EXCEPTION), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 0);
  /* Only the last byte is urgent. The first is ordinary data: kqueue serves E_EXCEPTION
   * with its read filter, which need not fire for a lone urgent byte. */
  ASSERT_EQ(send(c, "a!", 2, MSG_OOB), 2);
  n = wait_ev(ev, 4, 1000000000); /* loopback delivery is asynchronous on some kernels */
  ASSERT_EQ(n, 1);
  ASSERT_EQ(ev[0].fd, s);
  ASSERT_UEQ(ev[0].gen, 4);
  ASSERT_TRUE(ev[0].revents & E_EXCEPTION);
  ASSERT_EQ(ev[0].revents & E_READ, 0);
  fx_close();
}

/*
 * The timeout is a lower bound: a timer must never fire early. Checked for a timeout of
 * milliseconds and for fractions of a millisecond, which a millisecond API must round up.
 * (A correctness bound, not a performance assertion: nothing checks how late it is.)
 */
static void t_timeout_not_early(void)
{
  static const int64_t tmo[] = {20000000, 1500000, 500000, 1};
  shard__poll_event ev[4];
  int sv[2];

  ASSERT_EQ(fx_open(64), 0);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(ctl(sv[0], 1, 0, E_READ), 0);
  for (int i = 0; i < 4; i++) {
    int64_t t0 = mono_ns();

    ASSERT_EQ(wait_ev(ev, 4, tmo[i]), 0);
    ASSERT_GE(mono_ns() - t0, tmo[i]);
  }
  fx_close();
}

/* More ready descriptors than `max`: successive waits must reach every one of them. */
static void t_fairness(void)
{
  enum { N = 8 };
  int sv[N][2];
  shard__poll_event ev[N];

  ASSERT_EQ(fx_open(64), 0);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(fx_pair(sv[i]), 0);
    ASSERT_EQ(ctl(sv[i][0], 100 + i, 0, E_READ), 0);
    ASSERT_EQ(write(sv[i][1], "x", 1), 1);
  }
  for (int max = 1; max < N; max++) {
    int seen[N] = {0}, nseen = 0;

    for (int round = 0; round < 2 * N && nseen < N; round++) {
      int n = wait_ev(ev, max, 0);

      ASSERT_GE(n, 1);
      ASSERT_LE(n, max);
      for (int j = 0; j < n; j++) {
        int k = 0;

        ASSERT_GE(find(ev, n, ev[j].fd), 0); /* each fd at most once per call */
        while (k < N && sv[k][0] != ev[j].fd)
          k++;
        ASSERT_LT(k, N);
        ASSERT_UEQ(ev[j].gen, 100 + k);
        nseen += !seen[k];
        seen[k] = 1;
      }
    }
    ASSERT_EQ(nseen, N);
  }
  fx_close();
}

static uint32_t rnd_state = 12345;

static uint32_t rnd(void)
{
  rnd_state = rnd_state * 1103515245u + 12345u;
  return rnd_state >> 8;
}

/*
 * Every registered fd (all are readable and writable) is reported as registered, and
 * nothing else. A wait may report fewer than `max` descriptors, or part of one's readiness
 * (kqueue spends one slot per filter), so this collects over a few waits.
 */
static void check_all(const int *fd, const int *mask, const uint32_t *gen, int nfd,
                      shard__poll_event *ev, int *failed)
{
  static int got[1000];
  int missing = 0;

  *failed = 1;
  memset(got, 0, sizeof(got));
  for (int i = 0; i < nfd; i++)
    missing += mask[i] != 0;
  for (int round = 0; round < 4 && missing > 0; round++) {
    int n = wait_ev(ev, nfd, 0);

    ASSERT_GT(n, 0);
    for (int j = 0; j < n; j++) {
      int i = 0;

      ASSERT_GE(find(ev, n, ev[j].fd), 0);
      while (i < nfd && fd[i] != ev[j].fd)
        i++;
      ASSERT_LT(i, nfd);
      ASSERT_UEQ(ev[j].gen, gen[i]);
      ASSERT_NE(ev[j].revents, 0);
      ASSERT_EQ(ev[j].revents & ~mask[i], 0);
      missing -= got[i] != mask[i] && (got[i] | ev[j].revents) == mask[i];
      got[i] |= ev[j].revents;
    }
  }
  ASSERT_EQ(missing, 0);
  *failed = 0;
}

/* 1000 descriptors registered, changed and removed in random order. */
static void t_many_random(void)
{
  static const int masks[] = {0, E_READ, E_WRITE, E_READ | E_WRITE};
  static int fd[1000], mask[1000];
  static uint32_t gen[1000];
  static shard__poll_event ev[1000];
  long limit = (long)fd_limit() - 32;
  int nfd = limit < 1000 ? (int)(limit & ~1L) : 1000, failed;
  long ops = unit_scale(20000);

  ASSERT_GE(nfd, 64);
  ASSERT_EQ(fx_open(64), 0);
  for (int i = 0; i < nfd; i += 2) {
    ASSERT_EQ(fx_pair(&fd[i]), 0);
    ASSERT_EQ(write(fd[i], "x", 1), 1);
    ASSERT_EQ(write(fd[i + 1], "x", 1), 1);
  }
  memset(mask, 0, sizeof(mask));
  memset(gen, 0, sizeof(gen));
  for (long op = 0; op < ops; op++) {
    int i = (int)(rnd() % (uint32_t)nfd);
    int m = masks[rnd() % 4];

    if (m == mask[i] && m == 0)
      continue;
    if (m == mask[i] || mask[i] == 0)
      gen[i]++; /* as the core does: a new registration or a new generation */
    ASSERT_EQ(ctl(fd[i], gen[i], mask[i], m), 0);
    mask[i] = m;
    if (op % 1000 == 999) {
      check_all(fd, mask, gen, nfd, ev, &failed);
      if (failed)
        return;
    }
  }
  check_all(fd, mask, gen, nfd, ev, &failed);
  if (failed)
    return;
  for (int i = 0; i < nfd; i++) {
    ASSERT_EQ(ctl(fd[i], gen[i], mask[i], 0), 0);
    mask[i] = 0;
  }
  ASSERT_EQ(wait_ev(ev, nfd, 0), 0);
  fx_close();
}

/* Descriptor numbers far above the size hint grow the backend's tables. */
static void t_high_fd(void)
{
  shard__poll_event ev[4];
  int low[2], sv[2], high = 900, i;

  if ((long)fd_limit() <= high + 8)
    high = (int)fd_limit() - 8;
  ASSERT_GT(high, 64);
  ASSERT_EQ(fx_open(16), 0);
  ASSERT_EQ(fx_pair(low), 0);
  ASSERT_EQ(ctl(low[0], 1, 0, E_READ), 0);
  ASSERT_EQ(write(low[1], "x", 1), 1);
  ASSERT_EQ(fx_pair(sv), 0);
  ASSERT_EQ(dup2(sv[0], high), high);
  fx_track(high);
  ASSERT_EQ(ctl(high, 9, 0, E_READ), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT_EQ(wait_ev(ev, 4, 0), 2);
  ASSERT_GE(i = find(ev, 2, high), 0);
  ASSERT_UEQ(ev[i].gen, 9);
  ASSERT_GE(i = find(ev, 2, low[0]), 0);
  ASSERT_UEQ(ev[i].gen, 1);
  ASSERT_EQ(ctl(high, 9, E_READ, 0), 0);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_EQ(ev[0].fd, low[0]);
  fx_close();
}

/* Makes a fresh socket pair whose first end has the number `fd` (free on entry). */
static int pair_at(int fd, int sv[2])
{
  int rc = fx_pair(sv);

  if (rc < 0 || sv[0] == fd)
    return rc;
  if (sv[1] == fd) {
    sv[1] = sv[0];
    sv[0] = fd;
    return 0;
  }
  if (dup2(sv[0], fd) != fd)
    return -errno;
  fx_track(fd);
  fx_closefd(sv[0]);
  sv[0] = fd;
  return 0;
}

/* A descriptor number closed and reused: the new registration's gen is what is reported. */
static void t_reused_fd(void)
{
  shard__poll_event ev[4];
  int sv[2], num;

  ASSERT_EQ(fx_open(64), 0);
  /* The core's order: remove, close, reuse. */
  ASSERT_EQ(fx_pair(sv), 0);
  num = sv[0];
  ASSERT_EQ(ctl(num, 1, 0, E_READ), 0);
  ASSERT_EQ(ctl(num, 1, E_READ, 0), 0);
  fx_closefd(sv[0]);
  fx_closefd(sv[1]);
  ASSERT_EQ(pair_at(num, sv), 0);
  ASSERT_EQ(ctl(num, 2, 0, E_READ), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_EQ(ev[0].fd, num);
  ASSERT_UEQ(ev[0].gen, 2);
  /* Closed while still registered (epoll and kqueue forget it on close), then reused
   * and registered afresh with oldmask 0: reported once, with the new gen. */
  ASSERT_EQ(ctl(num, 2, E_READ, E_READ | E_WRITE), 0);
  fx_closefd(sv[0]);
  fx_closefd(sv[1]);
  ASSERT_EQ(pair_at(num, sv), 0);
  ASSERT_EQ(ctl(num, 3, 0, E_READ), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT_EQ(wait_ev(ev, 4, 0), 1);
  ASSERT_EQ(ev[0].fd, num);
  ASSERT_UEQ(ev[0].gen, 3);
  ASSERT_EQ(ev[0].revents, E_READ);
  fx_close();
}

static const unit_test tests[] = {
    UNIT_TEST(t_by_name),
    UNIT_TEST(t_create_destroy),
    UNIT_TEST(t_idle),
    UNIT_TEST(t_poll_after_wait),
    UNIT_TEST(t_read_ready),
    UNIT_TEST(t_forever_when_ready),
    UNIT_TEST(t_level_triggered),
    UNIT_TEST(t_change_interest),
    UNIT_TEST(t_remove),
    UNIT_TEST(t_new_gen),
    UNIT_TEST(t_peer_close),
    UNIT_TEST(t_peer_shutdown),
    UNIT_TEST(t_bad_fd),
    UNIT_TEST(t_exception),
    UNIT_TEST(t_timeout_not_early),
    UNIT_TEST(t_fairness),
    UNIT_TEST(t_many_random),
    UNIT_TEST(t_high_fd),
    UNIT_TEST(t_reused_fd),
    {NULL, NULL},
};

UNIT_MAIN("poller", tests)
