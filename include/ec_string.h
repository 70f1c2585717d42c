/*
 * ec_string.h - Momentum's growable byte string (`string`), backed by a memtype.
 *
 * A string owns `buffer` (capacity `allocd`, contents `len` bytes, always NUL-terminated
 * when allocd > len) unless its type says otherwise: a positive `type` is the memtype the
 * buffer is allocated from; STRING_TYPE_STATIC wraps a caller's fixed buffer that never
 * grows; STRING_TYPE_GROWABLE_STATIC starts on a caller's buffer and moves to
 * STRING_TYPE_ECSTRING memory when it must grow. A string is not thread-safe: one thread
 * at a time (it may be handed over, as the seed's URL fetcher does with a pool job).
 */
#ifndef EC_STRING_H
#define EC_STRING_H

#include "ec_config.h"
#include "ec_malloc.h"

typedef struct io_object io_object; /* disk-backed and I/O-object strings: not supported */

typedef struct _ec_string {
  int len;      /* bytes of content */
  int allocd;   /* capacity of buffer */
  char *buffer; /* content, NUL-terminated */
  int type;     /* memtype (> 0) or STRING_TYPE_* (< 0) */
  io_object *backing;
} string;

#define STRING_TYPE_MALLOC          MEMTYPE_IS_MALLOC_3C
#define STRING_TYPE_ECSTRING        MEMTYPE_STRING
#define STRING_TYPE_MESSAGE_BODY    MEMTYPE_MESSAGE_BODY
#define STRING_TYPE_STATIC          -100
#define STRING_TYPE_DISK_BACKED     -101 /* not supported: string_init_type fails */
#define STRING_TYPE_IO_OBJECT       -102 /* not supported: string_init_type fails */
#define STRING_TYPE_GROWBUF         -103 /* not supported: string_init_type fails */
#define STRING_TYPE_GROWABLE_STATIC -104

/*
 * Sets up `str` with `size` bytes of capacity (counting the NUL; must be > 0) of `type`, a
 * memtype (STRING_TYPE_ECSTRING, _MALLOC, _MESSAGE_BODY or a registered variable-size
 * one). For STRING_TYPE_STATIC and STRING_TYPE_GROWABLE_STATIC use string_init_static.
 * Returns 1 on success, 0 on failure: errno EINVAL (bad size or type), ENOTSUP
 * (STRING_TYPE_DISK_BACKED, _IO_OBJECT, _GROWBUF), ENOMEM. Any thread.
 */
EC_API int string_init_type(string *str, size_t size, int type);

/* Wraps a caller's buffer of `size` bytes (type STRING_TYPE_STATIC or
 * STRING_TYPE_GROWABLE_STATIC), empty. 1 or 0. */
EC_API int string_init_static(string *str, char *buf, size_t size, int type);

/* Releases what string_init_type (or growth) allocated; the caller's buffer of a static
 * string is left alone. The string is empty afterwards (buffer NULL) and grows again on
 * the next append. Returns 1 (0 with errno EINVAL for NULL). */
EC_API int string_destroy(string *str);

/* Appends formatted text; returns `str`, or NULL if it could not grow (str unchanged). */
EC_API string *stringprintf(string *str, const char *format, ...) EC_PRINTF_LIKE(2, 3);

/* Appends `iolen` raw bytes; returns iolen, or -1 (errno ENOMEM / ENOSPC for a full
 * static string) with str unchanged. */
EC_API ssize_t stringwrite2(string *str, const char *iobuf, size_t iolen);

/* Makes room for at least `extra` more bytes (plus the NUL). 0 or -ENOMEM / -ENOSPC. */
EC_API int ec_string_reserve(string *str, size_t extra);

/* asprintf into MEMTYPE_GENERIC memory (free with ec_free(MEMTYPE_GENERIC, ...)). Returns
 * the length, or -1. */
EC_API int ec_asprintf(char **strp, const char *fmt, ...) EC_PRINTF_LIKE(2, 3);

#endif /* EC_STRING_H */
