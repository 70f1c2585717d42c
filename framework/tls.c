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
#include "ec_ssl.h"
#include "framework/atomic.h"
#include "shard/shard.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FW__ROLE_SERVER 1
#define FW__ROLE_CLIENT 2

/* A gathered write copies at most this much into one TLS record's worth of plaintext. */
#define FW__WRITEV_MAX 16384

/* Mozilla "intermediate" (v5.7) TLS 1.2 ciphers; TLS 1.3 keeps OpenSSL's defaults, which
 * are the same list. */
#define FW__CIPHERS_TLS12                                                                          \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"       \
  "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"         \
  "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

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
  if (ret > 0)
    return (int)n;
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

SSL_CTX *ec_ssl_server_ctx_new(const char *cert_chain_file, const char *key_file, char *err,
                               size_t errlen)
{
  SSL_CTX *ctx;

  if (cert_chain_file == NULL || key_file == NULL) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "certificate and key files are required");
    return NULL;
  }
  if ((ctx = fw__ctx_common(TLS_server_method(), err, errlen)) == NULL)
    return NULL;
  /* Tickets carry resumption state, so shards share nothing: no server-side cache. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_chain_file) != 1) {
    fw__ssl_reason(cert_chain_file, err, errlen);
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
    fw__ssl_reason(key_file, err, errlen);
    goto fail;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    fw__ssl_reason("key does not match the certificate", err, errlen);
    goto fail;
  }
  return ctx;
fail:
  ec_debug_printf(DERROR, EC_LOG_SSL, "ec_ssl_server_ctx_new: %s", err ? err : "failed");
  SSL_CTX_free(ctx);
  return NULL;
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
  return dropped > INT32_MAX ? INT32_MAX : (int)dropped;
}
