/*
 * samples/http/http_parse.c - HTTP/1.1 request heads parsed in place, framing checks and
 * the chunked body decoder (http_parse.h).
 *
 * Why hand-written and not libhttp-parser (Debian's libhttp-parser 2.9; llhttp is not in
 * Debian 12): http-parser is a byte-at-a-time state machine that reports every piece
 * through a callback and accepts what RFC 9112 says a server must refuse (obs-fold is
 * joined, whitespace before the colon passes in its lenient builds, Content-Length and
 * Transfer-Encoding together pass with the F_CHUNKED flag). Its callbacks would still
 * need the framing checks below on top. This parser is a single pass over the head with
 * table lookups, like h2o's picohttpparser, and returns pointers into the caller's
 * buffer. test/test_http_diff.c compares it with libhttp-parser on a corpus and on
 * mutations of it; docs/http.md lists where the two intentionally differ.
 *
 * A head that is not complete yet is parsed again from its start on the next call: heads
 * are small, clients send them in one segment, and keeping no state between calls keeps
 * the parser simple to verify (picohttpparser does the same).
 */
#include "http_parse.h"

#include <pthread.h>
#include <string.h>

/* Character classes, one bit each. */
#define C_TCHAR 0x01 /* token: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA */
#define C_VCHAR 0x02 /* field-value bytes: VCHAR, obs-text, SP, HTAB */
#define C_TARGT 0x04 /* request-target bytes: VCHAR (RFC 3986 has no raw bytes >= 0x80) */
#define C_HOST  0x08 /* Host bytes: unreserved, sub-delims, ':', '[', ']', '%' */

static unsigned char cls[256];

static void cls_init_once(void)
{
  static const char tchar_extra[] = "!#$%&'*+-.^_`|~";
  static const char host_extra[] = "-._~!$&'()*+,;=:[]%";

  for (int c = 0; c < 256; c++) {
    unsigned char m = 0;

    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      m |= C_TCHAR | C_HOST;
    if (c != 0 && strchr(tchar_extra, c))
      m |= C_TCHAR;
    if (c != 0 && strchr(host_extra, c))
      m |= C_HOST;
    if ((c > 0x20 && c != 0x7f) || c == ' ' || c == '\t')
      m |= C_VCHAR;
    if (c > 0x20 && c < 0x7f)
      m |= C_TARGT;
    cls[c] = m;
  }
}

/* The table is filled once, by whichever shard parses first: two shards filling it at
 * the same time was a data race (TSan), same bytes or not. */
static void cls_init(void)
{
  static pthread_once_t once = PTHREAD_ONCE_INIT;

  pthread_once(&once, cls_init_once);
}

int http_token_eq(const char *s, size_t len, const char *lower)
{
  size_t i;

  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];

    if (lower[i] == '\0')
      return 0;
    if (c >= 'A' && c <= 'Z')
      c = (unsigned char)(c + 32);
    if (c != (unsigned char)lower[i])
      return 0;
  }
  return lower[i] == '\0';
}

/* "HTTP/" DIGIT "." DIGIT at p: 1 (and *minor, *used), 0 need more, or -400 / -505. */
static int parse_version(const char *p, size_t avail, int *minor, size_t *used)
{
  static const char pat[] = "HTTP/9.9"; /* '9': any digit */

  for (size_t i = 0; i < 8 && i < avail; i++)
    if (pat[i] == '9' ? (p[i] < '0' || p[i] > '9') : p[i] != pat[i])
      return -400;
  if (avail < 8)
    return 0;
  if (p[5] != '1')
    return -505;
  *minor = p[7] == '0' ? 0 : 1;
  *used = 8;
  return 1;
}

/* Line end at p: 1 and *eol_len (1 for LF, 2 for CRLF), 0 need more, -400 bare CR. */
static int line_end(const char *p, const char *end, size_t *eol_len)
{
  if (p >= end)
    return 0;
  if (*p == '\n') {
    *eol_len = 1;
    return 1;
  }
  if (*p != '\r')
    return -400;
  if (p + 1 >= end)
    return 0;
  if (p[1] != '\n')
    return -400;
  *eol_len = 2;
  return 1;
}

/* Returns 0 (need more) or the limit error for a head that is incomplete at `len` bytes. */
static int incomplete(size_t len, size_t line_len, int in_line, const http_limits *lim)
{
  if (in_line && line_len > lim->max_request_line)
    return -414;
  if (len > lim->max_head)
    return -431;
  return 0;
}

static int parse_headers(const char *buf, const char *p, const char *end, const http_limits *lim,
                         http_request *r)
{
  unsigned max = lim->max_headers < HTTP_MAX_HEADERS ? lim->max_headers : HTTP_MAX_HEADERS;

  r->num_headers = 0;
  for (;;) {
    const char *name = p, *v, *vend;
    uint32_t name_len;
    size_t eol;
    int rc;

    if (p >= end)
      return incomplete((size_t)(end - buf), 0, 0, lim);
    if (*p == '\r' || *p == '\n') {
      rc = line_end(p, end, &eol);
      if (rc <= 0)
        return rc < 0 ? rc : incomplete((size_t)(end - buf), 0, 0, lim);
      p += eol;
      if ((size_t)(p - buf) > lim->max_head)
        return -431;
      r->head_len = (uint32_t)(p - buf);
      return (int)r->head_len;
    }
    /* A line starting with SP or HTAB continues the previous one (obs-fold): refused,
     * RFC 9112 §5.2, because intermediaries disagree on how to join it. */
    while (p < end && (cls[(unsigned char)*p] & C_TCHAR))
      p++;
    if (p >= end)
      return incomplete((size_t)(end - buf), 0, 0, lim);
    if (p == name || *p != ':')
      return -400; /* empty name, whitespace before the colon, or a non-token byte */
    if (r->num_headers == max)
      return -431;
    name_len = (uint32_t)(p - name);
    p++;
    while (p < end && (*p == ' ' || *p == '\t'))
      p++;
    v = p;
    while (p < end && (cls[(unsigned char)*p] & C_VCHAR))
      p++;
    if (p >= end)
      return incomplete((size_t)(end - buf), 0, 0, lim);
    rc = line_end(p, end, &eol);
    if (rc <= 0)
      return rc < 0 ? rc : incomplete((size_t)(end - buf), 0, 0, lim);
    vend = p;
    while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
      vend--;
    r->headers[r->num_headers].name = name;
    r->headers[r->num_headers].name_len = name_len;
    r->headers[r->num_headers].value = v;
    r->headers[r->num_headers].value_len = (uint32_t)(vend - v);
    r->num_headers++;
    p += eol;
    if ((size_t)(p - buf) > lim->max_head)
      return -431;
  }
}

int http_parse_request(const char *buf, size_t len, const http_limits *lim, http_request *r)
{
  const char *p = buf, *end = buf + len, *line;
  size_t used = 0, eol;
  int rc;

  cls_init();
  /* RFC 9112 §2.2: ignore empty lines before the request line (a client's stray CRLF after
   * a body); a few at most, or a stream of them would be free work. */
  for (int i = 0; i < 4 && p < end && (*p == '\r' || *p == '\n'); i++) {
    rc = line_end(p, end, &eol);
    if (rc <= 0)
      return rc;
    p += eol;
  }
  line = p;
  r->method = p;
  while (p < end && (cls[(unsigned char)*p] & C_TCHAR))
    p++;
  if (p >= end)
    return incomplete(len, (size_t)(p - line), 1, lim);
  if (p == r->method || *p != ' ')
    return -400;
  r->method_len = (uint32_t)(p - r->method);
  r->target = ++p;
  while (p < end && (cls[(unsigned char)*p] & C_TARGT))
    p++;
  if (p >= end)
    return incomplete(len, (size_t)(p - line), 1, lim);
  if (p == r->target || *p != ' ')
    return -400;
  r->target_len = (uint32_t)(p - r->target);
  p++;
  rc = parse_version(p, (size_t)(end - p), &r->minor_version, &used);
  if (rc <= 0)
    return rc < 0 ? rc : incomplete(len, (size_t)(end - line), 1, lim);
  p += used;
  rc = line_end(p, end, &eol);
  if (rc <= 0)
    return rc < 0 ? rc : incomplete(len, (size_t)(p - line), 1, lim);
  if ((size_t)(p - line) > lim->max_request_line)
    return -414;
  p += eol;
  return parse_headers(buf, p, end, lim, r);
}

/* ---- framing --------------------------------------------------------------------------- */

/*
 * The framing fields take a narrower syntax than RFC 9110 allows in general: no HTAB as
 * whitespace around the value (HTAB is OWS, but libhttp-parser and other front ends refuse
 * it, and where two parsers disagree on framing a request can be smuggled). Looks at the
 * bytes from the colon to the line end, which lie inside the parsed head.
 */
static int framing_ws_ok(const http_header *h)
{
  for (const char *p = h->name + h->name_len + 1; *p != '\r' && *p != '\n'; p++)
    if (*p == '\t')
      return 0;
  return 1;
}

/* Content-Length: 1*DIGIT, nothing else (no sign, no list, no whitespace inside). */
static int parse_length(const http_header *h, uint64_t max_body, uint64_t *out)
{
  uint64_t v = 0;

  if (h->value_len == 0)
    return -400;
  for (uint32_t i = 0; i < h->value_len; i++) {
    unsigned d = (unsigned)(unsigned char)h->value[i] - '0';

    if (d > 9)
      return -400;
    if (v > (UINT64_MAX - d) / 10)
      v = UINT64_MAX; /* still only digits: too large, not malformed */
    else
      v = v * 10 + d;
  }
  *out = v;
  return v > max_body ? -413 : 0;
}

/* One element of a comma-separated list: [*s, *s + *n) trimmed; advances *pos. 0 at end. */
static int list_next(const char *v, uint32_t len, uint32_t *pos, const char **s, uint32_t *n)
{
  uint32_t i = *pos, b, e;

  if (i >= len)
    return 0;
  while (i < len && v[i] != ',')
    i++;
  b = *pos;
  e = i;
  while (b < e && (v[b] == ' ' || v[b] == '\t'))
    b++;
  while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t'))
    e--;
  *s = v + b;
  *n = e - b;
  *pos = i + 1;
  return 1;
}

/* Transfer-Encoding values (all fields, in order): the final coding must be chunked,
 * exactly once. *state: 0 nothing seen, 1 last was chunked, 2 last was something else. */
static int te_scan(const http_header *h, int *state, int *chunked_seen, int *other)
{
  uint32_t pos = 0, n;
  const char *s;

  *state = 2; /* a field without any coding (an empty value) frames nothing: refused */
  if (!framing_ws_ok(h) || (h->value_len > 0 && h->value[h->value_len - 1] == ','))
    return -400;
  while (list_next(h->value, h->value_len, &pos, &s, &n)) {
    if (n == 0)
      return -400; /* ", chunked": legal list syntax, but not in a framing field */
    for (uint32_t i = 0; i < n; i++)
      if (!(cls[(unsigned char)s[i]] & C_TCHAR))
        return -400; /* transfer-coding parameters are not supported */
    if (http_token_eq(s, n, "chunked")) {
      if (*chunked_seen)
        return -400; /* chunked applied twice (RFC 9112 §6.1) */
      *chunked_seen = 1;
      *state = 1;
    } else {
      *state = 2;
      *other = 1;
    }
  }
  return 0;
}

static void connection_scan(const http_header *h, int *close, int *keep)
{
  uint32_t pos = 0, n;
  const char *s;

  while (list_next(h->value, h->value_len, &pos, &s, &n)) {
    if (http_token_eq(s, n, "close"))
      *close = 1;
    else if (http_token_eq(s, n, "keep-alive"))
      *keep = 1;
  }
}

static int host_ok(const http_header *h)
{
  for (uint32_t i = 0; i < h->value_len; i++)
    if (!(cls[(unsigned char)h->value[i]] & C_HOST))
      return 0;
  return 1;
}

/* origin-form ("/..."), absolute-form of http and https with a well-formed authority, or
 * asterisk-form ("*"). The authority-form of CONNECT is not served. */
static int target_ok(const http_request *r)
{
  const char *t = r->target;
  uint32_t i = 0, n = r->target_len;

  if (t[0] == '/' || (n == 1 && t[0] == '*'))
    return 1;
  if (n > 7 && http_token_eq(t, 7, "http://"))
    i = 7;
  else if (n > 8 && http_token_eq(t, 8, "https://"))
    i = 8;
  else
    return 0; /* other schemes are not ours to serve */
  if (i == n || t[i] == '/' || t[i] == '?')
    return 0; /* no authority */
  for (; i < n && t[i] != '/' && t[i] != '?'; i++)
    if (!(cls[(unsigned char)t[i]] & C_HOST))
      return 0;
  return 1;
}

int http_request_info(const http_request *r, uint64_t max_body, http_info *info)
{
  int te_state = 0, chunked_seen = 0, other = 0, close = 0, keep = 0, hosts = 0, rc;
  const http_header *cl = NULL;

  memset(info, 0, sizeof(*info));
  cls_init();
  for (unsigned i = 0; i < r->num_headers; i++) {
    const http_header *h = &r->headers[i];

    switch (h->name_len) {
    case 4:
      if (http_token_eq(h->name, 4, "host")) {
        hosts++;
        info->host = h;
      }
      break;
    case 5:
      if (http_token_eq(h->name, 5, "range"))
        info->range = h;
      break;
    case 6:
      if (http_token_eq(h->name, 6, "expect")) {
        if (!http_token_eq(h->value, h->value_len, "100-continue"))
          return -417;
        info->expect_continue = 1;
      }
      break;
    case 8:
      if (http_token_eq(h->name, 8, "if-range"))
        info->if_range = h;
      break;
    case 10:
      if (http_token_eq(h->name, 10, "connection"))
        connection_scan(h, &close, &keep);
      break;
    case 13:
      if (http_token_eq(h->name, 13, "if-none-match"))
        info->if_none_match = h;
      break;
    case 14:
      if (http_token_eq(h->name, 14, "content-length")) {
        if (cl != NULL || !framing_ws_ok(h))
          return -400; /* repeated, even with the same value: one framing only */
        cl = h;
      }
      break;
    case 17:
      if (http_token_eq(h->name, 17, "transfer-encoding") &&
          (rc = te_scan(h, &te_state, &chunked_seen, &other)) < 0)
        return rc;
      if (http_token_eq(h->name, 17, "if-modified-since"))
        info->if_modified_since = h;
      break;
    default:
      break;
    }
  }
  if (te_state != 0) {
    if (cl != NULL || r->minor_version == 0 || te_state != 1)
      return -400; /* RFC 9112 §6.1-6.3: ambiguous framing, answer 400 and close */
    if (other)
      return -501; /* gzip, chunked: a coding this server does not decode */
    info->body = HTTP_BODY_CHUNKED;
  } else if (cl != NULL) {
    if ((rc = parse_length(cl, max_body, &info->content_length)) < 0)
      return rc;
    info->body = info->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
  }
  if (!target_ok(r))
    return -400;
  if (r->minor_version == 1 && (hosts != 1 || !host_ok(info->host)))
    return -400; /* RFC 9112 §3.2: exactly one valid Host in HTTP/1.1 */
  if (r->minor_version == 0 && (hosts > 1 || (hosts == 1 && !host_ok(info->host))))
    return -400;
  info->keep_alive = r->minor_version == 1 ? !close : (keep && !close);
  return 0;
}

/* ---- chunked bodies -------------------------------------------------------------------- */

enum {
  CK_SIZE0,    /* first hex digit of a chunk size */
  CK_SIZE,     /* more hex digits, BWS, ';' or CR */
  CK_BWS,      /* whitespace after the size: more, or ';' */
  CK_EXT,      /* chunk extensions, until CR */
  CK_SIZE_LF,  /* LF after the size line's CR */
  CK_DATA,     /* chunk data */
  CK_DATA_CR,  /* CR after the data */
  CK_DATA_LF,  /* LF after that CR */
  CK_TRAILER0, /* start of a trailer field line, or the final CR */
  CK_TNAME,    /* trailer field name, until ':' */
  CK_TRAILER,  /* trailer field value, until CR */
  CK_TRAIL_LF, /* LF after a trailer line's CR */
  CK_END_LF,   /* LF of the final empty line */
};

/* Unlike the head, where a bare LF ends a line (RFC 9112 §2.2), the chunked framing takes
 * CRLF only: lenience there is where front and back ends have been made to disagree about
 * where a chunk ends (request smuggling through chunk-size lines). */
#define CK_MAX_LINE 4096 /* chunk-size line with extensions, and the whole trailer section */

static int hexval(unsigned char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

int http_chunked_consume(http_chunked *c, const char *buf, size_t len, uint64_t max_body,
                         size_t *used)
{
  size_t i = 0;

  cls_init();
  while (i < len) {
    unsigned char ch = (unsigned char)buf[i];
    int h;

    switch (c->state) {
    case CK_SIZE0:
      if ((h = hexval(ch)) < 0)
        goto bad;
      c->left = (uint64_t)h;
      c->digits = 1;
      c->line = 1;
      c->state = CK_SIZE;
      i++;
      break;
    case CK_SIZE:
      if ((h = hexval(ch)) >= 0) {
        if (++c->digits > 15)
          goto bad; /* 2^60 bytes is no chunk */
        c->left = c->left * 16 + (uint64_t)h;
        i++;
        break;
      }
      if (ch == ' ')
        c->state = CK_BWS;
      else if (ch == ';')
        c->state = CK_EXT;
      else if (ch == '\r')
        c->state = CK_SIZE_LF;
      else
        goto bad;
      i++;
      break;
    case CK_BWS: /* BWS is allowed before a chunk extension only */
      if (ch == ';')
        c->state = CK_EXT;
      else if (ch != ' ')
        goto bad; /* HTAB too: see framing_ws_ok */
      i++;
      break;
    case CK_EXT:
      if (ch == '\r')
        c->state = CK_SIZE_LF;
      else if (!(cls[ch] & C_VCHAR))
        goto bad;
      if (++c->line > CK_MAX_LINE)
        goto bad;
      i++;
      break;
    case CK_SIZE_LF:
      if (ch != '\n')
        goto bad; /* bare CR */
      c->state = c->left ? CK_DATA : CK_TRAILER0;
      c->line = 0;
      i++;
      break;
    case CK_DATA: {
      uint64_t n = len - i < c->left ? len - i : c->left;

      if (c->total + n > max_body) {
        *used = i;
        return -413;
      }
      c->total += n;
      c->left -= n;
      i += (size_t)n;
      if (c->left == 0)
        c->state = CK_DATA_CR;
      break;
    }
    case CK_DATA_CR:
      if (ch != '\r')
        goto bad;
      c->state = CK_DATA_LF;
      i++;
      break;
    case CK_DATA_LF:
      if (ch != '\n')
        goto bad;
      c->state = CK_SIZE0;
      i++;
      break;
    case CK_TRAILER0:
      if (ch == '\r')
        c->state = CK_END_LF;
      else if (cls[ch] & C_TCHAR)
        c->state = CK_TNAME; /* trailer fields are checked and dropped */
      else
        goto bad; /* obs-fold, a bare LF or garbage */
      if (++c->line > CK_MAX_LINE)
        goto bad;
      i++;
      break;
    case CK_TNAME:
      if (ch == ':')
        c->state = CK_TRAILER;
      else if (!(cls[ch] & C_TCHAR))
        goto bad;
      if (++c->line > CK_MAX_LINE)
        goto bad;
      i++;
      break;
    case CK_TRAILER:
      if (ch == '\r')
        c->state = CK_TRAIL_LF;
      else if (!(cls[ch] & C_VCHAR))
        goto bad;
      if (++c->line > CK_MAX_LINE)
        goto bad;
      i++;
      break;
    case CK_TRAIL_LF:
      if (ch != '\n')
        goto bad;
      c->state = CK_TRAILER0;
      i++;
      break;
    case CK_END_LF:
      if (ch != '\n')
        goto bad;
      *used = i + 1;
      return 1;
    default:
      goto bad;
    }
  }
  *used = i;
  return 0;
bad:
  *used = i;
  return -400;
}

/* ---- paths and ranges ------------------------------------------------------------------ */

static int hexd(int ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch |= 0x20;
  return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/*
 * Decodes the path of an origin-form target and removes its dot segments (RFC 3986
 * §5.2.4) after decoding, so that %2e%2e is a dot segment too. Writes the path relative
 * to the document root (no leading '/') into out. 0, or -400 (bad escape, %00, a path
 * that climbs above the root), -414 (too long). *dir: the path ends with '/'.
 */
int http_normalize_path(const char *p, size_t n, char *out, size_t outsz, int *dir)
{
  size_t o = 0, seg = 0;
  size_t stack[256];
  int depth = 0;

  *dir = 0;
  if (n == 0 || p[0] != '/')
    return -400;
  for (size_t i = 0; i <= n; i++) {
    int ch = i < n ? (unsigned char)p[i] : '/';

    if (ch == '\0')
      return -400; /* a NUL would cut the path short at open(2) */
    if (i < n && ch == '%') {
      int h = i + 2 < n ? hexd(p[i + 1]) : -1, l = h >= 0 ? hexd(p[i + 2]) : -1;

      if (h < 0 || l < 0 || (h == 0 && l == 0))
        return -400;
      ch = h * 16 + l;
      i += 2;
    }
    if (ch == '/' && i > 0) {
      /* a segment ended: out[seg .. o) */
      size_t len = o - seg;

      if (len == 0 || (len == 1 && out[seg] == '.')) {
        o = seg;
      } else if (len == 2 && out[seg] == '.' && out[seg + 1] == '.') {
        if (depth == 0)
          return -400; /* above the document root */
        o = seg = stack[--depth];
        continue;
      } else {
        if (depth == (int)(sizeof(stack) / sizeof(stack[0])))
          return -414;
        stack[depth++] = seg;
        if (o + 1 >= outsz)
          return -414;
        out[o++] = '/';
      }
      seg = o;
      continue;
    }
    if (ch == '/')
      continue; /* the leading slash */
    if (o + 1 >= outsz)
      return -414;
    out[o++] = (char)ch;
  }
  *dir = n > 0 && p[n - 1] == '/';
  if (o > 0 && out[o - 1] == '/')
    o--;
  out[o] = '\0';
  return 0;
}

/* One byte range "bytes=a-b" / "a-" / "-n" of a file of `size` bytes. 1 satisfiable
 * ([*first, *last]), 0 not satisfiable (416), -1 ignore the header (syntax we do not
 * serve, several ranges: the whole file is sent, RFC 9110 §14.2). */
int http_parse_range(const char *v, size_t n, uint64_t size, uint64_t *first, uint64_t *last)
{
  const char *p = v, *end = v + n;
  uint64_t a = 0, b = 0;
  int have_a = 0, have_b = 0;

  if (n < 7 || !http_token_eq(p, 6, "bytes="))
    return -1;
  p += 6;
  while (p < end && *p >= '0' && *p <= '9' && a < (UINT64_MAX / 10 - 10)) {
    a = a * 10 + (uint64_t)(*p++ - '0');
    have_a = 1;
  }
  if (p >= end || *p++ != '-')
    return -1;
  while (p < end && *p >= '0' && *p <= '9' && b < (UINT64_MAX / 10 - 10)) {
    b = b * 10 + (uint64_t)(*p++ - '0');
    have_b = 1;
  }
  if (p != end || (!have_a && !have_b))
    return -1;
  if (!have_a) { /* suffix: the last b bytes */
    if (b == 0 || size == 0)
      return 0;
    *first = b >= size ? 0 : size - b;
    *last = size - 1;
    return 1;
  }
  if (have_b && b < a)
    return -1;
  if (a >= size)
    return 0;
  *first = a;
  *last = have_b && b < size ? b : size - 1;
  return 1;
}
