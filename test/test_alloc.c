/*
 * test/test_alloc.c - the memtyped allocator (framework/alloc.c).
 *
 * The logger is not started here, so the allocator's complaints are written synchronously
 * to stderr; tests that check them capture fd 2 into a temporary file.
 */
#include "unit.h"

#include "ec_log.h"
#include "ec_malloc.h"
#include "event.h"
#include "framework/internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>

/* ---- helpers ------------------------------------------------------------------------- */

typedef struct capture {
  int saved;
  int fd;
} capture;

/* Redirects fd 2 into an unlinked temporary file. */
static int capture_begin(capture *c)
{
  char path[] = "/tmp/ecshard-test-alloc-XXXXXX";

  c->fd = mkstemp(path);
  if (c->fd < 0)
    return -1;
  unlink(path);
  fflush(stderr);
  c->saved = dup(STDERR_FILENO);
  dup2(c->fd, STDERR_FILENO);
  return 0;
}

/* Restores fd 2 and returns what was written meanwhile (malloc'd, NUL-terminated). */
static char *capture_end(capture *c)
{
  off_t len;
  char *buf;
  ssize_t n;

  fflush(stderr);
  dup2(c->saved, STDERR_FILENO);
  close(c->saved);
  len = lseek(c->fd, 0, SEEK_END);
  buf = malloc((size_t)len + 1);
  n = buf ? pread(c->fd, buf, (size_t)len, 0) : -1;
  close(c->fd);
  if (buf == NULL)
    return NULL;
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

static ec_memtype_stats stats_of(int id)
{
  ec_memtype_stats st;

  memset(&st, 0, sizeof(st));
  if (ec_memtype_stats_get(id, &st) != 0)
    st.live_objects = -1;
  return st;
}

static int register_type(const char *name, size_t size, size_t aligned, int kind, int zero)
{
  mem_type_def d = {name, size, aligned, 0, kind, zero};

  return ec_memtype_register(&d);
}

/* ---- tests --------------------------------------------------------------------------- */

/* Fixed-size built-ins: one object of the documented size, counted and released. */
static void t_fixed_types(void)
{
  static const struct {
    int id;
    size_t size;
    const char *name;
  } fixed[] = {
      {MEMTYPE_EVENT, sizeof(Event), "core:event"},
      {MEMTYPE_SMALL_BUF, 1024, "core:small_buf"},
      {MEMTYPE_MEDIUM_BUF, 16384, "core:medium_buf"},
      {MEMTYPE_SHARD_MSG, 4032, "core:shard_msg"},
  };

  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
    ec_memtype_stats before = stats_of(fixed[i].id), during, after;
    void *p = ec_malloc(fixed[i].id);

    ASSERT_NOT_NULL(p);
    ASSERT_EQ((uintptr_t)p % 16, 0);
    /* The whole object is usable (ASan would flag an overflow). */
    memset(p, 0x11, fixed[i].size);
    during = stats_of(fixed[i].id);
    ASSERT_STR_EQ(during.name, fixed[i].name);
    ASSERT_EQ(during.allocator_type, EC_ALLOCATOR_FIXED);
    ASSERT_UEQ(during.size, fixed[i].size);
    ASSERT_EQ(during.live_objects, before.live_objects + 1);
    ASSERT_EQ(during.live_bytes, before.live_bytes + (int64_t)fixed[i].size);
    ASSERT_UEQ(during.total_allocs, before.total_allocs + 1);
    ASSERT_GE(during.peak_objects, during.live_objects);
    ec_free(fixed[i].id, p);
    after = stats_of(fixed[i].id);
    ASSERT_EQ(after.live_objects, before.live_objects);
    ASSERT_EQ(after.live_bytes, before.live_bytes);
    ASSERT_UEQ(after.total_allocs, before.total_allocs + 1);
  }
}

/* Variable-size types: ec_malloc_size works, ec_malloc refuses; unregistered ids fail. */
static void t_vsize_and_invalid_types(void)
{
  static const int bad_ids[] = {-1, 2, 12, 100, MEMTYPE_FIRST_DYNAMIC + 300, MEMTYPE_MAX, 1 << 20};
  ec_memtype_stats before = stats_of(MEMTYPE_GENERIC), during;
  ec_memtype_stats st;
  capture cap;
  char *p, *z, *out;

  p = ec_malloc_size(MEMTYPE_GENERIC, 100);
  ASSERT_NOT_NULL(p);
  memset(p, 0x22, 100);
  z = ec_malloc_size(MEMTYPE_GENERIC, 0);
  ASSERT_NOT_NULL(z);
  during = stats_of(MEMTYPE_GENERIC);
  ASSERT_EQ(during.allocator_type, EC_ALLOCATOR_VSIZE);
  ASSERT_UEQ(during.size, 0);
  ASSERT_EQ(during.live_objects, before.live_objects + 2);
  ASSERT_EQ(during.live_bytes, before.live_bytes + 100);
  ec_free(MEMTYPE_GENERIC, p);
  ec_free(MEMTYPE_GENERIC, z);
  ec_free(MEMTYPE_GENERIC, NULL);
  ASSERT_EQ(stats_of(MEMTYPE_GENERIC).live_objects, before.live_objects);

  /* Any registered type takes ec_malloc_size, fixed ones included. */
  p = ec_malloc_size(MEMTYPE_SMALL_BUF, 10);
  ASSERT_NOT_NULL(p);
  ec_free(MEMTYPE_SMALL_BUF, p);

  ASSERT_EQ(capture_begin(&cap), 0);
  errno = 0;
  p = ec_malloc(MEMTYPE_GENERIC);
  out = capture_end(&cap);
  ASSERT_NULL(p);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_NOT_NULL(out);
  ASSERT_TRUE(strstr(out, "ec_malloc: memtype 'core:generic' (1) is variable-size") != NULL);
  free(out);

  for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
    ASSERT_EQ(capture_begin(&cap), 0);
    errno = 0;
    p = ec_malloc_size(bad_ids[i], 8);
    out = capture_end(&cap);
    ASSERT_NULL(p);
    ASSERT_EQ(errno, EINVAL);
    ASSERT_NOT_NULL(out);
    ASSERT_TRUE(strstr(out, "is not registered") != NULL);
    free(out);
    ASSERT_EQ(capture_begin(&cap), 0);
    errno = 0;
    p = ec_malloc(bad_ids[i]);
    out = capture_end(&cap);
    ASSERT_NULL(p);
    ASSERT_EQ(errno, EINVAL);
    ASSERT_NOT_NULL(out);
    ASSERT_TRUE(strstr(out, "ec_malloc: memtype") != NULL);
    free(out);
    ASSERT_EQ(ec_memtype_stats_get(bad_ids[i], &st), -EINVAL);
  }
  ASSERT_EQ(ec_memtype_stats_get(MEMTYPE_GENERIC, NULL), -EINVAL);
}

/* realloc keeps content when growing and shrinking, refuses fixed and foreign types. */
static void t_realloc(void)
{
  ec_memtype_stats before = stats_of(MEMTYPE_STRING);
  char *p = ec_realloc(MEMTYPE_STRING, NULL, 10), *q;
  Event *e;
  capture cap;
  char *out;

  ASSERT_NOT_NULL(p);
  memcpy(p, "0123456789", 10);
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_bytes, before.live_bytes + 10);
  p = ec_realloc(MEMTYPE_STRING, p, 100000);
  ASSERT_NOT_NULL(p);
  ASSERT_EQ(memcmp(p, "0123456789", 10), 0);
  memset(p + 10, 'x', 100000 - 10);
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_bytes, before.live_bytes + 100000);
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_objects, before.live_objects + 1);
  p = ec_realloc(MEMTYPE_STRING, p, 5);
  ASSERT_NOT_NULL(p);
  ASSERT_EQ(memcmp(p, "01234", 5), 0);
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_bytes, before.live_bytes + 5);
  ASSERT_UEQ(stats_of(MEMTYPE_STRING).total_allocs, before.total_allocs + 1);

  /* Another type than the one it was allocated with: refused, `p` untouched. */
  ASSERT_EQ(capture_begin(&cap), 0);
  errno = 0;
  q = ec_realloc(MEMTYPE_GENERIC, p, 50);
  out = capture_end(&cap);
  ASSERT_NULL(q);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_NOT_NULL(out);
  ASSERT_TRUE(strstr(out, "was allocated as 'core:string' (51) but reallocated as "
                          "'core:generic' (1)") != NULL);
  free(out);
  ASSERT_EQ(memcmp(p, "01234", 5), 0);

  /* Fixed types are never resized. */
  e = ec_malloc(MEMTYPE_EVENT);
  ASSERT_NOT_NULL(e);
  ASSERT_EQ(capture_begin(&cap), 0);
  errno = 0;
  q = ec_realloc(MEMTYPE_EVENT, e, 2 * sizeof(Event));
  free(capture_end(&cap));
  ASSERT_NULL(q);
  ASSERT_EQ(errno, EINVAL);
  ec_free(MEMTYPE_EVENT, e);

  ec_free(MEMTYPE_STRING, p);
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_objects, before.live_objects);
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_bytes, before.live_bytes);
}

/* MEMTYPE_IS_MALLOC_3C is plain malloc(3), counted by usable size. */
static void t_malloc_3c(void)
{
  ec_memtype_stats before = stats_of(MEMTYPE_IS_MALLOC_3C), during;
  char *p = ec_malloc_size(MEMTYPE_IS_MALLOC_3C, 100);

  ASSERT_NOT_NULL(p);
  memset(p, 1, 100);
  during = stats_of(MEMTYPE_IS_MALLOC_3C);
  ASSERT_EQ(during.live_objects, before.live_objects + 1);
  ASSERT_GE(during.live_bytes, before.live_bytes + 100);
  p = ec_realloc(MEMTYPE_IS_MALLOC_3C, p, 5000);
  ASSERT_NOT_NULL(p);
  ASSERT_EQ(p[99], 1);
  ASSERT_GE(stats_of(MEMTYPE_IS_MALLOC_3C).live_bytes, before.live_bytes + 5000);
  ec_free(MEMTYPE_IS_MALLOC_3C, p);
  ASSERT_EQ(stats_of(MEMTYPE_IS_MALLOC_3C).live_objects, before.live_objects);
  ASSERT_EQ(stats_of(MEMTYPE_IS_MALLOC_3C).live_bytes, before.live_bytes);
}

/* force_zero fills new memory (also the grown part on realloc); `aligned` is honoured. */
static void t_force_zero_and_alignment(void)
{
  int poison = register_type("test:poison", 0, 0, EC_ALLOCATOR_VSIZE, 1);
  int a64 = register_type("test:aligned64", 48, 64, EC_ALLOCATOR_FIXED, 0);
  int a256 = register_type("test:aligned256", 0, 256, EC_ALLOCATOR_VSIZE, 0);
  unsigned char *p, *q, *r;

  ASSERT_GE(poison, MEMTYPE_FIRST_DYNAMIC);
  ASSERT_GE(a64, MEMTYPE_FIRST_DYNAMIC);
  ASSERT_GE(a256, MEMTYPE_FIRST_DYNAMIC);

  p = ec_malloc_size(poison, 64);
  ASSERT_NOT_NULL(p);
  for (int i = 0; i < 64; i++)
    ASSERT_EQ(p[i], 0xa5);
  memset(p, 0, 64);
  p = ec_realloc(poison, p, 128);
  ASSERT_NOT_NULL(p);
  for (int i = 0; i < 64; i++)
    ASSERT_EQ(p[i], 0);
  for (int i = 64; i < 128; i++)
    ASSERT_EQ(p[i], 0xa5);
  ec_free(poison, p);

  q = ec_malloc(a64);
  ASSERT_NOT_NULL(q);
  ASSERT_EQ((uintptr_t)q % 64, 0);
  memset(q, 3, 48);
  ASSERT_EQ(stats_of(a64).live_bytes, 48);
  ec_free(a64, q);

  r = ec_malloc_size(a256, 10);
  ASSERT_NOT_NULL(r);
  ASSERT_EQ((uintptr_t)r % 256, 0);
  memcpy(r, "abcdefghij", 10);
  r = ec_realloc(a256, r, 70000);
  ASSERT_NOT_NULL(r);
  ASSERT_EQ((uintptr_t)r % 256, 0);
  ASSERT_EQ(memcmp(r, "abcdefghij", 10), 0);
  ec_free(a256, r);
  ASSERT_EQ(stats_of(a64).live_objects, 0);
  ASSERT_EQ(stats_of(a256).live_objects, 0);
  ASSERT_EQ(stats_of(poison).live_bytes, 0);
}

/* strdup / strndup (embedded NULs) / asprintf into a given memtype. */
static void t_strings(void)
{
  ec_memtype_stats before = stats_of(MEMTYPE_STRING);
  char *s, *t, *u, *g;
  capture cap;
  int n;

  s = ec_mt_strdup(MEMTYPE_STRING, "hello");
  ASSERT_STR_EQ(s, "hello");
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_bytes, before.live_bytes + 6);

  t = ec_mt_strndup(MEMTYPE_STRING, "ab\0cd", 5);
  ASSERT_NOT_NULL(t);
  ASSERT_EQ(memcmp(t, "ab\0cd\0", 6), 0);
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_bytes, before.live_bytes + 6 + 6);

  u = ec_mt_strndup(MEMTYPE_STRING, "abcdef", 3);
  ASSERT_STR_EQ(u, "abc");

  g = ec_strdup("generic");
  ASSERT_STR_EQ(g, "generic");
  ec_free(MEMTYPE_GENERIC, g);
  g = ec_strndup("xyz", 2);
  ASSERT_STR_EQ(g, "xy");
  ec_free(MEMTYPE_GENERIC, g);

  errno = 0;
  ASSERT_NULL(ec_mt_strdup(MEMTYPE_STRING, NULL));
  ASSERT_EQ(errno, EINVAL);

  ec_free(MEMTYPE_STRING, s);
  ec_free(MEMTYPE_STRING, t);
  ec_free(MEMTYPE_STRING, u);

  n = ec_mt_asprintf(MEMTYPE_STRING, &s, "%d-%s-%c", 42, "x", 'y');
  ASSERT_EQ(n, 6);
  ASSERT_STR_EQ(s, "42-x-y");
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_bytes, before.live_bytes + 7);
  ec_free(MEMTYPE_STRING, s);

  n = ec_mt_asprintf(MEMTYPE_STRING, &s, "%s", "");
  ASSERT_EQ(n, 0);
  ASSERT_STR_EQ(s, "");
  ec_free(MEMTYPE_STRING, s);

  ASSERT_EQ(capture_begin(&cap), 0);
  s = (char *)1;
  n = ec_mt_asprintf(3, &s, "%d", 1);
  free(capture_end(&cap));
  ASSERT_EQ(n, -1);
  ASSERT_NULL(s);

  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_objects, before.live_objects);
  ASSERT_EQ(stats_of(MEMTYPE_STRING).live_bytes, before.live_bytes);
}

/* Registration: dynamic ids, lookup, identical re-registration, refusals. */
static void t_register(void)
{
  mem_type_def d = {"test:widget", 40, 0, 0, EC_ALLOCATOR_FIXED, 0};
  mem_type_def bad[] = {
      {NULL, 8, 0, 0, EC_ALLOCATOR_FIXED, 0},          /* no description */
      {"", 8, 0, 0, EC_ALLOCATOR_FIXED, 0},            /* empty description */
      {"test:nosize", 0, 0, 0, EC_ALLOCATOR_FIXED, 0}, /* fixed without a size */
      {"test:kind", 8, 0, 0, 7, 0},                    /* unknown allocator type */
      {"test:align", 8, 24, 0, EC_ALLOCATOR_FIXED, 0}, /* alignment not a power of two */
  };
  char reloaded[] = "test:widget"; /* a reloaded module: same text, other address */
  mem_type_def again = d;
  mem_type_def generic = {"core:generic", 0, 0, 0, EC_ALLOCATOR_VSIZE, 0};
  mem_type_def event = {"core:event", 8, 0, 0, EC_ALLOCATOR_FIXED, 0};
  ec_memtype_stats st;
  capture cap;
  void *p;
  int id;

  id = ec_memtype_register(&d);
  ASSERT_GE(id, MEMTYPE_FIRST_DYNAMIC);
  ASSERT_LT(id, MEMTYPE_MAX);
  ASSERT_EQ(ec_memtype_by_name("test:widget"), id);

  again.memtype_description = reloaded;
  again.lock_class = 3; /* deprecated and ignored */
  ASSERT_EQ(ec_memtype_register(&again), id);

  /* The definition was copied: changing ours later changes nothing... */
  d.size = 80;
  p = ec_malloc(id);
  ASSERT_NOT_NULL(p);
  ASSERT_EQ(ec_memtype_stats_get(id, &st), 0);
  ASSERT_UEQ(st.size, 40);
  ASSERT_EQ(st.live_bytes, 40);
  ASSERT_STR_EQ(st.name, "test:widget");
  ec_free(id, p);
  /* ...and registering the same name with another definition fails. */
  ASSERT_EQ(capture_begin(&cap), 0);
  ASSERT_EQ(ec_memtype_register(&d), MEMTYPE_REGISTER_FAILED);
  ASSERT_EQ(ec_memtype_register(&event), MEMTYPE_REGISTER_FAILED);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ASSERT_EQ(ec_memtype_register(&bad[i]), MEMTYPE_REGISTER_FAILED);
  ASSERT_EQ(ec_memtype_register(NULL), MEMTYPE_REGISTER_FAILED);
  free(capture_end(&cap));

  ASSERT_EQ(ec_memtype_register(&generic), MEMTYPE_GENERIC);
  ASSERT_EQ(ec_memtype_by_name("core:event"), MEMTYPE_EVENT);
  ASSERT_EQ(ec_memtype_by_name("core:shard_msg"), MEMTYPE_SHARD_MSG);
  ASSERT_EQ(ec_memtype_by_name("test:nosize"), -1);
  ASSERT_EQ(ec_memtype_by_name(NULL), -1);
}

/* Freeing under the wrong memtype is reported and frees under the real one. */
static void t_wrong_type_free(void)
{
  int a = register_type("test:alpha", 0, 0, EC_ALLOCATOR_VSIZE, 0);
  int b = register_type("test:beta", 0, 0, EC_ALLOCATOR_VSIZE, 0);
  ec_memtype_stats a0, b0, a1, b1;
  char expect[160];
  capture cap;
  char *out;
  void *p;

  ASSERT_GE(a, MEMTYPE_FIRST_DYNAMIC);
  ASSERT_GE(b, MEMTYPE_FIRST_DYNAMIC);
  a0 = stats_of(a);
  b0 = stats_of(b);
  p = ec_malloc_size(a, 48);
  ASSERT_NOT_NULL(p);
  ASSERT_EQ(stats_of(a).live_objects, a0.live_objects + 1);

  ASSERT_EQ(capture_begin(&cap), 0);
  ec_free(b, p);
  out = capture_end(&cap);
  ASSERT_NOT_NULL(out);
  snprintf(expect, sizeof(expect),
           "critical: ec_free: %p was allocated as 'test:alpha' (%d) but freed as "
           "'test:beta' (%d)",
           p, a, b);
  ASSERT_TRUE(strstr(out, expect) != NULL);
  free(out);

  /* Freed as alpha (LSan would report the leak otherwise); beta untouched. */
  a1 = stats_of(a);
  b1 = stats_of(b);
  ASSERT_EQ(a1.live_objects, a0.live_objects);
  ASSERT_EQ(a1.live_bytes, a0.live_bytes);
  ASSERT_EQ(b1.live_objects, b0.live_objects);
  ASSERT_EQ(b1.live_bytes, b0.live_bytes);
  ASSERT_UEQ(b1.total_allocs, b0.total_allocs);
}

/* Pointers that did not come from ec_malloc are refused, logged, and left alone. */
static void t_foreign_pointers(void)
{
  struct fake {
    uint32_t magic, type;
    uint64_t size;
  };
  _Alignas(16) unsigned char stackbuf[64];
  struct fake f = {0x12345678u, MEMTYPE_GENERIC, 16};
  ec_memtype_stats before = stats_of(MEMTYPE_GENERIC);
  unsigned char *heap;
  char expect[64];
  capture cap;
  char *out;

  memcpy(stackbuf, &f, sizeof(f));
  memset(stackbuf + 16, 0x5a, sizeof(stackbuf) - 16);
  ASSERT_EQ(capture_begin(&cap), 0);
  ec_free(MEMTYPE_GENERIC, stackbuf + 16);
  out = capture_end(&cap);
  ASSERT_NOT_NULL(out);
  snprintf(expect, sizeof(expect), "ec_free: %p", (void *)(stackbuf + 16));
  ASSERT_TRUE(strstr(out, expect) != NULL);
  ASSERT_TRUE(strstr(out, "'core:generic'") != NULL);
  ASSERT_TRUE(strstr(out, "was not allocated by ec_malloc") != NULL);
  free(out);
  ASSERT_EQ(stackbuf[16], 0x5a);

  /* Inside a malloc'd block, and a pointer that is not even 16-aligned. */
  heap = malloc(256);
  ASSERT_NOT_NULL(heap);
  memset(heap, 0, 256);
  ASSERT_EQ(capture_begin(&cap), 0);
  ec_free(MEMTYPE_GENERIC, heap + 64);
  ec_free(MEMTYPE_STRING, heap + 67);
  errno = 0;
  ASSERT_NULL(ec_realloc(MEMTYPE_GENERIC, heap + 64, 10));
  ASSERT_EQ(errno, EINVAL);
  out = capture_end(&cap);
  ASSERT_NOT_NULL(out);
  ASSERT_TRUE(strstr(out, "'core:string'") != NULL);
  free(out);
  free(heap);

  ASSERT_EQ(stats_of(MEMTYPE_GENERIC).live_objects, before.live_objects);
  ASSERT_UEQ(stats_of(MEMTYPE_GENERIC).total_allocs, before.total_allocs);
}

/* A second free of the same pointer is caught and changes no counter. */
static void t_double_free(void)
{
  ec_memtype_stats before = stats_of(MEMTYPE_GENERIC), mid;
  char expect[64];
  capture cap;
  char *out;
  void *p = ec_malloc_size(MEMTYPE_GENERIC, 64);

  ASSERT_NOT_NULL(p);
  ec_free(MEMTYPE_GENERIC, p);
  mid = stats_of(MEMTYPE_GENERIC);
  ASSERT_EQ(mid.live_objects, before.live_objects);

  ASSERT_EQ(capture_begin(&cap), 0);
  ec_free(MEMTYPE_GENERIC, p);
  out = capture_end(&cap);
  ASSERT_NOT_NULL(out);
  /* jemalloc leaves our "freed" mark in place ("double free"); glibc's tcache and ASan's
   * poisoning make the block look foreign instead. Either way it is named and refused. */
  snprintf(expect, sizeof(expect), "ec_free: %p", p);
  ASSERT_TRUE(strstr(out, expect) != NULL);
  ASSERT_TRUE(strstr(out, "critical:") != NULL);
  free(out);
  ASSERT_EQ(stats_of(MEMTYPE_GENERIC).live_objects, mid.live_objects);
  ASSERT_EQ(stats_of(MEMTYPE_GENERIC).live_bytes, mid.live_bytes);
}

/* ---- counters across threads --------------------------------------------------------- */

#define NTHREADS 4

typedef struct mt_ctx {
  int type;
  long per_thread;
  void **objs[NTHREADS];
  pthread_barrier_t allocated, counted, freed;
  int stop_reader;
} mt_ctx;

typedef struct mt_arg {
  mt_ctx *ctx;
  int index;
} mt_arg;

static void *mt_worker(void *p)
{
  mt_arg *a = p;
  mt_ctx *c = a->ctx;
  void **mine = c->objs[a->index];
  void **theirs = c->objs[(a->index + 1) % NTHREADS];

  for (long i = 0; i < c->per_thread; i++)
    mine[i] = ec_malloc(c->type);
  pthread_barrier_wait(&c->allocated);
  pthread_barrier_wait(&c->counted);
  /* Free what the next thread allocated: counters go negative per thread, not in sum. */
  for (long i = 0; i < c->per_thread; i++)
    ec_free(c->type, theirs[i]);
  if (a->index == 0) {
    /* A thread that folds its counters explicitly and then allocates again. */
    void *extra[8];

    for (int i = 0; i < 8; i++)
      extra[i] = ec_malloc(c->type);
    fw__alloc_thread_exit();
    for (int i = 0; i < 8; i++)
      ec_free(c->type, extra[i]);
    fw__alloc_thread_exit();
    fw__alloc_thread_exit(); /* nothing left to fold: a no-op */
  }
  pthread_barrier_wait(&c->freed);
  return NULL;
}

static void count_cb(int id, const ec_memtype_stats *st, void *arg)
{
  (void)id;
  (void)st;
  (*(long *)arg)++;
}

/* Sums stats while the workers run, so that TSan checks the readers too. */
static void *mt_reader(void *p)
{
  mt_ctx *c = p;
  ec_memtype_stats st;
  long visits = 0;

  while (!__atomic_load_n(&c->stop_reader, __ATOMIC_ACQUIRE)) {
    ec_memtype_stats_get(c->type, &st);
    ec_memtype_stats_foreach(count_cb, &visits);
  }
  return NULL;
}

static void t_counters_across_threads(void)
{
  static mt_ctx c; /* large barriers and arrays: not on the test's stack */
  pthread_t th[NTHREADS], reader;
  mt_arg args[NTHREADS];
  ec_memtype_stats st, at_alloc, at_freed;
  long n = unit_scale(20000) < 64 ? 64 : unit_scale(20000), nulls = 0;
  int rc_alloc, rc_freed;

  memset(&c, 0, sizeof(c));
  c.type = register_type("test:threads", 32, 0, EC_ALLOCATOR_FIXED, 0);
  ASSERT_GE(c.type, MEMTYPE_FIRST_DYNAMIC);
  c.per_thread = n;
  for (int i = 0; i < NTHREADS; i++) {
    c.objs[i] = calloc((size_t)n, sizeof(void *));
    ASSERT_NOT_NULL(c.objs[i]);
  }
  pthread_barrier_init(&c.allocated, NULL, NTHREADS + 1);
  pthread_barrier_init(&c.counted, NULL, NTHREADS + 1);
  pthread_barrier_init(&c.freed, NULL, NTHREADS + 1);
  ASSERT_EQ(pthread_create(&reader, NULL, mt_reader, &c), 0);
  for (int i = 0; i < NTHREADS; i++) {
    args[i].ctx = &c;
    args[i].index = i;
    ASSERT_EQ(pthread_create(&th[i], NULL, mt_worker, &args[i]), 0);
  }

  /* Snapshots first, assertions after the joins: a failed assertion returns from the
   * test and must not leave the workers waiting at a barrier. */
  pthread_barrier_wait(&c.allocated);
  rc_alloc = ec_memtype_stats_get(c.type, &at_alloc);
  for (int i = 0; i < NTHREADS; i++)
    for (long j = 0; j < n; j++)
      nulls += c.objs[i][j] == NULL;
  pthread_barrier_wait(&c.counted);
  pthread_barrier_wait(&c.freed);
  /* Threads still alive, each with a block whose own counts are lopsided. */
  rc_freed = ec_memtype_stats_get(c.type, &at_freed);
  for (int i = 0; i < NTHREADS; i++)
    pthread_join(th[i], NULL);
  __atomic_store_n(&c.stop_reader, 1, __ATOMIC_RELEASE);
  pthread_join(reader, NULL);

  ASSERT_EQ(rc_alloc, 0);
  ASSERT_EQ(nulls, 0);
  ASSERT_EQ(at_alloc.live_objects, NTHREADS * n);
  ASSERT_EQ(at_alloc.live_bytes, NTHREADS * n * 32);
  ASSERT_EQ(at_alloc.peak_objects, NTHREADS * n);
  ASSERT_UEQ(at_alloc.total_allocs, NTHREADS * n);
  ASSERT_EQ(rc_freed, 0);
  ASSERT_EQ(at_freed.live_objects, 0);
  ASSERT_EQ(at_freed.live_bytes, 0);

  /* After exit the blocks have been folded into the process totals. */
  ASSERT_EQ(ec_memtype_stats_get(c.type, &st), 0);
  ASSERT_EQ(st.live_objects, 0);
  ASSERT_EQ(st.live_bytes, 0);
  ASSERT_EQ(st.peak_objects, NTHREADS * n);
  ASSERT_EQ(st.peak_bytes, NTHREADS * n * 32);
  ASSERT_UEQ(st.total_allocs, NTHREADS * n + 8);

  pthread_barrier_destroy(&c.allocated);
  pthread_barrier_destroy(&c.counted);
  pthread_barrier_destroy(&c.freed);
  for (int i = 0; i < NTHREADS; i++)
    free(c.objs[i]);
}

/* ---- foreach and peaks --------------------------------------------------------------- */

typedef struct visit {
  int n;
  int last_id;
  int in_order;
  int seen_each;
  int seen_unused;
  int each_id;
  ec_memtype_stats each;
} visit;

static void visit_cb(int id, const ec_memtype_stats *st, void *arg)
{
  visit *v = arg;

  if (id <= v->last_id)
    v->in_order = 0;
  v->last_id = id;
  v->n++;
  if (id == v->each_id) {
    v->seen_each = 1;
    v->each = *st;
  }
  if (id == MEMTYPE_CIDRNODE_IPV6)
    v->seen_unused = 1;
}

static void t_stats_foreach_and_peaks(void)
{
  int id = register_type("test:each", 0, 0, EC_ALLOCATOR_VSIZE, 0);
  void *p[10];
  visit v;
  int n;

  ASSERT_GE(id, MEMTYPE_FIRST_DYNAMIC);
  for (int i = 0; i < 10; i++)
    p[i] = ec_malloc_size(id, 100);
  memset(&v, 0, sizeof(v));
  v.last_id = -1;
  v.in_order = 1;
  v.each_id = id;
  n = ec_memtype_stats_foreach(visit_cb, &v);
  ASSERT_EQ(n, v.n);
  ASSERT_TRUE(v.in_order);
  ASSERT_TRUE(v.seen_each);
  ASSERT_TRUE(!v.seen_unused); /* never allocated: not visited */
  ASSERT_STR_EQ(v.each.name, "test:each");
  ASSERT_EQ(v.each.live_objects, 10);
  ASSERT_EQ(v.each.live_bytes, 1000);
  ASSERT_EQ(v.each.peak_objects, 10);

  for (int i = 0; i < 5; i++)
    ec_free(id, p[i]);
  /* Peaks are sampled by reads: the read above saw 10 objects. */
  memset(&v, 0, sizeof(v));
  v.last_id = -1;
  v.in_order = 1;
  v.each_id = id;
  ec_memtype_stats_foreach(visit_cb, &v);
  ASSERT_EQ(v.each.live_objects, 5);
  ASSERT_EQ(v.each.peak_objects, 10);
  ASSERT_EQ(v.each.peak_bytes, 1000);
  ASSERT_UEQ(v.each.total_allocs, 10);
  for (int i = 5; i < 10; i++)
    ec_free(id, p[i]);
  ASSERT_EQ(stats_of(id).live_objects, 0);
  ASSERT_EQ(ec_memtype_stats_foreach(NULL, NULL), 0);
}

static void t_allocator_name(void)
{
#if ECSHARD_JEMALLOC
  ASSERT_STR_EQ(ec_allocator_name(), "jemalloc");
#else
  ASSERT_STR_EQ(ec_allocator_name(), "libc");
#endif
}

/* Fills the dynamic range (last: the registry stays full for the rest of the process). */
static void t_registry_full(void)
{
  static char names[MEMTYPE_MAX][32];
  int probe = register_type("test:probe", 0, 0, EC_ALLOCATOR_VSIZE, 0);
  int last = -1, consecutive = 1, id;
  capture cap;

  ASSERT_GE(probe, MEMTYPE_FIRST_DYNAMIC);
  ASSERT_EQ(capture_begin(&cap), 0);
  for (int i = 0; i < MEMTYPE_MAX; i++) {
    snprintf(names[i], sizeof(names[i]), "test:fill-%d", i);
    id = register_type(names[i], 0, 0, EC_ALLOCATOR_VSIZE, 0);
    if (id == MEMTYPE_REGISTER_FAILED)
      break;
    consecutive &= last < 0 || id == last + 1;
    last = id;
  }
  id = register_type("test:one-too-many", 0, 0, EC_ALLOCATOR_VSIZE, 0);
  free(capture_end(&cap));
  ASSERT_TRUE(consecutive);
  ASSERT_EQ(last, MEMTYPE_MAX - 1);
  ASSERT_EQ(id, MEMTYPE_REGISTER_FAILED);
  /* Known names still resolve and re-register. */
  ASSERT_EQ(register_type("test:probe", 0, 0, EC_ALLOCATOR_VSIZE, 0), probe);
  ASSERT_EQ(ec_memtype_by_name(names[0]), probe + 1);
  ASSERT_EQ(ec_memtype_by_name("test:one-too-many"), -1);
}

static const unit_test tests[] = {
    UNIT_TEST(t_fixed_types),
    UNIT_TEST(t_vsize_and_invalid_types),
    UNIT_TEST(t_realloc),
    UNIT_TEST(t_malloc_3c),
    UNIT_TEST(t_force_zero_and_alignment),
    UNIT_TEST(t_strings),
    UNIT_TEST(t_register),
    UNIT_TEST(t_wrong_type_free),
    UNIT_TEST(t_foreign_pointers),
    UNIT_TEST(t_double_free),
    UNIT_TEST(t_counters_across_threads),
    UNIT_TEST(t_stats_foreach_and_peaks),
    UNIT_TEST(t_allocator_name),
    UNIT_TEST(t_registry_full),
    {NULL, NULL},
};

UNIT_MAIN("alloc", tests)
