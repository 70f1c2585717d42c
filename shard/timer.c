/*
 * shard/timer.c - a shard's timed Events: a hierarchical timing wheel in front of a small,
 * exact heap.
 *
 * The wheel holds timers that are not due yet, grouped by deadline. Slots of level L span
 * 2^(16 + 6L) ns (level 0: 65.5 us; 8 levels of 64 slots cover every uint64_t deadline),
 * and each slot is an unordered array of Events, so adding a timer is an append and
 * cancelling one a swap with the last entry: O(1), and at a million pending timers it
 * touches no other timer's memory (a 4-ary heap of a million entries walked ~10 levels of
 * cold entries on every removal). A timer sits at the lowest level whose slot can tell
 * its deadline apart from the wheel's time (`wt`, in 65.5 us granules), as in the Linux
 * kernel's and Varghese and Lauck's wheels; when `wt` moves past a slot, the slot's
 * timers move down a level or, once their granule is reached, into the heap. So a timer
 * moves at most once per level.
 *
 * The heap holds the timers whose granule has been reached: few, and keyed by the exact
 * (deadline, seq). Only the heap fires, so a timer never fires early and equal deadlines
 * fire in scheduling order, although the wheel rounds. The wait timeout is the heap's top
 * or the start of the wheel's first occupied slot, whichever is earlier; when that slot is
 * on level 0, it is first moved into the heap, so the timeout is exact rather than one
 * wake-up early.
 *
 * Idle timeouts that are pushed back on every request cost one store (nginx's laziness):
 * moving a timer to a later deadline only records the new deadline in the Event. Its slot
 * is then merely early, which the wheel tolerates (when the slot comes up, the timer is
 * placed again by its real deadline); in the heap, an old, earlier key is re-keyed when it
 * reaches the top. Moving a timer earlier re-places it at once, so the timeout stays right.
 */
#include "framework/atomic.h"
#include "framework/internal.h"
#include "shard/shard.h"

#include <errno.h>
#include <string.h>

#define ARITY      4
#define GRAN_SHIFT 16 /* level-0 slots: 2^16 ns */
#define LEVEL_BITS 6
#define SLOTS      (1 << LEVEL_BITS)
#define LEVELS     8 /* GRAN_SHIFT + LEVELS * LEVEL_BITS = 64 */
#define TSLOT_HEAP 0xfffe
#define TSLOT_NONE 0xffff
/* Arrays given back once empty, if larger than this many entries: a slot emptied by the
 * wheel (a cancel that empties one keeps it: add+cancel would churn the allocator), and the
 * scratch and heap arrays after a burst. */
#define SLOT_KEEP  8
#define ARRAY_KEEP 1024

typedef struct wslot {
  Event **v;
  uint32_t n, cap;
} wslot;

struct shard__wheel {
  uint64_t wt;           /* the granule (deadline >> GRAN_SHIFT) the wheel has reached */
  uint64_t mask[LEVELS]; /* occupied slots */
  long count;            /* timers in slots */
  Event **scratch;       /* timers being placed again while the wheel advances */
  uint32_t scratch_cap;
  wslot slot[LEVELS * SLOTS];
};

/* ---- the heap of due timers (4-ary, keys inline) ------------------------------------------ */

static int before(const shard__timer *a, const shard__timer *b)
{
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void place_at(shard *s, int i, shard__timer t)
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
    place_at(s, i, s->timers[parent]);
    i = parent;
  }
  place_at(s, i, t);
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
    place_at(s, i, s->timers[best]);
    i = best;
  }
  place_at(s, i, t);
}

static int heap_reserve(shard *s, long n)
{
  long cap = s->timers_cap ? s->timers_cap : 64;
  shard__timer *t;

  if (n <= s->timers_cap)
    return 0;
  while (cap < n)
    cap *= 2;
  if (cap > INT32_MAX)
    return -ENOMEM;
  t = ec_realloc(MEMTYPE_FD_TABLE, s->timers, sizeof(*t) * (size_t)cap);
  if (t == NULL)
    return -ENOMEM;
  s->timers = t;
  s->timers_cap = (int)cap;
  return 0;
}

/* The caller made room (heap_reserve). */
static void heap_push(shard *s, Event *e)
{
  s->timers[s->ntimers] =
      (shard__timer){.deadline = e->_priv.deadline_ns, .seq = e->_priv.seq, .e = e};
  e->_priv.tslot = TSLOT_HEAP;
  sift_up(s, s->ntimers++);
}

static void heap_remove(shard *s, int i)
{
  if (i == --s->ntimers)
    return;
  place_at(s, i, s->timers[s->ntimers]);
  if (i > 0 && before(&s->timers[i], &s->timers[(i - 1) / ARITY]))
    sift_up(s, i);
  else
    sift_down(s, i);
}

/* ---- the wheel ----------------------------------------------------------------------------- */

/* The slot for granule g > w->wt: the lowest level on which g and wt differ. */
static int slot_of(const struct shard__wheel *w, uint64_t g)
{
  int level = (63 - __builtin_clzll(g ^ w->wt)) / LEVEL_BITS;

  return level * SLOTS + (int)((g >> (level * LEVEL_BITS)) & (SLOTS - 1));
}

static int slot_push(struct shard__wheel *w, int id, Event *e)
{
  wslot *sl = &w->slot[id];

  if (sl->n == sl->cap) {
    uint32_t cap = sl->cap ? sl->cap * 2 : 8;
    Event **v = ec_realloc(MEMTYPE_FD_TABLE, sl->v, sizeof(*v) * cap);

    if (v == NULL)
      return -ENOMEM;
    sl->v = v;
    sl->cap = cap;
  }
  e->_priv.heap_index = (int32_t)sl->n;
  e->_priv.tslot = (uint16_t)id;
  sl->v[sl->n++] = e;
  w->mask[id / SLOTS] |= 1ull << (id % SLOTS);
  w->count++;
  return 0;
}

static void slot_remove(struct shard__wheel *w, Event *e)
{
  int id = e->_priv.tslot;
  wslot *sl = &w->slot[id];
  uint32_t i = (uint32_t)e->_priv.heap_index;

  if (i != --sl->n) {
    sl->v[i] = sl->v[sl->n];
    sl->v[i]->_priv.heap_index = (int32_t)i;
  }
  if (sl->n == 0)
    w->mask[id / SLOTS] &= ~(1ull << (id % SLOTS));
  w->count--;
}

/* Empties a slot whose timers were moved elsewhere; a large array is given back, so that a
 * burst of timers does not keep its memory (SLOT_KEEP). */
static void slot_clear(struct shard__wheel *w, int id)
{
  wslot *sl = &w->slot[id];

  w->count -= sl->n;
  sl->n = 0;
  w->mask[id / SLOTS] &= ~(1ull << (id % SLOTS));
  if (sl->cap > SLOT_KEEP) {
    ec_free(MEMTYPE_FD_TABLE, sl->v);
    sl->v = NULL;
    sl->cap = 0;
  }
}

/* The first granule of slot `id`, which lies after w->wt. */
static uint64_t slot_start(const struct shard__wheel *w, int id)
{
  int shift = (id / SLOTS) * LEVEL_BITS; /* at most 42: granules have 48 bits */
  uint64_t above = w->wt >> (shift + LEVEL_BITS) << (shift + LEVEL_BITS);

  return above | (uint64_t)(id % SLOTS) << shift;
}

/* Puts a pending timer where its deadline says: the heap once its granule is reached, the
 * wheel before. */
static int place(shard *s, Event *e)
{
  struct shard__wheel *w = s->wheel;
  uint64_t g = e->_priv.deadline_ns >> GRAN_SHIFT;
  int rc;

  if (g > w->wt)
    return slot_push(w, slot_of(w, g), e);
  rc = heap_reserve(s, (long)s->ntimers + 1);
  if (rc == 0)
    heap_push(s, e);
  return rc;
}

static struct shard__wheel *wheel_get(shard *s)
{
  if (s->wheel == NULL) {
    s->wheel = ec_malloc_size(MEMTYPE_FD_TABLE, sizeof(*s->wheel));
    if (s->wheel != NULL) {
      memset(s->wheel, 0, sizeof(*s->wheel));
      s->wheel->wt = s->now_ns >> GRAN_SHIFT;
    }
  }
  return s->wheel;
}

/*
 * Moves the wheel's time to now_ns's granule. Slots that time has reached are emptied and
 * their timers placed again relative to the new time: into the heap if due, one level
 * lower (or more) if not. Levels above the highest 6-bit group in which old and new time
 * differ are untouched: their timers still differ from the wheel's time at the same level.
 * Room in the heap for every timer moved is made first, so that placing them cannot fail:
 * if it cannot be made, the wheel stays where it is and retries at the next iteration
 * (timers may then fire late, never early, and never get lost).
 */
static void advance(shard *s, uint64_t now_ns)
{
  struct shard__wheel *w = s->wheel;
  uint64_t gn = now_ns >> GRAN_SHIFT, take[LEVELS];
  long moving = 0;
  uint32_t n = 0;
  int top;

  if (w == NULL || gn <= w->wt)
    return;
  if (w->count == 0) {
    w->wt = gn;
    return;
  }
  top = (63 - __builtin_clzll(gn ^ w->wt)) / LEVEL_BITS;
  for (int l = 0; l < LEVELS; l++) {
    take[l] = l < top ? w->mask[l] : 0;
    if (l == top) {
      int reached = (int)((gn >> (l * LEVEL_BITS)) & (SLOTS - 1));

      take[l] = w->mask[l] & (reached == SLOTS - 1 ? ~0ull : (2ull << reached) - 1);
    }
    for (uint64_t m = take[l]; m != 0; m &= m - 1)
      moving += w->slot[l * SLOTS + __builtin_ctzll(m)].n;
  }
  if (moving > (long)w->scratch_cap) {
    Event **v = ec_realloc(MEMTYPE_FD_TABLE, w->scratch, sizeof(*v) * (size_t)moving);

    if (v != NULL) {
      w->scratch = v;
      w->scratch_cap = (uint32_t)moving;
    }
  }
  if (moving > (long)w->scratch_cap || heap_reserve(s, (long)s->ntimers + moving) < 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "shard %d: timers: out of memory moving %ld timers",
                    s->id, moving);
    return;
  }
  for (int l = 0; l < LEVELS; l++) {
    for (uint64_t m = take[l]; m != 0; m &= m - 1) {
      int id = l * SLOTS + __builtin_ctzll(m);

      memcpy(w->scratch + n, w->slot[id].v, sizeof(Event *) * w->slot[id].n);
      n += w->slot[id].n;
      slot_clear(w, id);
    }
  }
  w->wt = gn;
  for (uint32_t i = 0; i < n; i++) {
    Event *e = w->scratch[i];
    uint64_t g = e->_priv.deadline_ns >> GRAN_SHIFT;

    if (g <= gn || slot_push(w, slot_of(w, g), e) < 0)
      heap_push(s, e); /* room was made above */
  }
  if (w->scratch_cap > ARRAY_KEEP) {
    ec_free(MEMTYPE_FD_TABLE, w->scratch);
    w->scratch = NULL;
    w->scratch_cap = 0;
  }
}

/* Moves the wheel's first level-0 slot into the heap if it may hold the earliest timer,
 * so that the wait timeout is exact. */
static void pull_level0(shard *s)
{
  struct shard__wheel *w = s->wheel;
  wslot *sl;
  int id;

  if (w == NULL || w->mask[0] == 0)
    return;
  id = __builtin_ctzll(w->mask[0]);
  if (s->ntimers > 0 && s->timers[0].deadline >> GRAN_SHIFT < slot_start(w, id))
    return;
  sl = &w->slot[id];
  if (heap_reserve(s, (long)s->ntimers + sl->n) < 0)
    return; /* the timeout stays the slot's start: early, not late */
  for (uint32_t i = 0; i < sl->n; i++)
    heap_push(s, sl->v[i]);
  slot_clear(w, id);
}

/* ---- the shard's interface ------------------------------------------------------------------ */

int shard__timer_add(shard *s, Event *e)
{
  struct shard__wheel *w = wheel_get(s);
  int rc;

  if (w == NULL)
    return -ENOMEM;
  if (w->count == 0 && (s->now_ns >> GRAN_SHIFT) > w->wt)
    w->wt = s->now_ns >> GRAN_SHIFT; /* an empty wheel can jump: nothing to move */
  e->_priv.seq = ++s->timer_seq;
  rc = place(s, e);
  if (rc < 0)
    e->_priv.tslot = TSLOT_NONE;
  return rc;
}

void shard__timer_remove(shard *s, Event *e)
{
  int i = e->_priv.heap_index;

  if (i < 0)
    return;
  if (e->_priv.tslot == TSLOT_HEAP) {
    if (i < s->ntimers && s->timers[i].e == e)
      heap_remove(s, i);
  } else if (e->_priv.tslot < LEVELS * SLOTS) {
    slot_remove(s->wheel, e);
  }
  e->_priv.heap_index = -1;
  e->_priv.tslot = TSLOT_NONE;
}

void shard__timer_move(shard *s, Event *e, uint64_t deadline_ns)
{
  int i = e->_priv.heap_index;
  int later = deadline_ns >= e->_priv.deadline_ns;

  /* A moved timer counts as scheduled now for the order among equal deadlines. */
  e->_priv.deadline_ns = deadline_ns;
  e->_priv.seq = ++s->timer_seq;
  if (i < 0 || later)
    return; /* not pending, or lazily: its place is merely early (file comment) */
  if (e->_priv.tslot == TSLOT_HEAP) {
    if (i >= s->ntimers || s->timers[i].e != e || deadline_ns >= s->timers[i].deadline)
      return;
    s->timers[i].deadline = deadline_ns;
    s->timers[i].seq = e->_priv.seq;
    sift_up(s, i);
    return;
  }
  if (e->_priv.tslot < LEVELS * SLOTS) {
    struct shard__wheel *w = s->wheel;
    int from = e->_priv.tslot;
    uint64_t g = deadline_ns >> GRAN_SHIFT;

    if (g > w->wt && slot_of(w, g) == from)
      return;
    slot_remove(w, e);
    if (place(s, e) < 0) {
      /* Out of memory for the heap: back where it was (the room is still there); it then
       * fires late, at the old slot, instead of being lost. */
      ec_debug_printf(DERROR, EC_LOG_SHARD, "shard %d: timers: out of memory moving a timer",
                      s->id);
      slot_push(w, from, e);
    }
  }
}

/* Removes the top entry and returns its Event. */
static Event *pop(shard *s)
{
  Event *e = s->timers[0].e;

  e->_priv.heap_index = -1;
  e->_priv.tslot = TSLOT_NONE;
  if (--s->ntimers > 0) {
    place_at(s, 0, s->timers[s->ntimers]);
    sift_down(s, 0);
  }
  return e;
}

void shard__timers_run(shard *s)
{
  int fired = 0;

  advance(s, s->now_ns);
  while (s->ntimers > 0 && s->timers[0].deadline <= s->now_ns && fired < s->timer_budget) {
    shard__timer *top = &s->timers[0];
    Event *e = top->e;

    if (e->_priv.deadline_ns > top->deadline || e->_priv.seq != top->seq) {
      /* Moved later meanwhile: re-keyed with the real deadline instead of fired, or put
       * back into the wheel if that is far off. */
      if (e->_priv.deadline_ns >> GRAN_SHIFT > s->wheel->wt) {
        pop(s);
        if (place(s, e) < 0)
          heap_push(s, e); /* the entry it just left is room enough */
        continue;
      }
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
  if (s->ntimers == 0 && s->timers_cap > ARRAY_KEEP) {
    ec_free(MEMTYPE_FD_TABLE, s->timers); /* after a burst: give the heap's memory back */
    s->timers = NULL;
    s->timers_cap = 0;
  }
  if (fired > 0) {
    /* Owner-written counters read by ec_shard_stats_get. */
    ec__store(&s->counters.timers_fired, s->counters.timers_fired + (uint64_t)fired);
  }
  ec__store(&s->counters.timers_pending,
            (uint64_t)s->ntimers + (uint64_t)(s->wheel ? s->wheel->count : 0));
}

int64_t shard__timers_next(shard *s, uint64_t now_ns)
{
  struct shard__wheel *w = s->wheel;
  uint64_t next = UINT64_MAX;

  if (w == NULL || (s->ntimers == 0 && w->count == 0))
    return -1;
  pull_level0(s);
  if (s->ntimers > 0)
    next = s->timers[0].deadline;
  for (int l = 0; l < LEVELS; l++) {
    if (w->mask[l] != 0) {
      uint64_t g = slot_start(w, l * SLOTS + __builtin_ctzll(w->mask[l]));

      if (g < (UINT64_MAX >> GRAN_SHIFT) && g << GRAN_SHIFT < next)
        next = g << GRAN_SHIFT;
      break;
    }
  }
  return next <= now_ns ? 0 : (int64_t)(next - now_ns);
}

void shard__timers_clear(shard *s)
{
  /* One pass over the heap and the slots: no sifting for timers that are all going away. */
  struct shard__wheel *w = s->wheel;
  int n = s->ntimers;

  s->ntimers = 0;
  for (int i = 0; i < n; i++) {
    Event *e = s->timers[i].e;

    e->_priv.heap_index = -1;
    e->_priv.tslot = TSLOT_NONE;
    ec__store(&e->_priv.state, SHARD__EV_IDLE);
    shard__retire(s, e);
  }
  ec_free(MEMTYPE_FD_TABLE, s->timers);
  s->timers = NULL;
  s->timers_cap = 0;
  if (w == NULL)
    return;
  for (int id = 0; id < LEVELS * SLOTS; id++) {
    wslot *sl = &w->slot[id];

    for (uint32_t i = 0; i < sl->n; i++) {
      Event *e = sl->v[i];

      e->_priv.heap_index = -1;
      e->_priv.tslot = TSLOT_NONE;
      ec__store(&e->_priv.state, SHARD__EV_IDLE);
      shard__retire(s, e);
    }
    ec_free(MEMTYPE_FD_TABLE, sl->v);
  }
  ec_free(MEMTYPE_FD_TABLE, w->scratch);
  ec_free(MEMTYPE_FD_TABLE, w);
  s->wheel = NULL;
}
