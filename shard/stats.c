/*
 * shard/stats.c - the shards' operations counters, callback timing and the watchdog.
 *
 * Nothing here costs the dispatch path more than a store of the callback pointer and a
 * load of the shard's `timing` flag (shard.c): the counters are the ones the loop keeps
 * anyway, and stall detection is done from outside. The watchdog thread samples every
 * shard's iteration counter a few times per stall threshold. A shard that is not waiting
 * for work (its mailbox `sleeping` flag is clear) and whose counter has not moved since
 * an earlier sample is inside one iteration: once that has lasted the stall threshold it
 * is logged with the function it is running (the callback pointer the shard published),
 * and once it lasts the stuck timeout it is reported as stuck, at critical level. The
 * measured time is a lower bound (it starts at the first sample that saw the shard busy),
 * so a report is never a false alarm, at the price of reporting up to one sampling period
 * late. With callback timing on, each callback is also timed exactly on its shard.
 */
#include "ec_stats.h"
#include "framework/internal.h"
#include "shard/shard.h"

#include "framework/atomic.h"
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define NS_PER_S 1000000000ull

/* Any thread (relaxed): thresholds in ns and the timing switch. */
static uint64_t stall_ns = 200000000ull;
static uint64_t stuck_ns = 5 * NS_PER_S;
static int timing_on;

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond; /* on CLOCK_MONOTONIC, as the samples are (wd_once) */
  pthread_t thread;
  int running, stop;
} wd = {.lock = PTHREAD_MUTEX_INITIALIZER};
static pthread_once_t wd_once = PTHREAD_ONCE_INIT;

static void wd_cond_init(void)
{
  pthread_condattr_t ca;

  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&wd.cond, &ca);
  pthread_condattr_destroy(&ca);
}

void shard__fn_name(void (*fn)(void), char *buf, size_t len)
{
  void *addr = (void *)(uintptr_t)fn;
  Dl_info di;

  if (fn == NULL) {
    snprintf(buf, len, "(no callback: the loop itself)");
    return;
  }
  if (dladdr(addr, &di) == 0 || di.dli_fname == NULL) {
    snprintf(buf, len, "%p", addr);
    return;
  }
  if (di.dli_sname != NULL && di.dli_saddr == addr) {
    snprintf(buf, len, "%s", di.dli_sname);
  } else {
    /* A static function has no dynamic symbol: name the object and the offset, which
     * `addr2line -f -e OBJECT OFFSET` turns into a function and a line. */
    const char *base = strrchr(di.dli_fname, '/');

    snprintf(buf, len, "%s+0x%lx", base ? base + 1 : di.dli_fname,
             (unsigned long)((uintptr_t)addr - (uintptr_t)di.dli_fbase));
  }
}

static void stat_timed(shard *s, void (*fn)(void), uint64_t start_ns)
{
  uint64_t now = fw__mono_ns(), d = now - start_ns, us = d / 1000;
  int b = us == 0 ? 0 : 64 - __builtin_clzll(us);
  uint64_t lim = ec__load(&stall_ns);

  if (b >= SHARD__HIST)
    b = SHARD__HIST - 1;
  /* Relaxed: owner-written counters, read by ec_shard_stats_get. */
  ec__store(&s->counters.cb_hist[b], s->counters.cb_hist[b] + 1);
  ec__store(&s->counters.cb_count, s->counters.cb_count + 1);
  ec__store(&s->counters.cb_ns, s->counters.cb_ns + d);
  if (lim == 0 || d < lim)
    return;
  ec__store(&s->counters.slow_callbacks, s->counters.slow_callbacks + 1);
  /* At most one line per shard and second: a callback that is always slow must not flood
   * the log queue (the others are counted and summed up in the next line). */
  if (s->slow_logged_ns != 0 && now - s->slow_logged_ns < NS_PER_S) {
    s->slow_quiet++;
    return;
  }
  {
    char name[256];

    shard__fn_name(fn, name, sizeof(name));
    ec_debug_printf(DWARNING, EC_LOG_SHARD,
                    "shard %d: callback %s ran for %.1f ms (stall threshold %.1f ms)%s", s->id,
                    name, (double)d / 1e6, (double)lim / 1e6,
                    s->slow_quiet ? "; more slow callbacks since the last report" : "");
  }
  s->slow_logged_ns = now;
  s->slow_quiet = 0;
}

int shard__dispatch_timed(shard *s, Event *e, EventFunc cb, int mask)
{
  uint64_t t0 = fw__mono_ns();
  int ret = cb(e, mask, e->closure, &s->now);

  stat_timed(s, (void (*)(void))cb, t0);
  return ret;
}

void shard__stats_fill(shard *s, ec_shard_stats *out)
{
  out->bytes_in = ec__load(&s->counters.bytes_in);
  out->bytes_out = ec__load(&s->counters.bytes_out);
  out->mailbox_backlog = shard__mailbox_depth(s);
  out->slow_callbacks = ec__load(&s->counters.slow_callbacks);
  out->callbacks_timed = ec__load(&s->counters.cb_count);
  out->callback_ns = ec__load(&s->counters.cb_ns);
  out->stalls = ec__load(&s->wd_stalls);
  out->stalled = ec__load(&s->wd_stalled);
  out->thread_id = (int)ec__load(&s->tid);
  out->busy = out->thread_id != 0 && !ec__load(&s->sleeping);
}

int ec_shard_callback_hist_get(int id, uint64_t hist[EC_SHARD_HIST_BUCKETS])
{
  shard *s = shard__get(id);

  if (s == NULL || hist == NULL)
    return -EINVAL;
  for (int i = 0; i < SHARD__HIST; i++)
    hist[i] = ec__load(&s->counters.cb_hist[i]); /* owner-written */
  return 0;
}

/* ---- settings ------------------------------------------------------------------------- */

int ec_stats_set_callback_timing(int on)
{
  int prev = ec__load(&timing_on);

  if (on < 0)
    return prev;
  ec__store(&timing_on, on ? 1 : 0);
  /* Relaxed: each shard reads its own copy at its next dispatch. */
  for (int i = 0; i < shard__count(); i++)
    ec__store(&shard__get(i)->timing, on ? 1 : 0);
  return prev;
}

int ec_stats_set_stall_thresholds(double stall, double stuck)
{
  double cur_stall = (double)ec__load(&stall_ns) / 1e9,
         cur_stuck = (double)ec__load(&stuck_ns) / 1e9;

  if (stall < 0 || stuck < 0 || stall > 86400 || stuck > 86400)
    return -EINVAL;
  if (stall > 0)
    cur_stall = stall;
  if (stuck > 0)
    cur_stuck = stuck;
  if (cur_stuck < cur_stall)
    return -EINVAL;
  ec__store(&stall_ns, (uint64_t)(cur_stall * 1e9));
  ec__store(&stuck_ns, (uint64_t)(cur_stuck * 1e9));
  /* The watchdog's sampling period follows the threshold. */
  pthread_once(&wd_once, wd_cond_init);
  pthread_mutex_lock(&wd.lock);
  pthread_cond_signal(&wd.cond);
  pthread_mutex_unlock(&wd.lock);
  return 0;
}

void shard__ops_configure(void)
{
  double stall = ec_config_get_double("watchdog.stall_threshold", 0.2);
  double stuck = ec_config_get_double("watchdog.stuck_timeout", 5.0);

  if (ec_stats_set_stall_thresholds(stall, stuck < stall ? stall : stuck) < 0)
    ec_debug_printf(DERROR, EC_LOG_CONFIG, "watchdog: bad thresholds %.3f / %.3f s; kept", stall,
                    stuck);
  ec_stats_set_callback_timing(ec_config_get_bool("watchdog.callback_timing", 0));
}

/* ---- the watchdog thread --------------------------------------------------------------- */

typedef struct wd_shard {
  uint64_t iterations; /* as last seen */
  uint64_t busy_since; /* first sample that saw this iteration busy; 0: not busy */
  int reported;        /* 0, 1 = stall logged, 2 = stuck logged */
} wd_shard;

static void wd_report(shard *s, wd_shard *w, uint64_t now, int stuck)
{
  char name[256];

  /* Relaxed: a hint, see the file comment. */
  shard__fn_name(ec__load(&s->stat_fn), name, sizeof(name));
  if (!stuck)
    ec_debug_printf(DWARNING, EC_LOG_SHARD,
                    "shard %d: stall: one iteration has been running for at least %.0f ms, in "
                    "%s",
                    s->id, (double)(now - w->busy_since) / 1e6, name);
  else
    ec_debug_printf(DCRITICAL, EC_LOG_SHARD,
                    "shard %d: stuck: no iteration finished for at least %.1f s, in %s", s->id,
                    (double)(now - w->busy_since) / 1e9, name);
}

static void wd_check(shard *s, wd_shard *w, uint64_t now)
{
  uint64_t it = ec__load(&s->counters.iterations);
  int busy = ec__load(&s->tid) != 0 && !ec__load(&s->sleeping);

  if (it != w->iterations || !busy) {
    if (w->reported)
      ec_debug_printf(DNOTICE, EC_LOG_SHARD, "shard %d: running again after at least %.0f ms",
                      s->id, (double)(now - w->busy_since) / 1e6);
    if (w->reported)
      ec__store(&s->wd_stalled, 0);
    w->iterations = it;
    w->busy_since = busy ? now : 0;
    w->reported = 0;
    return;
  }
  if (w->busy_since == 0) {
    w->busy_since = now;
    return;
  }
  if (w->reported == 0 && now - w->busy_since >= ec__load(&stall_ns)) {
    w->reported = 1;
    ec__store(&s->wd_stalls, s->wd_stalls + 1); /* only the watchdog writes it */
    ec__store(&s->wd_stalled, 1);
    wd_report(s, w, now, 0);
  }
  if (w->reported == 1 && now - w->busy_since >= ec__load(&stuck_ns)) {
    w->reported = 2;
    wd_report(s, w, now, 1);
  }
}

static void *wd_main(void *arg)
{
  int n = shard__count();
  wd_shard *st = arg;

  fw__log_thread_name("watchdog");
  pthread_setname_np(pthread_self(), "ecshard/wdog");
  for (int i = 0; i < n; i++)
    st[i] = (wd_shard){.iterations = ec__load(&shard__get(i)->counters.iterations)};
  pthread_mutex_lock(&wd.lock);
  while (!wd.stop) {
    /* A quarter of the threshold: a stall is seen at most that late. 5 ms .. 1 s. */
    uint64_t period = ec__load(&stall_ns) / 4;
    struct timespec ts;

    if (period < 5000000)
      period = 5000000;
    if (period > NS_PER_S)
      period = NS_PER_S;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)period;
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&wd.cond, &wd.lock, &ts);
    if (wd.stop)
      break;
    pthread_mutex_unlock(&wd.lock);
    for (int i = 0; i < n; i++)
      wd_check(shard__get(i), &st[i], fw__mono_ns());
    pthread_mutex_lock(&wd.lock);
  }
  pthread_mutex_unlock(&wd.lock);
  ec_free(MEMTYPE_GENERIC, st);
  fw__alloc_thread_exit();
  return NULL;
}

int shard__watchdog_start(void)
{
  sigset_t all, old;
  wd_shard *st;
  int rc;

  if (shard__count() == 0)
    return 0;
  st = ec_malloc_size(MEMTYPE_GENERIC, sizeof(*st) * (size_t)shard__count());
  if (st == NULL)
    return -ENOMEM;
  pthread_once(&wd_once, wd_cond_init);
  wd.stop = 0;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = -pthread_create(&wd.thread, NULL, wd_main, st);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc < 0) {
    ec_free(MEMTYPE_GENERIC, st);
    ec_debug_printf(DERROR, EC_LOG_SHARD, "watchdog: pthread_create: %s", strerror(-rc));
    return rc;
  }
  wd.running = 1;
  return 0;
}

void shard__watchdog_stop(void)
{
  if (!wd.running)
    return;
  pthread_mutex_lock(&wd.lock);
  wd.stop = 1;
  pthread_cond_signal(&wd.cond);
  pthread_mutex_unlock(&wd.lock);
  pthread_join(wd.thread, NULL);
  wd.running = 0;
}
