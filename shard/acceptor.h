/*
 * shard/acceptor.h - accepting connections on the shards and tracking their sessions
 * (idle and handshake timeouts, connection limits, graceful drain). Internal.
 */
#ifndef EC_SHARD_ACCEPTOR_H
#define EC_SHARD_ACCEPTOR_H

#include "framework/listener.h"
#include "shard/shard.h"

/* A connection being served: one per accepted descriptor, from accept to event_close. */
struct ec_session {
  struct ec_session *prev, *next; /* the shard's list for its listener and phase */
  uint64_t last_ns;               /* last readiness dispatch (CLOCK_MONOTONIC) */
  Event *ev;                      /* the Event currently serving it (NULL: suspended) */
  unsigned char *hbuf;            /* PROXY header bytes consumed so far (handshake only) */
  int32_t listener;
  int32_t shard;
  uint16_t hlen;
  uint8_t phase; /* SHARD__SESSION_HANDSHAKE or _ACTIVE */
};

#define SHARD__SESSION_HANDSHAKE 0
#define SHARD__SESSION_ACTIVE    1

/* Posts an acceptor for listening socket `fd` of `l` to shard `shard` (before or after
 * start). `single`: it hands connections to all shards. `unix_path`: a Unix socket's file,
 * removed when the acceptor closes (copied). The acceptor owns the descriptor from here
 * on. 0 or -errno. */
/* After the shards started: waits until every acceptor posted so far is installed and
 * returns how many could not be (each logged), resetting the count. Not on a shard. */
int shard__acceptors_settle(void);
void shard__acceptors_reset(void); /* before the listeners open (no shard runs) */

int shard__acceptor_install(fw__listener *l, int fd, int shard, int single, const char *unix_path);

/* Owner thread: a readiness dispatch of a session's Event (idle timer restarts). */
void shard__session_touch(shard *s, struct ec_session *ss);

/* TLS (framework/tls.c), owner thread: `done` 0 when a STARTTLS handshake begins on `e`,
 * 1 when a server handshake has finished. While it runs, the session is in the handshake
 * phase, bounded by the listener's handshake_timeout. Sessions of other shards, or an
 * Event without a session, are left alone. */
void shard__session_tls_phase(Event *e, int done);

/* The session's Event is being closed (any thread: off the owner it is posted). */
void shard__session_end(struct ec_session *ss);

/* Event `e` is being freed: forget it as its session's Event. */
void shard__session_forget(Event *e);

/* Owner thread, each iteration: E_TIMEOUT to sessions past their idle or handshake
 * timeout. Returns nanoseconds until the next expiry (-1: none). */
int64_t shard__sessions_expire(shard *s);

/* Owner thread, once a stop was requested: close the acceptors (after accepting what is
 * queued) and start the drain clock. */
void shard__drain_begin(shard *s);

/* Owner thread: 1 when the shard may exit (no sessions left, or the drain deadline passed
 * and the rest got E_TIMEOUT). */
int shard__drain_done(shard *s);

/* Join time: frees what is left of the shard's session bookkeeping. */
void shard__sessions_free(shard *s);

#endif /* EC_SHARD_ACCEPTOR_H */
