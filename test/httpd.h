/*
 * test/httpd.h - a small HTTP/1.1 server for tests, on 127.0.0.1 and a port of its own.
 *
 * One thread accepts, one thread per connection answers one request. Every answer is
 * scripted, so that what a client must cope with (chunked bodies, redirects, errors,
 * silence, truncation, oversize) happens the same way on every run:
 *
 *   /plain        200, Content-Length, "hello, plain\n"
 *   /chunked      200, chunked in pieces of 3, 7 and 1000 bytes, an extension and a trailer
 *   /binary       200, HTTPD_BINARY_LEN bytes covering every byte value (httpd_binary())
 *   /redir-rel    302 to /chunked;  /redir-abs  301 to http://127.0.0.1:PORT/plain
 *   /redir-303    303 to /plain;    /loop       302 to /loop;  /tofile  302 to file:///etc/hostname
 *   /missing      404 with a body;  /empty      204
 *   /slow         headers never come (until the server stops)
 *   /big          200, chunked, HTTPD_BIG_LEN bytes;  /big-cl  the same with Content-Length
 *   /truncated    200, Content-Length 100, 50 bytes, then the connection closes
 *   /file/NAME    200, the contents of httpd.dir/NAME (Content-Length), or 404
 *
 * Include it in one test file; every function is static.
 */
#ifndef EC_TEST_HTTPD_H
#define EC_TEST_HTTPD_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define HTTPD_BINARY_LEN 300000
#define HTTPD_BIG_LEN    20000
#define HTTPD_MAX_CONNS  256

typedef struct httpd {
  int lfd;
  int port;
  int stop[2]; /* readable once httpd_stop runs: /slow and the accept loop end */
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_t conns[HTTPD_MAX_CONNS];
  int nconns;
  int requests;  /* answered so far (atomic) */
  char dir[256]; /* /file/ serves from here */
} httpd;

typedef struct httpd_conn {
  httpd *h;
  int fd;
} httpd_conn;

static char httpd_byte(size_t i)
{
  return (char)((i * 2654435761u) >> 24);
}

/* The /binary body, for comparisons (caller frees). */
static char *httpd_binary(void)
{
  char *b = malloc(HTTPD_BINARY_LEN);

  for (size_t i = 0; b != NULL && i < HTTPD_BINARY_LEN; i++)
    b[i] = httpd_byte(i);
  return b;
}

static int httpd_send(int fd, const void *buf, size_t len)
{
  const char *p = buf;

  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1; /* the client went away (it may, on purpose) */
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int httpd_printf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int httpd_printf(int fd, const char *fmt, ...)
{
  char buf[1024];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return httpd_send(fd, buf, (size_t)n);
}

static int httpd_chunk(int fd, const char *data, size_t len, const char *ext)
{
  if (httpd_printf(fd, "%zx%s\r\n", len, ext ? ext : "") < 0 || httpd_send(fd, data, len) < 0)
    return -1;
  return httpd_send(fd, "\r\n", 2);
}

/* Reads the request head; returns the path (in buf) or NULL. */
static char *httpd_read_request(int fd, char *buf, size_t size)
{
  size_t got = 0;
  char *sp, *end;

  while (got + 1 < size) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, 5000) <= 0)
      return NULL;
    n = recv(fd, buf + got, size - 1 - got, 0);
    if (n <= 0)
      return NULL;
    got += (size_t)n;
    buf[got] = '\0';
    if (strstr(buf, "\r\n\r\n") != NULL)
      break;
  }
  if (strncmp(buf, "GET ", 4) != 0 || (sp = strchr(buf + 4, ' ')) == NULL)
    return NULL;
  *sp = '\0';
  end = buf + 4;
  return end;
}

static void httpd_answer(httpd *h, int fd, const char *path)
{
  static const char plain[] = "hello, plain\n";
  char body[1000];

  if (strcmp(path, "/plain") == 0) {
    httpd_printf(fd, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                 strlen(plain), plain);
  } else if (strcmp(path, "/chunked") == 0) {
    memset(body, 'x', sizeof(body));
    if (httpd_printf(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == 0 &&
        httpd_chunk(fd, "abc", 3, NULL) == 0 && httpd_chunk(fd, "defghij", 7, ";ext=1") == 0 &&
        httpd_chunk(fd, body, sizeof(body), NULL) == 0)
      httpd_printf(fd, "0\r\nX-Trailer: 1\r\n\r\n");
  } else if (strcmp(path, "/binary") == 0) {
    char *b = httpd_binary();

    if (httpd_printf(fd, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", HTTPD_BINARY_LEN) == 0)
      httpd_send(fd, b, HTTPD_BINARY_LEN);
    free(b);
  } else if (strcmp(path, "/redir-rel") == 0) {
    httpd_printf(fd, "HTTP/1.1 302 Found\r\nLocation: /chunked\r\nContent-Length: 0\r\n\r\n");
  } else if (strcmp(path, "/redir-abs") == 0) {
    httpd_printf(fd,
                 "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:%d/plain\r\nContent-Length: "
                 "5\r\n\r\nmoved",
                 h->port);
  } else if (strcmp(path, "/redir-303") == 0) {
    httpd_printf(fd, "HTTP/1.1 303 See Other\r\nLocation: /plain\r\nContent-Length: 0\r\n\r\n");
  } else if (strcmp(path, "/loop") == 0) {
    httpd_printf(fd, "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n");
  } else if (strcmp(path, "/tofile") == 0) {
    httpd_printf(
        fd, "HTTP/1.1 302 Found\r\nLocation: file:///etc/hostname\r\nContent-Length: 0\r\n\r\n");
  } else if (strcmp(path, "/missing") == 0) {
    httpd_printf(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope");
  } else if (strcmp(path, "/empty") == 0) {
    httpd_printf(fd, "HTTP/1.1 204 No Content\r\n\r\n");
  } else if (strcmp(path, "/slow") == 0) {
    struct pollfd p = {.fd = h->stop[0], .events = POLLIN};

    poll(&p, 1, 10000);
  } else if (strcmp(path, "/big") == 0 || strcmp(path, "/big-cl") == 0) {
    int chunked = strcmp(path, "/big") == 0;

    memset(body, 'B', sizeof(body));
    if (chunked)
      httpd_printf(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    else
      httpd_printf(fd, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", HTTPD_BIG_LEN);
    for (int i = 0; i < HTTPD_BIG_LEN / (int)sizeof(body); i++)
      if ((chunked ? httpd_chunk(fd, body, sizeof(body), NULL)
                   : httpd_send(fd, body, sizeof(body))) < 0)
        return;
    if (chunked)
      httpd_printf(fd, "0\r\n\r\n");
  } else if (strcmp(path, "/truncated") == 0) {
    memset(body, 'T', 50);
    if (httpd_printf(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n") == 0)
      httpd_send(fd, body, 50);
  } else if (strncmp(path, "/file/", 6) == 0 && strchr(path + 6, '/') == NULL) {
    char name[512];
    struct stat st;
    int f = -1;

    if (strlen(h->dir) + strlen(path) < sizeof(name)) {
      strcpy(name, h->dir);
      strcat(name, "/");
      strcat(name, path + 6);
      f = open(name, O_RDONLY);
    }
    if (f < 0 || fstat(f, &st) < 0) {
      httpd_printf(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    } else {
      char buf[16384];
      ssize_t n;

      httpd_printf(fd, "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n\r\n", (long long)st.st_size);
      while ((n = read(f, buf, sizeof(buf))) > 0)
        if (httpd_send(fd, buf, (size_t)n) < 0)
          break;
    }
    if (f >= 0)
      close(f);
  } else {
    httpd_printf(fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
  }
}

static void *httpd_conn_main(void *arg)
{
  httpd_conn *c = arg;
  char req[4096];
  char *path = httpd_read_request(c->fd, req, sizeof(req));

  if (path != NULL)
    httpd_answer(c->h, c->fd, path);
  __atomic_add_fetch(&c->h->requests, 1, __ATOMIC_RELEASE);
  /* Let the client see everything before the close. */
  shutdown(c->fd, SHUT_WR);
  close(c->fd);
  free(c);
  return NULL;
}

static void *httpd_main(void *arg)
{
  httpd *h = arg;

  for (;;) {
    struct pollfd p[2] = {{.fd = h->lfd, .events = POLLIN}, {.fd = h->stop[0], .events = POLLIN}};
    httpd_conn *c;
    int fd;

    if (poll(p, 2, -1) < 0 && errno == EINTR)
      continue;
    if (p[1].revents)
      return NULL;
    fd = accept(h->lfd, NULL, NULL);
    if (fd < 0)
      continue;
    c = malloc(sizeof(*c));
    c->h = h;
    c->fd = fd;
    pthread_mutex_lock(&h->lock);
    if (h->nconns == HTTPD_MAX_CONNS ||
        pthread_create(&h->conns[h->nconns], NULL, httpd_conn_main, c) != 0) {
      close(fd);
      free(c);
    } else {
      h->nconns++;
    }
    pthread_mutex_unlock(&h->lock);
  }
}

/* 0 on success; h->port is the port. */
static int httpd_start(httpd *h, const char *dir)
{
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof(sa);

  memset(h, 0, sizeof(*h));
  snprintf(h->dir, sizeof(h->dir), "%s", dir ? dir : "/nonexistent");
  pthread_mutex_init(&h->lock, NULL);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (h->lfd < 0 || bind(h->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
      listen(h->lfd, 128) < 0 || getsockname(h->lfd, (struct sockaddr *)&sa, &len) < 0 ||
      pipe(h->stop) < 0)
    return -1;
  h->port = ntohs(sa.sin_port);
  return pthread_create(&h->thread, NULL, httpd_main, h) == 0 ? 0 : -1;
}

static void httpd_stop(httpd *h)
{
  char c = 1;

  if (write(h->stop[1], &c, 1) != 1)
    return;
  pthread_join(h->thread, NULL);
  for (int i = 0; i < h->nconns; i++)
    pthread_join(h->conns[i], NULL);
  close(h->lfd);
  close(h->stop[0]);
  close(h->stop[1]);
  pthread_mutex_destroy(&h->lock);
}

#endif /* EC_TEST_HTTPD_H */
