/*
 * perf/bench_tls_server.c - the ecshard side of perf/run-tls.sh: an implicit-TLS listener
 * (the framework's `tls` section) whose protocol answers HTTP/1.1 just enough for wrk, so
 * that the same client measures it and nginx:
 *
 *   GET /      -> 200, "hello\n"
 *   GET /big   -> 200, --big bytes (default 1 MiB) from memory, written as TLS records
 *
 * Keep-alive unless the request says "Connection: close" (then the server closes after
 * the answer, as nginx does: a new TLS connection per request measures handshakes).
 * Request bodies are not supported (wrk sends none). At exit it prints how many TLS
 * sessions were full handshakes and how many resumed, so the run can show that the
 * handshake figure really is full handshakes.
 *
 *   bench_tls_server --port P --cert chain.pem --key key.pem [--shards N] [--big BYTES]
 *                    [--tls-extra 'libconfig members']
 * SIGTERM/SIGINT stop it.
 */
#include "ec_framework.h"
#include "ec_ssl.h"
#include "event.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REQ_MAX 8192

static char *big;
static size_t big_len = 1 << 20;
static uint64_t n_full, n_resumed; /* atomic */

typedef struct conn {
  char req[REQ_MAX];
  size_t have;
  char head[256];
  const char *seg[2]; /* the answer being written: head, then body */
  size_t seglen[2];
  int nseg, cur;
  size_t off;
  int closing; /* close once the answer is written */
  int counted;
} conn;

static const char hello_head[] = "HTTP/1.1 200 OK\r\nServer: ecshard\r\nContent-Type: "
                                 "text/plain\r\nContent-Length: 6\r\n";

static int finish(Event *e, conn *c)
{
  event_close(e);
  free(c);
  return 0;
}

/* Sets up the answer to the request in c->req[0..len) (written by flush). */
static void answer(conn *c, size_t len)
{
  int big_req = len > 9 && strncmp(c->req, "GET /big ", 9) == 0;
  int n;

  c->req[len - 1] = '\0';
  c->closing = strcasestr(c->req, "\r\nConnection: close") != NULL;
  if (big_req)
    n = snprintf(c->head, sizeof(c->head),
                 "HTTP/1.1 200 OK\r\nServer: ecshard\r\nContent-Type: "
                 "application/octet-stream\r\nContent-Length: %zu\r\n%s\r\n",
                 big_len, c->closing ? "Connection: close\r\n" : "");
  else
    n = snprintf(c->head, sizeof(c->head), "%s%s\r\nhello\n", hello_head,
                 c->closing ? "Connection: close\r\n" : "");
  c->seg[0] = c->head;
  c->seglen[0] = (size_t)n;
  c->seg[1] = big;
  c->seglen[1] = big_len;
  c->nseg = big_req ? 2 : 1;
  c->cur = 0;
  c->off = 0;
}

/* Writes what is left of the answer: 0 done, >0 the mask to wait for, -1 error. */
static int flush(Event *e, conn *c)
{
  while (c->cur < c->nseg) {
    size_t left = c->seglen[c->cur] - c->off;
    int need,
        n = event_write(e, c->seg[c->cur] + c->off, left > (1u << 20) ? 1 << 20 : (int)left, &need);

    if (n < 0)
      return errno == EAGAIN ? need : -1;
    c->off += (size_t)n;
    if (c->off == c->seglen[c->cur]) {
      c->cur++;
      c->off = 0;
    }
  }
  c->nseg = 0;
  return 0;
}

static int conn_cb(Event *e, int type, void *closure, struct timeval *now)
{
  conn *c = closure;
  int need;

  if (type & E_TIMEOUT)
    return finish(e, c);
  for (;;) {
    char *end;
    ssize_t n;

    if (c->nseg > 0) {
      int rc = flush(e, c);

      if (rc < 0)
        return finish(e, c);
      if (rc > 0)
        return rc;
    }
    if (c->closing)
      return finish(e, c);
    end = c->have >= 4 ? memmem(c->req, c->have, "\r\n\r\n", 4) : NULL;
    if (end != NULL) {
      size_t len = (size_t)(end - c->req) + 4;

      answer(c, len);
      memmove(c->req, c->req + len, c->have - len);
      c->have -= len;
      continue;
    }
    if (c->have == sizeof(c->req))
      return finish(e, c); /* a head this large is not wrk's */
    n = event_read(e, c->req + c->have, (int)(sizeof(c->req) - c->have), &need);
    if (n > 0) {
      if (!c->counted) {
        c->counted = 1;
        __atomic_add_fetch(SSL_session_reused(ec_ssl_ctx_from_event(e)->ssl) ? &n_resumed : &n_full,
                           1, __ATOMIC_RELAXED);
      }
      c->have += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EAGAIN)
      return need;
    return finish(e, c);
  }
}

static int start(Event *e, const ec_accept_info *info, void *closure)
{
  conn *c = calloc(1, sizeof(*c));

  (void)info, (void)closure;
  if (c == NULL)
    return 0;
  e->callback = conn_cb;
  e->closure = c;
  return E_READ;
}

int main(int argc, char **argv)
{
  const char *cert = NULL, *key = NULL, *extra = "";
  int port = 0, shards = 1;
  ec_framework_options o = {0};
  ec_protocol p = {.name = "tlsbench", .session_start = start};
  char text[4096];
  int rc;

  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--port") == 0)
      port = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--cert") == 0)
      cert = argv[i + 1];
    else if (strcmp(argv[i], "--key") == 0)
      key = argv[i + 1];
    else if (strcmp(argv[i], "--shards") == 0)
      shards = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--big") == 0)
      big_len = (size_t)strtoull(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--tls-extra") == 0)
      extra = argv[i + 1];
  }
  if (port <= 0 || cert == NULL || key == NULL || shards < 1 || big_len == 0) {
    fprintf(stderr,
            "usage: %s --port P --cert chain.pem --key key.pem [--shards N] [--big "
            "BYTES] [--tls-extra MEMBERS]\n",
            argv[0]);
    return 2;
  }
  if ((big = malloc(big_len)) == NULL)
    return 1;
  for (size_t i = 0; i < big_len; i++)
    big[i] = (char)('a' + i % 26);
  snprintf(text, sizeof(text),
           "log = { level = \"warning\"; };\n"
           "listener = { bench = { listen = \"127.0.0.1:%d\"; protocol = \"tlsbench\";\n"
           "  idle_timeout = 600.0; backlog = 4096;\n"
           "  tls = { certificate = \"%s\"; key = \"%s\"; %s }; }; };\n",
           port, cert, key, extra);
  o.config_text = text;
  o.shards = shards;
  if (ec_protocol_register(&p) < 0 || (rc = ec_framework_init(&o)) < 0) {
    fprintf(stderr, "bench_tls_server: the configuration was refused\n");
    return 1;
  }
  rc = ec_framework_run();
  fprintf(stderr, "bench_tls_server: tls_full_handshakes=%llu tls_resumed=%llu\n",
          (unsigned long long)__atomic_load_n(&n_full, __ATOMIC_RELAXED),
          (unsigned long long)__atomic_load_n(&n_resumed, __ATOMIC_RELAXED));
  free(big);
  return rc < 0 ? 1 : 0;
}
