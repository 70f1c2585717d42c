/*
 * test/test_http.c - the http module (samples/http) inside the framework, without
 * ecshardd: registration before init, its configuration section, and the per-shard request
 * counters read from another thread while two shards serve (TSan checks the reads).
 * Protocol conformance is test/integration/http.py.
 */
#include "unit.h"

#include "ec_stats.h"
#include "http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

static int dial(int port)
{
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Sends `req` and reads until `want` occurrences of "HTTP/1.1 " or the peer closes (5 s). */
static int roundtrip(int port, const char *req, int want, char *out, size_t cap)
{
  int fd = dial(port), seen = 0;
  size_t len = 0;

  if (fd < 0)
    return -1;
  if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
    close(fd);
    return -1;
  }
  while (seen < want && len + 1 < cap) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, 5000) <= 0)
      break;
    n = read(fd, out + len, cap - len - 1);
    if (n <= 0)
      break;
    len += (size_t)n;
    out[len] = '\0';
    seen = 0;
    for (char *s = out; (s = strstr(s, "HTTP/1.1 ")) != NULL; s++)
      seen++;
  }
  out[len] = '\0';
  close(fd);
  return seen;
}

static void t_counters(void)
{
  char conf[512], buf[8192];
  ec_framework_options o = unit_options(2);
  http_stats st, s0, s1;
  int port = unit_free_port();

  ASSERT_EQ(http_stats_get(&st), -ENOENT); /* nothing served yet */
  ASSERT_EQ(http_register(), 0);
  snprintf(conf, sizeof(conf),
           "listener = { web = { listen = \"127.0.0.1:%d\"; protocol = \"http\"; }; };\n"
           "http = { fixed_path = \"/ping\"; fixed_body = \"pong\\n\"; max_headers = 4; };\n",
           port);
  o.config_text = conf;
  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_config_get_int("http.max_headers", 0), 4);
  ASSERT_EQ(ec_framework_start(), 0);

  ASSERT_EQ(roundtrip(port,
                      "GET /ping HTTP/1.1\r\nHost: t\r\n\r\nHEAD /ping HTTP/1.1\r\nHost: t\r\n\r\n"
                      "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                      3, buf, sizeof(buf)),
            3);
  ASSERT_TRUE(strstr(buf, "\r\n\r\npong\n") != NULL);
  ASSERT_TRUE(strstr(buf, "HTTP/1.1 404 ") != NULL);
  /* the configured limit applies: five fields are one too many */
  ASSERT_EQ(roundtrip(port, "GET /ping HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
                      1, buf, sizeof(buf)),
            1);
  ASSERT_TRUE(strncmp(buf, "HTTP/1.1 431 ", 13) == 0);

  /* read while the shards may still be finishing: the counters only grow */
  for (int i = 0; i < 500; i++) {
    ASSERT_EQ(http_stats_get(&st), 0);
    if (st.requests >= 4)
      break;
    usleep(1000);
  }
  ASSERT_UEQ(st.requests, 4);
  ASSERT_UEQ(st.status[2], 2);
  ASSERT_UEQ(st.status[4], 2);
  ASSERT_UEQ(st.bad_requests, 1);
  ASSERT_EQ(http_shard_stats_get(0, &s0), 0);
  ASSERT_EQ(http_shard_stats_get(1, &s1), 0);
  ASSERT_UEQ(s0.requests + s1.requests, st.requests);
  ASSERT_EQ(http_shard_stats_get(2, &s1), -EINVAL);
  {
    char *text = NULL;

    /* the same counters reach the framework's metrics (GET /metrics of the admin listener) */
    ASSERT_GT(ec_stats_render(EC_STATS_PROMETHEUS, &text), 0);
    ASSERT_TRUE(strstr(text, "ecshard_http_responses_total{class=\"2xx\"} 2") != NULL);
    ASSERT_TRUE(strstr(text, "ecshard_http_responses_total{class=\"4xx\"} 2") != NULL);
    ASSERT_TRUE(strstr(text, "ecshard_http_refused_total 1") != NULL);
    ec_free(MEMTYPE_GENERIC, text);
  }

  ec_framework_stop();
  ASSERT_EQ(ec_framework_join(), 0);
}

static const unit_test tests[] = {UNIT_TEST(t_counters), {NULL, NULL}};

UNIT_MAIN("http", tests)
