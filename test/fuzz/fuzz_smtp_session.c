/*
 * test/fuzz/fuzz_smtp_session.c - libFuzzer target for the SMTP module's command and DATA
 * handling (samples/smtp/smtp.c), through a real session: the framework runs the module
 * on a loopback listener (sink mode, one shard) and each input is what one client sends
 * on a new connection, followed by the end of its stream. The module's state machine,
 * command parser, dot-unstuffing, bare CR/LF policy, limits and replies all see the
 * bytes exactly as from the network; ASan and UBSan watch the shard thread.
 *
 * Inputs are capped at 16 KiB (small limits below make the long-line and size paths
 * reachable with that). A session that does not end within 8 s of the client's end of
 * stream is a hang: abort (the margin is for a loaded CI machine; sessions end in ms).
 */
#include "../../samples/smtp/smtp.c"
#include "shard/shard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port;

/* A hang: what shard 0 holds (racy reads of a live shard, for the report only), every
 * registered descriptor with its interest and the SMTP sessions' state, then every
 * thread's backtrace if gdb is there. */
static void report_hang(int client_fd)
{
  shard *sh = shard__get(0);
  struct sockaddr_in me;
  socklen_t len = sizeof(me);
  char cmd[128];

  if (getsockname(client_fd, (struct sockaddr *)&me, &len) != 0)
    me.sin_port = 0;
  fprintf(stderr, "hang: client port %d; shard 0: %d timers, %d floating\n", ntohs(me.sin_port),
          sh->ntimers, sh->nfloating);
  for (int fd = 0; fd < sh->fd_cap; fd++) {
    Event *e = sh->fd_events[fd];
    struct pollfd p = {fd, POLLIN, 0};

    if (e == NULL)
      continue;
    fprintf(stderr, "  fd %d: mask 0x%x regmask 0x%x state %u flags 0x%x, poll %d revents 0x%x\n",
            fd, e->mask, e->_priv.regmask, e->_priv.state, e->_priv.flags, poll(&p, 1, 0),
            p.revents);
    if (e->callback == smtp_cb && e->closure != NULL) {
      smtp_session *ss = e->closure;

      fprintf(stderr, "    smtp session: phase %d quitting %d errors %d, %d bytes to write\n",
              (int)ss->phase, ss->quitting, ss->errors, ss->out.buflen - ss->out.offset);
    }
  }
  snprintf(cmd, sizeof(cmd), "gdb -p %d -batch -ex 'thread apply all bt' 1>&2", (int)getpid());
  if (system(cmd) != 0)
    fprintf(stderr, "(no backtraces: gdb failed)\n");
}

static uint64_t mono_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  static char text[1024];
  ec_framework_options o = {.shards = 1};

  (void)argc;
  (void)argv;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0)
    abort();
  port = ntohs(a.sin_port);
  close(fd);
  snprintf(text, sizeof(text),
           "log = { level = \"critical\"; };\n"
           "listener = { s = { listen = \"127.0.0.1:%d\"; protocol = \"smtp\"; }; };\n"
           "smtp = { mode = \"sink\"; max_line_length = 512; message_size_limit = 4096;\n"
           "         max_recipients = 5; max_errors = 20; };\n",
           port);
  o.config_text = text;
  if (smtp_register() < 0 || ec_framework_init(&o) < 0 || ec_framework_start() < 0)
    abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  size_t off = 0;
  uint64_t deadline;
  char buf[65536];

  if (size > 16384 || fd < 0)
    goto out;
  a.sin_port = htons((uint16_t)port);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    struct pollfd p = {fd, POLLOUT, 0};
    int err = errno;
    socklen_t elen = sizeof(err);

    /* Interrupted (SIGALRM), the connection goes on: wait for its outcome. */
    if (err == EINTR) {
      while (poll(&p, 1, 8000) < 0 && errno == EINTR)
        ;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
        err = errno;
    }
    if (err != 0) {
      fprintf(stderr, "connect to the server: %s\n", strerror(err));
      abort(); /* the server stopped listening */
    }
  }
  /* libFuzzer's SIGALRM (its -timeout watch) interrupts blocking calls: EINTR is retried
   * everywhere here, and the wait for the end of the session keeps its own deadline. */
  while (off < size) {
    ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* the server closed (too many errors): fine */
    off += (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  deadline = mono_ms() + 8000;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    uint64_t now = mono_ms();
    ssize_t n;
    int r;

    if (now >= deadline) {
      report_hang(fd);
      abort(); /* the session did not end within 8 s of the client's end of stream */
    }
    r = poll(&p, 1, (int)(deadline - now));
    if (r <= 0)
      continue; /* EINTR, or the deadline: checked above */
    n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
  }
out:
  if (fd >= 0) {
    /* The session is over: close with a reset, so that hundreds of thousands of runs leave
     * no TIME_WAIT behind on the client's side to use up the ephemeral ports. */
    struct linger lg = {1, 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
  }
  return 0;
}
