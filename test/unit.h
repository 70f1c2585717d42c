/*
 * test/unit.h - the CUnit harness every suite uses.
 *
 * A suite file defines its tests and ends with
 *
 *   static const unit_test tests[] = { UNIT_TEST(t_foo), UNIT_TEST(t_bar), {NULL, NULL} };
 *   UNIT_MAIN("suite name", tests)
 *
 * which builds a main() that registers the suite and runs it with CUnit's basic
 * interface. Arguments: `--set key=value` (repeatable) adds configuration overrides that
 * unit_options() passes to ec_framework_init (ctest runs shard suites once per poller
 * backend this way), and a test name runs only that test.
 *
 * The ASSERT_* macros print both sides on failure and return from the test.
 */
#ifndef EC_TEST_UNIT_H
#define EC_TEST_UNIT_H

#include "ec_framework.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct unit_test {
  const char *name;
  void (*fn)(void);
} unit_test;

/* clang-format off */
#define UNIT_TEST(fn) {#fn, fn}
/* clang-format on */

#define UNIT_MAX_SET 16
extern const char *unit_set[UNIT_MAX_SET + 1];

/* Framework options for a test: `shards` shards plus the command line's --set overrides. */
static inline ec_framework_options unit_options(int shards)
{
  ec_framework_options o;

  memset(&o, 0, sizeof(o));
  o.shards = shards;
  o.set = unit_set;
  return o;
}

/* Multiplier for iteration counts: ECSHARD_TEST_SCALE (percent, default 100). Sanitizer
 * builds run the same tests with smaller counts. */
static inline long unit_scale(long n)
{
  const char *s = getenv("ECSHARD_TEST_SCALE");
  long pct = s ? strtol(s, NULL, 10) : 100;

  if (pct <= 0)
    pct = 100;
  n = n * pct / 100;
  return n > 0 ? n : 1;
}

/* Waits up to `ms` milliseconds for *v (read atomically) to reach at least `want`.
 * Returns 1 if it did. A bounded wait for a result, not a timing assertion. */
static inline int unit_wait_ge(const int *v, int want, int ms)
{
  for (int i = 0; i < ms; i++) {
    if (__atomic_load_n(v, __ATOMIC_ACQUIRE) >= want)
      return 1;
    usleep(1000);
  }
  return __atomic_load_n(v, __ATOMIC_ACQUIRE) >= want;
}

/* A TCP port on 127.0.0.1 that the kernel just handed out (bind to port 0, then close),
 * for tests that configure a listener: never a fixed port. -1 on failure. */
int unit_free_port(void);

/* Live objects of a memtype, summed over threads. */
static inline int64_t unit_live(int memtype)
{
  ec_memtype_stats st;

  return ec_memtype_stats_get(memtype, &st) == 0 ? st.live_objects : -1;
}

#define UNIT_FAIL_(msg)                                                                            \
  do {                                                                                             \
    CU_assertImplementation(CU_FALSE, __LINE__, (msg), __FILE__, "", CU_FALSE);                    \
    return;                                                                                        \
  } while (0)

#define ASSERT_BASE_(a, op, b, type, fmt)                                                          \
  do {                                                                                             \
    type a_ = (type)(a);                                                                           \
    type b_ = (type)(b);                                                                           \
    if (!(a_ op b_)) {                                                                             \
      char m_[512];                                                                                \
      snprintf(m_, sizeof(m_), "%s %s %s: " fmt " vs " fmt, #a, #op, #b, a_, b_);                  \
      UNIT_FAIL_(m_);                                                                              \
    }                                                                                              \
    CU_PASS(#a #op #b);                                                                            \
  } while (0)

#define ASSERT_EQ(a, b)     ASSERT_BASE_(a, ==, b, int64_t, "%" PRId64)
#define ASSERT_NE(a, b)     ASSERT_BASE_(a, !=, b, int64_t, "%" PRId64)
#define ASSERT_LT(a, b)     ASSERT_BASE_(a, <, b, int64_t, "%" PRId64)
#define ASSERT_LE(a, b)     ASSERT_BASE_(a, <=, b, int64_t, "%" PRId64)
#define ASSERT_GT(a, b)     ASSERT_BASE_(a, >, b, int64_t, "%" PRId64)
#define ASSERT_GE(a, b)     ASSERT_BASE_(a, >=, b, int64_t, "%" PRId64)
#define ASSERT_UEQ(a, b)    ASSERT_BASE_(a, ==, b, uint64_t, "%" PRIu64)
#define ASSERT_PTR_EQ(a, b) ASSERT_BASE_(a, ==, b, const void *, "%p")
#define ASSERT_PTR_NE(a, b) ASSERT_BASE_(a, !=, b, const void *, "%p")
#define ASSERT_NULL(a)      ASSERT_PTR_EQ(a, NULL)
#define ASSERT_NOT_NULL(a)  ASSERT_PTR_NE(a, NULL)
#define ASSERT_TRUE(c)                                                                             \
  do {                                                                                             \
    if (!(c))                                                                                      \
      UNIT_FAIL_("expected true: " #c);                                                            \
    CU_PASS(#c);                                                                                   \
  } while (0)
#define ASSERT_STR_EQ(a, b)                                                                        \
  do {                                                                                             \
    const char *a_ = (a), *b_ = (b);                                                               \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                         \
      char m_[512];                                                                                \
      snprintf(m_, sizeof(m_), "%s == %s: \"%s\" vs \"%s\"", #a, #b, a_ ? a_ : "(null)",           \
               b_ ? b_ : "(null)");                                                                \
      UNIT_FAIL_(m_);                                                                              \
    }                                                                                              \
    CU_PASS(#a "==" #b);                                                                           \
  } while (0)

int unit_main(int argc, char **argv, const char *suite, const unit_test *tests);

#define UNIT_MAIN(suite, tests)                                                                    \
  int main(int argc, char **argv)                                                                  \
  {                                                                                                \
    return unit_main(argc, argv, (suite), (tests));                                                \
  }

#endif /* EC_TEST_UNIT_H */
