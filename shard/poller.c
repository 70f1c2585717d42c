/*
 * shard/poller.c - picks a readiness backend by name (config event_loop.poller).
 */
#include "shard/poller.h"

#include <stddef.h>
#include <string.h>

const shard__poller_ops *shard__poller_by_name(const char *name)
{
  int best = name == NULL || strcmp(name, "auto") == 0;

  /* epoll before kqueue: on Linux a <sys/event.h> can only come from libkqueue, which
   * emulates kqueue on top of epoll. poll is last: it costs O(descriptors) per wait. */
  /* uring first: epoll's readiness with the wait and the iteration's writes in one system
   * call; shard__create_all falls back to epoll where the kernel cannot run it. */
#if defined(HAVE_SYS_EPOLL_H) && defined(HAVE_LIBURING)
  if (best || strcmp(name, "uring") == 0)
    return &shard__poller_uring;
#endif
#if defined(HAVE_SYS_EPOLL_H)
  if (best || strcmp(name, "epoll") == 0)
    return &shard__poller_epoll;
#endif
#if defined(HAVE_SYS_EVENT_H)
  if (best || strcmp(name, "kqueue") == 0)
    return &shard__poller_kqueue;
#endif
  if (best || strcmp(name, "poll") == 0)
    return &shard__poller_poll;
  return NULL;
}
