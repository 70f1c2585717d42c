/*
 * shard/msgcache.c - mailbox message nodes, recycled to the thread that allocated them.
 *
 * A message is allocated by its producer and released by the consumer shard. Through a
 * general allocator that is a remote free per message, and measured here that, not the
 * queue, was most of a message's cost (jemalloc: ~3M messages/s; recycled nodes: >15M/s;
 * perf/README.md). So each producer thread keeps its own nodes: it takes them from a
 * private free list, consumers hand them back onto the producer's `returned` stack (one
 * CAS per chain of nodes per drain, see shard__msg_release_batch), and the producer
 * detaches that stack with one exchange when its free list runs dry. Only the producer
 * pops, so there is no ABA. A free list keeps at most CACHE_MAX nodes; the rest go back to
 * the allocator.
 *
 * Caches live until ec_framework_join, when every queue has been drained; a thread that
 * exits leaves its cache to the next thread that needs one.
 */
#include "framework/atomic.h"
#include "framework/internal.h"
#include "shard/shard.h"

#include <ck_pr.h>
#include <pthread.h>

#define CACHE_MAX 4096

struct shard__msgcache {
  ck_stack_t returned CK_CC_CACHELINE; /* handed back by consumers (any thread) */
  shard__msg *free CK_CC_CACHELINE;    /* the owner thread's nodes */
  int nfree;
  int orphan;                       /* its thread exited (registry lock) */
  struct shard__msgcache *next_all; /* registry */
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shard__msgcache *all;
static unsigned generation; /* bumped when the caches are freed (registry lock) */
static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static EC__TLS_HOT struct shard__msgcache *mine;
static EC__TLS_HOT unsigned mine_gen;

static void thread_gone(void *arg)
{
  pthread_mutex_lock(&reg_lock);
  for (struct shard__msgcache *c = all; c; c = c->next_all)
    if (c == arg)
      c->orphan = 1; /* still registered: the next thread needing a cache adopts it */
  pthread_mutex_unlock(&reg_lock);
}

static void make_key(void)
{
  pthread_key_create(&key, thread_gone);
}

static struct shard__msgcache *cache_get(void)
{
  struct shard__msgcache *c;
  unsigned gen;

  pthread_mutex_lock(&reg_lock);
  gen = generation;
  if (mine != NULL && mine_gen == gen) {
    pthread_mutex_unlock(&reg_lock);
    return mine;
  }
  for (c = all; c; c = c->next_all)
    if (c->orphan)
      break;
  if (c != NULL) {
    c->orphan = 0;
  } else {
    c = aligned_alloc(CK_MD_CACHELINE, sizeof(*c));
    if (c != NULL) {
      memset(c, 0, sizeof(*c));
      c->next_all = all;
      all = c;
    }
  }
  pthread_mutex_unlock(&reg_lock);
  if (c != NULL) {
    pthread_once(&key_once, make_key);
    pthread_setspecific(key, c);
    mine = c;
    mine_gen = gen;
  }
  return c;
}

shard__msg *shard__msg_alloc(void)
{
  struct shard__msgcache *c =
      mine != NULL && mine_gen == ec__load(&generation) ? mine : cache_get();
  shard__msg *m;

  if (c != NULL && c->free == NULL && ec__load(&c->returned.head) != NULL) {
    ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&c->returned);

    ec__tsan_acquire(&c->returned); /* pairs with the release in shard__msg_release_batch */
    while (e != NULL) {
      ck_stack_entry_t *next = e->next;

      m = shard__msg_from_entry(e);
      if (c->nfree < CACHE_MAX) {
        m->entry.next = c->free ? &c->free->entry : NULL;
        c->free = m;
        c->nfree++;
      } else {
        ec_free(MEMTYPE_SHARD_MSG, m);
      }
      e = next;
    }
  }
  if (c != NULL && c->free != NULL) {
    m = c->free;
    c->free = m->entry.next ? shard__msg_from_entry(m->entry.next) : NULL;
    c->nfree--;
    return m;
  }
  m = ec_malloc(MEMTYPE_SHARD_MSG);
  if (m != NULL)
    m->origin = c;
  return m;
}

void shard__msg_release_batch(shard__msg_batch *b, shard__msg *m)
{
  struct shard__msgcache *c = m->origin;
  int i;

  if (c == NULL) {
    ec_free(MEMTYPE_SHARD_MSG, m);
    return;
  }
  for (i = 0; i < b->n && b->chains[i].origin != c; i++)
    ;
  if (i == b->n) {
    if (b->n == SHARD__MSG_BATCH_ORIGINS)
      shard__msg_release_flush(b);
    i = b->n++;
    b->chains[i].origin = c;
    b->chains[i].head = b->chains[i].tail = NULL;
  }
  m->entry.next = b->chains[i].head ? &b->chains[i].head->entry : NULL;
  b->chains[i].head = m;
  if (b->chains[i].tail == NULL)
    b->chains[i].tail = m;
}

void shard__msg_release_flush(shard__msg_batch *b)
{
  for (int i = 0; i < b->n; i++) {
    ck_stack_t *st = &b->chains[i].origin->returned;
    ck_stack_entry_t *head = &b->chains[i].head->entry;
    ck_stack_entry_t *old = ck_pr_load_ptr(&st->head);

    /* Pushes the whole chain with one CAS; only the owner detaches (by exchange), so a
     * head seen here cannot be recycled under us (no ABA). The CAS publishes the nodes
     * (pairs with the exchange in shard__msg_alloc). */
    ec__tsan_release(st);
    do
      b->chains[i].tail->entry.next = old;
    while (!ck_pr_cas_ptr_value(&st->head, old, head, &old));
  }
  b->n = 0;
}

static void free_chain(ck_stack_entry_t *e)
{
  while (e != NULL) {
    ck_stack_entry_t *next = e->next;

    ec_free(MEMTYPE_SHARD_MSG, shard__msg_from_entry(e));
    e = next;
  }
}

void shard__msgcache_free_all(void)
{
  pthread_mutex_lock(&reg_lock);
  while (all != NULL) {
    struct shard__msgcache *c = all;

    all = c->next_all;
    free_chain(c->free ? &c->free->entry : NULL);
    free_chain(ck_stack_batch_pop_upmc(&c->returned));
    free(c);
  }
  /* Pairs with the loads in shard__msg_alloc: threads still holding a cache pointer take
   * a new one on their next message. */
  ec__store(&generation, generation + 1);
  pthread_mutex_unlock(&reg_lock);
}
