/*
 * shard/event.c - the public Event API: building, scheduling from any thread, closing,
 * freeing and duplicating Events.
 *
 * Calls made on the owner shard act at once; calls from any other thread become mailbox
 * messages for the owner (DESIGN §2). A message holds a reference on its Event (refs), so
 * an Event that its callback ends while requests for it are still queued is freed by the
 * last of them rather than under them.
 */
#include "framework/internal.h"
#include "shard/acceptor.h"
#include "shard/shard.h"
#include "sp_async.h"

#include "framework/atomic.h"
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

static int event_valid(const Event *e, const char *fn)
{
  if (e == NULL || e->_priv.magic != SHARD__EVENT_MAGIC) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "%s(%p): not an Event built by build_fd_event/build_event (or a copy "
                    "not completed with event_post_dup)",
                    fn, (const void *)e);
    return 0;
  }
  return 1;
}

Event *build_fd_event(int fd, int mask, int aggressive, EventFunc callback, void *closure)
{
  shard *s = shard__self();
  Event *e;

  if (fd < 0 || callback == NULL || aggressive < E_AGGRESSIVE_NONE ||
      aggressive > E_AGGRESSIVE_HIGH) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "build_fd_event(fd %d, mask 0x%x, aggressive %d, callback %p): invalid "
                    "argument",
                    fd, mask, aggressive, (void *)callback);
    errno = EINVAL;
    return NULL;
  }
  e = shard__event_new();
  if (e == NULL)
    return NULL;
  e->fd = fd;
  e->mask = mask;
  e->aggressive = aggressive;
  e->callback = callback;
  e->closure = closure;
  e->_priv.owner = s ? s->id : -1;
  e->_priv.heap_index = -1;
  e->_priv.magic = SHARD__EVENT_MAGIC;
  return e;
}

static shard *owner_here(const Event *e, const char *fn);

/* ---- Event memory ------------------------------------------------------------------------- */

/*
 * Timers and short connections make and free Events at a high rate on the same shard, and
 * a trip through the allocator (header checks, per-thread counters, jemalloc) was a third
 * of a timer's add+cancel. So each shard keeps the last EVENT_CACHE Events it freed and
 * hands them out again. They stay blocks of the memtype allocator (their header is
 * intact), and the allocator still counts them live; memtype statistics subtract the
 * caches' sizes when they are read (events_cached in shard.c), so they and leak checks see
 * exactly the Events in use while the cache itself keeps no count on its hot path.
 * Sanitizer builds skip the cache so that ASan still catches a use of a freed Event.
 */
#if defined(ECSHARD_SANITIZED)
#define EVENT_CACHE 0
#else
#define EVENT_CACHE 256
#endif

static const Event zero_event;

Event *shard__event_new(void)
{
  shard *s = shard__self();
  Event *e;

  if (EVENT_CACHE > 0 && s != NULL && s->event_cache != NULL) {
    e = s->event_cache;
    s->event_cache = e->closure;
    ec__store(&s->event_cache_n, s->event_cache_n - 1); /* read by events_cached (shard.c) */
  } else if ((e = ec_malloc(MEMTYPE_EVENT)) == NULL) {
    return NULL;
  }
  *e = zero_event; /* nine vector stores; memset compiles to rep stosq, 20 ns here */
  return e;
}

void shard__event_release(Event *e)
{
  shard *s = shard__self();

  if (EVENT_CACHE > 0 && s != NULL && s->event_cache_n < EVENT_CACHE) {
    e->closure = s->event_cache;
    s->event_cache = e;
    ec__store(&s->event_cache_n, s->event_cache_n + 1); /* read by events_cached (shard.c) */
    return;
  }
  ec_free(MEMTYPE_EVENT, e);
}

void shard__event_cache_free(shard *s)
{
  while (s->event_cache != NULL) {
    Event *e = s->event_cache;

    s->event_cache = e->closure;
    ec_free(MEMTYPE_EVENT, e);
  }
  ec__store(&s->event_cache_n, 0);
}

/* ---- timed Events ------------------------------------------------------------------------- */

/*
 * Computes a timer's wall-clock trigger and monotonic deadline, `when_ns` being an offset
 * (E_FROM_NOW) or an absolute wall-clock time (E_FROM_EPOCH), from one pair of clock reads:
 * the wall clock first, the monotonic clock second. The deadline is monotonic so that clock
 * steps do not move timers; reading in this order (and the shard's reverse order, see
 * update_now in shard.c) guarantees that when the timer fires, both the monotonic and the
 * wall clock have passed it, so it is never early by either. All in nanoseconds: the
 * timeval round trips cost more than the clock read on a shard.
 */
static int timer_deadline(int64_t when_ns, int whence, struct timeval *trigger, uint64_t *deadline)
{
  uint64_t mono;
  int64_t wall_ns, offset, trig_ns;
  shard *s = shard__self();

  if (whence != E_FROM_NOW && whence != E_FROM_EPOCH)
    return -EINVAL;
  if (s != NULL) {
    /* On a shard one clock read is enough (shard/clock.c): the wall clock is extrapolated
     * from the pair the iteration sampled (monotonic first, then wall), less a microsecond
     * so that it cannot run ahead of the real wall clock by the gap between those reads. */
    mono = shard__clock_now(s);
    wall_ns = s->now_wall_ns + (int64_t)(mono - s->now_ns) - 1000;
  } else {
    struct timespec wall;

    clock_gettime(CLOCK_REALTIME, &wall);
    mono = fw__mono_ns();
    wall_ns = (int64_t)wall.tv_sec * 1000000000 + wall.tv_nsec;
  }
  if (whence == E_FROM_NOW) {
    offset = when_ns > 0 ? when_ns : 0;
    trig_ns = wall_ns - wall_ns % 1000 + offset - offset % 1000; /* whole us, not later */
  } else {
    offset = when_ns - wall_ns;
    if (offset < 0)
      offset = 0; /* already past: fire at the next iteration */
    trig_ns = when_ns;
  }
  trigger->tv_sec = trig_ns / 1000000000;
  trigger->tv_usec = (trig_ns % 1000000000) / 1000;
  *deadline = mono + (uint64_t)offset;
  return 0;
}

static int64_t tv_ns(struct timeval tv)
{
  return (int64_t)tv.tv_sec * 1000000000 + (int64_t)tv.tv_usec * 1000;
}

static Event *new_timer(struct timeval trigger, uint64_t deadline, int fd, EventFunc cb,
                        void *closure)
{
  shard *s = shard__self();
  Event *e = shard__event_new();

  if (e == NULL)
    return NULL;
  e->trigger = trigger;
  e->fd = fd;
  e->callback = cb;
  e->closure = closure;
  e->_priv.owner = s ? s->id : -1;
  e->_priv.heap_index = -1;
  e->_priv.deadline_ns = deadline;
  e->_priv.flags = SHARD__EVF_TIMER;
  e->_priv.magic = SHARD__EVENT_MAGIC;
  return e;
}

Event *build_event(struct timeval when, int whence, int fd, EventFunc callback, void *closure)
{
  struct timeval trigger;
  uint64_t deadline;

  if (callback == NULL || timer_deadline(tv_ns(when), whence, &trigger, &deadline) < 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "build_event(whence %d, callback %p): invalid argument (whence must be "
                    "E_FROM_NOW or E_FROM_EPOCH)",
                    whence, (void *)callback);
    errno = EINVAL;
    return NULL;
  }
  return new_timer(trigger, deadline, fd, callback, closure);
}

Event *build_event_from_now_f(float offset, int fd, EventFunc callback, void *closure)
{
  double ns = (double)offset * 1e9;
  struct timeval trigger;
  uint64_t deadline;
  int64_t whole = 0;

  if (callback == NULL || offset != offset) { /* NaN */
    ec_debug_printf(DERROR, EC_LOG_SHARD, "build_event_from_now_f(%f, callback %p): invalid",
                    (double)offset, (void *)callback);
    errno = EINVAL;
    return NULL;
  }
  if (ns > 0) {
    if (ns > 9.2e18)
      ns = 9.2e18;
    whole = (int64_t)ns;
    if ((double)whole < ns)
      whole++; /* rounded up: never early */
  }
  timer_deadline(whole, E_FROM_NOW, &trigger, &deadline);
  return new_timer(trigger, deadline, fd, callback, closure);
}

int clear_timed_event(Event *e)
{
  shard *s = shard__self();

  if (!event_valid(e, "clear_timed_event"))
    return 0;
  if (!(e->_priv.flags & SHARD__EVF_TIMER)) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "clear_timed_event(%p): not a timed Event (fd %d)",
                    (void *)e, e->fd);
    errno = EINVAL;
    return 0;
  }
  if (e->_priv.owner < 0)
    return 0; /* never scheduled: the caller owns it */
  if (s == NULL || s->id != e->_priv.owner) {
    owner_here(e, "clear_timed_event");
    errno = EPERM;
    return 0;
  }
  if (e->_priv.flags & (SHARD__EVF_DISPATCHING | SHARD__EVF_DEAD))
    return 1; /* firing now, or already cancelled: the scheduler frees it */
  if (ec__load(&e->_priv.state) == SHARD__EV_TIMER) {
    shard__retire(s, e); /* unregisters (leaves the heap) and frees */
    return 1;
  }
  if (ec__load(&e->_priv.refs) != 0) {
    /* A schedule request for it is still queued: its handler drops it and frees it. */
    e->_priv.flags |= SHARD__EVF_DEAD;
    return 1;
  }
  return 0;
}

int ec_timed_event_move(Event *e, struct timeval when, int whence)
{
  struct timeval trigger;
  uint64_t deadline;
  shard *s = shard__self();

  if (!event_valid(e, "ec_timed_event_move") || !(e->_priv.flags & SHARD__EVF_TIMER) ||
      timer_deadline(tv_ns(when), whence, &trigger, &deadline) < 0)
    return -EINVAL;
  if (ec__load(&e->_priv.state) == SHARD__EV_TIMER) {
    if (s == NULL || s->id != e->_priv.owner) {
      owner_here(e, "ec_timed_event_move");
      return -EPERM;
    }
    e->trigger = trigger;
    shard__timer_move(s, e, deadline);
    return 0;
  }
  if (ec__load(&e->_priv.refs) != 0)
    return -EBUSY; /* a schedule request is on its way to the owner */
  e->trigger = trigger;
  e->_priv.deadline_ns = deadline;
  return 0;
}

/* Routes a schedule (+ dispatch) request to the owner: directly on the owner unless
 * `always_post`, through its mailbox otherwise. */
static int route(Event *e, int dispatch_mask, int always_post, const char *fn)
{
  shard *self = shard__self(), *s;

  if (!event_valid(e, fn))
    return -EINVAL;
  if (self != NULL && e->_priv.owner == self->id) {
    s = self; /* the usual case, an Event of the calling shard: already placed */
  } else {
    if (shard__count() == 0) {
      ec_debug_printf(DERROR, EC_LOG_SHARD, "%s(%p): the framework is not initialised", fn,
                      (void *)e);
      return -ESHUTDOWN;
    }
    s = shard__get(shard__place(e));
  }
  /* Only the owner may look at the flags; a request posted for an Event that ends before it
   * is handled is dropped by the owner (mailbox.c). */
  if (s == self && (e->_priv.flags & SHARD__EVF_DEAD)) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "%s(%p): the Event has ended (its callback returned 0)",
                    fn, (void *)e);
    return -EINVAL;
  }
  if (s == self && !always_post) {
    int rc = shard__schedule_local(s, e);

    if (rc == 0 && dispatch_mask != 0)
      shard__request_dispatch(s, e, dispatch_mask);
    return rc;
  }
  return shard__post(s, SHARD__MSG_SCHEDULE, e, dispatch_mask, NULL, NULL);
}

int ec_schedule_event(Event *e)
{
  return route(e, 0, 0, "schedule_event");
}

void schedule_event(Event *e)
{
  (void)route(e, 0, 0, "schedule_event");
}

int ec_schedule_event_and_dispatch(Event *e, int dispatch_mask)
{
  return route(e, dispatch_mask, 0, "schedule_event_and_dispatch");
}

void schedule_event_and_dispatch(Event *e, int dispatch_mask)
{
  (void)route(e, dispatch_mask, 0, "schedule_event_and_dispatch");
}

int ec_sp_async_schedule_event(Event *e, int dispatch_mask)
{
  return route(e, dispatch_mask, 1, "sp_async_schedule_event");
}

void sp_async_schedule_event(Event *e, int dispatch_mask)
{
  (void)route(e, dispatch_mask, 1, "sp_async_schedule_event");
}

/* The owner shard, if the calling thread is it; NULL (and a log line) otherwise. */
static shard *owner_here(const Event *e, const char *fn)
{
  shard *s = shard__self();

  if (s == NULL || s->id != e->_priv.owner) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "%s(%p, fd %d): must be called on the Event's shard %d (caller: %s %d)", fn,
                    (const void *)e, e->fd, e->_priv.owner, s ? "shard" : "thread", s ? s->id : -1);
    return NULL;
  }
  return s;
}

void float_event(Event *e)
{
  shard *s;

  if (!event_valid(e, "float_event") || (s = owner_here(e, "float_event")) == NULL)
    return;
  shard__float(s, e);
}

int event_close(Event *e)
{
  int rc;

  if (e == NULL) {
    errno = EINVAL;
    return -1;
  }
  if (ec__load(&e->_priv.state) != SHARD__EV_IDLE) {
    shard *s = owner_here(e, "event_close");

    if (s == NULL) {
      errno = EPERM;
      return -1;
    }
    shard__unregister(s, e);
  }
  if (e->fd < 0) {
    errno = EBADF;
    return -1;
  }
  if (e->_priv.session != NULL)
    shard__session_end(e->_priv.session); /* the connection ends here, for limits and drain */
  if (e->_priv.wb != NULL)
    shard__wb_detach(e); /* output still waiting goes out before the FIN */
  if (e->io_opset != NULL && e->io_opset->event_close != NULL) {
    rc = e->io_opset->event_close(e);
  } else {
    rc = close(e->fd);
    if (rc < 0 && errno == EINTR)
      rc = 0; /* Linux has released the descriptor; retrying could close a reused one */
  }
  e->fd = -1;
  return rc < 0 ? -1 : 0;
}

void event_free(Event *e)
{
  const char *why = NULL;

  if (e == NULL)
    return;
  if (!event_valid(e, "event_free")) {
    errno = EINVAL;
    return;
  }
  if (e->_priv.flags & SHARD__EVF_DISPATCHING)
    why = "it is being dispatched (return 0 from its callback instead)";
  else if (e->_priv.flags & SHARD__EVF_DEAD)
    why = "its callback returned 0, so the scheduler frees it";
  else if (ec__load(&e->_priv.refs) != 0)
    why = "requests for it are still queued on its shard";
  else if (ec__load(&e->_priv.state) == SHARD__EV_FLOATING && owner_here(e, "event_free") != NULL)
    shard__unregister(shard__self(), e);
  else if (ec__load(&e->_priv.state) != SHARD__EV_IDLE)
    why = "it is still scheduled (clear it first)";
  if (why != NULL) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "event_free(%p, fd %d) refused: %s", (void *)e, e->fd,
                    why);
    errno = EBUSY;
    return;
  }
  shard__event_destroy(e);
}

void event_post_dup(Event *dst, Event *src)
{
  int32_t owner;

  if (dst == NULL || src == NULL || dst == src) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "event_post_dup(%p, %p): invalid arguments", (void *)dst,
                    (void *)src);
    return;
  }
  owner = src->_priv.owner;
  memset(&dst->_priv, 0, sizeof(dst->_priv));
  /* The session (accepted connections) follows the duplicate, which will serve it. */
  dst->_priv.session = src->_priv.session;
  src->_priv.session = NULL;
  if (dst->_priv.session != NULL)
    dst->_priv.session->ev = dst;
  dst->_priv.owner = owner;
  dst->_priv.heap_index = -1;
  dst->_priv.magic = SHARD__EVENT_MAGIC;
  dst->_priv.flags = src->_priv.flags & SHARD__EVF_NOTSOCK;
  /* So does write-behind output: it belongs to the connection. */
  dst->_priv.wb = src->_priv.wb;
  src->_priv.wb = NULL;
  if (dst->_priv.wb != NULL)
    shard__wb_rebind(dst->_priv.wb, dst);
  /* The per-connection I/O state moves to the duplicate: the original is about to be
   * freed by its scheduler and must not release it. */
  if (src->io_opset != NULL && src->io_opset->event_dup != NULL) {
    src->io_opset->event_dup(dst, src);
  } else {
    dst->io_data = src->io_data;
    src->io_data = NULL;
  }
}

int ec_event_place(Event *e, int id)
{
  if (!event_valid(e, "ec_event_place"))
    return -EINVAL;
  if (shard__get(id) == NULL)
    return -EINVAL;
  if (ec__load(&e->_priv.state) != SHARD__EV_IDLE || ec__load(&e->_priv.refs) != 0)
    return -EBUSY;
  e->_priv.owner = id;
  return 0;
}

int ec_event_shard(const Event *e)
{
  return e ? e->_priv.owner : -1;
}

/* ---- closures on shards ------------------------------------------------------------------- */

int ec_shard_run(int id, void (*fn)(void *arg), void *arg)
{
  shard *s = shard__get(id);

  if (fn == NULL)
    return -EINVAL;
  if (shard__count() == 0)
    return -ESHUTDOWN;
  if (s == NULL)
    return -EINVAL;
  return shard__post(s, SHARD__MSG_RUN, NULL, 0, fn, arg);
}

struct call {
  void (*fn)(void *);
  void *arg;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int done;
};

static void call_trampoline(void *arg)
{
  struct call *c = arg;

  c->fn(c->arg);
  pthread_mutex_lock(&c->lock);
  c->done = 1;
  pthread_cond_signal(&c->cond);
  pthread_mutex_unlock(&c->lock);
}

int ec_shard_call(int id, void (*fn)(void *arg), void *arg)
{
  shard *s = shard__get(id);
  shard *me = shard__self();
  struct call c = {.fn = fn, .arg = arg, .done = 0};
  int rc;

  if (fn == NULL || (s == NULL && shard__count() > 0))
    return -EINVAL;
  if (s == NULL || !fw__shards_running())
    return -ESHUTDOWN;
  if (me == s) {
    fn(arg);
    return 0;
  }
  if (me != NULL)
    return -EDEADLK;
  pthread_mutex_init(&c.lock, NULL);
  pthread_cond_init(&c.cond, NULL);
  rc = shard__post(s, SHARD__MSG_RUN, NULL, 0, call_trampoline, &c);
  if (rc == 0) {
    pthread_mutex_lock(&c.lock);
    while (!c.done)
      pthread_cond_wait(&c.cond, &c.lock);
    pthread_mutex_unlock(&c.lock);
  }
  pthread_cond_destroy(&c.cond);
  pthread_mutex_destroy(&c.lock);
  return rc;
}
