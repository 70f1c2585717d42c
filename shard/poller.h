/*
 * shard/poller.h - the small interface every readiness backend implements (epoll, poll,
 * kqueue). A backend only registers interest and reports (fd, generation, revents)
 * batches; it never calls user code. The shard core (shard/shard.c) dispatches.
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
} shard__poller_ops;

extern const shard__poller_ops shard__poller_epoll;
extern const shard__poller_ops shard__poller_poll;
extern const shard__poller_ops shard__poller_kqueue;

/* The backend named `name` ("epoll", "poll", "kqueue"), or the platform's best for NULL /
 * "auto"; NULL if that backend is not built on this platform. */
const shard__poller_ops *shard__poller_by_name(const char *name);

#endif /* EC_SHARD_POLLER_H */
