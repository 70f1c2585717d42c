/*
 * framework/growbuf.c - tryread_until and friends: records out of a byte stream, with the
 * bytes read beyond a record kept for the next call.
 *
 * The read-ahead buffer (grow_buf) is one contiguous block with a consumed prefix, not
 * Momentum's chain of growbuf_size chunks: a record has to end up contiguous in
 * gb_donebuffer anyway, a delimiter search over one block is a single pass, and
 * geometric growth keeps appends amortised O(1). Three things keep it cheap:
 *
 * - When nothing is buffered (the usual state between requests of a non-pipelining
 *   client), the read goes into a stack buffer; a record found there is copied straight
 *   into gb_donebuffer and only bytes beyond it are kept. So an idle connection holds no
 *   read buffer, and a one-record-per-read protocol allocates only the record.
 * - Searching resumes where the last search stopped (minus the delimiter's length - 1, in
 *   case a delimiter straddles two reads), so a long record arriving in many small
 *   segments is scanned once, not once per segment.
 * - A large record that fills most of the block and starts at its beginning is handed to
 *   the caller as it is (shrunk with ec_realloc) instead of being copied.
 */
#include "ec_growbuf.h"

#include "framework/atomic.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

/* Bytes asked for per read: Momentum's default growbuf_size. */
#define GB_CHUNK 16384
/* Hand a record's block over instead of copying it from this size on. */
#define GB_HANDOVER_MIN 4096

static int default_limit = EC_TRYREAD_DEFAULT_LIMIT;

int ec_tryread_default_limit(int bytes)
{
  /* A plain setting read on every call: relaxed is enough, no other data depends on it. */
  if (bytes > 0)
    return __atomic_exchange_n(&default_limit, bytes, __ATOMIC_RELAXED);
  return ec__load(&default_limit);
}

static int limit_of(const minimal_tryread_construct *mtc)
{
  return mtc->max_region_size > 0 ? mtc->max_region_size : ec__load(&default_limit);
}

/* ---- the read-ahead buffer ---------------------------------------------------------------- */

static int gb_len(const grow_buf *gb)
{
  return gb->end - gb->start;
}

static void gb_release(minimal_tryread_construct *mtc)
{
  ec_free(MEMTYPE_MESSAGE_BODY, mtc->gb_buffer.data);
  memset(&mtc->gb_buffer, 0, sizeof(mtc->gb_buffer));
  mtc->_priv.scan = 0;
}

/* Marks n buffered bytes as used; an emptied buffer is released (idle = no memory). */
static void gb_consume(minimal_tryread_construct *mtc, int n)
{
  grow_buf *gb = &mtc->gb_buffer;

  gb->start += n;
  if (gb->start >= gb->end) {
    gb_release(mtc);
    return;
  }
  if (mtc->_priv.scan < gb->start)
    mtc->_priv.scan = gb->start;
}

/*
 * Makes room for `want` more bytes after `end`: first by moving the unconsumed bytes to
 * the front, then by growing (doubling, or to exactly what is needed when `exact`).
 * 0 or -ENOMEM (buffer unchanged).
 */
static int gb_make_room(minimal_tryread_construct *mtc, int want, int exact)
{
  grow_buf *gb = &mtc->gb_buffer;
  size_t need, cap;
  char *p;

  if (gb->size - gb->end >= want)
    return 0;
  if (gb->start > 0) {
    memmove(gb->data, gb->data + gb->start, (size_t)gb_len(gb));
    mtc->_priv.scan -= gb->start;
    if (mtc->_priv.scan < 0)
      mtc->_priv.scan = 0;
    gb->end -= gb->start;
    gb->start = 0;
    if (gb->size - gb->end >= want)
      return 0;
  }
  need = (size_t)gb->end + (size_t)want;
  if (need > INT_MAX)
    return -ENOMEM;
  cap = exact ? need : (size_t)gb->size * 2;
  if (cap < need)
    cap = need;
  if (cap > INT_MAX)
    cap = need;
  p = ec_realloc(MEMTYPE_MESSAGE_BODY, gb->data, cap);
  if (p == NULL)
    return -ENOMEM;
  gb->data = p;
  gb->size = (int)cap;
  return 0;
}

static int gb_append(minimal_tryread_construct *mtc, const char *p, int n)
{
  grow_buf *gb = &mtc->gb_buffer;

  if (n <= 0)
    return 0;
  if (gb_make_room(mtc, n, 0) < 0)
    return -ENOMEM;
  memcpy(gb->data + gb->end, p, (size_t)n);
  gb->end += n;
  return 0;
}

/* ---- records ------------------------------------------------------------------------------ */

static size_t padding_of(const minimal_tryread_construct *mtc)
{
  return mtc->gb_padding > 0 ? (size_t)mtc->gb_padding : 0;
}

/* The record is complete: gb_donesize is set and match_hook runs before it is copied. */
static void call_match_hook(minimal_tryread_construct *mtc, int len)
{
  mtc->gb_donesize = len;
  mtc->gb_donebuffer = NULL;
  if (mtc->match_hook != NULL)
    mtc->match_hook(mtc, mtc->match_closure);
}

/* A copy of the record p[0 .. len) for gb_donebuffer (NUL and padding room included), or
 * NULL with errno ENOMEM. */
static char *record_copy(minimal_tryread_construct *mtc, const char *p, int len)
{
  char *rec = ec_malloc_size(MEMTYPE_MESSAGE_BODY, (size_t)len + 1 + padding_of(mtc));

  if (rec == NULL) {
    mtc->gb_donesize = 0;
    errno = ENOMEM;
    return NULL;
  }
  memcpy(rec, p, (size_t)len);
  return rec;
}

/* Publishes the record (the read-ahead is already past it), runs finalize_hook and returns
 * the call's result. */
static int finish_record(minimal_tryread_construct *mtc, int *needmask, char *rec, int len)
{
  int paged = mtc->_priv.paged;

  mtc->_priv.paged = 0;
  mtc->gb_donebuffer = rec;
  mtc->gb_donesize = len;
  rec[len] = '\0';
  if (mtc->finalize_hook != NULL && paged == 0)
    mtc->finalize_hook(mtc, mtc->finalize_closure);
  *needmask = E_READ;
  errno = 0;
  return mtc->gb_donesize;
}

/* The record is the first `len` buffered bytes. */
static int deliver_buffered(minimal_tryread_construct *mtc, int *needmask, int len)
{
  grow_buf *gb = &mtc->gb_buffer;
  int rest = gb_len(gb) - len;
  char *rec, *tail = NULL;

  call_match_hook(mtc, len);
  if (gb->start != 0 || len < GB_HANDOVER_MIN || (size_t)len * 2 < (size_t)gb->size) {
    rec = record_copy(mtc, gb->data + gb->start, len);
    if (rec == NULL)
      return -1;
    gb_consume(mtc, len);
    return finish_record(mtc, needmask, rec, len);
  }
  /* A big record at the front of the block: give the block away, keep only what follows. */
  if (rest > 0) {
    tail = ec_malloc_size(MEMTYPE_MESSAGE_BODY, (size_t)rest);
    if (tail == NULL)
      goto nomem;
    memcpy(tail, gb->data + len, (size_t)rest);
  }
  rec = ec_realloc(MEMTYPE_MESSAGE_BODY, gb->data, (size_t)len + 1 + padding_of(mtc));
  if (rec == NULL) {
    ec_free(MEMTYPE_MESSAGE_BODY, tail);
    goto nomem;
  }
  gb->data = tail;
  gb->size = rest;
  gb->start = 0;
  gb->end = rest;
  mtc->_priv.scan = 0;
  return finish_record(mtc, needmask, rec, len);
nomem:
  mtc->gb_donesize = 0;
  errno = ENOMEM;
  return -1;
}

/* The delimiter the search position was computed for; another one starts over. */
static void use_delimiter(minimal_tryread_construct *mtc, const char *until, int dlen)
{
  struct ec_tryread_priv *pv = &mtc->_priv;

  if (pv->dlen == dlen && dlen <= (int)sizeof(pv->delim) && memcmp(pv->delim, until, dlen) == 0)
    return;
  pv->scan = mtc->gb_buffer.start;
  pv->dlen = 0;
  if (dlen <= (int)sizeof(pv->delim)) {
    memcpy(pv->delim, until, (size_t)dlen);
    pv->dlen = dlen;
  }
}

/*
 * memmem for the short delimiters protocols use ("\r\n", "\r\n.\r\n", "\r\n\r\n"): memchr
 * for the delimiter's last byte, then a compare of the bytes before it. glibc's memmem
 * walks a needle of 3 or more bytes through a hash one byte at a time, about 8
 * instructions per byte (callgrind: 3.5k of an SMTP message's 14k, for a 1 KiB body);
 * memchr skips 32 bytes per step, and a delimiter's last byte is rare in text.
 */
static const char *find_delim(const char *h, size_t n, const char *d, size_t dl)
{
  const char *p, *end = h + n;

  if (dl == 0 || n < dl)
    return dl == 0 ? h : NULL;
  for (p = h + dl - 1; p < end && (p = memchr(p, d[dl - 1], (size_t)(end - p))) != NULL; p++) {
    const char *s = p - (dl - 1);

    if (*s == *d && memcmp(s, d, dl - 1) == 0) /* the first byte mostly decides, inline */
      return s;
  }
  return NULL;
}

/*
 * Looks for a record in the buffered bytes and applies the limit. Returns a record's
 * length (delivered), -1 with errno (E2BIG, ENOMEM), or 0: read more.
 */
static int scan_buffer(minimal_tryread_construct *mtc, int *needmask, const char *until, int dlen,
                       int limit)
{
  grow_buf *gb = &mtc->gb_buffer;
  struct ec_tryread_priv *pv = &mtc->_priv;
  int keep = dlen - 1; /* a delimiter may have started in these last bytes */

  while (gb_len(gb) > 0) {
    int from = pv->scan > gb->start ? pv->scan : gb->start;
    const char *p = find_delim(gb->data + from, (size_t)(gb->end - from), until, (size_t)dlen);
    int len, out;

    if (p == NULL)
      break;
    len = (int)(p - (gb->data + gb->start)) + dlen;
    if (pv->skipping) {
      /* The end of a record already refused with E2BIG: drop it, look for the next. */
      pv->skipping = 0;
      gb_consume(mtc, len);
      continue;
    }
    if (len > limit && mtc->page_out_hook != NULL) {
      out = len - (limit > dlen ? limit : dlen);
      if (out > 0) {
        mtc->page_out_hook(mtc, mtc->page_out_closure, gb->data + gb->start, out);
        pv->paged += out;
        gb_consume(mtc, out);
        len -= out;
      }
    } else if (len > limit) {
      gb_consume(mtc, len);
      errno = E2BIG;
      return -1;
    }
    return deliver_buffered(mtc, needmask, len);
  }
  if (gb_len(gb) == 0)
    return 0;
  pv->scan = gb->end - keep > gb->start ? gb->end - keep : gb->start;
  if (pv->skipping) {
    if (gb_len(gb) > keep)
      gb_consume(mtc, gb_len(gb) - keep);
    return 0;
  }
  if (gb_len(gb) < limit || gb_len(gb) <= keep)
    return 0;
  /* No delimiter in `limit` bytes: the record can only be longer than the limit. */
  if (mtc->page_out_hook != NULL) {
    int out = gb_len(gb) - keep;

    mtc->page_out_hook(mtc, mtc->page_out_closure, gb->data + gb->start, out);
    pv->paged += out;
    gb_consume(mtc, out);
    return 0;
  }
  gb_consume(mtc, gb_len(gb) - keep);
  pv->skipping = 1;
  errno = E2BIG;
  return -1;
}

/* A read returned n <= 0: EAGAIN and errors pass through; EOF is 0 only on a record
 * boundary. */
static int read_ended(minimal_tryread_construct *mtc, int n)
{
  if (n < 0)
    return -1;
  if (gb_len(&mtc->gb_buffer) > 0 || mtc->_priv.skipping || mtc->_priv.paged > 0) {
    errno = EPIPE;
    return -1;
  }
  errno = 0;
  return 0;
}

/* 0 if the arguments are usable; else -1 with errno EINVAL. */
static int check_args(Event *event, int *needmask, minimal_tryread_construct *mtc)
{
  if (needmask != NULL)
    *needmask = E_READ;
  if (mtc != NULL) {
    mtc->gb_donebuffer = NULL;
    mtc->gb_donesize = 0;
  }
  if (event == NULL || needmask == NULL || mtc == NULL) {
    errno = EINVAL;
    return -1;
  }
  return 0;
}

int tryread_until(Event *event, int *needmask, minimal_tryread_construct *mtc, const char *until)
{
  grow_buf *gb;
  size_t dl;
  int dlen, limit, n, rc;

  if (check_args(event, needmask, mtc) < 0)
    return -1;
  dl = until != NULL ? strlen(until) : 0;
  if (dl == 0 || dl > GB_CHUNK) {
    errno = EINVAL;
    return -1;
  }
  dlen = (int)dl;
  gb = &mtc->gb_buffer;
  limit = limit_of(mtc);
  use_delimiter(mtc, until, dlen);
  for (;;) {
    rc = scan_buffer(mtc, needmask, until, dlen, limit);
    if (rc != 0)
      return rc;
    if (gb_len(gb) == 0) {
      /* Nothing buffered: read into the stack, keep only what a record leaves over. */
      char chunk[GB_CHUNK];

      n = (event_read)(event, chunk, (int)sizeof(chunk), needmask);
      if (n <= 0)
        return read_ended(mtc, n);
      /* Skipping and paging are scan_buffer's business: leave the bytes to it. */
      int plain = !mtc->_priv.skipping && mtc->_priv.paged == 0;
      const char *p = plain ? find_delim(chunk, (size_t)n, until, dl) : NULL;

      if (p != NULL && p + dlen - chunk <= limit) {
        int len = (int)(p - chunk) + dlen;
        char *rec;

        call_match_hook(mtc, len);
        rec = record_copy(mtc, chunk, len);
        if (rec == NULL)
          return -1;
        if (gb_append(mtc, chunk + len, n - len) < 0) {
          ec_free(MEMTYPE_MESSAGE_BODY, rec);
          mtc->gb_donesize = 0;
          errno = ENOMEM;
          return -1;
        }
        return finish_record(mtc, needmask, rec, len);
      }
      if (gb_append(mtc, chunk, n) < 0) {
        errno = ENOMEM;
        return -1;
      }
      /* Searched already, unless a record was found over the limit or the search was left
       * to scan_buffer: then it starts from the beginning. */
      mtc->_priv.scan = !plain || p != NULL || n < dlen ? 0 : n - (dlen - 1);
      continue;
    }
    if (gb_make_room(mtc, GB_CHUNK / 2, 0) < 0) {
      errno = ENOMEM;
      return -1;
    }
    n = (event_read)(event, gb->data + gb->end, gb->size - gb->end, needmask);
    if (n <= 0)
      return read_ended(mtc, n);
    gb->end += n;
  }
}

int ec_tryread_bytes(Event *event, int *needmask, minimal_tryread_construct *mtc, int len)
{
  grow_buf *gb;
  int n;

  if (check_args(event, needmask, mtc) < 0)
    return -1;
  if (len <= 0) {
    errno = EINVAL;
    return -1;
  }
  if (len > limit_of(mtc)) {
    errno = E2BIG;
    return -1;
  }
  gb = &mtc->gb_buffer;
  /* Counted reading starts where the caller says a record starts: whatever tryread_until
   * was in the middle of (skipping, paging out) is over, and its search position too. */
  mtc->_priv.skipping = 0;
  mtc->_priv.paged = 0;
  mtc->_priv.dlen = 0;
  while (gb_len(gb) < len) {
    /* Exactly the room the record needs, so that it can be handed over without a copy. */
    if (gb_make_room(mtc, len - gb_len(gb), 1) < 0) {
      errno = ENOMEM;
      return -1;
    }
    n = (event_read)(event, gb->data + gb->end, gb->size - gb->end, needmask);
    if (n <= 0)
      return read_ended(mtc, n);
    gb->end += n;
  }
  return deliver_buffered(mtc, needmask, len);
}

void minimal_tryread_construct_free(minimal_tryread_construct *mtc)
{
  if (mtc == NULL)
    return;
  gb_release(mtc);
  memset(&mtc->_priv, 0, sizeof(mtc->_priv));
  mtc->gb_donebuffer = NULL;
  mtc->gb_donesize = 0;
}

size_t ec_tryread_discard(minimal_tryread_construct *mtc)
{
  size_t n;

  if (mtc == NULL)
    return 0;
  n = (size_t)gb_len(&mtc->gb_buffer);
  gb_release(mtc);
  memset(&mtc->_priv, 0, sizeof(mtc->_priv));
  return n;
}

size_t ec_tryread_pending(const minimal_tryread_construct *mtc)
{
  return mtc != NULL ? (size_t)gb_len(&mtc->gb_buffer) : 0;
}
