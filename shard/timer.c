/*
 * shard/timer.c - a shard's timed Events: a 4-ary min-heap with lazy moves.
 *
 * Why a heap and not a wheel: a wheel makes add and cancel O(1) but fires by slot, so it
 * either rounds deadlines (and a timer must never fire early) or needs a sorted overflow
 * per slot to keep equal deadlines in scheduling order; a heap orders (deadline, seq)
 * exactly and gives the wait its precise timeout. A 4-ary layout halves the depth of a
 * binary heap and keeps the four children of a node in adjacent entries, so a sift at 1M
 * timers touches ~10 levels instead of 20 (libuv's pointer-linked binary heap touches 20
 * scattered nodes). Keys live in the array, so sifting never dereferences an Event except
 * to update its heap_index.
 *
 * What a wheel does better, idle timeouts that are pushed back on every request, the heap
 * gets from laziness (nginx's idea): moving a timer to a later deadline only records the
 * new deadline in the Event, O(1). When the old, earlier key reaches the top, the timer is
 * re-keyed with its real deadline and sifted down once. Moving it earlier sifts up at once
 * so the wait timeout stays right.
 */
#include "framework/atomic.h"
#include "framework/internal.h"
#include "shard/shard.h"

#include <errno.h>

#define ARITY 4

static int before(const shard__timer *a, const shard__timer *b)
{
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void place(shard *s, int i, shard__timer t)
{
  s->timers[i] = t;
  t.e->_priv.heap_index = i;
}

static void sift_up(shard *s, int i)
{
  shard__timer t = s->timers[i];

  while (i > 0) {
    int parent = (i - 1) / ARITY;

    if (!before(&t, &s->timers[parent]))
      break;
    place(s, i, s->timers[parent]);
    i = parent;
  }
  place(s, i, t);
}

static void sift_down(shard *s, int i)
{
  shard__timer t = s->timers[i];

  for (;;) {
    int first = i * ARITY + 1, best = -1;

    for (int c = first; c < first + ARITY && c < s->ntimers; c++)
      if (before(&s->timers[c], best < 0 ? &t : &s->timers[best]))
        best = c;
    if (best < 0)
      break;
    place(s, i, s->timers[best]);
    i = best;
  }
  place(s, i, t);
}

int shard__timer_add(shard *s, Event *e)
{
  if (s->ntimers == s->timers_cap) {
    int cap = s->timers_cap ? s->timers_cap * 2 : 64;
    shard__timer *t = ec_realloc(MEMTYPE_FD_TABLE, s->timers, sizeof(*t) * (size_t)cap);

    if (t == NULL)
      return -ENOMEM;
    s->timers = t;
    s->timers_cap = cap;
  }
  s->timers[s->ntimers] =
      (shard__timer){.deadline = e->_priv.deadline_ns, .seq = ++s->timer_seq, .e = e};
  e->_priv.seq = s->timer_seq;
  sift_up(s, s->ntimers++);
  return 0;
}

void shard__timer_remove(shard *s, Event *e)
{
  int i = e->_priv.heap_index;

  if (i < 0 || i >= s->ntimers || s->timers[i].e != e)
    return;
  e->_priv.heap_index = -1;
  if (i == --s->ntimers)
    return;
  place(s, i, s->timers[s->ntimers]);
  if (i > 0 && before(&s->timers[i], &s->timers[(i - 1) / ARITY]))
    sift_up(s, i);
  else
    sift_down(s, i);
}

void shard__timer_move(shard *s, Event *e, uint64_t deadline_ns)
{
  int i = e->_priv.heap_index;

  /* Later: the heap keeps the earlier key until it surfaces (see the file comment), and
   * the heap entry is not even read: its key is never later than the Event's deadline. A
   * moved timer counts as scheduled now for the order among equal deadlines. */
  if (deadline_ns >= e->_priv.deadline_ns || i < 0) {
    e->_priv.deadline_ns = deadline_ns;
    e->_priv.seq = ++s->timer_seq;
    return;
  }
  e->_priv.deadline_ns = deadline_ns;
  e->_priv.seq = ++s->timer_seq;
  if (i >= s->ntimers || s->timers[i].e != e || deadline_ns >= s->timers[i].deadline)
    return;
  s->timers[i].deadline = deadline_ns;
  s->timers[i].seq = e->_priv.seq;
  sift_up(s, i);
}

/* Removes the top entry and returns its Event. */
static Event *pop(shard *s)
{
  Event *e = s->timers[0].e;

  e->_priv.heap_index = -1;
  if (--s->ntimers > 0) {
    place(s, 0, s->timers[s->ntimers]);
    sift_down(s, 0);
  }
  return e;
}

void shard__timers_run(shard *s)
{
  int fired = 0;

  while (s->ntimers > 0 && s->timers[0].deadline <= s->now_ns && fired < s->timer_budget) {
    shard__timer *top = &s->timers[0];
    Event *e = top->e;

    if (e->_priv.deadline_ns > top->deadline || e->_priv.seq != top->seq) {
      /* Moved later meanwhile: re-key with the real deadline instead of firing. */
      top->deadline = e->_priv.deadline_ns;
      top->seq = e->_priv.seq;
      sift_down(s, 0);
      continue;
    }
    pop(s);
    ec__store(&e->_priv.state, SHARD__EV_IDLE);
    fired++;
    shard__dispatch(s, e, E_TIMEOUT);
  }
  if (fired > 0) {
    /* Owner-written counters read by ec_shard_stats_get. */
    ec__store(&s->counters.timers_fired, s->counters.timers_fired + (uint64_t)fired);
  }
  ec__store(&s->counters.timers_pending, (uint64_t)s->ntimers);
}

int64_t shard__timers_next(shard *s, uint64_t now_ns)
{
  if (s->ntimers == 0)
    return -1;
  return s->timers[0].deadline <= now_ns ? 0 : (int64_t)(s->timers[0].deadline - now_ns);
}

void shard__timers_clear(shard *s)
{
  /* One pass over the array: no sifting for timers that are all going away. */
  int n = s->ntimers;

  s->ntimers = 0;
  for (int i = 0; i < n; i++) {
    Event *e = s->timers[i].e;

    e->_priv.heap_index = -1;
    ec__store(&e->_priv.state, SHARD__EV_IDLE);
    shard__retire(s, e);
  }
  ec_free(MEMTYPE_FD_TABLE, s->timers);
  s->timers = NULL;
  s->timers_cap = 0;
}
