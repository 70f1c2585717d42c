/*
 * test/test_tls.c - TLS as an Event opset (framework/tls.c) on running shards: an echo
 * through the framework's own client and server, `openssl s_client` at TLS 1.2 and 1.3,
 * STARTTLS with pipelined plaintext (CVE-2011-0411), handshake garbage, and hostname
 * verification. The certificate is generated at run time (EC P-256, CN and SAN
 * localhost) into temporary files.
 */
#include "io_fake.h"

#include "ec_growbuf.h"
#include "ec_ssl.h"
#include "scheduler.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>

extern char **environ;

static char cert_path[] = "/tmp/ecshard-tls-cert-XXXXXX";
static char key_path[] = "/tmp/ecshard-tls-key-XXXXXX";
static int have_cert;

/* Self-signed EC P-256 certificate for localhost, written as PEM to mkstemp files. */
static int make_cert(void)
{
  EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *x = X509_new();
  X509V3_CTX v3;
  X509_EXTENSION *ext;
  X509_NAME *name;
  FILE *f;
  int fd, ok = 0;

  if (pkey == NULL || x == NULL)
    goto out;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, pkey);
  name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                             0);
  X509_set_issuer_name(x, name);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost");
  if (ext == NULL || !X509_add_ext(x, ext, -1)) {
    X509_EXTENSION_free(ext);
    goto out;
  }
  X509_EXTENSION_free(ext);
  if (!X509_sign(x, pkey, EVP_sha256()))
    goto out;
  if ((fd = mkstemp(cert_path)) < 0 || (f = fdopen(fd, "w")) == NULL)
    goto out;
  ok = PEM_write_X509(f, x);
  fclose(f);
  if ((fd = mkstemp(key_path)) < 0 || (f = fdopen(fd, "w")) == NULL) {
    ok = 0;
    goto out;
  }
  ok = ok && PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
  fclose(f);
out:
  X509_free(x);
  EVP_PKEY_free(pkey);
  return ok ? 0 : -1;
}

static SSL_CTX *sctx, *cctx;

static void start(void)
{
  ec_framework_options o = unit_options(2);
  char err[256];

  if (!have_cert) {
    CU_ASSERT_EQUAL_FATAL(make_cert(), 0);
    have_cert = 1;
  }
  sctx = ec_ssl_server_ctx_new(cert_path, key_path, err, sizeof(err));
  cctx = ec_ssl_client_ctx_new(cert_path, err, sizeof(err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(sctx);
  CU_ASSERT_PTR_NOT_NULL_FATAL(cctx);
  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
}

static void stop(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
  SSL_CTX_free(sctx);
  SSL_CTX_free(cctx);
  sctx = cctx = NULL;
}

/* ---- the echo server ---------------------------------------------------------------------- */

typedef struct srv_result {
  int closed;
  int read_errno; /* errno of the read that ended the connection (0: end of stream) */
  char version[16];
} srv_result;

typedef struct echo {
  event_io_state st;
  srv_result *res;
} echo;

static int echo_cb(Event *e, int type, void *closure, struct timeval *now)
{
  echo *x = closure;
  char buf[8192];
  int need, n, rc;

  if (ec_event_io_pending(&x->st) > 0) {
    rc = event_io_retry(e, &x->st);
    if (rc == EVENT_IO_PENDING)
      return x->st.needmask;
    if (rc == EVENT_IO_ERROR)
      goto done;
  }
  for (;;) {
    n = event_read(e, buf, sizeof(buf), &need);
    if (n > 0) {
      ec_ssl_ctx *c = ec_ssl_ctx_from_event(e);

      if (c != NULL && x->res->version[0] == '\0')
        snprintf(x->res->version, sizeof(x->res->version), "%s", SSL_get_version(c->ssl));
      rc = event_io_write(e, buf, n, &x->st);
      if (rc == EVENT_IO_PENDING)
        return x->st.needmask;
      if (rc == EVENT_IO_ERROR)
        goto done;
      continue;
    }
    if (n < 0 && errno == EAGAIN)
      return need;
    x->res->read_errno = n < 0 ? errno : 0;
    break;
  }
done:
  event_io_state_clean(&x->st);
  event_close(e);
  __atomic_add_fetch(&x->res->closed, 1, __ATOMIC_RELEASE);
  free(x);
  return 0;
}

/* Serves `fd` (non-blocking) with implicit TLS on shard 0. */
static int serve_tls(int fd, srv_result *res)
{
  echo *x = calloc(1, sizeof(*x));
  Event *e;

  x->res = res;
  e = build_fd_event(fd, E_READ, 0, echo_cb, x);
  if (e == NULL || ec_event_place(e, 0) != 0 || ec_ssl_attach_server(e, sctx) != 0)
    return -1;
  schedule_event(e);
  return 0;
}

static int noop_cb(Event *e, int type, void *closure, struct timeval *now)
{
  return 0;
}

/* ---- the client: an unscheduled Event driven from the test thread ------------------------ */

static void wait_for(int fd, int mask)
{
  struct pollfd p = {fd, (short)((mask & E_READ ? POLLIN : 0) | (mask & E_WRITE ? POLLOUT : 0)), 0};

  poll(&p, 1, 100);
}

/* Sends `total` pattern bytes and reads the echo back, checking every byte. 0 on success,
 * else the failing step (negative) with errno. */
static int client_echo(Event *c, size_t total)
{
  static unsigned char wbuf[16384], rbuf[16384];
  size_t sent = 0, got = 0;
  int rneed = E_READ, wneed = E_WRITE, need, idle = 0;

  while (got < total) {
    int progress = 0, n;

    if (sent < total) {
      size_t len = total - sent < sizeof(wbuf) ? total - sent : sizeof(wbuf);

      pattern_fill(wbuf, sent, len); /* a retry passes the same bytes again, as TLS needs */
      n = event_write(c, wbuf, (int)len, &need);
      if (n > 0) {
        sent += (size_t)n;
        progress = 1;
      } else if (n < 0 && errno == EAGAIN) {
        wneed = need;
      } else {
        return -1;
      }
    }
    n = event_read(c, rbuf, sizeof(rbuf), &need);
    if (n > 0) {
      if (pattern_check(rbuf, got, (size_t)n) != -1)
        return -2;
      got += (size_t)n;
      progress = 1;
    } else if (n == 0) {
      return -3;
    } else if (errno == EAGAIN) {
      rneed = need;
    } else {
      return -4;
    }
    if (!progress) {
      if (++idle > 200)
        return -5;
      wait_for(c->fd, rneed | (sent < total ? wneed : 0));
    } else {
      idle = 0;
    }
  }
  return 0;
}

static Event *client_event(int fd, const char *host)
{
  Event *c = build_fd_event(fd, E_READ, 0, noop_cb, NULL);

  if (c == NULL || ec_ssl_attach_client(c, cctx, host) != 0)
    return NULL;
  return c;
}

static void client_free(Event *c)
{
  event_close(c);
  event_free(c);
}

/* (a) 1 MiB through the framework's client and server opsets, byte for byte. */
static void t_echo_1mib(void)
{
  srv_result res = {0};
  int sv[2];
  Event *c;

  start();
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  ASSERT_EQ(serve_tls(sv[0], &res), 0);
  c = client_event(sv[1], "localhost");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(ec_ssl_is_event_ssl(c), 1);
  ASSERT_NOT_NULL(ec_ssl_ctx_from_event(c));
  ASSERT_EQ(client_echo(c, 1024 * 1024), 0);
  ASSERT_STR_EQ(SSL_get_version(ec_ssl_ctx_from_event(c)->ssl), "TLSv1.3");
  client_free(c); /* close_notify: the server sees a clean end of stream */
  ASSERT_TRUE(unit_wait_ge(&res.closed, 1, 5000));
  ASSERT_EQ(res.read_errno, 0);
  stop();
}

/* ---- (b) openssl s_client ----------------------------------------------------------------- */

static int s_client_round(const char *ver)
{
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t salen = sizeof(sa);
  srv_result res = {0};
  int ls, fd, in[2], out[2], devnull, status, rc = -1;
  char port[64], got[256] = "";
  size_t gotlen = 0;
  posix_spawn_file_actions_t fa;
  pid_t pid;
  const char *msg = "hello over s_client\n";

  ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(ls, 4) != 0 ||
      getsockname(ls, (struct sockaddr *)&sa, &salen) != 0)
    return -1;
  snprintf(port, sizeof(port), "127.0.0.1:%d", ntohs(sa.sin_port));
  char *argv[] = {"openssl",     "s_client",  "-connect", port,      "-quiet",
                  "-no_ign_eof", (char *)ver, "-CAfile",  cert_path, "-verify_return_error",
                  "-servername", "localhost", NULL};
  if (pipe(in) != 0 || pipe(out) != 0)
    return -1;
  devnull = open("/dev/null", O_WRONLY);
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, devnull, 2);
  posix_spawn_file_actions_addclose(&fa, in[1]);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  if (posix_spawnp(&pid, "openssl", &fa, NULL, argv, environ) != 0)
    pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  close(devnull);
  if (pid < 0)
    goto out;
  fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
  if (fd < 0 || serve_tls(fd, &res) != 0)
    goto out;
  if (write(in[1], msg, strlen(msg)) != (ssize_t)strlen(msg))
    goto out;
  for (int i = 0; i < 100 && strstr(got, "\n") == NULL; i++) {
    struct pollfd p = {out[0], POLLIN, 0};
    ssize_t n;

    if (poll(&p, 1, 100) > 0 && (n = read(out[0], got + gotlen, sizeof(got) - 1 - gotlen)) > 0) {
      gotlen += (size_t)n;
      got[gotlen] = '\0';
    }
  }
  close(in[1]); /* -no_ign_eof: s_client sends close_notify and exits */
  in[1] = -1;
  if (strcmp(got, msg) == 0 && unit_wait_ge(&res.closed, 1, 5000))
    rc = 0;
  if (strcmp(ver, "-tls1_2") == 0 && strcmp(res.version, "TLSv1.2") != 0)
    rc = -2;
  if (strcmp(ver, "-tls1_3") == 0 && strcmp(res.version, "TLSv1.3") != 0)
    rc = -3;
out:
  if (in[1] >= 0)
    close(in[1]);
  close(out[0]);
  close(ls);
  if (pid > 0) {
    for (int i = 0; i < 50 && waitpid(pid, &status, WNOHANG) == 0; i++)
      usleep(100000);
    if (waitpid(pid, &status, WNOHANG) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
  }
  unit_wait_ge(&res.closed, 1, 5000); /* res is on this stack frame */
  return rc;
}

static void t_s_client(void)
{
  if (system("command -v openssl >/dev/null 2>&1") != 0) {
    fprintf(stderr, "openssl binary not found: s_client sub-cases skipped\n");
    return;
  }
  start();
  ASSERT_EQ(s_client_round("-tls1_2"), 0);
  ASSERT_EQ(s_client_round("-tls1_3"), 0);
  stop();
}

/* ---- (c) STARTTLS with pipelined plaintext ------------------------------------------------ */

typedef struct stls_result {
  int dropped;
  int closed;
  int plain_lines; /* plaintext lines other than STARTTLS */
  char first_tls_line[64];
} stls_result;

typedef struct stls {
  minimal_tryread_construct mtc;
  event_io_state st;
  int tls;
  stls_result *res;
} stls;

static int stls_cb(Event *e, int type, void *closure, struct timeval *now)
{
  stls *x = closure;
  char reply[128];
  int need, n, rc;

  if (ec_event_io_pending(&x->st) > 0) {
    rc = event_io_retry(e, &x->st);
    if (rc == EVENT_IO_PENDING)
      return x->st.needmask;
    if (rc == EVENT_IO_ERROR)
      goto done;
  }
  for (;;) {
    n = tryread_until(e, &need, &x->mtc, TRYREAD_UNTIL_CRLF);
    if (n < 0 && errno == EAGAIN)
      return need;
    if (n <= 0)
      break;
    if (!x->tls) {
      if (strcmp(x->mtc.gb_donebuffer, "STARTTLS\r\n") == 0) {
        /* small enough for the socket buffer: written whole before the upgrade */
        if (event_write(e, "220 go ahead\r\n", 14, &need) != 14)
          n = -1;
        else
          x->res->dropped = ec_ssl_starttls(e, sctx, &x->mtc);
        x->tls = 1;
      } else {
        x->res->plain_lines++;
      }
      ec_free(MEMTYPE_MESSAGE_BODY, x->mtc.gb_donebuffer);
      if (n < 0)
        break;
      continue;
    }
    if (x->res->first_tls_line[0] == '\0')
      snprintf(x->res->first_tls_line, sizeof(x->res->first_tls_line), "%s", x->mtc.gb_donebuffer);
    snprintf(reply, sizeof(reply), "ECHO %s", x->mtc.gb_donebuffer);
    ec_free(MEMTYPE_MESSAGE_BODY, x->mtc.gb_donebuffer);
    rc = event_io_write(e, reply, (int)strlen(reply), &x->st);
    if (rc == EVENT_IO_PENDING)
      return x->st.needmask;
    if (rc == EVENT_IO_ERROR)
      break;
  }
done:
  minimal_tryread_construct_free(&x->mtc);
  event_io_state_clean(&x->st);
  event_close(e);
  __atomic_add_fetch(&x->res->closed, 1, __ATOMIC_RELEASE);
  free(x);
  return 0;
}

/* Reads one CRLF line from a blocking-ish plaintext fd (poll, then read byte by byte so
 * that nothing after the line is consumed). */
static int read_plain_line(int fd, char *buf, size_t len)
{
  size_t n = 0;

  while (n + 1 < len) {
    struct pollfd p = {fd, POLLIN, 0};

    if (poll(&p, 1, 5000) <= 0 || read(fd, buf + n, 1) != 1)
      return -1;
    if (buf[n++] == '\n')
      break;
  }
  buf[n] = '\0';
  return (int)n;
}

static void t_starttls_drops_pipelined(void)
{
  const char *inject = "STARTTLS\r\nMAIL FROM:<evil@example>\r\n";
  stls_result res = {0};
  stls *x = calloc(1, sizeof(*x));
  char line[128];
  int sv[2], need, n, off = 0;
  Event *e, *c;

  start();
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  x->res = &res;
  e = build_fd_event(sv[0], E_READ, 0, stls_cb, x);
  ASSERT_NOT_NULL(e);
  ASSERT_EQ(ec_ssl_is_event_ssl(e), 0);
  /* One write: the injected command arrives in the same segment as STARTTLS. */
  ASSERT_EQ(write(sv[1], inject, strlen(inject)), (ssize_t)strlen(inject));
  schedule_event(e);
  ASSERT_EQ(read_plain_line(sv[1], line, sizeof(line)), 14);
  ASSERT_STR_EQ(line, "220 go ahead\r\n");
  c = client_event(sv[1], "localhost");
  ASSERT_NOT_NULL(c);
  for (int i = 0; i < 200 && off < 6; i++) {
    n = event_write(c, &"PING\r\n"[off], 6 - off, &need);
    if (n > 0)
      off += n;
    else if (n < 0 && errno == EAGAIN)
      wait_for(sv[1], need);
    else
      break;
  }
  ASSERT_EQ(off, 6);
  off = 0;
  for (int i = 0; i < 200 && (off == 0 || line[off - 1] != '\n'); i++) {
    n = event_read(c, line + off, (int)sizeof(line) - 1 - off, &need);
    if (n > 0)
      off += n;
    else if (n < 0 && errno == EAGAIN)
      wait_for(sv[1], need);
    else
      break;
  }
  line[off] = '\0';
  /* The first reply answers PING: the injected command was never seen. */
  ASSERT_STR_EQ(line, "ECHO PING\r\n");
  ASSERT_EQ(res.dropped, (int)strlen(inject) - 10);
  ASSERT_STR_EQ(res.first_tls_line, "PING\r\n");
  ASSERT_EQ(res.plain_lines, 0);
  client_free(c);
  ASSERT_TRUE(unit_wait_ge(&res.closed, 1, 5000));
  stop();
}

/* ---- (d) handshake garbage, then a good connection on the same shard ---------------------- */

static void t_garbage_then_good(void)
{
  unsigned char junk[512];
  srv_result bad = {0}, good = {0};
  int sv[2], sv2[2];
  char buf[256];
  ssize_t n = -1;
  int rerr = 0;
  Event *c;

  start();
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  ASSERT_EQ(serve_tls(sv[0], &bad), 0);
  srand(7);
  for (size_t i = 0; i < sizeof(junk); i++)
    junk[i] = (unsigned char)rand();
  junk[0] = 'G'; /* not a TLS record type */
  ASSERT_EQ(write(sv[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
  ASSERT_TRUE(unit_wait_ge(&bad.closed, 1, 5000));
  ASSERT_EQ(bad.read_errno, EPROTO);
  /* The server closed: the client sees (perhaps an alert, then) end of stream. */
  for (int i = 0; i < 100; i++) {
    struct pollfd p = {sv[1], POLLIN, 0};

    poll(&p, 1, 50);
    n = read(sv[1], buf, sizeof(buf));
    rerr = errno;
    if (n == 0 || (n < 0 && errno != EAGAIN))
      break;
  }
  /* ECONNRESET: AF_UNIX reports a close with our junk unread as a reset */
  ASSERT_TRUE(n == 0 || (n < 0 && rerr == ECONNRESET));
  close(sv[1]);

  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv2), 0);
  ASSERT_EQ(serve_tls(sv2[0], &good), 0);
  c = client_event(sv2[1], "localhost");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(client_echo(c, 64 * 1024), 0);
  client_free(c);
  ASSERT_TRUE(unit_wait_ge(&good.closed, 1, 5000));
  stop();
}

/* ---- (e) hostname verification ------------------------------------------------------------ */

static void t_wrong_hostname(void)
{
  srv_result res = {0};
  int sv[2], need = 0, n = 0;
  char buf[64];
  Event *c;
  ec_ssl_ctx *x;

  start();
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  ASSERT_EQ(serve_tls(sv[0], &res), 0);
  c = client_event(sv[1], "wrong.example");
  ASSERT_NOT_NULL(c);
  for (int i = 0; i < 200; i++) {
    n = event_read(c, buf, sizeof(buf), &need);
    if (n >= 0 || errno != EAGAIN)
      break;
    wait_for(sv[1], need);
  }
  ASSERT_EQ(n, -1);
  ASSERT_EQ(errno, EPROTO);
  x = ec_ssl_ctx_from_event(c);
  ASSERT_EQ(x->error_code, X509_V_ERR_HOSTNAME_MISMATCH);
  ASSERT_TRUE(strstr(x->error_string, "hostname mismatch") != NULL);
  client_free(c);
  ASSERT_TRUE(unit_wait_ge(&res.closed, 1, 5000));
  stop();
}

/* Errors are reported, not fatal: a missing file, an Event that already has TLS. */
static void t_errors(void)
{
  char err[256] = "";
  int sv[2];
  Event *e;

  start();
  ASSERT_NULL(ec_ssl_server_ctx_new("/nonexistent/cert.pem", key_path, err, sizeof(err)));
  ASSERT_TRUE(strstr(err, "/nonexistent/cert.pem") != NULL);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  e = build_fd_event(sv[0], E_READ, 0, noop_cb, NULL);
  ASSERT_EQ(ec_ssl_attach_server(e, sctx), 0);
  ASSERT_EQ(ec_ssl_attach_server(e, sctx), -EEXIST);
  ASSERT_EQ(ec_ssl_attach_client(NULL, cctx, "x"), -EINVAL);
  event_free(e); /* releases the TLS state without closing */
  close(sv[0]);
  close(sv[1]);
  stop();
}

/* ---- (f) listeners with a tls section ---------------------------------------------------- */

static srv_result lres;
static int lsaw_tls = -1, lsaw_ctx, lsaw_attached;

static int tlsecho_start(Event *e, const ec_accept_info *info, void *closure)
{
  echo *x = calloc(1, sizeof(*x));

  __atomic_store_n(&lsaw_ctx, info->tls_ctx != NULL, __ATOMIC_RELAXED);
  __atomic_store_n(&lsaw_attached, ec_ssl_is_event_ssl(e), __ATOMIC_RELAXED);
  __atomic_store_n(&lsaw_tls, info->tls, __ATOMIC_RELEASE);
  if (x == NULL)
    return 0;
  x->res = &lres;
  e->callback = echo_cb;
  e->closure = x;
  return E_READ;
}

static int connect_port(int port)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  a.sin_port = htons((uint16_t)port);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      fcntl(fd, F_SETFL, O_NONBLOCK) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

/* Starts the framework with one "tlsecho" listener whose tls section is `tls`. */
static int start_listener(int port, const char *tls, const char *key)
{
  ec_framework_options o = unit_options(2);
  ec_protocol p = {.name = "tlsecho", .session_start = tlsecho_start};
  char text[1024], err[256];
  int rc;

  snprintf(text, sizeof(text),
           "listener = { t = { listen = \"127.0.0.1:%d\"; protocol = \"tlsecho\";\n"
           "  tls = { certificate = \"%s\"; key = \"%s\"; %s }; }; };",
           port, cert_path, key, tls);
  o.config_text = text;
  cctx = ec_ssl_client_ctx_new(cert_path, err, sizeof(err));
  if (cctx == NULL)
    return -1;
  if (ec_protocol_register(&p) < 0 || (rc = ec_framework_init(&o)) < 0)
    return -2;
  return ec_framework_start();
}

static void t_listener_tls(void)
{
  int port = unit_free_port(), fd;
  Event *c;

  if (!have_cert) {
    CU_ASSERT_EQUAL_FATAL(make_cert(), 0);
    have_cert = 1;
  }
  /* Implicit: the Event reaches session_start with the TLS opset attached. */
  memset(&lres, 0, sizeof(lres));
  ASSERT_EQ(start_listener(port, "mode = \"implicit\";", key_path), 0);
  fd = connect_port(port);
  ASSERT_GE(fd, 0);
  c = client_event(fd, "localhost");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(client_echo(c, 256 * 1024), 0);
  ASSERT_EQ(__atomic_load_n(&lsaw_tls, __ATOMIC_ACQUIRE), 1);
  ASSERT_EQ(__atomic_load_n(&lsaw_ctx, __ATOMIC_RELAXED), 1);
  ASSERT_EQ(__atomic_load_n(&lsaw_attached, __ATOMIC_RELAXED), 1);
  client_free(c);
  ASSERT_TRUE(unit_wait_ge(&lres.closed, 1, 5000));
  stop();

  /* STARTTLS: plaintext at first, the context is there for the protocol to use. */
  memset(&lres, 0, sizeof(lres));
  port = unit_free_port();
  ASSERT_EQ(start_listener(port, "mode = \"starttls\";", key_path), 0);
  fd = connect_port(port);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "plain\n", 6), 6);
  for (int i = 0; i < 50 && __atomic_load_n(&lsaw_tls, __ATOMIC_ACQUIRE) != 0; i++)
    usleep(20000);
  ASSERT_EQ(__atomic_load_n(&lsaw_tls, __ATOMIC_ACQUIRE), 0);
  ASSERT_EQ(__atomic_load_n(&lsaw_ctx, __ATOMIC_RELAXED), 1);
  ASSERT_EQ(__atomic_load_n(&lsaw_attached, __ATOMIC_RELAXED), 0);
  close(fd);
  ASSERT_TRUE(unit_wait_ge(&lres.closed, 1, 5000));
  stop();

  /* A key that does not exist: the start fails and says why; nothing is left open. */
  port = unit_free_port();
  ASSERT_EQ(start_listener(port, "", "/nonexistent/key.pem"), -EINVAL);
  stop();
}

/* ---- (g) reads smaller than a record -------------------------------------------------- */

/*
 * A server that reads 100 bytes per dispatch and then waits for E_READ: the rest of each
 * 16 KiB record sits decrypted inside OpenSSL, invisible to the poller; the opset must
 * get the callback dispatched again or the echo stalls.
 */
typedef struct sip {
  event_io_state st;
  srv_result *res;
} sip;

static int sip_cb(Event *e, int type, void *closure, struct timeval *now)
{
  sip *x = closure;
  char buf[100];
  int need, n, rc;

  if (ec_event_io_pending(&x->st) > 0) {
    rc = event_io_retry(e, &x->st);
    if (rc == EVENT_IO_PENDING)
      return x->st.needmask;
    if (rc == EVENT_IO_ERROR)
      goto done;
  }
  n = event_read(e, buf, sizeof(buf), &need);
  if (n > 0) {
    rc = event_io_write(e, buf, n, &x->st);
    if (rc == EVENT_IO_PENDING)
      return x->st.needmask;
    if (rc == EVENT_IO_ERROR)
      goto done;
    return E_READ; /* one small read per dispatch, on purpose */
  }
  if (n < 0 && errno == EAGAIN)
    return need;
done:
  event_io_state_clean(&x->st);
  event_close(e);
  __atomic_add_fetch(&x->res->closed, 1, __ATOMIC_RELEASE);
  free(x);
  return 0;
}

static void t_small_reads(void)
{
  srv_result res = {0};
  sip *x = calloc(1, sizeof(*x));
  int sv[2];
  Event *c, *e;

  ASSERT_NOT_NULL(x);
  start();
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  x->res = &res;
  e = build_fd_event(sv[0], E_READ, 0, sip_cb, x);
  ASSERT_NOT_NULL(e);
  ASSERT_EQ(ec_event_place(e, 0), 0);
  ASSERT_EQ(ec_ssl_attach_server(e, sctx), 0);
  schedule_event(e);
  c = client_event(sv[1], "localhost");
  ASSERT_NOT_NULL(c);
  /* client_echo writes 16 KiB at a time: whole records, read back 100 bytes at a time. */
  ASSERT_EQ(client_echo(c, 256 * 1024), 0);
  client_free(c);
  ASSERT_TRUE(unit_wait_ge(&res.closed, 1, 5000));
  stop();
}

/* ---- (h) ALPN and client certificates through a listener --------------------------------- */

static char seen_alpn[64], seen_subject[256];
static int seen_alpn_rc = -100, seen_subject_rc = -100, seen_plain_rc = -100;

/* The echo, which records once what the protocol can learn after the handshake. */
static int info_cb(Event *e, int type, void *closure, struct timeval *now)
{
  int rc = echo_cb(e, type, closure, now);
  ec_ssl_ctx *c;

  if (rc == 0) /* closed (and x freed) */
    return 0;
  c = ec_ssl_ctx_from_event(e);
  if (c != NULL && SSL_is_init_finished(c->ssl) &&
      __atomic_load_n(&seen_alpn_rc, __ATOMIC_ACQUIRE) == -100) {
    seen_subject_rc = ec_ssl_get_peer_subject(e, seen_subject, sizeof(seen_subject));
    __atomic_store_n(&seen_alpn_rc, ec_ssl_get_alpn(e, seen_alpn, sizeof(seen_alpn)),
                     __ATOMIC_RELEASE);
  }
  return rc;
}

static int info_start(Event *e, const ec_accept_info *info, void *closure)
{
  echo *x = calloc(1, sizeof(*x));
  char buf[64];

  if (x == NULL)
    return 0;
  /* Before the handshake: nothing negotiated yet; a plain Event is refused. */
  if (ec_ssl_get_alpn(e, buf, sizeof(buf)) != 0 || ec_ssl_get_peer_subject(e, buf, 64) != 0)
    __atomic_store_n(&seen_plain_rc, -1, __ATOMIC_RELAXED);
  else
    __atomic_store_n(&seen_plain_rc, 0, __ATOMIC_RELAXED);
  x->res = &lres;
  e->callback = info_cb;
  e->closure = x;
  return E_READ;
}

static void t_alpn_client_cert(void)
{
  ec_framework_options o = unit_options(2);
  ec_protocol p = {.name = "tlsinfo", .session_start = info_start};
  static const unsigned char offer[] = "\x08http/1.1\x02h2";
  char text[1024], err[256], buf[64];
  int port = unit_free_port(), fd, sv[2];
  Event *c, *plain;

  if (!have_cert) {
    CU_ASSERT_EQUAL_FATAL(make_cert(), 0);
    have_cert = 1;
  }
  memset(&lres, 0, sizeof(lres));
  /* The test certificate is self-signed: it is its own CA, for the client's too. */
  snprintf(text, sizeof(text),
           "listener = { t = { listen = \"127.0.0.1:%d\"; protocol = \"tlsinfo\";\n"
           "  tls = { certificate = \"%s\"; key = \"%s\"; alpn = [ \"h2\", \"http/1.1\" ];\n"
           "          client_auth = \"optional\"; client_ca = \"%s\"; }; }; };",
           port, cert_path, key_path, cert_path);
  o.config_text = text;
  cctx = ec_ssl_client_ctx_new(cert_path, err, sizeof(err));
  ASSERT_NOT_NULL(cctx);
  ASSERT_EQ(SSL_CTX_set_alpn_protos(cctx, offer, sizeof(offer) - 1), 0);
  ASSERT_EQ(SSL_CTX_use_certificate_file(cctx, cert_path, SSL_FILETYPE_PEM), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey_file(cctx, key_path, SSL_FILETYPE_PEM), 1);
  ASSERT_EQ(ec_protocol_register(&p), 0);
  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  fd = connect_port(port);
  ASSERT_GE(fd, 0);
  c = client_event(fd, "localhost");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(client_echo(c, 4096), 0);
  for (int i = 0; i < 100 && __atomic_load_n(&seen_alpn_rc, __ATOMIC_ACQUIRE) == -100; i++)
    usleep(20000);
  ASSERT_EQ(__atomic_load_n(&seen_plain_rc, __ATOMIC_RELAXED), 0);
  ASSERT_EQ(__atomic_load_n(&seen_alpn_rc, __ATOMIC_ACQUIRE), 2);
  ASSERT_STR_EQ(seen_alpn, "h2");
  ASSERT_EQ(seen_subject_rc, (int)strlen("CN=localhost"));
  ASSERT_STR_EQ(seen_subject, "CN=localhost");
  /* The client side sees the same protocol and the server's verified subject. */
  ASSERT_EQ(ec_ssl_get_alpn(c, buf, sizeof(buf)), 2);
  ASSERT_STR_EQ(buf, "h2");
  ASSERT_EQ(ec_ssl_get_peer_subject(c, buf, sizeof(buf)), (int)strlen("CN=localhost"));
  ASSERT_EQ(ec_ssl_get_alpn(c, buf, 2), -ENOSPC);
  ASSERT_EQ(ec_ssl_get_peer_subject(c, buf, 4), -ENOSPC);
  client_free(c);
  ASSERT_TRUE(unit_wait_ge(&lres.closed, 1, 5000));
  /* A plain Event has no TLS to ask about. */
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  plain = build_fd_event(sv[0], E_READ, 0, noop_cb, NULL);
  ASSERT_NOT_NULL(plain);
  ASSERT_EQ(ec_ssl_get_alpn(plain, buf, sizeof(buf)), -EINVAL);
  ASSERT_EQ(ec_ssl_get_peer_subject(plain, buf, sizeof(buf)), -EINVAL);
  ASSERT_EQ(ec_ssl_get_alpn(NULL, buf, sizeof(buf)), -EINVAL);
  event_close(plain);
  event_free(plain);
  close(sv[1]);
  stop();
}

/* ---- (i) the handshake timeout bounds a STARTTLS handshake ------------------------------- */

static stls_result tres;
static SSL_CTX *listener_ctx; /* info->tls_ctx, as the protocol would use it */

/* stls_cb upgrades with the global sctx: point it at the listener's context. */
static int stls_timeout_cb(Event *e, int type, void *closure, struct timeval *now)
{
  if (type & E_TIMEOUT) {
    stls *x = closure;

    minimal_tryread_construct_free(&x->mtc);
    event_io_state_clean(&x->st);
    event_close(e);
    __atomic_add_fetch(&x->res->closed, 1, __ATOMIC_RELEASE);
    free(x);
    return 0;
  }
  return stls_cb(e, type, closure, now);
}

static int stls_start(Event *e, const ec_accept_info *info, void *closure)
{
  stls *x = calloc(1, sizeof(*x));

  if (x == NULL || info->tls_ctx == NULL || info->tls)
    return 0;
  listener_ctx = info->tls_ctx;
  sctx = listener_ctx;
  x->res = &tres;
  e->callback = stls_timeout_cb;
  e->closure = x;
  return E_READ;
}

static void t_starttls_handshake_timeout(void)
{
  ec_framework_options o = unit_options(2);
  ec_protocol p = {.name = "stlsline", .session_start = stls_start};
  char text[1024], line[64];
  int port = unit_free_port(), fd, closed = 0;

  if (!have_cert) {
    CU_ASSERT_EQUAL_FATAL(make_cert(), 0);
    have_cert = 1;
  }
  memset(&tres, 0, sizeof(tres));
  /* A long idle timeout and a short handshake timeout: only the latter can close it. */
  snprintf(text, sizeof(text),
           "listener = { s = { listen = \"127.0.0.1:%d\"; protocol = \"stlsline\";\n"
           "  idle_timeout = 600.0; handshake_timeout = 0.3;\n"
           "  tls = { certificate = \"%s\"; key = \"%s\"; mode = \"starttls\"; }; }; };",
           port, cert_path, key_path);
  o.config_text = text;
  ASSERT_EQ(ec_protocol_register(&p), 0);
  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  fd = connect_port(port);
  ASSERT_GE(fd, 0);
  /* The plaintext part is an active session: it outlives the handshake timeout. */
  usleep(600000);
  ASSERT_EQ(write(fd, "STARTTLS\r\n", 10), 10);
  ASSERT_GT(read_plain_line(fd, line, sizeof(line)), 0);
  ASSERT_STR_EQ(line, "220 go ahead\r\n");
  /* Now no ClientHello: the server must close within the handshake timeout (bounded
   * wait here, 10 s, far above 0.3 s). */
  for (int i = 0; i < 200 && !closed; i++) {
    struct pollfd pf = {fd, POLLIN, 0};
    char c;

    if (poll(&pf, 1, 50) > 0 && read(fd, &c, 1) <= 0)
      closed = 1;
  }
  ASSERT_TRUE(closed);
  ASSERT_TRUE(unit_wait_ge(&tres.closed, 1, 5000));
  close(fd);
  sctx = NULL; /* the listener's: stop() must not free it */
  stop();
}

static void t_cleanup_files(void)
{
  if (have_cert) {
    unlink(cert_path);
    unlink(key_path);
  }
}

static const unit_test tests[] = {UNIT_TEST(t_echo_1mib),
                                  UNIT_TEST(t_s_client),
                                  UNIT_TEST(t_starttls_drops_pipelined),
                                  UNIT_TEST(t_garbage_then_good),
                                  UNIT_TEST(t_wrong_hostname),
                                  UNIT_TEST(t_errors),
                                  UNIT_TEST(t_listener_tls),
                                  UNIT_TEST(t_small_reads),
                                  UNIT_TEST(t_alpn_client_cert),
                                  UNIT_TEST(t_starttls_handshake_timeout),
                                  UNIT_TEST(t_cleanup_files),
                                  {NULL, NULL}};
UNIT_MAIN("tls", tests)
