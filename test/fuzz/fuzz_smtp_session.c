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

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int port;

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
  char buf[65536];

  if (size > 16384 || fd < 0)
    goto out;
  a.sin_port = htons((uint16_t)port);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
    abort(); /* the server stopped listening */
  while (off < size) {
    ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);

    if (n <= 0)
      break; /* the server closed (too many errors): fine */
    off += (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n;

    if (poll(&p, 1, 8000) <= 0)
      abort(); /* the session did not end after the client's end of stream */
    n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0)
      break;
  }
out:
  if (fd >= 0)
    close(fd);
  return 0;
}
