/*
 * perf/peer_mailbox_uv.c - bench_mailbox's libuv equivalent.
 *
 *   peer_mailbox_uv --producers P --messages M [--mode list|vector] [--notify always|empty]
 *                   [--json]
 *
 * One thread runs a libuv loop; P producer threads push (id, seq) payloads onto a
 * mutex-protected queue and call uv_async_send, the only thread-safe libuv call (it
 * carries no payload; libuv coalesces sends while one is pending). The async callback
 * drains the queue. Same checks and output keys as bench_mailbox; `wakeups` are the
 * eventfd writes libuv made (counted by bench_common.h's write(2) wrapper; in libuv each
 * one is a pending 0 -> 1 transition, so they also equal the callbacks).
 */
#include "peer_queue.h"

#include <uv.h>

static peer_mailbox M;
static uv_loop_t loop;
static uv_async_t async;
static atomic_int stopping;

static void on_async(uv_async_t *h)
{
  if (atomic_load_explicit(&stopping, memory_order_acquire)) {
    uv_close((uv_handle_t *)h, NULL); /* the loop has nothing left and returns */
    return;
  }
  peer_drain(&M);
}

static void notify(void *arg)
{
  uv_async_send(arg);
}

static void *producer_main(void *arg)
{
  peer_producer *p = arg;

  pthread_barrier_wait(&M.start);
  peer_produce(&M, p, notify, &async);
  return NULL;
}

static void *loop_main(void *arg)
{
  (void)arg;
  uv_run(&loop, UV_RUN_DEFAULT);
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

  /* Handles are set up before the loop thread runs: libuv calls other than
   * uv_async_send belong to the loop's thread. */
  if (uv_loop_init(&loop) != 0 || uv_async_init(&loop, &async, on_async) != 0)
    return 1;
  pthread_create(&loop_thread, NULL, loop_main, NULL);

  w0 = bench_write8();
  cpu0 = bench_cpu_ns();
  finished = peer_run(&M, producer_main, &t0);
  rc = peer_report(&M, "libuv", finished, t0, bench_write8() - w0, bench_cpu_ns() - cpu0);

  /* Producers are joined, so nobody sends any more: stop the loop from its own thread. */
  atomic_store_explicit(&stopping, 1, memory_order_release);
  uv_async_send(&async);
  pthread_join(loop_thread, NULL);
  uv_loop_close(&loop);
  peer_queue_fini(&M.q);
  bench_latch_destroy(&M.done);
  free(M.p);
  return rc;
}
