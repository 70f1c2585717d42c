/*
 * test/test_growbuf.c - tryread_until, ec_tryread_bytes and the tryread construct
 * (framework/growbuf.c): record boundaries however the stream is cut, read-ahead kept for
 * pipelined records, the per-record limit, EOF, hooks; then the seed's line reader on
 * running shards over real sockets with tiny buffers.
 */
#include "io_fake.h"

#include "ec_growbuf.h"
#include "scheduler.h"

#include <pthread.h>

/* One construct, one scripted Event: the deterministic part of the suite. */
typedef struct fx {
  fake_io f;
  Event *e;
  int fd;
  minimal_tryread_construct mtc;
  int need;
  int64_t live0; /* MEMTYPE_MESSAGE_BODY objects before the test */
} fx;

static int fx_open(fx *x)
{
  memset(x, 0, sizeof(*x));
  x->live0 = unit_live(MEMTYPE_MESSAGE_BODY);
  x->e = fake_event(&x->f, &fake_ops, &x->fd);
  return x->e != NULL ? 0 : -1;
}

static void fx_close(fx *x)
{
  minimal_tryread_construct_free(&x->mtc);
  fake_event_free(x->e, x->fd);
  fake_free(&x->f);
}

/* tryread_until into `out` (a NUL-terminated copy of the record, freed here). Returns the
 * call's result; errno as the call left it. */
static int rd(fx *x, const char *until, char *out, size_t outlen)
{
  int n, err;

  x->need = -1;
  n = tryread_until(x->e, &x->need, &x->mtc, until);
  err = errno;
  if (out != NULL)
    out[0] = '\0';
  if (n > 0) {
    if (out != NULL)
      snprintf(out, outlen, "%s", x->mtc.gb_donebuffer);
    ec_free(MEMTYPE_MESSAGE_BODY, x->mtc.gb_donebuffer);
  }
  errno = err;
  return n;
}

/* ---- boundaries --------------------------------------------------------------------------- */

/* The conformance cut: pieces, the last between CR and LF; EAGAIN until complete. */
static void t_line_in_pieces(void)
{
  static const char *const pieces[] = {"HELO ", "conformance.", "example\r", "\n"};
  char line[64];
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  for (int i = 0; i < 3; i++) {
    fake_feeds(&x.f, pieces[i]);
    errno = 0;
    ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLF, NULL, 0), -1);
    ASSERT_EQ(errno, EAGAIN);
    ASSERT_EQ(x.need, E_READ);
    ASSERT_NULL(x.mtc.gb_donebuffer);
  }
  fake_feeds(&x.f, pieces[3]);
  ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLF, line, sizeof(line)), 26);
  ASSERT_STR_EQ(line, "HELO conformance.example\r\n");
  ASSERT_EQ(x.need, E_READ); /* set on success too */
  ASSERT_EQ(ec_tryread_pending(&x.mtc), 0);
  ASSERT_NULL(x.mtc.gb_buffer.data); /* idle: no read buffer held */
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

/* Record in gb_donebuffer: delimiter included, NUL-terminated, length gb_donesize,
 * ownership with the caller (the construct never frees it). */
static void t_record_ownership(void)
{
  char *rec;
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  fake_feeds(&x.f, "abc\r\nrest");
  ASSERT_EQ(tryread_until(x.e, &x.need, &x.mtc, "\r\n"), 5);
  rec = x.mtc.gb_donebuffer;
  ASSERT_EQ(x.mtc.gb_donesize, 5);
  ASSERT_EQ(memcmp(rec, "abc\r\n", 6), 0); /* the NUL too */
  minimal_tryread_construct_free(&x.mtc);
  ASSERT_NULL(x.mtc.gb_donebuffer);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0 + 1); /* the record only */
  ASSERT_EQ(memcmp(rec, "abc\r\n", 6), 0);
  ec_free(MEMTYPE_MESSAGE_BODY, rec);
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

/* A multi-byte delimiter cut at every position, in a stream read 1, 2, 3 ... bytes at a
 * time: exactly the records, in order. */
static void t_delimiter_straddles(void)
{
  static const char body[] = "Subject: x\r\n\r\nline one\r\n..dot\r\n.\r\n";
  char buf[128];
  fx x;

  for (int step = 1; step <= 7; step++) {
    ASSERT_EQ(fx_open(&x), 0);
    x.f.max_read = step;
    fake_feeds(&x.f, body);
    fake_feeds(&x.f, "QUIT\r\n");
    for (int tries = 0; tries < 100; tries++) {
      int n = rd(&x, TRYREAD_UNTIL_CRLFDOTCRLF, buf, sizeof(buf));

      if (n > 0) {
        ASSERT_EQ(n, (int)strlen(body));
        ASSERT_STR_EQ(buf, body);
        break;
      }
      ASSERT_EQ(errno, EAGAIN); /* never: everything is there, reads are just short */
    }
    ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLF, buf, sizeof(buf)), 6);
    ASSERT_STR_EQ(buf, "QUIT\r\n");
    fx_close(&x);
  }
  /* Cut at each position, with an EAGAIN between the halves. */
  for (size_t cut = 1; cut < sizeof(body) - 1; cut++) {
    ASSERT_EQ(fx_open(&x), 0);
    fake_feed(&x.f, body, cut);
    ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLFDOTCRLF, buf, sizeof(buf)), -1);
    ASSERT_EQ(errno, EAGAIN);
    fake_feeds(&x.f, body + cut);
    ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLFDOTCRLF, buf, sizeof(buf)), (int)strlen(body));
    ASSERT_STR_EQ(buf, body);
    fx_close(&x);
  }
}

/*
 * Near misses of a multi-byte delimiter: its last byte alone, its prefix, overlaps
 * ("\r\n\r\n.\r\n" holds the delimiter from its third byte), at the very start of the
 * stream and in one read or byte by byte. The search memchr's for the last byte and
 * compares what precedes it; the records must be exactly what memmem would cut.
 */
static void t_delimiter_near_misses(void)
{
  static const char *const streams[] = {
      "\r\n.\r\n",                     /* the delimiter alone: an empty record */
      "a\n.\n\r\n.\n\r.\r\n\r\n.\r\n", /* LF.LF, CR.CR, then the real end */
      "\r\n\r\n.\r\n",                 /* overlapping start */
      "x\r\n..\r\n.\r\r\n.\r\n",       /* dot-stuffed line, CR CR LF */
      "\n\n\n\n\r\n.\r\n",             /* last byte everywhere */
  };
  char buf[128];
  fx x;

  for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
    for (int step = 0; step <= 1; step++) {
      ASSERT_EQ(fx_open(&x), 0);
      x.f.max_read = step; /* 0: all at once, 1: byte by byte */
      fake_feeds(&x.f, streams[i]);
      fake_feeds(&x.f, "tail\r\n.\r\n");
      int n = -1;

      for (int tries = 0; tries < 100 && n < 0; tries++)
        n = rd(&x, TRYREAD_UNTIL_CRLFDOTCRLF, buf, sizeof(buf));
      ASSERT_EQ(n, (int)strlen(streams[i]));
      ASSERT_STR_EQ(buf, streams[i]);
      n = -1;
      for (int tries = 0; tries < 100 && n < 0; tries++)
        n = rd(&x, TRYREAD_UNTIL_CRLFDOTCRLF, buf, sizeof(buf));
      ASSERT_STR_EQ(buf, "tail\r\n.\r\n");
      fx_close(&x);
    }
  }
}

/* Pipelining: three records in one read come out one per call, the second and third with
 * no read at all, even though the descriptor would block. */
static void t_pipelined_from_memory(void)
{
  char buf[32];
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  fake_feeds(&x.f, "A\r\nBB\r\nCCC\r\nDD");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 3);
  ASSERT_STR_EQ(buf, "A\r\n");
  ASSERT_EQ(x.f.reads, 1);
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 4);
  ASSERT_STR_EQ(buf, "BB\r\n");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 5);
  ASSERT_STR_EQ(buf, "CCC\r\n");
  ASSERT_EQ(x.f.reads, 1);
  ASSERT_EQ(ec_tryread_pending(&x.mtc), 2);
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), -1); /* now it has to read: EAGAIN */
  ASSERT_EQ(errno, EAGAIN);
  ASSERT_EQ(x.f.reads, 2);
  fake_feeds(&x.f, "\r\n");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 4);
  ASSERT_STR_EQ(buf, "DD\r\n");
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

/* 1,000 pipelined lines in one segment are 1,000 records. */
static void t_thousand_lines_one_segment(void)
{
  char line[64], got[64];
  int i;
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  for (i = 0; i < 1000; i++) {
    snprintf(line, sizeof(line), "RCPT TO:<user%04d@example.com>\r\n", i);
    fake_feeds(&x.f, line);
  }
  for (i = 0; i < 1000; i++) {
    snprintf(line, sizeof(line), "RCPT TO:<user%04d@example.com>\r\n", i);
    ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLF, got, sizeof(got)), (int)strlen(line));
    ASSERT_STR_EQ(got, line);
  }
  ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLF, got, sizeof(got)), -1);
  ASSERT_EQ(errno, EAGAIN);
  /* 34 KB in 16 KiB reads: a handful of reads for a thousand records. */
  ASSERT_LE(x.f.reads, 5);
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

/* Switching delimiters between records (SMTP: commands, then a DATA body). */
static void t_switch_delimiters(void)
{
  char buf[64];
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  fake_feeds(&x.f, "DATA\r\nbody\r\n.\r\nQUIT\r\n");
  ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLF, buf, sizeof(buf)), 6);
  ASSERT_STR_EQ(buf, "DATA\r\n");
  ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLFDOTCRLF, buf, sizeof(buf)), 9);
  ASSERT_STR_EQ(buf, "body\r\n.\r\n");
  ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLF, buf, sizeof(buf)), 6);
  ASSERT_STR_EQ(buf, "QUIT\r\n");
  /* A search position left by one delimiter must not hide the other. */
  fake_feeds(&x.f, "ab|cd");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), -1);
  ASSERT_EQ(errno, EAGAIN);
  ASSERT_EQ(rd(&x, "|", buf, sizeof(buf)), 3);
  ASSERT_STR_EQ(buf, "ab|");
  fx_close(&x);
}

/* ---- limits ------------------------------------------------------------------------------- */

/* No delimiter within the limit: E2BIG at once, then the rest of that record is skipped and
 * the next call returns the record after it. Nothing leaks. */
static void t_limit_skips_record(void)
{
  char big[300], buf[64];
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  x.mtc.max_region_size = 64;
  memset(big, 'x', sizeof(big));
  fake_feed(&x.f, big, 100);
  errno = 0;
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), -1);
  ASSERT_EQ(errno, E2BIG);
  ASSERT_LE(ec_tryread_pending(&x.mtc), 1);
  fake_feed(&x.f, big, sizeof(big));
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), -1);
  ASSERT_EQ(errno, EAGAIN); /* still inside the refused record */
  fake_feeds(&x.f, "\r\nNEXT\r\n");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 6);
  ASSERT_STR_EQ(buf, "NEXT\r\n");
  /* Exactly the limit is allowed, one more byte is not. */
  memset(big, 'y', 62);
  memcpy(big + 62, "\r\n", 2);
  fake_feed(&x.f, big, 64);
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 64);
  memset(big, 'z', 63);
  memcpy(big + 63, "\r\nOK\r\n", 6);
  fake_feed(&x.f, big, 69);
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), -1);
  ASSERT_EQ(errno, E2BIG); /* found in one read, but 65 bytes */
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 4);
  ASSERT_STR_EQ(buf, "OK\r\n");
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

/* The limit is per record: many records, together far over it, are fine. */
static void t_limit_per_record(void)
{
  char buf[64];
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  x.mtc.max_region_size = 16;
  for (int i = 0; i < 200; i++)
    fake_feeds(&x.f, "0123456789\r\n");
  for (int i = 0; i < 200; i++)
    ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 12);
  fx_close(&x);
}

static void t_default_limit(void)
{
  int old = ec_tryread_default_limit(0);
  char buf[8];
  fx x;

  ASSERT_EQ(old, EC_TRYREAD_DEFAULT_LIMIT);
  ASSERT_EQ(ec_tryread_default_limit(32), old);
  ASSERT_EQ(ec_tryread_default_limit(0), 32);
  ASSERT_EQ(fx_open(&x), 0);
  for (int i = 0; i < 40; i++)
    fake_feeds(&x.f, "a");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), -1);
  ASSERT_EQ(errno, E2BIG);
  ec_tryread_default_limit(old);
  fx_close(&x);
}

/* ---- end of stream, errors ---------------------------------------------------------------- */

static void t_eof(void)
{
  char buf[16];
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  fake_feeds(&x.f, "one\r\n");
  x.f.eof = 1;
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 5);
  errno = EINTR;
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 0); /* on a record boundary */
  ASSERT_EQ(errno, 0);
  ASSERT_EQ(x.need, E_READ);
  fx_close(&x);

  ASSERT_EQ(fx_open(&x), 0);
  fake_feeds(&x.f, "one\r\npart");
  x.f.eof = 1;
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 5);
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), -1); /* inside a record */
  ASSERT_EQ(errno, EPIPE);
  ASSERT_EQ(ec_tryread_pending(&x.mtc), 4);
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

/* Errors of the read pass through; a TLS-like opset's needmask reaches the caller. */
static void t_errors_and_needmask(void)
{
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  x.f.need = E_WRITE; /* "this read needs the descriptor writable" */
  ASSERT_EQ(rd(&x, "\r\n", NULL, 0), -1);
  ASSERT_EQ(errno, EAGAIN);
  ASSERT_EQ(x.need, E_WRITE);
  x.f.rd_err = ECONNRESET;
  ASSERT_EQ(rd(&x, "\r\n", NULL, 0), -1);
  ASSERT_EQ(errno, ECONNRESET);
  x.need = -1;
  ASSERT_EQ(tryread_until(x.e, &x.need, &x.mtc, ""), -1);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(x.need, E_READ);
  ASSERT_EQ(tryread_until(x.e, &x.need, &x.mtc, NULL), -1);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(tryread_until(NULL, &x.need, &x.mtc, "\n"), -1);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(tryread_until(x.e, NULL, &x.mtc, "\n"), -1);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(tryread_until(x.e, &x.need, NULL, "\n"), -1);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(ec_tryread_bytes(x.e, &x.need, &x.mtc, 0), -1);
  ASSERT_EQ(errno, EINVAL);
  minimal_tryread_construct_free(NULL);
  ASSERT_EQ(ec_tryread_pending(NULL), 0);
  ASSERT_EQ(ec_tryread_discard(NULL), 0);
  fx_close(&x);
}

/* ---- read-ahead control, counted records -------------------------------------------------- */

/* STARTTLS: the read-ahead after the command is dropped, and reading goes on fresh. */
static void t_discard_read_ahead(void)
{
  char buf[32];
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  fake_feeds(&x.f, "STARTTLS\r\nMAIL FROM:<evil>\r\n");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 10);
  ASSERT_EQ(ec_tryread_pending(&x.mtc), 18);
  ASSERT_EQ(ec_tryread_discard(&x.mtc), 18);
  ASSERT_EQ(ec_tryread_pending(&x.mtc), 0);
  ASSERT_NULL(x.mtc.gb_buffer.data);
  fake_feeds(&x.f, "EHLO again\r\n");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 12);
  ASSERT_STR_EQ(buf, "EHLO again\r\n");
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

/* A header line, a counted body, the next header: read-ahead flows between the modes. */
static void t_counted_records(void)
{
  enum { BIG = 200000 };
  unsigned char *big = malloc(BIG);
  char buf[64];
  fx x;

  ASSERT_NOT_NULL(big);
  ASSERT_EQ(fx_open(&x), 0);
  fake_feeds(&x.f, "LEN 10\r\n0123456789NEXT\r\n");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 8);
  ASSERT_EQ(ec_tryread_bytes(x.e, &x.need, &x.mtc, 10), 10);
  ASSERT_EQ(memcmp(x.mtc.gb_donebuffer, "0123456789", 11), 0);
  ec_free(MEMTYPE_MESSAGE_BODY, x.mtc.gb_donebuffer);
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 6);
  ASSERT_STR_EQ(buf, "NEXT\r\n");
  /* A large body in small reads, then a line: the big record is handed over whole. */
  pattern_fill(big, 0, BIG);
  fake_feed(&x.f, big, BIG);
  fake_feeds(&x.f, "END\r\n");
  x.f.max_read = 1000;
  for (;;) {
    int n = ec_tryread_bytes(x.e, &x.need, &x.mtc, BIG);

    if (n > 0) {
      ASSERT_EQ(n, BIG);
      break;
    }
    ASSERT_EQ(errno, EAGAIN); /* not expected: the bytes are all there */
  }
  ASSERT_EQ(pattern_check((unsigned char *)x.mtc.gb_donebuffer, 0, BIG), -1);
  ASSERT_EQ(x.mtc.gb_donebuffer[BIG], '\0');
  ec_free(MEMTYPE_MESSAGE_BODY, x.mtc.gb_donebuffer);
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 5);
  ASSERT_STR_EQ(buf, "END\r\n");
  /* Over the limit: refused before reading, nothing consumed. */
  x.mtc.max_region_size = 100;
  fake_feeds(&x.f, "xyz");
  ASSERT_EQ(ec_tryread_bytes(x.e, &x.need, &x.mtc, 101), -1);
  ASSERT_EQ(errno, E2BIG);
  ASSERT_EQ(ec_tryread_bytes(x.e, &x.need, &x.mtc, 3), 3);
  ec_free(MEMTYPE_MESSAGE_BODY, x.mtc.gb_donebuffer);
  /* EOF inside a counted record. */
  fake_feeds(&x.f, "ab");
  x.f.eof = 1;
  ASSERT_EQ(ec_tryread_bytes(x.e, &x.need, &x.mtc, 5), -1);
  ASSERT_EQ(errno, EPIPE);
  fx_close(&x);
  free(big);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

/* A big dot-terminated body arriving in small reads: one record, intact (the block is
 * handed over), with a pipelined command behind it. */
static void t_big_record(void)
{
  enum { BODY = 300000 };
  unsigned char *body = malloc(BODY + 5);
  char buf[32];
  int n;
  fx x;

  ASSERT_NOT_NULL(body);
  pattern_fill(body, 0, BODY);
  for (int i = 0; i < BODY; i++)
    if (body[i] == '\r')
      body[i] = 'r'; /* no premature delimiter */
  memcpy(body + BODY, "\r\n.\r\n", 5);
  ASSERT_EQ(fx_open(&x), 0);
  fake_feed(&x.f, body, BODY + 5);
  fake_feeds(&x.f, "QUIT\r\n");
  x.f.max_read = 1400;
  n = tryread_until(x.e, &x.need, &x.mtc, TRYREAD_UNTIL_CRLFDOTCRLF); /* reads until found */
  ASSERT_EQ(n, BODY + 5);
  ASSERT_EQ(memcmp(x.mtc.gb_donebuffer, body, BODY + 5), 0);
  ASSERT_EQ(x.mtc.gb_donebuffer[BODY + 5], '\0');
  ec_free(MEMTYPE_MESSAGE_BODY, x.mtc.gb_donebuffer);
  ASSERT_EQ(rd(&x, TRYREAD_UNTIL_CRLF, buf, sizeof(buf)), 6);
  ASSERT_STR_EQ(buf, "QUIT\r\n");
  fx_close(&x);
  free(body);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

/* ---- hooks, padding ----------------------------------------------------------------------- */

struct hook_log {
  int matches, finals, pages;
  int match_size;
  int match_saw_buffer; /* gb_donebuffer non-NULL inside match_hook: wrong */
  char paged[4096];
  size_t paged_len;
};

static void on_match(minimal_tryread_construct *mtc, void *closure)
{
  struct hook_log *h = closure;

  h->matches++;
  h->match_size = mtc->gb_donesize;
  h->match_saw_buffer |= mtc->gb_donebuffer != NULL;
}

/* Strips the delimiter, as a server might. */
static void on_finalize(minimal_tryread_construct *mtc, void *closure)
{
  struct hook_log *h = closure;

  h->finals++;
  mtc->gb_donesize -= 2;
  mtc->gb_donebuffer[mtc->gb_donesize] = '\0';
}

static void on_page_out(minimal_tryread_construct *mtc, void *closure, const char *buf, int len)
{
  struct hook_log *h = closure;

  h->pages++;
  memcpy(h->paged + h->paged_len, buf, (size_t)len);
  h->paged_len += (size_t)len;
}

static void t_hooks(void)
{
  struct hook_log h = {0};
  char buf[64], long_rec[2001];
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  x.mtc.match_hook = on_match;
  x.mtc.match_closure = &h;
  x.mtc.finalize_hook = on_finalize;
  x.mtc.finalize_closure = &h;
  fake_feeds(&x.f, "hello\r\n");
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 5); /* gb_donesize after finalize */
  ASSERT_STR_EQ(buf, "hello");
  ASSERT_EQ(h.matches, 1);
  ASSERT_EQ(h.match_size, 7);
  ASSERT_EQ(h.match_saw_buffer, 0);
  ASSERT_EQ(h.finals, 1);

  /* Paging out: a 2000-byte record with a 100-byte limit streams through the hook. */
  x.mtc.max_region_size = 100;
  x.mtc.page_out_hook = on_page_out;
  x.mtc.page_out_closure = &h;
  for (int i = 0; i < 1998; i++)
    long_rec[i] = (char)('a' + i % 26);
  memcpy(long_rec + 1998, "\r\n", 3);
  x.f.max_read = 150;
  fake_feeds(&x.f, long_rec);
  fake_feeds(&x.f, "next\r\n");
  int n;
  while ((n = rd(&x, "\r\n", NULL, 0)) == -1 && errno == EAGAIN)
    ;
  ASSERT_TRUE(n > 0);
  ASSERT_GE(h.pages, 2);
  ASSERT_EQ(h.finals, 1); /* not for a paged record */
  ASSERT_LE(n, 100);
  ASSERT_EQ((int)h.paged_len + n, 2000);
  ASSERT_EQ(memcmp(h.paged, long_rec, h.paged_len), 0);
  ASSERT_EQ(rd(&x, "\r\n", buf, sizeof(buf)), 4); /* finalize strips again */
  ASSERT_STR_EQ(buf, "next");
  ASSERT_EQ(h.finals, 2);
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), x.live0);
}

static void t_padding(void)
{
  fx x;

  ASSERT_EQ(fx_open(&x), 0);
  x.mtc.gb_padding = 32;
  fake_feeds(&x.f, "pad\r\n");
  ASSERT_EQ(tryread_until(x.e, &x.need, &x.mtc, "\r\n"), 5);
  /* The padding is the caller's: fill it all (ASan catches an overflow). */
  memset(x.mtc.gb_donebuffer + 6, '#', 32);
  ASSERT_EQ(memcmp(x.mtc.gb_donebuffer, "pad\r\n", 6), 0);
  ec_free(MEMTYPE_MESSAGE_BODY, x.mtc.gb_donebuffer);
  fx_close(&x);
}

/* ---- on the shards, over real sockets ----------------------------------------------------- */

static int sv[2] = {-1, -1};

static void start_shards(void)
{
  ec_framework_options o = unit_options(2);

  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
}

static void stop_shards(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
  for (int i = 0; i < 2; i++) {
    if (sv[i] >= 0 && fcntl(sv[i], F_GETFD) >= 0)
      close(sv[i]);
    sv[i] = -1;
  }
}

/* A line server in the seed's style: every record is checked against the expected
 * sequence; EAGAIN returns needmask; anything else closes and frees the construct. */
struct lines {
  minimal_tryread_construct mtc;
  int max;      /* max_region_size */
  int records;  /* records seen (atomic) */
  int bad;      /* records that were not the expected line (atomic) */
  int closed;   /* 1 once the callback closed (atomic) */
  int last_len; /* the result that ended it */
  int last_errno;
  int dispatches;
};

static void expected_line(char *buf, size_t len, int i)
{
  snprintf(buf, len, "%05d pipelined request line\r\n", i);
}

static int lines_cb(Event *event, int eventtype, void *closure, struct timeval *now)
{
  struct lines *self = closure;
  int needmask = 0, len;
  char want[64];

  self->dispatches++;
  self->mtc.max_region_size = self->max;
  for (;;) {
    len = tryread_until(event, &needmask, &self->mtc, TRYREAD_UNTIL_CRLF);
    if (len == -1 && errno == EAGAIN)
      return needmask;
    if (len <= 0)
      break;
    expected_line(want, sizeof(want), ld(&self->records));
    if (len != (int)strlen(want) || strcmp(self->mtc.gb_donebuffer, want) != 0)
      add_rel(&self->bad, 1);
    ec_free(MEMTYPE_MESSAGE_BODY, self->mtc.gb_donebuffer);
    add_rel(&self->records, 1);
  }
  self->last_len = len;
  self->last_errno = errno;
  minimal_tryread_construct_free(&self->mtc);
  event_close(event);
  st_rel(&self->closed, 1);
  return 0;
}

/* 1,000 pipelined lines written at once over a tiny-buffered TCP connection: 1,000
 * records, in order; then EOF closes cleanly. */
static void t_pipelined_over_tcp(void)
{
  struct lines L = {0};
  int64_t live0 = unit_live(MEMTYPE_MESSAGE_BODY);
  size_t total = 0;
  char *all = malloc(1000 * 40);
  char line[64];

  ASSERT_NOT_NULL(all);
  start_shards();
  ASSERT_EQ(tcp_pair(sv, 4096), 0);
  for (int i = 0; i < 1000; i++) {
    expected_line(line, sizeof(line), i);
    memcpy(all + total, line, strlen(line));
    total += strlen(line);
  }
  schedule_event(build_fd_event(sv[0], E_READ, 0, lines_cb, &L));
  ASSERT_EQ(peer_write(sv[1], all, total), 0);
  ASSERT_TRUE(unit_wait_ge(&L.records, 1000, 10000));
  shutdown(sv[1], SHUT_WR);
  ASSERT_TRUE(unit_wait_ge(&L.closed, 1, 5000));
  ASSERT_EQ(ld(&L.records), 1000);
  ASSERT_EQ(ld(&L.bad), 0);
  ASSERT_EQ(L.last_len, 0); /* EOF on a record boundary */
  ASSERT_EQ(L.last_errno, 0);
  ASSERT_TRUE(peer_sees_eof(sv[1], 5000));
  sv[0] = -1; /* closed by the callback */
  stop_shards();
  free(all);
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), live0);
}

/* A record over the limit fails cleanly with E2BIG; the server closes and frees; nothing
 * leaks, and the peer sees the close while it is still sending. */
static void t_over_limit_over_socket(void)
{
  struct lines L = {.max = 4096};
  int64_t live0 = unit_live(MEMTYPE_MESSAGE_BODY);
  char junk[8192];

  start_shards();
  ASSERT_EQ(unix_pair(sv, 4096), 0);
  schedule_event(build_fd_event(sv[0], E_READ, 0, lines_cb, &L));
  memset(junk, 'j', sizeof(junk));
  for (int i = 0; i < 4 && !ld(&L.closed); i++)
    if (peer_write(sv[1], junk, sizeof(junk)) < 0)
      break; /* the server closed: EPIPE */
  ASSERT_TRUE(unit_wait_ge(&L.closed, 1, 5000));
  ASSERT_EQ(L.last_len, -1);
  ASSERT_EQ(L.last_errno, E2BIG);
  ASSERT_EQ(ld(&L.records), 0);
  ASSERT_TRUE(peer_sees_eof(sv[1], 5000));
  sv[0] = -1;
  stop_shards();
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), live0);
}

/* The seed's line reader, a partial line when the peer goes away: EPIPE, no leak. */
static void t_partial_line_at_eof(void)
{
  struct lines L = {0};
  int64_t live0 = unit_live(MEMTYPE_MESSAGE_BODY);
  char line[64];

  start_shards();
  ASSERT_EQ(unix_pair(sv, 4096), 0);
  schedule_event(build_fd_event(sv[0], E_READ, 0, lines_cb, &L));
  expected_line(line, sizeof(line), 0);
  ASSERT_EQ(peer_write(sv[1], line, strlen(line)), 0);
  ASSERT_EQ(peer_write(sv[1], "00001 half a li", 15), 0);
  ASSERT_TRUE(unit_wait_ge(&L.records, 1, 5000));
  shutdown(sv[1], SHUT_WR);
  ASSERT_TRUE(unit_wait_ge(&L.closed, 1, 5000));
  ASSERT_EQ(L.last_len, -1);
  ASSERT_EQ(L.last_errno, EPIPE);
  ASSERT_EQ(ld(&L.records), 1);
  sv[0] = -1;
  stop_shards();
  ASSERT_EQ(unit_live(MEMTYPE_MESSAGE_BODY), live0);
}

static const unit_test tests[] = {
    UNIT_TEST(t_line_in_pieces),
    UNIT_TEST(t_record_ownership),
    UNIT_TEST(t_delimiter_straddles),
    UNIT_TEST(t_delimiter_near_misses),
    UNIT_TEST(t_pipelined_from_memory),
    UNIT_TEST(t_thousand_lines_one_segment),
    UNIT_TEST(t_switch_delimiters),
    UNIT_TEST(t_limit_skips_record),
    UNIT_TEST(t_limit_per_record),
    UNIT_TEST(t_default_limit),
    UNIT_TEST(t_eof),
    UNIT_TEST(t_errors_and_needmask),
    UNIT_TEST(t_discard_read_ahead),
    UNIT_TEST(t_counted_records),
    UNIT_TEST(t_big_record),
    UNIT_TEST(t_hooks),
    UNIT_TEST(t_padding),
    UNIT_TEST(t_pipelined_over_tcp),
    UNIT_TEST(t_over_limit_over_socket),
    UNIT_TEST(t_partial_line_at_eof),
    {NULL, NULL},
};

UNIT_MAIN("growbuf", tests)
