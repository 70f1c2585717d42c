/*
 * samples/load/hist.h - a small HdrHistogram-style latency histogram (log-linear buckets).
 *
 * Values are nanoseconds. Below 128 every value has its own bucket; above, each power of
 * two is split into 64 equal buckets, so a bucket is at most 1/64 (1.6%) of its values
 * wide. 2,304 buckets cover up to 2^41 ns (about 36 minutes); larger values land in the
 * last bucket. The maximum and the sum are kept exactly. Percentiles report the highest
 * value of the bucket the percentile falls in (as HdrHistogram's "highest equivalent
 * value"), so they never understate a latency by more than the bucket width.
 *
 * Debian 12 packages HdrHistogram only for Java and Go, so this is the C side of it.
 */
#ifndef ECSHARD_LOAD_HIST_H
#define ECSHARD_LOAD_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7 /* 128 linear buckets, then 64 per power of two */
#define HIST_HALF     (1u << (HIST_SUB_BITS - 1))
#define HIST_BUCKETS  (HIST_HALF * 36)

typedef struct hist {
  uint64_t counts[HIST_BUCKETS];
  uint64_t total;
  uint64_t max;
  uint64_t min;
  double sum;
} hist;

void hist_init(hist *h);
void hist_record(hist *h, uint64_t v);
void hist_merge(hist *dst, const hist *src);
/* Value at percentile p (0..100): the upper bound of its bucket, capped at the max. */
uint64_t hist_percentile(const hist *h, double p);
double hist_mean(const hist *h);
/* Bucket index of v and the highest value that maps to bucket i (tests). */
unsigned hist_index(uint64_t v);
uint64_t hist_bucket_high(unsigned i);

#endif
