/*
 * test/test_load_hist.c - ecshard-load's latency histogram (samples/load/hist.c): bucket
 * bounds, percentiles within the promised 1/64 precision, exact max, merging.
 */
#include "unit.h"

#include "samples/load/hist.c"

static hist h, h2;

/* Every value lands in a bucket whose upper bound is >= the value and at most 1/64 above
 * it; indexes never go down as values go up. */
static void t_buckets(void)
{
  unsigned last = 0;

  for (uint64_t v = 0; v < 300000; v++) {
    unsigned i = hist_index(v);
    uint64_t hi = hist_bucket_high(i);

    ASSERT_GE(i, last);
    ASSERT_UEQ(hi >= v, 1);
    ASSERT_UEQ(hi - v <= v / 64, 1);
    last = i;
  }
  for (uint64_t v = 1; v < (UINT64_C(1) << 41); v = v * 3 + 7) {
    unsigned i = hist_index(v);

    ASSERT_LT(i, HIST_BUCKETS);
    ASSERT_UEQ(hist_bucket_high(i) >= v, 1);
    ASSERT_UEQ(hist_bucket_high(i) - v <= v / 64, 1);
  }
  /* beyond the range: the last bucket */
  ASSERT_EQ(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
}

static void t_percentiles(void)
{
  hist_init(&h);
  ASSERT_UEQ(hist_percentile(&h, 50), 0); /* empty */
  for (uint64_t v = 1; v <= 100000; v++)
    hist_record(&h, v * 1000); /* 1 us .. 100 ms */
  ASSERT_UEQ(h.total, 100000);
  ASSERT_UEQ(h.max, 100000000);
  ASSERT_UEQ(h.min, 1000);
  ASSERT_UEQ(hist_percentile(&h, 100), 100000000);
  {
    static const double ps[] = {1, 50, 90, 99, 99.9};

    for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
      uint64_t want = (uint64_t)(ps[k] * 1000.0) * 1000; /* the exact percentile */
      uint64_t got = hist_percentile(&h, ps[k]);

      ASSERT_UEQ(got >= want, 1);
      ASSERT_UEQ(got - want <= want / 64 + 1000, 1);
    }
  }
  ASSERT_UEQ((uint64_t)hist_mean(&h), 50000500);
}

static void t_merge(void)
{
  hist_init(&h);
  hist_init(&h2);
  for (uint64_t v = 0; v < 5000; v++)
    hist_record(v % 2 ? &h : &h2, v * v);
  hist_merge(&h, &h2);
  ASSERT_UEQ(h.total, 5000);
  ASSERT_UEQ(h.max, 4999 * 4999);
  ASSERT_UEQ(h.min, 0);
  hist_init(&h2);
  for (uint64_t v = 0; v < 5000; v++)
    hist_record(&h2, v * v);
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    ASSERT_UEQ(h.counts[i], h2.counts[i]);
}

static const unit_test tests[] = {
    UNIT_TEST(t_buckets), UNIT_TEST(t_percentiles), UNIT_TEST(t_merge), {NULL, NULL}};
UNIT_MAIN("load_hist", tests)
