/*
 * samples/load/hist.c - the log-linear latency histogram of ecshard-load (hist.h).
 */
#include "hist.h"

#include <string.h>

void hist_init(hist *h)
{
  memset(h, 0, sizeof(*h));
  h->min = UINT64_MAX;
}

unsigned hist_index(uint64_t v)
{
  unsigned msb, shift, i;

  if (v < (uint64_t)2 * HIST_HALF)
    return (unsigned)v;
  msb = 63u - (unsigned)__builtin_clzll(v);
  shift = msb - (HIST_SUB_BITS - 1);              /* v >> shift is in [64, 128) */
  i = shift * HIST_HALF + (unsigned)(v >> shift); /* continuous with 0..127 */
  return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

uint64_t hist_bucket_high(unsigned i)
{
  unsigned shift;
  uint64_t sub;

  if (i < 2 * HIST_HALF)
    return i;
  shift = i / HIST_HALF - 1;
  sub = i - shift * HIST_HALF;
  return ((sub + 1) << shift) - 1;
}

void hist_record(hist *h, uint64_t v)
{
  h->counts[hist_index(v)]++;
  h->total++;
  h->sum += (double)v;
  if (v > h->max)
    h->max = v;
  if (v < h->min)
    h->min = v;
}

void hist_merge(hist *dst, const hist *src)
{
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    dst->counts[i] += src->counts[i];
  dst->total += src->total;
  dst->sum += src->sum;
  if (src->max > dst->max)
    dst->max = src->max;
  if (src->min < dst->min)
    dst->min = src->min;
}

uint64_t hist_percentile(const hist *h, double p)
{
  uint64_t want, seen = 0;

  if (h->total == 0)
    return 0;
  if (p >= 100.0)
    return h->max;
  want = (uint64_t)(p / 100.0 * (double)h->total + 0.5);
  if (want == 0)
    want = 1;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= want) {
      uint64_t hi = hist_bucket_high(i);

      return hi < h->max ? hi : h->max;
    }
  }
  return h->max;
}

double hist_mean(const hist *h)
{
  return h->total ? h->sum / (double)h->total : 0.0;
}
