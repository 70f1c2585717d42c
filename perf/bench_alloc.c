/*
 * perf/bench_alloc.c - the allocator under ecshard: ec_malloc/ec_free (memtyped, over
 * jemalloc) next to jemalloc called directly (mallocx/sdallocx) and glibc's malloc/free.
 *
 *   bench_alloc --impl ec|ec-vsize|jemalloc|glibc --pattern single|cross [--size B]
 *               [--ops N] [--batch K] [--json]
 *
 * single: one thread allocates K objects, frees them in reverse order, and repeats (the
 *         pattern of per-request scratch memory).
 * cross:  one thread allocates, a second one frees what the first hands it through a
 *         single-producer ring (the pattern of a message posted to another shard, whose
 *         consumer frees it: shard__post / shard__mailbox_drain).
 *
 * Every object is touched (one store at allocation, one load before the free), as a real
 * user would. `ns_per_op` is wall time per allocation+free pair; `cpu_ns_per_op` is the
 * process CPU time per pair (both threads in cross mode).
 *
 * In a process linked with ecshard, the malloc symbol is jemalloc's (libjemalloc replaces
 * it), so "glibc" calls glibc's own entry points (__libc_malloc, __libc_free) to measure
 * the C library's allocator.
 */
#include "perf/bench_common.h"

#include "ec_framework.h"
#include "ec_malloc.h"

#include <jemalloc/jemalloc.h>
#include <sched.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *ptr);

enum impl { IMPL_EC, IMPL_EC_VSIZE, IMPL_JE, IMPL_GLIBC };

static enum impl impl;
static size_t objsize = 64;
static int memtype = -1;

static inline void *do_alloc(void)
{
  switch (impl) {
  case IMPL_EC:
    return ec_malloc(memtype);
  case IMPL_EC_VSIZE:
    return ec_malloc_size(MEMTYPE_GENERIC, objsize);
  case IMPL_JE:
    return mallocx(objsize, 0);
  default:
    return __libc_malloc(objsize);
  }
}

static inline void do_free(void *p)
{
  switch (impl) {
  case IMPL_EC:
    ec_free(memtype, p);
    break;
  case IMPL_EC_VSIZE:
    ec_free(MEMTYPE_GENERIC, p);
    break;
  case IMPL_JE:
    sdallocx(p, objsize, 0);
    break;
  default:
    __libc_free(p);
    break;
  }
}

#define RING 4096

static struct {
  _Alignas(64) atomic_ulong head; /* written by the producer */
  _Alignas(64) atomic_ulong tail; /* written by the consumer */
  _Alignas(64) void *slot[RING];
} ring;
static long total_ops;
static atomic_ulong bad;

static void *consumer(void *arg)
{
  unsigned long t = 0;
  int spins = 0;

  (void)arg;
  while ((long)t < total_ops) {
    unsigned long h = atomic_load_explicit(&ring.head, memory_order_acquire);

    if (h == t) {
      if (++spins > 64)
        sched_yield();
      continue;
    }
    spins = 0;
    while (t < h) {
      unsigned char *p = ring.slot[t % RING];

      if (p[0] != (unsigned char)t)
        atomic_fetch_add(&bad, 1);
      do_free(p);
      t++;
    }
    atomic_store_explicit(&ring.tail, t, memory_order_release);
  }
  return NULL;
}

static long run_cross(void)
{
  pthread_t th;
  unsigned long h = 0;
  long failed = 0;

  if (pthread_create(&th, NULL, consumer, NULL) != 0) {
    perror("pthread_create");
    exit(1);
  }
  while ((long)h < total_ops) {
    unsigned long t = atomic_load_explicit(&ring.tail, memory_order_acquire);
    unsigned long room = RING - (h - t), n = 0;

    if (room == 0) {
      sched_yield();
      continue;
    }
    for (; n < room && (long)(h + n) < total_ops; n++) {
      unsigned char *p = do_alloc();

      if (p == NULL) {
        failed++;
        break;
      }
      p[0] = (unsigned char)(h + n);
      ring.slot[(h + n) % RING] = p;
    }
    h += n;
    atomic_store_explicit(&ring.head, h, memory_order_release);
    if (failed)
      break;
  }
  if (failed) {
    /* let the consumer finish what was handed over, then stop it */
    total_ops = (long)h;
  }
  pthread_join(th, NULL);
  return failed;
}

static long run_single(long batch)
{
  void **v = calloc((size_t)batch, sizeof(void *));
  long failed = 0;

  if (v == NULL)
    exit(1);
  for (long done = 0; done < total_ops; done += batch) {
    long k = batch < total_ops - done ? batch : total_ops - done;

    for (long i = 0; i < k; i++) {
      unsigned char *p = do_alloc();

      if (p == NULL) {
        failed++;
        k = i;
        break;
      }
      p[0] = (unsigned char)i;
      v[i] = p;
    }
    for (long i = k - 1; i >= 0; i--) {
      if (((unsigned char *)v[i])[0] != (unsigned char)i)
        atomic_fetch_add(&bad, 1);
      do_free(v[i]);
    }
    if (failed)
      break;
  }
  free(v);
  return failed;
}

int main(int argc, char **argv)
{
  const char *impl_name = "ec", *pattern = "single";
  long batch = 64, failed;
  int json = 0;
  uint64_t t0, t1, c0, c1;
  static const char *const names[] = {"ec", "ec-vsize", "jemalloc", "glibc"};
  const char *usage_extra = "  --impl ec|ec-vsize|jemalloc|glibc --pattern single|cross "
                            "[--size B] [--ops N] [--batch K] [--json]\n";

  total_ops = 2000000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(a, "--json") == 0) {
      json = 1;
      continue;
    }
    if (strcmp(a, "--impl") == 0 && v)
      impl_name = v;
    else if (strcmp(a, "--pattern") == 0 && v)
      pattern = v;
    else if (strcmp(a, "--size") == 0)
      objsize = (size_t)bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--ops") == 0)
      total_ops = bench_parse_long(argv[0], a, v, 1);
    else if (strcmp(a, "--batch") == 0)
      batch = bench_parse_long(argv[0], a, v, 1);
    else
      bench_usage(argv[0], usage_extra);
    i++;
  }
  impl = IMPL_GLIBC + 1;
  for (int k = 0; k < 4; k++)
    if (strcmp(impl_name, names[k]) == 0)
      impl = (enum impl)k;
  if ((int)impl > IMPL_GLIBC || (strcmp(pattern, "single") != 0 && strcmp(pattern, "cross") != 0))
    bench_usage(argv[0], usage_extra);

  {
    ec_framework_options fo = {.config_text = "log = { level = \"warning\"; };\n", .shards = 1};
    mem_type_def def = {"bench:object", objsize, 0, 0, EC_ALLOCATOR_FIXED, 0};
    int rc = ec_framework_init(&fo);

    if (rc < 0) {
      fprintf(stderr, "bench_alloc: ec_framework_init: %s\n", strerror(-rc));
      return 1;
    }
    memtype = ec_memtype_register(&def);
    if (memtype == MEMTYPE_REGISTER_FAILED) {
      fprintf(stderr, "bench_alloc: cannot register a memtype of %zu bytes\n", objsize);
      return 1;
    }
  }

  /* warm up: the allocator's caches and the pages, as a long-running server has them */
  {
    long keep = total_ops;

    total_ops = total_ops / 10 + 1;
    run_single(batch);
    total_ops = keep;
  }
  c0 = bench_cpu_ns();
  t0 = bench_now_ns();
  failed = strcmp(pattern, "cross") == 0 ? run_cross() : run_single(batch);
  t1 = bench_now_ns();
  c1 = bench_cpu_ns();
  ec_framework_join();

  BENCH_PRINT(json, BF_S("bench", "alloc"), BF_S("impl", names[impl]), BF_S("pattern", pattern),
              BF_U("size", objsize), BF_U("ops", total_ops), BF_U("batch", batch),
              BF_D("ops_per_s", (double)total_ops * 1e9 / (double)(t1 - t0)),
              BF_D("ns_per_op", (double)(t1 - t0) / (double)total_ops),
              BF_D("cpu_ns_per_op", (double)(c1 - c0) / (double)total_ops),
              BF_U("alloc_failures", failed), BF_U("corrupt", atomic_load(&bad)),
              BF_B("ok", failed == 0 && atomic_load(&bad) == 0));
  return failed == 0 && atomic_load(&bad) == 0 ? 0 : 1;
}
