/*
 * pool/pool.h - worker pools and job completions (internal, prefix pool__). Not installed.
 *
 * Life cycle, driven by framework/framework.c:
 *   pool__init()  in ec_framework_init, after the shards exist: pools from the
 *                 configuration, queues ready, no threads yet (jobs may be queued);
 *   pool__start() in ec_framework_start, before the shards start: worker threads;
 *   pool__stop()  in ec_framework_join, after the shards exited and before
 *                 shard__destroy_all: queued work drained (or dropped, skip_on_shutdown),
 *                 workers joined; completions meant for shards wait in their mailboxes,
 *                 which shard__destroy_all handles as if on the shards;
 *   pool__fini()  after shard__destroy_all: frees the pools.
 */
#ifndef EC_POOL_POOL_H
#define EC_POOL_POOL_H

#include "ec_thread_pool.h"

int pool__init(void);
int pool__start(void);
void pool__stop(void);
void pool__fini(void);

/* Runs or routes the completion of a job whose work is done (or was dropped). Any
 * thread. pool/completion.c. */
void pool__complete(ec_async_job *job);

/* Jobs queued between these two calls on this thread (completion callbacks in a drain)
 * are spliced into their pools in batches (pool/pool.c). Nestable. */
void pool__defer_begin(void);
void pool__defer_end(void);

/* Per-shard completion queues: created with the pools, freed by pool__fini. */
int pool__completions_init(int nshards);
void pool__completions_fini(void);

/* io_wrapper settings from the configuration, and back to the defaults at join
 * (pool/io_wrapper.c). */
void pool__io_configure(void);
void pool__io_reset(void);

#endif /* EC_POOL_POOL_H */
