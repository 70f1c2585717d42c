/*
 * perf/peer_mailbox_libevent.c - bench_mailbox's libevent equivalent.
 *
 *   peer_mailbox_libevent --producers P --messages M [--mode list|vector]
 *                         [--notify always|empty] [--json]
 *
 * One thread runs an event_base (threads enabled with evthread_use_pthreads); P producer
 * threads push (id, seq) payloads onto a mutex-protected queue and event_active() a
 * persistent user event (fd -1, EV_PERSIST) of that base. event_active takes the base's
 * lock, merges into an already active event, and writes the base's notify eventfd unless
 * a notification is pending. The callback drains the queue. Same checks and output keys
 * as bench_mailbox; `wakeups` are the eventfd writes (bench_common.h's write(2) wrapper).
 */
#include "peer_queue.h"

#include <event2/event.h>
#include <event2/thread.h>

static peer_mailbox M;
static struct event_base *base;
static struct event *user_ev;

static void on_active(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  (void)arg;
  peer_drain(&M);
}

static void notify(void *arg)
{
  event_active(arg, EV_READ, 0);
}

static void *producer_main(void *arg)
{
  peer_producer *p = arg;

  pthread_barrier_wait(&M.start);
  peer_produce(&M, p, notify, user_ev);
  return NULL;
}

static void *loop_main(void *arg)
{
  (void)arg;
  /* A user event that is never added keeps no loop alive: tell the loop to stay. */
  event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
  return NULL;
}

int main(int argc, char **argv)
{
  pthread_t loop_thread;
  uint64_t t0 = 0, w0, cpu0;
  int finished, rc;

  peer_parse(argc, argv, &M, PEER_USAGE);
  if (peer_queue_init(&M.q, strcmp(M.o.mode, "vector") == 0) != 0)
    return 1;
  bench_latch_init(&M.done);
  M.p = aligned_alloc(64, sizeof(peer_producer) * (size_t)M.o.producers);
  if (M.p == NULL)
    return 1;
  memset(M.p, 0, sizeof(peer_producer) * (size_t)M.o.producers);
  for (int i = 0; i < M.o.producers; i++)
    M.p[i].id = (unsigned)i;

  /* Must precede event_base_new: the base gets its lock and notify fd at creation. */
  if (evthread_use_pthreads() != 0 || (base = event_base_new()) == NULL)
    return 1;
  user_ev = event_new(base, -1, EV_PERSIST, on_active, NULL);
  if (user_ev == NULL)
    return 1;
  pthread_create(&loop_thread, NULL, loop_main, NULL);

  w0 = bench_write8();
  cpu0 = bench_cpu_ns();
  finished = peer_run(&M, producer_main, &t0);
  rc = peer_report(&M, "libevent", finished, t0, bench_write8() - w0, bench_cpu_ns() - cpu0);

  event_base_loopbreak(base); /* thread-safe: takes the base lock and notifies */
  pthread_join(loop_thread, NULL);
  event_free(user_ev);
  event_base_free(base);
  peer_queue_fini(&M.q);
  bench_latch_destroy(&M.done);
  free(M.p);
  return rc;
}
