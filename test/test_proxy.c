/*
 * test/test_proxy.c - the PROXY protocol parser (framework/proxy.c), v1 and v2, valid,
 * incomplete and malformed headers.
 */
#include "unit.h"

#include "framework/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static int parse(const char *s, size_t len, fw__proxy_result *r)
{
  const char *why;

  return fw__proxy_parse((const unsigned char *)s, len, r, &why);
}

static void t_v1_tcp4(void)
{
  const char h[] = "PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\nGET / HTTP/1.1\r\n";
  fw__proxy_result r;
  struct sockaddr_in *src = (struct sockaddr_in *)&r.src, *dst = (struct sockaddr_in *)&r.dst;
  char a[32];

  ASSERT_EQ(parse(h, sizeof(h) - 1, &r), 43); /* stops at the end of the header */
  ASSERT_EQ(r.version, 1);
  ASSERT_EQ(r.local, 0);
  ASSERT_EQ(src->sin_family, AF_INET);
  ASSERT_STR_EQ(inet_ntop(AF_INET, &src->sin_addr, a, sizeof(a)), "192.168.0.1");
  ASSERT_EQ(ntohs(src->sin_port), 56324);
  ASSERT_STR_EQ(inet_ntop(AF_INET, &dst->sin_addr, a, sizeof(a)), "10.0.0.2");
  ASSERT_EQ(ntohs(dst->sin_port), 443);
}

static void t_v1_tcp6_and_unknown(void)
{
  const char h6[] = "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
  const char hu[] = "PROXY UNKNOWN\r\n";
  const char hu2[] = "PROXY UNKNOWN ffff::1 ::1 1 2\r\n";
  fw__proxy_result r;
  char a[64];

  ASSERT_EQ(parse(h6, sizeof(h6) - 1, &r), (int)sizeof(h6) - 1);
  ASSERT_EQ(r.src.ss_family, AF_INET6);
  ASSERT_STR_EQ(inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&r.src)->sin6_addr, a, sizeof(a)),
                "2001:db8::1");
  ASSERT_EQ(ntohs(((struct sockaddr_in6 *)&r.dst)->sin6_port), 65535);
  ASSERT_EQ(parse(hu, sizeof(hu) - 1, &r), (int)sizeof(hu) - 1);
  ASSERT_EQ(r.local, 1);
  ASSERT_EQ(parse(hu2, sizeof(hu2) - 1, &r), (int)sizeof(hu2) - 1);
  ASSERT_EQ(r.local, 1);
}

static void t_v1_incomplete(void)
{
  const char h[] = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
  fw__proxy_result r;

  for (size_t n = 0; n < sizeof(h) - 1; n++)
    ASSERT_EQ(parse(h, n, &r), 0); /* every proper prefix: read more */
  ASSERT_EQ(parse(h, sizeof(h) - 1, &r), (int)sizeof(h) - 1);
}

static void t_v1_malformed(void)
{
  static const char *bad[] = {
      "GET / HTTP/1.1\r\n",                     /* not PROXY at all */
      "PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n",     /* wrong magic */
      "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",     /* family */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",       /* missing field */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",   /* extra field */
      "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",    /* double space */
      "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",   /* bad address */
      "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",         /* v6 address for TCP4 */
      "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",         /* v4 address for TCP6 */
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /* port range */
      "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",    /* leading zero */
      "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",    /* sign */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",       /* LF without CR */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",      /* CR without LF */
      "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",    /* control byte */
  };
  fw__proxy_result r;
  char longer[200];

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ASSERT_EQ(parse(bad[i], strlen(bad[i]), &r), -1);
  /* No CRLF within the longest legal line: refused, not "read more" forever. */
  memset(longer, 'A', sizeof(longer));
  memcpy(longer, "PROXY ", 6);
  ASSERT_EQ(parse(longer, sizeof(longer), &r), -1);
}

static size_t v2(unsigned char *b, int cmd, int fam, int proto, const void *addrs, size_t alen,
                 size_t extra)
{
  static const unsigned char sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                        0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
  size_t body = alen + extra;

  memcpy(b, sig, 12);
  b[12] = (unsigned char)(0x20 | cmd);
  b[13] = (unsigned char)(fam << 4 | proto);
  b[14] = (unsigned char)(body >> 8);
  b[15] = (unsigned char)body;
  if (alen > 0)
    memcpy(b + 16, addrs, alen);
  memset(b + 16 + alen, 0, extra); /* TLVs: skipped */
  return 16 + body;
}

static void t_v2(void)
{
  unsigned char b[512];
  unsigned char a4[12] = {10, 1, 2, 3, 127, 0, 0, 1, 0x1f, 0x90, 0x00, 0x50};
  unsigned char a6[36] = {0};
  fw__proxy_result r;
  struct sockaddr_in *s4 = (struct sockaddr_in *)&r.src;
  size_t n;

  n = v2(b, 1, 1, 1, a4, sizeof(a4), 7);
  ASSERT_EQ(fw__proxy_parse(b, n + 5, &r, NULL), (int)n); /* payload after it untouched */
  ASSERT_EQ(r.version, 2);
  ASSERT_EQ(s4->sin_addr.s_addr, htonl(0x0a010203));
  ASSERT_EQ(ntohs(s4->sin_port), 8080);
  ASSERT_EQ(ntohs(((struct sockaddr_in *)&r.dst)->sin_port), 80);
  for (size_t k = 0; k < n; k++)
    ASSERT_EQ(fw__proxy_parse(b, k, &r, NULL), 0); /* incomplete */
  a6[15] = 1;
  a6[35] = 7;
  n = v2(b, 1, 2, 1, a6, sizeof(a6), 0);
  ASSERT_EQ(fw__proxy_parse(b, n, &r, NULL), (int)n);
  ASSERT_EQ(r.src.ss_family, AF_INET6);
  ASSERT_EQ(ntohs(((struct sockaddr_in6 *)&r.dst)->sin6_port), 7);
  /* LOCAL (health check) and UDP: valid, but keep the socket's addresses. */
  n = v2(b, 0, 0, 0, NULL, 0, 0);
  ASSERT_EQ(fw__proxy_parse(b, n, &r, NULL), 16);
  ASSERT_EQ(r.local, 1);
  n = v2(b, 1, 1, 2, a4, sizeof(a4), 0);
  ASSERT_EQ(fw__proxy_parse(b, n, &r, NULL), (int)n);
  ASSERT_EQ(r.local, 1);
}

static void t_v2_malformed(void)
{
  unsigned char b[2048];
  unsigned char a4[12] = {0};
  fw__proxy_result r;
  size_t n;

  n = v2(b, 1, 1, 1, a4, 8, 0); /* INET body shorter than its addresses */
  ASSERT_EQ(fw__proxy_parse(b, n, &r, NULL), -1);
  n = v2(b, 2, 1, 1, a4, sizeof(a4), 0); /* command 2 */
  ASSERT_EQ(fw__proxy_parse(b, n, &r, NULL), -1);
  n = v2(b, 1, 5, 1, a4, sizeof(a4), 0); /* family 5 */
  ASSERT_EQ(fw__proxy_parse(b, n, &r, NULL), -1);
  n = v2(b, 1, 1, 1, a4, sizeof(a4), 0);
  b[12] = 0x11; /* version 1 in the binary form */
  ASSERT_EQ(fw__proxy_parse(b, n, &r, NULL), -1);
  v2(b, 1, 1, 1, a4, sizeof(a4), 0);
  b[14] = 0xff; /* claims 65k: refused at once rather than waited for */
  ASSERT_EQ(fw__proxy_parse(b, 16, &r, NULL), -1);
  b[0] = 0x0d;
  b[5] = 0x0e; /* signature broken in the middle */
  ASSERT_EQ(fw__proxy_parse(b, 16, &r, NULL), -1);
}

static const unit_test tests[] = {
    UNIT_TEST(t_v1_tcp4),
    UNIT_TEST(t_v1_tcp6_and_unknown),
    UNIT_TEST(t_v1_incomplete),
    UNIT_TEST(t_v1_malformed),
    UNIT_TEST(t_v2),
    UNIT_TEST(t_v2_malformed),
    {NULL, NULL},
};

UNIT_MAIN("proxy", tests)
