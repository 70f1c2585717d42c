/*
 * shard/shard.h - the reactor's internals (prefix shard__). Not installed.
 *
 * A shard is one scheduler thread with its own poller, fd-keyed Event table, mailbox and
 * clock. Everything in `struct shard` except the fields marked "any thread" is touched
 * only by the shard's own thread (or by the joining thread after the shard has exited).
 */
#ifndef EC_SHARD_SHARD_H
#define EC_SHARD_SHARD_H

#include "ec_config.h"
#include "ec_framework.h"
#include "ec_stats.h"
#include "event.h"
#include "framework/internal.h"
#include "scheduler.h"
#include "shard/poller.h"

#include <ck_cc.h>
#include <pthread.h>
#include <sys/types.h>

/* Event._priv.state */
#define SHARD__EV_IDLE      0 /* not on any shard's books */
#define SHARD__EV_SCHEDULED 1 /* in the owner's fd table (fd Events) */
#define SHARD__EV_FLOATING  2 /* in the owner's floating set */
#define SHARD__EV_TIMER     3 /* in the owner's timer structure */

/* Event._priv.flags */
#define SHARD__EVF_DISPATCHING 0x01 /* its callback is running */
#define SHARD__EVF_DEAD        0x02 /* callback returned 0: free once refs drop to 0 */
#define SHARD__EVF_QUEUED      0x04 /* on the owner's local run queue */
#define SHARD__EVF_NOTSOCK     0x08 /* send(2) said ENOTSOCK: use write(2) */
#define SHARD__EVF_TIMER       0x10 /* built by build_event: a timed event */

#define SHARD__EVENT_MAGIC 0xec5e7e47u

/* Registration generations reserved for the shard's own descriptors. */
#define SHARD__GEN_WAKE UINT32_MAX
#define SHARD__GEN_STOP (UINT32_MAX - 1)

/* Mailbox message kinds. */
enum shard__msg_kind {
  SHARD__MSG_SCHEDULE, /* schedule ev (and dispatch it with mask if non-zero) */
  SHARD__MSG_RUN,      /* call fn(arg) */
};

/* A mailbox message, as it sits in its lane (32 bytes, two to a cache line). */
typedef struct shard__msg {
  Event *ev;
  void (*fn)(void *arg);
  void *arg;
  int32_t kind;
  int32_t mask;
} shard__msg;

struct shard__lane;  /* shard/mailbox.c: one producer thread's queue into one shard */
struct shard__wheel; /* shard/timer.c */

struct shard__recurrent {
  RecurFunc fn;
  void *closure;
  struct shard__recurrent *next;
};

/* Callback duration histogram buckets: < 1 us, < 2 us, ... < 2^(N-2) us, and the rest. */
#define SHARD__HIST EC_SHARD_HIST_BUCKETS

/* Counters: written by their owner with relaxed stores, read by anyone. */
struct shard__counters {
  uint64_t iterations;
  uint64_t dispatched;
  uint64_t messages;
  uint64_t sleeps;
  uint64_t spins;        /* mailbox polls before a sleep (spin_for_mail) */
  uint64_t spin_hits;    /* ... that found messages, so the shard did not sleep */
  uint64_t io_spins;     /* readiness polls before a sleep (spin_for_io) */
  uint64_t io_spin_hits; /* ... that found I/O, so the shard did not sleep */
  uint64_t ctl;
  uint64_t scheduled_fds;
  uint64_t timers_fired;
  uint64_t timers_pending;
  /* Operations counters (shard/stats.c, docs/operations.md); owner-written like the rest. */
  uint64_t bytes_in, bytes_out;  /* event_read / event_write results (framework/event_io.c) */
  uint64_t slow_callbacks;       /* timed callbacks over the stall threshold */
  uint64_t cb_count, cb_ns;      /* timed callbacks and their total time */
  uint64_t cb_hist[SHARD__HIST]; /* timed callbacks by duration: bucket i < 2^i us */
};

/* One timer in a shard's heap of due timers: the ordering key is kept inline so that
 * sifting touches only the heap array, not the Events. */
typedef struct shard__timer {
  uint64_t deadline; /* CLOCK_MONOTONIC ns; may be earlier than the Event's (lazy move) */
  uint64_t seq;      /* scheduling order, breaks ties */
  Event *e;
} shard__timer;

typedef struct shard {
  /* ---- any thread: the mailbox and its wakeup (own cache lines) ---- */
  struct shard__lane *lanes CK_CC_CACHELINE; /* newest first; added under a lock, never removed
                                                while the shard exists (mailbox.c) */
  int sleeping CK_CC_CACHELINE; /* 1 while the shard is (about to be) blocked in wait */
  uint64_t wakeups_sent;        /* eventfd writes by producers (atomic add) */
  int wakefd;                   /* eventfd (or pipe write end) */
  int wakefd_read;              /* the end the shard reads */

  /* ---- owner thread ---- */
  int id CK_CC_CACHELINE;
  pthread_t thread;
  int running;
  const shard__poller_ops *ops;
  void *poller;
  shard__poll_event *events; /* wait() output buffer */
  int events_max;

  Event **fd_events; /* fd-indexed table (get_fd_event_set) */
  uint32_t *fd_gens; /* generation of each slot: bumped on every (un)registration */
  int fd_cap;

  Event **floating;
  int nfloating, floating_cap;

  struct shard__lane *lane_rr;  /* where the next drain starts (fairness) */
  Event *runq_head, *runq_tail; /* local dispatch requests */
  Event *current;               /* Event being dispatched */

  struct timeval now;  /* wall clock, once per iteration */
  uint64_t now_ns;     /* CLOCK_MONOTONIC, same instant */
  int64_t now_wall_ns; /* `now` in nanoseconds (not truncated to the microsecond) */
  /* The timers' clock (shard/clock.c): CLOCK_MONOTONIC extrapolated with the TSC. */
  int tsc_on;                   /* TSC invariant and allowed (event_loop.timer_clock) */
  uint64_t tsc_base, tsc_mono;  /* a TSC read and the monotonic read right after it */
  uint64_t tsc_mult, tsc_limit; /* ns per tick (32.32, errs high; 0: not measured yet),
                                   ticks after which the kernel clock is read instead */
  uint64_t cal_tsc, cal_mono;   /* start of the current rate measurement */
  uint64_t cal_gap;             /* ticks its monotonic read took */

  struct shard__recurrent *recurrent;
  int mailbox_budget;

  /* Sessions and acceptors (shard/acceptor.c). */
  struct shard__lstate *lstates; /* per listener: session lists by phase */
  int nlstates;
  struct shard__acceptor **acceptors;
  int nacceptors, acceptors_cap;
  int64_t nsessions; /* owner-written, read by single-mode hand-off (atomic) */
  int draining;
  uint64_t drain_deadline;
  unsigned handoff_rr;

  /* Write-behind (shard/wbuf.c). */
  struct shard__wb *wb_dirty;   /* output written this iteration, for the next wait */
  struct shard__wb *wb_orphans; /* output of Events that are gone, still being sent */
  int64_t wb_linger_ns;         /* event_loop.write_behind_linger */

  Event *event_cache; /* freed Events kept for reuse, linked through `closure` (event.c) */
  int event_cache_n;

  struct shard__wheel *wheel; /* timers not due yet (shard/timer.c) */
  shard__timer *timers;       /* the due ones: a 4-ary min-heap */
  int ntimers, timers_cap;
  uint64_t timer_seq;
  int timer_budget;         /* max_timed_events_per_iter */
  long long timer_slack_ns; /* event_loop.timer_slack_ns: PR_SET_TIMERSLACK of the thread */
  long long spin_ns;        /* event_loop.mailbox_spin_ns: poll the mailbox before sleeping */
  int mail_active;          /* the last iteration handled mailbox messages */
  int64_t io_spin_max;      /* event_loop.io_spin_ns: longest readiness poll before sleeping */
  int64_t io_spin;          /* the current poll window, adapted between 0 and io_spin_max */
  int io_active;            /* the last iteration's wait returned readiness */
  int mail_left;            /* the last drain used its whole budget: messages may wait */
  struct shard__counters counters;

  /* Operations (shard/stats.c): written by the owner, read by the watchdog and stats
   * readers with relaxed loads; `timing` is set by any thread (relaxed). */
  void (*stat_fn)(void); /* callback (or mailbox closure) running now, NULL between them */
  int timing;            /* time every callback (watchdog.callback_timing) */
  pid_t tid;             /* the shard thread's kernel id while it runs its loop, else 0 */
  uint64_t slow_logged_ns, slow_quiet; /* owner: rate limit of slow-callback lines */
  /* ---- watchdog thread (shard/stats.c); rarely written ---- */
  uint64_t wd_stalls;
  int wd_stalled;
} shard;

/* ---- shard/shard.c ---------------------------------------------------------------------- */

/* Creates and destroys all shards (not started). 0 or -errno. */
int shard__create_all(int n, const char *poller_name, int mailbox_budget, int events_per_wait,
                      int timer_budget);
void shard__destroy_all(void);

/* Starts the threads and returns once they all run; asks them to stop; joins them. */
int shard__start_all(void);
void shard__stop_all(void); /* async-signal-safe */
int shard__stop_fd(void);
int shard__running(void); /* shard threads still in their loop */
void shard__drain_force(void);
/* ends a graceful drain now (ec_framework_run) */ /* readable once a stop was requested; -1
                                                      before the first init */
void shard__join_all(void);

int shard__count(void);
shard *shard__get(int id);
/* The calling thread's shard, or NULL. Inline: it is on every path that checks ownership. */
extern EC__TLS_HOT shard *shard__tls_self;
static inline shard *shard__self(void)
{
  return shard__tls_self;
}

/* Owner-side operations (called on the owning shard). */
int shard__schedule_local(shard *s, Event *e);
int shard__unregister(shard *s, Event *e);                  /* remove from table/floating/poller */
void shard__request_dispatch(shard *s, Event *e, int mask); /* after the running callback */
void shard__dispatch(shard *s, Event *e, int mask);         /* now (not from a callback) */
void shard__retire(shard *s, Event *e); /* unregister; free now or when the last ref goes */
void shard__float(shard *s, Event *e);

/* Picks the owner of an Event that has none yet (placement policy). */
int shard__place(Event *e);

/* ---- shard/stats.c ---------------------------------------------------------------------- */

/* Publishes the function about to run (NULL after it), for the watchdog. Owner thread. */
static inline void shard__stat_fn(shard *s, void (*fn)(void))
{
  /* Relaxed: read by the watchdog only as a hint naming a stalled callback. */
  __atomic_store_n(&s->stat_fn, fn, __ATOMIC_RELAXED);
}

/* Runs a callback and times it (s->timing): histogram, total and the stall report. */
int shard__dispatch_timed(shard *s, Event *e, EventFunc cb, int mask);

/* Adds the operations counters of `s` to `out` (ec_shard_stats_get). Any thread. */
void shard__stats_fill(shard *s, ec_shard_stats *out);

/* Reads the watchdog section (init and reload) and applies it to every shard. */
void shard__ops_configure(void);

/* The watchdog thread (started and stopped with the shards). 0 or -errno. */
int shard__watchdog_start(void);
void shard__watchdog_stop(void);

/* Describes a function for a log line: its symbol, or FILE+0xOFFSET for addr2line. */
void shard__fn_name(void (*fn)(void), char *buf, size_t len);

/* ---- shard/wbuf.c: write-behind (owner thread) ---------------------------------------- */

typedef struct shard__wb shard__wb;

/* event_write / gathered writes of a write-behind Event: queued. Bytes taken or -1. */
ssize_t shard__wb_writev(Event *e, const struct iovec *iov, int cnt, int *needmask);
/* Before the wait: hands the iteration's output to the poller. */
void shard__wb_submit(shard *s);
/* After the wait: takes the sends' outcomes, delivers held-back E_WRITE. */
void shard__wb_complete(shard *s);
/* 1 if E_WRITE readiness must be held back from `e` now (output in flight). */
int shard__wb_held(Event *e);
/* The Event is closing or going away: its output is finished by an orphan. */
void shard__wb_detach(Event *e);
/* The shard thread leaves its loop: last output out, the rest cancelled (poller stop). */
void shard__wb_stop(shard *s);
/* event_post_dup: the output now belongs to `e`. */
void shard__wb_rebind(shard__wb *wb, Event *e);
/* Shard teardown, after the poller: frees orphans. */
void shard__wb_fini(shard *s);

/* ---- shard/clock.c ---------------------------------------------------------------------- */

/* 1 if timers may extrapolate CLOCK_MONOTONIC with the TSC, given event_loop.timer_clock
 * ("auto", "tsc" or "kernel") and the CPU. */
int shard__clock_mode(const char *setting);
/* The iteration's CLOCK_MONOTONIC sample; also the TSC base and its rate measurement. */
uint64_t shard__clock_sample(shard *s);
/* CLOCK_MONOTONIC now or a little later, never earlier: for timer deadlines (owner). */
uint64_t shard__clock_now(shard *s);

/* ---- shard/timer.c ---------------------------------------------------------------------- */

/* Adds a timed Event (its _priv.deadline_ns set) to the heap. 0 or -ENOMEM. */
int shard__timer_add(shard *s, Event *e);
/* Removes a timed Event from the heap. */
void shard__timer_remove(shard *s, Event *e);
/* Moves a scheduled timer: later deadlines lazily (O(1)), earlier ones at once. */
void shard__timer_move(shard *s, Event *e, uint64_t deadline_ns);
/* Fires up to the timer budget of due timers. */
void shard__timers_run(shard *s);
/* Nanoseconds until the earliest deadline from `now_ns` (0 if due), or -1 if none. */
int64_t shard__timers_next(shard *s, uint64_t now_ns);
/* Frees every pending timer (shutdown). */
void shard__timers_clear(shard *s);

/* ---- shard/mailbox.c -------------------------------------------------------------------- */

/* Posts a message to shard s; wakes it if it sleeps. Any thread. 0 or -ENOMEM. */
int shard__post(shard *s, int kind, Event *ev, int mask, void (*fn)(void *), void *arg);

/* Handles up to `budget` queued messages. Owner thread. Returns the number handled. */
int shard__mailbox_drain(shard *s, int budget);

/* 1 if messages wait. Owner thread. */
int shard__mailbox_pending(shard *s);

/* Messages queued and not yet handled (any thread; a moment's sum). */
uint64_t shard__mailbox_depth(shard *s);

/* Frees the shard's lanes (join time, after every message was handled), and makes every
 * thread take new lanes on its next post. */
void shard__lanes_free(shard *s);
void shard__lanes_new_generation(void);

/* Consumer side of the sleep protocol (owner thread). */
int shard__prepare_sleep(shard *s); /* 1: may sleep, 0: messages arrived */
void shard__end_sleep(shard *s);
void shard__wake(shard *s); /* any thread; async-signal-safe */

/* Creates / closes the wakeup descriptor. */
int shard__wakefd_open(shard *s);
void shard__wakefd_close(shard *s);
void shard__wakefd_drain(shard *s);

/* Handles every message still queued (join time, shard thread gone). */
void shard__mailbox_flush(shard *s);

/* Releases an Event reference held by a message or the run queue; frees a dead Event
 * when the last reference goes. Owner thread. */
void shard__event_unref(shard *s, Event *e);

/* Frees an Event now (owner thread or join): io_data released, memory returned. */
void shard__event_destroy(Event *e);

/* shard/event.c: a zeroed Event (from the calling shard's cache when it has one), and the
 * end of one (back to the calling shard's cache, or freed). The cache is emptied at join. */
Event *shard__event_new(void);
void shard__event_release(Event *e);
void shard__event_cache_free(shard *s);

#endif /* EC_SHARD_SHARD_H */
