/*
 * framework/listener.h - configured listeners and registered protocols (internal; the
 * accepting half lives in shard/acceptor.c).
 */
#ifndef EC_FRAMEWORK_LISTENER_H
#define EC_FRAMEWORK_LISTENER_H

#include "ec_framework.h"

#include <stdint.h>
#include <sys/socket.h>

typedef struct fw__listener {
  int index;
  char *name;
  const ec_protocol *proto; /* the registered copy */
  int proxy_protocol;
  struct ssl_ctx_st *tls_ctx; /* the `tls` section's server context, or NULL */
  int tls_implicit;           /* attach TLS before session_start */
  int single;                 /* accept_mode = "single": one acceptor hands off */
  int tcp_nodelay, rcvbuf, sndbuf;
  int accepts_per_iter;
  /* Changed by a reload (relaxed stores), read by the shards with relaxed loads. */
  int64_t max_connections;        /* 0 = no limit */
  uint64_t idle_ns, handshake_ns; /* 0 = none */

  /* Counters, any thread (atomic). */
  uint64_t accepted, refused, timeouts, proxy_errors, pauses;
  int64_t active;
} fw__listener;

/* Opens every enabled listener of the configuration and installs an acceptor per socket
 * on its shard (as a closure posted to the shard). On any error (unknown protocol, bad
 * address, bind failure) logs it with file and line and returns -errno; what was opened
 * already belongs to the shards' acceptors and is closed by ec_framework_join. Before the
 * shards start. */
int fw__listeners_open(void);

/* Reload: applies the run-time settings of the new configuration (limits, drain and
 * retry delays, each listener's max_connections, idle and handshake timeouts). */
void fw__listeners_reconfigure(void);

/* Frees the listeners (join time, shards gone) and forgets registered protocols. */
void fw__listeners_free(void);

int fw__listener_count(void);
fw__listener *fw__listener_get(int index);

/* Process-wide session accounting for limits.max_connections. */
int fw__sessions_reserve(fw__listener *l); /* 0, or -EBUSY over a limit */
void fw__sessions_release(fw__listener *l);

/* limits.accept_retry_delay and shutdown.drain_timeout, in nanoseconds. */
uint64_t fw__accept_retry_ns(void);
uint64_t fw__drain_ns(void);

#endif /* EC_FRAMEWORK_LISTENER_H */
