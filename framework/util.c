/*
 * framework/util.c - small system helpers shared inside the library.
 */
#include "ec_config.h"
#include "framework/internal.h"

#include <limits.h>
#include <sched.h>

int fw__cpu_count(void)
{
  long n;

#ifdef CPU_COUNT
  cpu_set_t set;

  /* The affinity mask, not the online count: under taskset or a cgroup cpuset the
   * process may run on fewer CPUs than the machine has. Masks wider than cpu_set_t
   * (over 1024 CPUs) fail with EINVAL and fall back to the online count. */
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    n = CPU_COUNT(&set);
    if (n > 0)
      return (int)n;
  }
#endif
  n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1)
    return 1;
  return n > INT_MAX ? INT_MAX : (int)n;
}

uint64_t fw__mono_ns(void)
{
  struct timespec ts;

  /* CLOCK_MONOTONIC cannot fail with a valid pointer on any supported system. */
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
