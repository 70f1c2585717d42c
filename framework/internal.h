/*
 * framework/internal.h - services shared inside the library (prefix fw__). Not installed.
 */
#ifndef EC_FRAMEWORK_INTERNAL_H
#define EC_FRAMEWORK_INTERNAL_H

#include "ec_config.h"
#include "ec_framework.h"
#include "ec_log.h"
#include "ec_malloc.h"

#include <libconfig.h>

/* ---- configuration (framework/config.c) ----------------------------------------------- */

/*
 * Builds the effective configuration: the embedded defaults, then opts->config_file or
 * opts->config_text, then opts->set overrides, then opts->shards. Every layer is
 * checked against the schema (unknown settings and wrong types are errors that name the
 * file and line). Logs each error; returns 0 or -EINVAL / -ENOENT / -ENOMEM.
 */
int fw__config_load(const ec_framework_options *opts);

/* Releases the effective configuration. */
void fw__config_unload(void);

/* The effective configuration (valid between load and unload), for sections that iterate
 * groups (listeners, thread pools). */
const config_t *fw__config(void);

/*
 * Validates `text` (origin names it in messages) without loading it. 0 or -EINVAL; the
 * first error is written to errbuf. For tools and tests.
 */
int fw__config_check_text(const char *text, const char *origin, char *errbuf, size_t errlen);

/*
 * Reload (framework/reload.c): reads the configuration again from the sources init used
 * and publishes it; the replaced one stays alive until unload. On success *old_cfg and
 * *new_cfg point at both. 0, -EINVAL (refused, logged), -ENOMEM, -ESHUTDOWN.
 */
int fw__config_reload(const config_t **old_cfg, const config_t **new_cfg);

/* Calls fn for every setting whose value differs between a and b (added and removed ones
 * too: their missing side reads "(unset)"), with its dotted path. */
void fw__config_diff(const config_t *a, const config_t *b,
                     void (*fn)(const char *path, const char *old, const char *now, void *arg),
                     void *arg);

/* ---- operations (framework/stats.c, reload.c, admin.c) ---------------------------------- */

void fw__stats_init(void);  /* ec_framework_init */
void fw__stats_fini(void);  /* ec_framework_join: forgets the sources */
void fw__reload_fini(void); /* ec_framework_join: forgets the reload hooks */
/* jemalloc's statistic `name` ("stats.allocated"), refreshed: 0, or -ENOTSUP without
 * jemalloc, -ENOENT for an unknown name. */
int fw__jemalloc_stat(const char *name, uint64_t *value);
/* Registers the framework's "admin" and "console" protocols (init). 0 or -errno. */
int fw__admin_register(void);

/* ---- listeners (framework/listener.c) ------------------------------------------------ */

/* NULL if `addr` is a listen address ("IPv4:PORT", "[IPv6]:PORT", "*:PORT",
 * "unix:/path"), else what is wrong with it. For the configuration schema. */
const char *fw__listen_addr_check(const char *addr);

/* ---- logging (framework/log.c) -------------------------------------------------------- */

/* Applies the `log` and `debug_flags` sections and starts the logger thread. 0 or -errno. */
int fw__log_start(void);

/* Writes out everything queued and stops the logger thread; later messages are written
 * synchronously. */
void fw__log_stop(void);

/* Applies the `log` and `debug_flags` sections again (reload): levels, target, file. */
int fw__log_reconfigure(void);

/* Asks the logger thread to reopen its file (SIGUSR1). Any thread; async-signal-safe. */
void fw__log_reopen(void);

/* Writes the level of every subsystem ("SHARD=warning ...") into buf. */
void fw__log_describe(char *buf, size_t len);

/* Names the calling thread in log lines ("shard 3", "main"); `name` is copied. */
void fw__log_thread_name(const char *name);

/* ---- allocator (framework/alloc.c) ---------------------------------------------------- */

/* ec_mt_asprintf with a va_list (ec_asprintf shares it). */
int fw__mt_vasprintf(int mt, char **strp, const char *fmt, va_list ap);

/* Folds the calling thread's memtype counters into the process totals (thread exit). */
void fw__alloc_thread_exit(void);

/*
 * Thread-locals read on every event, message and allocation. In a shared library the
 * default (global-dynamic) model calls __tls_get_addr on each access; initial-exec is a
 * single %fs-relative load. It takes a little of the static TLS block, which a library
 * linked at program start (the way ecshard is used) always gets.
 */
#define EC__TLS_HOT __thread __attribute__((tls_model("initial-exec")))

/*
 * Fault injection for tests (test/test_fault.c): from now on every `every`-th allocation
 * through ec_malloc / ec_malloc_size / ec_realloc fails with ENOMEM (0 turns it off). Any
 * thread. Costs one relaxed load per allocation while off.
 */
void fw__alloc_fail_every(int every);
unsigned fw__alloc_failures_injected(void); /* since the last fw__alloc_fail_every */

/* For caches of fixed-size blocks kept above the allocator (shard/event.c): `fn(id)`
 * returns how many blocks of memtype `id` the caches hold, and memtype statistics count
 * them as freed. NULL removes the hook; once this returns, `fn` is not running. */
void fw__alloc_cached_hook(int64_t (*fn)(int id));

/* ---- life cycle (framework/framework.c) ---------------------------------------------- */

/* 1 between ec_framework_start() and ec_framework_stop(). Any thread. */
int fw__shards_running(void);

/* ---- utilities ------------------------------------------------------------------------ */

/* Number of online CPUs usable by this process (affinity mask), at least 1. */
int fw__cpu_count(void);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t fw__mono_ns(void);

#endif /* EC_FRAMEWORK_INTERNAL_H */
