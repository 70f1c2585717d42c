/*
 * test/fuzz/fuzz_tryread.c - libFuzzer target for the record reader (tryread_until and
 * ec_tryread_bytes, framework/growbuf.c): the splitting every line protocol (SMTP
 * commands and DATA, HTTP headers) relies on, fed through a real socketpair.
 *
 * Input layout: byte 0 picks the delimiter (CRLF, CRLF.CRLF, LF, or a fixed-size read),
 * byte 1 the record limit (1..256 bytes, so E2BIG paths run), byte 2 the chunk size the
 * bytes are written in (1..64, so records straddle reads); the rest is the stream. The
 * records returned, plus the bytes dropped as over-limit, must account for the stream:
 * every record ends with its delimiter (its first occurrence), is NUL-terminated, and none
 * exceeds the limit.
 */
#include "ec_growbuf.h"
#include "event.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int noop(Event *e, int type, void *closure, struct timeval *now)
{
  return 0;
}

static const char *const delims[] = {TRYREAD_UNTIL_CRLF, TRYREAD_UNTIL_CRLFDOTCRLF, "\n", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  minimal_tryread_construct mtc;
  const char *delim;
  size_t chunk, off = 3, got = 0;
  int sv[2], limit, need, closed = 0;
  Event *e;

  if (size < 3 || size > 65536)
    return 0;
  delim = delims[data[0] % 4];
  limit = 1 + data[1];
  chunk = 1 + data[2] % 64;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
    return 0;
  e = build_fd_event(sv[0], E_READ, 0, noop, NULL);
  if (e == NULL)
    abort();
  memset(&mtc, 0, sizeof(mtc));
  mtc.max_region_size = limit;
  for (;;) {
    int n;

    if (off < size) {
      size_t len = size - off < chunk ? size - off : chunk;
      ssize_t w = write(sv[1], data + off, len);

      if (w > 0)
        off += (size_t)w;
    } else if (!closed) {
      shutdown(sv[1], SHUT_WR);
      closed = 1;
    }
    n = delim != NULL ? tryread_until(e, &need, &mtc, delim)
                      : ec_tryread_bytes(e, &need, &mtc, limit);
    if (n > 0) {
      if (mtc.gb_donebuffer == NULL || mtc.gb_donesize != n || mtc.gb_donebuffer[n] != '\0')
        abort();
      if (delim == NULL ? n != limit : n > limit)
        abort();
      if (delim != NULL && (n < (int)strlen(delim) || memcmp(mtc.gb_donebuffer + n - strlen(delim),
                                                             delim, strlen(delim)) != 0))
        abort();
      /* ... and it is the first one: the record holds no earlier delimiter (the search
       * must cut exactly where memmem would). */
      if (delim != NULL && memmem(mtc.gb_donebuffer, (size_t)n, delim, strlen(delim)) !=
                               mtc.gb_donebuffer + n - strlen(delim))
        abort();
      got += (size_t)n;
      ec_free(MEMTYPE_MESSAGE_BODY, mtc.gb_donebuffer);
      mtc.gb_donebuffer = NULL;
      continue;
    }
    if (n < 0 && errno == E2BIG)
      continue;
    if (n < 0 && errno == EAGAIN && !closed)
      continue;
    break; /* end of stream (0), or EAGAIN after the end: the rest is an unfinished record */
  }
  if (got > size - 3)
    abort();
  minimal_tryread_construct_free(&mtc);
  event_close(e);
  event_free(e);
  close(sv[1]);
  return 0;
}
