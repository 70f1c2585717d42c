/*
 * event.h - the Event: a descriptor (or a deadline) plus the callback to run when it is
 * ready, scheduled on one of the framework's scheduler threads ("shards").
 *
 * Threads and ownership (docs/architecture.md): every Event has one owner shard. Only the
 * owner runs its callback, changes its scheduling state or frees it after a callback
 * returns 0. An Event built on a shard thread belongs to that shard; one built on any
 * other thread is placed when first scheduled: fd Events on shard (fd mod N), so that all
 * Events of one descriptor meet on one shard, timers round-robin; ec_event_place() picks
 * a shard explicitly. Functions documented "owner thread" act on the calling shard; from
 * any other thread they fail with EPERM and a log line.
 *
 * The callback's return value is the Event's new interest mask: returning the mask that
 * is already registered costs no system call; returning 0 ends the Event and the
 * scheduler frees it (not its descriptor) once the callback has returned. Readiness is
 * level-triggered as callbacks see it, and readiness never reaches a callback with a bit
 * its descriptor does not have (a mask passed to schedule_event_and_dispatch is delivered
 * as given: the caller asked for it).
 */
#ifndef EC_EVENT_H
#define EC_EVENT_H

#include "ec_config.h"
#include "ec_log.h"
#include "ec_malloc.h"
#include "ec_string.h"

#include <pthread.h>
#include <sys/uio.h>

/* Interest and readiness bits. */
#define E_READ      0x00000001
#define E_WRITE     0x00000002
#define E_EXCEPTION 0x00000004
#define E_TIMEOUT   0x00000008
#define E_ASYNC     0x00000010 /* internal */

/* build_fd_event's `aggressive` levels: how many times in a row one shard iteration may
 * dispatch an Event whose descriptor is still ready (1, 2, 4, 16). */
#define E_AGGRESSIVE_NONE 0
#define E_AGGRESSIVE_LOW  1
#define E_AGGRESSIVE_MED  2
#define E_AGGRESSIVE_HIGH 3

/* build_event's `whence`: `when` is an absolute time (seconds since the epoch) or an
 * offset from now. */
#define E_FROM_EPOCH 1
#define E_FROM_NOW   2

typedef struct _Event Event;

typedef int (*EventFunc)(Event *event, int eventtype, void *closure, struct timeval *now);

/*
 * The I/O operations of an Event (plain sockets when io_opset is NULL; TLS installs its
 * own). Read and write return bytes or -1 with errno and set *needmask to the interest
 * that lets the operation progress (a TLS read may need E_WRITE).
 */
typedef int (*AcceptFunc)(Event *e, struct sockaddr *addr, socklen_t *addrlen);
typedef int (*ReadFunc)(Event *e, void *buf, int len, int *needmask);
typedef int (*WriteFunc)(Event *e, const void *buf, int len, int *needmask);
typedef int (*CloseFunc)(Event *e);
typedef ssize_t (*SendFileFunc)(Event *e, int in_fd, off_t *offset, size_t count, int *needmask);
typedef void (*DupFunc)(Event *dst, Event *src);
typedef void (*ReleaseFunc)(Event *e);
/* Gathered write of `iovcnt` buffers: bytes written (partial writes happen) or -1 with errno;
 * sets *needmask like WriteFunc. */
typedef ssize_t (*WritevFunc)(Event *e, const struct iovec *iov, int iovcnt, int *needmask);

typedef struct ec_event_io_opset {
  AcceptFunc event_accept;
  ReadFunc event_read;
  WriteFunc event_write;
  CloseFunc event_close;
  SendFileFunc event_sendfile;
  /* ecshard additions, may be NULL: */
  DupFunc event_dup;         /* event_post_dup: move io_data from src to dst */
  ReleaseFunc event_release; /* event_free of an Event that still holds io_data */
  WritevFunc event_writev;   /* event_io_* gathered writes; NULL: writev(2) or event_write */
} event_io_opset;

/* Framework-private state of an Event. Do not touch; event_post_dup resets it in a copy. */
struct ec_event_priv {
  int32_t owner;              /* owning shard, -1 until placed */
  uint32_t gen;               /* fd-table generation of the current registration */
  uint16_t state;             /* idle / scheduled / floating / timer */
  uint16_t flags;             /* dispatching, dead, queued, ... */
  int regmask;                /* interest registered with the poller */
  int pending_mask;           /* dispatch requested on the owner (local run queue) */
  unsigned refs;              /* queued references (mailbox messages, run queue); atomic */
  uint32_t magic;             /* catches Events not made by build_* or memcpy'd without post_dup */
  int32_t heap_index;         /* timers: position in the due heap or wheel slot, -1 if none */
  uint16_t tslot;             /* timers: wheel slot holding it, or the due heap (timer.c) */
  uint64_t deadline_ns;       /* timers: CLOCK_MONOTONIC deadline */
  uint64_t seq;               /* timers: scheduling order, for equal deadlines */
  Event *next;                /* owner-local queues */
  struct ec_session *session; /* accepted connections: the framework's session record */
  struct shard__wb *wb;       /* write-behind output (ec_event_write_behind), or NULL */
};

struct _Event {
  struct timeval trigger;   /* timed events: absolute wall-clock deadline */
  void *io_data;            /* per-connection I/O state of io_opset (TLS session, ...) */
  event_io_opset *io_opset; /* NULL: plain descriptor I/O */
  int aggressive : 4;
  int trace : 1;
  int unused : 27;
  int mask; /* interest: E_READ | E_WRITE | E_EXCEPTION */
  int fd;   /* descriptor, -1 for a timer */
  EventFunc callback;
  void *closure;
  pthread_t scheduled_thread; /* thread of the owner shard once placed */
  struct ec_event_priv _priv;
};

/*
 * Allocates an Event for non-blocking descriptor `fd` with interest `mask`, `aggressive`
 * (E_AGGRESSIVE_*), `callback` and `closure`. Not scheduled yet: see schedule_event().
 * Any thread. Returns NULL (errno EINVAL or ENOMEM) on failure.
 */
EC_API Event *build_fd_event(int fd, int mask, int aggressive, EventFunc callback, void *closure);

/*
 * Allocates a timed Event: `callback` runs once, with eventtype E_TIMEOUT, at `when`
 * (whence E_FROM_EPOCH: an absolute wall-clock time; E_FROM_NOW: an offset from a clock
 * read made by this call). Not scheduled yet: see schedule_event(). `fd` is normally -1;
 * a timed Event never watches a descriptor. The callback must return 0 (the scheduler then
 * frees the Event); to repeat, build and schedule a new one. A timer never fires before
 * its deadline; timers with equal deadlines fire in the order they were scheduled. Any
 * thread. NULL (errno EINVAL / ENOMEM) on failure.
 */
EC_API Event *build_event(struct timeval when, int whence, int fd, EventFunc callback,
                          void *closure);
#define build_event_from_epoch(a, b, c, d) build_event((a), E_FROM_EPOCH, (b), (c), (d))
#define build_event_from_now(a, b, c, d)   build_event((a), E_FROM_NOW, (b), (c), (d))

/* A timed Event `offset` seconds from now (rounded up to the next nanosecond). */
EC_API Event *build_event_from_now_f(float offset, int fd, EventFunc callback, void *closure);

/*
 * Reads up to `len` bytes through the Event's I/O operations (read(2) semantics).
 * Returns the byte count, 0 at end of stream, or -1 with errno; EAGAIN means "return
 * *needmask from the callback". *needmask is set on every call. Owner thread (or any
 * thread for an Event that is not scheduled).
 *
 * The seed also calls event_read(event->fd, ...): with an int first argument this macro
 * reads the descriptor directly (DESIGN §3.1). Because event_read is also a function-like
 * macro, call an opset's member as (ops->event_read)(e, ...).
 */
EC_API int event_read(Event *e, void *buf, int len, int *needmask);
EC_API int ec_event_read_fd(int fd, void *buf, int len, int *needmask);
#define event_read(e, buf, len, needmask)                                                          \
  _Generic((e), int : ec_event_read_fd, default : event_read)((e), (buf), (len), (needmask))

/*
 * Writes up to `len` bytes; returns the number written (partial writes happen) or -1
 * with errno (EAGAIN: return *needmask). On a socket it never raises SIGPIPE (a gone peer is
 * EPIPE); on a pipe or file it is write(2), as is SIGPIPE then. *needmask is always set.
 */
EC_API int event_write(Event *e, const void *buf, int len, int *needmask);

/*
 * Unregisters the Event from its shard and closes its descriptor through its I/O
 * operations; e->fd becomes -1. Does not free the Event. Returns 0, or -1 with errno
 * (EPERM: called off the owner shard while scheduled; EBADF: nothing to close).
 */
EC_API int event_close(Event *e);

/*
 * Frees an Event that is neither scheduled nor being dispatched nor referenced by queued
 * messages; otherwise it refuses with a log line and errno EBUSY. Releases io_data
 * through the opset if still set. Does not close the descriptor. NULL is ignored.
 */
EC_API void event_free(Event *e);

/*
 * Completes a duplicate made with `dst = ec_malloc(MEMTYPE_EVENT); memcpy(dst, src,
 * sizeof(*src))`: dst becomes an unscheduled Event of the same owner shard, and the
 * per-connection I/O state (io_data) moves from src to dst, so freeing src later does
 * not release it.
 */
EC_API void event_post_dup(Event *dst, Event *src);

/*
 * Places an Event that has not been scheduled yet on shard `shard` (0..ec_shard_count()-1),
 * overriding the default placement. Returns 0, -EINVAL (bad shard) or -EBUSY (scheduled).
 */
EC_API int ec_event_place(Event *e, int shard);

/* Owner shard of an Event, or -1 if not placed yet. */
EC_API int ec_event_shard(const Event *e);

/*
 * Write-behind (an ecshard addition). With `on`, event_write and the event_io_* helpers on
 * this plain-socket Event no longer write at once: the shard keeps the output and sends it
 * with its next poller wait, so that on the uring poller the answers of a whole batch go
 * out in the system call that waits for the next one. A write then returns its full
 * length (EAGAIN only when 256 KiB are already waiting: return E_WRITE), a failed send
 * makes the next write fail with its errno, and E_WRITE is delivered only once the output
 * has gone. Output still waiting when the Event is closed with event_close or freed is
 * sent before the connection is closed. Before any other use of the descriptor (sendfile,
 * shutdown, installing TLS, close(2) of e->fd), call ec_event_flush. On a poller that
 * cannot carry writes (epoll, poll, kqueue) the call does nothing and writes go out at
 * once. Off switches it off once the output is out (EBUSY before). Returns 0, or -1 with
 * errno EINVAL (not an fd Event), EPERM (not the owner shard), ENOTSUP (the Event has an
 * io_opset), ENOMEM. Owner thread.
 */
EC_API int ec_event_write_behind(Event *e, int on);

/*
 * Sends the write-behind output of `e` now. 0: nothing is waiting any more; the
 * descriptor may be used directly. -1 with errno EAGAIN: the peer has not taken it all;
 * return E_WRITE, which is delivered once it has. Other errno: the send failed (EPIPE,
 * ECONNRESET, ...). 0 at once for an Event without write-behind. Owner thread.
 */
EC_API int ec_event_flush(Event *e);

/* ---- buffered I/O helpers: event_io_* ------------------------------------------------------ */

/* Results of the event_io_* functions. */
#define EVENT_IO_ERROR   (-1) /* failed; errno says why (see each function) */
#define EVENT_IO_EOF     0    /* event_io_read: end of stream before the last byte */
#define EVENT_IO_DONE    1    /* finished; state->needmask is 0 */
#define EVENT_IO_PENDING 2    /* not finished: return state->needmask from the callback */

/* Private part of an event_io_state. Do not touch. */
struct ec_event_io_priv {
  const char *str_buf; /* event_io_write_string: identity of the string being written */
  int str_len;
};

/*
 * Progress of one buffered operation on an Event (Momentum's layout, then `_priv`). Start
 * from a zeroed struct; release with event_io_state_clean. A state holds one operation at
 * a time, a write or an exact read, and keeps its buffer for the next one (up to 64 KiB).
 * One thread at a time (the Event's owner).
 *
 *   buf      MEMTYPE_BUF_STORAGE memory owned by the state, `bufsize` bytes
 *   optype   0 when idle, else the pending operation (internal values)
 *   buflen   write: end of the pending bytes in buf; read: the length being read
 *   offset   write: bytes of buf already written; read: bytes received so far
 *   needmask after EVENT_IO_PENDING, the mask to return from the callback; 0 when idle
 */
typedef struct _event_io_state {
  char *buf;
  int optype;
  int buflen;
  int bufsize;
  int offset;
  int needmask;
  struct ec_event_io_priv _priv;
} event_io_state;

/*
 * Writes all `buflen` bytes of `buf` through the Event's I/O operations. What cannot be
 * written now is copied into the state (so `buf` may be on the stack) and the call returns
 * EVENT_IO_PENDING with state->needmask set; finish with event_io_retry. Called while a
 * write is pending, it appends `buf` after the pending bytes (order kept) and tries one
 * gathered write of everything. EVENT_IO_DONE: all written (also the pending bytes).
 * EVENT_IO_ERROR: errno EPIPE, ECONNRESET, ENOMEM, ... (the pending bytes are dropped), or
 * EINVAL (bad arguments) / EBUSY (an exact read is pending), which leave the state as it
 * was. Owner thread.
 */
EC_API int event_io_write(Event *e, const char *buf, int buflen, event_io_state *state);

/*
 * Resumes the operation pending in `state`: a write (event_io_write, _write_string,
 * _printf, ec_event_io_queue) or an exact read (event_io_read; the bytes are then left in
 * state->buf[0 .. state->buflen)). EVENT_IO_DONE when nothing was pending. Same results as
 * the operation resumed. Owner thread.
 */
EC_API int event_io_retry(Event *e, event_io_state *state);

/*
 * Reads exactly `buflen` bytes. While they have not all arrived, the bytes received so far
 * are kept in the state and the call returns EVENT_IO_PENDING (state->needmask set): call
 * it again, with any buffer of the same length (the caller's pointer is never remembered).
 * EVENT_IO_DONE: all `buflen` bytes are in the `buf` of this call. EVENT_IO_EOF: the
 * stream ended first; the state->offset bytes that did arrive are in `buf`. EVENT_IO_ERROR:
 * errno (EINVAL also for a different `buflen` than the pending read's; EBUSY if a write is
 * pending in the state). Owner thread.
 */
EC_API int event_io_read(Event *e, char *buf, int buflen, event_io_state *state);

/*
 * event_io_write of the contents of a string (str->buffer, str->len bytes). Called again
 * with the same string (same buffer and length) while its write is pending, it continues
 * that write (the seed does so with the string passed by value); a different string is
 * appended, as event_io_write does. After EVENT_IO_DONE the next call starts a new write.
 * Do not change the string while its write is pending. Owner thread.
 *
 * The macro also accepts a `string` by value, as the seed's last sample passes it.
 */
EC_API int event_io_write_string(Event *e, string *str, event_io_state *state);
EC_API int ec_event_io_write_string_value(Event *e, string str, event_io_state *state);
/* clang-format off */
#define event_io_write_string(e, str, state)                                                       \
  _Generic((str), string : ec_event_io_write_string_value, default : event_io_write_string)(       \
    (e), (str), (state))
/* clang-format on */

/*
 * Formats into an 8192-byte buffer (on the stack) and writes the text with event_io_write.
 * Text longer than 8191 bytes is not written: EVENT_IO_ERROR with errno EMSGSIZE.
 * Owner thread.
 */
EC_API int event_io_printf(Event *e, event_io_state *state, const char *fmt, ...)
    EC_PRINTF_LIKE(3, 4);

/* Frees the state's buffer and zeroes it; pending data is dropped. Zeroed states are fine. */
EC_API void event_io_state_clean(event_io_state *state);

/*
 * Appends `buflen` bytes to the state's pending output without writing anything: the next
 * event_io_retry (or event_io_write) sends everything queued with one gathered write.
 * Returns EVENT_IO_PENDING with state->needmask = E_WRITE (nothing queued and buflen 0:
 * EVENT_IO_DONE), or EVENT_IO_ERROR (EINVAL, EBUSY as event_io_write; ENOMEM), the state
 * unchanged. No I/O: whichever single thread uses the state.
 */
EC_API int ec_event_io_queue(event_io_state *state, const char *buf, int buflen);

/* Bytes of output pending in the state (0 when idle or reading). */
EC_API int ec_event_io_pending(const event_io_state *state);

#endif /* EC_EVENT_H */
