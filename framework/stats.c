/*
 * framework/stats.c - every counter of the process as Prometheus text or JSON
 * (ec_stats.h, docs/operations.md).
 *
 * A render collects samples first (the framework's, then each registered source's) and
 * formats them afterwards, so that samples of one metric are grouped whatever order they
 * were emitted in, as the Prometheus text format requires, and both formats come from the
 * same collection. Nothing is cached: a render reads the live counters (relaxed loads)
 * and takes only the short locks the memtype and pool readers take.
 */
#include "ec_malloc.h"
#include "ec_stats.h"
#include "ec_thread_pool.h"
#include "framework/internal.h"
#include "framework/listener.h"

#include "framework/atomic.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#ifdef ECSHARD_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#define MAX_SOURCES 64
#define TYPE_HIST   2 /* internal: a histogram family */

typedef struct family {
  char *name, *help;
  int type;
  int first, last; /* sample indices, linked through sample.next */
} family;

typedef struct sample {
  int next;
  const char *suffix; /* "_bucket", "_sum", "_count" for histograms, else "" */
  char *labels;       /* name\0value\0...\0 pairs, or NULL */
  size_t labels_len;
  int is_u64;
  uint64_t u;
  double d;
} sample;

struct ec_stats_writer {
  family *fam;
  int nfam, capfam;
  sample *smp;
  int nsmp, capsmp;
  int oom;
};

static struct {
  char *name;
  ec_stats_source_fn fn;
  void *arg;
} sources[MAX_SOURCES];
static int nsources;
static pthread_rwlock_t sources_lock = PTHREAD_RWLOCK_INITIALIZER;

static uint64_t start_wall_s; /* fw__stats_init */

/* ---- collection ------------------------------------------------------------------------ */

static int valid_metric_name(const char *s)
{
  if (s == NULL || !(isalpha((unsigned char)*s) || *s == '_' || *s == ':'))
    return 0;
  for (s++; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_' || *s == ':'))
      return 0;
  return 1;
}

static int valid_label_name(const char *s)
{
  if (s == NULL || !(isalpha((unsigned char)*s) || *s == '_'))
    return 0;
  for (s++; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_'))
      return 0;
  return 1;
}

static int family_get(ec_stats_writer *w, const char *name, int type, const char *help)
{
  family *f;

  /* Samples of one metric usually come in a row: try the newest family first. */
  if (w->nfam > 0 && strcmp(w->fam[w->nfam - 1].name, name) == 0)
    return w->nfam - 1;
  for (int i = 0; i < w->nfam; i++)
    if (strcmp(w->fam[i].name, name) == 0)
      return i;
  if (w->nfam == w->capfam) {
    int cap = w->capfam ? w->capfam * 2 : 64;
    family *nf = ec_realloc(MEMTYPE_GENERIC, w->fam, sizeof(*nf) * (size_t)cap);

    if (nf == NULL)
      return -1;
    w->fam = nf;
    w->capfam = cap;
  }
  f = &w->fam[w->nfam];
  f->name = ec_strdup(name);
  f->help = ec_strdup(help ? help : "");
  if (f->name == NULL || f->help == NULL) {
    ec_free(MEMTYPE_GENERIC, f->name);
    ec_free(MEMTYPE_GENERIC, f->help);
    return -1;
  }
  f->type = type;
  f->first = f->last = -1;
  return w->nfam++;
}

static void emit(ec_stats_writer *w, const char *name, const char *suffix, int type,
                 const char *help, const char *const *labels, int is_u64, uint64_t u, double d)
{
  size_t ll = 0;
  sample *s;
  int fi;

  if (w == NULL || w->oom)
    return;
  if (!valid_metric_name(name)) {
    ec_debug_printf(DERROR, EC_LOG_MOD, "stats: bad metric name '%s'; sample dropped",
                    name ? name : "(null)");
    return;
  }
  for (const char *const *l = labels; l != NULL && l[0] != NULL; l += 2) {
    if (!valid_label_name(l[0]) || l[1] == NULL) {
      ec_debug_printf(DERROR, EC_LOG_MOD, "stats: %s: bad label '%s'; sample dropped", name, l[0]);
      return;
    }
    ll += strlen(l[0]) + strlen(l[1]) + 2;
  }
  fi = family_get(w, name, type, help);
  if (fi < 0) {
    w->oom = 1;
    return;
  }
  if (w->nsmp == w->capsmp) {
    int cap = w->capsmp ? w->capsmp * 2 : 256;
    sample *ns = ec_realloc(MEMTYPE_GENERIC, w->smp, sizeof(*ns) * (size_t)cap);

    if (ns == NULL) {
      w->oom = 1;
      return;
    }
    w->smp = ns;
    w->capsmp = cap;
  }
  s = &w->smp[w->nsmp];
  memset(s, 0, sizeof(*s));
  s->next = -1;
  s->suffix = suffix;
  s->is_u64 = is_u64;
  s->u = u;
  s->d = d;
  if (ll > 0) {
    char *p = s->labels = ec_malloc_size(MEMTYPE_GENERIC, ll);

    if (p == NULL) {
      w->oom = 1;
      return;
    }
    for (const char *const *l = labels; l[0] != NULL; l += 2) {
      size_t a = strlen(l[0]) + 1, b = strlen(l[1]) + 1;

      memcpy(p, l[0], a);
      memcpy(p + a, l[1], b);
      p += a + b;
    }
    s->labels_len = ll;
  }
  if (w->fam[fi].last >= 0)
    w->smp[w->fam[fi].last].next = w->nsmp;
  else
    w->fam[fi].first = w->nsmp;
  w->fam[fi].last = w->nsmp;
  w->nsmp++;
}

void ec_stats_emit(ec_stats_writer *w, const char *name, int type, const char *help,
                   const char *const *labels, double value)
{
  emit(w, name, "", type == EC_STATS_COUNTER ? EC_STATS_COUNTER : EC_STATS_GAUGE, help, labels, 0,
       0, value);
}

void ec_stats_emit_u64(ec_stats_writer *w, const char *name, int type, const char *help,
                       const char *const *labels, uint64_t value)
{
  emit(w, name, "", type == EC_STATS_COUNTER ? EC_STATS_COUNTER : EC_STATS_GAUGE, help, labels, 1,
       value, 0);
}

static void writer_free(ec_stats_writer *w)
{
  for (int i = 0; i < w->nfam; i++) {
    ec_free(MEMTYPE_GENERIC, w->fam[i].name);
    ec_free(MEMTYPE_GENERIC, w->fam[i].help);
  }
  for (int i = 0; i < w->nsmp; i++)
    ec_free(MEMTYPE_GENERIC, w->smp[i].labels);
  ec_free(MEMTYPE_GENERIC, w->fam);
  ec_free(MEMTYPE_GENERIC, w->smp);
}

/* ---- the framework's own metrics ---------------------------------------------------------- */

#define C EC_STATS_COUNTER
#define G EC_STATS_GAUGE

static void collect_shards(ec_stats_writer *w)
{
  ec_shard_stats st;
  char id[16];

  for (int i = 0; i < ec_shard_count(); i++) {
    const char *lb[] = {"shard", id, NULL};
    uint64_t cum = 0;

    uint64_t hist[EC_SHARD_HIST_BUCKETS];

    if (ec_shard_stats_get(i, &st) < 0 || ec_shard_callback_hist_get(i, hist) < 0)
      continue;
    snprintf(id, sizeof(id), "%d", i);
    ec_stats_emit_u64(w, "ecshard_shard_iterations_total", C, "Loop iterations", lb, st.iterations);
    ec_stats_emit_u64(w, "ecshard_shard_callbacks_total", C, "Callbacks dispatched", lb,
                      st.dispatched);
    ec_stats_emit_u64(w, "ecshard_shard_mailbox_messages_total", C,
                      "Mailbox messages handled (schedules, dispatch requests, closures)", lb,
                      st.messages);
    ec_stats_emit_u64(w, "ecshard_shard_mailbox_backlog", G,
                      "Messages queued in the mailbox, not yet handled", lb, st.mailbox_backlog);
    ec_stats_emit_u64(w, "ecshard_shard_wakeups_total", C,
                      "Eventfd writes other threads made to wake the shard", lb, st.wakeups_sent);
    ec_stats_emit_u64(w, "ecshard_shard_sleeps_total", C, "Waits for work with a timeout", lb,
                      st.sleeps);
    ec_stats_emit_u64(w, "ecshard_shard_mailbox_spins_total", C,
                      "Mailbox polls before sleeping (event_loop.mailbox_spin_ns)", lb, st.spins);
    ec_stats_emit_u64(w, "ecshard_shard_mailbox_spin_hits_total", C,
                      "Mailbox polls before sleeping that found messages", lb, st.spin_hits);
    ec_stats_emit_u64(w, "ecshard_shard_io_spins_total", C,
                      "Readiness polls before sleeping (event_loop.io_spin_ns)", lb, st.io_spins);
    ec_stats_emit_u64(w, "ecshard_shard_io_spin_hits_total", C,
                      "Readiness polls before sleeping that found I/O", lb, st.io_spin_hits);
    ec_stats_emit_u64(w, "ecshard_shard_fds", G, "Descriptors registered with the poller", lb,
                      st.scheduled_fds);
    ec_stats_emit_u64(w, "ecshard_shard_poller_changes_total", C,
                      "Interest changes sent to the poller", lb, st.syscalls_ctl);
    ec_stats_emit_u64(w, "ecshard_shard_timers_pending", G, "Timed Events waiting", lb,
                      st.timers_pending);
    ec_stats_emit_u64(w, "ecshard_shard_timers_fired_total", C, "Timed Events dispatched", lb,
                      st.timers_fired);
    ec_stats_emit_u64(w, "ecshard_shard_read_bytes_total", C, "Bytes event_read returned", lb,
                      st.bytes_in);
    ec_stats_emit_u64(w, "ecshard_shard_written_bytes_total", C,
                      "Bytes event_write and event_io_* wrote", lb, st.bytes_out);
    ec_stats_emit_u64(w, "ecshard_shard_stalls_total", C,
                      "Iterations the watchdog saw run past the stall threshold", lb, st.stalls);
    ec_stats_emit_u64(w, "ecshard_shard_stalled", G,
                      "1 while an iteration runs past the stall threshold", lb,
                      (uint64_t)st.stalled);
    ec_stats_emit_u64(w, "ecshard_shard_slow_callbacks_total", C,
                      "Timed callbacks that ran past the stall threshold", lb, st.slow_callbacks);
    ec_stats_emit_u64(w, "ecshard_shard_busy", G, "1 while the shard runs, 0 while it waits", lb,
                      (uint64_t)st.busy);
    /* The duration histogram (callback timing on; all zero otherwise). */
    for (int b = 0; b < EC_SHARD_HIST_BUCKETS; b++) {
      char le[32];
      const char *hl[] = {"shard", id, "le", le, NULL};

      cum += hist[b];
      if (b == EC_SHARD_HIST_BUCKETS - 1)
        snprintf(le, sizeof(le), "+Inf");
      else
        snprintf(le, sizeof(le), "%.6g", ldexp(1e-6, b));
      emit(w, "ecshard_shard_callback_duration_seconds", "_bucket", TYPE_HIST,
           "Callback run time (only while callback timing is on)", hl, 1, cum, 0);
    }
    emit(w, "ecshard_shard_callback_duration_seconds", "_sum", TYPE_HIST, NULL, lb, 0, 0,
         (double)st.callback_ns / 1e9);
    emit(w, "ecshard_shard_callback_duration_seconds", "_count", TYPE_HIST, NULL, lb, 1,
         st.callbacks_timed, 0);
  }
}

static void collect_listeners(ec_stats_writer *w)
{
  ec_stats_emit_u64(w, "ecshard_sessions_active", G, "Sessions open on all listeners", NULL,
                    ec_sessions_active());
  for (int i = 0; i < fw__listener_count(); i++) {
    fw__listener *l = fw__listener_get(i);
    ec_listener_stats st;

    if (l == NULL || ec_listener_stats_get(l->name, &st) < 0)
      continue;
    {
      const char *lb[] = {"listener", l->name, "protocol", l->proto->name, NULL};

      ec_stats_emit_u64(w, "ecshard_listener_accepted_total", C, "Connections accepted", lb,
                        st.accepted);
      ec_stats_emit_u64(w, "ecshard_listener_refused_total", C,
                        "Connections refused (limits, accept hook)", lb, st.refused);
      ec_stats_emit_u64(w, "ecshard_listener_sessions", G, "Sessions open now", lb, st.active);
      ec_stats_emit_u64(w, "ecshard_listener_timeouts_total", C,
                        "Sessions sent E_TIMEOUT (idle, handshake, drain)", lb, st.timeouts);
      ec_stats_emit_u64(w, "ecshard_listener_proxy_errors_total", C,
                        "Malformed or missing PROXY headers", lb, st.proxy_errors);
      ec_stats_emit_u64(w, "ecshard_listener_accept_pauses_total", C,
                        "Times accepting paused on EMFILE/ENFILE", lb, st.accept_pauses);
    }
  }
}

static void memtype_cb(int id, const ec_memtype_stats *st, void *arg)
{
  ec_stats_writer *w = arg;
  char num[16];
  const char *lb[] = {"memtype", st->name ? st->name : num, NULL};

  snprintf(num, sizeof(num), "%d", id);
  ec_stats_emit(w, "ecshard_memtype_live_objects", G, "Allocations not yet freed", lb,
                (double)st->live_objects);
  ec_stats_emit(w, "ecshard_memtype_live_bytes", G, "Requested bytes not yet freed", lb,
                (double)st->live_bytes);
  ec_stats_emit(w, "ecshard_memtype_peak_objects", G, "Highest live allocations seen", lb,
                (double)st->peak_objects);
  ec_stats_emit(w, "ecshard_memtype_peak_bytes", G, "Highest live bytes seen", lb,
                (double)st->peak_bytes);
  ec_stats_emit_u64(w, "ecshard_memtype_allocations_total", C, "Allocations since start", lb,
                    st->total_allocs);
}

static void collect_memory(ec_stats_writer *w)
{
  ec_memtype_stats_foreach(memtype_cb, w);
#ifdef ECSHARD_JEMALLOC
  {
    static const struct {
      const char *ctl, *name, *help;
    } je[] = {
        {"stats.allocated", "ecshard_jemalloc_allocated_bytes",
         "Bytes allocated by the application"},
        {"stats.active", "ecshard_jemalloc_active_bytes", "Bytes in active pages"},
        {"stats.resident", "ecshard_jemalloc_resident_bytes", "Bytes in physically resident pages"},
        {"stats.mapped", "ecshard_jemalloc_mapped_bytes", "Bytes in active extents mapped"},
        {"stats.retained", "ecshard_jemalloc_retained_bytes",
         "Bytes retained, not returned to the OS"},
    };
    uint64_t epoch = 1;
    size_t sz = sizeof(epoch);

    /* jemalloc's statistics are a snapshot refreshed by writing the epoch. */
    if (mallctl("epoch", &epoch, &sz, &epoch, sz) == 0) {
      for (size_t i = 0; i < sizeof(je) / sizeof(je[0]); i++) {
        size_t v = 0, vs = sizeof(v);

        if (mallctl(je[i].ctl, &v, &vs, NULL, 0) == 0)
          ec_stats_emit_u64(w, je[i].name, G, je[i].help, NULL, (uint64_t)v);
      }
    }
  }
#endif
}

static void collect_pools(ec_stats_writer *w)
{
  int n = ec_thread_pool_count(), seen = 0;

  for (int c = 0; seen < n && c < 1024; c++) {
    ec_thread_pool_stats st;

    if (ec_thread_pool_stats_get(c, &st) < 0)
      continue;
    seen++;
    {
      const char *lb[] = {"pool", st.name, NULL};

      ec_stats_emit_u64(w, "ecshard_pool_threads", G, "Worker threads", lb, (uint64_t)st.threads);
      ec_stats_emit_u64(w, "ecshard_pool_queued", G, "Jobs waiting", lb, st.queued);
      ec_stats_emit_u64(w, "ecshard_pool_running", G, "Jobs running", lb, st.running);
      ec_stats_emit_u64(w, "ecshard_pool_queued_peak", G, "Most jobs waiting at once", lb,
                        st.peak_queued);
      ec_stats_emit_u64(w, "ecshard_pool_submitted_total", C, "Jobs accepted", lb, st.submitted);
      ec_stats_emit_u64(w, "ecshard_pool_done_total", C, "Jobs finished", lb, st.done);
      ec_stats_emit_u64(w, "ecshard_pool_rejected_total", C, "Jobs refused: backlog full", lb,
                        st.rejected);
      ec_stats_emit_u64(w, "ecshard_pool_skipped_total", C, "Jobs dropped at shutdown", lb,
                        st.skipped);
      ec_stats_emit(w, "ecshard_pool_wait_seconds_total", C, "Time jobs waited in the queue", lb,
                    (double)st.wait_ns / 1e9);
      ec_stats_emit(w, "ecshard_pool_run_seconds_total", C, "Time of the work functions", lb,
                    (double)st.run_ns / 1e9);
    }
  }
}

static void collect_process(ec_stats_writer *w)
{
  const char *poller = ec_poller_name();
  const char *lb[] = {"version",   ECSHARD_VERSION_STRING, "poller", poller ? poller : "none",
                      "allocator", ec_allocator_name(),    NULL};
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  ec_stats_emit_u64(w, "ecshard_build_info", G, "Version, poller and allocator", lb, 1);
  ec_stats_emit_u64(w, "ecshard_start_time_seconds", G, "Start time (Unix seconds)", NULL,
                    ec__load(&start_wall_s));
  ec_stats_emit_u64(w, "ecshard_uptime_seconds", G, "Seconds since ec_framework_init", NULL,
                    (uint64_t)ts.tv_sec - ec__load(&start_wall_s));
  ec_stats_emit_u64(w, "ecshard_shards", G, "Scheduler threads", NULL, (uint64_t)ec_shard_count());
  ec_stats_emit_u64(w, "ecshard_stopping", G, "1 while a graceful stop drains", NULL,
                    (uint64_t)ec_framework_stopping());
  ec_stats_emit_u64(w, "ecshard_log_dropped_total", C, "Log lines dropped: logger queue full", NULL,
                    ec_log_dropped());
  ec_stats_emit_u64(w, "ecshard_config_reloads_total", C, "Configuration reloads applied", NULL,
                    ec_framework_reload_count(0));
  ec_stats_emit_u64(w, "ecshard_config_reload_failures_total", C, "Configuration reloads refused",
                    NULL, ec_framework_reload_count(1));
  ec_stats_emit_u64(w, "ecshard_callback_timing", G, "1 while every callback is timed", NULL,
                    (uint64_t)ec_stats_set_callback_timing(-1));
}

#undef C
#undef G

/* ---- formatting -------------------------------------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    char *np;

    while (b->len + n + 1 > cap)
      cap *= 2;
    np = ec_realloc(MEMTYPE_GENERIC, b->p, cap);
    if (np == NULL) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
  sb_put(b, s, strlen(s));
}

EC_PRINTF_LIKE(2, 3) static void sb_printf(sbuf *b, const char *fmt, ...)
{
  char tmp[128];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n > 0)
    sb_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Prometheus: label values escape \ " and newline; HELP text escapes \ and newline. */
static void sb_escape_prom(sbuf *b, const char *s, int quote)
{
  for (; *s; s++) {
    if (*s == '\\')
      sb_str(b, "\\\\");
    else if (*s == '\n')
      sb_str(b, "\\n");
    else if (*s == '"' && quote)
      sb_str(b, "\\\"");
    else
      sb_put(b, s, 1);
  }
}

static void sb_escape_json(sbuf *b, const char *s)
{
  sb_str(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;

    if (c == '"' || c == '\\') {
      sb_put(b, "\\", 1);
      sb_put(b, s, 1);
    } else if (c < 0x20 || c == 0x7f) {
      sb_printf(b, "\\u%04x", c);
    } else {
      sb_put(b, s, 1);
    }
  }
  sb_str(b, "\"");
}

static void sb_value(sbuf *b, const sample *s, int json)
{
  if (s->is_u64)
    sb_printf(b, "%llu", (unsigned long long)s->u);
  else if (isnan(s->d))
    sb_str(b, json ? "null" : "NaN");
  else if (isinf(s->d))
    sb_str(b, json ? "null" : s->d > 0 ? "+Inf" : "-Inf");
  else
    sb_printf(b, "%.17g", s->d);
}

static const char *type_name(int type)
{
  return type == EC_STATS_COUNTER ? "counter" : type == TYPE_HIST ? "histogram" : "gauge";
}

static void render_prom(ec_stats_writer *w, sbuf *b)
{
  for (int i = 0; i < w->nfam; i++) {
    family *f = &w->fam[i];

    sb_str(b, "# HELP ");
    sb_str(b, f->name);
    sb_str(b, " ");
    sb_escape_prom(b, f->help, 0);
    sb_str(b, "\n# TYPE ");
    sb_str(b, f->name);
    sb_str(b, " ");
    sb_str(b, type_name(f->type));
    sb_str(b, "\n");
    for (int j = f->first; j >= 0; j = w->smp[j].next) {
      const sample *s = &w->smp[j];

      sb_str(b, f->name);
      sb_str(b, s->suffix);
      if (s->labels != NULL) {
        const char *p = s->labels, *end = s->labels + s->labels_len;

        sb_str(b, "{");
        while (p < end) {
          const char *v = p + strlen(p) + 1;

          if (p != s->labels)
            sb_str(b, ",");
          sb_str(b, p);
          sb_str(b, "=\"");
          sb_escape_prom(b, v, 1);
          sb_str(b, "\"");
          p = v + strlen(v) + 1;
        }
        sb_str(b, "}");
      }
      sb_str(b, " ");
      sb_value(b, s, 0);
      sb_str(b, "\n");
    }
  }
}

static void render_json(ec_stats_writer *w, sbuf *b)
{
  sb_str(b, "{\"version\":");
  sb_escape_json(b, ECSHARD_VERSION_STRING);
  sb_str(b, ",\"metrics\":{");
  for (int i = 0; i < w->nfam; i++) {
    family *f = &w->fam[i];

    if (i > 0)
      sb_str(b, ",");
    sb_str(b, "\n");
    sb_escape_json(b, f->name);
    sb_str(b, ":{\"type\":\"");
    sb_str(b, type_name(f->type));
    sb_str(b, "\",\"help\":");
    sb_escape_json(b, f->help);
    sb_str(b, ",\"samples\":[");
    for (int j = f->first; j >= 0; j = w->smp[j].next) {
      const sample *s = &w->smp[j];

      if (j != f->first)
        sb_str(b, ",");
      sb_str(b, "{");
      if (s->suffix[0] != '\0') {
        sb_str(b, "\"name\":\"");
        sb_str(b, f->name);
        sb_str(b, s->suffix);
        sb_str(b, "\",");
      }
      sb_str(b, "\"labels\":{");
      if (s->labels != NULL) {
        const char *p = s->labels, *end = s->labels + s->labels_len;

        while (p < end) {
          const char *v = p + strlen(p) + 1;

          if (p != s->labels)
            sb_str(b, ",");
          sb_escape_json(b, p);
          sb_str(b, ":");
          sb_escape_json(b, v);
          p = v + strlen(v) + 1;
        }
      }
      sb_str(b, "},\"value\":");
      sb_value(b, s, 1);
      sb_str(b, "}");
    }
    sb_str(b, "]}");
  }
  sb_str(b, "\n}}\n");
}

int ec_stats_render(int format, char **out)
{
  ec_stats_writer w;
  sbuf b = {0};

  if (out == NULL || (format != EC_STATS_PROMETHEUS && format != EC_STATS_JSON) ||
      !ec_framework_initialized())
    return -EINVAL;
  memset(&w, 0, sizeof(w));
  collect_process(&w);
  collect_shards(&w);
  collect_listeners(&w);
  collect_memory(&w);
  collect_pools(&w);
  pthread_rwlock_rdlock(&sources_lock);
  for (int i = 0; i < nsources; i++)
    sources[i].fn(&w, sources[i].arg);
  pthread_rwlock_unlock(&sources_lock);
  if (!w.oom) {
    if (format == EC_STATS_PROMETHEUS)
      render_prom(&w, &b);
    else
      render_json(&w, &b);
  }
  writer_free(&w);
  if (w.oom || b.oom || b.p == NULL) {
    ec_free(MEMTYPE_GENERIC, b.p);
    return -ENOMEM;
  }
  *out = b.p;
  return (int)b.len;
}

int fw__jemalloc_stat(const char *name, uint64_t *value)
{
#ifdef ECSHARD_JEMALLOC
  uint64_t epoch = 1;
  size_t sz = sizeof(epoch), v = 0, vs = sizeof(v);

  if (mallctl("epoch", &epoch, &sz, &epoch, sz) != 0 || mallctl(name, &v, &vs, NULL, 0) != 0)
    return -ENOENT;
  *value = (uint64_t)v;
  return 0;
#else
  (void)name;
  (void)value;
  return -ENOTSUP;
#endif
}

/* ---- sources ------------------------------------------------------------------------------ */

int ec_stats_register_source(const char *name, ec_stats_source_fn fn, void *arg)
{
  int rc = 0;

  if (name == NULL || name[0] == '\0' || fn == NULL)
    return -EINVAL;
  pthread_rwlock_wrlock(&sources_lock);
  for (int i = 0; i < nsources; i++)
    if (strcmp(sources[i].name, name) == 0)
      rc = -EEXIST;
  if (rc == 0 && nsources == MAX_SOURCES)
    rc = -ENOSPC;
  if (rc == 0) {
    sources[nsources].name = ec_strdup(name);
    if (sources[nsources].name == NULL) {
      rc = -ENOMEM;
    } else {
      sources[nsources].fn = fn;
      sources[nsources].arg = arg;
      nsources++;
    }
  }
  pthread_rwlock_unlock(&sources_lock);
  return rc;
}

int ec_stats_unregister_source(const char *name)
{
  int rc = -ENOENT;

  pthread_rwlock_wrlock(&sources_lock);
  for (int i = 0; name != NULL && i < nsources; i++) {
    if (strcmp(sources[i].name, name) != 0)
      continue;
    ec_free(MEMTYPE_GENERIC, sources[i].name);
    memmove(&sources[i], &sources[i + 1], sizeof(sources[0]) * (size_t)(nsources - i - 1));
    nsources--;
    rc = 0;
    break;
  }
  pthread_rwlock_unlock(&sources_lock);
  return rc;
}

void fw__stats_init(void)
{
  ec__store(&start_wall_s, (uint64_t)time(NULL));
}

void fw__stats_fini(void)
{
  pthread_rwlock_wrlock(&sources_lock);
  for (int i = 0; i < nsources; i++)
    ec_free(MEMTYPE_GENERIC, sources[i].name);
  nsources = 0;
  pthread_rwlock_unlock(&sources_lock);
}
