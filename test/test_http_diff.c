/*
 * test/test_http_diff.c - the http module's parser (samples/http/http_parse.c) against
 * Debian's libhttp-parser 2.9 (nodejs/http-parser, the parser node.js used for a decade),
 * on a corpus of valid and invalid requests and on seeded random mutations of it.
 *
 * Verdicts are compared per request: complete (head and body framed), incomplete, or
 * refused. The invariants:
 *   - where both complete a request they agree on everything that matters for framing and
 *     routing: method, target, version, header names and values, body length, and the
 *     number of bytes the request occupies (a disagreement there is request smuggling);
 *   - our parser never accepts what libhttp-parser refuses, except where it is known to
 *     be narrower (methods it does not know);
 *   - where we refuse what it accepts, the corpus says so and why (docs/http.md lists
 *     these deliberate differences); mutations may find more of those, which is fine: they
 *     are counted and printed, not failed.
 */
#include "unit.h"

#include "http_parse.h"

#include <http_parser.h>

#define MAXH 64

typedef struct verdict {
  int state; /* 1 complete, 0 incomplete, -1 refused */
  char method[24], url[2048];
  int minor;
  int nh;
  char name[MAXH][128], value[MAXH][512];
  uint64_t body;
  size_t used;
  /* oracle bookkeeping */
  int last_was_value, in_trailer;
  const char *err;
} verdict;

static void cat(char *dst, size_t cap, const char *p, size_t n)
{
  size_t l = strlen(dst);

  if (l + n >= cap)
    n = cap - l - 1;
  memcpy(dst + l, p, n);
  dst[l + n] = '\0';
}

static int o_url(http_parser *p, const char *at, size_t n)
{
  verdict *v = p->data;

  cat(v->url, sizeof(v->url), at, n);
  return 0;
}

static int o_headers_done(http_parser *p)
{
  verdict *v = p->data;

  v->in_trailer = 1; /* what follows a chunked body are trailer fields: not compared */
  return 0;
}

static int o_field(http_parser *p, const char *at, size_t n)
{
  verdict *v = p->data;

  if (v->in_trailer)
    return 0;
  if (v->last_was_value || v->nh == 0) {
    if (v->nh == MAXH)
      return 1;
    v->nh++;
    v->name[v->nh - 1][0] = v->value[v->nh - 1][0] = '\0';
  }
  v->last_was_value = 0;
  cat(v->name[v->nh - 1], sizeof(v->name[0]), at, n);
  return 0;
}

static int o_value(http_parser *p, const char *at, size_t n)
{
  verdict *v = p->data;

  if (v->in_trailer)
    return 0;
  v->last_was_value = 1;
  cat(v->value[v->nh - 1], sizeof(v->value[0]), at, n);
  return 0;
}

static int o_body(http_parser *p, const char *at, size_t n)
{
  verdict *v = p->data;

  v->body += n;
  return 0;
}

static int o_done(http_parser *p)
{
  verdict *v = p->data;

  v->state = 1;
  http_parser_pause(p, 1);
  return 0;
}

static void rtrim(char *s)
{
  size_t n = strlen(s);

  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
    s[--n] = '\0';
}

static void oracle(const char *buf, size_t len, verdict *v)
{
  http_parser p;
  http_parser_settings s;
  size_t n;

  memset(v, 0, sizeof(*v));
  http_parser_settings_init(&s);
  s.on_url = o_url;
  s.on_header_field = o_field;
  s.on_header_value = o_value;
  s.on_body = o_body;
  s.on_headers_complete = o_headers_done;
  s.on_message_complete = o_done;
  http_parser_init(&p, HTTP_REQUEST);
  p.data = v;
  n = http_parser_execute(&p, &s, buf, len);
  if (v->state == 1 && HTTP_PARSER_ERRNO(&p) == HPE_PAUSED) {
    v->used = n;
    snprintf(v->method, sizeof(v->method), "%s", http_method_str((enum http_method)p.method));
    v->minor = p.http_minor > 0 ? 1 : 0;
    if (p.http_major != 1)
      v->state = -1;
  } else if (HTTP_PARSER_ERRNO(&p) != HPE_OK || p.upgrade) {
    v->state = -1;
    v->err = http_errno_name(HTTP_PARSER_ERRNO(&p));
  } else {
    v->state = 0;
  }
  for (int i = 0; i < v->nh; i++)
    rtrim(v->value[i]);
}

static const http_limits big = {.max_request_line = 8192, .max_head = 65536, .max_headers = MAXH};

static void ours(const char *buf, size_t len, verdict *v)
{
  static http_request r;
  http_info in;
  int rc = http_parse_request(buf, len, &big, &r);

  memset(v, 0, sizeof(*v));
  if (rc <= 0) {
    v->state = rc == 0 ? 0 : -1;
    return;
  }
  if (http_request_info(&r, UINT64_MAX / 4, &in) < 0) {
    v->state = -1;
    return;
  }
  snprintf(v->method, sizeof(v->method), "%.*s", (int)r.method_len, r.method);
  snprintf(v->url, sizeof(v->url), "%.*s", (int)r.target_len, r.target);
  v->minor = r.minor_version;
  v->nh = (int)r.num_headers;
  for (unsigned i = 0; i < r.num_headers; i++) {
    snprintf(v->name[i], sizeof(v->name[i]), "%.*s", (int)r.headers[i].name_len, r.headers[i].name);
    snprintf(v->value[i], sizeof(v->value[i]), "%.*s", (int)r.headers[i].value_len,
             r.headers[i].value);
  }
  v->used = (size_t)rc;
  if (in.body == HTTP_BODY_LENGTH) {
    if (len - v->used < in.content_length) {
      v->state = 0;
      return;
    }
    v->body = in.content_length;
    v->used += in.content_length;
  } else if (in.body == HTTP_BODY_CHUNKED) {
    http_chunked c;
    size_t used;

    memset(&c, 0, sizeof(c));
    rc = http_chunked_consume(&c, buf + v->used, len - v->used, UINT64_MAX / 4, &used);
    if (rc <= 0) {
      v->state = rc == 0 ? 0 : -1;
      return;
    }
    v->body = c.total;
    v->used += used;
  }
  v->state = 1;
}

/* Methods libhttp-parser knows; a token it does not know is a method we may accept. */
static int oracle_knows_method(const char *m)
{
  for (int i = 0; i < 40; i++) {
    const char *s = http_method_str((enum http_method)i);

    if (strcmp(s, "<unknown>") != 0 && strcmp(s, m) == 0)
      return 1;
  }
  return 0;
}

/* libhttp-parser 2.9 takes a field whose name merely begins with "Content-Length" or
 * "Transfer-Encoding" ("Transfer-Encodingxyz") as that field: its bug, not a difference in
 * what we accept. Such inputs are not held against us. */
static int oracle_prefix_bug(const char *buf, size_t len)
{
  static const char *const names[] = {"content-length", "transfer-encoding"};

  for (size_t i = 0; i < len; i++) {
    if (i > 0 && buf[i - 1] != '\n')
      continue;
    for (int k = 0; k < 2; k++) {
      size_t n = strlen(names[k]);

      if (i + n < len && http_token_eq(buf + i, n, names[k]) && buf[i + n] != ':')
        return 1;
    }
  }
  return 0;
}

/* "" when the two agree in a way the invariants allow, else what differs. */
static const char *compare(const verdict *a, const verdict *o)
{
  static char why[256];

  if (a->state == 1 && o->state == 1) {
    if (strcmp(a->method, o->method) != 0)
      return "method";
    if (strcmp(a->url, o->url) != 0)
      return "target";
    if (a->minor != o->minor)
      return "version";
    if (a->nh != o->nh)
      return "header count";
    for (int i = 0; i < a->nh; i++)
      if (strcmp(a->name[i], o->name[i]) != 0 || strcmp(a->value[i], o->value[i]) != 0) {
        snprintf(why, sizeof(why), "header %d: '%s: %s' vs '%s: %s'", i, a->name[i], a->value[i],
                 o->name[i], o->value[i]);
        return why;
      }
    if (a->body != o->body)
      return "body length";
    if (a->used != o->used)
      return "request length (framing)";
    return "";
  }
  if (a->state == 1 && o->state != 1)
    return a->method[0] && !oracle_knows_method(a->method) ? "" : "we accept what it does not";
  if (a->state == 0 && o->state == 1)
    return "we wait for more where it completed a request (framing)";
  return ""; /* we refuse (or wait) where it refuses or waits: stricter is allowed */
}

enum { BOTH = 1, REFUSED = 2, STRICTER = 3, INCOMPLETE = 4 };

typedef struct corpus_entry {
  int expect; /* BOTH: both complete; REFUSED: both refuse; STRICTER: we refuse, it accepts */
  const char *why, *data;
  size_t len; /* 0: strlen */
} corpus_entry;

static const corpus_entry corpus[] = {
    {BOTH, "minimal", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {BOTH, "typical browser",
     "GET /index.html?q=1&r=%20x HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: Mozilla/5.0 "
     "(X11; Linux x86_64)\r\nAccept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n"
     "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\nCookie: a=b; "
     "c=d\r\nConnection: keep-alive\r\n\r\n",
     0},
    {BOTH, "HTTP/1.0", "GET /x HTTP/1.0\r\n\r\n", 0},
    {BOTH, "absolute-form", "GET http://a.example/p?q HTTP/1.1\r\nHost: a.example\r\n\r\n", 0},
    {BOTH, "asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {BOTH, "HEAD", "HEAD /a HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {BOTH, "POST with Content-Length",
     "POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET", 0},
    {BOTH, "Content-Length 0", "POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 0},
    {BOTH, "chunked with extensions and trailer",
     "POST /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n"
     "A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT",
     0},
    {BOTH, "chunked upper case",
     "PUT /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n", 0},
    {BOTH, "header value whitespace", "GET / HTTP/1.1\r\nHost: a\r\nX-A: \t v  w \t\r\n\r\n", 0},
    {BOTH, "empty header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A:\r\n\r\n", 0},
    {BOTH, "obs-text in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n", 0},
    {BOTH, "bare LF line ends", "GET / HTTP/1.1\nHost: a\n\n", 0},
    {BOTH, "leading CRLF", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {BOTH, "token characters in names", "GET / HTTP/1.1\r\nHost: a\r\nX-!#$%&'*+.^_`|~: 1\r\n\r\n",
     0},
    {BOTH, "DELETE", "DELETE /r/1 HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {BOTH, "HTTP/1.1 with a higher minor", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {INCOMPLETE, "truncated head", "GET / HTTP/1.1\r\nHost: a\r\n", 0},
    {INCOMPLETE, "truncated body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
     0},
    {INCOMPLETE, "truncated chunked",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 0},
    {STRICTER, "space before colon (RFC 9112 5.1: must refuse)",
     "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0},
    {REFUSED, "bad method character", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {REFUSED, "bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 0},
    {REFUSED, "NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 33},
    {REFUSED, "control in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", 0},
    {REFUSED, "HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0},
    {STRICTER, "garbage version (Debian builds it without HTTP_PARSER_STRICT)",
     "GET / HTXP/1.1\r\nHost: a\r\n\r\n", 0},
    {REFUSED, "bare LF in chunked framing",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", 0},
    {REFUSED, "two CL values",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 0},
    {REFUSED, "CL not a number", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 0},
    {REFUSED, "CL and TE chunked",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: "
     "chunked\r\n\r\n0\r\n\r\n",
     0},
    {REFUSED, "bad chunk size",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 0},
    {REFUSED, "chunk data too long",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 0},
    {STRICTER, "a scheme other than http(s)", "GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {REFUSED, "quote in the authority", "GET http://a\"b/ HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {STRICTER, "whitespace after a chunk size (BWS only before ';')",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0 \r\n\r\n", 0},
    {REFUSED, "empty element in Transfer-Encoding",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n", 0},
    {REFUSED, "tab after Transfer-Encoding",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n", 0},
    {REFUSED, "tab after Content-Length",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\t\r\n\r\nx", 0},
    {REFUSED, "control in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {STRICTER, "no Host in HTTP/1.1 (RFC 9112 3.2)", "GET / HTTP/1.1\r\n\r\n", 0},
    {STRICTER, "two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0},
    {STRICTER, "Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 0},
    {STRICTER, "obs-fold (RFC 9112 5.2: may refuse)",
     "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 0},
    {REFUSED, "repeated equal Content-Length",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 0},
    {REFUSED, "Transfer-Encoding not ending in chunked",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 0},
    {STRICTER, "Transfer-Encoding in HTTP/1.0",
     "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0},
    {REFUSED, "chunked twice",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 0},
    {STRICTER, "raw byte >= 0x80 in the target (RFC 3986)",
     "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {STRICTER, "Expect other than 100-continue",
     "POST / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\nContent-Length: 0\r\n\r\n", 0},
};

static void t_corpus(void)
{
  static verdict a, o;
  int bad = 0;

  for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
    const corpus_entry *c = &corpus[i];
    size_t len = c->len ? c->len : strlen(c->data);
    const char *why;
    int ok;

    ours(c->data, len, &a);
    oracle(c->data, len, &o);
    why = compare(&a, &o);
    switch (c->expect) {
    case BOTH:
      ok = a.state == 1 && o.state == 1;
      break;
    case REFUSED:
      ok = a.state == -1 && o.state == -1;
      break;
    case STRICTER:
      ok = a.state == -1 && o.state == 1;
      break;
    default:
      ok = a.state == 0 && o.state == 0;
      break;
    }
    if (!ok || why[0]) {
      fprintf(stderr, "corpus '%s': ours %d, libhttp-parser %d %s\n", c->why, a.state, o.state,
              why);
      bad++;
    }
  }
  ASSERT_EQ(bad, 0);
}

/* xorshift: the same mutations on every run */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng % n);
}

static size_t mutate(const char *in, size_t len, char *out, size_t cap)
{
  static const char interesting[] = " \t\r\n:,;-0aA/\x00\x7f\x80\"=%.";
  size_t n = len;
  int edits = 1 + (int)rnd(3);

  memcpy(out, in, len);
  for (int k = 0; k < edits && n > 0; k++) {
    size_t pos = rnd((uint32_t)n);
    char ch = rnd(4) == 0 ? (char)rnd(256) : interesting[rnd(sizeof(interesting) - 1)];

    switch (rnd(4)) {
    case 0: /* replace */
      out[pos] = ch;
      break;
    case 1: /* insert */
      if (n + 1 < cap) {
        memmove(out + pos + 1, out + pos, n - pos);
        out[pos] = ch;
        n++;
      }
      break;
    case 2: /* delete */
      memmove(out + pos, out + pos + 1, n - pos - 1);
      n--;
      break;
    default: { /* duplicate a slice (repeats header lines, CRLFs, digits) */
      size_t l = 1 + rnd(24);

      if (pos + l <= n && n + l < cap) {
        memmove(out + pos + l, out + pos, n - pos);
        n += l;
      }
      break;
    }
    }
  }
  return n;
}

static void t_mutations(void)
{
  static verdict a, o;
  static char buf[4096];
  long rounds = unit_scale(60000), both = 0, stricter = 0, failures = 0;

  for (long i = 0; i < rounds; i++) {
    const corpus_entry *c = &corpus[rnd(sizeof(corpus) / sizeof(corpus[0]))];
    size_t n = mutate(c->data, c->len ? c->len : strlen(c->data), buf, sizeof(buf));
    const char *why;

    ours(buf, n, &a);
    oracle(buf, n, &o);
    why = compare(&a, &o);
    if (why[0] && a.state == 1 && o.state == -1 && oracle_prefix_bug(buf, n))
      why = "";
    if (a.state == 1 && o.state == 1)
      both++;
    if (a.state == -1 && o.state == 1)
      stricter++;
    if (why[0] && failures++ < 10) {
      fprintf(stderr, "mutation %ld (%s): ours %d, libhttp-parser %d (%s): %s\n  input: ", i,
              c->why, a.state, o.state, o.err ? o.err : "", why);
      for (size_t k = 0; k < n; k++)
        fprintf(stderr, buf[k] >= 0x20 && buf[k] < 0x7f ? "%c" : "\\x%02x", (unsigned char)buf[k]);
      fprintf(stderr, "\n");
    }
  }
  printf("\n  %ld mutations: %ld complete in both, %ld refused only by us, %ld disagreements\n",
         rounds, both, stricter, failures);
  ASSERT_EQ(failures, 0);
  ASSERT_GT(both, rounds / 50); /* the mutations still exercise accepted requests */
}

static const unit_test tests[] = {UNIT_TEST(t_corpus), UNIT_TEST(t_mutations), {NULL, NULL}};

UNIT_MAIN("http_diff", tests)
