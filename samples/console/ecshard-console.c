/*
 * samples/console/ecshard-console.c - talks to a running ecshard server's console.
 *
 *   ecshard-console [-s SOCKET] [-t SECONDS] [COMMAND [ARG...]]
 *
 * With a command it sends that one line, prints the answer and exits: 0 if the answer
 * does not start with "error:", 1 if it does, 2 if the server cannot be reached or does
 * not answer within the timeout (10 s). Without one it reads commands from standard input
 * (with a prompt on a terminal) until end of file or `quit`. SOCKET defaults to
 * $ECSHARD_CONSOLE, else $XDG_RUNTIME_DIR/ecshardd.console if it exists, else
 * ./ecshardd.console (where ecshardd's embedded configuration puts it).
 *
 * The protocol: one command per line; the server answers with lines ended by a line
 * holding a single "."; answer lines that start with "." carry one extra ".".
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int timeout_ms = 10000;

static int connect_to(const char *path)
{
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int fd;

  if (strlen(path) >= sizeof(sa.sun_path)) {
    fprintf(stderr, "ecshard-console: socket path too long: %s\n", path);
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1); /* length checked above */
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    fprintf(stderr, "ecshard-console: cannot connect to %s: %s\n", path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads one answer and prints it. 0 (ok), 1 (error: answer), 2 (connection trouble). */
static int read_answer(int fd)
{
  static char buf[65536];
  static size_t len;
  int first = 1, rc = 0;

  for (;;) {
    char *nl;

    while ((nl = memchr(buf, '\n', len)) != NULL) {
      size_t n = (size_t)(nl - buf) + 1;
      const char *line = buf;

      if (n == 2 && buf[0] == '.') {
        memmove(buf, buf + n, len - n);
        len -= n;
        return rc;
      }
      if (line[0] == '.')
        line++;
      if (first && strncmp(line, "error:", 6) == 0)
        rc = 1;
      first = 0;
      fwrite(line, 1, (size_t)(nl + 1 - line), stdout);
      memmove(buf, buf + n, len - n);
      len -= n;
    }
    if (len == sizeof(buf)) { /* a line longer than the buffer: print it as it is */
      fwrite(buf, 1, len, stdout);
      len = 0;
    }
    {
      struct pollfd p = {.fd = fd, .events = POLLIN};
      ssize_t r;

      if (poll(&p, 1, timeout_ms) <= 0) {
        fprintf(stderr, "ecshard-console: no answer within %d ms\n", timeout_ms);
        return 2;
      }
      r = read(fd, buf + len, sizeof(buf) - len);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0) {
        if (len > 0)
          fwrite(buf, 1, len, stdout);
        len = 0;
        return first ? 2 : rc; /* closed: after `quit` or `shutdown` that is expected */
      }
      len += (size_t)r;
    }
  }
}

static void usage(FILE *out)
{
  fprintf(out, "usage: ecshard-console [-s SOCKET] [-t SECONDS] [COMMAND [ARG...]]\n"
               "  SOCKET defaults to $ECSHARD_CONSOLE, else $XDG_RUNTIME_DIR/ecshardd.console\n"
               "  if it exists, else ./ecshardd.console\n"
               "  `ecshard-console help` lists the server's commands\n");
}

int main(int argc, char **argv)
{
  const char *path = getenv("ECSHARD_CONSOLE");
  char line[8192];
  int i = 1, fd, rc = 0, tty;

  if (path == NULL || path[0] == '\0') {
    /* Where ecshardd's embedded configuration puts it. */
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    static char xdg_path[160];

    path = "ecshardd.console";
    if (xdg != NULL && xdg[0] == '/' && strlen(xdg) < 80) {
      snprintf(xdg_path, sizeof(xdg_path), "%s/ecshardd.console", xdg);
      if (access(xdg_path, F_OK) == 0)
        path = xdg_path;
    }
  }
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
      path = argv[++i];
    } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
      timeout_ms = (int)(atof(argv[++i]) * 1000);
      if (timeout_ms <= 0)
        timeout_ms = 10000;
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }
  fd = connect_to(path);
  if (fd < 0)
    return 2;
  if (i < argc) {
    size_t n = 0;

    for (; i < argc; i++) {
      int w = snprintf(line + n, sizeof(line) - n, "%s%s", n ? " " : "", argv[i]);

      if (w < 0 || (size_t)w >= sizeof(line) - n - 1) {
        fprintf(stderr, "ecshard-console: command too long\n");
        close(fd);
        return 2;
      }
      n += (size_t)w;
    }
    line[n++] = '\n';
    rc = send_all(fd, line, n) < 0 ? 2 : read_answer(fd);
    close(fd);
    return rc;
  }
  tty = isatty(STDIN_FILENO);
  for (;;) {
    if (tty) {
      fputs("ecshard> ", stdout);
      fflush(stdout);
    }
    if (fgets(line, sizeof(line), stdin) == NULL)
      break;
    if (strchr(line, '\n') == NULL) {
      size_t n = strlen(line);

      if (n + 1 >= sizeof(line)) {
        fprintf(stderr, "ecshard-console: line longer than %zu bytes\n", sizeof(line) - 2);
        rc = 2;
        break;
      }
      line[n] = '\n'; /* the last line of a file without a newline */
      line[n + 1] = '\0';
    }
    if (send_all(fd, line, strlen(line)) < 0) {
      rc = 2;
      break;
    }
    rc = read_answer(fd);
    fflush(stdout);
    if (rc == 2 || strcmp(line, "quit\n") == 0 || strcmp(line, "exit\n") == 0)
      break;
  }
  close(fd);
  return rc == 2 ? 2 : 0;
}
