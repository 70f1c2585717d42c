/*
 * framework/alloc.c - the memtyped allocator (ec_malloc.h) over jemalloc or libc.
 *
 * Every allocation except MEMTYPE_IS_MALLOC_3C carries a 16-byte header just below the
 * pointer handed out: a magic value mixed with the memtype id, the id, and the requested
 * size. ec_free checks the header before it touches the allocator, so a wrong memtype, a
 * foreign pointer or a double free is reported instead of corrupting the heap.
 *
 * Counting: each thread owns a block of per-memtype counters that only it writes, with
 * plain relaxed stores (no locked instruction, no shared cache line on the hot path).
 * Blocks are linked into a global list under `reg_lock`; readers sum every live block
 * plus the totals of threads that have exited. Peaks are sampled: they are the highest
 * live values seen by ec_memtype_stats_get / _foreach, not exact high-water marks, since
 * an exact peak would need a shared counter updated on every allocation.
 */
#include "ec_config.h"
#include "ec_log.h"
#include "ec_malloc.h"
#include "event.h"
#include "framework/internal.h"

#include <pthread.h>
#include <stdbool.h>

#if ECSHARD_JEMALLOC
#include <jemalloc/jemalloc.h>
#else
#include <malloc.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif
#ifdef HAVE_ASAN
#include <sanitizer/asan_interface.h>
#endif
#if defined(__SANITIZE_THREAD__)
#define HAVE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HAVE_TSAN 1
#endif
#endif
#ifdef HAVE_TSAN
#define NOT_TSAN_INSTRUMENTED __attribute__((noinline, no_sanitize("thread")))
#else
#define NOT_TSAN_INSTRUMENTED
#endif

#define HDR_SIZE  16
#define MAX_ALIGN 4096

typedef struct alloc_hdr {
  uint32_t magic; /* magic_of(type) while live, dead_of(type) once freed */
  uint32_t type;
  uint64_t size; /* requested size */
} alloc_hdr;

_Static_assert(sizeof(alloc_hdr) == HDR_SIZE, "the header keeps user pointers 16-aligned");

typedef struct memtype {
  mem_type_def def;
  size_t offset;  /* bytes from the start of the block to the user pointer */
  int registered; /* set once, with release, after def and offset are written */
} memtype;

typedef struct counter {
  uint64_t allocs;
  uint64_t frees;
  int64_t bytes; /* may go negative in one thread's block: frees of memory others made */
} counter;

typedef struct thread_counters {
  struct thread_counters *next;
  struct thread_counters **pprev;
  counter c[MEMTYPE_MAX];
} thread_counters;

#define FIXED(name, sz)                                                                            \
  {                                                                                                \
    {(name), (sz), 0, 0, EC_ALLOCATOR_FIXED, 0}, HDR_SIZE, 1                                       \
  }
#define VSIZE(name)                                                                                \
  {                                                                                                \
    {(name), 0, 0, 0, EC_ALLOCATOR_VSIZE, 0}, HDR_SIZE, 1                                          \
  }

static memtype types[MEMTYPE_MAX] = {
    [MEMTYPE_EVENT] = FIXED("core:event", sizeof(Event)),
    [MEMTYPE_GENERIC] = VSIZE("core:generic"),
    [MEMTYPE_BUF_STORAGE] = VSIZE("core:buf_storage"),
    [MEMTYPE_MESSAGE_BODY] = VSIZE("core:message_body"),
    [MEMTYPE_EC_SSL_CTX] = VSIZE("core:ec_ssl_ctx"),
    [MEMTYPE_SMALL_BUF] = FIXED("core:small_buf", 1024),
    [MEMTYPE_MEDIUM_BUF] = FIXED("core:medium_buf", 16384),
    [MEMTYPE_STRING] = VSIZE("core:string"),
    [MEMTYPE_SP_CLOSE_INFO] = VSIZE("core:sp_close_info"),
    [MEMTYPE_EC_ASYNC_JOB] = VSIZE("core:ec_async_job"),
    [MEMTYPE_SP_ASYNC_INFO] = VSIZE("core:sp_async_info"),
    [MEMTYPE_MEM_POOL] = VSIZE("core:mem_pool"),
    [MEMTYPE_ACCEPT_CONSTRUCT] = VSIZE("core:accept_construct"),
    [MEMTYPE_NETLISTENER_INSTANCE] = VSIZE("core:netlistener_instance"),
    [MEMTYPE_IO_OBJECT] = VSIZE("core:io_object"),
    [MEMTYPE_IS_MALLOC_3C] = {{"core:malloc_3c", 0, 0, 0, EC_ALLOCATOR_VSIZE, 0}, 0, 1},
    [MEMTYPE_EC_PTR_ARRAY] = VSIZE("core:ec_ptr_array"),
    [MEMTYPE_CIDRNODE_IPV6] = VSIZE("core:cidrnode_ipv6"),
    [MEMTYPE_SHARD_MSG] = FIXED("core:shard_msg", 4032), /* shard/mailbox.c: CHUNK_BYTES */
    [MEMTYPE_LOG_MSG] = VSIZE("core:log_msg"),
    [MEMTYPE_CONFIG] = VSIZE("core:config"),
    [MEMTYPE_FD_TABLE] = VSIZE("core:fd_table"),
};

/* Guards registration, the list of counter blocks, the retired totals and the peaks. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static int next_dynamic = MEMTYPE_FIRST_DYNAMIC;
static thread_counters *live_blocks;
static counter retired[MEMTYPE_MAX];
/* Kept apart from `types`, which the hot path reads, so that stats reads never dirty
 * the cache lines every allocation loads. */
static int64_t peak_objects[MEMTYPE_MAX];
static int64_t peak_bytes[MEMTYPE_MAX];

static EC__TLS_HOT thread_counters *my_counters;
static pthread_key_t counters_key;
static pthread_once_t counters_once = PTHREAD_ONCE_INIT;
static bool counters_key_ok; /* written once under counters_once */

static uint32_t magic_of(uint32_t type)
{
  return 0xec5a110cu ^ (type * 0x9e3779b1u);
}

static uint32_t dead_of(uint32_t type)
{
  return ~magic_of(type);
}

static const memtype *type_get(int id)
{
  if (id < 0 || id >= MEMTYPE_MAX)
    return NULL;
  /* Pairs with the release store in ec_memtype_register: a set flag means def and offset
   * are complete. */
  if (!__atomic_load_n(&types[id].registered, __ATOMIC_ACQUIRE))
    return NULL;
  return &types[id];
}

static const char *type_name(int id)
{
  const memtype *mt = type_get(id);

  return mt ? mt->def.memtype_description : "(unregistered)";
}

/* ---- per-thread counters ------------------------------------------------------------- */

static void fold_locked(thread_counters *tc)
{
  for (int i = 0; i < MEMTYPE_MAX; i++) {
    retired[i].allocs += tc->c[i].allocs;
    retired[i].frees += tc->c[i].frees;
    retired[i].bytes += tc->c[i].bytes;
  }
  *tc->pprev = tc->next;
  if (tc->next)
    tc->next->pprev = tc->pprev;
}

/* Runs on the owning thread at exit (or from fw__alloc_thread_exit), so reading the
 * block without atomics races with no writer; readers are excluded by reg_lock. */
static void counters_release(void *arg)
{
  thread_counters *tc = arg;

  pthread_mutex_lock(&reg_lock);
  fold_locked(tc);
  pthread_mutex_unlock(&reg_lock);
  if (my_counters == tc)
    my_counters = NULL;
  free(tc);
}

static void counters_key_create(void)
{
  /* Without a key (the process ran out of them) no block could be folded at thread exit:
   * every thread then counts through the locked slow path in count(). */
  counters_key_ok = pthread_key_create(&counters_key, counters_release) == 0;
}

static thread_counters *counters_attach(void)
{
  thread_counters *tc;
  void *mem;

  pthread_once(&counters_once, counters_key_create);
  if (!counters_key_ok)
    return NULL;
  /* Cache-line aligned so that two threads' blocks never share a line. */
  if (posix_memalign(&mem, 64, sizeof(*tc)) != 0)
    return NULL;
  tc = mem;
  memset(tc, 0, sizeof(*tc));
  if (pthread_setspecific(counters_key, tc) != 0) {
    free(tc);
    return NULL;
  }
  pthread_mutex_lock(&reg_lock);
  tc->next = live_blocks;
  tc->pprev = &live_blocks;
  if (live_blocks)
    live_blocks->pprev = &tc->next;
  live_blocks = tc;
  pthread_mutex_unlock(&reg_lock);
  my_counters = tc;
  return tc;
}

/*
 * Only the owning thread writes its block, so a load, an add and a store suffice; the
 * relaxed atomic store pairs with the relaxed loads in sum_locked, which need no ordering,
 * only untorn values.
 */
static inline void bump_u(uint64_t *v, uint64_t d)
{
  __atomic_store_n(v, __atomic_load_n(v, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

static inline void bump_i(int64_t *v, int64_t d)
{
  __atomic_store_n(v, __atomic_load_n(v, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

/* Records `allocs` new objects, `frees` released ones and a change of `bytes` for `id`.
 * Without a block (out of memory at a thread's first allocation) the change goes to the
 * retired totals under the lock, so the counts stay exact. */
static void count(int id, int allocs, int frees, int64_t bytes)
{
  thread_counters *tc = my_counters;

  if (tc == NULL)
    tc = counters_attach();
  if (tc == NULL) {
    pthread_mutex_lock(&reg_lock);
    retired[id].allocs += (uint64_t)allocs;
    retired[id].frees += (uint64_t)frees;
    retired[id].bytes += bytes;
    pthread_mutex_unlock(&reg_lock);
    return;
  }
  if (allocs)
    bump_u(&tc->c[id].allocs, (uint64_t)allocs);
  if (frees)
    bump_u(&tc->c[id].frees, (uint64_t)frees);
  bump_i(&tc->c[id].bytes, bytes);
}

void fw__alloc_thread_exit(void)
{
  thread_counters *tc = my_counters;

  if (tc == NULL)
    return;
  pthread_setspecific(counters_key, NULL);
  counters_release(tc);
}

/* ---- the underlying allocator -------------------------------------------------------- */

#if ECSHARD_JEMALLOC
static int je_flags(const memtype *mt)
{
  return mt->def.aligned > HDR_SIZE ? MALLOCX_ALIGN(mt->def.aligned) : 0;
}
#endif

static void *raw_alloc(const memtype *mt, size_t total)
{
#if ECSHARD_JEMALLOC
  return mallocx(total, je_flags(mt));
#else
  void *p;

  if (mt->def.aligned <= HDR_SIZE)
    return malloc(total);
  return posix_memalign(&p, mt->def.aligned, total) == 0 ? p : NULL;
#endif
}

static void raw_free(const memtype *mt, void *base, size_t total)
{
#if ECSHARD_JEMALLOC
  sdallocx(base, total, je_flags(mt));
#else
  (void)mt;
  (void)total;
  free(base);
#endif
}

static void *raw_realloc(const memtype *mt, void *base, size_t old_total, size_t new_total)
{
#if ECSHARD_JEMALLOC
  (void)old_total;
  return rallocx(base, new_total, je_flags(mt));
#else
  void *n;

  if (mt->def.aligned <= HDR_SIZE)
    return realloc(base, new_total);
  /* realloc(3) does not keep an alignment above malloc's own. */
  n = raw_alloc(mt, new_total);
  if (n == NULL)
    return NULL;
  memcpy(n, base, old_total < new_total ? old_total : new_total);
  free(base);
  return n;
#endif
}

/* ---- header checks ------------------------------------------------------------------- */

/* Reads the identifying half of a header. Under TSan, the double-free check reads the
 * header of a freed block on purpose, which TSan would report as a use after free: this
 * read alone is left uninstrumented there (writes to headers still are). */
NOT_TSAN_INSTRUMENTED static void hdr_peek(const alloc_hdr *h, uint32_t *magic, uint32_t *type)
{
  *magic = h->magic;
  *type = h->type;
}

/*
 * Returns the live header of `p` or NULL. A pointer that is misaligned cannot be ours.
 * Under ASan the header of a freed or foreign block lies in poisoned memory: asking ASan
 * first turns what would be its use-after-free report into our "not ours" path.
 */
static alloc_hdr *hdr_of(void *p, uint32_t *magic, uint32_t *type)
{
  alloc_hdr *h;

  *magic = 0;
  *type = UINT32_MAX;
  if (((uintptr_t)p & (HDR_SIZE - 1)) != 0)
    return NULL;
  h = (alloc_hdr *)p - 1;
#ifdef HAVE_ASAN
  if (__asan_region_is_poisoned(h, sizeof(*h)) != NULL)
    return NULL;
#endif
  hdr_peek(h, magic, type);
  if (*type >= MEMTYPE_MAX || *type == MEMTYPE_IS_MALLOC_3C || *magic != magic_of(*type))
    return NULL;
  if (type_get((int)*type) == NULL)
    return NULL;
  return h;
}

static void report_bad_pointer(const char *fn, int id, void *p, uint32_t magic, uint32_t type)
{
  if (type < MEMTYPE_MAX && magic == dead_of(type))
    ec_debug_printf(DCRITICAL, EC_LOG_MEM,
                    "%s: %p (memtype '%s' (%d)) was already freed (double free); "
                    "memtype given '%s' (%d); ignoring it",
                    fn, p, type_name((int)type), (int)type, type_name(id), id);
  else
    ec_debug_printf(DCRITICAL, EC_LOG_MEM,
                    "%s: %p (memtype given '%s' (%d)) was not allocated by ec_malloc or its "
                    "header is corrupt (magic 0x%08x); leaking it",
                    fn, p, type_name(id), id, (unsigned)magic);
}

static void *bad_type(const char *fn, int id)
{
  ec_debug_printf(DERROR, EC_LOG_MEM, "%s: memtype %d is not registered", fn, id);
  errno = EINVAL;
  return NULL;
}

/* ---- allocation ---------------------------------------------------------------------- */

/* ---- fault injection ------------------------------------------------------------------ */

static int fail_every;      /* 0: off (relaxed: a test turns it on and off between phases) */
static unsigned fail_tick;  /* allocations seen while on (atomic) */
static unsigned fail_count; /* failures injected since the last fw__alloc_fail_every (atomic) */

unsigned fw__alloc_failures_injected(void)
{
  return __atomic_load_n(&fail_count, __ATOMIC_RELAXED);
}

void fw__alloc_fail_every(int every)
{
  __atomic_store_n(&fail_tick, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&fail_count, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&fail_every, every > 0 ? every : 0, __ATOMIC_RELAXED);
}

static int injected_failure(void)
{
  int every = __atomic_load_n(&fail_every, __ATOMIC_RELAXED);

  if (__builtin_expect(every == 0, 1))
    return 0;
  if (__atomic_add_fetch(&fail_tick, 1, __ATOMIC_RELAXED) % (unsigned)every != 0)
    return 0;
  __atomic_add_fetch(&fail_count, 1, __ATOMIC_RELAXED);
  return 1;
}

static void *alloc_typed(const memtype *mt, int id, size_t size)
{
  alloc_hdr *h;
  char *base;
  void *p;

  if (injected_failure()) {
    errno = ENOMEM;
    return NULL;
  }
  if (id == MEMTYPE_IS_MALLOC_3C) {
    p = malloc(size ? size : 1);
    if (p == NULL) {
      errno = ENOMEM;
      return NULL;
    }
    count(id, 1, 0, (int64_t)malloc_usable_size(p));
    return p;
  }
  if (size > SIZE_MAX / 2 - mt->offset) {
    errno = ENOMEM;
    return NULL;
  }
  base = raw_alloc(mt, mt->offset + size);
  if (base == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  p = base + mt->offset;
  h = (alloc_hdr *)p - 1;
  h->magic = magic_of((uint32_t)id);
  h->type = (uint32_t)id;
  h->size = size;
  if (mt->def.force_zero)
    memset(p, 0xa5, size);
  count(id, 1, 0, (int64_t)size);
  return p;
}

void *ec_malloc(int object_type)
{
  const memtype *mt = type_get(object_type);

  if (mt == NULL)
    return bad_type("ec_malloc", object_type);
  if (mt->def.allocator_type != EC_ALLOCATOR_FIXED) {
    ec_debug_printf(DERROR, EC_LOG_MEM,
                    "ec_malloc: memtype '%s' (%d) is variable-size; use ec_malloc_size",
                    mt->def.memtype_description, object_type);
    errno = EINVAL;
    return NULL;
  }
  return alloc_typed(mt, object_type, mt->def.size);
}

void *ec_malloc_size(int object_type, size_t size)
{
  const memtype *mt = type_get(object_type);

  if (mt == NULL)
    return bad_type("ec_malloc_size", object_type);
  return alloc_typed(mt, object_type, size);
}

static void *realloc_3c(void *old, size_t size)
{
  size_t old_usable = malloc_usable_size(old);
  void *n = realloc(old, size ? size : 1);

  if (n == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  count(MEMTYPE_IS_MALLOC_3C, 0, 0, (int64_t)malloc_usable_size(n) - (int64_t)old_usable);
  return n;
}

void *ec_realloc(int object_type, void *old, size_t size)
{
  const memtype *mt = type_get(object_type);
  uint32_t magic, type;
  alloc_hdr *h;
  size_t old_size;
  char *base;

  if (mt == NULL)
    return bad_type("ec_realloc", object_type);
  if (mt->def.allocator_type != EC_ALLOCATOR_VSIZE) {
    ec_debug_printf(DERROR, EC_LOG_MEM, "ec_realloc: memtype '%s' (%d) is fixed-size",
                    mt->def.memtype_description, object_type);
    errno = EINVAL;
    return NULL;
  }
  if (old == NULL)
    return alloc_typed(mt, object_type, size);
  if (injected_failure()) {
    errno = ENOMEM;
    return NULL;
  }
  if (object_type == MEMTYPE_IS_MALLOC_3C)
    return realloc_3c(old, size);

  h = hdr_of(old, &magic, &type);
  if (h == NULL) {
    report_bad_pointer("ec_realloc", object_type, old, magic, type);
    errno = EINVAL;
    return NULL;
  }
  if ((int)type != object_type) {
    ec_debug_printf(DCRITICAL, EC_LOG_MEM,
                    "ec_realloc: %p was allocated as '%s' (%u) but reallocated as '%s' (%d)", old,
                    type_name((int)type), (unsigned)type, mt->def.memtype_description, object_type);
    errno = EINVAL;
    return NULL;
  }
  if (size > SIZE_MAX / 2 - mt->offset) {
    errno = ENOMEM;
    return NULL;
  }
  old_size = (size_t)h->size;
  base = raw_realloc(mt, (char *)old - mt->offset, mt->offset + old_size, mt->offset + size);
  if (base == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  /* The header moved with the block; only the size changes. */
  h = (alloc_hdr *)(base + mt->offset) - 1;
  h->size = size;
  if (mt->def.force_zero && size > old_size)
    memset(base + mt->offset + old_size, 0xa5, size - old_size);
  count(object_type, 0, 0, (int64_t)size - (int64_t)old_size);
  return base + mt->offset;
}

void ec_free(int object_type, void *ptr)
{
  const memtype *mt;
  uint32_t magic, type;
  alloc_hdr *h;
  size_t size;

  if (ptr == NULL)
    return;
  if (object_type == MEMTYPE_IS_MALLOC_3C) {
    count(MEMTYPE_IS_MALLOC_3C, 0, 1, -(int64_t)malloc_usable_size(ptr));
    free(ptr);
    return;
  }
  h = hdr_of(ptr, &magic, &type);
  if (h == NULL) {
    /* Leaking is the safe choice: freeing memory we do not understand corrupts the heap. */
    report_bad_pointer("ec_free", object_type, ptr, magic, type);
    return;
  }
  if ((int)type != object_type)
    ec_debug_printf(DCRITICAL, EC_LOG_MEM,
                    "ec_free: %p was allocated as '%s' (%u) but freed as '%s' (%d)", ptr,
                    type_name((int)type), (unsigned)type, type_name(object_type), object_type);
  mt = &types[type];
  size = (size_t)h->size;
  h->magic = dead_of(type);
  count((int)type, 0, 1, -(int64_t)size);
  raw_free(mt, (char *)ptr - mt->offset, mt->offset + size);
}

/* ---- strings ------------------------------------------------------------------------- */

char *ec_mt_strndup(int object_type, const char *str, size_t len)
{
  char *p;

  if (str == NULL) {
    errno = EINVAL;
    return NULL;
  }
  if (len == SIZE_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  p = ec_malloc_size(object_type, len + 1);
  if (p == NULL)
    return NULL;
  memcpy(p, str, len);
  p[len] = '\0';
  return p;
}

char *ec_mt_strdup(int object_type, const char *str)
{
  if (str == NULL) {
    errno = EINVAL;
    return NULL;
  }
  return ec_mt_strndup(object_type, str, strlen(str));
}

int fw__mt_vasprintf(int mt, char **strp, const char *fmt, va_list ap)
{
  va_list again;
  char *p;
  int n;

  if (strp == NULL || fmt == NULL) {
    errno = EINVAL;
    return -1;
  }
  *strp = NULL;
  va_copy(again, ap); /* measured once, formatted once */
  n = vsnprintf(NULL, 0, fmt, ap);
  if (n < 0 || (p = ec_malloc_size(mt, (size_t)n + 1)) == NULL) {
    va_end(again);
    return -1;
  }
  vsnprintf(p, (size_t)n + 1, fmt, again);
  va_end(again);
  *strp = p;
  return n;
}

int ec_mt_asprintf(int mt, char **strp, const char *fmt, ...)
{
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = fw__mt_vasprintf(mt, strp, fmt, ap);
  va_end(ap);
  return n;
}

/* ---- registry ------------------------------------------------------------------------ */

static bool def_valid(const mem_type_def *def)
{
  if (def == NULL || def->memtype_description == NULL || def->memtype_description[0] == '\0')
    return false;
  if (def->allocator_type == EC_ALLOCATOR_FIXED && def->size == 0)
    return false;
  if (def->allocator_type != EC_ALLOCATOR_FIXED && def->allocator_type != EC_ALLOCATOR_VSIZE)
    return false;
  return def->aligned <= MAX_ALIGN && (def->aligned & (def->aligned - 1)) == 0;
}

/* lock_class is deprecated and ignored, so it does not make two definitions differ. */
static bool def_same(const mem_type_def *a, const mem_type_def *b)
{
  return a->size == b->size && a->aligned == b->aligned && a->allocator_type == b->allocator_type &&
         a->force_zero == b->force_zero;
}

static int find_locked(const char *name)
{
  for (int i = 0; i < next_dynamic; i++)
    if (types[i].registered && strcmp(types[i].def.memtype_description, name) == 0)
      return i;
  return -1;
}

int ec_memtype_register(const mem_type_def *def)
{
  const char *why = NULL;
  int id;

  if (!def_valid(def)) {
    ec_debug_printf(DERROR, EC_LOG_MEM, "ec_memtype_register: invalid definition for '%s'",
                    def && def->memtype_description ? def->memtype_description : "(null)");
    return MEMTYPE_REGISTER_FAILED;
  }
  pthread_mutex_lock(&reg_lock);
  id = find_locked(def->memtype_description);
  if (id >= 0) {
    /* Modules reloaded in one process register the same type again. */
    if (!def_same(&types[id].def, def)) {
      id = MEMTYPE_REGISTER_FAILED;
      why = "registered before with a different definition";
    }
  } else if (next_dynamic >= MEMTYPE_MAX) {
    id = MEMTYPE_REGISTER_FAILED;
    why = "no memtype ids left";
  } else {
    id = next_dynamic++;
    types[id].def = *def;
    if (def->allocator_type == EC_ALLOCATOR_VSIZE)
      types[id].def.size = 0;
    types[id].offset = def->aligned > HDR_SIZE ? def->aligned : HDR_SIZE;
    /* Pairs with the acquire load in type_get. */
    __atomic_store_n(&types[id].registered, 1, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&reg_lock);
  /* Logged outside the lock: logging may allocate, and a first allocation takes it. */
  if (why)
    ec_debug_printf(DERROR, EC_LOG_MEM, "ec_memtype_register: '%s': %s", def->memtype_description,
                    why);
  return id;
}

int ec_memtype_by_name(const char *name)
{
  int id;

  if (name == NULL)
    return -1;
  pthread_mutex_lock(&reg_lock);
  id = find_locked(name);
  pthread_mutex_unlock(&reg_lock);
  return id;
}

/* ---- statistics ---------------------------------------------------------------------- */

/* Objects that sit in a cache above the allocator (the shards' Event caches) are counted
 * live by the allocator and subtracted here, when stats are read, so that the hot path of
 * the cache keeps no count of its own. Set and called under reg_lock. */
static int64_t (*cached_hook)(int id);

void fw__alloc_cached_hook(int64_t (*fn)(int id))
{
  pthread_mutex_lock(&reg_lock);
  cached_hook = fn;
  pthread_mutex_unlock(&reg_lock);
}

/* Sums one memtype over all threads and raises its sampled peaks. Blocks can be summed
 * while their owners run: each value is untorn, but allocations and frees made in
 * different threads are not read at one instant, so a live count can briefly read low
 * (never below 0). */
static void sum_locked(int id, ec_memtype_stats *out)
{
  uint64_t allocs = retired[id].allocs, frees = retired[id].frees;
  int64_t bytes = retired[id].bytes, live;

  for (thread_counters *tc = live_blocks; tc; tc = tc->next) {
    /* Relaxed: pairs with the owner's relaxed stores in bump_u / bump_i. */
    allocs += __atomic_load_n(&tc->c[id].allocs, __ATOMIC_RELAXED);
    frees += __atomic_load_n(&tc->c[id].frees, __ATOMIC_RELAXED);
    bytes += __atomic_load_n(&tc->c[id].bytes, __ATOMIC_RELAXED);
  }
  live = (int64_t)(allocs - frees);
  if (cached_hook != NULL) {
    int64_t n = cached_hook(id);

    live -= n;
    bytes -= n * (int64_t)types[id].def.size; /* only fixed-size memtypes are cached */
  }
  if (live < 0)
    live = 0;
  if (bytes < 0)
    bytes = 0;
  if (live > peak_objects[id])
    peak_objects[id] = live;
  if (bytes > peak_bytes[id])
    peak_bytes[id] = bytes;
  out->name = types[id].def.memtype_description;
  out->allocator_type = types[id].def.allocator_type;
  out->size = types[id].def.allocator_type == EC_ALLOCATOR_FIXED ? types[id].def.size : 0;
  out->live_objects = live;
  out->peak_objects = peak_objects[id];
  out->live_bytes = bytes;
  out->peak_bytes = peak_bytes[id];
  out->total_allocs = allocs;
}

int ec_memtype_stats_get(int object_type, ec_memtype_stats *out)
{
  if (out == NULL || type_get(object_type) == NULL)
    return -EINVAL;
  pthread_mutex_lock(&reg_lock);
  sum_locked(object_type, out);
  pthread_mutex_unlock(&reg_lock);
  return 0;
}

int ec_memtype_stats_foreach(void (*fn)(int id, const ec_memtype_stats *st, void *arg), void *arg)
{
  ec_memtype_stats st;
  int visited = 0;

  if (fn == NULL)
    return 0;
  /* One lock round per memtype, and `fn` runs unlocked: it may allocate or read stats. */
  for (int id = 0; id < MEMTYPE_MAX; id++) {
    if (type_get(id) == NULL)
      continue;
    pthread_mutex_lock(&reg_lock);
    sum_locked(id, &st);
    pthread_mutex_unlock(&reg_lock);
    if (st.total_allocs == 0 && st.live_objects == 0)
      continue;
    fn(id, &st, arg);
    visited++;
  }
  return visited;
}

const char *ec_allocator_name(void)
{
#if ECSHARD_JEMALLOC
  return "jemalloc";
#else
  return "libc";
#endif
}
