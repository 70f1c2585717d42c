/*
 * scheduler.h - scheduling Events on the shards, the per-shard event tables, and the
 * shard's cached clock.
 *
 * "Owner thread" below means the shard that owns the Event (event.h). The fd-keyed
 * functions (get_event_by_fd, clear_event_by_fd) and the set accessors act on the calling
 * shard's own table; called from a thread that is not a shard they fail with errno EPERM.
 */
#ifndef EC_SCHEDULER_H
#define EC_SCHEDULER_H

#include "ec_config.h"
#include "event.h"

/*
 * Hands an Event to its owner shard: registers its interest `e->mask` for its descriptor.
 * Scheduling an Event that is already scheduled updates its interest. Any thread: from
 * the owner it takes effect at once; from any other thread it is posted to the owner's
 * mailbox (an Event not yet placed is placed first, see event.h). Errors (another Event
 * already scheduled for the fd, a descriptor the poller refuses) are logged; use
 * ec_schedule_event() to get them as a result.
 */
EC_API void schedule_event(Event *e);

/*
 * schedule_event() with a result: 0 when done or posted, -EEXIST (another Event is
 * scheduled for this fd on the owner), -EBADF / -EPERM (the poller refused the
 * descriptor), -EINVAL (not an Event this framework built, or no descriptor), -ENOMEM,
 * -ESHUTDOWN (framework not initialised, or already joined). Between ec_framework_stop
 * and ec_framework_join requests are still accepted: join handles them (and then closes
 * and frees what they scheduled). Errors of a posted request are logged by the owner.
 */
EC_API int ec_schedule_event(Event *e);

/*
 * Removes the calling shard's Event for `fd` from the scheduler and returns it: no
 * longer watched, not freed, descriptor not closed. NULL with errno ENOENT if the shard
 * has none, EPERM off a shard thread. May be called on the Event being dispatched; the
 * callback's return value then decides: 0 frees it, a mask schedules it again.
 */
EC_API Event *clear_event_by_fd(int fd);

/*
 * Cancels a pending timed Event. Returns 1 if it was found: it will not fire and the
 * framework frees it (now, or once requests queued for it are handled). Returns 0 if it
 * was not pending (never scheduled, or cancelled off its shard: errno EPERM): the caller
 * still owns it and frees it with event_free. Calling it on the timer whose callback is
 * running returns 1 (the scheduler frees it when the callback returns). Owner thread.
 * Idiom: if (!clear_timed_event(t)) event_free(t);
 */
EC_API int clear_timed_event(Event *e);

/*
 * Moves a timed Event's deadline to `when` (whence as in build_event), whether pending or
 * not yet scheduled. Moving a pending timer later costs O(1) (nothing is reordered until
 * its old deadline comes), so re-arming an idle timeout on every request is cheap. Owner
 * thread for a pending timer. 0, -EINVAL (not a timed Event, bad whence) or -EPERM.
 */
EC_API int ec_timed_event_move(Event *e, struct timeval when, int whence);

/* The calling shard's scheduled Event for `fd`, or NULL (errno ENOENT / EPERM). */
EC_API Event *get_event_by_fd(int fd);

/*
 * Parks an Event on its owner shard: kept in the shard's floating set, not watched for
 * I/O, until schedule_event() (or schedule_event_and_dispatch) makes it active again.
 * Owner thread. At shutdown floating Events are closed and freed like scheduled ones.
 */
EC_API void float_event(Event *e);

/*
 * The calling shard's fd-indexed table of scheduled Events (NULL holes) and its length,
 * or the floating set and its length. The array is borrowed: valid until the shard next
 * schedules or clears an Event. Owner thread; off a shard *set = NULL, *count = 0.
 */
EC_API void get_fd_event_set(Event ***set, int *count);
EC_API void get_floating_event_set(Event ***set, int *count);

/* 1 if the calling thread is one of the framework's shards, else 0. Any thread. */
EC_API int is_scheduler_thread(void);

/*
 * The time: on a shard, the wall-clock time sampled once per iteration, right after the
 * shard's wait returned (what callbacks get as `now`); elsewhere gettimeofday(). Any
 * thread.
 */
EC_API void get_now(struct timeval *toset);

/* get_now() in whole seconds since the epoch. Any thread. */
EC_API time_t get_now_ts(void);

/* A scheduler instance: one shard, as Momentum's multi-loop API names it (thread-pool
 * jobs complete on an instance with the _INST completion modes). Opaque. */
typedef struct ec_scheduler_inst ec_scheduler_inst;

/* The instance of shard `shard`, of the calling shard (NULL off the shards), and the
 * shard index of an instance (-1 for NULL or a stale pointer). Any thread. */
EC_API ec_scheduler_inst *ec_scheduler_inst_get(int shard);
EC_API ec_scheduler_inst *ec_scheduler_inst_self(void);
EC_API int ec_scheduler_inst_index(const ec_scheduler_inst *inst);

typedef int (*RecurFunc)(void *closure, struct timeval *now);

/*
 * Registers `func` to run on a shard once per loop iteration and at least once a
 * second: on the calling shard when called on one, otherwise on shard 0 (the "master").
 * The return value of func is ignored. Any thread, after ec_framework_init().
 */
EC_API void scheduler_recurrent_func_add(RecurFunc func, void *closure);

#endif /* EC_SCHEDULER_H */
