/*
 * test/test_string.c - Momentum's `string` (framework/string.c): memtype-backed, static
 * and growable-static strings, appends, printf, failures that leave the string intact.
 */
#include "unit.h"

#include "ec_string.h"

#include <errno.h>
#include <limits.h>

static void t_init_and_grow(void)
{
  int64_t live0 = unit_live(MEMTYPE_STRING);
  string s;

  ASSERT_EQ(string_init_type(&s, 8, STRING_TYPE_ECSTRING), 1);
  ASSERT_EQ(s.len, 0);
  ASSERT_EQ(s.allocd, 8);
  ASSERT_EQ(s.type, STRING_TYPE_ECSTRING);
  ASSERT_STR_EQ(s.buffer, "");
  ASSERT_EQ(unit_live(MEMTYPE_STRING), live0 + 1);
  for (int i = 0; i < 1000; i++)
    ASSERT_EQ(stringwrite2(&s, "0123456789", 10), 10);
  ASSERT_EQ(s.len, 10000);
  ASSERT_GT(s.allocd, s.len); /* room for the NUL */
  ASSERT_EQ(s.buffer[s.len], '\0');
  for (int i = 0; i < 1000; i++)
    ASSERT_EQ(memcmp(s.buffer + i * 10, "0123456789", 10), 0);
  ASSERT_EQ(unit_live(MEMTYPE_STRING), live0 + 1); /* grown, still one block */
  ASSERT_EQ(string_destroy(&s), 1);
  ASSERT_NULL(s.buffer);
  ASSERT_EQ(s.len, 0);
  ASSERT_EQ(unit_live(MEMTYPE_STRING), live0);
  /* A destroyed string grows again on the next append. */
  ASSERT_EQ(stringwrite2(&s, "again", 5), 5);
  ASSERT_STR_EQ(s.buffer, "again");
  string_destroy(&s);
  ASSERT_EQ(unit_live(MEMTYPE_STRING), live0);
}

/* Binary content: embedded NULs count, the length is what was written. */
static void t_binary(void)
{
  string s;

  ASSERT_EQ(string_init_type(&s, 4, STRING_TYPE_MESSAGE_BODY), 1);
  ASSERT_EQ(stringwrite2(&s, "a\0b\0c", 5), 5);
  ASSERT_EQ(stringwrite2(&s, NULL, 0), 0);
  ASSERT_EQ(s.len, 5);
  ASSERT_EQ(memcmp(s.buffer, "a\0b\0c\0", 6), 0);
  string_destroy(&s);
}

static void t_printf_appends(void)
{
  char big[5000];
  string s;

  ASSERT_EQ(string_init_type(&s, 16, STRING_TYPE_ECSTRING), 1);
  ASSERT_PTR_EQ(stringprintf(&s, "%d-%s", 250, "OK"), &s);
  ASSERT_PTR_EQ(stringprintf(&s, " %c", '!'), &s);
  ASSERT_STR_EQ(s.buffer, "250-OK !");
  ASSERT_EQ(s.len, 8);
  memset(big, 'q', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  ASSERT_PTR_EQ(stringprintf(&s, "[%s]", big), &s); /* grows */
  ASSERT_EQ(s.len, 8 + 2 + 4999);
  ASSERT_EQ(memcmp(s.buffer, "250-OK ![qqq", 12), 0);
  ASSERT_EQ(s.buffer[s.len - 1], ']');
  ASSERT_EQ(s.buffer[s.len], '\0');
  string_destroy(&s);
}

/* Plain malloc(3) strings (STRING_TYPE_MALLOC) grow with realloc(3). */
static void t_malloc_type(void)
{
  string s;

  ASSERT_EQ(string_init_type(&s, 2, STRING_TYPE_MALLOC), 1);
  for (int i = 0; i < 100; i++)
    ASSERT_NOT_NULL(stringprintf(&s, "%02d", i));
  ASSERT_EQ(s.len, 200);
  ASSERT_EQ(memcmp(s.buffer + 196, "9899", 4), 0);
  string_destroy(&s);
}

/* A static string never grows: a write that does not fit fails and changes nothing. */
static void t_static(void)
{
  char mem[8];
  string s;

  ASSERT_EQ(string_init_static(&s, mem, sizeof(mem), STRING_TYPE_STATIC), 1);
  ASSERT_EQ(stringwrite2(&s, "1234567", 7), 7); /* 7 + NUL = 8 */
  ASSERT_PTR_EQ(s.buffer, mem);
  errno = 0;
  ASSERT_EQ(stringwrite2(&s, "8", 1), -1);
  ASSERT_EQ(errno, ENOSPC);
  ASSERT_STR_EQ(s.buffer, "1234567");
  string_destroy(&s); /* does not free the caller's buffer */
  ASSERT_EQ(string_init_static(&s, mem, sizeof(mem), STRING_TYPE_STATIC), 1);
  ASSERT_NOT_NULL(stringprintf(&s, "%s", "abc"));
  errno = 0;
  ASSERT_NULL(stringprintf(&s, "%s", "defgh")); /* 3 + 5 + NUL > 8 */
  ASSERT_EQ(errno, ENOSPC);
  ASSERT_EQ(s.len, 3);
  ASSERT_STR_EQ(s.buffer, "abc"); /* the truncated attempt was undone */
  string_destroy(&s);
}

/* Growable static: starts on the caller's buffer, moves to STRING_TYPE_ECSTRING memory. */
static void t_growable_static(void)
{
  int64_t live0 = unit_live(MEMTYPE_STRING);
  char mem[8];
  string s;

  ASSERT_EQ(string_init_static(&s, mem, sizeof(mem), STRING_TYPE_GROWABLE_STATIC), 1);
  ASSERT_EQ(stringwrite2(&s, "abcdef", 6), 6);
  ASSERT_PTR_EQ(s.buffer, mem);
  ASSERT_EQ(unit_live(MEMTYPE_STRING), live0);
  ASSERT_EQ(stringwrite2(&s, "ghijkl", 6), 6);
  ASSERT_PTR_NE(s.buffer, mem);
  ASSERT_EQ(s.type, STRING_TYPE_ECSTRING);
  ASSERT_STR_EQ(s.buffer, "abcdefghijkl");
  ASSERT_STR_EQ(mem, "abcdef"); /* the caller's buffer is left as it was */
  ASSERT_EQ(unit_live(MEMTYPE_STRING), live0 + 1);
  string_destroy(&s);
  ASSERT_EQ(unit_live(MEMTYPE_STRING), live0);
}

static void t_bad_input(void)
{
  char mem[4];
  string s;

  errno = 0;
  ASSERT_EQ(string_init_type(&s, 0, STRING_TYPE_ECSTRING), 0);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(string_init_type(&s, 16, STRING_TYPE_STATIC), 0); /* needs init_static */
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(string_init_type(&s, 16, STRING_TYPE_DISK_BACKED), 0);
  ASSERT_EQ(errno, ENOTSUP);
  ASSERT_EQ(string_init_type(&s, 16, STRING_TYPE_IO_OBJECT), 0);
  ASSERT_EQ(errno, ENOTSUP);
  ASSERT_EQ(string_init_type(&s, 16, STRING_TYPE_GROWBUF), 0);
  ASSERT_EQ(errno, ENOTSUP);
  ASSERT_EQ(string_init_type(&s, 16, 0), 0);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(string_init_type(&s, (size_t)INT_MAX + 1, STRING_TYPE_ECSTRING), 0);
  ASSERT_EQ(string_init_type(NULL, 16, STRING_TYPE_ECSTRING), 0);
  ASSERT_EQ(string_init_static(&s, NULL, 4, STRING_TYPE_STATIC), 0);
  ASSERT_EQ(string_init_static(&s, mem, 4, STRING_TYPE_ECSTRING), 0);
  ASSERT_EQ(string_destroy(NULL), 0);
  ASSERT_EQ(stringwrite2(NULL, "a", 1), -1);
  ASSERT_NULL(stringprintf(NULL, "x"));
  ASSERT_EQ(ec_string_reserve(NULL, 1), -EINVAL);
}

static void t_reserve(void)
{
  string s;
  char *before;

  ASSERT_EQ(string_init_type(&s, 4, STRING_TYPE_ECSTRING), 1);
  ASSERT_EQ(ec_string_reserve(&s, 3), 0); /* fits: 0 + 3 + NUL */
  ASSERT_EQ(s.allocd, 4);
  ASSERT_EQ(ec_string_reserve(&s, 1000), 0);
  ASSERT_GE(s.allocd, 1001);
  before = s.buffer;
  ASSERT_EQ(stringwrite2(&s, "x", 1), 1);
  ASSERT_PTR_EQ(s.buffer, before); /* no move: the room was there */
  ASSERT_EQ(ec_string_reserve(&s, (size_t)INT_MAX), -ENOMEM);
  string_destroy(&s);
}

static void t_asprintf(void)
{
  int64_t live0 = unit_live(MEMTYPE_GENERIC);
  char *p = NULL;

  ASSERT_EQ(ec_asprintf(&p, "%s=%d", "answer", 42), 9);
  ASSERT_STR_EQ(p, "answer=42");
  ASSERT_EQ(unit_live(MEMTYPE_GENERIC), live0 + 1);
  ec_free(MEMTYPE_GENERIC, p);
  ASSERT_EQ(unit_live(MEMTYPE_GENERIC), live0);
  ASSERT_EQ(ec_asprintf(NULL, "x"), -1);
}

static const unit_test tests[] = {
    UNIT_TEST(t_init_and_grow),  UNIT_TEST(t_binary),
    UNIT_TEST(t_printf_appends), UNIT_TEST(t_malloc_type),
    UNIT_TEST(t_static),         UNIT_TEST(t_growable_static),
    UNIT_TEST(t_bad_input),      UNIT_TEST(t_reserve),
    UNIT_TEST(t_asprintf),       {NULL, NULL},
};

UNIT_MAIN("string", tests)
