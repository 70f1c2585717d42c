/*
 * perf/peer_queue.h - the mutex-protected payload queue of the libuv and libevent mailbox
 * peers, and their consumer's checks.
 *
 * uv_async_send and event_active carry no payload, so their users pass data beside them
 * in a queue under a mutex and drain it in the callback. Two queue shapes:
 *
 *   list    one malloc'd node per message on a linked list, the whole list taken under
 *           the lock and walked outside it (Envoy's DispatcherImpl::post, h2o's
 *           multithread queue). Same work per message as ecshard's mailbox: one
 *           allocation, one free on the consumer. The default.
 *   vector  64-bit payloads appended to an array; the consumer swaps in an empty array
 *           under the lock. No allocation per message: the best case for a peer.
 *
 * --notify always (default): the producer notifies after every push, as the issue
 * describes and as most code does; libuv coalesces internally (a pending flag), libevent
 * merges activations of an active event but takes the base lock each time.
 * --notify empty: notify only when the push made the queue non-empty (Envoy, h2o), which
 * saves most notify calls.
 */
#ifndef EC_PERF_PEER_QUEUE_H
#define EC_PERF_PEER_QUEUE_H

#include "bench_common.h"

typedef struct peer_node {
  struct peer_node *next;
  uint64_t payload;
} peer_node;

typedef struct peer_queue {
  pthread_mutex_t lock;
  int vector;
  /* list */
  peer_node *head, *tail;
  /* vector */
  uint64_t *items;
  size_t len, cap;
  /* the consumer's spare array (vector), swapped with items */
  uint64_t *spare;
  size_t spare_cap;
} peer_queue;

typedef struct peer_producer {
  _Alignas(64) uint64_t last; /* consumer: highest sequence seen */
  uint64_t received;
  uint64_t violations;
  pthread_t thread;
  unsigned id;
  int errors;
} peer_producer;

/* What a peer benchmark shares between its threads. */
typedef struct peer_mailbox {
  bench_opts o;
  int notify_empty;
  uint64_t total;
  peer_queue q;
  peer_producer *p;
  pthread_barrier_t start;
  bench_latch done;
  uint64_t received; /* consumer */
  uint64_t batches;  /* consumer: callbacks that took a batch */
  uint64_t notifies; /* producers: notify calls made (atomic) */
} peer_mailbox;

static inline int peer_queue_init(peer_queue *q, int vector)
{
  memset(q, 0, sizeof(*q));
  q->vector = vector;
  return pthread_mutex_init(&q->lock, NULL);
}

static inline void peer_queue_fini(peer_queue *q)
{
  for (peer_node *n = q->head, *next; n != NULL; n = next) {
    next = n->next;
    free(n);
  }
  free(q->items);
  free(q->spare);
  pthread_mutex_destroy(&q->lock);
}

/* Appends one payload. Returns -1 when out of memory, else 1 if the queue was empty
 * before (the transition --notify empty reacts to), 0 otherwise. */
static inline int peer_queue_push(peer_queue *q, uint64_t payload)
{
  int was_empty;

  if (!q->vector) {
    peer_node *n = malloc(sizeof(*n));

    if (n == NULL)
      return -1;
    n->next = NULL;
    n->payload = payload;
    pthread_mutex_lock(&q->lock);
    was_empty = q->head == NULL;
    if (q->tail)
      q->tail->next = n;
    else
      q->head = n;
    q->tail = n;
    pthread_mutex_unlock(&q->lock);
    return was_empty;
  }
  pthread_mutex_lock(&q->lock);
  if (q->len == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 1024;
    uint64_t *items = realloc(q->items, cap * sizeof(*items));

    if (items == NULL) {
      pthread_mutex_unlock(&q->lock);
      return -1;
    }
    q->items = items;
    q->cap = cap;
  }
  was_empty = q->len == 0;
  q->items[q->len++] = payload;
  pthread_mutex_unlock(&q->lock);
  return was_empty;
}

/* Consumer: checks one payload and counts it; opens the latch after the last one. */
static inline void peer_consume(peer_mailbox *m, uint64_t v)
{
  peer_producer *p = &m->p[v >> BENCH_SEQ_BITS];

  bench_check_seq(&p->last, v & BENCH_SEQ_MASK, &p->violations);
  p->received++;
  if (++m->received == m->total)
    bench_latch_open(&m->done);
}

/* Consumer: takes everything queued under the lock and handles it outside the lock. */
static inline void peer_drain(peer_mailbox *m)
{
  peer_queue *q = &m->q;

  m->batches++;
  if (!q->vector) {
    peer_node *n;

    pthread_mutex_lock(&q->lock);
    n = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->lock);
    while (n != NULL) {
      peer_node *next = n->next;

      peer_consume(m, n->payload);
      free(n);
      n = next;
    }
  } else {
    uint64_t *items;
    size_t len, cap;

    pthread_mutex_lock(&q->lock);
    items = q->items;
    len = q->len;
    cap = q->cap;
    q->items = q->spare;
    q->cap = q->spare_cap;
    q->len = 0;
    pthread_mutex_unlock(&q->lock);
    for (size_t i = 0; i < len; i++)
      peer_consume(m, items[i]);
    q->spare = items;
    q->spare_cap = cap;
  }
}

/* Producer loop: push M payloads, notify as configured. */
static inline void peer_produce(peer_mailbox *m, peer_producer *p, void (*notify)(void *),
                                void *notify_arg)
{
  uint64_t n = 0;

  for (uint64_t seq = 1; seq <= (uint64_t)m->o.messages; seq++) {
    int rc = peer_queue_push(&m->q, bench_pack(p->id, seq));

    if (rc < 0) {
      p->errors++;
      break;
    }
    if (rc == 1 || !m->notify_empty) {
      notify(notify_arg);
      n++;
    }
  }
  __atomic_fetch_add(&m->notifies, n, __ATOMIC_RELAXED);
}

/* Parses --notify (not a common flag) out of argv, then the common flags. */
static inline void peer_parse(int argc, char **argv, peer_mailbox *m, const char *usage)
{
  int j = 1;

  m->o = (bench_opts){.producers = 1, .messages = 200000, .shards = 1, .mode = "list"};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--notify") == 0 && i + 1 < argc) {
      if (strcmp(argv[i + 1], "empty") == 0)
        m->notify_empty = 1;
      else if (strcmp(argv[i + 1], "always") != 0)
        bench_usage(argv[0], usage);
      i++;
      continue;
    }
    argv[j++] = argv[i];
  }
  bench_parse(j, argv, &m->o, usage);
  if (strcmp(m->o.mode, "list") != 0 && strcmp(m->o.mode, "vector") != 0)
    bench_usage(argv[0], usage);
  m->total = (uint64_t)m->o.producers * (uint64_t)m->o.messages;
}

#define PEER_USAGE                                                                                 \
  "  --mode list|vector      payload queue: malloc'd list nodes (default) or an array\n"           \
  "  --notify always|empty   notify after every push (default) or on empty->non-empty\n"

/* Sets up the shared state, runs the producers and waits; the caller owns the loop thread.
 * Returns 1 if every message arrived in time. */
static inline int peer_run(peer_mailbox *m, void *(*producer_main)(void *), uint64_t *t0)
{
  int finished;

  pthread_barrier_init(&m->start, NULL, (unsigned)m->o.producers + 1);
  for (int i = 0; i < m->o.producers; i++)
    pthread_create(&m->p[i].thread, NULL, producer_main, &m->p[i]);
  pthread_barrier_wait(&m->start);
  *t0 = bench_now_ns();
  finished = bench_latch_wait(&m->done, 120);
  for (int i = 0; i < m->o.producers; i++)
    pthread_join(m->p[i].thread, NULL);
  pthread_barrier_destroy(&m->start);
  return finished;
}

/* Prints the result line (same keys as bench_mailbox) and returns the exit status. */
static inline int peer_report(peer_mailbox *m, const char *impl, int finished, uint64_t t0,
                              uint64_t write8, uint64_t cpu_ns)
{
  uint64_t violations = 0, lost = 0, dup = 0;
  int errors = 0, ok;
  double secs = finished ? (double)(m->done.at_ns - t0) / 1e9 : 0;
  char name[64];

  for (int i = 0; i < m->o.producers; i++) {
    peer_producer *p = &m->p[i];

    violations += p->violations;
    errors += p->errors;
    if (p->received < (uint64_t)m->o.messages)
      lost += (uint64_t)m->o.messages - p->received;
    else
      dup += p->received - (uint64_t)m->o.messages;
  }
  ok = finished && errors == 0 && violations == 0 && lost == 0 && dup == 0;
  snprintf(name, sizeof(name), "%s%s%s", impl, strcmp(m->o.mode, "list") ? "-vector" : "",
           m->notify_empty ? "-notify-empty" : "");
  BENCH_PRINT(m->o.json, BF_S("bench", "mailbox"), BF_S("impl", name),
              BF_U("producers", m->o.producers), BF_U("messages", m->o.messages),
              BF_U("total", m->total), BF_D("seconds", secs),
              BF_D("msgs_per_s", secs > 0 ? (double)m->total / secs : 0), BF_U("wakeups", write8),
              BF_D("wakeups_per_1000", (double)write8 * 1000.0 / (double)m->total),
              BF_U("write8", write8), BF_U("notifies", m->notifies), BF_U("callbacks", m->batches),
              BF_D("cpu_ns_per_msg", (double)cpu_ns / (double)m->total),
              BF_U("order_violations", violations), BF_U("lost", lost), BF_U("dup", dup),
              BF_U("post_errors", errors), BF_B("ok", ok));
  return ok ? 0 : 1;
}

#endif /* EC_PERF_PEER_QUEUE_H */
