/*
 * ec_malloc.h - the memtyped allocator (Momentum's memory API) over jemalloc.
 *
 * Every allocation carries a memory type ("memtype"): a small integer naming what the
 * memory is for. Types are either fixed-size (one struct, allocated with ec_malloc) or
 * variable-size (ec_malloc_size / ec_realloc). The allocator keeps per-memtype live and
 * peak counts in per-thread counters (no shared cache line is written on the hot path)
 * and sums them on demand (ec_memtype_stats). Freeing memory under the wrong memtype is
 * caught: the call logs a critical message naming both types and frees the memory under
 * the type it was allocated with; a pointer that did not come from this allocator is
 * logged and left alone. Memory is never zeroed. All functions may be called from any
 * thread.
 */
#ifndef EC_MALLOC_H
#define EC_MALLOC_H

#include "ec_config.h"

/* Highest memtype id + 1. */
#define MEMTYPE_MAX             512
#define MEMTYPE_REGISTER_FAILED (-1)

/* Built-in memtypes, with Momentum's numbers. */
enum ec_memory_object_type {
  MEMTYPE_EVENT = 0,                 /* fixed: one Event */
  MEMTYPE_GENERIC = 1,               /* vsize: anything else */
  MEMTYPE_BUF_STORAGE = 7,           /* vsize */
  MEMTYPE_MESSAGE_BODY = 8,          /* vsize: tryread records, message bodies */
  MEMTYPE_EC_SSL_CTX = 18,           /* vsize */
  MEMTYPE_SMALL_BUF = 22,            /* fixed: 1 KiB */
  MEMTYPE_MEDIUM_BUF = 23,           /* fixed: 16 KiB */
  MEMTYPE_STRING = 51,               /* vsize: string contents */
  MEMTYPE_SP_CLOSE_INFO = 54,        /* vsize */
  MEMTYPE_EC_ASYNC_JOB = 55,         /* vsize: thread-pool jobs */
  MEMTYPE_SP_ASYNC_INFO = 56,        /* vsize */
  MEMTYPE_MEM_POOL = 57,             /* vsize */
  MEMTYPE_ACCEPT_CONSTRUCT = 67,     /* vsize */
  MEMTYPE_NETLISTENER_INSTANCE = 84, /* vsize */
  MEMTYPE_IO_OBJECT = 91,            /* vsize */
  MEMTYPE_IS_MALLOC_3C = 97,         /* plain malloc(3)/free(3): no header, still counted */
  MEMTYPE_EC_PTR_ARRAY = 113,        /* vsize */
  MEMTYPE_CIDRNODE_IPV6 = 115,       /* vsize */
  MEMTYPE_SHARD_MSG = 116,           /* fixed: a chunk of mailbox messages, 4032 bytes (ecshard) */
  MEMTYPE_LOG_MSG = 117,             /* vsize: a queued log line (ecshard) */
  MEMTYPE_CONFIG = 118,              /* vsize: configuration data (ecshard) */
  MEMTYPE_FD_TABLE = 119,            /* vsize: per-shard event tables (ecshard) */
  MEMTYPE_FIRST_DYNAMIC = 128        /* ec_memtype_register hands out ids from here */
};

#define EC_ALLOCATOR_VSIZE 1
#define EC_ALLOCATOR_FIXED 2

/* A memtype definition (Momentum's positional order). */
typedef struct ec_mem_type_def {
  const char *memtype_description; /* "module:thing"; must live for the whole process */
  size_t size;                     /* object size for FIXED, 0 for VSIZE */
  size_t aligned;                  /* alignment; 0 = natural (16) */
  int lock_class;                  /* deprecated, ignored */
  int allocator_type;              /* EC_ALLOCATOR_VSIZE or EC_ALLOCATOR_FIXED */
  int force_zero;                  /* debug: fill new memory with 0xa5 garbage */
} mem_type_def;

/* Per-memtype counters, summed over all threads at the time of the call. */
typedef struct ec_memtype_stats {
  const char *name;
  int allocator_type;
  size_t size;          /* fixed size, 0 for vsize */
  int64_t live_objects; /* allocations not yet freed */
  int64_t peak_objects; /* highest live_objects seen by any stats read (see docs) */
  int64_t live_bytes;   /* requested bytes not yet freed */
  int64_t peak_bytes;
  uint64_t total_allocs; /* allocations since start */
} ec_memtype_stats;

/* One object of a FIXED memtype, uninitialised; NULL (errno ENOMEM/EINVAL) on failure. */
EC_API void *ec_malloc(int object_type);

/* `size` bytes of any memtype, uninitialised; NULL (errno) on failure. */
EC_API void *ec_malloc_size(int object_type, size_t size);

/*
 * Resizes memory of a VSIZE memtype (`old` may be NULL). On failure returns NULL and
 * leaves `old` untouched. The type must be the one `old` was allocated with.
 */
EC_API void *ec_realloc(int object_type, void *old, size_t size);

/* Releases memory from any of the functions here; NULL is ignored. */
EC_API void ec_free(int object_type, void *ptr);

/* Registers a memtype; returns its id or MEMTYPE_REGISTER_FAILED. The struct is copied. */
EC_API int ec_memtype_register(const mem_type_def *def);

/* Id of a memtype by its description, or -1. */
EC_API int ec_memtype_by_name(const char *name);

/* Copies of NUL-terminated strings in a given (VSIZE) memtype; NULL on failure. */
EC_API char *ec_mt_strdup(int object_type, const char *str);
/* Copies exactly `len` bytes (NULs included) and appends a NUL. */
EC_API char *ec_mt_strndup(int object_type, const char *str, size_t len);
#define ec_strdup(s)     ec_mt_strdup(MEMTYPE_GENERIC, (s))
#define ec_strndup(s, n) ec_mt_strndup(MEMTYPE_GENERIC, (s), (n))

/* Formats into a new string of memtype `mt`; returns its length or -1. */
EC_API int ec_mt_asprintf(int mt, char **strp, const char *fmt, ...) EC_PRINTF_LIKE(3, 4);

/* Fills `out` for one memtype; 0, or -EINVAL for an unknown id. */
EC_API int ec_memtype_stats_get(int object_type, ec_memtype_stats *out);

/*
 * Calls `fn` for every memtype with live or past allocations, in id order, with counters
 * summed over all threads. Returns the number of memtypes visited.
 */
EC_API int ec_memtype_stats_foreach(void (*fn)(int id, const ec_memtype_stats *st, void *arg),
                                    void *arg);

/* Name of the underlying allocator ("jemalloc" or "libc"). */
EC_API const char *ec_allocator_name(void);

#endif /* EC_MALLOC_H */
