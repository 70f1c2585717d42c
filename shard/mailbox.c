/*
 * shard/mailbox.c - the per-shard multi-producer, single-consumer mailbox and its wakeup.
 *
 * The mailbox is a set of lanes, one per producer thread: a lane is an unbounded
 * single-producer, single-consumer queue of 32-byte messages in 4 KiB chunks. The producer
 * writes the next slot of its current chunk and publishes it with a release store of its
 * message count (`tail`); when a chunk is full it links a new one (the consumer hands the
 * last chunk it finished back through `spare`, so a steady stream allocates nothing). The
 * owner shard walks its lanes and handles what each published, in order, and moves its own
 * `head` on. So a producer never waits for the consumer or for another producer, nothing
 * is dropped, and each producer's messages keep their order (messages of different
 * producers have none between them).
 *
 * Why not one shared Concurrency Kit stack, as before (ck_stack_push_upmc, detached with
 * one exchange): every push was a CAS on the one line all producers and the owner share,
 * and the nodes went back and forth between threads. That capped the mailbox at about
 * 11-12 million messages/s however many producers posted (perf/run-mailbox.sh). A lane's
 * producer writes lines the consumer only reads, two messages per line; ck_ring's SPSC
 * ring would read the consumer's index on every enqueue and is bounded.
 *
 * A lane is made the first time a thread posts to a shard, under a lock, and pushed on the
 * shard's list (the owner reads the list head with acquire; lanes are never unlinked
 * while the shard exists). When the thread exits, its lanes become orphans and the next
 * new producer thread adopts one (with whatever it still holds, in order), so threads that
 * come and go do not add lanes without bound. ec_framework_join frees the lanes after the
 * last message was handled and starts a new generation: threads that kept a pointer to an
 * old lane take a new one on their next post.
 *
 * Wakeups are coalesced with a sleeping flag (Seastar's reactor::wakeup): the owner sets
 * `sleeping`, issues a full fence and looks at its lanes once more before it blocks; a
 * producer publishes, issues a full fence, and writes the eventfd only if it sees the flag
 * and wins the CAS that clears it. Either the owner sees the message before sleeping or
 * the producer sees the flag (the two fences order store->load on both sides), and at
 * most one write happens per sleep however many producers race.
 */
#include "framework/internal.h"
#include "shard/shard.h"

#include "framework/atomic.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(HAVE_SYS_EVENTFD_H)
#include <sys/eventfd.h>
#endif

/* ---- the wakeup descriptor ------------------------------------------------------------- */

int shard__wakefd_open(shard *s)
{
#if defined(HAVE_SYS_EVENTFD_H)
  s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->wakefd < 0)
    return -errno;
  s->wakefd_read = s->wakefd;
#else
  int p[2];

  if (pipe(p) < 0)
    return -errno;
  for (int i = 0; i < 2; i++) {
    fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
    fcntl(p[i], F_SETFD, FD_CLOEXEC);
  }
  s->wakefd_read = p[0];
  s->wakefd = p[1];
#endif
  return 0;
}

void shard__wakefd_close(shard *s)
{
  if (s->wakefd_read >= 0 && s->wakefd_read != s->wakefd)
    close(s->wakefd_read);
  if (s->wakefd >= 0)
    close(s->wakefd);
  s->wakefd = s->wakefd_read = -1;
}

void shard__wakefd_drain(shard *s)
{
  uint64_t buf[8];

  /* An eventfd is emptied by one read; a pipe may hold several bytes. */
  while (read(s->wakefd_read, buf, sizeof(buf)) > 0 && s->wakefd_read != s->wakefd)
    ;
}

void shard__wake(shard *s)
{
  uint64_t one = 1;
  ssize_t n;

  /* write(2) is async-signal-safe, which ec_framework_stop relies on. */
  n = write(s->wakefd, &one, sizeof(one));
  (void)n; /* EAGAIN: the counter is saturated, the shard will wake anyway */
}

/* ---- lanes ----------------------------------------------------------------------------- */

/* A chunk and the allocator's 16-byte header fit one 4 KiB jemalloc size class. */
#define CACHELINE   64
#define CHUNK_BYTES (4096 - CACHELINE)
#define CHUNK_SLOTS ((CHUNK_BYTES - CACHELINE) / (int)sizeof(shard__msg))

typedef struct lane_chunk {
  struct lane_chunk *next; /* the producer links the next chunk before using it (atomic) */
  char pad[CACHELINE - sizeof(void *)];
  shard__msg slot[CHUNK_SLOTS];
} lane_chunk;

struct shard__lane {
  /* The producer's side: only the thread that owns the lane (or adopts it) writes here. */
  _Alignas(CACHELINE) lane_chunk *wchunk;
  int widx;
  uint64_t wcount;
  /* Published: messages written so far (release store by the producer). */
  _Alignas(CACHELINE) uint64_t tail;
  /* The consumer's side: the owner shard (or the joining thread once the shards are gone). */
  _Alignas(CACHELINE) lane_chunk *rchunk;
  int ridx;
  uint64_t head;            /* messages handled; written by the consumer, read by stats (atomic) */
  lane_chunk *spare;        /* a chunk the consumer finished, for the producer to reuse (atomic) */
  struct shard__lane *next; /* the shard's list; set before the lane is published */
  int orphan;               /* its thread exited (registry lock) */
};

_Static_assert(sizeof(lane_chunk) <= CHUNK_BYTES, "a lane chunk fits MEMTYPE_SHARD_MSG");
_Static_assert(sizeof(shard__msg) == 32, "two messages per cache line");

/* The lanes of the calling thread, by shard index, for the generation they belong to. */
typedef struct thread_lanes {
  unsigned gen;
  int n;
  struct shard__lane **lane;
} thread_lanes;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned generation; /* bumped when the lanes are freed (registry lock) */
static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static EC__TLS_HOT thread_lanes *mine;

/* Thread exit: the thread's lanes of the current generation become orphans. */
static void thread_gone(void *arg)
{
  thread_lanes *t = arg;

  pthread_mutex_lock(&reg_lock);
  if (t->gen == generation)
    for (int i = 0; i < t->n; i++)
      if (t->lane[i] != NULL)
        t->lane[i]->orphan = 1;
  pthread_mutex_unlock(&reg_lock);
  free(t->lane);
  free(t);
  /* A destructor that runs after this one and posts takes a fresh table (and POSIX runs
   * this destructor again for it). */
  mine = NULL;
}

static void make_key(void)
{
  pthread_key_create(&key, thread_gone);
}

static lane_chunk *chunk_new(void)
{
  lane_chunk *c = ec_malloc(MEMTYPE_SHARD_MSG); /* fixed size: CHUNK_BYTES */

  if (c != NULL)
    c->next = NULL;
  return c;
}

/* The calling thread's lane table, made or grown to n shards for the current generation
 * (registry lock held). NULL on ENOMEM. */
static thread_lanes *table_fit(int n)
{
  thread_lanes *t = mine;
  struct shard__lane **arr;

  if (t != NULL && t->gen == generation && t->n >= n)
    return t;
  arr = calloc((size_t)n, sizeof(*arr));
  if (arr == NULL)
    return NULL;
  if (t == NULL) {
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
      free(arr);
      return NULL;
    }
    pthread_setspecific(key, t);
    mine = t;
  } else if (t->gen == generation) {
    memcpy(arr, t->lane, sizeof(*arr) * (size_t)t->n); /* grown: keep the lanes */
  }
  free(t->lane); /* of an older generation, the lanes themselves are gone already */
  t->lane = arr;
  t->n = n;
  t->gen = generation;
  return t;
}

/* Slow path of the calling thread's lane into s: first post from this thread (or since a
 * join), or the thread's table is too small. NULL on ENOMEM. */
static struct shard__lane *lane_get(shard *s)
{
  struct shard__lane *l = NULL;
  thread_lanes *t;

  pthread_once(&key_once, make_key);
  pthread_mutex_lock(&reg_lock);
  t = table_fit(shard__count());
  if (t == NULL)
    goto out;
  if ((l = t->lane[s->id]) != NULL)
    goto out;
  /* Adopt an orphan: its producer state is ours now (the lock orders us after the thread
   * that left it), and what it still holds is handled before what we add. */
  for (l = ec__load_acquire(&s->lanes); l != NULL; l = l->next)
    if (l->orphan)
      break;
  if (l != NULL) {
    l->orphan = 0;
  } else {
    lane_chunk *c = chunk_new();

    l = c ? aligned_alloc(CACHELINE, sizeof(*l)) : NULL;
    if (l == NULL) {
      if (c != NULL)
        ec_free(MEMTYPE_SHARD_MSG, c);
      goto out;
    }
    memset(l, 0, sizeof(*l));
    l->wchunk = l->rchunk = c;
    l->next = s->lanes;
    /* Pairs with the acquire loads of s->lanes: the owner sees the lane initialised. */
    ec__store_release(&s->lanes, l);
  }
  t->lane[s->id] = l;
out:
  pthread_mutex_unlock(&reg_lock);
  return l;
}

static inline struct shard__lane *my_lane(shard *s)
{
  thread_lanes *t = mine;

  if (t != NULL && t->gen == ec__load(&generation) && s->id < t->n && t->lane[s->id] != NULL)
    return t->lane[s->id];
  return lane_get(s);
}

int shard__post(shard *s, int kind, Event *ev, int mask, void (*fn)(void *), void *arg)
{
  struct shard__lane *l = my_lane(s);
  shard__msg *m;

  if (l == NULL)
    return -ENOMEM;
  if (l->widx == CHUNK_SLOTS) {
    /* Pairs with the exchange in chunk_done: the consumer is done with that chunk. */
    lane_chunk *c = __atomic_exchange_n(&l->spare, NULL, __ATOMIC_ACQUIRE);

    if (c != NULL)
      c->next = NULL;
    else if ((c = chunk_new()) == NULL)
      return -ENOMEM;
    /* Linked before any message in it is published (the tail store below orders it). */
    ec__store_release(&l->wchunk->next, c);
    l->wchunk = c;
    l->widx = 0;
  }
  m = &l->wchunk->slot[l->widx++];
  m->kind = kind;
  m->mask = mask;
  m->ev = ev;
  m->fn = fn;
  m->arg = arg;
  if (ev != NULL)
    ec__fetch_add(&ev->_priv.refs, 1u); /* dropped by the owner in shard__event_unref */
  /* Publishes the message (pairs with the acquire load of tail in lane_drain). */
  ec__store_release(&l->tail, ++l->wcount);
  /* Pairs with the fence in shard__prepare_sleep: our tail store is visible before we read
   * `sleeping`, and the owner's store of `sleeping` before it reads the tails. */
  ec__fence();
  if (ec__load(&s->sleeping) && ec__cas_int(&s->sleeping, 1, 0)) {
    ec__fetch_add(&s->wakeups_sent, 1);
    shard__wake(s);
  }
  return 0;
}

int shard__prepare_sleep(shard *s)
{
  ec__store(&s->sleeping, 1);
  /* Pairs with the fence in shard__post (see the file comment). */
  ec__fence();
  if (shard__mailbox_pending(s)) {
    ec__store(&s->sleeping, 0);
    return 0;
  }
  return 1;
}

void shard__end_sleep(shard *s)
{
  /* A producer may have cleared it already (and written the eventfd). */
  ec__store(&s->sleeping, 0);
}

int shard__mailbox_pending(shard *s)
{
  for (struct shard__lane *l = ec__load_acquire(&s->lanes); l != NULL; l = l->next)
    if (ec__load(&l->tail) != l->head)
      return 1;
  return 0;
}

uint64_t shard__mailbox_depth(shard *s)
{
  uint64_t n = 0;

  for (struct shard__lane *l = ec__load_acquire(&s->lanes); l != NULL; l = l->next) {
    uint64_t h = ec__load(&l->head), t = ec__load(&l->tail);

    n += t > h ? t - h : 0; /* read apart: a head that ran past the tail read counts 0 */
  }
  return n;
}

/* The consumer finished chunk c: it becomes the producer's spare (one is kept). */
static void chunk_done(struct shard__lane *l, lane_chunk *c)
{
  /* Pairs with the exchange in shard__post. */
  lane_chunk *old = __atomic_exchange_n(&l->spare, c, __ATOMIC_ACQ_REL);

  if (old != NULL)
    ec_free(MEMTYPE_SHARD_MSG, old);
}

static void handle(shard *s, const shard__msg *m)
{
  switch (m->kind) {
  case SHARD__MSG_SCHEDULE: {
    Event *e = m->ev;

    if (!(e->_priv.flags & SHARD__EVF_DEAD)) {
      int rc = shard__schedule_local(s, e);

      if (rc < 0) {
        /* The poster handed the Event over and got 0 back: nobody else will free it. */
        ec_debug_printf(DERROR, EC_LOG_SHARD,
                        "shard %d: posted schedule of Event %p (fd %d) failed: %s; freeing "
                        "the Event (its descriptor stays open)",
                        s->id, (void *)e, e->fd, strerror(-rc));
        shard__retire(s, e);
      } else if (m->mask && !(e->_priv.flags & SHARD__EVF_DEAD))
        shard__dispatch(s, e, m->mask); /* one dispatch per request, in posting order */
    }
    break; /* the caller drops the message's reference (lane_drain) */
  }
  case SHARD__MSG_RUN:
    shard__stat_fn(s, (void (*)(void))m->fn); /* named by the watchdog if it stalls */
    m->fn(m->arg);
    shard__stat_fn(s, NULL);
    break;
  }
}

/* Drops `n` references of Event e held by handled messages; frees it if it died and they
 * were the last (pairs with the increment in shard__post, like shard__event_unref). */
static void unref_n(Event *e, unsigned n)
{
  if (ec__fetch_add(&e->_priv.refs, -n) == n && (e->_priv.flags & SHARD__EVF_DEAD))
    shard__event_destroy(e);
}

/*
 * Handles up to `max` messages of one lane, in order. The references that messages for
 * the same Event hold are dropped together when the run of messages for that Event ends:
 * a thread that posts to one Event at a high rate (a worker resuming a session) would
 * otherwise have the owner take the Event's cache line back once per message.
 */
static int lane_drain(shard *s, struct shard__lane *l, int max)
{
  /* Pairs with the release store of tail in shard__post: the slots up to it are written. */
  uint64_t tail = ec__load_acquire(&l->tail);
  Event *held = NULL;
  unsigned nheld = 0;
  int n = 0;

  while (l->head != tail && n < max) {
    shard__msg m;

    if (l->ridx == CHUNK_SLOTS) {
      /* The producer linked the next chunk before it published a message in it. */
      lane_chunk *next = ec__load_acquire(&l->rchunk->next);

      chunk_done(l, l->rchunk);
      l->rchunk = next;
      l->ridx = 0;
    }
    m = l->rchunk->slot[l->ridx++];
    ec__store(&l->head, l->head + 1);
    if (m.ev != held && nheld > 0) {
      unref_n(held, nheld);
      nheld = 0;
    }
    handle(s, &m);
    if (m.kind == SHARD__MSG_SCHEDULE) {
      held = m.ev;
      nheld++;
    }
    n++;
  }
  if (nheld > 0)
    unref_n(held, nheld);
  return n;
}

int shard__mailbox_drain(shard *s, int budget)
{
  struct shard__lane *first = ec__load_acquire(&s->lanes), *start, *l;
  int n = 0;

  if (first == NULL)
    return 0;
  /* Start where the last drain stopped, so that a busy lane cannot keep the budget from
   * the others; wrap around once. */
  start = s->lane_rr != NULL ? s->lane_rr : first;
  l = start;
  do {
    n += lane_drain(s, l, budget - n);
    l = l->next != NULL ? l->next : first;
  } while (l != start && n < budget);
  s->lane_rr = l;
  s->mail_left = n >= budget; /* the next wait must not block (shard.c, wait_timeout) */
  ec__store(&s->counters.messages, s->counters.messages + (uint64_t)n);
  return n;
}

void shard__mailbox_flush(shard *s)
{
  while (shard__mailbox_pending(s))
    shard__mailbox_drain(s, 1 << 30);
}

void shard__lanes_free(shard *s)
{
  struct shard__lane *l = s->lanes;

  while (l != NULL) {
    struct shard__lane *next = l->next;

    for (lane_chunk *c = l->rchunk, *cn; c != NULL; c = cn) {
      cn = c->next;
      ec_free(MEMTYPE_SHARD_MSG, c);
    }
    if (l->spare != NULL)
      ec_free(MEMTYPE_SHARD_MSG, l->spare);
    free(l);
    l = next;
  }
  s->lanes = NULL;
  s->lane_rr = NULL;
}

void shard__lanes_new_generation(void)
{
  pthread_mutex_lock(&reg_lock);
  /* Pairs with the load in my_lane: threads holding old lane pointers take new ones. */
  ec__store(&generation, generation + 1);
  pthread_mutex_unlock(&reg_lock);
}
