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

/* Starts the shard threads (returns once they are created and the listeners' acceptors
 * are installed). -EINVAL before init, -EALREADY if started, -ECANCELED if
 * ec_framework_stop came first, a listener's error (logged), -ENOMEM when an acceptor
 * could not be installed on some shard (the framework is stopping then: join it), or
 * pthread's error. */
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
  uint64_t spins;          /* mailbox polls before sleeping (event_loop.mailbox_spin_ns) */
  uint64_t spin_hits;      /* ... that found messages, so the shard did not sleep */
  uint64_t scheduled_fds;  /* descriptors currently registered */
  uint64_t syscalls_ctl;   /* interest changes sent to the poller */
  uint64_t timers_fired;   /* timed Events dispatched */
  uint64_t timers_pending; /* timed Events waiting (as of the last iteration) */
  /* Operations counters (docs/operations.md has what each means and costs). */
  uint64_t bytes_in;        /* bytes event_read returned on this shard (after TLS) */
  uint64_t bytes_out;       /* bytes event_write and the event_io_* writes sent */
  uint64_t mailbox_backlog; /* messages queued in the mailbox, not yet handled */
  uint64_t stalls;          /* iterations the watchdog saw run past watchdog.stall_threshold */
  uint64_t slow_callbacks;  /* timed callbacks that ran past watchdog.stall_threshold */
  uint64_t callbacks_timed; /* callbacks timed (watchdog.callback_timing on) */
  uint64_t callback_ns;     /* their total run time (histogram: ec_shard_callback_hist_get) */
  uint64_t io_spins;        /* readiness polls before sleeping (event_loop.io_spin_ns) */
  uint64_t io_spin_hits;    /* ... that found I/O, so the shard did not sleep */
  int busy;                 /* 1 while the shard runs (0 while it waits for work) */
  int stalled;              /* 1 while the watchdog sees an iteration past the stall threshold */
  int thread_id;            /* the shard thread's kernel id (0 before it runs) */
} ec_shard_stats;

/* 0, or -EINVAL for a bad shard index. */
EC_API int ec_shard_stats_get(int shard, ec_shard_stats *out);

/* Name of the poller backend in use ("epoll", "poll", "kqueue"); NULL before init. */
EC_API const char *ec_poller_name(void);

/* ---- protocols and listeners ------------------------------------------------------- */

/*
 * A protocol module serves the connections of the listeners configured with its name
 * (Momentum's netlistener: an accept hook that may refuse early, and a session handler):
 *
 *   listener = {
 *     echo = { listen = "127.0.0.1:7007"; protocol = "echo"; };
 *     web  = { listen = [ "0.0.0.0:8080", "[::]:8080" ]; protocol = "http";
 *              max_connections = 10000; idle_timeout = 60.0; proxy_protocol = true; };
 *   };
 *
 * Both hooks run on the shard that owns the connection. A session ends when its Event is
 * closed with event_close (that is what the framework counts for connection caps and
 * draining). When the listener's idle timeout (or, before the session started, its
 * handshake timeout) passes, or when a graceful stop's drain deadline comes, the
 * session's Event is dispatched with E_TIMEOUT: close it and return 0.
 */
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

typedef struct ec_accept_info {
  const char *listener;         /* the listener's name in the configuration */
  const char *protocol;         /* the protocol's name */
  int shard;                    /* the shard serving the connection */
  struct sockaddr_storage peer; /* the client (from the PROXY header when there was one) */
  socklen_t peer_len;
  struct sockaddr_storage local; /* the address it connected to (likewise) */
  socklen_t local_len;
  int proxied; /* 1 if the addresses came from a PROXY protocol header */
  /* The listener's TLS server context (its `tls` section), or NULL when it has none. It
   * lives as long as the listener, so a session may keep it, e.g. for STARTTLS with
   * ec_ssl_starttls(e, info->tls_ctx, mtc). */
  struct ssl_ctx_st *tls_ctx;
  int tls; /* 1 when the framework attached TLS already (tls.mode = "implicit") */
} ec_accept_info;

typedef struct ec_protocol {
  const char *name; /* what `protocol = "..."` names; copied */
  /*
   * Optional. Called right after accept (and after a PROXY header), before the session
   * starts: return 0 to serve the connection, non-zero to refuse it (the framework sends
   * busy_reply, if any, and closes it).
   */
  int (*accept_hook)(const ec_accept_info *info, void *closure);
  /*
   * Required. Takes over the connection: `e` is a non-blocking fd Event with mask E_READ
   * and no callback yet. Set e->callback (and e->closure), do any first I/O (a greeting),
   * and return the interest mask to schedule it with, as a callback would; or close it
   * with event_close and return 0 (the framework frees `e`).
   */
  int (*session_start)(Event *e, const ec_accept_info *info, void *closure);
  /* Optional: written (best effort) to connections refused because a connection limit was
   * reached or the accept hook said no, e.g. "421 4.3.2 Too busy\r\n". Copied. */
  const char *busy_reply;
  void *closure; /* passed to the hooks */
} ec_protocol;

/*
 * Registers a protocol module. Before ec_framework_start (listeners are opened there and
 * must find their protocol); before ec_framework_init is fine too, next to the module's
 * ec_config_section_register. Registrations last until ec_framework_join.
 * 0, -EEXIST (name taken), -EINVAL, -ENOMEM. Any thread.
 */
EC_API int ec_protocol_register(const ec_protocol *proto);

/* 1 from ec_framework_stop until the next ec_framework_init: the listeners are closing and
 * sessions draining. Protocols use it to end sessions at a convenient point (after the
 * current request). Any thread. */
EC_API int ec_framework_stopping(void);

/* Counters of one listener, summed over shards. */
typedef struct ec_listener_stats {
  uint64_t accepted;      /* connections accepted */
  uint64_t refused;       /* refused: connection limits or the accept hook */
  uint64_t active;        /* sessions open now */
  uint64_t timeouts;      /* sessions sent E_TIMEOUT (idle, handshake, drain) */
  uint64_t proxy_errors;  /* malformed or missing PROXY headers */
  uint64_t accept_pauses; /* times accepting paused on EMFILE/ENFILE */
} ec_listener_stats;

/* Stats of the listener named `name`: 0, or -ENOENT. After start. Any thread. */
EC_API int ec_listener_stats_get(const char *name, ec_listener_stats *out);

/* Sessions open now on all listeners. Any thread. */
EC_API uint64_t ec_sessions_active(void);

/* ---- configuration ----------------------------------------------------------------- */

/*
 * Values of the effective configuration by dotted path ("event_loop.concurrency").
 * Return `def` when the path is absent. Any thread after init; read-only.
 */
EC_API long long ec_config_get_int(const char *path, long long def);
EC_API double ec_config_get_double(const char *path, double def);
EC_API int ec_config_get_bool(const char *path, int def);
EC_API const char *ec_config_get_string(const char *path, const char *def);

/*
 * A string list's length: 1 for a lone string (listen = "a" is the list [ "a" ]), the
 * element count for an array or list, -ENOENT when the path is absent, -EINVAL for any
 * other type. Any thread after init.
 */
EC_API int ec_config_get_list_count(const char *path);

/* Element `index` of the string list at `path`, or NULL (absent, out of range, not a
 * string). The pointer lives as long as the configuration (until ec_framework_join). */
EC_API const char *ec_config_get_list_string(const char *path, int index);

/* ---- module configuration sections ---------------------------------------------------- */

typedef enum ec_config_kind {
  EC_CONFIG_INT,
  EC_CONFIG_FLOAT, /* a number: an integer is accepted too */
  EC_CONFIG_BOOL,
  EC_CONFIG_STRING,
  EC_CONFIG_STRING_LIST, /* [ "a", "b" ], or a lone "a" */
} ec_config_kind;

typedef struct ec_config_item {
  const char *name; /* member of the section; an array of items ends with name == NULL */
  ec_config_kind kind;
  double min, max;            /* INT and FLOAT bounds, inclusive; min == max: unbounded */
  const char *const *choices; /* STRING: NULL-terminated allowed values, or NULL: any */
} ec_config_item;

/*
 * Declares the top-level section `name = { ... };` that a module reads, with its items and
 * its default text in configuration syntax (the members only, e.g. `mode = "spool";`), or
 * NULL. Call before ec_framework_init: the loader then validates the section like the
 * framework's own (an unknown member or a bad value is an error naming file:line), merges
 * the defaults under the file and --set, and ec_config_print shows it. The tables are
 * copied. The registration lasts until ec_framework_join (or a failed init); registering
 * the same name with the same `items` pointer again is a no-op returning 0.
 * 0, -EINVAL (bad name or items, logged), -EEXIST (a framework section or another
 * module's), -EBUSY (after init), -ENOSPC (more than 32 sections), -ENOMEM.
 */
EC_API int ec_config_section_register(const char *name, const ec_config_item *items,
                                      const char *defaults);

/* Writes the effective configuration in the configuration syntax. 0 or -errno. */
EC_API int ec_config_print(FILE *out);

/* The embedded default configuration text. */
EC_API const char *ec_config_default_text(void);

#endif /* EC_FRAMEWORK_H */
