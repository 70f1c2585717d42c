/*
 * shard/poller.h - the small interface every readiness backend implements (epoll, uring,
 * poll, kqueue). A backend only registers interest and reports (fd, generation, revents)
 * batches; it never calls user code. The shard core (shard/shard.c) dispatches.
 *
 * A backend may also carry writes (uring): the core hands it the sends of write-behind
 * Events (shard/wbuf.c), the backend issues them with its next wait, in the same system
 * call, and reports each one's outcome after that wait.
 */
#ifndef EC_SHARD_POLLER_H
#define EC_SHARD_POLLER_H

#include <stdint.h>

/* revents bits a backend reports, on top of E_READ / E_WRITE / E_EXCEPTION (event.h). */
#define SHARD__POLL_HUP 0x100 /* peer hung up (EPOLLHUP / POLLHUP / EV_EOF) */
#define SHARD__POLL_ERR 0x200 /* error pending on the descriptor */

typedef struct shard__poll_event {
  int fd;
  uint32_t gen; /* the generation passed to ctl() when the interest was registered */
  int revents;  /* E_READ | E_WRITE | E_EXCEPTION | SHARD__POLL_* */
} shard__poll_event;

/* The outcome of one send handed to a backend's send(). */
typedef struct shard__send_done {
  void *tag;    /* as passed to send() */
  int32_t res;  /* bytes sent, or -errno; fewer than `len` (or -EAGAIN) only for a fast send */
  uint32_t len; /* bytes asked for */
} shard__send_done;

typedef struct shard__poller_ops {
  const char *name;
  /* Creates a poller sized for about `size_hint` descriptors. 0 or -errno. */
  int (*create)(void **state, int size_hint);
  void (*destroy)(void *state);
  /*
   * Changes the interest of `fd` from `oldmask` to `newmask` (E_READ | E_WRITE |
   * E_EXCEPTION; 0 = not registered). `gen` is reported back with every event of this
   * registration. Called with newmask == oldmask only when gen changes. 0 or -errno.
   */
  int (*ctl)(void *state, int fd, uint32_t gen, int oldmask, int newmask);
  /*
   * Waits up to timeout_ns (-1 = forever, 0 = poll) and fills at most `max` events.
   * Each fd appears at most once per call. Returns the count, or -errno (-EINTR is
   * normal). Timeouts are rounded up, never down.
   */
  int (*wait)(void *state, shard__poll_event *out, int max, int64_t timeout_ns);
  /*
   * Optional: polls again right after a wait() or poll() that returned no events, with
   * nothing run in between (the shard's readiness poll, shard.c). Same results as wait()
   * with timeout 0; a backend whose wait stays in flight across calls can look at it
   * without a system call. NULL: wait(..., 0) is used.
   */
  int (*poll)(void *state, shard__poll_event *out, int max);

  /* ---- optional: writes carried by the backend (NULL in backends that cannot) ---- */
  /*
   * Queues a send of buf[0 .. len) on `fd`, issued by the next wait() before it blocks.
   * The buffer must stay as it is until the send is reported done. A fast send (slow == 0)
   * never waits for the socket: it is done by the time that wait() returns, possibly short
   * or -EAGAIN. A slow send waits until the socket has taken all of it (or fails), and may
   * be reported by any later wait(). 0 or -errno.
   */
  int (*send)(void *state, int fd, const void *buf, uint32_t len, void *tag, int slow);
  /* Asks for a slow send still in flight to be cancelled; it is then reported (-ECANCELED
   * unless it finished first). 0 or -errno. */
  int (*cancel)(void *state, void *tag);
  /* The sends finished since the last call: *done points at `return value` outcomes, valid
   * until the next send() or wait(). */
  int (*sent)(void *state, shard__send_done **done);
  /* The shard thread leaves its loop: cancels what is in flight and waits for it to
   * report; send() fails with -ESHUTDOWN afterwards. Other threads never touch the ring. */
  void (*stop)(void *state);
} shard__poller_ops;

extern const shard__poller_ops shard__poller_epoll;
extern const shard__poller_ops shard__poller_uring;
extern const shard__poller_ops shard__poller_poll;
extern const shard__poller_ops shard__poller_kqueue;

/* The backend named `name` ("epoll", "uring", "poll", "kqueue"), or the platform's best for
 * NULL / "auto"; NULL if that backend is not built on this platform. A backend that is built
 * may still fail its create() on a kernel without what it needs (uring: -ENOSYS). */
const shard__poller_ops *shard__poller_by_name(const char *name);

/* Shared by the epoll and uring backends (poll_epoll.c): one epoll_ctl for a change of
 * interest, and the conversion of a batch of epoll events. */
struct epoll_event;
int shard__epoll_ctl(int epfd, int fd, uint32_t gen, int oldmask, int newmask);
void shard__epoll_convert(const struct epoll_event *ev, shard__poll_event *out, int n);

#endif /* EC_SHARD_POLLER_H */
