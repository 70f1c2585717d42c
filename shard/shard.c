/*
 * shard/shard.c - shard threads, the fd-keyed Event table, dispatch and the loop.
 *
 * One iteration of a shard (docs/architecture.md has the picture):
 *   1. sample the clock once (callbacks get this `now`);
 *   2. handle up to mailbox_budget mailbox messages (schedules, dispatch requests, closures
 *      posted by other threads);
 *   3. run local dispatch requests (schedule_event_and_dispatch made on this shard) and the
 *      recurrent functions;
 *   4. wait for readiness: 0 timeout if work is already queued, otherwise sleep (the
 *      mailbox wakes us, see mailbox.c);
 *   5. dispatch the ready Events, dropping stale readiness by generation.
 * An Event whose callback returned 0 is freed right after its callback returns, unless a
 * queued message or run-queue entry still refers to it; then the last reference frees it.
 */
#include "shard/shard.h"
#include "framework/internal.h"
#include "shard/acceptor.h"

#include "framework/atomic.h"
#include <ck_pr.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static shard *shards;
static int nshards;
static int stopping; /* set by shard__stop_all (any thread, signal handlers) */
/* One eventfd that a stop request makes readable for every shard (and for
 * ec_framework_run). It is created once and never closed, so that ec_framework_stop, which
 * must be async-signal-safe and lock-free, can write to it even while another thread is
 * joining and tearing the shards down. */
static int stop_fd = -1;
static int running;       /* shard threads not yet out of shard_main (atomic) */
static int drain_forced;  /* shard__drain_force: end the drain now (atomic) */
static unsigned place_rr; /* round-robin placement of timers */
static int tsc_on;        /* shard__clock_mode, once per shard__create_all */
EC__TLS_HOT shard *shard__tls_self;
#define self shard__tls_self

int shard__count(void)
{
  return nshards;
}

shard *shard__get(int id)
{
  return id >= 0 && id < nshards ? &shards[id] : NULL;
}

static void counter_add(uint64_t *c, uint64_t n)
{
  /* Owner-written counter read by other threads (ec_shard_stats_get). */
  ec__store(c, *c + n);
}

static void update_now(shard *s)
{
  struct timespec ts;

  /* Monotonic first, wall clock second: a timer fires once now_ns reaches its deadline,
   * and its deadline was taken from the wall clock first and the monotonic clock second,
   * so the `now` its callback gets is never before its trigger time. */
  s->now_ns = shard__clock_sample(s);
  clock_gettime(CLOCK_REALTIME, &ts);
  s->now_wall_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  s->now.tv_sec = ts.tv_sec;
  s->now.tv_usec = ts.tv_nsec / 1000;
}

/* ---- the fd table ------------------------------------------------------------------------ */

static int table_reserve(shard *s, int fd)
{
  int cap = s->fd_cap ? s->fd_cap : 64;
  Event **ev;
  uint32_t *gens;

  if (fd < s->fd_cap)
    return 0;
  while (cap <= fd)
    cap *= 2;
  ev = ec_realloc(MEMTYPE_FD_TABLE, s->fd_events, sizeof(*ev) * (size_t)cap);
  if (ev == NULL)
    return -ENOMEM;
  s->fd_events = ev;
  gens = ec_realloc(MEMTYPE_FD_TABLE, s->fd_gens, sizeof(*gens) * (size_t)cap);
  if (gens == NULL)
    return -ENOMEM;
  s->fd_gens = gens;
  memset(ev + s->fd_cap, 0, sizeof(*ev) * (size_t)(cap - s->fd_cap));
  memset(gens + s->fd_cap, 0, sizeof(*gens) * (size_t)(cap - s->fd_cap));
  s->fd_cap = cap;
  return 0;
}

static void floating_remove(shard *s, Event *e)
{
  for (int i = 0; i < s->nfloating; i++) {
    if (s->floating[i] == e) {
      s->floating[i] = s->floating[--s->nfloating];
      s->floating[s->nfloating] = NULL;
      return;
    }
  }
}

static int floating_add(shard *s, Event *e)
{
  if (s->nfloating == s->floating_cap) {
    int cap = s->floating_cap ? s->floating_cap * 2 : 16;
    Event **f = ec_realloc(MEMTYPE_FD_TABLE, s->floating, sizeof(*f) * (size_t)cap);

    if (f == NULL)
      return -ENOMEM;
    s->floating = f;
    s->floating_cap = cap;
  }
  s->floating[s->nfloating++] = e;
  return 0;
}

static int set_interest(shard *s, Event *e, int mask)
{
  int rc;

  mask &= E_READ | E_WRITE | E_EXCEPTION;
  if (mask == e->_priv.regmask)
    return 0;
  rc = s->ops->ctl(s->poller, e->fd, e->_priv.gen, e->_priv.regmask, mask);
  counter_add(&s->counters.ctl, 1);
  if (rc < 0)
    return rc;
  e->_priv.regmask = mask;
  return 0;
}

int shard__unregister(shard *s, Event *e)
{
  switch (ec__load(&e->_priv.state)) {
  case SHARD__EV_SCHEDULED:
    if (e->fd >= 0 && e->fd < s->fd_cap && s->fd_events[e->fd] == e) {
      int rc = set_interest(s, e, 0);

      if (rc < 0)
        ec_debug_printf(DWARNING, EC_LOG_SHARD, "shard %d: %s ctl(fd %d, remove) failed: %s", s->id,
                        s->ops->name, e->fd, strerror(-rc));
      s->fd_events[e->fd] = NULL;
      s->fd_gens[e->fd]++; /* readiness collected for the old registration is now stale */
      counter_add(&s->counters.scheduled_fds, (uint64_t)-1);
    }
    break;
  case SHARD__EV_FLOATING:
    floating_remove(s, e);
    break;
  case SHARD__EV_TIMER:
    shard__timer_remove(s, e);
    break;
  default:
    break;
  }
  e->_priv.regmask = 0;
  ec__store(&e->_priv.state, SHARD__EV_IDLE);
  return 0;
}

static int schedule_timer(shard *s, Event *e)
{
  int rc;

  if (ec__load(&e->_priv.state) == SHARD__EV_TIMER)
    return 0; /* already pending */
  if (ec__load(&e->_priv.state) == SHARD__EV_FLOATING)
    floating_remove(s, e);
  rc = shard__timer_add(s, e);
  if (rc < 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "shard %d: schedule_event(%p): timer: %s", s->id,
                    (void *)e, strerror(-rc));
    ec__store(&e->_priv.state, SHARD__EV_IDLE);
    return rc;
  }
  ec__store(&e->_priv.state, SHARD__EV_TIMER);
  e->scheduled_thread = pthread_self();
  return 0;
}

int shard__schedule_local(shard *s, Event *e)
{
  int rc;

  if (e->_priv.flags & SHARD__EVF_TIMER)
    return schedule_timer(s, e);

  if (e->fd < 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "shard %d: schedule_event(%p): no descriptor (closed?) and not a timer", s->id,
                    (void *)e);
    return -EINVAL;
  }
  if (ec__load(&e->_priv.state) == SHARD__EV_SCHEDULED && e->fd < s->fd_cap &&
      s->fd_events[e->fd] == e)
    return set_interest(s, e, e->mask);
  if (ec__load(&e->_priv.state) == SHARD__EV_FLOATING)
    floating_remove(s, e);
  ec__store(&e->_priv.state, SHARD__EV_IDLE);
  rc = table_reserve(s, e->fd);
  if (rc < 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "shard %d: schedule_event(%p): fd %d: %s", s->id,
                    (void *)e, e->fd, strerror(-rc));
    return rc;
  }
  if (s->fd_events[e->fd] != NULL) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "shard %d: schedule_event(%p): fd %d already has scheduled Event %p", s->id,
                    (void *)e, e->fd, (void *)s->fd_events[e->fd]);
    return -EEXIST;
  }
  e->_priv.gen = ++s->fd_gens[e->fd];
  e->_priv.regmask = 0;
  rc = set_interest(s, e, e->mask);
  if (rc < 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "shard %d: %s ctl(fd %d, add) failed: %s", s->id,
                    s->ops->name, e->fd, strerror(-rc));
    s->fd_gens[e->fd]++;
    return rc;
  }
  s->fd_events[e->fd] = e;
  ec__store(&e->_priv.state, SHARD__EV_SCHEDULED);
  e->scheduled_thread = pthread_self();
  counter_add(&s->counters.scheduled_fds, 1);
  return 0;
}

void shard__float(shard *s, Event *e)
{
  if (ec__load(&e->_priv.state) == SHARD__EV_FLOATING)
    return;
  shard__unregister(s, e);
  if (floating_add(s, e) < 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "shard %d: float_event(%p): out of memory", s->id,
                    (void *)e);
    return;
  }
  ec__store(&e->_priv.state, SHARD__EV_FLOATING);
}

/* ---- Event lifetime ---------------------------------------------------------------------- */

void shard__event_destroy(Event *e)
{
  if (e->_priv.wb != NULL)
    shard__wb_detach(e); /* the scheduler frees it, not its descriptor: output still goes */
  if (e->_priv.session != NULL)
    shard__session_forget(e);
  if (e->io_data != NULL && e->io_opset != NULL && e->io_opset->event_release != NULL)
    e->io_opset->event_release(e);
  e->_priv.magic = 0;
  shard__event_release(e);
}

/* The callback returned 0 (or the framework is shutting down): unregister and free, or
 * leave freeing to the last queued reference. */
void shard__retire(shard *s, Event *e)
{
  shard__unregister(s, e);
  e->_priv.flags |= SHARD__EVF_DEAD;
  /* Pairs with the increment in shard__post: a message posted for this Event before it
   * died is counted here, and its handler frees the Event when it drops the count. */
  if (ec__load(&e->_priv.refs) == 0)
    shard__event_destroy(e);
}

void shard__event_unref(shard *s, Event *e)
{
  (void)s;
  /* Pairs with the increments in shard__post / shard__request_dispatch. */
  if (ec__fetch_add(&e->_priv.refs, (unsigned)-1) == 1 && (e->_priv.flags & SHARD__EVF_DEAD))
    shard__event_destroy(e);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/* Repeats allowed per iteration for each aggressive level. */
static const int aggressive_rounds[4] = {1, 2, 4, 16};

static int still_ready(int fd, int mask)
{
  struct pollfd p = {.fd = fd, .events = 0};
  int r = 0;

  if (mask & E_READ)
    p.events |= POLLIN;
  if (mask & E_WRITE)
    p.events |= POLLOUT;
  if (poll(&p, 1, 0) <= 0)
    return 0;
  if (p.revents & (POLLIN | POLLHUP | POLLERR))
    r |= mask & E_READ;
  if (p.revents & (POLLOUT | POLLHUP | POLLERR))
    r |= mask & E_WRITE;
  return r;
}

/* Applies a callback's return value: the Event's new interest mask, 0 = done. Returns 1
 * if the Event is still scheduled for I/O, 0 if it was retired (and may be freed). */
static int apply_result(shard *s, Event *e, int ret)
{
  int rc;

  if (ret == 0) {
    shard__retire(s, e);
    return 0;
  }
  if (e->_priv.flags & SHARD__EVF_TIMER) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "shard %d: timed Event %p returned 0x%x; timed events are one-shot and "
                    "must return 0 (build a new one to repeat); freeing it",
                    s->id, (void *)e, ret);
    shard__retire(s, e);
    return 0;
  }
  if (e->fd < 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "shard %d: callback of Event %p returned mask 0x%x after event_close; "
                    "freeing it",
                    s->id, (void *)e, ret);
    shard__retire(s, e);
    return 0;
  }
  e->mask = ret;
  if (ec__load(&e->_priv.state) == SHARD__EV_SCHEDULED)
    rc = set_interest(s, e, ret);
  else if (ec__load(&e->_priv.state) == SHARD__EV_FLOATING)
    return 0; /* float_event() in the callback: stays parked */
  else
    rc = shard__schedule_local(s, e); /* cleared during the callback: schedule again */
  if (rc < 0) {
    ec_debug_printf(DERROR, EC_LOG_SHARD,
                    "shard %d: Event %p (fd %d): cannot watch for mask 0x%x: %s; freeing it", s->id,
                    (void *)e, e->fd, ret, strerror(-rc));
    shard__retire(s, e);
    return 0;
  }
  return 1;
}

void shard__dispatch(shard *s, Event *e, int mask)
{
  int rounds = aggressive_rounds[e->aggressive & 3];

  if (e->_priv.session != NULL && !(mask & E_TIMEOUT))
    shard__session_touch(s, e->_priv.session); /* activity restarts the idle timeout */
  for (;;) {
    EventFunc cb = e->callback;
    int ret;

    e->_priv.flags |= SHARD__EVF_DISPATCHING;
    s->current = e;
    /* Operations (shard/stats.c): the watchdog names the callback of a stalled shard; the
     * clock is read only while callback timing is switched on. */
    shard__stat_fn(s, (void (*)(void))cb);
    if (__builtin_expect(ec__load(&s->timing), 0))
      ret = shard__dispatch_timed(s, e, cb, mask);
    else
      ret = cb(e, mask, e->closure, &s->now);
    shard__stat_fn(s, NULL);
    s->current = NULL;
    e->_priv.flags &= ~SHARD__EVF_DISPATCHING;
    counter_add(&s->counters.dispatched, 1);
    /* E_AGGRESSIVE_*: run again while the descriptor is still ready for what the callback
     * asks, instead of waiting for the next poller round. poll(2) confirms readiness so a
     * callback never sees a bit its descriptor does not have. */
    if (!apply_result(s, e, ret) || --rounds <= 0)
      return;
    mask = still_ready(e->fd, ret & (E_READ | E_WRITE));
    if ((mask & E_WRITE) && shard__wb_held(e))
      mask &= ~E_WRITE; /* delivered once its output has gone (shard/wbuf.c) */
    if (mask == 0)
      return;
  }
}

void shard__request_dispatch(shard *s, Event *e, int mask)
{
  e->_priv.pending_mask |= mask;
  if (e->_priv.flags & SHARD__EVF_QUEUED)
    return;
  e->_priv.flags |= SHARD__EVF_QUEUED;
  ec__fetch_add(&e->_priv.refs, 1u); /* the run queue's reference, dropped in run_local */
  e->_priv.next = NULL;
  if (s->runq_tail)
    s->runq_tail->_priv.next = e;
  else
    s->runq_head = e;
  s->runq_tail = e;
}

/* Runs the dispatch requests queued so far (not those they queue in turn). */
static void run_local(shard *s)
{
  Event *e = s->runq_head;

  s->runq_head = s->runq_tail = NULL;
  while (e != NULL) {
    Event *next = e->_priv.next;
    int mask = e->_priv.pending_mask;

    e->_priv.pending_mask = 0;
    e->_priv.flags &= ~SHARD__EVF_QUEUED;
    e->_priv.next = NULL;
    if (!(e->_priv.flags & SHARD__EVF_DEAD) && mask != 0)
      shard__dispatch(s, e, mask);
    shard__event_unref(s, e);
    e = next;
  }
}

/* Translates poller readiness into the bits the Event asked for. Hangups and errors wake
 * whatever the Event waits for, so that its read or write reports them. */
static int ready_mask(int revents, int interest)
{
  int m = revents & (E_READ | E_WRITE | E_EXCEPTION);

  /* Whatever the Event waits for, its next operation reports the hangup or error (and a
   * hangup is level-triggered: not delivering it would wake the shard again and again). */
  if (revents & (SHARD__POLL_HUP | SHARD__POLL_ERR))
    m |= E_READ | E_WRITE | E_EXCEPTION;
  return m & interest;
}

static void dispatch_ready(shard *s, int n)
{
  for (int i = 0; i < n; i++) {
    shard__poll_event *pe = &s->events[i];
    Event *e;
    int mask;

    if (pe->fd == s->wakefd_read && pe->gen == SHARD__GEN_WAKE) {
      shard__wakefd_drain(s);
      continue;
    }
    if (pe->gen == SHARD__GEN_STOP)
      continue; /* left readable on purpose: the loop sees `stopping` and exits */
    if (pe->fd < 0 || pe->fd >= s->fd_cap)
      continue;
    e = s->fd_events[pe->fd];
    /* Stale: the descriptor was unregistered (and maybe reused) earlier in this batch. */
    if (e == NULL || s->fd_gens[pe->fd] != pe->gen || e->_priv.gen != pe->gen)
      continue;
    mask = ready_mask(pe->revents, e->_priv.regmask);
    if ((mask & E_WRITE) && e->_priv.wb != NULL && shard__wb_held(e))
      mask &= ~E_WRITE; /* delivered once its output has gone (shard/wbuf.c) */
    if (mask != 0)
      shard__dispatch(s, e, mask);
  }
}

static void run_recurrent(shard *s)
{
  for (struct shard__recurrent *r = s->recurrent; r; r = r->next)
    r->fn(r->closure, &s->now);
}

/* How long the poller may block: not at all when work is queued, otherwise until the
 * earliest timer. The clock is read afresh here rather than taken from `now`, which may
 * be old after long callbacks (libuv's timers firing late after a slow iteration). */
static int64_t min_timeout(int64_t a, int64_t b)
{
  return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

static int64_t wait_timeout(shard *s)
{
  int64_t t, sess = s->nlstates > 0 ? shard__sessions_expire(s) : -1;
  uint64_t now;

  if (s->runq_head != NULL || s->mail_left)
    return 0;
  now = fw__mono_ns();
  t = min_timeout(shard__timers_next(s, now), sess);
  if (s->draining)
    t = min_timeout(t, s->drain_deadline > now ? (int64_t)(s->drain_deadline - now) : 0);
  if ((s->recurrent != NULL || s->wb_orphans != NULL) && (t < 0 || t > 1000000000))
    t = 1000000000; /* recurrent functions run (and orphans' deadlines are checked) at least
                       once a second */
  return t;
}

/*
 * Before sleeping after an iteration that handled mailbox messages: poll the mailbox for
 * up to spin_ns (event_loop.mailbox_spin_ns). A shard that is faster than the threads
 * feeding it would otherwise drain, sleep and be woken again for every few messages: an
 * eventfd write by the producer, a futex wake, and on two CPUs often a migration onto the
 * producer's CPU, which halves both. One spin per burst: a spin that finds nothing clears
 * mail_active, so an idle shard sleeps at once. Readiness is not polled meanwhile, so I/O
 * can wait up to spin_ns longer, and only right after mailbox traffic. Returns 1 if
 * messages came.
 */
#define SPIN_PAUSES 256 /* pauses between two looks at the lanes: a few microseconds */
static int spin_for_mail(shard *s, int64_t timeout)
{
  uint64_t start, limit = (uint64_t)s->spin_ns;

  if (timeout >= 0 && (uint64_t)timeout < limit)
    limit = (uint64_t)timeout; /* a timer is due sooner: the wait below is short anyway */
  counter_add(&s->counters.spins, 1);
  start = fw__mono_ns();
  for (;;) {
    /* Each look reads the lanes' tails, whose cache lines the producers write: looking
     * more often would slow them down. The clock is read every second look. */
    for (int i = 0; i < 2; i++) {
      if (shard__mailbox_pending(s)) {
        counter_add(&s->counters.spin_hits, 1);
        return 1;
      }
      for (int k = 0; k < SPIN_PAUSES; k++)
        ck_pr_stall();
    }
    if (fw__mono_ns() - start >= limit)
      break;
  }
  s->mail_active = 0;
  return 0;
}

/*
 * Before sleeping after an iteration whose wait returned readiness: poll for readiness for
 * up to the current window (event_loop.io_spin_ns). A peer in lock-step with the shard (an
 * SMTP client waiting for each reply, a load generator) answers within tens of
 * microseconds; a shard asleep by then must be woken, which the peer pays for in its send
 * (and on a virtual machine with an interprocessor interrupt), and the shard in its own
 * wakeup. A shard still polling is simply found ready. The mailbox is watched meanwhile.
 * Returns what the last poll returned: readiness count, 0, or -errno. The first poll
 * issues the write-behind sends queued by the iteration, as a wait does.
 */
static int spin_for_io(shard *s, int64_t timeout, uint64_t start)
{
  uint64_t limit = (uint64_t)s->io_spin;
  int n;

  if (timeout >= 0 && (uint64_t)timeout < limit)
    limit = (uint64_t)timeout;
  counter_add(&s->counters.io_spins, 1);
  for (int first = 1;; first = 0) {
    n = first || s->ops->poll == NULL ? s->ops->wait(s->poller, s->events, s->events_max, 0)
                                      : s->ops->poll(s->poller, s->events, s->events_max);
    if (n != 0 && n != -EINTR)
      break;
    if (shard__mailbox_pending(s) || fw__mono_ns() - start >= limit)
      break;
  }
  if (n > 0)
    counter_add(&s->counters.io_spin_hits, 1);
  return n;
}

/*
 * Adapts the poll window to how long the shard was idle before readiness came, as the
 * kernel's haltpoll governor does for an idle CPU: idle past the longest window shrinks it
 * (halved, then off), so a lightly loaded shard soon sleeps at once; readiness that came
 * after the window closed but within the longest window grows it (from a quarter of it,
 * doubling). `idle_ns` runs from the start of the poll, or of the wait when none ran.
 */
static void adapt_io_spin(shard *s, uint64_t idle_ns, int ready)
{
  if (idle_ns > (uint64_t)s->io_spin_max) {
    s->io_spin /= 2;
    if (s->io_spin < 1000)
      s->io_spin = 0;
  } else if (ready && idle_ns > (uint64_t)s->io_spin) {
    s->io_spin = s->io_spin == 0 ? s->io_spin_max / 4 : s->io_spin * 2;
    if (s->io_spin > s->io_spin_max)
      s->io_spin = s->io_spin_max;
  }
}

/* One iteration: wait, sample the clock once, then I/O, timers, mailbox, local requests
 * and recurrent functions, in that order. */
static void iterate(shard *s)
{
  int64_t timeout;
  uint64_t idle_start = 0;
  int n = 0; /* stays 0 unless a readiness poll found something (or failed) */

  timeout = wait_timeout(s);
  if (timeout != 0 && s->mail_active && s->spin_ns > 0 && spin_for_mail(s, timeout))
    timeout = 0;
  if (s->wb_dirty != NULL)
    shard__wb_submit(s); /* written this iteration: sent by the wait (or poll) itself */
  if (timeout != 0 && s->io_spin_max > 0) {
    idle_start = fw__mono_ns();
    if (s->io_active && s->io_spin > 0) {
      n = spin_for_io(s, timeout, idle_start);
      if (timeout > 0) { /* the poll used part of the time to the next deadline */
        uint64_t spent = fw__mono_ns() - idle_start;

        timeout = spent >= (uint64_t)timeout ? 0 : timeout - (int64_t)spent;
      }
    }
  }
  if (n == 0) {
    if (timeout != 0 && !shard__prepare_sleep(s))
      timeout = 0;
    if (timeout != 0)
      counter_add(&s->counters.sleeps, 1);
    n = s->ops->wait(s->poller, s->events, s->events_max, timeout);
    if (timeout != 0) {
      shard__end_sleep(s);
      if (s->io_spin_max > 0)
        adapt_io_spin(s, fw__mono_ns() - idle_start, n > 0);
    }
  }
  s->io_active = n > 0;
  if (n < 0 && n != -EINTR)
    ec_debug_printf(DERROR, EC_LOG_SHARD, "shard %d: %s wait failed: %s", s->id, s->ops->name,
                    strerror(-n));
  update_now(s);
  if (s->ops->sent != NULL)
    shard__wb_complete(s);
  if (n > 0)
    dispatch_ready(s, n);
  shard__timers_run(s);
  if (shard__mailbox_drain(s, s->mailbox_budget) > 0)
    s->mail_active = 1;
  run_local(s);
  run_recurrent(s);
  counter_add(&s->counters.iterations, 1);
}

static void *shard_main(void *arg)
{
  shard *s = arg;
  char name[32];

  self = s;
  ec__store(&s->tid, (pid_t)syscall(SYS_gettid)); /* read by the console's `threads` */
  snprintf(name, sizeof(name), "shard %d", s->id);
  fw__log_thread_name(name);
  snprintf(name, sizeof(name), "ecshard/%d", s->id);
  pthread_setname_np(pthread_self(), name);
  /* The kernel may defer a wakeup by the thread's timer slack (50 us by default) to batch
   * it with others; a shard wants its timers on time. */
  if (s->timer_slack_ns > 0)
    prctl(PR_SET_TIMERSLACK, (unsigned long)s->timer_slack_ns, 0, 0, 0);
  update_now(s);
  for (;;) {
    /* Pairs with the release store in shard__stop_all. */
    if (ec__load_acquire(&stopping)) {
      if (!s->draining) {
        /* Stop watching the stop descriptor (it stays readable) and close the listeners;
         * sessions may run on until they end or the drain deadline. */
        s->ops->ctl(s->poller, stop_fd, SHARD__GEN_STOP, E_READ, 0);
        shard__drain_begin(s);
      }
      /* Pairs with the release store in shard__drain_force. */
      if (ec__load_acquire(&drain_forced))
        s->drain_deadline = 0;
      if (shard__drain_done(s))
        break;
    }
    iterate(s);
  }
  ec__store(&s->tid, 0); /* out of the loop: the watchdog leaves it alone */
  /* Messages posted before the stop request are still handled here (join handles any
   * that arrive later). */
  update_now(s);
  shard__mailbox_flush(s);
  run_local(s);
  shard__wb_stop(s); /* the ring is this thread's: nothing may stay in flight past here */
  fw__alloc_thread_exit();
  self = NULL;
  ec__fetch_add(&running, -1); /* read by ec_framework_run's wait */
  return NULL;
}

/* ---- creation, start, stop, join ----------------------------------------------------------- */

static int shard_init(shard *s, int id, const shard__poller_ops *ops, int budget, int nevents)
{
  int rc;

  s->id = id;
  s->ops = ops;
  s->mailbox_budget = budget;
  s->events_max = nevents;
  s->events = ec_malloc_size(MEMTYPE_FD_TABLE, sizeof(*s->events) * (size_t)nevents);
  if (s->events == NULL)
    return -ENOMEM;
  rc = ops->create(&s->poller, 1024);
  if (rc < 0)
    return rc;
  rc = shard__wakefd_open(s);
  if (rc < 0)
    return rc;
  /* The wakeup and stop descriptors carry generations no Event registration reaches. */
  rc = ops->ctl(s->poller, s->wakefd_read, SHARD__GEN_WAKE, 0, E_READ);
  if (rc < 0)
    return rc;
  rc = ops->ctl(s->poller, stop_fd, SHARD__GEN_STOP, 0, E_READ);
  if (rc < 0)
    return rc;
  update_now(s);
  return 0;
}

/* Join time, the shard threads gone: handles what is still queued on every shard, as if
 * on that shard, until nothing is left anywhere (a handler may post to another shard). */
static void drain_all(void)
{
  int busy;

  do {
    busy = 0;
    for (int i = 0; i < nshards; i++) {
      shard *s = &shards[i];

      if (!shard__mailbox_pending(s) && s->runq_head == NULL)
        continue;
      busy = 1;
      self = s;
      shard__mailbox_flush(s);
      run_local(s);
    }
  } while (busy);
  self = NULL;
}

/* Join time: closes and frees everything the shard still holds. */
static void sweep(shard *s)
{
  self = s;
  shard__sessions_free(s); /* acceptors closed; sessions forgotten before their Events */
  shard__timers_clear(s);  /* pending timers are freed without firing */
  for (int fd = 0; fd < s->fd_cap; fd++) {
    Event *e = s->fd_events[fd];

    if (e != NULL) {
      shard__unregister(s, e);
      event_close(e);
      shard__retire(s, e);
    }
  }
  while (s->nfloating > 0) {
    Event *e = s->floating[0];

    shard__unregister(s, e);
    event_close(e);
    shard__retire(s, e);
  }
  self = NULL;
}

static void shard_fini(shard *s)
{
  for (struct shard__recurrent *r = s->recurrent, *next; r; r = next) {
    next = r->next;
    ec_free(MEMTYPE_GENERIC, r);
  }
  if (s->poller)
    s->ops->destroy(s->poller);
  shard__wb_fini(s); /* orphans' buffers: the poller no longer points into them */
  shard__wakefd_close(s);
  ec_free(MEMTYPE_FD_TABLE, s->fd_events);
  ec_free(MEMTYPE_FD_TABLE, s->fd_gens);
  ec_free(MEMTYPE_FD_TABLE, s->floating);
  ec_free(MEMTYPE_FD_TABLE, s->events);
}

/* Creates the stop descriptor on first use, or empties it after an earlier stop. */
static int stop_fd_reset(void)
{
  uint64_t v;

  if (stop_fd < 0) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    if (fd < 0)
      return -errno;
    ec__store(&stop_fd, fd);
  }
  while (read(stop_fd, &v, sizeof(v)) > 0)
    ;
  return 0;
}

int shard__running(void)
{
  return ec__load(&running);
}

void shard__drain_force(void)
{
  ec__store_release(&drain_forced, 1);
  for (int i = 0; i < nshards; i++)
    shard__wake(&shards[i]);
}

int shard__stop_fd(void)
{
  return ec__load(&stop_fd);
}

/* The memtype statistics' view of the shards' Event caches (event.c): cached Events are
 * counted live by the allocator and subtracted when stats are read. */
static int64_t events_cached(int id)
{
  int64_t n = 0;

  if (id != MEMTYPE_EVENT)
    return 0;
  for (int i = 0; i < nshards; i++)
    n += ec__load(&shards[i].event_cache_n); /* owner-written, relaxed */
  return n;
}

int shard__create_all(int n, const char *poller_name, int mailbox_budget, int events_per_wait,
                      int timer_budget)
{
  const shard__poller_ops *ops = shard__poller_by_name(poller_name);
  int rc;

  if (ops == NULL) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "poller '%s' is not available on this platform",
                    poller_name ? poller_name : "auto");
    return -EINVAL;
  }
  if (ops->send != NULL) {
    /* uring needs a recent kernel and io_uring allowed (sysctl io_uring_disabled,
     * container seccomp profiles): try it once, else every shard uses epoll. */
    void *probe = NULL;
    int prc = ops->create(&probe, 16);

    if (prc == 0) {
      ops->destroy(probe);
    } else {
      int asked = poller_name != NULL && strcmp(poller_name, "auto") != 0;

      ec_debug_printf(asked ? DWARNING : DINFO, EC_LOG_SHARD,
                      "poller %s is not usable here (%s); using epoll", ops->name,
                      prc == -ENOTSUP ? "under valgrind, which stops every thread while one "
                                        "waits in io_uring_enter"
                                      : strerror(-prc));
      ops = shard__poller_by_name("epoll");
      if (ops == NULL)
        return prc;
    }
  }
  /* The mailbox and the sleeping flag sit on cache lines of their own (CK_CC_CACHELINE),
   * which the memtyped allocator's 16-byte alignment would not honour. */
  shards = aligned_alloc(CK_MD_CACHELINE, sizeof(*shards) * (size_t)n);
  if (shards == NULL)
    return -ENOMEM;
  memset(shards, 0, sizeof(*shards) * (size_t)n);
  for (int i = 0; i < n; i++)
    shards[i].wakefd = shards[i].wakefd_read = -1; /* shard_fini may see unset shards */
  nshards = n;
  place_rr = 0;
  tsc_on = shard__clock_mode(ec_config_get_string("event_loop.timer_clock", "auto"));
  rc = stop_fd_reset();
  for (int i = 0; rc == 0 && i < n; i++) {
    rc = shard_init(&shards[i], i, ops, mailbox_budget, events_per_wait);
    shards[i].timer_budget = timer_budget > 0 ? timer_budget : 1;
    shards[i].timer_slack_ns = ec_config_get_int("event_loop.timer_slack_ns", 1000);
    shards[i].wb_linger_ns =
        (int64_t)(ec_config_get_double("event_loop.write_behind_linger", 30.0) * 1e9);
    shards[i].tsc_on = tsc_on;
    /* With more shards than CPUs a polling shard takes the CPU from the very threads it
     * waits for (Seastar's --overprovisioned turns its idle poll off the same way). */
    shards[i].spin_ns =
        n > fw__cpu_count() ? 0 : ec_config_get_int("event_loop.mailbox_spin_ns", 20000);
    /* Off by default: it pays only with a CPU to spare and peers close enough to answer
     * within the window (docs/architecture.md section 3.3). */
    shards[i].io_spin_max = n > fw__cpu_count() ? 0 : ec_config_get_int("event_loop.io_spin_ns", 0);
    shards[i].io_spin = shards[i].io_spin_max;
    if (rc < 0)
      ec_debug_printf(DERROR, EC_LOG_SHARD,
                      "shard %d: cannot set up its %s poller and wakeup descriptors: %s", i,
                      ops->name, strerror(-rc));
  }
  if (rc < 0) {
    shard__destroy_all();
    return rc;
  }
  fw__alloc_cached_hook(events_cached);
  ec__store(&stopping, 0);
  ec__store(&drain_forced, 0);
  return 0;
}

void shard__destroy_all(void)
{
  fw__alloc_cached_hook(NULL); /* before the shards go; the caches are freed below */
  drain_all();
  for (int i = 0; i < nshards; i++)
    sweep(&shards[i]);
  drain_all(); /* whatever closing and freeing posted */
  for (int i = 0; i < nshards; i++) {
    shard__event_cache_free(&shards[i]);
    shard__lanes_free(&shards[i]); /* every message was handled */
    shard_fini(&shards[i]);
  }
  shard__lanes_new_generation();
  free(shards);
  shards = NULL;
  nshards = 0;
}

int shard__start_all(void)
{
  sigset_t all, old;
  int rc = 0;

  /* Shards never take process signals: ec_framework_run waits for them on its own. */
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (int i = 0; i < nshards; i++) {
    rc = -pthread_create(&shards[i].thread, NULL, shard_main, &shards[i]);
    if (rc < 0) {
      ec_debug_printf(DCRITICAL, EC_LOG_SHARD, "pthread_create(shard %d) failed: %s", i,
                      strerror(-rc));
      shard__stop_all();
      for (int j = 0; j < i; j++) {
        pthread_join(shards[j].thread, NULL);
        shards[j].running = 0;
      }
      break;
    }
    shards[i].running = 1;
    ec__fetch_add(&running, 1);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

void shard__stop_all(void)
{
  uint64_t one = 1;
  int fd = ec__load(&stop_fd);

  /* Async-signal-safe: an atomic store and one write(2). The store comes first (release,
   * pairs with the shards' load of `stopping` after they wake). */
  ec__store_release(&stopping, 1);
  if (fd >= 0 && write(fd, &one, sizeof(one)) < 0)
    return; /* EAGAIN: already readable; nothing else can fail on an eventfd */
}

void shard__join_all(void)
{
  for (int i = 0; i < nshards; i++) {
    if (shards[i].running) {
      pthread_join(shards[i].thread, NULL);
      shards[i].running = 0;
    }
  }
}

int shard__place(Event *e)
{
  int id = e->_priv.owner;

  if (id >= 0 && id < nshards)
    return id;
  if (self != NULL)
    id = self->id;
  else if (e->fd >= 0)
    id = e->fd % nshards; /* every Event of one descriptor meets on one shard */
  else
    id = (int)(ec__fetch_add(&place_rr, 1u) % (unsigned)nshards);
  e->_priv.owner = id;
  return id;
}

/* ---- public scheduler.h / ec_framework.h functions that act on the calling shard --------- */

Event *clear_event_by_fd(int fd)
{
  shard *s = self;
  Event *e;

  if (s == NULL) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "clear_event_by_fd(%d) called off the shards", fd);
    errno = EPERM;
    return NULL;
  }
  if (fd < 0 || fd >= s->fd_cap || (e = s->fd_events[fd]) == NULL) {
    errno = ENOENT;
    return NULL;
  }
  shard__unregister(s, e);
  return e;
}

Event *get_event_by_fd(int fd)
{
  shard *s = self;

  if (s == NULL) {
    errno = EPERM;
    return NULL;
  }
  if (fd < 0 || fd >= s->fd_cap || s->fd_events[fd] == NULL) {
    errno = ENOENT;
    return NULL;
  }
  return s->fd_events[fd];
}

void get_fd_event_set(Event ***set, int *count)
{
  shard *s = self;

  *set = s ? s->fd_events : NULL;
  *count = s ? s->fd_cap : 0;
}

void get_floating_event_set(Event ***set, int *count)
{
  shard *s = self;

  *set = s ? s->floating : NULL;
  *count = s ? s->nfloating : 0;
}

int is_scheduler_thread(void)
{
  return self != NULL;
}

void get_now(struct timeval *toset)
{
  if (self != NULL)
    *toset = self->now;
  else
    gettimeofday(toset, NULL);
}

time_t get_now_ts(void)
{
  return self != NULL ? self->now.tv_sec : time(NULL);
}

static void add_recurrent(void *arg)
{
  struct shard__recurrent *r = arg;

  r->next = self->recurrent;
  self->recurrent = r;
}

void scheduler_recurrent_func_add(RecurFunc func, void *closure)
{
  struct shard__recurrent *r;
  shard *s = self ? self : shard__get(0);

  if (s == NULL || func == NULL) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "scheduler_recurrent_func_add: %s",
                    func ? "framework not initialised" : "NULL function");
    return;
  }
  r = ec_malloc_size(MEMTYPE_GENERIC, sizeof(*r));
  if (r == NULL) {
    ec_debug_printf(DERROR, EC_LOG_SHARD, "scheduler_recurrent_func_add: out of memory");
    return;
  }
  r->fn = func;
  r->closure = closure;
  r->next = NULL;
  if (s == self)
    add_recurrent(r);
  else if (shard__post(s, SHARD__MSG_RUN, NULL, 0, add_recurrent, r) < 0)
    ec_free(MEMTYPE_GENERIC, r);
}

/* An instance is a shard pointer, opaque outside shard/. */
ec_scheduler_inst *ec_scheduler_inst_get(int id)
{
  return (ec_scheduler_inst *)shard__get(id);
}

ec_scheduler_inst *ec_scheduler_inst_self(void)
{
  return (ec_scheduler_inst *)self;
}

int ec_scheduler_inst_index(const ec_scheduler_inst *inst)
{
  const shard *s = (const shard *)inst;

  if (s == NULL || nshards == 0 || s < shards || s >= shards + nshards)
    return -1;
  return s->id;
}

int ec_framework_stopping(void)
{
  return ec__load(&stopping);
}

int ec_shard_count(void)
{
  return nshards;
}

int ec_shard_self(void)
{
  return self ? self->id : -1;
}

int ec_shard_stats_get(int id, ec_shard_stats *out)
{
  shard *s = shard__get(id);

  if (s == NULL)
    return -EINVAL;
  out->iterations = ec__load(&s->counters.iterations);
  out->dispatched = ec__load(&s->counters.dispatched);
  out->messages = ec__load(&s->counters.messages);
  out->sleeps = ec__load(&s->counters.sleeps);
  out->spins = ec__load(&s->counters.spins);
  out->spin_hits = ec__load(&s->counters.spin_hits);
  out->io_spins = ec__load(&s->counters.io_spins);
  out->io_spin_hits = ec__load(&s->counters.io_spin_hits);
  out->syscalls_ctl = ec__load(&s->counters.ctl);
  out->scheduled_fds = ec__load(&s->counters.scheduled_fds);
  out->timers_fired = ec__load(&s->counters.timers_fired);
  out->timers_pending = ec__load(&s->counters.timers_pending);
  out->wakeups_sent = ec__load(&s->wakeups_sent);
  shard__stats_fill(s, out);
  return 0;
}

const char *ec_poller_name(void)
{
  return nshards > 0 ? shards[0].ops->name : NULL;
}
