/*
 * test/test_io_wrapper.c - io_wrapper read jobs (pool/io_wrapper.c): the URL copy, files
 * and file:// URLs, and HTTP against a scripted local server (test/httpd.h): plain and
 * chunked bodies, redirects, errors, timeouts, size limits; HTTPS against `openssl
 * s_server` with a certificate made for the run. Most jobs run with ECTP_COMPLETE_SYNC
 * (the work in the test's thread); some go through the IO pool.
 */
#include "unit.h"

#include "httpd.h"
#include "io_wrapper.h"

#include <semaphore.h>
#include <signal.h>
#include <sys/wait.h>

static char tmpdir[64];
static httpd srv;

/* Framework with small limits, so that timeouts and size limits are quick to reach. */
static const char small_config[] = "io_wrapper = { timeout = 1.0; connect_timeout = 1.0; "
                                   "max_size = 10000; };";

static void start_with(const char *text)
{
  ec_framework_options o = unit_options(1);

  o.config_text = text;
  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
}

static void finish(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
}

/* Runs a read job for `url` synchronously into `s`; returns the finished job. */
static io_job *fetch(const char *url, string *s)
{
  io_job *j = io_wrapper_create_read_job(url);

  if (j == NULL)
    return NULL;
  j->buffer = s;
  j->job.completion = ECTP_COMPLETE_SYNC;
  if (ec_queue_async_job(&j->job) != 1) {
    io_wrapper_free_read_job(j);
    return NULL;
  }
  return j;
}

/* Expects status/errorcode for `url`, and the string unchanged on failure. Returns 0 or
 * fails the test. */
#define EXPECT_FETCH(url, want_status, want_err)                                                   \
  do {                                                                                             \
    string s_;                                                                                     \
    io_job *j_;                                                                                    \
    ASSERT_EQ(string_init_type(&s_, 16, STRING_TYPE_ECSTRING), 1);                                 \
    ASSERT_TRUE(stringwrite2(&s_, "keep", 4) == 4);                                                \
    j_ = fetch((url), &s_);                                                                        \
    ASSERT_NOT_NULL(j_);                                                                           \
    ASSERT_EQ(j_->status, (want_status));                                                          \
    if ((want_err) >= 0)                                                                           \
      ASSERT_EQ(j_->errorcode, (want_err));                                                        \
    if ((want_status) != IOJ_COMPLETED) {                                                          \
      ASSERT_EQ(s_.len, 4);                                                                        \
      ASSERT_EQ(memcmp(s_.buffer, "keep", 5), 0);                                                  \
    }                                                                                              \
    io_wrapper_free_read_job(j_);                                                                  \
    string_destroy(&s_);                                                                           \
  } while (0)

static void rm_tmpdir(void);
static void cleanup(void);

static void make_tmpdir(void)
{
  if (tmpdir[0] == '\0') {
    atexit(cleanup); /* also when a single test runs */
    strcpy(tmpdir, "/tmp/ecshard-iow-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
      tmpdir[0] = '\0';
  }
}

static void write_file(const char *name, const char *data, size_t len, char *path, size_t plen)
{
  int fd;

  snprintf(path, plen, "%s/%s", tmpdir, name);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) {
    if (write(fd, data, len) != (ssize_t)len)
      path[0] = '\0';
    close(fd);
  }
}

static void rm_tmpdir(void)
{
  char cmd[128];

  if (tmpdir[0] == '\0')
    return;
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", tmpdir);
  tmpdir[0] = '\0';
}

/* ---- the job itself ------------------------------------------------------------------------ */

static void t_create(void)
{
  char line[] = "/some/path\r\n";
  io_job *j;

  j = io_wrapper_create_read_job(line);
  ASSERT_NOT_NULL(j);
  line[1] = 'X'; /* the job has its own copy */
  ASSERT_STR_EQ(j->filename, "/some/path");
  ASSERT_EQ(j->job.job_class, ECTP_CLASS_IO);
  ASSERT_TRUE(j->job.worker != NULL);
  ASSERT_EQ(j->job.completion, ECTP_COMPLETE_NONE);
  ASSERT_EQ(j->status, IOJ_MISUSED);
  ASSERT_EQ(j->errorcode, 0);
  ASSERT_NULL(j->buffer);
  ASSERT_PTR_EQ(&j->job, (void *)j); /* the job is the first member */
  io_wrapper_free_read_job(j);

  j = io_wrapper_create_read_job("  a b \t \r\n\n");
  ASSERT_STR_EQ(j->filename, "  a b");
  io_wrapper_free_read_job(j);
  errno = 0;
  ASSERT_NULL(io_wrapper_create_read_job(NULL));
  ASSERT_EQ(errno, EINVAL);
  io_wrapper_free_read_job(NULL);
}

/* No buffer: IOJ_MISUSED; the seed-style free after completion. */
static void t_misused(void)
{
  io_job *j = io_wrapper_create_read_job("/etc/hostname");

  j->job.completion = ECTP_COMPLETE_SYNC;
  ASSERT_EQ(ec_queue_async_job(&j->job), 1);
  ASSERT_EQ(j->status, IOJ_MISUSED);
  ASSERT_EQ(j->errorcode, EINVAL);
  io_wrapper_free_read_job(j);
}

/* ---- files --------------------------------------------------------------------------------- */

static void t_files(void)
{
  char *bin = httpd_binary();
  char path[256], url[512], spaced[256], spaced_url[512];
  string s;
  io_job *j;

  make_tmpdir();
  ASSERT_TRUE(tmpdir[0] != '\0');
  write_file("binary", bin, HTTPD_BINARY_LEN, path, sizeof(path));
  write_file("with space%", "spaced\n", 7, spaced, sizeof(spaced));
  snprintf(spaced_url, sizeof(spaced_url), "file://%s/with%%20space%%25", tmpdir);

  /* A plain path, a file:// URL, file://localhost/, each appended to what is there. */
  for (int form = 0; form < 3; form++) {
    ASSERT_EQ(string_init_type(&s, 16, STRING_TYPE_ECSTRING), 1);
    ASSERT_TRUE(stringwrite2(&s, "pre:", 4) == 4);
    if (form == 0)
      snprintf(url, sizeof(url), "%s\r\n", path);
    else
      snprintf(url, sizeof(url), "file://%s%s\r\n", form == 2 ? "localhost" : "", path);
    j = fetch(url, &s);
    ASSERT_NOT_NULL(j);
    ASSERT_EQ(j->status, IOJ_COMPLETED);
    ASSERT_EQ(j->errorcode, 0);
    ASSERT_EQ(s.len, HTTPD_BINARY_LEN + 4);
    ASSERT_EQ(memcmp(s.buffer, "pre:", 4), 0);
    ASSERT_EQ(memcmp(s.buffer + 4, bin, HTTPD_BINARY_LEN), 0);
    ASSERT_EQ(s.buffer[s.len], '\0');
    io_wrapper_free_read_job(j);
    string_destroy(&s);
  }
  /* Percent escapes; a query and a fragment are not part of the path. */
  ASSERT_EQ(string_init_type(&s, 8, STRING_TYPE_ECSTRING), 1);
  strcat(spaced_url, "?q=1#frag");
  j = fetch(spaced_url, &s);
  ASSERT_EQ(j->status, IOJ_COMPLETED);
  ASSERT_STR_EQ(s.buffer, "spaced\n");
  io_wrapper_free_read_job(j);
  string_destroy(&s);
  free(bin);
}

static void t_file_errors(void)
{
  char path[256], url[512];
  char small[8];
  string st;
  io_job *j;

  make_tmpdir();
  snprintf(path, sizeof(path), "%s/absent", tmpdir);
  EXPECT_FETCH(path, IOJ_OPEN_FAILED, ENOENT);
  snprintf(url, sizeof(url), "file://%s", path);
  EXPECT_FETCH(url, IOJ_OPEN_FAILED, ENOENT);
  EXPECT_FETCH(tmpdir, IOJ_OPEN_FAILED, EISDIR);
  EXPECT_FETCH("", IOJ_OPEN_FAILED, ENOENT);
  EXPECT_FETCH("file:///tmp/%zz", IOJ_OPEN_FAILED, EINVAL);
  EXPECT_FETCH("file:///tmp/a%00b", IOJ_OPEN_FAILED, EINVAL);
  EXPECT_FETCH("file:///tmp/a%4", IOJ_OPEN_FAILED, EINVAL);
  EXPECT_FETCH("file://otherhost/etc/hostname", IOJ_OPEN_FAILED, EINVAL);
  EXPECT_FETCH("gopher://example.com/x", IOJ_OPEN_FAILED, EPROTONOSUPPORT);

  /* A string that cannot grow. */
  write_file("ten", "0123456789", 10, path, sizeof(path));
  ASSERT_EQ(string_init_static(&st, small, sizeof(small), STRING_TYPE_STATIC), 1);
  j = fetch(path, &st);
  ASSERT_EQ(j->status, IOJ_STORE_FAILED);
  ASSERT_EQ(j->errorcode, ENOSPC);
  ASSERT_EQ(st.len, 0);
  io_wrapper_free_read_job(j);
}

/* io_wrapper.max_size: a regular file over it fails before reading; an endless device
 * stops at the limit. */
static void t_file_limits(void)
{
  char big[12000], path[256];

  make_tmpdir();
  memset(big, 'z', sizeof(big));
  write_file("big", big, sizeof(big), path, sizeof(path));
  start_with(small_config);
  EXPECT_FETCH(path, IOJ_STORE_FAILED, EFBIG);
  EXPECT_FETCH("/dev/zero", IOJ_STORE_FAILED, EFBIG);
  write_file("fits", big, 10000, path, sizeof(path));
  EXPECT_FETCH(path, IOJ_COMPLETED, 0);
  finish();
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

static char base[64];

static const char *u(const char *path)
{
  static char buf[4][256];
  static int i;
  char *b = buf[i++ % 4];

  snprintf(b, 256, "%s%s", base, path);
  return b;
}

static void http_up(void)
{
  if (base[0] == '\0') {
    make_tmpdir();
    CU_ASSERT_EQUAL_FATAL(httpd_start(&srv, tmpdir), 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", srv.port);
  }
}

/* Fetches `path` and compares the body. */
static void expect_body(const char *path, const char *want, size_t want_len)
{
  string s;
  io_job *j;

  ASSERT_EQ(string_init_type(&s, 16, STRING_TYPE_ECSTRING), 1);
  j = fetch(u(path), &s);
  ASSERT_NOT_NULL(j);
  ASSERT_EQ(j->status, IOJ_COMPLETED);
  ASSERT_EQ(j->errorcode, 0);
  ASSERT_EQ(s.len, (int64_t)want_len);
  ASSERT_EQ(memcmp(s.buffer, want, want_len), 0);
  io_wrapper_free_read_job(j);
  string_destroy(&s);
}

static void t_http_bodies(void)
{
  char chunked[1010], *bin = httpd_binary();

  http_up();
  memcpy(chunked, "abcdefghij", 10);
  memset(chunked + 10, 'x', 1000);
  expect_body("/plain", "hello, plain\n", 13);
  expect_body("/chunked", chunked, sizeof(chunked));
  expect_body("/binary", bin, HTTPD_BINARY_LEN);
  expect_body("/empty", "", 0);
  expect_body("/plain\r\n", "hello, plain\n", 13); /* a line as read, CR LF and all */
  free(bin);
}

static void t_http_redirects(void)
{
  char chunked[1010];

  http_up();
  memcpy(chunked, "abcdefghij", 10);
  memset(chunked + 10, 'x', 1000);
  expect_body("/redir-rel", chunked, sizeof(chunked));
  expect_body("/redir-abs", "hello, plain\n", 13);
  expect_body("/redir-303", "hello, plain\n", 13);
  EXPECT_FETCH(u("/loop"), IOJ_OPEN_FAILED, ELOOP);
  EXPECT_FETCH(u("/tofile"), IOJ_OPEN_FAILED, EPROTONOSUPPORT); /* no redirect to file:// */
}

static void t_http_errors(void)
{
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof(sa);
  char refused[64];
  int fd;

  http_up();
  EXPECT_FETCH(u("/missing"), IOJ_OPEN_FAILED, 404);
  EXPECT_FETCH(u("/nosuch"), IOJ_OPEN_FAILED, 400);
  EXPECT_FETCH(u("/truncated"), IOJ_READ_FAILED, -1);
  /* A port nobody listens on: bound, then closed. */
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  close(fd);
  snprintf(refused, sizeof(refused), "http://127.0.0.1:%d/", ntohs(sa.sin_port));
  EXPECT_FETCH(refused, IOJ_OPEN_FAILED, ECONNREFUSED);
  EXPECT_FETCH("http://[::1", IOJ_OPEN_FAILED, EINVAL);
}

/* Timeouts and size limits from the configuration. */
static void t_http_limits(void)
{
  struct timespec a, b;
  long ms;

  http_up();
  start_with(small_config);
  clock_gettime(CLOCK_MONOTONIC, &a);
  EXPECT_FETCH(u("/slow"), IOJ_OPEN_FAILED, ETIMEDOUT);
  clock_gettime(CLOCK_MONOTONIC, &b);
  ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
  ASSERT_GE(ms, 900);
  ASSERT_LT(ms, 5000);
  EXPECT_FETCH(u("/big"), IOJ_STORE_FAILED, EFBIG);    /* chunked: found while reading */
  EXPECT_FETCH(u("/big-cl"), IOJ_STORE_FAILED, EFBIG); /* Content-Length: refused early */
  EXPECT_FETCH(u("/plain"), IOJ_COMPLETED, 0);
  finish();
}

/* Through the IO pool: the work runs on a worker, the completion posts a semaphore. */
static void t_http_on_pool(void)
{
  enum { N = 16 };
  io_job *j[N];
  string s[N];
  sem_t done;
  ec_thread_pool_stats st;

  http_up();
  start_with(NULL);
  sem_init(&done, 0, 0);
  for (int i = 0; i < N; i++) {
    string_init_type(&s[i], 16, STRING_TYPE_ECSTRING);
    j[i] = io_wrapper_create_read_job(u(i % 2 ? "/plain" : "/redir-rel"));
    j[i]->buffer = &s[i];
    j[i]->job.completion = ECTP_COMPLETE_SEMAPHORE;
    j[i]->job.r.sema = &done;
    ASSERT_EQ(ec_queue_async_job(&j[i]->job), 1);
  }
  for (int i = 0; i < N; i++)
    while (sem_wait(&done) < 0 && errno == EINTR)
      ;
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(j[i]->status, IOJ_COMPLETED);
    ASSERT_EQ(s[i].len, i % 2 ? 13 : 1010);
    io_wrapper_free_read_job(j[i]);
    string_destroy(&s[i]);
  }
  ASSERT_EQ(ec_thread_pool_stats_get(ECTP_CLASS_IO, &st), 0);
  ASSERT_UEQ(st.done, N);
  sem_destroy(&done);
  finish();
}

/* ---- HTTPS against openssl s_server -WWW ------------------------------------------------ */

static int run_quiet(const char *cmd)
{
  char full[1100];

  if (strlen(cmd) > 1000)
    return -1;
  snprintf(full, sizeof(full), "%s >/dev/null 2>&1", cmd);
  return system(full);
}

static int wait_listening(int port)
{
  for (int i = 0; i < 500; i++) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    if (ok)
      return 1;
    usleep(10000);
  }
  return 0;
}

static void t_https(void)
{
  char cmd[1024], cert[300], key[300], portstr[16], set_ca[400], url[128];
  const char *sets[3];
  ec_framework_options o;
  pid_t pid;
  int port, status;

  make_tmpdir();
  snprintf(cert, sizeof(cert), "%s/cert.pem", tmpdir);
  snprintf(key, sizeof(key), "%s/key.pem", tmpdir);
  snprintf(cmd, sizeof(cmd),
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
           "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout '%s' -out '%s'",
           key, cert);
  ASSERT_EQ(run_quiet(cmd), 0);
  {
    char page[300];

    write_file("page.txt", "over tls\n", 9, page, sizeof(page));
  }
  port = unit_free_port();
  ASSERT_GT(port, 0);
  snprintf(portstr, sizeof(portstr), "%d", port);
  pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);

    dup2(null, 1);
    dup2(null, 2);
    if (chdir(tmpdir) == 0)
      execlp("openssl", "openssl", "s_server", "-WWW", "-quiet", "-accept", portstr, "-cert", cert,
             "-key", key, (char *)NULL);
    _exit(127);
  }
  ASSERT_GT(pid, 0);
  if (!wait_listening(port)) {
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    UNIT_FAIL_("openssl s_server did not start");
  }
  snprintf(url, sizeof(url), "https://127.0.0.1:%d/page.txt", port);

  /* Trusting the test's certificate: the page. */
  snprintf(set_ca, sizeof(set_ca), "io_wrapper.ca_file=\"%s\"", cert);
  o = unit_options(1);
  sets[0] = set_ca;
  sets[1] = NULL;
  o.set = sets;
  ASSERT_EQ(ec_framework_init(&o), 0);
  {
    string s;
    io_job *j;

    string_init_type(&s, 16, STRING_TYPE_ECSTRING);
    j = fetch(url, &s);
    ASSERT_EQ(j->status, IOJ_COMPLETED);
    ASSERT_STR_EQ(s.buffer, "over tls\n");
    io_wrapper_free_read_job(j);
    string_destroy(&s);
  }
  ec_framework_stop();
  ec_framework_join();

  /* The system's CAs do not know it: refused. Without verification: accepted. */
  o = unit_options(1);
  ASSERT_EQ(ec_framework_init(&o), 0);
  EXPECT_FETCH(url, IOJ_OPEN_FAILED, EPROTO);
  ec_framework_stop();
  ec_framework_join();
  sets[0] = "io_wrapper.verify_peer=false";
  o.set = sets;
  ASSERT_EQ(ec_framework_init(&o), 0);
  EXPECT_FETCH(url, IOJ_COMPLETED, 0);
  ec_framework_stop();
  ec_framework_join();

  kill(pid, SIGTERM);
  waitpid(pid, &status, 0);
}

static void cleanup(void)
{
  if (base[0] != '\0') {
    httpd_stop(&srv);
    base[0] = '\0';
  }
  rm_tmpdir();
}

static void t_cleanup(void)
{
  cleanup();
  CU_PASS("cleaned up");
}

static const unit_test tests[] = {
    UNIT_TEST(t_create),
    UNIT_TEST(t_misused),
    UNIT_TEST(t_files),
    UNIT_TEST(t_file_errors),
    UNIT_TEST(t_file_limits),
    UNIT_TEST(t_http_bodies),
    UNIT_TEST(t_http_redirects),
    UNIT_TEST(t_http_errors),
    UNIT_TEST(t_http_limits),
    UNIT_TEST(t_http_on_pool),
    UNIT_TEST(t_https),
    UNIT_TEST(t_cleanup),
    {NULL, NULL},
};

UNIT_MAIN("io_wrapper", tests)
