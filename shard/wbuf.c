/*
 * shard/wbuf.c - write-behind: the output of an Event that asked for it
 * (ec_event_write_behind) is kept by its shard during the iteration and handed to the
 * poller with the next wait, which on the uring backend sends it in the same system call
 * that waits for the next readiness batch (shard/poll_uring.c). On a backend that cannot
 * carry writes, ec_event_write_behind does nothing and writes go out at once, as before.
 *
 * An Event's output lives in two buffers: `q`, what callbacks wrote and the poller has not
 * been given yet, and `fl`, what the poller has been given (fl[floff .. fllen)). Before each
 * wait every Event with output swaps them and hands `fl` over as a fast send, which is done
 * when the wait returns. If the socket did not take all of it, the rest goes out as a slow
 * send, which finishes whenever the peer reads; meanwhile new output collects in `q`
 * (behind it, in order), up to WB_MAX bytes, and E_WRITE is held back from the Event: it is
 * delivered once everything has gone. A failed send makes the Event's next write fail with
 * its errno.
 *
 * An Event that goes away (event_close, or the scheduler freeing it) with output not yet
 * sent leaves it to an orphan: the output goes through a duplicate of the descriptor, so
 * the caller's close happens at once and the FIN follows the data. An orphan the peer does
 * not read from gives up after event_loop.write_behind_linger seconds.
 */
#include "shard/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WB_FAST 1
#define WB_SLOW 2

/* Output a write-behind Event may have waiting before its writes see EAGAIN; and a write
 * at least this big, made with nothing waiting, is sent directly (copying it costs more
 * than the system call it would save). */
#define WB_MAX    ((size_t)256 * 1024)
#define WB_DIRECT ((size_t)64 * 1024)
#define WB_MIN    1024

struct shard__wb {
  Event *e; /* NULL once the Event is gone: an orphan finishing its output */
  int fd;   /* the Event's descriptor, or an orphan's own duplicate (own_fd) */
  uint8_t own_fd;
  uint8_t inflight;   /* 0, WB_FAST or WB_SLOW: fl is the poller's */
  uint8_t dirty;      /* on the shard's list of output to hand over */
  uint8_t want_write; /* an E_WRITE readiness was held back */
  uint8_t cancelled;  /* orphan: cancellation asked for */
  int err;            /* errno of a failed send, for the next write */
  char *q, *fl;
  uint32_t qlen, qcap, fllen, flcap, floff;
  uint64_t deadline;           /* orphan: CLOCK_MONOTONIC ns */
  struct shard__wb *next;      /* the dirty list */
  struct shard__wb *orph_next; /* the orphan list */
};

static void wb_free(shard__wb *wb)
{
  if (wb->own_fd)
    close(wb->fd);
  ec_free(MEMTYPE_BUF_STORAGE, wb->q);
  ec_free(MEMTYPE_BUF_STORAGE, wb->fl);
  ec_free(MEMTYPE_GENERIC, wb);
}

static int wb_busy(const shard__wb *wb)
{
  return wb->inflight != 0 || wb->qlen > 0;
}

static void dirty_add(shard *s, shard__wb *wb)
{
  if (wb->dirty)
    return;
  wb->dirty = 1;
  wb->next = s->wb_dirty;
  s->wb_dirty = wb;
}

static void dirty_remove(shard *s, shard__wb *wb)
{
  if (!wb->dirty)
    return;
  for (shard__wb **p = &s->wb_dirty; *p != NULL; p = &(*p)->next) {
    if (*p == wb) {
      *p = wb->next;
      break;
    }
  }
  wb->dirty = 0;
}

static void orphan_remove(shard *s, shard__wb *wb)
{
  for (shard__wb **p = &s->wb_orphans; *p != NULL; p = &(*p)->orph_next) {
    if (*p == wb) {
      *p = wb->orph_next;
      return;
    }
  }
}

/* Appends to q; 0 or -ENOMEM. */
static int q_append(shard__wb *wb, const void *p, uint32_t n)
{
  if (wb->qlen + n > wb->qcap) {
    uint32_t cap = wb->qcap ? wb->qcap : WB_MIN;
    char *b;

    while (cap < wb->qlen + n)
      cap *= 2;
    b = ec_realloc(MEMTYPE_BUF_STORAGE, wb->q, cap);
    if (b == NULL)
      return -ENOMEM;
    wb->q = b;
    wb->qcap = cap;
  }
  memcpy(wb->q + wb->qlen, p, n);
  wb->qlen += n;
  return 0;
}

/* q becomes the output handed over (fl); the old fl's buffer takes new output. */
static void swap_q(shard__wb *wb)
{
  char *b = wb->fl;
  uint32_t cap = wb->flcap;

  wb->fl = wb->q;
  wb->flcap = wb->qcap;
  wb->fllen = wb->qlen;
  wb->floff = 0;
  wb->q = b;
  wb->qcap = cap;
  wb->qlen = 0;
}

static void drop_output(shard__wb *wb, int err)
{
  wb->err = err;
  wb->qlen = wb->fllen = wb->floff = 0;
  wb->inflight = 0;
}

/* Sends q directly without waiting (flushes, a closing Event). 0 all sent, 1 some left in
 * q, -1 failed (wb->err set, output dropped). Only when nothing is in flight. */
static int send_q_now(shard__wb *wb)
{
  uint32_t off = 0;

  while (off < wb->qlen) {
    ssize_t n = send(wb->fd, wb->q + off, wb->qlen - off, MSG_NOSIGNAL | MSG_DONTWAIT);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      break;
    if (n <= 0) {
      drop_output(wb, n < 0 ? errno : EPIPE);
      return -1;
    }
    off += (uint32_t)n;
  }
  if (off > 0) {
    memmove(wb->q, wb->q + off, wb->qlen - off);
    wb->qlen -= off;
  }
  return wb->qlen > 0;
}

/* Hands fl[floff .. fllen) to the poller as a slow send. 0, or -1 (output dropped). */
static int send_slow(shard *s, shard__wb *wb)
{
  int rc = s->ops->send(s->poller, wb->fd, wb->fl + wb->floff, wb->fllen - wb->floff, wb, 1);

  if (rc < 0) {
    ec_debug_printf(rc == -ESHUTDOWN ? DDEBUG : DERROR, EC_LOG_SHARD,
                    "shard %d: fd %d: cannot queue a send of %u bytes: %s", s->id, wb->fd,
                    wb->fllen - wb->floff, strerror(-rc));
    drop_output(wb, -rc);
    return -1;
  }
  wb->inflight = WB_SLOW;
  return 0;
}

/* ---- the API (owner thread) ----------------------------------------------------------- */

/* The wb of an Event its owner is calling about, or NULL (errno set). */
static shard__wb *owner_wb(Event *e, shard **sp)
{
  shard *s = shard__self();

  if (s == NULL || s->id != e->_priv.owner) {
    errno = EPERM;
    return NULL;
  }
  *sp = s;
  return e->_priv.wb;
}

int ec_event_write_behind(Event *e, int on)
{
  shard *s = shard__self();
  shard__wb *wb;

  if (e == NULL || e->_priv.magic != SHARD__EVENT_MAGIC || e->fd < 0 ||
      (e->_priv.flags & SHARD__EVF_TIMER)) {
    errno = EINVAL;
    return -1;
  }
  if (s == NULL || (e->_priv.owner >= 0 && e->_priv.owner != s->id)) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "ec_event_write_behind(%p, fd %d): must be called on the Event's shard %d",
                    (void *)e, e->fd, e->_priv.owner);
    errno = EPERM;
    return -1;
  }
  if (!on) {
    if (e->_priv.wb == NULL)
      return 0;
    if (ec_event_flush(e) < 0) {
      if (errno == EAGAIN)
        errno = EBUSY; /* output still in flight: flush until it is out, then switch off */
      return -1;
    }
    dirty_remove(s, e->_priv.wb);
    wb_free(e->_priv.wb);
    e->_priv.wb = NULL;
    return 0;
  }
  if (e->_priv.wb != NULL || s->ops->send == NULL)
    return 0; /* already on; or a poller that cannot carry writes: write directly */
  if (e->io_opset != NULL) {
    errno = ENOTSUP; /* TLS and other opsets write through their own layer */
    return -1;
  }
  if (e->_priv.owner < 0)
    e->_priv.owner = s->id; /* built here: it will be scheduled here */
  wb = ec_malloc_size(MEMTYPE_GENERIC, sizeof(*wb));
  if (wb == NULL) {
    errno = ENOMEM;
    return -1;
  }
  memset(wb, 0, sizeof(*wb));
  wb->e = e;
  wb->fd = e->fd;
  e->_priv.wb = wb;
  return 0;
}

int ec_event_flush(Event *e)
{
  shard *s;
  shard__wb *wb;

  if (e == NULL || e->_priv.magic != SHARD__EVENT_MAGIC) {
    errno = EINVAL;
    return -1;
  }
  if (e->_priv.wb == NULL)
    return 0;
  if ((wb = owner_wb(e, &s)) == NULL)
    return -1;
  if (wb->err) {
    errno = wb->err;
    return -1;
  }
  if (wb->inflight) {
    errno = EAGAIN; /* E_WRITE comes when it has gone */
    return -1;
  }
  if (wb->qlen == 0)
    return 0;
  dirty_remove(s, wb);
  switch (send_q_now(wb)) {
  case 0:
    return 0;
  case 1:
    swap_q(wb);
    if (send_slow(s, wb) == 0) {
      wb->want_write = 1;
      errno = EAGAIN;
      return -1;
    }
    /* fall through */
  default:
    errno = wb->err;
    return -1;
  }
}

ssize_t shard__wb_writev(Event *e, const struct iovec *iov, int cnt, int *needmask)
{
  shard__wb *wb = e->_priv.wb;
  shard *s;
  size_t total = 0, room;

  *needmask = E_WRITE;
  if (owner_wb(e, &s) == NULL)
    return -1;
  if (wb->err) {
    errno = wb->err;
    return -1;
  }
  for (int i = 0; i < cnt; i++)
    total += iov[i].iov_len;
  if (total == 0)
    return 0;
  if (!wb_busy(wb) && total >= WB_DIRECT) {
    /* Big and nothing ahead of it: straight out, as without write-behind. */
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
    ssize_t n;

    do
      n = sendmsg(wb->fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
  }
  room = wb->qlen + (wb->inflight ? wb->fllen - wb->floff : 0);
  room = room >= WB_MAX ? 0 : WB_MAX - room;
  if (room == 0) {
    wb->want_write = 1;
    errno = EAGAIN;
    return -1;
  }
  total = 0;
  for (int i = 0; i < cnt && room > 0; i++) {
    uint32_t n = (uint32_t)(iov[i].iov_len < room ? iov[i].iov_len : room);

    if (q_append(wb, iov[i].iov_base, n) < 0) {
      if (total > 0)
        break;
      errno = ENOMEM;
      return -1;
    }
    total += n;
    room -= n;
  }
  if (!wb->inflight)
    dirty_add(s, wb);
  return (ssize_t)total;
}

/* ---- the shard loop ------------------------------------------------------------------- */

void shard__wb_submit(shard *s)
{
  shard__wb *wb = s->wb_dirty;

  s->wb_dirty = NULL;
  while (wb != NULL) {
    shard__wb *next = wb->next;
    int rc;

    wb->dirty = 0;
    if (!wb->inflight && wb->qlen > 0) {
      swap_q(wb);
      rc = s->ops->send(s->poller, wb->fd, wb->fl, wb->fllen, wb, 0);
      if (rc == 0) {
        wb->inflight = WB_FAST;
      } else {
        /* The ring is out of room: this one goes out the way a flush does. */
        swap_q(wb);
        if (send_q_now(wb) == 1) {
          swap_q(wb);
          send_slow(s, wb);
        }
      }
    }
    wb = next;
  }
}

static void wb_done(shard *s, shard__wb *wb)
{
  Event *e = wb->e;

  if (e == NULL) {
    if (wb->qlen > 0 && wb->err == 0) {
      swap_q(wb); /* what the Event wrote behind the output that was in flight */
      if (send_slow(s, wb) == 0)
        return;
    }
    orphan_remove(s, wb);
    wb_free(wb);
    return;
  }
  if (wb->qlen > 0 && wb->err == 0)
    dirty_add(s, wb); /* goes with the next wait */
  else if (wb->want_write) {
    wb->want_write = 0;
    if (e->_priv.regmask & E_WRITE)
      shard__request_dispatch(s, e, E_WRITE);
  }
}

void shard__wb_complete(shard *s)
{
  shard__send_done *d;
  int n = s->ops->sent(s->poller, &d);

  for (int i = 0; i < n; i++) {
    shard__wb *wb = d[i].tag;
    int32_t res = d[i].res;

    if (wb->inflight == WB_SLOW && res == 0)
      res = -EPIPE; /* a slow send takes everything or fails; nothing taken means gone */
    if (res < 0 && res != -EAGAIN) {
      if (wb->e != NULL || res != -ECANCELED)
        ec_debug_printf(DDEBUG, EC_LOG_SHARD, "shard %d: fd %d: send failed: %s", s->id, wb->fd,
                        strerror(-res));
      drop_output(wb, -res);
      wb_done(s, wb);
      continue;
    }
    if (res > 0)
      wb->floff += (uint32_t)res;
    if (wb->floff < wb->fllen) {
      /* The socket is full: the rest waits for the peer, without holding up the shard. */
      if (send_slow(s, wb) < 0)
        wb_done(s, wb);
      continue;
    }
    wb->inflight = 0;
    wb->fllen = wb->floff = 0;
    if (wb->flcap > WB_MIN) { /* a burst's buffer does not stay with an idle connection */
      ec_free(MEMTYPE_BUF_STORAGE, wb->fl);
      wb->fl = NULL;
      wb->flcap = 0;
    }
    if (wb->qlen == 0 && wb->qcap > WB_MIN) {
      ec_free(MEMTYPE_BUF_STORAGE, wb->q);
      wb->q = NULL;
      wb->qcap = 0;
    }
    wb_done(s, wb);
  }
  if (s->wb_orphans != NULL) {
    uint64_t now = s->now_ns;

    for (shard__wb *o = s->wb_orphans; o != NULL; o = o->orph_next) {
      if (!o->cancelled && o->inflight == WB_SLOW && now >= o->deadline &&
          s->ops->cancel(s->poller, o) == 0) {
        ec_debug_printf(DINFO, EC_LOG_SHARD,
                        "shard %d: fd %d: peer did not read the last %u bytes in time; dropped",
                        s->id, o->fd, o->fllen - o->floff + o->qlen);
        o->cancelled = 1;
      }
    }
  }
}

int shard__wb_held(Event *e)
{
  shard__wb *wb = e->_priv.wb;

  if (wb == NULL || !wb->inflight)
    return 0;
  wb->want_write = 1;
  return 1;
}

void shard__wb_detach(Event *e)
{
  shard__wb *wb = e->_priv.wb;
  shard *s = shard__self();

  if (wb == NULL)
    return;
  e->_priv.wb = NULL;
  if (s == NULL || s->id != e->_priv.owner)
    s = NULL; /* not on its shard (a shard gone at shutdown): only what needs no ring */
  else
    dirty_remove(s, wb);
  if (!wb->inflight && wb->qlen > 0)
    send_q_now(wb); /* what the socket takes now goes now */
  if (!wb->inflight && wb->qlen == 0) {
    wb_free(wb);
    return;
  }
  if (s == NULL) {
    ec_debug_printf(DWARNING, EC_LOG_SHARD,
                    "fd %d: Event freed off its shard with output unsent; %s", wb->fd,
                    wb->inflight ? "its buffer is leaked" : "dropped");
    if (!wb->inflight)
      wb_free(wb);
    return;
  }
  /* Output left: an orphan finishes it through a descriptor of its own, so that the
   * caller may close e->fd now. */
  wb->e = NULL;
  if (wb->qlen > 0) {
    int fd = fcntl(wb->fd, F_DUPFD_CLOEXEC, 0);

    if (fd < 0) {
      ec_debug_printf(DWARNING, EC_LOG_SHARD,
                      "fd %d: cannot keep it open to send the last %u "
                      "bytes: %s; dropped",
                      wb->fd, wb->qlen, strerror(errno));
      wb->qlen = 0;
    } else {
      wb->fd = fd;
      wb->own_fd = 1;
    }
  }
  if (!wb->inflight) {
    if (wb->qlen == 0) {
      wb_free(wb);
      return;
    }
    swap_q(wb);
    if (send_slow(s, wb) < 0) {
      wb_free(wb);
      return;
    }
  }
  wb->deadline = fw__mono_ns() + (uint64_t)s->wb_linger_ns;
  wb->orph_next = s->wb_orphans;
  s->wb_orphans = wb;
}

void shard__wb_stop(shard *s)
{
  shard__poll_event ev[8];

  if (s->ops->stop == NULL)
    return;
  /* The last replies: handed over and sent by one more (non-blocking) wait. */
  if (s->wb_dirty != NULL) {
    shard__wb_submit(s);
    (void)s->ops->wait(s->poller, ev, 8, 0);
    shard__wb_complete(s);
  }
  s->ops->stop(s->poller);
  shard__wb_complete(s); /* the cancelled ones */
}

void shard__wb_rebind(shard__wb *wb, Event *e)
{
  wb->e = e;
}

void shard__wb_fini(shard *s)
{
  /* The poller is gone (its destroy waited for what was in flight): free the rest. */
  while (s->wb_orphans != NULL) {
    shard__wb *o = s->wb_orphans;

    s->wb_orphans = o->orph_next;
    wb_free(o);
  }
  s->wb_dirty = NULL;
}
