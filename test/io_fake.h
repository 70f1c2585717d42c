/*
 * test/io_fake.h - helpers of the buffered-I/O suites (test_event_io.c, test_growbuf.c):
 * an in-memory I/O opset whose reads and writes the test scripts byte by byte (the way a
 * TLS opset sits under the helpers), loopback TCP pairs with tiny socket buffers, and a
 * position-dependent byte pattern that catches lost, duplicated and reordered bytes.
 */
#ifndef EC_TEST_IO_FAKE_H
#define EC_TEST_IO_FAKE_H

#include "unit.h"

#include "event.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* ---- the scripted opset ----------------------------------------------------------------- */

typedef struct fake_io {
  /* input: bytes the next reads return (at most `max_read` per read), then EAGAIN or EOF */
  char *in;
  size_t in_len, in_pos;
  int max_read; /* 0: no limit */
  int eof;      /* after the input: read returns 0 instead of EAGAIN */
  int rd_err;   /* non-zero: reads fail with this errno */
  int need;     /* the needmask an EAGAIN reports (0: E_READ / E_WRITE) */
  int reads;    /* read calls */
  /* output: everything written, at most `room` more bytes accepted (then EAGAIN) */
  char *out;
  size_t out_len, out_cap;
  long room;
  int wr_err;      /* non-zero: writes fail with this errno */
  int writes;      /* event_write calls */
  int writevs;     /* event_writev calls */
  int last_iovcnt; /* iovcnt of the last event_writev */
  int max_iovcnt;
} fake_io;

static inline int fake_read(Event *e, void *buf, int len, int *needmask)
{
  fake_io *f = e->closure;
  size_t n = f->in_len - f->in_pos;

  f->reads++;
  *needmask = E_READ;
  if (f->rd_err) {
    errno = f->rd_err;
    return -1;
  }
  if (n == 0) {
    if (f->eof)
      return 0;
    *needmask = f->need ? f->need : E_READ;
    errno = EAGAIN;
    return -1;
  }
  if (n > (size_t)len)
    n = (size_t)len;
  if (f->max_read > 0 && n > (size_t)f->max_read)
    n = (size_t)f->max_read;
  memcpy(buf, f->in + f->in_pos, n);
  f->in_pos += n;
  return (int)n;
}

static inline void fake_out_add(fake_io *f, const void *p, size_t n)
{
  if (f->out_len + n > f->out_cap) {
    f->out_cap = (f->out_len + n) * 2 + 64;
    f->out = realloc(f->out, f->out_cap);
  }
  memcpy(f->out + f->out_len, p, n);
  f->out_len += n;
  f->room -= (long)n;
}

static inline int fake_write(Event *e, const void *buf, int len, int *needmask)
{
  fake_io *f = e->closure;
  size_t n = (size_t)len;

  f->writes++;
  *needmask = E_WRITE;
  if (f->wr_err) {
    errno = f->wr_err;
    return -1;
  }
  if (f->room <= 0 && len > 0) {
    *needmask = f->need ? f->need : E_WRITE;
    errno = EAGAIN;
    return -1;
  }
  if ((long)n > f->room)
    n = (size_t)f->room;
  fake_out_add(f, buf, n);
  return (int)n;
}

static inline ssize_t fake_writev(Event *e, const struct iovec *iov, int iovcnt, int *needmask)
{
  fake_io *f = e->closure;
  ssize_t total = 0;

  f->writevs++;
  f->last_iovcnt = iovcnt;
  if (iovcnt > f->max_iovcnt)
    f->max_iovcnt = iovcnt;
  *needmask = E_WRITE;
  if (f->wr_err) {
    errno = f->wr_err;
    return -1;
  }
  if (f->room <= 0) {
    *needmask = f->need ? f->need : E_WRITE;
    errno = EAGAIN;
    return -1;
  }
  for (int i = 0; i < iovcnt && f->room > 0; i++) {
    size_t n = iov[i].iov_len;

    if ((long)n > f->room)
      n = (size_t)f->room;
    fake_out_add(f, iov[i].iov_base, n);
    total += (ssize_t)n;
  }
  return total;
}

__attribute__((unused)) static event_io_opset fake_ops = {
    .event_read = fake_read, .event_write = fake_write, .event_writev = fake_writev};
__attribute__((unused)) static event_io_opset fake_ops_no_writev = {.event_read = fake_read,
                                                                    .event_write = fake_write};

/* Adds bytes for the next reads. */
static inline void fake_feed(fake_io *f, const void *p, size_t n)
{
  f->in = realloc(f->in, f->in_len + n + 1);
  memcpy(f->in + f->in_len, p, n);
  f->in_len += n;
}

static inline void fake_feeds(fake_io *f, const char *s)
{
  fake_feed(f, s, strlen(s));
}

static inline void fake_free(fake_io *f)
{
  free(f->in);
  free(f->out);
  memset(f, 0, sizeof(*f));
}

static inline int fake_never_cb(Event *e, int type, void *closure, struct timeval *now)
{
  return 0;
}

/* An unscheduled Event whose I/O goes to `f` (the descriptor is a real one, never used:
 * build_fd_event wants one). */
static inline Event *fake_event(fake_io *f, event_io_opset *ops, int *fd_out)
{
  int fd = open("/dev/null", O_RDWR);
  Event *e;

  *fd_out = fd;
  if (fd < 0)
    return NULL;
  e = build_fd_event(fd, E_READ, 0, fake_never_cb, f);
  if (e != NULL)
    e->io_opset = ops;
  return e;
}

static inline void fake_event_free(Event *e, int fd)
{
  event_free(e);
  close(fd);
}

/* ---- sockets ------------------------------------------------------------------------------ */

/* A loopback TCP connection whose socket buffers are `bufsize` (the kernel doubles it).
 * fds[0] is non-blocking (the framework's side), fds[1] blocking (the test's peer).
 * 0 or -1. */
static inline int tcp_pair(int fds[2], int bufsize)
{
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t alen = sizeof(a);
  int l, c, s, one = 1;

  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0)
    return -1;
  /* Set before listen/connect: the receive buffer fixes the advertised window. */
  setsockopt(l, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
  setsockopt(l, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
  if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
      getsockname(l, (struct sockaddr *)&a, &alen) < 0) {
    close(l);
    return -1;
  }
  c = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(c, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
  setsockopt(c, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
  if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0) {
    close(l);
    if (c >= 0)
      close(c);
    return -1;
  }
  s = accept4(l, NULL, NULL, SOCK_NONBLOCK);
  close(l);
  if (s < 0) {
    close(c);
    return -1;
  }
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fds[0] = s;
  fds[1] = c;
  return 0;
}

/* A socketpair with tiny send buffers; sv[0] non-blocking. 0 or -1. */
static inline int unix_pair(int sv[2], int bufsize)
{
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
    return -1;
  for (int i = 0; i < 2; i++) {
    setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
    setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
  }
  return fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
}

/* Reads up to len bytes, waiting at most ms for each piece. Returns the bytes read (less
 * than len at EOF, on an error or a timeout). */
static inline size_t peer_read(int fd, void *buf, size_t len, int ms)
{
  size_t got = 0;

  while (got < len) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, ms) <= 0)
      break;
    n = read(fd, (char *)buf + got, len - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  return got;
}

/* Writes all bytes (the peer's socket is blocking). 0 or -1. */
static inline int peer_write(int fd, const void *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = write(fd, buf, len);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    buf = (const char *)buf + n;
    len -= (size_t)n;
  }
  return 0;
}

/* 1 if the peer sees EOF (or a reset) within ms, with no data before it. */
static inline int peer_sees_eof(int fd, int ms)
{
  struct pollfd p = {.fd = fd, .events = POLLIN};
  char c;

  if (poll(&p, 1, ms) <= 0)
    return 0;
  ssize_t n = read(fd, &c, 1);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* Byte `i` of the test streams: position-dependent, so that a lost, repeated or
 * reordered piece shows. */
static inline unsigned char pattern_at(size_t i)
{
  uint32_t x = (uint32_t)i * 2654435761u;

  x ^= x >> 15;
  return (unsigned char)(x >> 7);
}

static inline void pattern_fill(unsigned char *p, size_t from, size_t n)
{
  for (size_t i = 0; i < n; i++)
    p[i] = pattern_at(from + i);
}

/* Index of the first byte of p[0..n) that differs from the pattern at `from`, or -1. */
static inline long pattern_check(const unsigned char *p, size_t from, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i] != pattern_at(from + i))
      return (long)i;
  return -1;
}

static inline int ld(const int *v)
{
  return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static inline void st_rel(int *v, int x)
{
  __atomic_store_n(v, x, __ATOMIC_RELEASE);
}

static inline void add_rel(int *v, int x)
{
  __atomic_add_fetch(v, x, __ATOMIC_RELEASE);
}

#endif /* EC_TEST_IO_FAKE_H */
