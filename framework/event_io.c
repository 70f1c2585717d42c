/*
 * framework/event_io.c - event_read / event_write: I/O through the Event's opset, and the
 * buffered helpers built on them (event_io_*: whole writes, exact reads).
 *
 * Plain descriptors use read(2) and send(2) with MSG_NOSIGNAL, so a peer that went away
 * costs an EPIPE, not the process. Both always set *needmask (the seed's first sample
 * returns it after a successful read).
 *
 * The event_io_* helpers never keep a pointer to the caller's memory: what cannot be
 * written (or what has been read) before the descriptor would block is copied into the
 * state's own buffer, because the seed's callbacks pass stack buffers and may pass a
 * different one on the next call. Writes go out directly from the caller's buffer when
 * nothing is pending, so the common case (everything fits into the socket buffer) costs
 * one system call and no copy; only the unwritten tail is copied. While output is pending,
 * further writes are appended to it and everything goes out with one gathered write
 * (sendmsg/writev, or the opset's event_writev), so a burst of small replies does not cost
 * one system call each.
 *
 * An Event with write-behind (ec_event_write_behind) hands both kinds of write to its
 * shard instead (shard/wbuf.c), which sends them with the next poller wait.
 */
#include "event.h"
#include "shard/shard.h"

#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* event_io_state.optype */
#define OP_NONE  0
#define OP_WRITE 1
#define OP_READ  2

/* A state keeps its buffer for the next operation (Momentum: re-using a state saves
 * allocations), but not one grown by a multi-megabyte write: that goes back when done. */
#define IO_KEEP_MAX (64 * 1024)
#define IO_MIN_BUF  512

/* event_io_printf's buffer, as Momentum documents it. */
#define IO_PRINTF_MAX 8192

static int event_write_uncounted(Event *e, const void *buf, int len, int *needmask);

int ec_event_read_fd(int fd, void *buf, int len, int *needmask)
{
  ssize_t n;

  *needmask = E_READ;
  if (len < 0 || (buf == NULL && len > 0)) {
    errno = EINVAL;
    return -1;
  }
  do
    n = read(fd, buf, (size_t)len);
  while (n < 0 && errno == EINTR);
  return (int)n;
}

/* Bytes in and out per shard (ec_shard_stats): owner-written counters of the calling
 * shard; I/O off the shards is not counted. */
static inline ssize_t count_io(ssize_t n, int out)
{
  shard *s = shard__self();

  if (n > 0 && s != NULL) {
    uint64_t *c = out ? &s->counters.bytes_out : &s->counters.bytes_in;

    /* Relaxed: owner-written, read by ec_shard_stats_get. */
    __atomic_store_n(c, *c + (uint64_t)n, __ATOMIC_RELAXED);
  }
  return n;
}

int(event_read)(Event *e, void *buf, int len, int *needmask)
{
  if (e == NULL) {
    *needmask = E_READ;
    errno = EINVAL;
    return -1;
  }
  if (e->io_opset != NULL && e->io_opset->event_read != NULL)
    return (int)count_io((e->io_opset->event_read)(e, buf, len, needmask), 0);
  return (int)count_io(ec_event_read_fd(e->fd, buf, len, needmask), 0);
}

int event_write(Event *e, const void *buf, int len, int *needmask)
{
  return (int)count_io(event_write_uncounted(e, buf, len, needmask), 1);
}

static int event_write_uncounted(Event *e, const void *buf, int len, int *needmask)
{
  ssize_t n;

  *needmask = E_WRITE;
  if (e == NULL || len < 0 || (buf == NULL && len > 0)) {
    errno = EINVAL;
    return -1;
  }
  if (e->io_opset != NULL && e->io_opset->event_write != NULL)
    return e->io_opset->event_write(e, buf, len, needmask);
  if (e->_priv.wb != NULL) {
    struct iovec v = {.iov_base = (void *)buf, .iov_len = (size_t)len};

    return (int)shard__wb_writev(e, &v, 1, needmask); /* kept for the next wait */
  }
  if (!(e->_priv.flags & SHARD__EVF_NOTSOCK)) {
    do
      n = send(e->fd, buf, (size_t)len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0 || errno != ENOTSOCK)
      return (int)n;
    /* A pipe or a file: remember, so that later writes go straight to write(2). */
    e->_priv.flags |= SHARD__EVF_NOTSOCK;
  }
  do
    n = write(e->fd, buf, (size_t)len);
  while (n < 0 && errno == EINTR);
  return (int)n;
}

/* ---- gathered writes ---------------------------------------------------------------------- */

/*
 * Writes iov[0 .. cnt) (non-empty pieces) through the Event's operations: the opset's
 * event_writev; or, for an opset with only event_write, piece by piece until one is cut
 * short; or sendmsg(2) (MSG_NOSIGNAL) / writev(2) on a plain descriptor. Returns the bytes
 * written or -1 with errno; sets *needmask.
 */
static ssize_t io_writev(Event *e, const struct iovec *iov, int cnt, int *needmask)
{
  const event_io_opset *ops = e->io_opset;
  struct msghdr msg = {0};
  ssize_t n, total = 0;

  if (cnt == 1)
    return event_write(e, iov[0].iov_base, (int)iov[0].iov_len, needmask);
  *needmask = E_WRITE;
  if (ops != NULL && ops->event_writev != NULL)
    return count_io(ops->event_writev(e, iov, cnt, needmask), 1);
  if (ops != NULL && ops->event_write != NULL) {
    for (int i = 0; i < cnt; i++) {
      n = event_write(e, iov[i].iov_base, (int)iov[i].iov_len, needmask);
      if (n < 0)
        return total > 0 ? total : -1; /* the error shows again on the next attempt */
      total += n;
      if ((size_t)n < iov[i].iov_len)
        break;
    }
    return total;
  }
  if (e->_priv.wb != NULL)
    return count_io(shard__wb_writev(e, iov, cnt, needmask), 1);
  if (!(e->_priv.flags & SHARD__EVF_NOTSOCK)) {
    msg.msg_iov = (struct iovec *)iov;
    msg.msg_iovlen = (size_t)cnt;
    do
      n = sendmsg(e->fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0 || errno != ENOTSOCK)
      return count_io(n, 1);
    e->_priv.flags |= SHARD__EVF_NOTSOCK;
  }
  do
    n = writev(e->fd, iov, cnt);
  while (n < 0 && errno == EINTR);
  return count_io(n, 1);
}

/* ---- event_io_state ----------------------------------------------------------------------- */

/* Rejects states that are not zeroed or left by these functions (an uninitialised struct
 * would send garbage or free a wild pointer). Idle states may carry informational
 * buflen/offset (event_io_read's EOF count, event_io_retry's finished read). */
static int state_valid(const event_io_state *st)
{
  if (st->optype < OP_NONE || st->optype > OP_READ || st->bufsize < 0 ||
      (st->buf == NULL && st->bufsize != 0))
    return 0;
  if (st->optype == OP_NONE)
    return 1;
  return st->offset >= 0 && st->offset <= st->buflen && st->buflen <= st->bufsize;
}

/* The operation finished or failed: back to idle, keeping a reasonably sized buffer. */
static void state_reset(event_io_state *st)
{
  if (st->bufsize > IO_KEEP_MAX) {
    ec_free(MEMTYPE_BUF_STORAGE, st->buf);
    st->buf = NULL;
    st->bufsize = 0;
  }
  st->optype = OP_NONE;
  st->buflen = 0;
  st->offset = 0;
  st->needmask = 0;
  st->_priv.str_buf = NULL;
  st->_priv.str_len = 0;
}

/* Grows the buffer to hold at least `need` bytes. 0 or -ENOMEM (state unchanged). */
static int state_reserve(event_io_state *st, int need)
{
  size_t cap = st->bufsize > 0 ? (size_t)st->bufsize : IO_MIN_BUF;
  char *p;

  if (need <= st->bufsize)
    return 0;
  while (cap < (size_t)need)
    cap *= 2;
  if (cap > INT_MAX)
    cap = (size_t)need;
  p = ec_realloc(MEMTYPE_BUF_STORAGE, st->buf, cap);
  if (p == NULL)
    return -ENOMEM;
  st->buf = p;
  st->bufsize = (int)cap;
  return 0;
}

/* Appends bytes to the pending output, moving what is left of it to the front first when
 * that avoids growing. 0 or -ENOMEM (state unchanged). */
static int pending_append(event_io_state *st, const char *p, int n)
{
  int pend = st->buflen - st->offset;

  if (n == 0)
    return 0;
  if (n > INT_MAX - pend)
    return -ENOMEM;
  if (st->offset > 0 && st->buflen + n > st->bufsize) {
    memmove(st->buf, st->buf + st->offset, (size_t)pend);
    st->buflen = pend;
    st->offset = 0;
  }
  if (state_reserve(st, st->buflen + n) < 0)
    return -ENOMEM;
  memcpy(st->buf + st->buflen, p, (size_t)n);
  st->buflen += n;
  return 0;
}

/* Fails the running operation: the state goes back to idle, errno is kept. */
static int io_fail(event_io_state *st, int err)
{
  state_reset(st);
  errno = err;
  return EVENT_IO_ERROR;
}

/*
 * Writes the pending bytes followed by buf[0 .. len) with one gathered write, and keeps
 * whatever did not go out. The new bytes go out straight from the caller's buffer; only
 * their unwritten tail is copied.
 */
static int write_more(Event *e, event_io_state *st, const char *buf, int len)
{
  struct iovec iov[2];
  int cnt = 0, need = E_WRITE;
  int pend;
  ssize_t n;

  if (st->optype == OP_NONE)
    st->buflen = st->offset = 0;
  pend = st->buflen - st->offset;
  if (pend > 0)
    iov[cnt++] = (struct iovec){.iov_base = st->buf + st->offset, .iov_len = (size_t)pend};
  if (len > 0)
    iov[cnt++] = (struct iovec){.iov_base = (void *)buf, .iov_len = (size_t)len};
  if (cnt == 0) {
    state_reset(st);
    return EVENT_IO_DONE;
  }
  n = io_writev(e, iov, cnt, &need);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return io_fail(st, errno);
    n = 0;
  } else if (n == 0) {
    /* Only an opset can report no progress without EAGAIN (SSL_write's 0): the
     * connection is gone. */
    return io_fail(st, EPIPE);
  }
  if ((size_t)n >= (size_t)pend + (size_t)len) {
    state_reset(st);
    return EVENT_IO_DONE;
  }
  if (n >= pend) {
    st->buflen = st->offset = 0;
    buf += n - pend;
    len -= (int)(n - pend);
  } else {
    st->offset += (int)n;
  }
  if (pending_append(st, buf, len) < 0)
    return io_fail(st, ENOMEM); /* part of the stream is lost: the connection is unusable */
  st->optype = OP_WRITE;
  st->needmask = need != 0 ? need : E_WRITE;
  return EVENT_IO_PENDING;
}

/*
 * Reads into the state's buffer until the pending read is complete or would block. On
 * completion (and at EOF) the bytes are copied to `out`, the caller's buffer of this call;
 * event_io_retry passes NULL and leaves them in state->buf.
 */
static int read_more(Event *e, event_io_state *st, char *out)
{
  int need = E_READ, n, got;

  while (st->offset < st->buflen) {
    n = (event_read)(e, st->buf + st->offset, st->buflen - st->offset, &need);
    if (n > 0) {
      st->offset += n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      st->needmask = need != 0 ? need : E_READ;
      return EVENT_IO_PENDING;
    }
    if (n < 0)
      return io_fail(st, errno);
    got = st->offset;
    if (out != NULL && got > 0)
      memcpy(out, st->buf, (size_t)got);
    state_reset(st);
    st->offset = got;
    errno = 0;
    return EVENT_IO_EOF;
  }
  if (out == NULL) {
    /* event_io_retry: the bytes stay in state->buf[0 .. buflen) until the next operation. */
    st->optype = OP_NONE;
    st->needmask = 0;
    return EVENT_IO_DONE;
  }
  memcpy(out, st->buf, (size_t)st->buflen);
  state_reset(st);
  return EVENT_IO_DONE;
}

/* The common argument checks; sets errno and returns 0 when they fail. */
static int args_ok(Event *e, const void *buf, int len, event_io_state *st)
{
  if (st == NULL || e == NULL || len < 0 || (buf == NULL && len > 0) || !state_valid(st)) {
    errno = EINVAL;
    return 0;
  }
  return 1;
}

int event_io_write(Event *e, const char *buf, int buflen, event_io_state *state)
{
  if (!args_ok(e, buf, buflen, state))
    return EVENT_IO_ERROR;
  if (state->optype == OP_READ) {
    errno = EBUSY;
    return EVENT_IO_ERROR;
  }
  return write_more(e, state, buf, buflen);
}

int event_io_retry(Event *e, event_io_state *state)
{
  if (!args_ok(e, NULL, 0, state))
    return EVENT_IO_ERROR;
  switch (state->optype) {
  case OP_WRITE:
    return write_more(e, state, NULL, 0);
  case OP_READ:
    return read_more(e, state, NULL);
  default:
    state->needmask = 0;
    return EVENT_IO_DONE;
  }
}

int event_io_read(Event *e, char *buf, int buflen, event_io_state *state)
{
  int need = E_READ, got = 0, n;

  if (!args_ok(e, buf, buflen, state))
    return EVENT_IO_ERROR;
  if (state->optype == OP_WRITE) {
    errno = EBUSY;
    return EVENT_IO_ERROR;
  }
  if (state->optype == OP_READ) {
    if (buflen != state->buflen) {
      errno = EINVAL;
      return EVENT_IO_ERROR;
    }
    return read_more(e, state, buf);
  }
  /* A new read goes straight into the caller's buffer: when everything is there already
   * (the usual case for small reads) the state is not even touched. */
  while (got < buflen) {
    n = (event_read)(e, buf + got, buflen - got, &need);
    if (n > 0) {
      got += n;
      continue;
    }
    if (n == 0) {
      state_reset(state);
      state->offset = got;
      errno = 0;
      return EVENT_IO_EOF;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return io_fail(state, errno);
    if (state_reserve(state, buflen) < 0)
      return io_fail(state, ENOMEM);
    memcpy(state->buf, buf, (size_t)got);
    state->optype = OP_READ;
    state->buflen = buflen;
    state->offset = got;
    state->needmask = need != 0 ? need : E_READ;
    return EVENT_IO_PENDING;
  }
  state_reset(state);
  return EVENT_IO_DONE;
}

int(event_io_write_string)(Event *e, string *str, event_io_state *state)
{
  int rc;

  if (str == NULL || str->len < 0 || (str->buffer == NULL && str->len > 0)) {
    errno = EINVAL;
    return EVENT_IO_ERROR;
  }
  if (str->backing != NULL) {
    errno = ENOTSUP; /* disk-backed and I/O-object strings are not implemented */
    return EVENT_IO_ERROR;
  }
  if (!args_ok(e, str->buffer, str->len, state))
    return EVENT_IO_ERROR;
  /* The seed calls this again with the same string after EVENT_IO_PENDING: that continues
   * the write (whose rest is in the state) instead of sending the string twice. */
  if (state->optype == OP_WRITE && state->_priv.str_buf != NULL &&
      state->_priv.str_buf == str->buffer && state->_priv.str_len == str->len)
    return write_more(e, state, NULL, 0);
  rc = event_io_write(e, str->buffer, str->len, state);
  if (rc == EVENT_IO_PENDING) {
    state->_priv.str_buf = str->buffer;
    state->_priv.str_len = str->len;
  }
  return rc;
}

int ec_event_io_write_string_value(Event *e, string str, event_io_state *state)
{
  return (event_io_write_string)(e, &str, state);
}

int event_io_printf(Event *e, event_io_state *state, const char *fmt, ...)
{
  char buf[IO_PRINTF_MAX];
  va_list ap;
  int n;

  if (fmt == NULL || !args_ok(e, NULL, 0, state))
    return EVENT_IO_ERROR;
  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n < 0) {
    errno = EINVAL;
    return EVENT_IO_ERROR;
  }
  if ((size_t)n >= sizeof(buf)) {
    errno = EMSGSIZE;
    return EVENT_IO_ERROR;
  }
  return event_io_write(e, buf, n, state);
}

void event_io_state_clean(event_io_state *state)
{
  if (state == NULL)
    return;
  if (state->bufsize > 0 || state->buf != NULL)
    ec_free(MEMTYPE_BUF_STORAGE, state->buf);
  memset(state, 0, sizeof(*state));
}

int ec_event_io_queue(event_io_state *state, const char *buf, int buflen)
{
  if (state == NULL || buflen < 0 || (buf == NULL && buflen > 0) || !state_valid(state)) {
    errno = EINVAL;
    return EVENT_IO_ERROR;
  }
  if (state->optype == OP_READ) {
    errno = EBUSY;
    return EVENT_IO_ERROR;
  }
  if (state->optype == OP_NONE) {
    state->buflen = state->offset = 0;
    if (buflen == 0) {
      state->needmask = 0;
      return EVENT_IO_DONE;
    }
  }
  if (pending_append(state, buf, buflen) < 0) {
    if (state->optype == OP_NONE)
      state->buflen = state->offset = 0;
    errno = ENOMEM;
    return EVENT_IO_ERROR;
  }
  state->optype = OP_WRITE;
  state->needmask = E_WRITE;
  return EVENT_IO_PENDING;
}

int ec_event_io_pending(const event_io_state *state)
{
  if (state == NULL || state->optype != OP_WRITE)
    return 0;
  return state->buflen - state->offset;
}
