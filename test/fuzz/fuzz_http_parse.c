/*
 * test/fuzz/fuzz_http_parse.c - libFuzzer target for the http module's parser
 * (samples/http/http_parse.c, included here so that it is built with the fuzzer's coverage
 * instrumentation); ctest runs it for ECSHARD_FUZZ_SECONDS from the seeds in
 * test/fuzz/corpus/fuzz_http_parse/ (test/fuzz/CMakeLists.txt).
 *
 * Besides "no crash, no undefined behaviour, no read outside the input", it checks what
 * the server relies on: a complete head lies inside the input and every field points into
 * it with only the bytes its grammar allows; the chunked decoder gives the same result fed
 * in one piece or two; a normalised path never has dot segments and never leaves the root.
 * The first input byte picks the limits, so that limit handling is fuzzed too.
 */
#include "../../samples/http/http_parse.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "check failed: %s (line %d)\n", #c, __LINE__);                               \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static int tchar(unsigned char c)
{
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void check_chunked(const char *p, size_t n, unsigned split)
{
  http_chunked a, b;
  size_t ua = 0, u1 = 0, u2 = 0, k = n ? split % (n + 1) : 0;
  int ra, rb;

  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  ra = http_chunked_consume(&a, p, n, 4096, &ua);
  CHECK(ua <= n);
  CHECK(ra == 1 || ra == 0 || ra == -400 || ra == -413);
  CHECK(ra != 0 || ua == n);
  rb = http_chunked_consume(&b, p, k, 4096, &u1);
  if (rb == 0) {
    CHECK(u1 == k);
    rb = http_chunked_consume(&b, p + k, n - k, 4096, &u2);
  }
  CHECK(ra == rb);
  CHECK(ra < 0 || ua == u1 + u2); /* after an error the connection closes */
  if (ra == 1)
    CHECK(a.total == b.total && a.total <= 4096);
}

static void check_path(const char *p, size_t n)
{
  char out[512];
  int dir, rc = http_normalize_path(p, n, out, sizeof(out), &dir);

  if (rc != 0) {
    CHECK(rc == -400 || rc == -414);
    return;
  }
  CHECK(strlen(out) < sizeof(out));
  CHECK(out[0] != '/');
  for (char *s = out; *s;) {
    char *e = strchr(s, '/');
    size_t l = e ? (size_t)(e - s) : strlen(s);

    CHECK(l > 0);
    CHECK(!(l == 1 && s[0] == '.') && !(l == 2 && s[0] == '.' && s[1] == '.'));
    s += l + (e != NULL);
  }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
  static http_request r;
  http_limits lim = {8192, 16384, 100};
  http_info in;
  const char *buf;
  int rc;

  if (size < 1)
    return 0;
  if (data[0] & 1) { /* small limits */
    lim.max_request_line = 16 + data[0] % 64;
    lim.max_head = 32 + data[0];
    lim.max_headers = 1 + data[0] % 8;
  }
  buf = (const char *)data + 1;
  size--;
  rc = http_parse_request(buf, size, &lim, &r);
  CHECK(rc >= 0 || rc == -400 || rc == -414 || rc == -431 || rc == -505);
  if (rc > 0) {
    CHECK((size_t)rc <= size && r.head_len == (uint32_t)rc);
    CHECK(rc <= (int)lim.max_head);
    CHECK(r.method >= buf && r.method + r.method_len <= buf + rc && r.method_len > 0);
    for (uint32_t i = 0; i < r.method_len; i++)
      CHECK(tchar((unsigned char)r.method[i]));
    CHECK(r.target > r.method && r.target + r.target_len <= buf + rc && r.target_len > 0);
    for (uint32_t i = 0; i < r.target_len; i++)
      CHECK((unsigned char)r.target[i] > 0x20 && (unsigned char)r.target[i] < 0x7f);
    CHECK(r.num_headers <= lim.max_headers);
    for (unsigned h = 0; h < r.num_headers; h++) {
      const http_header *f = &r.headers[h];

      CHECK(f->name >= buf && f->name + f->name_len <= buf + rc && f->name_len > 0);
      CHECK(f->value >= buf && f->value + f->value_len <= buf + rc);
      for (uint32_t i = 0; i < f->name_len; i++)
        CHECK(tchar((unsigned char)f->name[i]));
      for (uint32_t i = 0; i < f->value_len; i++)
        CHECK(f->value[i] != '\r' && f->value[i] != '\n' && f->value[i] != '\0');
      CHECK(f->value_len == 0 || (f->value[0] != ' ' && f->value[f->value_len - 1] != ' '));
    }
    rc = http_request_info(&r, 4096, &in);
    CHECK(rc == 0 || rc == -400 || rc == -413 || rc == -417 || rc == -501);
    if (rc == 0) {
      CHECK(in.body != HTTP_BODY_LENGTH || (in.content_length > 0 && in.content_length <= 4096));
      if (in.body == HTTP_BODY_CHUNKED)
        check_chunked(buf + r.head_len, size - r.head_len, data[0]);
      if (r.target[0] == '/') {
        const char *q = memchr(r.target, '?', r.target_len);

        check_path(r.target, q ? (size_t)(q - r.target) : r.target_len);
      }
      if (in.range) {
        uint64_t a, b;
        int k = http_parse_range(in.range->value, in.range->value_len, 1000, &a, &b);

        CHECK(k != 1 || (a <= b && b < 1000));
      }
    }
  }
  /* The decoders on raw input too, not only behind a valid head. */
  check_chunked(buf, size, data[0] * 7u);
  if (size > 0 && buf[0] == '/')
    check_path(buf, size);
  return 0;
}
