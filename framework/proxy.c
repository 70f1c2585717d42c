/*
 * framework/proxy.c - the PROXY protocol (HAProxy's spec, versions 1 and 2).
 *
 * The header arrives from the load balancer before any client byte. The parser is strict:
 * anything that is not exactly a header is refused, because a lenient parser behind a
 * proxy lets a client forge its address. It never reads past `len` and reports
 * "incomplete" only while what it has seen is still a valid prefix, so a peer cannot hold
 * a connection open with garbage (the caller also bounds the time with the listener's
 * handshake timeout).
 */
#include "framework/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

#define V1_MAX 107 /* "PROXY TCP6 " + 2 * 39 + 2 * 5 + 3 spaces + "\r\n" */

static int fail(const char **why, const char *msg)
{
  if (why != NULL)
    *why = msg;
  return -1;
}

/* A decimal port: 1-5 digits, no sign, no leading zero (except "0"), at most 65535. */
static int parse_port(const char *s, size_t n, unsigned *port)
{
  unsigned v = 0;

  if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535)
    return -1;
  *port = v;
  return 0;
}

/* Splits "A B C D" at single spaces into exactly `n` non-empty fields. */
static int split(const char *s, size_t len, const char **f, size_t *flen, int n)
{
  int k = 0;
  size_t start = 0;

  for (size_t i = 0; i <= len; i++) {
    if (i == len || s[i] == ' ') {
      if (i == start || k == n)
        return -1; /* empty field (double space) or too many */
      f[k] = s + start;
      flen[k++] = i - start;
      start = i + 1;
    }
  }
  return k == n ? 0 : -1;
}

static int set_addr(struct sockaddr_storage *ss, socklen_t *sl, int family, const char *txt,
                    size_t n, unsigned port)
{
  char buf[64];

  if (n >= sizeof(buf))
    return -1;
  memcpy(buf, txt, n);
  buf[n] = '\0';
  memset(ss, 0, sizeof(*ss));
  if (family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;

    if (inet_pton(AF_INET, buf, &a->sin_addr) != 1)
      return -1;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *sl = sizeof(*a);
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

    if (inet_pton(AF_INET6, buf, &a->sin6_addr) != 1)
      return -1;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    *sl = sizeof(*a);
  }
  return 0;
}

static int parse_v1(const unsigned char *buf, size_t len, fw__proxy_result *out, const char **why)
{
  const char *s = (const char *)buf;
  const char *crlf = NULL;
  const char *f[5];
  size_t fl[5];
  unsigned sport, dport;
  int family;

  for (size_t i = 0; i < len && i + 1 < V1_MAX; i++) {
    if (s[i] == '\r') {
      if (i + 1 == len)
        break; /* the LF may still come */
      if (s[i + 1] != '\n')
        return fail(why, "v1: CR not followed by LF");
      crlf = s + i;
      break;
    }
    if (s[i] == '\n' || (unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
      return fail(why, "v1: control or non-ASCII byte in the header line");
  }
  if (crlf == NULL)
    return len >= V1_MAX ? fail(why, "v1: no CRLF within 107 bytes") : 0;
  /* "PROXY " already matched by the caller. */
  s += 6;
  if ((size_t)(crlf - s) >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (crlf - s == 7 || s[7] == ' ')) {
    memset(out, 0, sizeof(*out));
    out->version = 1;
    out->local = 1; /* the spec: ignore whatever follows UNKNOWN */
    return (int)(crlf - (const char *)buf) + 2;
  }
  if (split(s, (size_t)(crlf - s), f, fl, 5) < 0)
    return fail(why, "v1: expected 'TCP4|TCP6 SRC DST SPORT DPORT'");
  if (fl[0] == 4 && memcmp(f[0], "TCP4", 4) == 0)
    family = AF_INET;
  else if (fl[0] == 4 && memcmp(f[0], "TCP6", 4) == 0)
    family = AF_INET6;
  else
    return fail(why, "v1: protocol must be TCP4, TCP6 or UNKNOWN");
  if (parse_port(f[3], fl[3], &sport) < 0 || parse_port(f[4], fl[4], &dport) < 0)
    return fail(why, "v1: bad port");
  memset(out, 0, sizeof(*out));
  out->version = 1;
  if (set_addr(&out->src, &out->src_len, family, f[1], fl[1], sport) < 0 ||
      set_addr(&out->dst, &out->dst_len, family, f[2], fl[2], dport) < 0)
    return fail(why, "v1: bad address for the protocol family");
  return (int)(crlf - (const char *)buf) + 2;
}

static int parse_v2(const unsigned char *buf, size_t len, fw__proxy_result *out, const char **why)
{
  size_t body, total;
  int cmd, fam, proto;

  if (len < 16)
    return 0;
  if ((buf[12] >> 4) != 2)
    return fail(why, "v2: version is not 2");
  cmd = buf[12] & 0x0f;
  fam = buf[13] >> 4;
  proto = buf[13] & 0x0f;
  body = (size_t)buf[14] << 8 | buf[15];
  total = 16 + body;
  if (cmd > 1)
    return fail(why, "v2: command is neither LOCAL nor PROXY");
  if (total > FW__PROXY_MAX)
    return fail(why, "v2: header longer than we accept");
  if (len < total)
    return 0;
  memset(out, 0, sizeof(*out));
  out->version = 2;
  if (cmd == 0 || fam == 0 || proto != 1) {
    /* LOCAL (health checks), an unspecified family, or not a stream: keep the real
     * addresses, as the spec says. */
    out->local = 1;
    return (int)total;
  }
  if (fam == 1) {
    struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
    struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;

    if (body < 12)
      return fail(why, "v2: INET addresses truncated");
    s->sin_family = d->sin_family = AF_INET;
    memcpy(&s->sin_addr, buf + 16, 4);
    memcpy(&d->sin_addr, buf + 20, 4);
    memcpy(&s->sin_port, buf + 24, 2);
    memcpy(&d->sin_port, buf + 26, 2);
    out->src_len = out->dst_len = sizeof(*s);
  } else if (fam == 2) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
    struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;

    if (body < 36)
      return fail(why, "v2: INET6 addresses truncated");
    s->sin6_family = d->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, buf + 16, 16);
    memcpy(&d->sin6_addr, buf + 32, 16);
    memcpy(&s->sin6_port, buf + 48, 2);
    memcpy(&d->sin6_port, buf + 50, 2);
    out->src_len = out->dst_len = sizeof(*s);
  } else if (fam == 3) {
    struct sockaddr_un *s = (struct sockaddr_un *)&out->src;
    struct sockaddr_un *d = (struct sockaddr_un *)&out->dst;

    if (body < 216)
      return fail(why, "v2: UNIX addresses truncated");
    s->sun_family = d->sun_family = AF_UNIX;
    memcpy(s->sun_path, buf + 16, sizeof(s->sun_path) - 1);
    memcpy(d->sun_path, buf + 16 + 108, sizeof(d->sun_path) - 1);
    out->src_len = out->dst_len = sizeof(*s);
  } else {
    return fail(why, "v2: unknown address family");
  }
  return (int)total; /* TLVs after the addresses are skipped */
}

int fw__proxy_parse(const unsigned char *buf, size_t len, fw__proxy_result *out, const char **why)
{
  size_t n;

  if (why != NULL)
    *why = NULL;
  if (len == 0)
    return 0;
  if (buf[0] == 'P') {
    n = len < 6 ? len : 6;
    if (memcmp(buf, "PROXY ", n) != 0)
      return fail(why, "not a PROXY header");
    return len < 6 ? 0 : parse_v1(buf, len, out, why);
  }
  n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
  if (memcmp(buf, v2_sig, n) != 0)
    return fail(why, "not a PROXY header");
  return parse_v2(buf, len, out, why);
}
