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
  e = ec_malloc(MEMTYPE_EVENT);
  if (e == NULL)
    return NULL;
  memset(e, 0, sizeof(*e));
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

/* Routes a schedule (+ dispatch) request to the owner: directly on the owner unless
 * `always_post`, through its mailbox otherwise. */
static int route(Event *e, int dispatch_mask, int always_post, const char *fn)
{
  shard *s;

  if (!event_valid(e, fn))
    return -EINVAL;
  if (shard__count() == 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "%s(%p): the framework is not initialised", fn,
                    (void *)e);
    return -ESHUTDOWN;
  }
  s = shard__get(shard__place(e));
  /* Only the owner may look at the flags; a request posted for an Event that ends before it
   * is handled is dropped by the owner (mailbox.c). */
  if (s == shard__self() && (e->_priv.flags & SHARD__EVF_DEAD)) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "%s(%p): the Event has ended (its callback returned 0)",
                    fn, (void *)e);
    return -EINVAL;
  }
  if (s == shard__self() && !always_post) {
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
  dst->_priv.owner = owner;
  dst->_priv.heap_index = -1;
  dst->_priv.magic = SHARD__EVENT_MAGIC;
  dst->_priv.flags = src->_priv.flags & SHARD__EVF_NOTSOCK;
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
