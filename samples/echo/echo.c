/*
 * samples/echo/echo.c - an echo server on every shard, built only on the public API.
 *
 * Each shard opens its own SO_REUSEPORT listening socket, so the kernel spreads new
 * connections over the shards and a connection lives on the shard that accepted it.
 * Usage: ecshard-echo [--listen ADDR:PORT] [--shards N] [--set key=value]...
 * Stops gracefully on SIGINT/SIGTERM.
 */
#include "ec_config.h"
#include "ec_framework.h"
#include "event.h"
#include "scheduler.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#define ECHO_BUF             16384
#define ACCEPTS_PER_DISPATCH 64

struct conn {
  size_t len, off; /* bytes in buf not yet written back */
  char buf[ECHO_BUF];
};

static int echo_cb(Event *e, int eventtype, void *closure, struct timeval *now)
{
  struct conn *c = closure;
  int needmask;
  int n;

  for (;;) {
    while (c->off < c->len) {
      n = event_write(e, c->buf + c->off, (int)(c->len - c->off), &needmask);
      if (n < 0 && errno == EAGAIN)
        return needmask; /* the peer reads slowly: wait until we can write again */
      if (n <= 0)
        goto done;
      c->off += (size_t)n;
    }
    c->off = c->len = 0;
    n = event_read(e, c->buf, sizeof(c->buf), &needmask);
    if (n < 0 && errno == EAGAIN)
      return needmask;
    if (n <= 0)
      goto done;
    c->len = (size_t)n;
  }
done:
  event_close(e);
  free(c);
  return 0;
}

static int accept_cb(Event *e, int eventtype, void *closure, struct timeval *now)
{
  for (int i = 0; i < ACCEPTS_PER_DISPATCH; i++) {
    int one = 1;
    int fd = accept4(e->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    struct conn *c;
    Event *ce;

    if (fd < 0) {
      if (errno != EAGAIN && errno != ECONNABORTED && errno != EINTR)
        log1_printf(DERROR, "echo: accept4(%d) failed: %s", e->fd, strerror(errno));
      break;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = malloc(sizeof(*c));
    if (c == NULL || (ce = build_fd_event(fd, E_READ, 0, echo_cb, c)) == NULL) {
      free(c);
      close(fd);
      continue;
    }
    c->len = c->off = 0;
    schedule_event(ce); /* built on this shard: the connection stays here */
  }
  return E_READ;
}

static int listen_on(const struct sockaddr_in *sa)
{
  int one = 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
      bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 || listen(fd, 4096) < 0) {
    int err = errno;

    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
  char host[64];
  const char *colon = strrchr(s, ':');
  long port;

  if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
    return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  port = strtol(colon + 1, NULL, 10);
  memset(sa, 0, sizeof(*sa));
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sa->sin_addr) != 1)
    return -1;
  return 0;
}

int main(int argc, char **argv)
{
  const char *listen_addr = "127.0.0.1:7007";
  const char *set[32];
  int nset = 0;
  ec_framework_options opts = {0};
  struct sockaddr_in sa;
  int rc;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
      listen_addr = argv[++i];
    else if (strcmp(argv[i], "--shards") == 0 && i + 1 < argc)
      opts.shards = atoi(argv[++i]);
    else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && nset < 31)
      set[nset++] = argv[++i];
    else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
      opts.config_file = argv[++i];
    else {
      fprintf(stderr,
              "usage: %s [--listen ADDR:PORT] [--shards N] [--config FILE] "
              "[--set key=value]...\n",
              argv[0]);
      return 2;
    }
  }
  set[nset] = NULL;
  opts.set = set;
  if (parse_addr(listen_addr, &sa) < 0) {
    fprintf(stderr, "%s: bad address '%s' (want IPv4:PORT)\n", argv[0], listen_addr);
    return 2;
  }
  rc = ec_framework_init(&opts);
  if (rc < 0) {
    fprintf(stderr, "%s: ec_framework_init: %s\n", argv[0], strerror(-rc));
    return 1;
  }
  for (int i = 0; i < ec_shard_count(); i++) {
    int fd = listen_on(&sa);
    Event *e;

    if (fd < 0) {
      log1_printf(DCRITICAL, "echo: cannot listen on %s: %s", listen_addr, strerror(errno));
      ec_framework_join();
      return 1;
    }
    e = build_fd_event(fd, E_READ, 0, accept_cb, NULL);
    ec_event_place(e, i);
    schedule_event(e);
  }
  log1_printf(DNOTICE, "echo: listening on %s with %d shards", listen_addr, ec_shard_count());
  fprintf(stderr, "ecshard-echo: listening on %s with %d shards (Ctrl-C stops)\n", listen_addr,
          ec_shard_count());
  rc = ec_framework_run();
  return rc < 0 ? 1 : 0;
}
