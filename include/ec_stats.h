/*
 * ec_stats.h - operating a running server: metrics, stall detection, reload, the admin
 * listener and the console (docs/operations.md).
 *
 * The framework keeps its counters where they are written (per shard, per listener, per
 * memtype and thread, per pool) and sums them only when somebody reads them: through
 * ec_shard_stats_get & co. (ec_framework.h), or all at once as Prometheus text or JSON
 * (ec_stats_render, the "admin" protocol's GET /metrics and /stats, the console). A module
 * adds its own metrics with ec_stats_register_source: its callback runs at every render
 * and emits samples with ec_stats_emit.
 */
#ifndef EC_STATS_H
#define EC_STATS_H

#include "ec_config.h"

/* Output formats of ec_stats_render. */
#define EC_STATS_PROMETHEUS 0 /* text exposition format 0.0.4 */
#define EC_STATS_JSON       1

/* Metric types for ec_stats_emit. */
#define EC_STATS_COUNTER 0 /* only goes up (Prometheus convention: name ends in _total) */
#define EC_STATS_GAUGE   1 /* goes up and down */

/* Buckets of ec_shard_callback_hist_get. */
#define EC_SHARD_HIST_BUCKETS 24

/*
 * The callback-duration histogram of shard `shard` (counted while callback timing is on):
 * hist[i] counts callbacks that ran under 2^i microseconds and at least 2^(i-1) (hist[0]:
 * under 1 us); the last bucket counts everything longer. Any thread, without stopping the
 * shard. 0, or -EINVAL for a bad shard index.
 */
EC_API int ec_shard_callback_hist_get(int shard, uint64_t hist[EC_SHARD_HIST_BUCKETS]);

typedef struct ec_stats_writer ec_stats_writer;

/*
 * Emits one sample during a render. `name` is the metric name ([a-zA-Z_:][a-zA-Z0-9_:]*;
 * samples of one name are grouped however they are emitted, and the first emit's `help`
 * and `type` describe them), `labels` a NULL-terminated array of name/value pairs
 * ({"listener", "web", NULL}) or NULL. Values are escaped as each format needs. A bad
 * metric or label name is logged and the sample dropped. Only inside a source callback
 * (or the framework's own collection).
 */
EC_API void ec_stats_emit(ec_stats_writer *w, const char *name, int type, const char *help,
                          const char *const *labels, double value);

/* ec_stats_emit for an integer counter or gauge (exact beyond 2^53). */
EC_API void ec_stats_emit_u64(ec_stats_writer *w, const char *name, int type, const char *help,
                              const char *const *labels, uint64_t value);

typedef void (*ec_stats_source_fn)(ec_stats_writer *w, void *arg);

/*
 * Adds a source of metrics: `fn(w, arg)` runs at every render, on the thread rendering
 * (a shard serving the admin listener, or the caller of ec_stats_render), so it must be
 * quick and thread-safe: read counters with relaxed atomic loads. Sources run in
 * registration order after the framework's metrics. Any time, any thread; the
 * registration lasts until ec_stats_unregister_source or ec_framework_join.
 * 0, -EEXIST (name taken), -EINVAL, -ENOSPC (more than 64 sources), -ENOMEM.
 */
EC_API int ec_stats_register_source(const char *name, ec_stats_source_fn fn, void *arg);

/* Removes a source; a render running at the time finishes with it. 0 or -ENOENT. */
EC_API int ec_stats_unregister_source(const char *name);

/*
 * Renders every metric (the framework's, then the sources') in `format` into a new
 * NUL-terminated buffer of MEMTYPE_GENERIC that the caller frees with ec_free. Between
 * ec_framework_init and ec_framework_join; any thread. Returns the length, or -EINVAL
 * (bad format, not initialised) or -ENOMEM.
 */
EC_API int ec_stats_render(int format, char **out);

/*
 * Callback timing: 1 times every callback on every shard (a clock read before and after:
 * the callback-duration histogram and exact slow-callback reports), 0 stops it, -1 only
 * asks. Returns the previous setting. Any thread; takes effect on each shard's next
 * dispatch. Initially watchdog.callback_timing.
 */
EC_API int ec_stats_set_callback_timing(int on);

/*
 * Stall detection thresholds in seconds: an iteration (or, with callback timing, a
 * callback) running longer than `stall` is logged with the callback's name and shard;
 * a shard that has not finished an iteration for `stuck` seconds is reported as stuck.
 * 0 leaves a value unchanged. 0 or -EINVAL (negative, or stuck < stall). Any thread.
 * Initially watchdog.stall_threshold and watchdog.stuck_timeout.
 */
EC_API int ec_stats_set_stall_thresholds(double stall, double stuck);

/* ---- configuration reload --------------------------------------------------------------- */

/*
 * A reload hook: after a reload has published the new configuration (SIGHUP,
 * ec_framework_reload, the console's `reload`), `fn(arg)` runs on the reloading thread
 * (never a shard) and reads its settings again with ec_config_get_*. Return 0, or a
 * negative errno after logging what could not be applied. Name the hook after the
 * configuration section it applies (e.g. "smtp", or "tls" for listener certificates):
 * reload then reports changes to that section as applied rather than as needing a
 * restart. Any thread, before or after init; lasts until ec_framework_join.
 * 0, -EEXIST, -EINVAL, -ENOSPC (more than 32 hooks).
 */
EC_API int ec_reload_register(const char *name, int (*fn)(void *arg), void *arg);

/*
 * Reads the configuration again from where ec_framework_init read it (file, text,
 * --set overrides, shards), checks it, and if it is valid makes it the effective one:
 * log levels and targets, limits, timeouts and the watchdog change at once, reload hooks
 * run, and every changed setting that needs a restart (listen addresses, shard count ...)
 * is logged as such. A configuration that fails its checks is logged and changes
 * nothing. After ec_framework_init, not on a shard (-EDEADLK): it reads files.
 * 0, -EINVAL (refused configuration), -EBUSY (another reload runs), -ESHUTDOWN, or the
 * first hook's error (the others still run).
 */
EC_API int ec_framework_reload(void);

/* Completed reloads and refused ones since init. */
EC_API uint64_t ec_framework_reload_count(int failed);

/*
 * Asks the thread in ec_framework_run to reload (as on SIGHUP) or to reopen the log file
 * (as on SIGUSR1). Any thread, shards included; async-signal-safe. 0, or -ENOTSUP when no
 * thread is in ec_framework_run.
 */
#define EC_REQUEST_RELOAD    1
#define EC_REQUEST_LOGREOPEN 2
EC_API int ec_framework_request(int what);

#endif /* EC_STATS_H */
