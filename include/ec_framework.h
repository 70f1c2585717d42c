/*
 * ec_framework.h - starting and stopping ecshard, its configuration, shards and stats.
 *
 * Life cycle: ec_framework_init() (configuration, allocator, logger, shards created but
 * not running) -> ec_framework_start() (shard threads run) -> ec_framework_stop() (any
 * thread, async-signal-safe: ask for a graceful stop) -> ec_framework_join() (wait for
 * the shards, then release everything). ec_framework_run() does start, stop on
 * SIGINT/SIGTERM, and join. Events may be built and scheduled from any thread between
 * init and start (they run once the shards start) and after start. After join the
 * framework may be initialised again. Functions return 0 or a negative errno.
 */
#ifndef EC_FRAMEWORK_H
#define EC_FRAMEWORK_H

#include "ec_config.h"
#include "event.h"

typedef struct ec_framework_options {
  const char *config_file; /* NULL: the embedded defaults */
  int shards;              /* > 0 overrides event_loop.concurrency; 0: from the config */
  const char *config_text; /* configuration text used instead of a file (tests) */
  const char *const *set;  /* NULL-terminated "key.path=value" overrides, applied last */
} ec_framework_options;

/* Reads the configuration and prepares the shards. NULL opts = all defaults.
 * -EALREADY if already initialised, -EINVAL for a bad configuration (logged with file
 * and line), or another negative errno. */
EC_API int ec_framework_init(const ec_framework_options *opts);

/* Starts the shard threads (returns once they are created). -EINVAL before init,
 * -EALREADY if started, -ECANCELED if ec_framework_stop came first, or pthread's error. */
EC_API int ec_framework_start(void);

/* Asks for a graceful stop. Any thread, async-signal-safe, idempotent. */
EC_API void ec_framework_stop(void);

/* Waits for the shards to finish (it does not stop them: call ec_framework_stop first),
 * handles requests still queued, closes and frees the Events still scheduled or
 * floating, frees pending timers without firing them, and releases everything init
 * made. -EINVAL if not initialised; -EDEADLK on a shard. */
EC_API int ec_framework_join(void);

/* start + wait for SIGINT/SIGTERM or ec_framework_stop() + join. For a daemon's main. */
EC_API int ec_framework_run(void);

/* 1 between init and join. */
EC_API int ec_framework_initialized(void);

/* ---- shards ------------------------------------------------------------------------ */

/* Number of shards (0 before init). */
EC_API int ec_shard_count(void);

/* Index of the calling shard, or -1 off the shards. */
EC_API int ec_shard_self(void);

/*
 * Runs fn(arg) on shard `shard` as soon as it drains its mailbox. Any thread; per
 * producer, requests run in the order posted. 0, -EINVAL (bad shard), -ENOMEM,
 * -ESHUTDOWN (framework not initialised).
 */
EC_API int ec_shard_run(int shard, void (*fn)(void *arg), void *arg);

/*
 * Runs fn(arg) on shard `shard` and waits for it to return. Runs it directly when
 * called on that shard; -EDEADLK when called on another shard (a shard must not wait
 * for another), -ESHUTDOWN when the shards are not running.
 */
EC_API int ec_shard_call(int shard, void (*fn)(void *arg), void *arg);

/* Counters of one shard, read without stopping it. */
typedef struct ec_shard_stats {
  uint64_t iterations;     /* loop iterations */
  uint64_t dispatched;     /* callbacks run */
  uint64_t messages;       /* mailbox messages processed */
  uint64_t wakeups_sent;   /* eventfd writes other threads made to wake this shard */
  uint64_t sleeps;         /* waits with a non-zero timeout */
  uint64_t scheduled_fds;  /* descriptors currently registered */
  uint64_t syscalls_ctl;   /* interest changes sent to the poller */
  uint64_t timers_fired;   /* timed Events dispatched */
  uint64_t timers_pending; /* timed Events waiting (as of the last iteration) */
} ec_shard_stats;

/* 0, or -EINVAL for a bad shard index. */
EC_API int ec_shard_stats_get(int shard, ec_shard_stats *out);

/* Name of the poller backend in use ("epoll", "poll", "kqueue"); NULL before init. */
EC_API const char *ec_poller_name(void);

/* ---- configuration ----------------------------------------------------------------- */

/*
 * Values of the effective configuration by dotted path ("event_loop.concurrency").
 * Return `def` when the path is absent. Any thread after init; read-only.
 */
EC_API long long ec_config_get_int(const char *path, long long def);
EC_API double ec_config_get_double(const char *path, double def);
EC_API int ec_config_get_bool(const char *path, int def);
EC_API const char *ec_config_get_string(const char *path, const char *def);

/* Writes the effective configuration in the configuration syntax. 0 or -errno. */
EC_API int ec_config_print(FILE *out);

/* The embedded default configuration text. */
EC_API const char *ec_config_default_text(void);

#endif /* EC_FRAMEWORK_H */
