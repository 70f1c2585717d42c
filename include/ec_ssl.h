/*
 * ec_ssl.h - TLS on an Event (OpenSSL 3): an I/O opset that event_read, event_write, the
 * event_io_* helpers and tryread_until go through unchanged.
 *
 * Because TLS records and handshakes run in both directions, a read may need E_WRITE and
 * a write may need E_READ: every call reports the interest that lets it progress in
 * *needmask, and callbacks must return that, not a fixed mask. The handshake happens
 * inside the first reads and writes; there is no separate handshake call.
 *
 * Threads: every function acting on an Event runs on the Event's owner shard, or on any
 * thread while the Event is not scheduled (built, or placed, but not scheduled yet).
 * Errors are logged (EC_LOG_SSL) with OpenSSL's reason and returned; nothing aborts.
 */
#ifndef EC_SSL_H
#define EC_SSL_H

#include "ec_growbuf.h"
#include "event.h"

#include <openssl/ssl.h>

typedef struct _ec_ssl_ctx ec_ssl_ctx;

/*
 * Called from OpenSSL's certificate verification for each certificate of the peer's
 * chain: return 1 to accept, 0 to reject. `preverify_ok` is OpenSSL's own verdict.
 */
typedef int (*ec_ssl_verify_callback_func)(ec_ssl_ctx *ctx, void *closure, int preverify_ok,
                                           const char *subject, const char *issuer,
                                           struct x509_store_ctx_st *x509ctx);

/* Private part of an ec_ssl_ctx. Do not touch. */
struct ec_ssl_priv {
  int role;         /* server or client */
  int hs_done;      /* the handshake has finished (seen by a read or write) */
  char errbuf[256]; /* error_string points here */
};

/*
 * The TLS state of one Event (its io_data), Momentum's public fields first:
 *   ssl_ctx        the SSL_CTX the session was made from (one reference held)
 *   ssl            the OpenSSL session
 *   error_code     the last OpenSSL error (ERR_get_error / SSL_get_verify_result), 0 if none
 *   error_string   text of the last error, "" if none (owned by the struct)
 *   verify_cb      optional extra certificate check (set after attaching, before the
 *                  handshake runs), with verify_closure
 */
struct _ec_ssl_ctx {
  struct ssl_ctx_st *ssl_ctx;
  struct ssl_st *ssl;
  int error_code;
  char *error_string;
  ec_ssl_verify_callback_func verify_cb;
  void *verify_closure;
  struct ec_ssl_priv _priv;
};

/* The Event's TLS state, or NULL for a plain Event. Owner thread. */
EC_API ec_ssl_ctx *ec_ssl_ctx_from_event(Event *e);

/* 1 for an Event with TLS attached, 0 otherwise (Momentum declares it void). Owner thread. */
EC_API int ec_ssl_is_event_ssl(Event *e);

/*
 * The ALPN protocol the handshake agreed on, copied NUL-terminated into buf: its length,
 * 0 when none was negotiated (the client offered none of the listener's `alpn` list, or
 * the handshake has not finished yet), -EINVAL (not a TLS Event, or no buffer), -ENOSPC
 * (buf too small; 256 bytes always suffice). Owner thread.
 */
EC_API int ec_ssl_get_alpn(Event *e, char *buf, size_t len);

/*
 * The subject (RFC 2253, e.g. "CN=alice,O=Example") of the peer's certificate, if the
 * peer sent one and it verified (on a server: the listener's client_auth is "optional" or
 * "required"; on a client: the server's chain): its length, 0 when there is none (not
 * sent, not checked, or the handshake has not finished), -EINVAL, -ENOSPC, -ENOMEM.
 * Owner thread.
 */
EC_API int ec_ssl_get_peer_subject(Event *e, char *buf, size_t len);

/*
 * A server context: TLS 1.2 and 1.3, Mozilla "intermediate" ciphers, no renegotiation, no
 * compression, session tickets on (random keys rotated hourly, shared by every connection
 * made from the context: no server-side session cache). Loads the PEM chain and
 * key and checks that they match. NULL on failure with the reason in err (if not NULL).
 * Free with SSL_CTX_free. Any thread.
 */
EC_API SSL_CTX *ec_ssl_server_ctx_new(const char *cert_chain_file, const char *key_file, char *err,
                                      size_t errlen);

/*
 * A client context that verifies the peer: TLS 1.2 and 1.3, trust anchors from `ca_file`
 * (PEM) or, when NULL, the system's default locations. NULL on failure (reason in err).
 * Free with SSL_CTX_free. Any thread.
 */
EC_API SSL_CTX *ec_ssl_client_ctx_new(const char *ca_file, char *err, size_t errlen);

/*
 * Implicit TLS on an accepted connection: installs the TLS opset and state on `e`
 * (takes a reference on ctx). The handshake runs inside the next event_read/event_write.
 * 0, or -errno: -EINVAL (bad arguments), -EEXIST (TLS already attached), -EPERM (not the
 * owner thread), -ENOMEM, -EPROTO (OpenSSL refused; logged). Owner thread.
 */
EC_API int ec_ssl_attach_server(Event *e, SSL_CTX *ctx);

/*
 * STARTTLS: upgrades a live plaintext Event to server-side TLS. Plaintext already read
 * ahead into `mtc` (may be NULL) is dropped first, so that bytes a client pipelined after
 * the STARTTLS command are never taken as if they had come through TLS (CVE-2011-0411).
 * Call after the reply to STARTTLS has been written completely. Returns the number of
 * bytes dropped (>= 0), or -errno as ec_ssl_attach_server. Owner thread.
 */
EC_API int ec_ssl_starttls(Event *e, SSL_CTX *ctx, minimal_tryread_construct *mtc);

/*
 * Client-side TLS on a connected Event: sends `hostname` as SNI and verifies the server's
 * certificate against it (SSL_set1_host); a mismatch fails the handshake (the read or
 * write returns -1, errno EPROTO; error_code holds the X509_V_ERR_* value). `hostname`
 * NULL: no SNI and no name check (the chain is still verified). Results as
 * ec_ssl_attach_server. Owner thread.
 */
EC_API int ec_ssl_attach_client(Event *e, SSL_CTX *ctx, const char *hostname);

#endif /* EC_SSL_H */
