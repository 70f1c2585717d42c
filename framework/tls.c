/*
 * framework/tls.c - TLS as an I/O opset on the Event (OpenSSL 3).
 *
 * The opset wraps an SSL object kept in e->io_data (an ec_ssl_ctx). OpenSSL runs
 * non-blocking: SSL_ERROR_WANT_READ / WANT_WRITE become -1/EAGAIN with the matching
 * needmask, whichever direction the caller asked for, because a read may have to flush a
 * handshake message and a write may have to wait for one.
 *
 * OpenSSL's socket BIO writes with write(2) on Unix, which raises SIGPIPE when the peer
 * has gone. The framework promises that socket writes never do (event.h), so the SSL
 * object sits on a small BIO of our own: send(2) with MSG_NOSIGNAL and recv(2).
 */
#include "framework/tls.h"
#include "ec_ssl.h"
#include "framework/atomic.h"
#include "shard/acceptor.h"
#include "shard/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FW__ROLE_SERVER 1
#define FW__ROLE_CLIENT 2

/* A gathered write copies at most this much into one TLS record's worth of plaintext. */
#define FW__WRITEV_MAX 16384

/* Mozilla "intermediate" (v5.7) TLS 1.2 ciphers and TLS 1.3 suites. */
#define FW__CIPHERS_TLS12                                                                          \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"       \
  "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"         \
  "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define FW__SUITES_TLS13                                                                           \
  "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

static event_io_opset fw__tls_ops;

/* ---- errors ------------------------------------------------------------------------------- */

/* Writes OpenSSL's oldest queued reason (or `what`) into err and clears the queue, so
 * that one connection's failure does not show up as the next one's. Returns the code. */
static unsigned long fw__ssl_reason(const char *what, char *err, size_t errlen)
{
  unsigned long code = ERR_get_error();
  char reason[200];

  if (code != 0)
    ERR_error_string_n(code, reason, sizeof(reason));
  else
    snprintf(reason, sizeof(reason), "no OpenSSL reason");
  ERR_clear_error();
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s: %s", what, reason);
  return code;
}

static void fw__ctx_error(ec_ssl_ctx *c, int code, const char *what, const char *reason)
{
  c->error_code = code;
  snprintf(c->_priv.errbuf, sizeof(c->_priv.errbuf), "%s: %s", what, reason);
}

/* ---- the BIO: send(MSG_NOSIGNAL) / recv ------------------------------------------------- */

static BIO_METHOD *fw__bio_method;
static pthread_once_t fw__bio_once = PTHREAD_ONCE_INIT;

static int fw__bio_fd(BIO *b)
{
  return (int)(intptr_t)BIO_get_data(b);
}

static int fw__bio_write(BIO *b, const char *buf, int len)
{
  ssize_t n;

  BIO_clear_retry_flags(b);
  do
    n = send(fw__bio_fd(b), buf, (size_t)len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    BIO_set_retry_write(b);
  return (int)n;
}

static int fw__bio_read(BIO *b, char *buf, int len)
{
  ssize_t n;

  BIO_clear_retry_flags(b);
  do
    n = recv(fw__bio_fd(b), buf, (size_t)len, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    BIO_set_retry_read(b);
  return (int)n;
}

static long fw__bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
  switch (cmd) {
  case BIO_CTRL_FLUSH:
    return 1; /* nothing buffered here */
  case BIO_C_GET_FD:
    if (ptr != NULL)
      *(int *)ptr = fw__bio_fd(b);
    return fw__bio_fd(b);
  default:
    return 0;
  }
}

static int fw__bio_create(BIO *b)
{
  BIO_set_init(b, 1);
  return 1;
}

static void fw__bio_init_method(void)
{
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ecshard socket");

  if (m == NULL)
    return;
  if (!BIO_meth_set_write(m, fw__bio_write) || !BIO_meth_set_read(m, fw__bio_read) ||
      !BIO_meth_set_ctrl(m, fw__bio_ctrl) || !BIO_meth_set_create(m, fw__bio_create)) {
    BIO_meth_free(m);
    return;
  }
  fw__bio_method = m; /* process lifetime: shared by every TLS Event */
}

static BIO *fw__bio_new(int fd)
{
  BIO *b;

  pthread_once(&fw__bio_once, fw__bio_init_method);
  if (fw__bio_method == NULL || (b = BIO_new(fw__bio_method)) == NULL)
    return NULL;
  BIO_set_data(b, (void *)(intptr_t)fd);
  return b;
}

/* ---- the opset ---------------------------------------------------------------------------- */

static ec_ssl_ctx *fw__tls(Event *e)
{
  return e->io_opset == &fw__tls_ops ? (ec_ssl_ctx *)e->io_data : NULL;
}

/*
 * Maps an SSL_read/SSL_write failure to -1 with errno and *needmask. Only real failures
 * (not WANT_*) are logged, at DINFO: a peer sending garbage is not our error.
 */
static int fw__tls_fail(Event *e, ec_ssl_ctx *c, int ret, int *needmask, const char *op)
{
  int saved = errno;
  int err = SSL_get_error(c->ssl, ret);
  unsigned long code;
  long vr;
  char reason[200];

  switch (err) {
  case SSL_ERROR_WANT_READ:
    *needmask = E_READ;
    errno = EAGAIN;
    return -1;
  case SSL_ERROR_WANT_WRITE:
    *needmask = E_WRITE;
    errno = EAGAIN;
    return -1;
  case SSL_ERROR_ZERO_RETURN:
    return 0; /* close_notify: a clean end of stream */
  case SSL_ERROR_SYSCALL:
    code = ERR_peek_error();
    ERR_clear_error();
    if (code == 0 && saved != 0 && saved != EAGAIN) {
      fw__ctx_error(c, 0, op, strerror(saved));
      errno = saved == EPIPE ? EPIPE : ECONNRESET;
    } else {
      /* End of stream without close_notify (OpenSSL 3 reports it as an SSL error with
       * SSL_OP_IGNORE_UNEXPECTED_EOF off, as a syscall error with ret 0 otherwise). */
      fw__ctx_error(c, (int)code, op, "unexpected end of stream");
      errno = ECONNRESET;
    }
    break;
  default:
    code = ERR_peek_error();
    ERR_error_string_n(code, reason, sizeof(reason));
    ERR_clear_error();
    vr = SSL_get_verify_result(c->ssl);
    if (ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      fw__ctx_error(c, (int)code, op, reason); /* the peer went away mid-stream */
      errno = ECONNRESET;
      break;
    }
    if (vr != X509_V_OK) {
      fw__ctx_error(c, (int)vr, op, X509_verify_cert_error_string(vr));
    } else {
      fw__ctx_error(c, (int)code, op, reason);
    }
    errno = EPROTO;
    break;
  }
  ec_debug_printf(DINFO, EC_LOG_SSL, "TLS %s on fd %d failed: %s", op, e->fd, c->error_string);
  return -1;
}

/*
 * The first time a server session sees its handshake finished, the session leaves the
 * acceptor's handshake phase (listener handshake_timeout) for the idle one.
 */
static inline void fw__hs_check(Event *e, ec_ssl_ctx *c)
{
  if (!c->_priv.hs_done && c->_priv.role == FW__ROLE_SERVER && SSL_is_init_finished(c->ssl)) {
    c->_priv.hs_done = 1;
    if (e->_priv.session != NULL)
      shard__session_tls_phase(e, 1);
    ec_debug_printf(DDEBUG, EC_LOG_SSL, "TLS handshake done on fd %d: %s %s, %s", e->fd,
                    SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
                    SSL_session_reused(c->ssl) ? "resumed" : "full");
  }
}

/*
 * A read smaller than the record leaves decrypted bytes inside OpenSSL, where the poller
 * cannot see them: a callback that stops reading before EAGAIN (a budget of reads, a
 * line at a time) and waits for E_READ would wait forever. So the shard is asked to
 * dispatch E_READ again after this callback, as if the socket were still readable.
 */
static void fw__more_buffered(Event *e, ec_ssl_ctx *c)
{
  shard *s;

  if (SSL_pending(c->ssl) <= 0 || ec__load(&e->_priv.state) != SHARD__EV_SCHEDULED)
    return;
  s = shard__self();
  if (s != NULL && s->id == e->_priv.owner)
    shard__request_dispatch(s, e, E_READ);
}

static int fw__tls_read(Event *e, void *buf, int len, int *needmask)
{
  ec_ssl_ctx *c = fw__tls(e);
  size_t n = 0;
  int ret;

  *needmask = E_READ;
  if (c == NULL || c->ssl == NULL || len < 0 || (buf == NULL && len > 0)) {
    errno = c == NULL || c->ssl == NULL ? EBADF : EINVAL;
    return -1;
  }
  if (len == 0)
    return 0;
  ERR_clear_error();
  errno = 0;
  ret = SSL_read_ex(c->ssl, buf, (size_t)len, &n);
  fw__hs_check(e, c);
  if (ret > 0) {
    fw__more_buffered(e, c);
    return (int)n;
  }
  return fw__tls_fail(e, c, ret, needmask, "read");
}

static int fw__tls_write(Event *e, const void *buf, int len, int *needmask)
{
  ec_ssl_ctx *c = fw__tls(e);
  size_t n = 0;
  int ret;

  *needmask = E_WRITE;
  if (c == NULL || c->ssl == NULL || len < 0 || (buf == NULL && len > 0)) {
    errno = c == NULL || c->ssl == NULL ? EBADF : EINVAL;
    return -1;
  }
  if (len == 0)
    return 0;
  ERR_clear_error();
  errno = 0;
  ret = SSL_write_ex(c->ssl, buf, (size_t)len, &n);
  fw__hs_check(e, c);
  if (ret > 0)
    return (int)n;
  if (fw__tls_fail(e, c, ret, needmask, "write") == 0) {
    errno = EPIPE; /* the peer closed: a write cannot succeed any more */
  }
  return -1;
}

/*
 * One SSL_write of the leading bytes of iov, copied to the stack (at most one record).
 * A retry after EAGAIN passes the same leading bytes again (event_io keeps them pending),
 * which SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows from a different address.
 */
static ssize_t fw__tls_writev(Event *e, const struct iovec *iov, int iovcnt, int *needmask)
{
  char buf[FW__WRITEV_MAX];
  size_t len = 0;

  for (int i = 0; i < iovcnt && len < sizeof(buf); i++) {
    size_t take = iov[i].iov_len;

    if (take > sizeof(buf) - len)
      take = sizeof(buf) - len;
    memcpy(buf + len, iov[i].iov_base, take);
    len += take;
  }
  return fw__tls_write(e, buf, (int)len, needmask);
}

static void fw__ssl_ctx_free(ec_ssl_ctx *c)
{
  if (c == NULL)
    return;
  SSL_free(c->ssl); /* frees the BIO too */
  SSL_CTX_free(c->ssl_ctx);
  ec_free(MEMTYPE_EC_SSL_CTX, c);
}

/* Best-effort close_notify: one non-blocking SSL_shutdown, never waiting for the peer's. */
static int fw__tls_close(Event *e)
{
  ec_ssl_ctx *c = fw__tls(e);
  int rc;

  if (c != NULL) {
    if (SSL_is_init_finished(c->ssl))
      (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
    fw__ssl_ctx_free(c);
    e->io_data = NULL;
  }
  rc = close(e->fd);
  if (rc < 0 && errno == EINTR)
    rc = 0; /* Linux has released the descriptor; retrying could close a reused one */
  return rc;
}

static void fw__tls_dup(Event *dst, Event *src)
{
  dst->io_data = src->io_data;
  src->io_data = NULL;
}

static void fw__tls_release(Event *e)
{
  fw__ssl_ctx_free(fw__tls(e));
  e->io_data = NULL;
}

static event_io_opset fw__tls_ops = {
    .event_accept = NULL,
    .event_read = fw__tls_read,
    .event_write = fw__tls_write,
    .event_close = fw__tls_close,
    .event_sendfile = NULL,
    .event_dup = fw__tls_dup,
    .event_release = fw__tls_release,
    .event_writev = fw__tls_writev,
};

/* ---- public API --------------------------------------------------------------------------- */

/* Owner thread, or any thread while the Event is not scheduled (as event_read): nobody
 * else can be running its I/O then. */
static int fw__owner_ok(Event *e, const char *fn)
{
  shard *s;

  if (e->_priv.owner < 0 || ec__load(&e->_priv.state) == SHARD__EV_IDLE)
    return 1;
  s = shard__self();
  if (s != NULL && s->id == e->_priv.owner)
    return 1;
  ec_debug_printf(DERROR, EC_LOG_SSL, "%s(fd %d): must be called on the Event's shard %d", fn,
                  e->fd, e->_priv.owner);
  return 0;
}

ec_ssl_ctx *ec_ssl_ctx_from_event(Event *e)
{
  return e != NULL ? fw__tls(e) : NULL;
}

int ec_ssl_is_event_ssl(Event *e)
{
  return ec_ssl_ctx_from_event(e) != NULL;
}

int ec_ssl_get_alpn(Event *e, char *buf, size_t len)
{
  ec_ssl_ctx *c = ec_ssl_ctx_from_event(e);
  const unsigned char *p = NULL;
  unsigned n = 0;

  if (c == NULL || c->ssl == NULL || buf == NULL || len == 0)
    return -EINVAL;
  SSL_get0_alpn_selected(c->ssl, &p, &n);
  if (p == NULL || n == 0) {
    buf[0] = '\0';
    return 0;
  }
  if (n >= len)
    return -ENOSPC;
  memcpy(buf, p, n);
  buf[n] = '\0';
  return (int)n;
}

int ec_ssl_get_peer_subject(Event *e, char *buf, size_t len)
{
  ec_ssl_ctx *c = ec_ssl_ctx_from_event(e);
  X509 *peer;
  BIO *mem;
  char *data;
  long n;
  int rc;

  if (c == NULL || c->ssl == NULL || buf == NULL || len == 0)
    return -EINVAL;
  buf[0] = '\0';
  peer = SSL_get0_peer_certificate(c->ssl);
  if (peer == NULL || !SSL_is_init_finished(c->ssl) || SSL_get_verify_result(c->ssl) != X509_V_OK)
    return 0;
  /* A server that asks for no certificate verifies none: only report a checked one. */
  if (c->_priv.role == FW__ROLE_SERVER && !(SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER))
    return 0;
  if ((mem = BIO_new(BIO_s_mem())) == NULL)
    return -ENOMEM;
  if (X509_NAME_print_ex(mem, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) < 0) {
    BIO_free(mem);
    return -ENOMEM;
  }
  n = BIO_get_mem_data(mem, &data);
  if (n < 0 || (size_t)n >= len) {
    rc = -ENOSPC;
  } else {
    memcpy(buf, data, (size_t)n);
    buf[n] = '\0';
    rc = n > 0 ? (int)n : 0;
  }
  BIO_free(mem);
  return rc;
}

/* SSL ex_data index 0 is the application data slot (SSL_set_app_data). */
static int fw__verify_cb(int ok, X509_STORE_CTX *xs)
{
  SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
  ec_ssl_ctx *c = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
  X509 *cert;
  char subject[256] = "", issuer[256] = "";

  if (c == NULL || c->verify_cb == NULL)
    return ok;
  cert = X509_STORE_CTX_get_current_cert(xs);
  if (cert != NULL) {
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
    X509_NAME_oneline(X509_get_issuer_name(cert), issuer, sizeof(issuer));
  }
  return c->verify_cb(c, c->verify_closure, ok, subject, issuer, xs);
}

static SSL_CTX *fw__ctx_common(const SSL_METHOD *method, char *err, size_t errlen)
{
  SSL_CTX *ctx = SSL_CTX_new(method);

  if (ctx == NULL) {
    fw__ssl_reason("SSL_CTX_new", err, errlen);
    return NULL;
  }
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_cipher_list(ctx, FW__CIPHERS_TLS12)) {
    fw__ssl_reason("TLS versions / ciphers", err, errlen);
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  /* event_io retries a write with the bytes still pending, from its own buffer (a moved
   * address) and possibly with more appended; partial writes let a large write progress
   * record by record, as send(2) would. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

/* ---- server contexts ---------------------------------------------------------------------- */

#define FW__TKEYS_MAX 8 /* ticket keys accepted for decryption */

/* A session ticket key: what nginx's 80-byte ssl_session_ticket_key files hold. */
typedef struct fw__tkey {
  unsigned char name[16];
  unsigned char aes[32];
  unsigned char hmac[32];
} fw__tkey;

/*
 * What a listener's contexts share, owned by its default SSL_CTX (ex_data, freed with it).
 * SNI contexts point at the same record; OpenSSL keeps the default context alive (as the
 * session context) as long as any connection made from it, so the SNI contexts and this
 * record outlive every connection.
 */
typedef struct fw__srv {
  SSL_CTX *owner;
  SSL_CTX **sni_ctx; /* one per sni entry */
  char ***sni_names; /* configured names per entry (NULL: the certificate's own) */
  int *sni_nnames;
  int nsni;
  unsigned char *alpn; /* wire format: length-prefixed names */
  unsigned alpn_len;
  /* Session ticket keys: [0] encrypts, all decrypt. With no key files they are random and
   * rotate every `period_ns`; the previous key still decrypts for one more period. */
  pthread_mutex_t tk_lock;
  fw__tkey tk[FW__TKEYS_MAX];
  int ntk;
  int tk_rotate;
  uint64_t tk_period_ns, tk_since_ns;
  /* Session id context: a digest of what a session proves (certificate, client
   * verification). A ticket from a listener configured otherwise, even one sharing
   * ticket_key_files, must not resume here: OpenSSL refuses a session whose context
   * differs, so a session without a client certificate cannot skip client_auth. */
  unsigned char sid_ctx[SSL_MAX_SID_CTX_LENGTH];
} fw__srv;

static int fw__srv_idx = -1;
static pthread_once_t fw__srv_once = PTHREAD_ONCE_INIT;

static void fw__srv_free(fw__srv *x)
{
  if (x == NULL)
    return;
  for (int i = 0; i < x->nsni; i++) {
    SSL_CTX_free(x->sni_ctx[i]);
    for (int j = 0; x->sni_names[i] != NULL && j < x->sni_nnames[i]; j++)
      ec_free(MEMTYPE_CONFIG, x->sni_names[i][j]);
    ec_free(MEMTYPE_CONFIG, x->sni_names[i]);
  }
  ec_free(MEMTYPE_CONFIG, x->sni_ctx);
  ec_free(MEMTYPE_CONFIG, x->sni_names);
  ec_free(MEMTYPE_CONFIG, x->sni_nnames);
  ec_free(MEMTYPE_CONFIG, x->alpn);
  OPENSSL_cleanse(x->tk, sizeof(x->tk));
  pthread_mutex_destroy(&x->tk_lock);
  ec_free(MEMTYPE_CONFIG, x);
}

static void fw__srv_exfree(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
  fw__srv *x = ptr;

  (void)ad, (void)idx, (void)argl, (void)argp;
  if (x != NULL && x->owner == parent)
    fw__srv_free(x);
}

static void fw__srv_init_idx(void)
{
  fw__srv_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, fw__srv_exfree);
}

static fw__srv *fw__srv_of(SSL *ssl)
{
  return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), fw__srv_idx);
}

static uint64_t fw__now_ns(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int fw__tkey_set(EVP_MAC_CTX *hctx, const fw__tkey *k)
{
  OSSL_PARAM p[3];

  p[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac));
  p[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
  p[2] = OSSL_PARAM_construct_end();
  return EVP_MAC_CTX_set_params(hctx, p);
}

/*
 * Session ticket encryption (RFC 5077 layout, as OpenSSL's own: key name, AES-256-CBC,
 * HMAC-SHA256). One context per listener serves every shard, so a ticket issued on one
 * shard opens on any other. Returns 1 (ok), 2 (ok, but issue a fresh ticket: an older key
 * decrypted it), 0 (unknown key: full handshake), -1 (error).
 */
static int fw__ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
  fw__srv *x = fw__srv_of(ssl);
  fw__tkey k;
  int found = -1;

  if (x == NULL)
    return -1;
  pthread_mutex_lock(&x->tk_lock);
  if (enc && x->tk_rotate) {
    uint64_t now = fw__now_ns();

    if (now - x->tk_since_ns >= x->tk_period_ns) {
      fw__tkey fresh;

      if (RAND_bytes((unsigned char *)&fresh, sizeof(fresh)) == 1) {
        x->tk[1] = x->tk[0];
        x->tk[0] = fresh;
        x->ntk = 2;
        x->tk_since_ns = now;
      }
    }
  }
  if (enc) {
    found = 0;
  } else {
    for (int i = 0; i < x->ntk && found < 0; i++)
      if (memcmp(key_name, x->tk[i].name, sizeof(x->tk[i].name)) == 0)
        found = i;
  }
  if (found >= 0)
    k = x->tk[found];
  pthread_mutex_unlock(&x->tk_lock);
  if (found < 0)
    return 0;
  if (enc) {
    if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1)
      return -1;
    memcpy(key_name, k.name, sizeof(k.name));
    if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1 ||
        fw__tkey_set(hctx, &k) != 1)
      return -1;
    OPENSSL_cleanse(&k, sizeof(k));
    return 1;
  }
  if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1 ||
      fw__tkey_set(hctx, &k) != 1)
    return -1;
  OPENSSL_cleanse(&k, sizeof(k));
  return found == 0 ? 1 : 2;
}

/* Server-preference ALPN: the first configured protocol the client also offers. A client
 * offering none of them gets no ALPN extension (the protocol may still refuse it). */
static int fw__alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
  fw__srv *x = arg;
  unsigned char *sel = NULL;

  (void)ssl;
  if (x == NULL || x->alpn_len == 0 || inlen == 0)
    return SSL_TLSEXT_ERR_NOACK;
  if (SSL_select_next_proto(&sel, outlen, x->alpn, x->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* "*.example.com" covers exactly one label in front of example.com. */
static int fw__name_match(const char *pattern, const char *host)
{
  if (pattern[0] == '*' && pattern[1] == '.') {
    const char *dot = strchr(host, '.');

    return dot != NULL && dot != host && strcasecmp(dot + 1, pattern + 2) == 0;
  }
  return strcasecmp(pattern, host) == 0;
}

/* SNI: switch the connection to the first sni entry that names the requested host. */
static int fw__sni_cb(SSL *ssl, int *alert, void *arg)
{
  fw__srv *x = arg;
  const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

  (void)alert;
  if (x == NULL || host == NULL)
    return SSL_TLSEXT_ERR_OK; /* the default certificate */
  for (int i = 0; i < x->nsni; i++) {
    int hit = 0;

    if (x->sni_names[i] != NULL) {
      for (int j = 0; j < x->sni_nnames[i] && !hit; j++)
        hit = fw__name_match(x->sni_names[i][j], host);
    } else {
      X509 *cert = SSL_CTX_get0_certificate(x->sni_ctx[i]);

      hit = cert != NULL && X509_check_host(cert, host, 0, 0, NULL) == 1;
    }
    if (hit) {
      if (SSL_set_SSL_CTX(ssl, x->sni_ctx[i]) == NULL)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

/*
 * A development certificate made at start: EC P-256, valid for a year, for localhost,
 * 127.0.0.1, ::1 and this machine's host name. Nothing to ship, nothing any client trusts.
 */
static int fw__self_signed_save(const char *path, X509 *x, EVP_PKEY *pkey, char *err,
                                size_t errlen);

static int fw__self_signed(SSL_CTX *ctx, const char *save, char *err, size_t errlen)
{
  EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *x = X509_new();
  X509V3_CTX v3;
  X509_EXTENSION *ext = NULL;
  char host[256] = "localhost", san[512];
  unsigned char serial[8];
  BIGNUM *bn = NULL;
  int ok = 0;

  if (pkey == NULL || x == NULL || RAND_bytes(serial, sizeof(serial)) != 1)
    goto out;
  gethostname(host, sizeof(host) - 1);
  host[sizeof(host) - 1] = '\0';
  snprintf(san, sizeof(san), "DNS:localhost,IP:127.0.0.1,IP:::1%s%s",
           strcmp(host, "localhost") != 0 && host[0] != '\0' ? ",DNS:" : "",
           strcmp(host, "localhost") != 0 ? host : "");
  serial[0] &= 0x7f; /* positive */
  if ((bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL ||
      BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
    goto out;
  X509_set_version(x, 2);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 365L * 86400);
  X509_set_pubkey(x, pkey);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)host, -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  if ((ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san)) == NULL ||
      !X509_add_ext(x, ext, -1) || !X509_sign(x, pkey, EVP_sha256()))
    goto out;
  ok = SSL_CTX_use_certificate(ctx, x) == 1 && SSL_CTX_use_PrivateKey(ctx, pkey) == 1;
  if (ok && save != NULL && fw__self_signed_save(save, x, pkey, err, errlen) < 0) {
    ok = -1; /* err says why */
    goto out;
  }
out:
  if (ok == 0)
    fw__ssl_reason("generating a self-signed certificate", err, errlen);
  else if (ok > 0)
    ec_debug_printf(DWARNING, EC_LOG_SSL,
                    "TLS: using a self-signed certificate generated at start (CN %s)%s%s; for "
                    "development only, clients will not trust it",
                    host, save ? ", saved to " : "", save ? save : "");
  X509_EXTENSION_free(ext);
  BN_free(bn);
  X509_free(x);
  EVP_PKEY_free(pkey);
  return ok > 0 ? 0 : -1;
}

/*
 * Writes the generated key and certificate to `path` (one PEM file, mode 0600) through a
 * temporary file and a rename, so a crash never leaves half a key behind and the next
 * start (or the next listener naming the same file) loads the same certificate, the way
 * Postfix's snakeoil certificate is made once.
 */
static int fw__self_signed_save(const char *path, X509 *x, EVP_PKEY *pkey, char *err, size_t errlen)
{
  char tmp[4096];
  FILE *f;
  int fd, ok;

  if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
    snprintf(err, errlen, "%s: path too long", path);
    return -1;
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
    snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  ok = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1 && PEM_write_X509(f, x) == 1;
  ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    snprintf(err, errlen, "%s: cannot write the self-signed certificate: %s", path,
             strerror(errno ? errno : EIO));
    unlink(tmp);
    return -1;
  }
  return 0;
}

/* certificate = "self-signed" with a key path: the saved pair if the file exists, else a
 * new pair saved there. Without a key path: a new pair in memory only. */
static int fw__self_signed_load_or_make(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
  if (path != NULL && access(path, F_OK) == 0) {
    /* One read of the file for both halves: another process starting beside us may
     * replace it (rename) between two opens, and a key from one pair with the
     * certificate of another would not match. */
    BIO *bio = BIO_new_file(path, "r");
    EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    X509 *x = pkey ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    int ok = x != NULL && SSL_CTX_use_certificate(ctx, x) == 1 &&
             SSL_CTX_use_PrivateKey(ctx, pkey) == 1 && SSL_CTX_check_private_key(ctx) == 1;

    X509_free(x);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    if (!ok) {
      fw__ssl_reason(path, err, errlen);
      return -1;
    }
    ec_debug_printf(DNOTICE, EC_LOG_SSL, "TLS: using the self-signed certificate saved in %s",
                    path);
    return 0;
  }
  return fw__self_signed(ctx, path, err, errlen);
}

/* Reads 80-byte ticket key files (nginx's format: 16 bytes of name, 32 of HMAC-SHA256 key,
 * 32 of AES-256 key). */
static int fw__ticket_keys_load(fw__srv *x, const fw__tls_opts *o, char *err, size_t errlen)
{
  for (int i = 0; i < o->nticket_key_files; i++) {
    unsigned char buf[81];
    FILE *f = fopen(o->ticket_key_files[i], "rb");
    size_t n;

    if (f == NULL) {
      snprintf(err, errlen, "%s: %s", o->ticket_key_files[i], strerror(errno));
      return -1;
    }
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    if (n != 80) {
      snprintf(err, errlen,
               "%s: a ticket key file holds exactly 80 bytes (openssl rand 80), not %zu",
               o->ticket_key_files[i], n);
      OPENSSL_cleanse(buf, sizeof(buf));
      return -1;
    }
    memcpy(x->tk[i].name, buf, 16);
    memcpy(x->tk[i].hmac, buf + 16, 32); /* nginx's order: name, HMAC key, AES key */
    memcpy(x->tk[i].aes, buf + 48, 32);
    OPENSSL_cleanse(buf, sizeof(buf));
  }
  x->ntk = o->nticket_key_files;
  return 0;
}

static void fw__set_bad(const char **bad_key, const char *key)
{
  if (bad_key != NULL)
    *bad_key = key;
}

/* One fully configured server context for certificate `c` (the default or an SNI one). */
static SSL_CTX *fw__server_one(const fw__tls_opts *o, const fw__tls_cert *c, fw__srv *x, char *err,
                               size_t errlen, const char **bad_key, char *keybuf, size_t keylen)
{
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  const char *prefix = c == &o->def ? "" : "sni.";

  if (ctx == NULL) {
    fw__ssl_reason("SSL_CTX_new", err, errlen);
    return NULL;
  }
  if (!SSL_CTX_set_min_proto_version(ctx, o->min_version) ||
      !SSL_CTX_set_max_proto_version(ctx, o->max_version)) {
    fw__ssl_reason("TLS versions", err, errlen);
    fw__set_bad(bad_key, "min_version");
    goto fail;
  }
  if (!SSL_CTX_set_cipher_list(ctx, o->ciphers ? o->ciphers : FW__CIPHERS_TLS12)) {
    fw__ssl_reason("ciphers", err, errlen);
    fw__set_bad(bad_key, "ciphers");
    goto fail;
  }
  if (!SSL_CTX_set_ciphersuites(ctx, o->ciphersuites ? o->ciphersuites : FW__SUITES_TLS13)) {
    fw__ssl_reason("ciphersuites", err, errlen);
    fw__set_bad(bad_key, "ciphersuites");
    goto fail;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  /* Tickets carry resumption state, so shards share nothing but the ticket keys: no
   * server-side cache. One ticket per connection is enough for a client to resume. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_session_id_context(ctx, x->sid_ctx, sizeof(x->sid_ctx));
  if (o->session_tickets) {
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, (long)o->session_lifetime);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, fw__ticket_cb);
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  if (c->certificate != NULL && strcmp(c->certificate, FW__TLS_SELF_SIGNED) == 0) {
    snprintf(keybuf, keylen, "%scertificate", prefix);
    if (fw__self_signed_load_or_make(ctx, c->key, err, errlen) < 0) {
      fw__set_bad(bad_key, keybuf);
      goto fail;
    }
  } else {
    if (c->certificate == NULL || c->key == NULL) {
      snprintf(err, errlen, "%s%s needs both certificate and key (or certificate = \"%s\")",
               prefix[0] ? "sni entry " : "", prefix[0] ? c->label : "the tls section",
               FW__TLS_SELF_SIGNED);
      goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, c->certificate) != 1) {
      fw__ssl_reason(c->certificate, err, errlen);
      snprintf(keybuf, keylen, "%scertificate", prefix);
      fw__set_bad(bad_key, keybuf);
      goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1) {
      fw__ssl_reason(c->key, err, errlen);
      snprintf(keybuf, keylen, "%skey", prefix);
      fw__set_bad(bad_key, keybuf);
      goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      fw__ssl_reason("the key does not match the certificate", err, errlen);
      snprintf(keybuf, keylen, "%skey", prefix);
      fw__set_bad(bad_key, keybuf);
      goto fail;
    }
  }
  if (o->client_auth != FW__TLS_AUTH_NONE) {
    STACK_OF(X509_NAME) * names;

    if (o->client_ca == NULL) {
      snprintf(err, errlen, "client_auth needs client_ca (the CAs that sign client certificates)");
      fw__set_bad(bad_key, "client_auth");
      goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, o->client_ca, NULL) != 1 ||
        (names = SSL_load_client_CA_file(o->client_ca)) == NULL) {
      fw__ssl_reason(o->client_ca, err, errlen);
      fw__set_bad(bad_key, "client_ca");
      goto fail;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(
        ctx,
        SSL_VERIFY_PEER |
            (o->client_auth == FW__TLS_AUTH_REQUIRED ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        fw__verify_cb);
    SSL_CTX_set_verify_depth(ctx, o->verify_depth > 0 ? o->verify_depth : 4);
  }
  if (x->alpn_len > 0)
    SSL_CTX_set_alpn_select_cb(ctx, fw__alpn_cb, x);
  if (!SSL_CTX_set_ex_data(ctx, fw__srv_idx, x)) {
    fw__ssl_reason("SSL_CTX_set_ex_data", err, errlen);
    goto fail;
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

SSL_CTX *fw__tls_server_ctx_build(const fw__tls_opts *o, char *err, size_t errlen,
                                  const char **bad_key)
{
  static __thread char keybuf[128];
  fw__srv *x;
  SSL_CTX *ctx = NULL;
  size_t wire = 0;

  fw__set_bad(bad_key, NULL);
  pthread_once(&fw__srv_once, fw__srv_init_idx);
  if (fw__srv_idx < 0) {
    snprintf(err, errlen, "no OpenSSL ex_data index");
    return NULL;
  }
  if (o->min_version > o->max_version) {
    snprintf(err, errlen, "min_version is above max_version");
    fw__set_bad(bad_key, "min_version");
    return NULL;
  }
  if (o->nticket_key_files > FW__TKEYS_MAX) {
    snprintf(err, errlen, "at most %d ticket key files", FW__TKEYS_MAX);
    fw__set_bad(bad_key, "ticket_key_files");
    return NULL;
  }
  if ((x = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*x))) == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  memset(x, 0, sizeof(*x));
  pthread_mutex_init(&x->tk_lock, NULL);
  for (int i = 0; i < o->nalpn; i++) {
    size_t n = strlen(o->alpn[i]);

    if (n == 0 || n > 255) {
      snprintf(err, errlen, "an ALPN protocol name has 1 to 255 bytes ('%s')", o->alpn[i]);
      fw__set_bad(bad_key, "alpn");
      goto fail;
    }
    wire += n + 1;
  }
  if (wire > 0) {
    unsigned char *p;

    if (wire > 65535 || (x->alpn = ec_malloc_size(MEMTYPE_CONFIG, wire)) == NULL) {
      snprintf(err, errlen, "ALPN list too long");
      fw__set_bad(bad_key, "alpn");
      goto fail;
    }
    p = x->alpn;
    for (int i = 0; i < o->nalpn; i++) {
      size_t n = strlen(o->alpn[i]);

      *p++ = (unsigned char)n;
      memcpy(p, o->alpn[i], n);
      p += n;
    }
    x->alpn_len = (unsigned)wire;
  }
  if (o->session_tickets) {
    if (o->nticket_key_files > 0) {
      if (fw__ticket_keys_load(x, o, err, errlen) < 0) {
        fw__set_bad(bad_key, "ticket_key_files");
        goto fail;
      }
    } else {
      if (RAND_bytes((unsigned char *)&x->tk[0], sizeof(x->tk[0])) != 1) {
        fw__ssl_reason("ticket key", err, errlen);
        goto fail;
      }
      x->ntk = 1;
      x->tk_rotate = 1;
      x->tk_period_ns = (uint64_t)(o->session_lifetime * 1e9);
      x->tk_since_ns = fw__now_ns();
    }
  }
  {
    char what[2048];
    unsigned int dlen = 0;
    unsigned char md[EVP_MAX_MD_SIZE];

    snprintf(what, sizeof(what), "ecshard|%s|%d|%s|%d",
             o->def.certificate ? o->def.certificate : "", o->client_auth,
             o->client_ca ? o->client_ca : "", o->verify_depth);
    if (EVP_Digest(what, strlen(what), md, &dlen, EVP_sha256(), NULL) != 1 ||
        dlen < sizeof(x->sid_ctx)) {
      fw__ssl_reason("session id context", err, errlen);
      goto fail;
    }
    memcpy(x->sid_ctx, md, sizeof(x->sid_ctx));
  }
  ctx = fw__server_one(o, &o->def, x, err, errlen, bad_key, keybuf, sizeof(keybuf));
  if (ctx == NULL)
    goto fail;
  x->owner = ctx; /* from here on the context frees x */
  if (o->nsni > 0) {
    x->sni_ctx = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*x->sni_ctx) * (size_t)o->nsni);
    x->sni_names = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*x->sni_names) * (size_t)o->nsni);
    x->sni_nnames = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*x->sni_nnames) * (size_t)o->nsni);
    if (x->sni_ctx == NULL || x->sni_names == NULL || x->sni_nnames == NULL) {
      snprintf(err, errlen, "out of memory");
      goto fail_ctx;
    }
    for (int i = 0; i < o->nsni; i++) {
      const fw__tls_cert *c = &o->sni[i];
      SSL_CTX *sc = fw__server_one(o, c, x, err, errlen, bad_key, keybuf, sizeof(keybuf));

      if (sc == NULL) {
        /* Name the entry: "sni.NAME.key". */
        if (bad_key != NULL && *bad_key == keybuf) {
          const char *tail = strcmp(keybuf + 4, "key") == 0 ? "key" : "certificate";

          snprintf(keybuf, sizeof(keybuf), "sni.%s.%s", c->label, tail);
        }
        goto fail_ctx;
      }
      x->sni_ctx[x->nsni] = sc;
      x->sni_names[x->nsni] = NULL;
      x->sni_nnames[x->nsni] = 0;
      x->nsni++;
      if (c->nnames > 0) {
        char **names = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*names) * (size_t)c->nnames);

        if (names == NULL) {
          snprintf(err, errlen, "out of memory");
          goto fail_ctx;
        }
        x->sni_names[x->nsni - 1] = names;
        for (int j = 0; j < c->nnames; j++) {
          if ((names[j] = ec_mt_strdup(MEMTYPE_CONFIG, c->names[j])) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail_ctx;
          }
          x->sni_nnames[x->nsni - 1] = j + 1;
        }
      }
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, fw__sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, x);
  }
  return ctx;
fail_ctx:
  SSL_CTX_free(ctx); /* frees x */
  return NULL;
fail:
  fw__srv_free(x);
  return NULL;
}

SSL_CTX *ec_ssl_server_ctx_new(const char *cert_chain_file, const char *key_file, char *err,
                               size_t errlen)
{
  fw__tls_opts o = {
      .def = {.label = "default", .certificate = cert_chain_file, .key = key_file},
      .min_version = TLS1_2_VERSION,
      .max_version = TLS1_3_VERSION,
      .session_tickets = 1,
      .session_lifetime = 3600,
  };
  char buf[256];
  SSL_CTX *ctx;

  if (cert_chain_file == NULL || key_file == NULL) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "certificate and key files are required");
    return NULL;
  }
  if (err == NULL || errlen == 0) {
    err = buf;
    errlen = sizeof(buf);
  }
  ctx = fw__tls_server_ctx_build(&o, err, errlen, NULL);
  if (ctx == NULL)
    ec_debug_printf(DERROR, EC_LOG_SSL, "ec_ssl_server_ctx_new: %s", err);
  return ctx;
}

SSL_CTX *ec_ssl_client_ctx_new(const char *ca_file, char *err, size_t errlen)
{
  SSL_CTX *ctx = fw__ctx_common(TLS_client_method(), err, errlen);
  int ok;

  if (ctx == NULL)
    return NULL;
  ok = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                       : SSL_CTX_set_default_verify_paths(ctx);
  if (ok != 1) {
    fw__ssl_reason(ca_file != NULL ? ca_file : "system trust store", err, errlen);
    ec_debug_printf(DERROR, EC_LOG_SSL, "ec_ssl_client_ctx_new: %s", err ? err : "failed");
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, fw__verify_cb);
  return ctx;
}

/* Builds the TLS state for `e` and installs the opset. */
static int fw__attach(Event *e, SSL_CTX *ctx, int role, const char *hostname, const char *fn)
{
  ec_ssl_ctx *c;
  BIO *bio;
  char err[256];

  if (e == NULL || ctx == NULL || e->fd < 0)
    return -EINVAL;
  if (!fw__owner_ok(e, fn))
    return -EPERM;
  if (e->io_opset == &fw__tls_ops)
    return -EEXIST;
  if (e->io_opset != NULL || e->io_data != NULL) {
    ec_debug_printf(DERROR, EC_LOG_SSL, "%s(fd %d): the Event already has another opset", fn,
                    e->fd);
    return -EEXIST;
  }
  /* TLS writes through its own layer: write-behind output must be out (ec_event_flush). */
  if (e->_priv.wb != NULL && ec_event_write_behind(e, 0) < 0) {
    int why = errno;

    ec_debug_printf(DERROR, EC_LOG_SSL, "%s(fd %d): output written before is still unsent: %s", fn,
                    e->fd, strerror(why));
    return -why;
  }
  c = ec_malloc_size(MEMTYPE_EC_SSL_CTX, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  memset(c, 0, sizeof(*c));
  c->error_string = c->_priv.errbuf;
  c->_priv.role = role;
  ERR_clear_error();
  if ((c->ssl = SSL_new(ctx)) == NULL || (bio = fw__bio_new(e->fd)) == NULL)
    goto fail;
  SSL_set_bio(c->ssl, bio, bio);
  SSL_set_app_data(c->ssl, c);
  if (role == FW__ROLE_CLIENT) {
    if (hostname != NULL &&
        (!SSL_set_tlsext_host_name(c->ssl, hostname) || !SSL_set1_host(c->ssl, hostname)))
      goto fail;
    SSL_set_connect_state(c->ssl);
  } else {
    SSL_set_accept_state(c->ssl);
  }
  SSL_CTX_up_ref(ctx);
  c->ssl_ctx = ctx;
  e->io_data = c;
  e->io_opset = &fw__tls_ops;
  return 0;
fail:
  fw__ssl_reason(fn, err, sizeof(err));
  ec_debug_printf(DERROR, EC_LOG_SSL, "fd %d: %s", e->fd, err);
  SSL_free(c->ssl);
  ec_free(MEMTYPE_EC_SSL_CTX, c);
  return -EPROTO;
}

int ec_ssl_attach_server(Event *e, SSL_CTX *ctx)
{
  return fw__attach(e, ctx, FW__ROLE_SERVER, NULL, "ec_ssl_attach_server");
}

int ec_ssl_attach_client(Event *e, SSL_CTX *ctx, const char *hostname)
{
  return fw__attach(e, ctx, FW__ROLE_CLIENT, hostname, "ec_ssl_attach_client");
}

int ec_ssl_starttls(Event *e, SSL_CTX *ctx, minimal_tryread_construct *mtc)
{
  size_t dropped;
  int rc;

  if (e == NULL || ctx == NULL)
    return -EINVAL;
  if (!fw__owner_ok(e, "ec_ssl_starttls"))
    return -EPERM;
  /* Whatever the client sent after STARTTLS arrived in plaintext: it must not be read as
   * if it had come through the TLS session (CVE-2011-0411). */
  dropped = ec_tryread_discard(mtc);
  if (dropped > 0)
    ec_debug_printf(DINFO, EC_LOG_SSL, "STARTTLS on fd %d: dropped %zu pipelined plaintext bytes",
                    e->fd, dropped);
  rc = ec_ssl_attach_server(e, ctx);
  if (rc < 0)
    return rc;
  /* The TLS handshake is bounded by the listener's handshake_timeout, from now. */
  if (e->_priv.session != NULL)
    shard__session_tls_phase(e, 0);
  return dropped > INT32_MAX ? INT32_MAX : (int)dropped;
}
