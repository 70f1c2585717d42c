/*
 * test/test_smtp.c - the SMTP module (samples/smtp) on running shards, over loopback:
 * conversations in spool and sink mode, what lands in the spool, pipelined transactions,
 * out-of-order commands, SMTP smuggling (bare CR/LF), size, line, recipient, error and
 * session limits, timeouts, spool failures, counters, and STARTTLS (with command
 * injection) against a certificate made by the openssl CLI at run time.
 */
#include "unit.h"

#include "samples/smtp/smtp.c"

#include <dirent.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

static char tmpdir[64];
static char spool[128];
static int runs;

static void cleanup(void)
{
  char cmd[128];

  if (tmpdir[0] != '\0') {
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
      fprintf(stderr, "cannot remove %s\n", tmpdir);
  }
}

static void make_tmpdir(void)
{
  if (tmpdir[0] == '\0') {
    atexit(cleanup);
    strcpy(tmpdir, "/tmp/ecshard-smtp-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
      tmpdir[0] = '\0';
  }
}

/* Starts the framework with an smtp listener on a free port, a fresh spool directory and
 * the extra settings `smtp_extra` (members of the smtp section) and `listener_extra`
 * (members of the listener). Returns the port, or -1. */
static int start(int shards, const char *smtp_extra, const char *listener_extra)
{
  ec_framework_options o = unit_options(shards);
  char text[2048];
  int port = unit_free_port();

  make_tmpdir();
  snprintf(spool, sizeof(spool), "%s/spool%d", tmpdir, ++runs);
  snprintf(text, sizeof(text),
           "listener = { smtp = { listen = \"127.0.0.1:%d\"; protocol = \"smtp\"; %s }; };\n"
           "smtp = { hostname = \"mx.test\"; %s%s%s %s };\n",
           port, listener_extra ? listener_extra : "",
           smtp_extra && strstr(smtp_extra, "spool_dir") ? "" : "spool_dir = \"",
           smtp_extra && strstr(smtp_extra, "spool_dir") ? "" : spool,
           smtp_extra && strstr(smtp_extra, "spool_dir") ? "" : "\";",
           smtp_extra ? smtp_extra : "");
  o.config_text = text;
  if (smtp_register() < 0 || ec_framework_init(&o) < 0)
    return -1;
  if (ec_framework_start() < 0) {
    ec_framework_join();
    return -1;
  }
  return port;
}

static void finish(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
}

/* ---- a small blocking client ------------------------------------------------------------- */

typedef struct cli {
  int fd;
  SSL *ssl;
  char buf[65536];
  int len;
} cli;

static cli *cli_open(int port)
{
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {.tv_sec = 5};
  cli *c = calloc(1, sizeof(*c));

  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    close(c->fd);
    free(c);
    return NULL;
  }
  return c;
}

static void cli_close(cli *c)
{
  if (c == NULL)
    return;
  if (c->ssl != NULL)
    SSL_free(c->ssl);
  close(c->fd);
  free(c);
}

static int cli_sendn(cli *c, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = c->ssl ? SSL_write(c->ssl, p, (int)n) : send(c->fd, p, n, MSG_NOSIGNAL);

    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int cli_send(cli *c, const char *text)
{
  return cli_sendn(c, text, strlen(text));
}

/*
 * Reads one complete reply (all its lines) into out. Returns its code, 0 at end of stream,
 * -1 on timeout or error.
 */
static int cli_reply(cli *c, char *out, size_t outlen)
{
  for (;;) {
    /* A reply is complete at the first line "NNN " (or "NNN\r\n"). */
    int pos = 0;

    while (pos < c->len) {
      char *nl = memchr(c->buf + pos, '\n', (size_t)(c->len - pos));
      int end;

      if (nl == NULL)
        break;
      end = (int)(nl - c->buf) + 1;
      if (end - pos >= 4 && c->buf[pos + 3] != '-') {
        int code = atoi(c->buf + pos);
        size_t n = (size_t)end < outlen ? (size_t)end : outlen - 1;

        memcpy(out, c->buf, n);
        out[n] = '\0';
        memmove(c->buf, c->buf + end, (size_t)(c->len - end));
        c->len -= end;
        return code;
      }
      pos = end;
    }
    if (c->len == (int)sizeof(c->buf))
      return -1;
    ssize_t n = c->ssl ? SSL_read(c->ssl, c->buf + c->len, (int)sizeof(c->buf) - c->len)
                       : recv(c->fd, c->buf + c->len, sizeof(c->buf) - (size_t)c->len, 0);

    if (n == 0 || (c->ssl && n < 0 && SSL_get_error(c->ssl, (int)n) == SSL_ERROR_ZERO_RETURN))
      return 0;
    if (n < 0)
      return (errno == ECONNRESET || errno == EPIPE) ? 0 : -1;
    c->len += (int)n;
  }
}

/* Sends `cmd` (if not NULL) and returns the code of the reply. */
static int cmd(cli *c, const char *command)
{
  char r[4096];

  if (command != NULL && cli_send(c, command) < 0)
    return -1;
  return cli_reply(c, r, sizeof(r));
}

/* 1 if the server closes the connection within 5 s (after any replies still coming). */
static int cli_eof(cli *c)
{
  char r[4096];
  int code;

  while ((code = cli_reply(c, r, sizeof(r))) > 0)
    ;
  return code == 0;
}

/* ---- the spool --------------------------------------------------------------------------- */

static int spool_count(const char *sub)
{
  char path[256];
  DIR *d;
  struct dirent *de;
  int n = 0;

  snprintf(path, sizeof(path), "%s/%s", spool, sub);
  if ((d = opendir(path)) == NULL)
    return -1;
  while ((de = readdir(d)) != NULL)
    n += de->d_name[0] != '.';
  closedir(d);
  return n;
}

/* Reads new/ID into buf; its length, or -1. */
static int spool_read(const char *id, char *buf, size_t len)
{
  char path[256];
  FILE *f;
  size_t n;

  snprintf(path, sizeof(path), "%s/new/%s", spool, id);
  if ((f = fopen(path, "rb")) == NULL)
    return -1;
  n = fread(buf, 1, len - 1, f);
  fclose(f);
  buf[n] = '\0';
  return (int)n;
}

/* The queue id of a "250 2.0.0 Ok: queued as ID" reply. */
static const char *queued_id(const char *reply, char *id, size_t len)
{
  const char *p = strstr(reply, "queued as ");

  if (p == NULL)
    return NULL;
  snprintf(id, len, "%.*s", (int)strcspn(p + 10, "\r\n"), p + 10);
  return id;
}

/* ---- conversations ----------------------------------------------------------------------- */

static void t_spool_conversation(void)
{
  int port = start(2, NULL, NULL);
  char r[4096], id[64], file[8192];
  smtp_stats st;
  cli *c;

  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 220);
  ASSERT_TRUE(strstr(r, "220 mx.test ESMTP") == r);
  ASSERT_EQ(cli_send(c, "EHLO client.test\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 250);
  ASSERT_TRUE(strstr(r, "250-PIPELINING\r\n") != NULL);
  ASSERT_TRUE(strstr(r, "250-SIZE 10485760\r\n") != NULL);
  ASSERT_TRUE(strstr(r, "250-8BITMIME\r\n") != NULL);
  ASSERT_TRUE(strstr(r, "250-ENHANCEDSTATUSCODES\r\n") != NULL);
  ASSERT_TRUE(strstr(r, "STARTTLS") == NULL); /* no TLS on this listener */
  ASSERT_EQ(cmd(c, "MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<bob@example.net>\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO: <carol@example.net>\r\n"), 250);
  ASSERT_EQ(cmd(c, "DATA\r\n"), 354);
  /* Dot-stuffed lines come out unstuffed; a lone "." ends the message. */
  ASSERT_EQ(cli_send(c, "Subject: hi\r\n\r\nline one\r\n..dot\r\n...\r\nlast\r\n.\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 250);
  ASSERT_NOT_NULL(queued_id(r, id, sizeof(id)));
  ASSERT_TRUE(spool_read(id, file, sizeof(file)) > 0);
  ASSERT_TRUE(strstr(file, "Return-Path: <alice@example.org>\r\n") == file);
  ASSERT_TRUE(
      strstr(file, "X-Envelope-To: <bob@example.net>\r\nX-Envelope-To: <carol@example.net>\r\n") !=
      NULL);
  ASSERT_TRUE(strstr(file, "from client.test (127.0.0.1)") != NULL);
  ASSERT_TRUE(strstr(file, "with ESMTP id ") != NULL);
  {
    const char *body = strstr(file, "Subject: hi\r\n");

    ASSERT_NOT_NULL(body);
    ASSERT_STR_EQ(body, "Subject: hi\r\n\r\nline one\r\n.dot\r\n..\r\nlast\r\n");
  }
  ASSERT_EQ(spool_count("tmp"), 0);
  /* RSET, NOOP, VRFY, HELP; then a second message on the same session. */
  ASSERT_EQ(cmd(c, "RSET\r\n"), 250);
  ASSERT_EQ(cmd(c, "NOOP\r\n"), 250);
  ASSERT_EQ(cmd(c, "VRFY bob\r\n"), 252);
  ASSERT_EQ(cmd(c, "HELP\r\n"), 214);
  ASSERT_EQ(cmd(c, "MAIL FROM:<>\r\n"), 250); /* the null sender of bounces */
  ASSERT_EQ(cmd(c, "RCPT TO:<bob@example.net>\r\n"), 250);
  ASSERT_EQ(cmd(c, "DATA\r\n"), 354);
  ASSERT_EQ(cmd(c, "x\r\n.\r\n"), 250);
  ASSERT_EQ(cmd(c, "QUIT\r\n"), 221);
  ASSERT_TRUE(cli_eof(c));
  cli_close(c);
  ASSERT_EQ(spool_count("new"), 2);
  ASSERT_EQ(smtp_stats_get(-1, &st), 0);
  ASSERT_UEQ(st.sessions, 1);
  ASSERT_UEQ(st.messages, 2);
  ASSERT_UEQ(st.fsyncs, 4); /* the file and new/, per message */
  ASSERT_UEQ(st.rejects, 0);
  ASSERT_EQ(smtp_stats_get(5, &st), -EINVAL);
  finish();
}

static void t_sink_mode(void)
{
  int port = start(1, "mode = \"sink\";", NULL);
  char r[4096];
  smtp_stats st;
  cli *c;

  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cmd(c, "HELO client.test\r\n"), 250);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@b.c>\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<d@e.f>\r\n"), 250);
  ASSERT_EQ(cmd(c, "DATA\r\n"), 354);
  ASSERT_EQ(cli_send(c, "hello\r\n..\r\n.\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 250);
  ASSERT_TRUE(strstr(r, "250 2.0.0 Ok: queued as ") == r);
  ASSERT_EQ(cmd(c, "QUIT\r\n"), 221);
  cli_close(c);
  ASSERT_EQ(spool_count("new"), -1); /* sink mode makes no spool */
  ASSERT_EQ(smtp_stats_get(0, &st), 0);
  ASSERT_UEQ(st.messages, 1);
  ASSERT_UEQ(st.bytes, 10); /* "hello\r\n" and ".\r\n" (unstuffing is not counted back) */
  ASSERT_UEQ(st.fsyncs, 0);
  finish();
}

/* Everything in one write: the replies come back in order, bodies end where they should. */
static void t_pipelining(void)
{
  int port = start(2, NULL, NULL);
  static const int want[] = {220, 250, 250, 250, 250, 354, 250, 250,
                             250, 354, 250, 250, 250, 354, 250, 221};
  char r[4096], id[64], file[4096];
  cli *c;

  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_NOT_NULL(c);
  /* RFC 2920: the client waits for 354 before sending a body. */
  ASSERT_EQ(cli_send(c, "EHLO p.test\r\nMAIL FROM:<a@p.test>\r\nRCPT TO:<b@p.test>\r\n"
                        "RCPT TO:<c@p.test>\r\nDATA\r\n"),
            0);
  for (int i = 0; i < 6; i++)
    ASSERT_EQ(cli_reply(c, r, sizeof(r)), want[i]);
  ASSERT_EQ(cli_send(c, "one\r\n.\r\nMAIL FROM:<a@p.test>\r\nRCPT TO:<b@p.test>\r\nDATA\r\n"), 0);
  for (int i = 6; i < 10; i++)
    ASSERT_EQ(cli_reply(c, r, sizeof(r)), want[i]);
  /* An empty body, then the next transaction right behind it. */
  ASSERT_EQ(cli_send(c, ".\r\nMAIL FROM:<a@p.test>\r\nRCPT TO:<b@p.test>\r\nDATA\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), want[10]);
  ASSERT_NOT_NULL(queued_id(r, id, sizeof(id)));
  ASSERT_TRUE(spool_read(id, file, sizeof(file)) > 0);
  ASSERT_TRUE(strstr(file, "\r\n\t") != NULL && strstr(file, "MAIL") == NULL);
  for (int i = 11; i < 14; i++)
    ASSERT_EQ(cli_reply(c, r, sizeof(r)), want[i]);
  ASSERT_EQ(cli_send(c, ".x\r\n.\r\nQUIT\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), want[14]);
  ASSERT_NOT_NULL(queued_id(r, id, sizeof(id)));
  ASSERT_TRUE(spool_read(id, file, sizeof(file)) > 0);
  ASSERT_TRUE(strstr(file, ";\r\n\t") != NULL);
  ASSERT_TRUE(strlen(file) > 3 && strcmp(file + strlen(file) - 3, "x\r\n") == 0);
  ASSERT_TRUE(strstr(file, "\r\n.x\r\n") == NULL);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), want[15]);
  cli_close(c);
  ASSERT_EQ(spool_count("new"), 3);
  finish();
}

/* A session on `port` with a transaction open: greeting, EHLO, MAIL and RCPT, each
 * answered as it should be. NULL if any of them was not. */
static cli *transaction_open(int port)
{
  cli *c = cli_open(port);

  if (c != NULL &&
      (cmd(c, NULL) != 220 || cmd(c, "EHLO s.test\r\n") != 250 ||
       cmd(c, "MAIL FROM:<a@s.test>\r\n") != 250 || cmd(c, "RCPT TO:<b@s.test>\r\n") != 250)) {
    cli_close(c);
    c = NULL;
  }
  return c;
}

/* A body sent before 354 behind an empty message: refused, not guessed at. */
static void t_pipelining_past_data(void)
{
  int port = start(1, NULL, NULL);
  cli *c;

  ASSERT_GT(port, 0);
  c = transaction_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cmd(c, "DATA\r\n"), 354);
  ASSERT_EQ(cli_send(c, ".\r\nMAIL FROM:<a@p.test>\r\nRCPT TO:<b@p.test>\r\nDATA\r\nbody\r\n.\r\n"),
            0);
  ASSERT_EQ(cmd(c, NULL), 554);
  ASSERT_TRUE(cli_eof(c));
  cli_close(c);
  ASSERT_EQ(spool_count("new"), 0);
  finish();
}

static void t_command_order(void)
{
  int port = start(1, "max_errors = 100;", NULL);
  cli *c;

  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@b.c>\r\n"), 503); /* before HELO */
  ASSERT_EQ(cmd(c, "HELO\r\n"), 501);
  ASSERT_EQ(cmd(c, "EHLO x.test\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<a@b.c>\r\n"), 503); /* before MAIL */
  ASSERT_EQ(cmd(c, "DATA\r\n"), 503);
  ASSERT_EQ(cmd(c, "MAIL FROM:a@b.c\r\n"), 501); /* no <> */
  ASSERT_EQ(cmd(c, "MAIL FROM:<a b@c>\r\n"), 501);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@b.c> FOO=1\r\n"), 555);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@b.c> SIZE=x\r\n"), 501);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@b.c> BODY=9BIT\r\n"), 501);
  ASSERT_EQ(cmd(c, "MAIL FROM:<\xc3\xa9@b.c>\r\n"), 553); /* UTF-8 without SMTPUTF8 */
  ASSERT_EQ(cmd(c, "MAIL FROM:<\xc3\xa9@b.c> SMTPUTF8\r\n"), 250);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@b.c>\r\n"), 503); /* nested */
  ASSERT_EQ(cmd(c, "DATA\r\n"), 554);              /* no recipients */
  ASSERT_EQ(cmd(c, "RCPT TO:<>\r\n"), 501);
  ASSERT_EQ(cmd(c, "RCPT TO:<@relay.test:d@e.f>\r\n"), 250); /* source route ignored */
  ASSERT_EQ(cmd(c, "RCPT TO:<d@e.f> NOTIFY=NEVER\r\n"), 555);
  ASSERT_EQ(cmd(c, "DATA now\r\n"), 501);
  ASSERT_EQ(cmd(c, "RSET x\r\n"), 501);
  ASSERT_EQ(cmd(c, "EXPN list\r\n"), 502);
  ASSERT_EQ(cmd(c, "STARTTLS\r\n"), 502); /* no TLS configured */
  ASSERT_EQ(cmd(c, "BOGUS\r\n"), 500);
  ASSERT_EQ(cmd(c, "mail from:<lower@case.test>\r\n"),
            503); /* still nested: verbs are case-blind */
  ASSERT_EQ(cmd(c, "rset\r\n"), 250);
  ASSERT_EQ(cmd(c, "HELO x.test\r\n"), 250);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@b.c> SIZE=10\r\n"), 555); /* parameters need EHLO */
  ASSERT_EQ(cmd(c, "QUIT\r\n"), 221);
  cli_close(c);
  finish();
}

/* ---- smuggling: bare CR and LF ------------------------------------------------------------ */

/* `closes`: the session ends after the reply (the disconnect policy, or LF "." LF). */
static void smuggle(const char *policy, const char *body, int want, int want_files, int closes)
{
  char extra[128], r[4096];
  int port;
  cli *c;

  snprintf(extra, sizeof(extra), "bare_newline = \"%s\";", policy);
  port = start(1, extra, NULL);
  ASSERT_GT(port, 0);
  c = transaction_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cmd(c, "DATA\r\n"), 354);
  ASSERT_EQ(cli_send(c, body), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), want);
  if (closes) {
    ASSERT_TRUE(cli_eof(c));
  } else {
    /* Nothing smuggled in the body became a command: the session is where it was. */
    ASSERT_EQ(cmd(c, "NOOP\r\n"), 250);
    ASSERT_EQ(cmd(c, "RCPT TO:<x@s.test>\r\n"), 503);
  }
  cli_close(c);
  ASSERT_EQ(spool_count("new"), want_files);
  finish();
}

static void t_smuggling_bare_lf(void)
{
  /* The classic: "\n.\n" or "\n.\r\n" taken as the end by a lax server. With LF "." LF
   * inside, the session is closed too, however the bytes were segmented. */
  smuggle("reject", "a\r\n\n.\nMAIL FROM:<evil@s.test>\nRCPT TO:<v@s.test>\nDATA\nspoof\n\r\n.\r\n",
          554, 0, 1);
  smuggle("reject", "a\n.\r\nMAIL FROM:<evil@s.test>\r\nRCPT TO:<v@s.test>\r\nDATA\r\nx\r\n.\r\n",
          554, 0, 0);
  smuggle("disconnect", "a\r\n.\nMAIL FROM:<evil@s.test>\r\n\r\n.\r\n", 554, 0, 1);
}

static void t_smuggling_bare_cr(void)
{
  smuggle("reject", "a\r\n\r.\r\nMAIL FROM:<evil@s.test>\r\n\r\n.\r\n", 554, 0, 0);
  smuggle("reject", "a\r.\r\n\r\n.\r\n", 554, 0, 0);
  /* accept: stored as sent; the message still ends only at CRLF.CRLF. */
  smuggle("accept", "a\n.\nMAIL FROM:<evil@s.test>\r\n.\r\n", 250, 1, 0);
}

/*
 * A client that ends its lines with a bare LF (a hand-made script, `openssl s_client`
 * without -crlf) gets an answer at once: each command line is refused when its LF
 * arrives (t_bare_newline_in_commands), and a message that ends with LF "." LF is refused
 * and the session closed, rather than silence until the data timeout (the client's
 * timeout, 5 s, is far shorter). `data` is the DATA command and whatever is sent with it,
 * then `pieces` are sent one by one.
 */
static void lf_only_body(const char *data, const char *const *pieces)
{
  char r[1024];
  int port = start(1, NULL, NULL);
  cli *c;

  ASSERT_GT(port, 0);
  c = transaction_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cmd(c, data), 354);
  for (; *pieces != NULL; pieces++)
    ASSERT_EQ(cli_send(c, *pieces), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 554);
  ASSERT_TRUE(cli_eof(c));
  cli_close(c);
  ASSERT_EQ(spool_count("new"), 0);
  finish();
}

static void t_lf_only_client(void)
{
  static const char *const whole[] = {"Subject: x\n\nbody\n.\n", NULL};
  static const char *const empty[] = {".\n", NULL};
  static const char *const split[] = {"a\r\nb\n", ".", "\n", NULL}; /* "." and LF apart */
  static const char *const none[] = {NULL};

  lf_only_body("DATA\r\n", whole);
  lf_only_body("DATA\r\n", empty);
  lf_only_body("DATA\r\n", split);
  /* The body sent with DATA, before the 354 (RFC 2920 forbids it, bare-LF scripts do it):
   * it is in the read-ahead already, and no readiness would come for it. */
  lf_only_body("DATA\r\nSubject: x\n\nbody\n.\n", none);
}

static void t_bare_newline_in_commands(void)
{
  int port = start(1, NULL, NULL);
  cli *c;

  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cmd(c, NULL), 220);
  /* A line ends at its LF: the bare-LF EHLO is refused at once, then MAIL comes before
   * EHLO. */
  ASSERT_EQ(cmd(c, "EHLO s.test\n"), 500);
  ASSERT_EQ(cmd(c, "EHLO s.test\nMAIL FROM:<a@s.test>\r\n"), 500);
  ASSERT_EQ(cmd(c, NULL), 503);
  ASSERT_EQ(cmd(c, "EHLO s.test\rMAIL FROM:<a@s.test>\r\n"), 500);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@s.test>\r\n"), 503); /* the EHLO above did not count */
  ASSERT_EQ(cli_sendn(c, "NOOP\0x\r\n", 8), 0);
  ASSERT_EQ(cmd(c, NULL), 500); /* a NUL in a command */
  ASSERT_EQ(cmd(c, "NOOP\r\n"), 250);
  cli_close(c);
  finish();
}

/* ---- limits -------------------------------------------------------------------------------- */

static void t_line_and_size_limits(void)
{
  int port = start(1, "message_size_limit = 2048; max_line_length = 512;", NULL);
  char big[8192], r[4096];
  cli *c;

  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cli_send(c, "EHLO l.test\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 250);
  ASSERT_TRUE(strstr(r, "250-SIZE 2048\r\n") != NULL);
  /* A command line over the limit: refused, and the next one is read normally. */
  memset(big, 'A', 600);
  memcpy(big, "NOOP ", 5);
  strcpy(big + 600, "\r\n");
  ASSERT_EQ(cmd(c, big), 500);
  ASSERT_EQ(cmd(c, "NOOP\r\n"), 250);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@l.test> SIZE=4096\r\n"), 552);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@l.test> SIZE=1000\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<b@l.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, "DATA\r\n"), 354);
  /* 5000 bytes of body: over the limit; the rest is skipped up to the real end. */
  for (int i = 0; i < 50; i++)
    ASSERT_EQ(cli_send(c, "0123456789012345678901234567890123456789012345678901234567890123456789"
                          "012345678901234567890123456789\r\n"),
              0);
  ASSERT_EQ(cmd(c, "MAIL FROM:<inside@body>\r\n.\r\n"), 552);
  ASSERT_EQ(cmd(c, "NOOP\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<b@l.test>\r\n"), 503); /* the transaction ended with the 552 */
  /* Exactly at the limit is fine. */
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@l.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<b@l.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, "DATA\r\n"), 354);
  memset(big, 'x', 2046);
  strcpy(big + 2046, "\r\n.\r\n");
  ASSERT_EQ(cmd(c, big), 250);
  cli_close(c);
  ASSERT_EQ(spool_count("new"), 1);
  finish();
}

static void t_recipient_and_error_limits(void)
{
  int port = start(1, "max_recipients = 2; max_errors = 3;", NULL);
  cli *c;

  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cmd(c, "EHLO r.test\r\n"), 250);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@r.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<1@r.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<2@r.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<3@r.test>\r\n"), 452); /* error 1 */
  ASSERT_EQ(cmd(c, "BOGUS\r\n"), 500);              /* error 2 */
  ASSERT_EQ(cmd(c, "BOGUS\r\n"), 500);              /* error 3: then 421 */
  ASSERT_EQ(cmd(c, NULL), 421);
  ASSERT_TRUE(cli_eof(c));
  cli_close(c);
  finish();
}

static void t_session_limits(void)
{
  int port = start(2, "max_sessions_per_ip = 2;", NULL);
  char r[4096];
  smtp_stats st;
  cli *a, *b, *c;

  ASSERT_GT(port, 0);
  a = cli_open(port);
  b = cli_open(port);
  ASSERT_EQ(cmd(a, NULL), 220);
  ASSERT_EQ(cmd(b, NULL), 220);
  c = cli_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 421);
  ASSERT_TRUE(strstr(r, "too many connections from your address") != NULL);
  ASSERT_TRUE(cli_eof(c));
  cli_close(c);
  /* A session that ends frees its slot. */
  ASSERT_EQ(cmd(a, "QUIT\r\n"), 221);
  ASSERT_TRUE(cli_eof(a));
  cli_close(a);
  for (int i = 0; i < 200; i++) {
    c = cli_open(port);
    ASSERT_NOT_NULL(c);
    if (cmd(c, NULL) == 220)
      break;
    cli_close(c);
    c = NULL;
    usleep(10000);
  }
  ASSERT_NOT_NULL(c);
  cli_close(c);
  cli_close(b);
  ASSERT_EQ(smtp_stats_get(-1, &st), 0);
  ASSERT_TRUE(st.sessions_refused >= 1);
  finish();

  port = start(1, "max_sessions = 1; max_sessions_per_ip = 0;", NULL);
  ASSERT_GT(port, 0);
  a = cli_open(port);
  ASSERT_EQ(cmd(a, NULL), 220);
  b = cli_open(port);
  ASSERT_EQ(cli_reply(b, r, sizeof(r)), 421);
  ASSERT_TRUE(strstr(r, "too many sessions") != NULL);
  cli_close(b);
  cli_close(a);
  finish();
}

static void t_timeouts(void)
{
  int port = start(1, "command_timeout = 0.3; data_timeout = 0.3;", NULL);
  char r[4096];
  cli *c;

  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cmd(c, "EHLO t.test\r\n"), 250);
  /* Silence: 421 and close (within the client's 5 s read timeout). */
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 421);
  ASSERT_TRUE(strstr(r, "421 4.4.2") == r);
  ASSERT_TRUE(cli_eof(c));
  cli_close(c);
  /* In the middle of a body, too. */
  c = cli_open(port);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cmd(c, "HELO t.test\r\nMAIL FROM:<a@t.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, NULL), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<b@t.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, "DATA\r\n"), 354);
  ASSERT_EQ(cli_send(c, "partial body"), 0);
  ASSERT_EQ(cmd(c, NULL), 421);
  ASSERT_TRUE(cli_eof(c));
  cli_close(c);
  ASSERT_EQ(spool_count("new"), 0);
  finish();
}

static void t_spool_failure(void)
{
  char extra[256], r[4096];
  int port;
  smtp_stats st;
  cli *c;

  /* A spool directory that cannot be made: a path under a regular file. */
  make_tmpdir();
  snprintf(extra, sizeof(extra), "%s/file", tmpdir);
  fclose(fopen(extra, "w"));
  snprintf(extra, sizeof(extra), "spool_dir = \"%s/file/spool\";", tmpdir);
  port = start(1, extra, NULL);
  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cmd(c, "EHLO f.test\r\n"), 250);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@f.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, "RCPT TO:<b@f.test>\r\n"), 250);
  ASSERT_EQ(cmd(c, "DATA\r\n"), 354);
  ASSERT_EQ(cli_send(c, "x\r\n.\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 451);
  ASSERT_EQ(cmd(c, "NOOP\r\n"), 250); /* the session goes on */
  cli_close(c);
  ASSERT_EQ(smtp_stats_get(-1, &st), 0);
  ASSERT_UEQ(st.spool_errors, 1);
  ASSERT_UEQ(st.messages, 0);
  finish();
}

/* Many sessions at once on two shards, each with several pipelined messages. */
static void t_many_sessions(void)
{
  enum { SESSIONS = 40, MSGS = 5 };
  int port = start(2, "max_sessions_per_ip = 100;", NULL);
  cli *c[SESSIONS];
  smtp_stats st;

  ASSERT_GT(port, 0);
  for (int i = 0; i < SESSIONS; i++) {
    c[i] = cli_open(port);
    ASSERT_NOT_NULL(c[i]);
    ASSERT_EQ(
        cli_send(c[i], "EHLO m.test\r\nMAIL FROM:<a@m.test>\r\nRCPT TO:<b@m.test>\r\nDATA\r\n"), 0);
  }
  for (int m = 0; m < MSGS; m++) {
    for (int i = 0; i < SESSIONS; i++) {
      ASSERT_EQ(cmd(c[i], NULL), m == 0 ? 220 : 250); /* greeting, or the last message's */
      if (m == 0)
        ASSERT_EQ(cmd(c[i], NULL), 250); /* EHLO */
      ASSERT_EQ(cmd(c[i], NULL), 250);
      ASSERT_EQ(cmd(c[i], NULL), 250);
      ASSERT_EQ(cmd(c[i], NULL), 354);
      ASSERT_EQ(
          cli_send(c[i], m + 1 < MSGS
                             ? "body\r\n.\r\nMAIL FROM:<a@m.test>\r\nRCPT TO:<b@m.test>\r\nDATA\r\n"
                             : "body\r\n.\r\nQUIT\r\n"),
          0);
    }
  }
  for (int i = 0; i < SESSIONS; i++) {
    ASSERT_EQ(cmd(c[i], NULL), 250);
    ASSERT_EQ(cmd(c[i], NULL), 221);
    cli_close(c[i]);
  }
  ASSERT_EQ(spool_count("new"), SESSIONS * MSGS);
  ASSERT_EQ(smtp_stats_get(-1, &st), 0);
  ASSERT_UEQ(st.messages, SESSIONS * MSGS);
  finish();
}

/* An idle session holds no read-ahead, no body and no big reply buffer, even after a
 * pipelined burst of many replies. */
static void t_idle_holds_little(void)
{
  enum { SESSIONS = 8 };
  int port = start(1, "mode = \"sink\";", NULL);
  static char burst[300 * 6 + 64];
  ec_memtype_stats body, out;
  cli *c[SESSIONS];

  ASSERT_GT(port, 0);
  burst[0] = '\0';
  strcat(burst, "EHLO i.test\r\n");
  for (int i = 0; i < 300; i++)
    strcat(burst, "NOOP\r\n"); /* 300 replies of 16 bytes: an 8 KiB reply buffer */
  for (int i = 0; i < SESSIONS; i++) {
    c[i] = cli_open(port);
    ASSERT_NOT_NULL(c[i]);
    ASSERT_EQ(cli_send(c[i], burst), 0);
    ASSERT_EQ(cmd(c[i], NULL), 220);
    for (int k = 0; k < 301; k++)
      ASSERT_EQ(cmd(c[i], NULL), 250);
    ASSERT_EQ(cmd(c[i], "MAIL FROM:<a@i.test>\r\nRCPT TO:<b@i.test>\r\n"), 250);
    ASSERT_EQ(cmd(c[i], NULL), 250);
  }
  /* All replies were read, so every session is back waiting for input. */
  ASSERT_EQ(ec_memtype_stats_get(MEMTYPE_MESSAGE_BODY, &body), 0);
  ASSERT_EQ(ec_memtype_stats_get(MEMTYPE_BUF_STORAGE, &out), 0);
  ASSERT_EQ(body.live_objects, 0);
  ASSERT_LE(out.live_bytes, SESSIONS * SMTP_IDLE_OUT_MAX);
  for (int i = 0; i < SESSIONS; i++)
    cli_close(c[i]);
  finish();
}

/* A graceful stop: a session answers what it was sent, then says 421 and closes; one in
 * the middle of a transaction finishes it first. */
static void t_graceful_stop(void)
{
  int port = start(1, NULL, NULL);
  char r[4096];
  cli *a, *b;

  ASSERT_GT(port, 0);
  a = cli_open(port);
  b = cli_open(port);
  ASSERT_EQ(cmd(a, NULL), 220);
  ASSERT_EQ(cmd(b, NULL), 220);
  ASSERT_EQ(cmd(a, "EHLO g.test\r\n"), 250);
  ASSERT_EQ(cmd(b, "EHLO g.test\r\nMAIL FROM:<a@g.test>\r\n"), 250);
  ASSERT_EQ(cmd(b, NULL), 250);
  ec_framework_stop();
  ASSERT_EQ(cmd(a, "NOOP\r\n"), 250);
  ASSERT_EQ(cli_reply(a, r, sizeof(r)), 421);
  ASSERT_TRUE(strstr(r, "421 4.3.2 mx.test Service shutting down") == r);
  ASSERT_TRUE(cli_eof(a));
  ASSERT_EQ(cmd(b, "RCPT TO:<b@g.test>\r\n"), 250); /* the transaction goes on */
  ASSERT_EQ(cmd(b, "DATA\r\n"), 354);
  ASSERT_EQ(cmd(b, "last\r\n.\r\n"), 250);
  ASSERT_EQ(cmd(b, NULL), 421);
  ASSERT_TRUE(cli_eof(b));
  cli_close(a);
  cli_close(b);
  ASSERT_EQ(spool_count("new"), 1);
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
}

/* ---- STARTTLS ------------------------------------------------------------------------------ */

static char cert[160], key[160];

static int make_cert(void)
{
  char command[512];

  make_tmpdir();
  snprintf(cert, sizeof(cert), "%s/cert.pem", tmpdir);
  snprintf(key, sizeof(key), "%s/key.pem", tmpdir);
  if (access(cert, R_OK) == 0)
    return 0;
  snprintf(command, sizeof(command),
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
           "-subj /CN=mx.test -keyout '%s' -out '%s' >/dev/null 2>&1",
           key, cert);
  return system(command) == 0 ? 0 : -1;
}

static int start_tls(const char *smtp_extra)
{
  char listener[512];

  if (make_cert() < 0)
    return -1;
  snprintf(listener, sizeof(listener),
           "tls = { certificate = \"%s\"; key = \"%s\"; mode = \"starttls\"; };", cert, key);
  return start(1, smtp_extra, listener);
}

static int cli_tls(cli *c, SSL_CTX *ctx)
{
  c->ssl = SSL_new(ctx);
  SSL_set_fd(c->ssl, c->fd);
  return SSL_connect(c->ssl) == 1 ? 0 : -1;
}

static void t_starttls(void)
{
  int port = start_tls(NULL);
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  char r[4096], id[64], file[4096];
  cli *c;

  ASSERT_GT(port, 0);
  ASSERT_NOT_NULL(ctx);
  c = cli_open(port);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cli_send(c, "EHLO t.test\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 250);
  ASSERT_TRUE(strstr(r, "250-STARTTLS\r\n") != NULL);
  ASSERT_EQ(cmd(c, "STARTTLS x\r\n"), 501);
  ASSERT_EQ(cmd(c, "STARTTLS\r\n"), 220);
  ASSERT_EQ(cli_tls(c, ctx), 0);
  /* A new session under TLS: MAIL needs a new EHLO, which no longer offers STARTTLS. */
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@t.test>\r\n"), 503);
  ASSERT_EQ(cli_send(c, "EHLO t.test\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 250);
  ASSERT_TRUE(strstr(r, "STARTTLS") == NULL);
  ASSERT_EQ(cmd(c, "STARTTLS\r\n"), 503);
  /* Pipelining works under TLS too. */
  ASSERT_EQ(cli_send(c, "MAIL FROM:<a@t.test>\r\nRCPT TO:<b@t.test>\r\nDATA\r\n"), 0);
  ASSERT_EQ(cmd(c, NULL), 250);
  ASSERT_EQ(cmd(c, NULL), 250);
  ASSERT_EQ(cmd(c, NULL), 354);
  ASSERT_EQ(cli_send(c, "secret\r\n.\r\nQUIT\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 250);
  ASSERT_NOT_NULL(queued_id(r, id, sizeof(id)));
  ASSERT_TRUE(spool_read(id, file, sizeof(file)) > 0);
  ASSERT_TRUE(strstr(file, "with ESMTPS id") != NULL);
  ASSERT_EQ(cmd(c, NULL), 221);
  cli_close(c);
  SSL_CTX_free(ctx);
  finish();
}

/* CVE-2011-0411: commands pipelined behind STARTTLS are never run as if sent under TLS. */
static void t_starttls_injection(void)
{
  int port = start_tls(NULL);
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  char r[4096];
  cli *c;

  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cmd(c, "EHLO t.test\r\n"), 250);
  ASSERT_EQ(cli_send(c, "STARTTLS\r\nMAIL FROM:<injected@t.test>\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 554);
  ASSERT_TRUE(cli_eof(c));
  cli_close(c);
  finish();

  /* discard: the injected bytes are dropped, the upgrade goes on, and the session under
   * TLS starts from scratch (MAIL is refused: no EHLO, no injected sender). */
  port = start_tls("starttls_injection_policy = \"discard\";");
  ASSERT_GT(port, 0);
  c = cli_open(port);
  ASSERT_EQ(cmd(c, NULL), 220);
  ASSERT_EQ(cmd(c, "EHLO t.test\r\n"), 250);
  ASSERT_EQ(cli_send(c, "STARTTLS\r\nEHLO evil\r\nMAIL FROM:<injected@t.test>\r\n"), 0);
  ASSERT_EQ(cli_reply(c, r, sizeof(r)), 220);
  ASSERT_EQ(cli_tls(c, ctx), 0);
  ASSERT_EQ(cmd(c, "RCPT TO:<b@t.test>\r\n"), 503);
  ASSERT_EQ(cmd(c, "MAIL FROM:<a@t.test>\r\n"), 503);
  ASSERT_EQ(cmd(c, "QUIT\r\n"), 221);
  cli_close(c);
  SSL_CTX_free(ctx);
  finish();
}

static const unit_test tests[] = {
    UNIT_TEST(t_spool_conversation),
    UNIT_TEST(t_sink_mode),
    UNIT_TEST(t_pipelining),
    UNIT_TEST(t_pipelining_past_data),
    UNIT_TEST(t_command_order),
    UNIT_TEST(t_smuggling_bare_lf),
    UNIT_TEST(t_smuggling_bare_cr),
    UNIT_TEST(t_bare_newline_in_commands),
    UNIT_TEST(t_lf_only_client),
    UNIT_TEST(t_line_and_size_limits),
    UNIT_TEST(t_recipient_and_error_limits),
    UNIT_TEST(t_session_limits),
    UNIT_TEST(t_timeouts),
    UNIT_TEST(t_spool_failure),
    UNIT_TEST(t_many_sessions),
    UNIT_TEST(t_idle_holds_little),
    UNIT_TEST(t_graceful_stop),
    UNIT_TEST(t_starttls),
    UNIT_TEST(t_starttls_injection),
    {NULL, NULL},
};

UNIT_MAIN("smtp", tests)
