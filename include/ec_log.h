/*
 * ec_log.h - leveled, per-subsystem logging that never stalls a shard.
 *
 * A log call formats the message on the calling thread and hands it to a logger thread
 * through a bounded lock-free queue; when the queue is full the message is dropped and
 * counted (ec_log_dropped()), so a burst of logging can never block a scheduler thread.
 * Before ec_framework_init() and after ec_framework_join() messages are written
 * synchronously to the destination (stderr by default).
 *
 * Filtering follows Momentum's Debug_Flags: each level has a mask of enabled subsystems.
 * By default every subsystem is enabled at DWARNING and above (configurable with
 * `log { level = "..."; }` and `debug_flags = { DEBUG = ["LOG1", ...]; }`).
 */
#ifndef EC_LOG_H
#define EC_LOG_H

#include "ec_config.h"

/* Levels (Momentum numbering: 0 = debug ... 5 = critical). */
#define DDEBUG        0
#define DINFO         1
#define DNOTICE       2
#define DWARNING      3
#define DERROR        4
#define DCRITICAL     5
#define EC_LOG_LEVELS 6

/* Subsystem masks for ec_debug_printf (Momentum's Debug_Flags names, plus ecshard's). */
#define EC_LOG_ERROR  0x00000001u /* generic */
#define EC_LOG_TIME   0x00000002u
#define EC_LOG_FD     0x00000004u
#define EC_LOG_SMTP   0x00000008u
#define EC_LOG_LOG1   0x00000010u /* log1_printf */
#define EC_LOG_DNS    0x00000020u
#define EC_LOG_NET    0x00000040u
#define EC_LOG_SIG    0x00000080u
#define EC_LOG_MEM    0x00000100u
#define EC_LOG_SSL    0x00000200u
#define EC_LOG_MOD    0x00000400u
#define EC_LOG_START  0x00000800u
#define EC_LOG_SHARD  0x00001000u /* reactor internals */
#define EC_LOG_POOL   0x00002000u
#define EC_LOG_CONFIG 0x00004000u
#define EC_LOG_HTTP   0x00008000u
#define EC_LOG_ALL    0xffffffffu

/*
 * Logs under the LOG1 subsystem at `level`. Any thread. Returns 1 if the message was
 * accepted (written or queued), 0 if it was filtered out or dropped.
 */
EC_API int log1_printf(int level, const char *fmt, ...) EC_PRINTF_LIKE(2, 3);

/*
 * Logs at `level` for the subsystems in `mask` (EC_LOG_*): the message is emitted if any
 * of them is enabled at that level. Any thread. Always returns 1 (Momentum's contract).
 */
EC_API int ec_debug_printf(int level, int mask, const char *fmt, ...) EC_PRINTF_LIKE(3, 4);

/* va_list form of ec_debug_printf; returns 1 if accepted, 0 if filtered or dropped. */
EC_API int ec_log_vprintf(int level, unsigned mask, const char *fmt, va_list ap);

/* 1 if a message at `level` for any subsystem in `mask` would be emitted. Any thread. */
EC_API int ec_log_enabled(int level, unsigned mask);

/* Sets / reads the enabled subsystem mask of one level. Any thread, takes effect at once. */
EC_API void ec_log_set_mask(int level, unsigned mask);
EC_API unsigned ec_log_get_mask(int level);

/* Enables every subsystem at `level` and above and nothing below. Any thread. */
EC_API void ec_log_set_level(int level);

/*
 * Per-subsystem levels: enables the subsystems in `mask` at `level` and above and
 * disables them below (DCRITICAL + 1, named "off", silences them), leaving the other
 * subsystems alone. Any thread, at once. 0 or -EINVAL.
 */
EC_API int ec_log_set_subsystem_level(unsigned mask, int level);

/* The lowest level any subsystem in `mask` is enabled at, or DCRITICAL + 1 if none. */
EC_API int ec_log_subsystem_level(unsigned mask);

/* "debug" ... "critical", "off" for DCRITICAL + 1; NULL for anything else. */
EC_API const char *ec_log_level_name(int level);

/* Level number for a name ("debug", "info", "notice", "warning", "error", "critical",
 * or "off" = DCRITICAL + 1), case-insensitive; -1 if unknown. */
EC_API int ec_log_level_by_name(const char *name);

/* Subsystem mask for a Debug_Flags name ("LOG1", "FD", "ALL", ...); 0 if unknown. */
EC_API unsigned ec_log_subsystem_by_name(const char *name);

/* Number of messages dropped because the logger queue was full, since process start. */
EC_API uint64_t ec_log_dropped(void);

/*
 * Waits until every message queued before the call has been written (bounded by
 * timeout_ms; 0 = don't wait). Returns 0, or -ETIMEDOUT. For tests and shutdown.
 */
EC_API int ec_log_flush(int timeout_ms);

#endif /* EC_LOG_H */
