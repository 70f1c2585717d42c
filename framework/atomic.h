/*
 * framework/atomic.h - the atomics ecshard's own code uses (internal).
 *
 * Plain C11-style compiler builtins rather than ck_pr: ThreadSanitizer understands them,
 * while ck_pr's loads and stores are volatile accesses that it reports as races. ck's data
 * structures (ck_stack, ck_ring) still synchronise through ck_pr internally; where ecshard
 * hands data through them, ec__tsan_release/acquire tell TSan about the edge the structure
 * creates (no code in other builds). Every use names what it pairs with.
 */
#ifndef EC_FRAMEWORK_ATOMIC_H
#define EC_FRAMEWORK_ATOMIC_H

#define ec__load(p)             __atomic_load_n((p), __ATOMIC_RELAXED)
#define ec__load_acquire(p)     __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ec__store(p, v)         __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ec__store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ec__fetch_add(p, v)     __atomic_fetch_add((p), (v), __ATOMIC_ACQ_REL)
#define ec__fence()             __atomic_thread_fence(__ATOMIC_SEQ_CST)

/*
 * The full fence a store->load ordering needs right after a locked read-modify-write
 * (Concurrency Kit's CAS is inline assembly). On x86 a LOCK-prefixed instruction is a
 * full barrier already, so only the compiler must not reorder; elsewhere (and under TSan,
 * where ck uses compiler builtins) it is a real fence.
 */
#if (defined(__x86_64__) || defined(__i386__)) && !defined(CK_USE_CC_BUILTINS)
#define ec__fence_after_rmw() __asm__ __volatile__("" ::: "memory")
#else
#define ec__fence_after_rmw() ec__fence()
#endif

/* Compare-and-swap of an int; 1 if *p was `old` and is now `new`. Sequentially
 * consistent. */
static inline int ec__cas_int(int *p, int old, int new_)
{
  return __atomic_compare_exchange_n(p, &old, new_, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EC_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define EC_TSAN 1
#endif

#if defined(EC_TSAN)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define ec__tsan_release(addr) __tsan_release((void *)(addr))
#define ec__tsan_acquire(addr) __tsan_acquire((void *)(addr))
#else
#define ec__tsan_release(addr) ((void)0)
#define ec__tsan_acquire(addr) ((void)0)
#endif

#endif /* EC_FRAMEWORK_ATOMIC_H */
