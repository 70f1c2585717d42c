/*
 * sp_async.h - scheduling from any thread: resume a suspended Event and dispatch it.
 */
#ifndef EC_SP_ASYNC_H
#define EC_SP_ASYNC_H

#include "ec_config.h"
#include "event.h"

/*
 * Schedules `e` (as schedule_event) and, if `dispatch_mask` is non-zero, runs its
 * callback with `dispatch_mask` as eventtype. Any thread. On the owner shard the
 * dispatch runs after the running callback returns, before the shard waits again (never
 * re-entrantly; requests for one Event made before it runs are merged into one dispatch); from any
 * other thread the request travels through the owner's mailbox. This is how a worker thread resumes
 * a suspended session.
 */
EC_API void schedule_event_and_dispatch(Event *e, int dispatch_mask);

/* Like schedule_event_and_dispatch, but always through the owner's mailbox. Any thread. */
EC_API void sp_async_schedule_event(Event *e, int dispatch_mask);

/* Result-returning forms of the two above (see ec_schedule_event for the codes). */
EC_API int ec_schedule_event_and_dispatch(Event *e, int dispatch_mask);
EC_API int ec_sp_async_schedule_event(Event *e, int dispatch_mask);

#endif /* EC_SP_ASYNC_H */
