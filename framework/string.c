/*
 * framework/string.c - Momentum's `string`: a length-counted, NUL-terminated byte buffer
 * that grows in the memtype it was made with.
 *
 * Growth is geometric (at least doubling), so a string built by many small appends costs
 * amortised O(1) per byte, and the buffer is always one byte longer than the content so
 * that `buffer` can be handed to C string functions as it is. A failed append leaves the
 * string exactly as it was: callers (the seed's URL fetcher fills one from a pool job)
 * can report the error and keep what they had.
 */
#include "ec_string.h"
#include "framework/internal.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define STRING_MIN_ALLOC 64

/* 1 for the types whose buffer comes from the memtyped allocator. */
static int heap_type(int type)
{
  return type > 0 && type < MEMTYPE_MAX;
}

int string_init_type(string *str, size_t size, int type)
{
  if (str == NULL) {
    errno = EINVAL;
    return 0;
  }
  memset(str, 0, sizeof(*str));
  str->type = type;
  if (type == STRING_TYPE_DISK_BACKED || type == STRING_TYPE_IO_OBJECT ||
      type == STRING_TYPE_GROWBUF) {
    errno = ENOTSUP;
    return 0;
  }
  /* STATIC and GROWABLE_STATIC need the caller's buffer: string_init_static. */
  if (!heap_type(type) || size == 0) {
    errno = EINVAL;
    return 0;
  }
  if (size > INT_MAX) {
    errno = ENOMEM;
    return 0;
  }
  str->buffer = ec_malloc_size(type, size);
  if (str->buffer == NULL)
    return 0; /* errno from the allocator: ENOMEM, or EINVAL for an unknown memtype */
  str->buffer[0] = '\0';
  str->allocd = (int)size;
  return 1;
}

int string_init_static(string *str, char *buf, size_t size, int type)
{
  if (str == NULL) {
    errno = EINVAL;
    return 0;
  }
  memset(str, 0, sizeof(*str));
  str->type = type;
  if ((type != STRING_TYPE_STATIC && type != STRING_TYPE_GROWABLE_STATIC) || buf == NULL ||
      size == 0 || size > INT_MAX) {
    errno = EINVAL;
    return 0;
  }
  str->buffer = buf;
  str->buffer[0] = '\0';
  str->allocd = (int)size;
  return 1;
}

int string_destroy(string *str)
{
  if (str == NULL) {
    errno = EINVAL;
    return 0;
  }
  if (heap_type(str->type) && str->buffer != NULL)
    ec_free(str->type, str->buffer);
  str->buffer = NULL;
  str->len = 0;
  str->allocd = 0;
  str->backing = NULL;
  return 1;
}

int ec_string_reserve(string *str, size_t extra)
{
  size_t need, cap;
  char *p;

  if (str == NULL || str->len < 0 || str->allocd < 0 || str->len > str->allocd)
    return -EINVAL;
  if (extra > (size_t)INT_MAX - 1 - (size_t)str->len)
    return -ENOMEM;
  need = (size_t)str->len + extra + 1;
  if (need <= (size_t)str->allocd && str->buffer != NULL)
    return 0;
  if (str->type == STRING_TYPE_STATIC)
    return -ENOSPC;
  if (!heap_type(str->type) && str->type != STRING_TYPE_GROWABLE_STATIC)
    return -EINVAL;
  cap = str->allocd > 0 ? (size_t)str->allocd * 2 : STRING_MIN_ALLOC;
  if (cap < need)
    cap = need;
  if (cap > INT_MAX)
    cap = INT_MAX;
  if (str->type == STRING_TYPE_GROWABLE_STATIC) {
    /* Leave the caller's buffer for memory of our own; it stays the caller's. */
    p = ec_malloc_size(STRING_TYPE_ECSTRING, cap);
    if (p == NULL)
      return -ENOMEM;
    if (str->buffer != NULL)
      memcpy(p, str->buffer, (size_t)str->len);
    p[str->len] = '\0';
    str->type = STRING_TYPE_ECSTRING;
  } else {
    /* A fixed-size memtype cannot be resized: ec_realloc refuses, that is ENOMEM here. */
    p = ec_realloc(str->type, str->buffer, cap);
    if (p == NULL)
      return -ENOMEM;
    if (str->buffer == NULL)
      p[0] = '\0';
  }
  str->buffer = p;
  str->allocd = (int)cap;
  return 0;
}

ssize_t stringwrite2(string *str, const char *iobuf, size_t iolen)
{
  int rc;

  if (str == NULL || (iobuf == NULL && iolen > 0)) {
    errno = EINVAL;
    return -1;
  }
  if (iolen == 0)
    return 0;
  rc = ec_string_reserve(str, iolen);
  if (rc < 0) {
    errno = -rc;
    return -1;
  }
  memcpy(str->buffer + str->len, iobuf, iolen);
  str->len += (int)iolen;
  str->buffer[str->len] = '\0';
  return (ssize_t)iolen;
}

string *stringprintf(string *str, const char *format, ...)
{
  va_list ap;
  size_t room;
  int n, rc;

  if (str == NULL || format == NULL || str->len < 0 || str->len > str->allocd) {
    errno = EINVAL;
    return NULL;
  }
  /* Format straight into the free space first: most appends fit, and then the text is
   * formatted once. */
  room = str->buffer != NULL ? (size_t)(str->allocd - str->len) : 0;
  va_start(ap, format);
  n = vsnprintf(room ? str->buffer + str->len : NULL, room, format, ap);
  va_end(ap);
  if (n < 0) {
    if (room)
      str->buffer[str->len] = '\0';
    errno = EINVAL;
    return NULL;
  }
  if ((size_t)n < room) {
    str->len += n;
    return str;
  }
  if (room)
    str->buffer[str->len] = '\0'; /* undo the truncated attempt */
  rc = ec_string_reserve(str, (size_t)n);
  if (rc < 0) {
    errno = -rc;
    return NULL;
  }
  va_start(ap, format);
  vsnprintf(str->buffer + str->len, (size_t)n + 1, format, ap);
  va_end(ap);
  str->len += n;
  return str;
}

int ec_asprintf(char **strp, const char *fmt, ...)
{
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = fw__mt_vasprintf(MEMTYPE_GENERIC, strp, fmt, ap);
  va_end(ap);
  return n;
}
