/*
 * test/fault/fault_preload.c - an LD_PRELOAD interposer that makes socket I/O misbehave
 * the way real networks and kernels may: short reads and writes, EINTR, spurious EAGAIN,
 * and (optionally) ECONNRESET / EPIPE in the middle of a connection.
 *
 * Only sockets are touched (eventfds, pipes and files pass through), so the framework's
 * own plumbing keeps working and what is tested is how protocols and the I/O helpers
 * cope. Settings, from the environment, percentages per call:
 *
 *   FAULT_SHORT   shorten a read or write to a random 1..len bytes
 *   FAULT_EINTR   fail with EINTR before doing anything
 *   FAULT_EAGAIN  fail with EAGAIN before doing anything (a spurious wakeup)
 *   FAULT_RESET   fail a write with ECONNRESET or EPIPE (per mille, not percent)
 *   FAULT_SEED    seed of the per-thread random generator (default 1)
 *
 * Counters of injected faults are printed to stderr at exit, so a test can check that
 * faults were in fact injected.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static int p_short, p_eintr, p_eagain, p_reset, seed = 1;
static unsigned long n_short, n_eintr, n_eagain, n_reset, n_calls;

static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);

static int env_int(const char *name)
{
  const char *v = getenv(name);

  return v ? atoi(v) : 0;
}

__attribute__((constructor)) static void fault_init(void)
{
  real_read = dlsym(RTLD_NEXT, "read");
  real_write = dlsym(RTLD_NEXT, "write");
  real_readv = dlsym(RTLD_NEXT, "readv");
  real_writev = dlsym(RTLD_NEXT, "writev");
  real_recv = dlsym(RTLD_NEXT, "recv");
  real_send = dlsym(RTLD_NEXT, "send");
  real_sendmsg = dlsym(RTLD_NEXT, "sendmsg");
  real_recvmsg = dlsym(RTLD_NEXT, "recvmsg");
  p_short = env_int("FAULT_SHORT");
  p_eintr = env_int("FAULT_EINTR");
  p_eagain = env_int("FAULT_EAGAIN");
  p_reset = env_int("FAULT_RESET");
  if (getenv("FAULT_SEED"))
    seed = env_int("FAULT_SEED");
}

__attribute__((destructor)) static void fault_report(void)
{
  char line[256];
  int n = snprintf(
      line, sizeof(line), "fault_preload: calls=%lu short=%lu eintr=%lu eagain=%lu reset=%lu\n",
      __atomic_load_n(&n_calls, __ATOMIC_RELAXED), __atomic_load_n(&n_short, __ATOMIC_RELAXED),
      __atomic_load_n(&n_eintr, __ATOMIC_RELAXED), __atomic_load_n(&n_eagain, __ATOMIC_RELAXED),
      __atomic_load_n(&n_reset, __ATOMIC_RELAXED));

  if (n > 0 && real_write != NULL)
    (void)!real_write(2, line, (size_t)n);
}

/* xorshift per thread: no locks, reproducible per thread for a given seed. */
static unsigned roll(unsigned range)
{
  static __thread uint64_t x;

  if (x == 0)
    x = 0x9e3779b97f4a7c15ull ^ ((uint64_t)seed * 0x100000001b3ull) ^ (uint64_t)(uintptr_t)&x;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return (unsigned)(x % range);
}

static int is_socket(int fd)
{
  struct stat st;

  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

#define BUMP(c) __atomic_add_fetch(&(c), 1, __ATOMIC_RELAXED)

/* -1 with errno set when a fault replaces the call; else 0 and *len possibly shortened. */
static int inject(int fd, size_t *len, int writing)
{
  if (fd < 0 || !is_socket(fd))
    return 0;
  BUMP(n_calls);
  if (p_eintr && (int)roll(100) < p_eintr) {
    BUMP(n_eintr);
    errno = EINTR;
    return -1;
  }
  if (p_eagain && (int)roll(100) < p_eagain) {
    BUMP(n_eagain);
    errno = EAGAIN;
    return -1;
  }
  if (writing && p_reset && (int)roll(1000) < p_reset) {
    BUMP(n_reset);
    shutdown(fd, SHUT_RDWR);
    errno = roll(2) ? ECONNRESET : EPIPE;
    return -1;
  }
  if (p_short && len != NULL && *len > 1 && (int)roll(100) < p_short) {
    BUMP(n_short);
    *len = 1 + roll((unsigned)(*len > 65536 ? 65536 : *len) - 1);
  }
  return 0;
}

/* Shortens an iovec array to `len` bytes in a copy (at most 64 entries used). */
static int clip_iov(const struct iovec *in, int cnt, size_t len, struct iovec *out)
{
  int n = 0;

  for (int i = 0; i < cnt && i < 64 && len > 0; i++, n++) {
    out[n] = in[i];
    if (out[n].iov_len > len)
      out[n].iov_len = len;
    len -= out[n].iov_len;
  }
  return n;
}

static size_t iov_total(const struct iovec *iov, int cnt)
{
  size_t t = 0;

  for (int i = 0; i < cnt; i++)
    t += iov[i].iov_len;
  return t;
}

ssize_t read(int fd, void *buf, size_t len)
{
  if (inject(fd, &len, 0) < 0)
    return -1;
  return real_read(fd, buf, len);
}

ssize_t write(int fd, const void *buf, size_t len)
{
  if (inject(fd, &len, 1) < 0)
    return -1;
  return real_write(fd, buf, len);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
  if ((flags & MSG_PEEK) == 0 && inject(fd, &len, 0) < 0)
    return -1;
  return real_recv(fd, buf, len, flags);
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
  if (inject(fd, &len, 1) < 0)
    return -1;
  return real_send(fd, buf, len, flags);
}

ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
  size_t len = iov_total(iov, cnt), want = len;
  struct iovec c[64];

  if (inject(fd, &len, 0) < 0)
    return -1;
  if (len == want)
    return real_readv(fd, iov, cnt);
  return real_readv(fd, c, clip_iov(iov, cnt, len, c));
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
  size_t len = iov_total(iov, cnt), want = len;
  struct iovec c[64];

  if (inject(fd, &len, 1) < 0)
    return -1;
  if (len == want)
    return real_writev(fd, iov, cnt);
  return real_writev(fd, c, clip_iov(iov, cnt, len, c));
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
  size_t len = iov_total(m->msg_iov, (int)m->msg_iovlen), want = len;
  struct iovec c[64];
  struct msghdr copy = *m;

  if (inject(fd, &len, 1) < 0)
    return -1;
  if (len == want)
    return real_sendmsg(fd, m, flags);
  copy.msg_iov = c;
  copy.msg_iovlen = (size_t)clip_iov(m->msg_iov, (int)m->msg_iovlen, len, c);
  return real_sendmsg(fd, &copy, flags);
}

ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
  if ((flags & MSG_PEEK) == 0 && inject(fd, NULL, 0) < 0)
    return -1;
  return real_recvmsg(fd, m, flags);
}
