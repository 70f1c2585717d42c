/*
 * framework/tls.h - server contexts built from a listener's `tls` section (internal; the
 * public half is include/ec_ssl.h). framework/listener.c reads the configuration into a
 * fw__tls_opts and framework/tls.c turns it into one SSL_CTX per listener, shared by all
 * shards (so are its session ticket keys: resumption works whichever shard a client
 * reaches).
 */
#ifndef EC_FRAMEWORK_TLS_H
#define EC_FRAMEWORK_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* "self-signed" as a certificate: a key and certificate generated in memory at start. */
#define FW__TLS_SELF_SIGNED "self-signed"

#define FW__TLS_AUTH_NONE     0
#define FW__TLS_AUTH_OPTIONAL 1
#define FW__TLS_AUTH_REQUIRED 2

/* One certificate chain and key; `names` (may be empty) are the SNI names it serves,
 * empty: the names the certificate itself carries (subjectAltName DNS, else CN). */
typedef struct fw__tls_cert {
  const char *label; /* for messages: "default" or the sni member's name */
  const char *certificate;
  const char *key;
  const char *const *names;
  int nnames;
} fw__tls_cert;

typedef struct fw__tls_opts {
  fw__tls_cert def;        /* served when SNI matches nothing (or is absent) */
  const fw__tls_cert *sni; /* further certificates chosen by SNI */
  int nsni;
  int min_version; /* TLS1_2_VERSION / TLS1_3_VERSION */
  int max_version;
  const char *ciphers;      /* TLS 1.2 list; NULL: Mozilla intermediate */
  const char *ciphersuites; /* TLS 1.3 list; NULL: Mozilla intermediate */
  const char *const *alpn;  /* server preference order */
  int nalpn;
  int client_auth;       /* FW__TLS_AUTH_* */
  const char *client_ca; /* PEM file of CAs that sign client certificates */
  int verify_depth;
  int session_tickets;     /* 0: none (every connection does a full handshake) */
  double session_lifetime; /* seconds a ticket stays valid; also the key rotation period */
  const char *const *ticket_key_files; /* 80-byte files; the first encrypts; may be empty */
  int nticket_key_files;
} fw__tls_opts;

/*
 * Builds the listener's server context. On failure returns NULL and writes the reason to
 * err and, when one setting is at fault, its name ("ciphers", "sni.mail.key", ...) to
 * *bad_key (else NULL), so the caller can point at its file:line. Any thread.
 */
SSL_CTX *fw__tls_server_ctx_build(const fw__tls_opts *o, char *err, size_t errlen,
                                  const char **bad_key);

#endif /* EC_FRAMEWORK_TLS_H */
