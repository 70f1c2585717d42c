/*
 * ec_growbuf.h - reading records (lines, dot-terminated bodies, fixed-size blocks) from an
 * Event: Momentum's tryread construct and its read-ahead buffer.
 *
 * A minimal_tryread_construct belongs to one connection for its whole life: it holds the
 * bytes read beyond the record last returned (read-ahead), so a pipelining client's next
 * records come out of memory without another read. Start from a zeroed struct (calloc, or
 * memset 0) and release it with minimal_tryread_construct_free. Reads go through the
 * Event's I/O operations (event_read), so a TLS Event works unchanged. One thread at a
 * time: the Event's owner shard.
 *
 * Record size: a record, delimiter included, may be at most max_region_size bytes (0: the
 * process default, ec_tryread_default_limit, 1 MiB unless changed). A longer record fails
 * with E2BIG; or, when page_out_hook is set, streams through the hook instead.
 */
#ifndef EC_GROWBUF_H
#define EC_GROWBUF_H

#include "ec_config.h"
#include "ec_malloc.h"
#include "event.h"

/* Delimiters for tryread_until (any non-empty string works). */
#define TRYREAD_UNTIL_CRLF        "\r\n"
#define TRYREAD_UNTIL_CRLFDOTCRLF "\r\n.\r\n"

/* The process-wide default of max_region_size (see ec_tryread_default_limit). */
#define EC_TRYREAD_DEFAULT_LIMIT (1024 * 1024)

/*
 * The read-ahead buffer of a tryread construct: bytes data[start .. end) are received and
 * not returned yet. `data` is MEMTYPE_MESSAGE_BODY memory of `size` bytes, or NULL: an idle
 * construct (nothing buffered) holds no memory. Read-only for applications.
 */
typedef struct _grow_buf {
  char *data;
  int size;
  int start;
  int end;
} grow_buf;

typedef struct _minimal_tryread_construct minimal_tryread_construct;

/* Private part of a tryread construct. Do not touch. */
struct ec_tryread_priv {
  int scan;     /* data index where a delimiter may still start (earlier bytes searched) */
  int paged;    /* bytes of the current record handed to page_out_hook */
  int skipping; /* discarding the rest of a record that exceeded the limit */
  int dlen;     /* the delimiter `scan` is valid for (0: none) */
  char delim[16];
};

/*
 * Momentum's public fields, then `_priv`.
 *
 *   gb_buffer        the read-ahead buffer (read-only)
 *   gb_donesize      after a successful call: length of the record in gb_donebuffer
 *   gb_donebuffer    after a successful call: the record, delimiter included,
 *                    NUL-terminated; the caller owns it: ec_free(MEMTYPE_MESSAGE_BODY, p).
 *                    Every call sets it (NULL on failure); the construct never frees it.
 *   gb_padding       extra bytes allocated after the NUL of gb_donebuffer (room for the
 *                    caller to extend the record in place); 0 = none
 *   max_region_size  the record limit in bytes; 0 = the process default
 *   match_hook       called as soon as a record is complete, before gb_donebuffer is
 *                    made: gb_donesize is set, gb_donebuffer is NULL
 *   finalize_hook    called after gb_donebuffer is made, before the call returns; it may
 *                    change gb_donebuffer/gb_donesize (the call returns gb_donesize).
 *                    Not called for a record that was partly paged out
 *   page_out_hook    if set, a record longer than max_region_size is not an error: the
 *                    bytes beyond the limit are passed to the hook, in order, as they
 *                    arrive, and gb_donebuffer holds only the record's last bytes (at most
 *                    max_region_size, the delimiter included)
 */
struct _minimal_tryread_construct {
  grow_buf gb_buffer;
  int gb_donesize;
  char *gb_donebuffer;
  int gb_padding;
  int max_region_size;
  void (*match_hook)(minimal_tryread_construct *mtc, void *match_closure);
  void *match_closure;
  void (*finalize_hook)(minimal_tryread_construct *, void *finalize_closure);
  void *finalize_closure;
  void (*page_out_hook)(minimal_tryread_construct *mtc, void *page_out_closure, const char *buf,
                        int len);
  void *page_out_closure;
  struct ec_tryread_priv _priv;
};

/*
 * Returns the next record ending with the string `until` (TRYREAD_UNTIL_CRLF, ...): from
 * the read-ahead if a complete one is buffered (no read at all then, even if the
 * descriptor would block), else reading through the Event's I/O operations until one is
 * complete or the read would block. *needmask is set on every call.
 *
 * Returns gb_donesize (> 0) with the record in gb_donebuffer, or:
 *   0   end of stream, nothing buffered (errno 0)
 *   -1  errno EAGAIN: no complete record yet; return *needmask from the callback
 *       errno E2BIG: the record exceeds max_region_size; it is dropped (the next call
 *         skips the rest of it, up to its delimiter, and returns the record after it)
 *       errno EPIPE: end of stream inside a record (its bytes stay in the read-ahead)
 *       errno EINVAL (bad arguments), ENOMEM, or the read's errno (ECONNRESET, ...)
 * Owner thread of the Event.
 */
EC_API int tryread_until(Event *event, int *needmask, minimal_tryread_construct *mtc,
                         const char *until);

/*
 * Like tryread_until for a record of exactly `len` bytes (a body of known length after a
 * header read with tryread_until). Results as tryread_until; E2BIG (nothing consumed) when
 * `len` exceeds max_region_size, EINVAL when len <= 0. Ends the skipping that follows an
 * E2BIG from tryread_until. Owner thread.
 */
EC_API int ec_tryread_bytes(Event *event, int *needmask, minimal_tryread_construct *mtc, int len);

/*
 * Releases the read-ahead buffer and resets the construct's progress; the settings
 * (max_region_size, gb_padding, hooks) stay, so it can be used again. gb_donebuffer is set
 * to NULL but not freed: it belongs to the caller. NULL is ignored. Any thread.
 */
EC_API void minimal_tryread_construct_free(minimal_tryread_construct *mtc);

/*
 * Drops the read-ahead (and ends skipping after E2BIG); returns the number of bytes
 * dropped. After a STARTTLS upgrade no plaintext read before it may be used: call this
 * once the STARTTLS command was read. Owner thread.
 */
EC_API size_t ec_tryread_discard(minimal_tryread_construct *mtc);

/* Bytes buffered and not returned yet (0 for NULL). */
EC_API size_t ec_tryread_pending(const minimal_tryread_construct *mtc);

/*
 * Sets the process-wide default record limit used where max_region_size is 0, if
 * `bytes` > 0; returns the default in effect before the call (so 0 just reads it). Any
 * thread.
 */
EC_API int ec_tryread_default_limit(int bytes);

#endif /* EC_GROWBUF_H */
