/*
 * shard/clock.c - the monotonic clock a shard reads when it builds or moves a timer.
 *
 * A "from now" deadline counts from a fresh clock read at build time (DESIGN 15), and a
 * timer must never fire early, so every timer built or moved on a shard reads the clock.
 * clock_gettime(CLOCK_MONOTONIC) costs 26 ns on this kind of VM (kvm-clock), and its
 * ordered TSC read (lfence; rdtsc) also stops the CPU from overlapping the cache misses of
 * the work around it: re-arming a random one of a million pending timers took 510 ns with
 * it and 180 to 230 ns without (docs/architecture.md 6.1 has the command). With an invariant TSC, a
 * shard instead extrapolates from the (TSC, CLOCK_MONOTONIC) pair it samples at every iteration:
 *
 *     now <= mono_base + (rdtsc() - tsc_base) * mult + CLOCK_SLACK_NS
 *
 * mult is the rate measured over the shard's own iterations plus 1/512 (about 2000 ppm,
 * four times the largest NTP slew of the monotonic clock, 500 ppm), so the estimate errs
 * late: a deadline computed from it is never early, and late by at most 0.2% of the time
 * since the iteration's sample plus the slack. The rate is measured between iteration
 * samples at least 5 ms (then 1 s) apart, and only between samples whose monotonic read
 * took less than 1/2048 of the interval, in TSC ticks (otherwise an interrupt between the
 * two reads could skew it): that error, 488 ppm at most, and the NTP slew together stay
 * under the margin. The base pair reads the TSC first, fenced, then the monotonic clock,
 * so the base errs late too (clock_base reads again a pair that a preemption split). The
 * TSC read at build time is not ordered (that is the point): it may execute some cycles
 * before the instructions that precede it and so read a little early, and after a
 * migration the other CPU's TSC may lag a little; the slack (1 us) covers both.
 *
 * The kernel clock is read instead (one call; the pair it yields becomes the new base)
 * until the rate is measured (after the first 5 ms of iterations), when the TSC went
 * backwards or more than 1 ms passed since the base (a long callback, or a migration to a
 * CPU whose TSC lags), and always when the CPU's TSC is not invariant (no constant_tsc and
 * nonstop_tsc), when the kernel does not use it for its own clock, off x86-64, or with
 * event_loop.timer_clock = "kernel".
 */
#include "framework/internal.h"
#include "shard/shard.h"

#include <stdio.h>
#include <string.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

#define CLOCK_SLACK_NS     1000u
#define CLOCK_LIMIT_NS     1000000u    /* beyond this since the base: the kernel clock */
#define CLOCK_FIRST_CAL_NS 5000000u    /* first rate measurement after 5 ms */
#define CLOCK_CAL_NS       1000000000u /* then every second */
#define CLOCK_BASE_GAP_NS  5000u       /* a base pair read further apart is read again */

#if HAVE_TSC
static uint64_t tsc_ordered(void)
{
  uint64_t t;

  _mm_lfence();
  t = __rdtsc();
  _mm_lfence();
  return t;
}

/* Whether `flag` is a whole word of /proc/cpuinfo's first "flags" line. */
static int cpu_flag(const char *flags, const char *flag)
{
  size_t n = strlen(flag);

  for (const char *p = strstr(flags, flag); p != NULL; p = strstr(p + 1, flag))
    if (p[-1] == ' ' && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0'))
      return 1;
  return 0;
}

static int tsc_invariant(void)
{
  static const char *const clocksources[] = {"tsc", "kvm-clock", "hyperv_clocksource_tsc_page"};
  char line[4096], cs[64] = "";
  FILE *f = fopen("/proc/cpuinfo", "r");
  int ok = 0;

  if (f == NULL)
    return 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, "flags", 5) == 0) {
      ok = cpu_flag(line, "constant_tsc") && cpu_flag(line, "nonstop_tsc");
      break;
    }
  }
  fclose(f);
  f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
  if (f == NULL)
    return 0;
  if (fgets(cs, sizeof(cs), f) == NULL)
    cs[0] = '\0';
  fclose(f);
  cs[strcspn(cs, "\n")] = '\0';
  for (size_t i = 0; ok && i < sizeof(clocksources) / sizeof(*clocksources); i++)
    if (strcmp(cs, clocksources[i]) == 0)
      return 1;
  return 0;
}
#endif

int shard__clock_mode(const char *setting)
{
#if HAVE_TSC
  if (strcmp(setting, "kernel") == 0)
    return 0;
  if (tsc_invariant())
    return 1;
  if (strcmp(setting, "tsc") == 0)
    ec_debug_printf(DWARNING, EC_LOG_SHARD,
                    "event_loop.timer_clock = \"tsc\": this CPU's TSC is not invariant, or "
                    "the kernel does not trust it; timers read the kernel clock");
#else
  if (strcmp(setting, "tsc") == 0)
    ec_debug_printf(DWARNING, EC_LOG_SHARD,
                    "event_loop.timer_clock = \"tsc\": not on this architecture; timers read "
                    "the kernel clock");
#endif
  return 0;
}

#if HAVE_TSC
/*
 * Takes a new base pair: the TSC first, then the monotonic clock, so that the base errs
 * late. A pair whose reads a preemption or an interrupt split would err late by all of it,
 * and so would every extrapolation from it until the next base (timers then fire that much
 * late): once the rate is known, a pair read more than 5 us apart is read again, twice at
 * most (then the last one stands). *gap: how long the monotonic read took, in ticks.
 */
static void clock_base(shard *s, uint64_t *gap)
{
  uint64_t t, m, g;

  for (int i = 0;; i++) {
    t = tsc_ordered();
    m = fw__mono_ns();
    g = tsc_ordered() - t;
    if (s->tsc_mult == 0 || g <= s->tsc_limit / (CLOCK_LIMIT_NS / CLOCK_BASE_GAP_NS) || i == 2)
      break;
  }
  s->tsc_base = t;
  s->tsc_mono = m;
  *gap = g;
}
#endif

uint64_t shard__clock_sample(shard *s)
{
#if HAVE_TSC
  if (s->tsc_on) {
    uint64_t t, m, gap, ticks;
    unsigned __int128 q;

    clock_base(s, &gap);
    t = s->tsc_base;
    m = s->tsc_mono;
    if (s->cal_mono != 0 && t > s->cal_tsc &&
        m - s->cal_mono < (s->tsc_mult ? CLOCK_CAL_NS : CLOCK_FIRST_CAL_NS))
      return m; /* the usual case: no measurement due */
    /* `gap`, how long the monotonic read took: an interrupt in between would skew the
     * rate, so a measurement whose two ends took more than 1/2048 of it in all (488 ppm)
     * waits for a later end. */
    ticks = t - s->cal_tsc;
    if (s->cal_mono != 0 && t > s->cal_tsc) {
      if (s->cal_gap + gap > ticks / 2048)
        return m; /* try again later: a longer interval dilutes the gaps */
      /* ns per tick in 32.32 fixed point, plus 1/512 (file comment); sane rates only,
       * 0.01 to 100 ns per tick (100 GHz to 10 MHz). */
      q = ((unsigned __int128)(m - s->cal_mono) << 32) / ticks;
      if (q >= (1ull << 32) / 100 && q <= (unsigned __int128)(1ull << 32) * 100) {
        s->tsc_mult = (uint64_t)q + (uint64_t)(q >> 9);
        s->tsc_limit = ((uint64_t)CLOCK_LIMIT_NS << 32) / s->tsc_mult;
      }
    }
    s->cal_mono = m;
    s->cal_tsc = t;
    s->cal_gap = gap;
    return m;
  }
#endif
  (void)s;
  return fw__mono_ns();
}

uint64_t shard__clock_now(shard *s)
{
#if HAVE_TSC
  if (s->tsc_mult != 0) {
    uint64_t d = __rdtsc() - s->tsc_base, gap;

    if (d <= s->tsc_limit) /* a TSC behind the base wraps to a huge d */
      return s->tsc_mono + ((d * s->tsc_mult) >> 32) + CLOCK_SLACK_NS;
    clock_base(s, &gap);
    return s->tsc_mono;
  }
#endif
  (void)s;
  return fw__mono_ns();
}
