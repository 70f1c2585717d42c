/*
 * test/test_http_parse.c - the http module's parser (samples/http/http_parse.c): request
 * heads, limits, framing and smuggling checks, the chunked decoder fed in every possible
 * split, path normalisation and ranges.
 */
#include "unit.h"

#include "http_parse.h"

static const http_limits lim = {.max_request_line = 100, .max_head = 400, .max_headers = 8};

static int parse(const char *s, http_request *r)
{
  return http_parse_request(s, strlen(s), &lim, r);
}

static int info_of(const char *s, http_info *in)
{
  static http_request r;
  int rc = parse(s, &r);

  if (rc <= 0)
    return rc == 0 ? -1 : rc;
  return http_request_info(&r, 1000, in);
}

static void t_simple(void)
{
  static http_request r;
  const char *s = "GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Sp:   v  w \t\r\nEmpty:\r\n\r\nrest";

  ASSERT_EQ(parse(s, &r), (int)(strstr(s, "rest") - s));
  ASSERT_EQ(r.method_len, 3);
  ASSERT_TRUE(memcmp(r.method, "GET", 3) == 0);
  ASSERT_EQ(r.target_len, 6);
  ASSERT_TRUE(memcmp(r.target, "/a?b=c", 6) == 0);
  ASSERT_EQ(r.minor_version, 1);
  ASSERT_EQ(r.num_headers, 3);
  ASSERT_EQ(r.headers[1].name_len, 4);
  ASSERT_EQ(r.headers[1].value_len, 4); /* "v  w": outer whitespace trimmed */
  ASSERT_TRUE(memcmp(r.headers[1].value, "v  w", 4) == 0);
  ASSERT_EQ(r.headers[2].value_len, 0);
  /* leading empty lines are skipped; bare LF line ends are taken */
  ASSERT_GT(parse("\r\n\nGET / HTTP/1.0\nHost: x\n\n", &r), 0);
  ASSERT_EQ(r.minor_version, 0);
  ASSERT_GT(parse("GET / HTTP/1.9\r\nHost: x\r\n\r\n", &r), 0);
  ASSERT_EQ(r.minor_version, 1);
  ASSERT_GT(parse("M-SEARCH * HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
}

static void t_every_prefix_incomplete(void)
{
  static http_request r;
  const char *s = "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
  size_t n = strlen(s);

  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(http_parse_request(s, i, &lim, &r), 0);
  ASSERT_EQ(http_parse_request(s, n, &lim, &r), (int)n);
}

static void t_refused(void)
{
  static http_request r;
  static const struct {
    const char *req;
    int rc;
  } cases[] = {
      {"GET /a HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", -400},
      {"GET /a HTTP/1.1\rHost: x\r\n\r\n", -400},
      {"GET /a HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", -400},
      {"GET /a HTTP/1.1\r\nHost : x\r\n\r\n", -400},
      {"GET /a HTTP/1.1\r\n: x\r\n\r\n", -400},
      {"GET /a HTTP/1.1\r\nX\x01: x\r\n\r\n", -400},
      {"GET /a HTTP/1.1\r\nX: \x7f\r\n\r\n", -400},
      {"G\"T /a HTTP/1.1\r\n\r\n", -400},
      {" GET /a HTTP/1.1\r\n\r\n", -400},
      {"GET /a  HTTP/1.1\r\n\r\n", -400},
      {"GET /a HTTP/1.1 \r\n\r\n", -400},
      {"GET /a HTTP/3.0\r\n\r\n", -505},
      {"GET /a HTTP/1.x\r\n\r\n", -400},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int rc = parse(cases[i].req, &r);

    if (rc != cases[i].rc)
      fprintf(stderr, "case %zu: %d\n", i, rc);
    ASSERT_EQ(rc, cases[i].rc);
  }
  /* NUL inside the buffer (strlen would stop there) */
  ASSERT_EQ(http_parse_request("GET /a HTTP/1.1\r\nX: a\0b\r\n\r\n", 27, &lim, &r), -400);
}

static void t_limits(void)
{
  static http_request r;
  char buf[1024];

  snprintf(buf, sizeof(buf), "GET /%0100d HTTP/1.1\r\n\r\n", 0);
  ASSERT_EQ(parse(buf, &r), -414);
  buf[60] = '\0'; /* incomplete but already too long? not yet */
  ASSERT_EQ(parse(buf, &r), 0);
  snprintf(buf, sizeof(buf), "GET /%0110d", 0); /* no end in sight, over the line limit */
  ASSERT_EQ(parse(buf, &r), -414);
  strcpy(buf, "GET / HTTP/1.1\r\n");
  for (int i = 0; i < 9; i++)
    strcat(buf, "A: b\r\n");
  strcat(buf, "\r\n");
  ASSERT_EQ(parse(buf, &r), -431);
  snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nA: %0400d\r\n\r\n", 0);
  ASSERT_EQ(parse(buf, &r), -431);
  buf[300] = '\0';
  ASSERT_EQ(parse(buf, &r), 0);
  memset(buf, 'a', 500); /* incomplete value over max_head */
  memcpy(buf, "GET / HTTP/1.1\r\nA: ", 19);
  buf[500] = '\0';
  ASSERT_EQ(parse(buf, &r), -431);
}

static void t_framing(void)
{
  http_info in;

  ASSERT_EQ(info_of("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &in), 0);
  ASSERT_EQ(in.body, HTTP_BODY_NONE);
  ASSERT_EQ(in.keep_alive, 1);
  ASSERT_EQ(info_of("GET / HTTP/1.0\r\n\r\n", &in), 0);
  ASSERT_EQ(in.keep_alive, 0);
  ASSERT_EQ(info_of("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &in), 0);
  ASSERT_EQ(in.keep_alive, 1);
  ASSERT_EQ(info_of("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n", &in), 0);
  ASSERT_EQ(in.keep_alive, 0);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n", &in), 0);
  ASSERT_EQ(in.body, HTTP_BODY_LENGTH);
  ASSERT_EQ(in.content_length, 12);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &in), 0);
  ASSERT_EQ(in.body, HTTP_BODY_NONE);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n", &in), 0);
  ASSERT_EQ(in.body, HTTP_BODY_CHUNKED);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n\r\n", &in), 0);
  ASSERT_EQ(in.expect_continue, 1);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", &in), -413);
  ASSERT_EQ(
      info_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", &in),
      -400);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 1\r\n\r\n", &in), -400);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", &in), -400);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: "
                    "1\r\n\r\n",
                    &in),
            -400);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", &in),
            -400);
  ASSERT_EQ(info_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: "
                    "chunked\r\n\r\n",
                    &in),
            -501);
  ASSERT_EQ(
      info_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
              "gzip\r\n\r\n",
              &in),
      -400);
  ASSERT_EQ(info_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", &in), -400);
  ASSERT_EQ(info_of("GET / HTTP/1.1\r\n\r\n", &in), -400);
  ASSERT_EQ(info_of("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", &in), -400);
  ASSERT_EQ(info_of("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", &in), -400);
  ASSERT_EQ(info_of("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", &in), 0);
  ASSERT_EQ(info_of("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, foo\r\n\r\n", &in), -417);
}

/* Decodes `body` in one call and in two pieces split at every position: same result. */
static int chunked_all_splits(const char *body, size_t len, uint64_t max, size_t *used_out,
                              uint64_t *total)
{
  http_chunked c;
  size_t used;
  int whole;

  memset(&c, 0, sizeof(c));
  whole = http_chunked_consume(&c, body, len, max, &used);
  *used_out = used;
  *total = c.total;
  for (size_t k = 0; k <= len; k++) {
    http_chunked d;
    size_t u1 = 0, u2 = 0;
    int rc;

    memset(&d, 0, sizeof(d));
    rc = http_chunked_consume(&d, body, k, max, &u1);
    if (rc == 0 && u1 == k)
      rc = http_chunked_consume(&d, body + k, len - k, max, &u2);
    else
      u2 = 0;
    if (rc != whole || (rc >= 0 && u1 + u2 != used) || (rc == 1 && d.total != c.total))
      return -1000 - (int)k;
  }
  return whole;
}

static void t_chunked(void)
{
  static const char ok[] = "5\r\nhello\r\n1A;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: "
                           "1\r\nU: 2\r\n\r\nNEXT";
  size_t used;
  uint64_t total;

  ASSERT_EQ(chunked_all_splits(ok, sizeof(ok) - 1, 1000, &used, &total), 1);
  ASSERT_EQ(used, sizeof(ok) - 1 - 4);
  ASSERT_EQ(total, 31);
  ASSERT_EQ(chunked_all_splits("3\nabc\n0\n\n", 11, 1000, &used, &total), -400);
  ASSERT_EQ(chunked_all_splits("3\r\nabc\n0\r\n\r\n", 14, 1000, &used, &total), -400);
  ASSERT_EQ(chunked_all_splits("0\r\nX 1\r\n\r\n", 12, 1000, &used, &total), -400);
  ASSERT_EQ(chunked_all_splits("0\r\nX\xe0: 1\r\n\r\n", 14, 1000, &used, &total), -400);
  ASSERT_EQ(chunked_all_splits("0 ;x\r\n\r\n", 8, 1000, &used, &total), 1);
  ASSERT_EQ(chunked_all_splits("g\r\n", 3, 1000, &used, &total), -400);
  ASSERT_EQ(chunked_all_splits("3\r\nabcd\r\n", 9, 1000, &used, &total), -400);
  ASSERT_EQ(chunked_all_splits("3\rabc", 5, 1000, &used, &total), -400);
  ASSERT_EQ(chunked_all_splits("1111111111111111\r\n", 18, 1000, &used, &total), -400);
  ASSERT_EQ(chunked_all_splits("0\r\n folded\r\n\r\n", 15, 1000, &used, &total), -400);
  ASSERT_EQ(chunked_all_splits("400\r\n", 5, 1000, &used, &total), 0);
  {
    char big[1200];

    memcpy(big, "3e9\r\n", 5);
    memset(big + 5, 'x', sizeof(big) - 5);
    ASSERT_EQ(chunked_all_splits(big, sizeof(big), 1000, &used, &total), -413);
  }
}

static void t_normalize(void)
{
  static const struct {
    const char *in, *out;
    int rc, dir;
  } cases[] = {
      {"/", "", 0, 1},
      {"/a/b", "a/b", 0, 0},
      {"/a//b/", "a/b", 0, 1},
      {"/a/./b/../c", "a/c", 0, 0},
      {"/%61%2Fb", "a/b", 0, 0},
      {"/a/%2e%2E/b", "b", 0, 0},
      {"/..", NULL, -400, 0},
      {"/a/../..", NULL, -400, 0},
      {"/%2e%2e/x", NULL, -400, 0},
      {"/a%00", NULL, -400, 0},
      {"/a%0", NULL, -400, 0},
      {"/a%g0", NULL, -400, 0},
      {"a", NULL, -400, 0},
      {"/a/..", "", 0, 0},
      {"/...", "...", 0, 0},
  };
  char out[64];

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int dir = -1,
        rc = http_normalize_path(cases[i].in, strlen(cases[i].in), out, sizeof(out), &dir);

    ASSERT_EQ(rc, cases[i].rc);
    if (rc == 0) {
      ASSERT_STR_EQ(out, cases[i].out);
      ASSERT_EQ(dir, cases[i].dir);
    }
  }
  ASSERT_EQ(http_normalize_path("/aaaaaaaaaa", 11, out, 8, &(int){0}), -414);
  ASSERT_EQ(http_normalize_path("/a\0b", 4, out, sizeof(out), &(int){0}), -400); /* fuzz */
}

static void t_range(void)
{
  uint64_t a, b;

#define R(s, size) http_parse_range((s), strlen(s), (size), &a, &b)
  ASSERT_EQ(R("bytes=0-0", 10), 1);
  ASSERT_UEQ(a, 0);
  ASSERT_UEQ(b, 0);
  ASSERT_EQ(R("bytes=2-", 10), 1);
  ASSERT_UEQ(b, 9);
  ASSERT_EQ(R("bytes=-3", 10), 1);
  ASSERT_UEQ(a, 7);
  ASSERT_EQ(R("bytes=-30", 10), 1);
  ASSERT_UEQ(a, 0);
  ASSERT_EQ(R("bytes=5-100", 10), 1);
  ASSERT_UEQ(b, 9);
  ASSERT_EQ(R("bytes=10-", 10), 0);
  ASSERT_EQ(R("bytes=-0", 10), 0);
  ASSERT_EQ(R("bytes=0-", 0), 0);
  ASSERT_EQ(R("bytes=3-2", 10), -1);
  ASSERT_EQ(R("bytes=0-1,3-4", 10), -1);
  ASSERT_EQ(R("items=0-1", 10), -1);
  ASSERT_EQ(R("bytes=-", 10), -1);
#undef R
}

static const unit_test tests[] = {
    UNIT_TEST(t_simple),    UNIT_TEST(t_every_prefix_incomplete),
    UNIT_TEST(t_refused),   UNIT_TEST(t_limits),
    UNIT_TEST(t_framing),   UNIT_TEST(t_chunked),
    UNIT_TEST(t_normalize), UNIT_TEST(t_range),
    {NULL, NULL},
};

UNIT_MAIN("http_parse", tests)
