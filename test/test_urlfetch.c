/*
 * test/test_urlfetch.c - the URL fetcher sample (samples/urlfetch, the seed's suspend and
 * resume server) driven over loopback TCP: files, file:// URLs and http:// URLs from a
 * local server (test/httpd.h), several requests and pipelined requests on one
 * connection, many connections at once, a failed fetch closing the connection, and a
 * client that hangs up while its session is suspended. The module is compiled into the
 * test (it is built on the public API only), so sanitizers see it too.
 */
#include "unit.h"

#include "httpd.h"
#include "samples/urlfetch/urlfetch.c"

#include <netinet/tcp.h>

static char tmpdir[64], path_a[128], path_b[128];
static char *content_a, content_b[4096];
static size_t len_b;
static httpd srv;
static int port;

#define LEN_A 300000

static void write_all(int fd, const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = write(fd, buf, len);

    if (n <= 0)
      return;
    buf += n;
    len -= (size_t)n;
  }
}

static void setup_files(void)
{
  int fd;

  strcpy(tmpdir, "/tmp/ecshard-urlfetch-XXXXXX");
  CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmpdir));
  content_a = httpd_binary(); /* 300000 bytes, every byte value */
  snprintf(path_a, sizeof(path_a), "%s/a.bin", tmpdir);
  snprintf(path_b, sizeof(path_b), "%s/b.txt", tmpdir);
  fd = open(path_a, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  write_all(fd, content_a, LEN_A);
  close(fd);
  len_b = 0;
  for (int i = 0; i < 100; i++)
    len_b += (size_t)snprintf(content_b + len_b, sizeof(content_b) - len_b,
                              "file URL content, line %d\n", i);
  fd = open(path_b, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  write_all(fd, content_b, len_b);
  close(fd);
}

static void teardown_files(void)
{
  unlink(path_a);
  unlink(path_b);
  rmdir(tmpdir);
  free(content_a);
}

/* Starts the framework with the urlfetch listener on a free loopback port. */
static int start_server(int shards)
{
  char listen[64], *sets[4];
  ec_framework_options o = unit_options(shards);

  port = unit_free_port();
  snprintf(listen, sizeof(listen), "listener.urlfetch.listen=\"127.0.0.1:%d\"", port);
  sets[0] = listen;
  sets[1] = "listener.urlfetch.protocol=urlfetch";
  sets[2] = "io_wrapper.timeout=1.0";
  sets[3] = NULL;
  o.set = (const char *const *)sets;
  if (ec_framework_init(&o) != 0)
    return -1;
  if (urlfetch_register() != 0 || ec_framework_start() != 0) {
    ec_framework_stop();
    ec_framework_join();
    return -1;
  }
  return 0;
}

static void stop_server(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
}

static int client(void)
{
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Reads exactly len bytes (5 s per piece); 0 on success. */
static int read_exactly(int fd, char *buf, size_t len)
{
  size_t got = 0;

  while (got < len) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, 5000) <= 0)
      return -1;
    n = read(fd, buf + got, len - got);
    if (n <= 0)
      return -1;
    got += (size_t)n;
  }
  return 0;
}

/* 1 if nothing arrives (and no EOF) within ms. */
static int quiet_for(int fd, int ms)
{
  struct pollfd p = {.fd = fd, .events = POLLIN};

  return poll(&p, 1, ms) == 0;
}

/* 1 if the server closes the connection (EOF, nothing else) within 5 s. */
static int closed_by_server(int fd)
{
  struct pollfd p = {.fd = fd, .events = POLLIN};
  char c;

  return poll(&p, 1, 5000) == 1 && read(fd, &c, 1) == 0;
}

/* Sends "url\r\n" and expects exactly want/len back. */
static int fetch(int fd, const char *url, const char *want, size_t len)
{
  char line[512], *got = malloc(len + 1);
  int ok;

  snprintf(line, sizeof(line), "%s\r\n", url);
  write_all(fd, line, strlen(line));
  ok = read_exactly(fd, got, len) == 0 && memcmp(got, want, len) == 0;
  free(got);
  return ok;
}

static char chunked_body[1010];
static int ready;

static void cleanup(void)
{
  if (!ready)
    return;
  ready = 0;
  httpd_stop(&srv);
  teardown_files();
}

/* Files and the HTTP server, once per process (any test may run alone). */
static int setup(void)
{
  if (ready)
    return 0;
  setup_files();
  if (httpd_start(&srv, tmpdir) != 0)
    return -1;
  memcpy(chunked_body, "abcdefghij", 10);
  memset(chunked_body + 10, 'x', 1000);
  ready = 1;
  atexit(cleanup);
  return 0;
}

static void t_one_connection(void)
{
  char url[256];
  int64_t events, jobs;
  int fd;

  ASSERT_EQ(setup(), 0);
  events = unit_live(MEMTYPE_EVENT);
  jobs = unit_live(MEMTYPE_EC_ASYNC_JOB);
  ASSERT_EQ(start_server(2), 0);
  fd = client();
  ASSERT_TRUE(fd >= 0);
  /* A plain path (larger than the socket buffers: the write goes through PENDING). */
  ASSERT_TRUE(fetch(fd, path_a, content_a, LEN_A));
  ASSERT_TRUE(quiet_for(fd, 50));
  /* A file:// URL, an http:// URL to a file, a chunked http:// body, a redirect. */
  snprintf(url, sizeof(url), "file://%s", path_b);
  ASSERT_TRUE(fetch(fd, url, content_b, len_b));
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/file/a.bin", srv.port);
  ASSERT_TRUE(fetch(fd, url, content_a, LEN_A));
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/chunked", srv.port);
  ASSERT_TRUE(fetch(fd, url, chunked_body, sizeof(chunked_body)));
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir-rel", srv.port);
  ASSERT_TRUE(fetch(fd, url, chunked_body, sizeof(chunked_body)));
  /* Two requests in one write: two answers, in order. */
  {
    char two[600], *got = malloc(len_b * 2);

    snprintf(two, sizeof(two), "%s\r\nfile://%s\r\n", path_b, path_b);
    write_all(fd, two, strlen(two));
    ASSERT_EQ(read_exactly(fd, got, len_b * 2), 0);
    ASSERT_EQ(memcmp(got, content_b, len_b), 0);
    ASSERT_EQ(memcmp(got + len_b, content_b, len_b), 0);
    free(got);
  }
  ASSERT_TRUE(quiet_for(fd, 50));
  /* A fetch that fails closes the connection (the seed's behaviour). */
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/missing\r\n", srv.port);
  write_all(fd, url, strlen(url));
  ASSERT_TRUE(closed_by_server(fd));
  close(fd);
  /* A client that shuts its side down gets the connection closed. */
  fd = client();
  ASSERT_TRUE(fetch(fd, path_b, content_b, len_b));
  shutdown(fd, SHUT_WR);
  ASSERT_TRUE(closed_by_server(fd));
  close(fd);
  for (int i = 0; i < 5000 && ec_sessions_active() > 0; i++)
    usleep(1000);
  ASSERT_UEQ(ec_sessions_active(), 0);
  stop_server();
  /* Every Event (originals, suspended duplicates, acceptors) and every job is gone. */
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), events);
  ASSERT_EQ(unit_live(MEMTYPE_EC_ASYNC_JOB), jobs);
}

/* A client hangs up while its session is suspended (the fetch takes 1 s to time out):
 * the completion still resumes the session, which closes; nothing leaks. */
static void t_hang_up_while_suspended(void)
{
  char url[128];
  ec_thread_pool_stats st;
  int64_t events;
  int fd;

  ASSERT_EQ(setup(), 0);
  events = unit_live(MEMTYPE_EVENT);
  ASSERT_EQ(start_server(1), 0);
  fd = client();
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow\r\n", srv.port);
  write_all(fd, url, strlen(url));
  for (int i = 0; i < 5000; i++) { /* the job is running */
    if (ec_thread_pool_stats_get(ECTP_CLASS_IO, &st) == 0 && st.running == 1)
      break;
    usleep(1000);
  }
  ASSERT_UEQ(st.running, 1);
  close(fd);
  for (int i = 0; i < 5000; i++) {
    if (ec_thread_pool_stats_get(ECTP_CLASS_IO, &st) == 0 && st.done == 1 && st.running == 0)
      break;
    usleep(1000);
  }
  ASSERT_UEQ(st.done, 1);
  for (int i = 0; i < 5000 && ec_sessions_active() > 0; i++)
    usleep(1000);
  ASSERT_UEQ(ec_sessions_active(), 0); /* the resumed session closed itself */
  stop_server();
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), events);
}

#define CLIENTS  8
#define REQUESTS 20

struct client_run {
  pthread_t thread;
  int id, ok, failures;
};

static void *client_main(void *arg)
{
  struct client_run *c = arg;
  char url[256];
  int fd = client();

  if (fd < 0) {
    c->failures++;
    return NULL;
  }
  for (int r = 0; r < REQUESTS; r++) {
    int kind = (c->id + r) % 3;

    if (kind == 0)
      snprintf(url, sizeof(url), "%s", path_b);
    else if (kind == 1)
      snprintf(url, sizeof(url), "http://127.0.0.1:%d/file/b.txt", srv.port);
    else
      snprintf(url, sizeof(url), "http://127.0.0.1:%d/chunked", srv.port);
    if (fetch(fd, url, kind == 2 ? chunked_body : content_b,
              kind == 2 ? sizeof(chunked_body) : len_b))
      c->ok++;
    else
      c->failures++;
  }
  close(fd);
  return NULL;
}

/* Many connections at once over the shards, each with a run of requests. */
static void t_many_connections(void)
{
  struct client_run c[CLIENTS];
  int64_t events;

  ASSERT_EQ(setup(), 0);
  events = unit_live(MEMTYPE_EVENT);
  ASSERT_EQ(start_server(2), 0);
  for (int i = 0; i < CLIENTS; i++) {
    c[i] = (struct client_run){.id = i};
    pthread_create(&c[i].thread, NULL, client_main, &c[i]);
  }
  for (int i = 0; i < CLIENTS; i++)
    pthread_join(c[i].thread, NULL);
  for (int i = 0; i < CLIENTS; i++) {
    ASSERT_EQ(c[i].failures, 0);
    ASSERT_EQ(c[i].ok, REQUESTS);
  }
  for (int i = 0; i < 5000 && ec_sessions_active() > 0; i++)
    usleep(1000);
  ASSERT_UEQ(ec_sessions_active(), 0);
  stop_server();
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), events);
}

static void t_cleanup(void)
{
  cleanup();
  CU_PASS("cleaned up");
}

static const unit_test tests[] = {
    UNIT_TEST(t_one_connection),
    UNIT_TEST(t_hang_up_while_suspended),
    UNIT_TEST(t_many_connections),
    UNIT_TEST(t_cleanup),
    {NULL, NULL},
};

UNIT_MAIN("urlfetch", tests)
