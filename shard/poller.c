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
