/*
 * framework/reload.c - configuration reload (SIGHUP, ec_framework_reload, the console).
 *
 * A reload reads the configuration from the same sources init did, runs the same checks,
 * and only then publishes it (framework/config.c keeps the replaced one alive, so pointers
 * readers hold stay valid). Every changed setting is then either applied - log levels and
 * destination, limits, timeouts, the watchdog, and sections a reload hook of the same name
 * applies - or logged as needing a restart: the shards, their pollers and the listening
 * sockets are made once, at init and start. Nothing is silently ignored.
 */
#include "ec_stats.h"
#include "framework/internal.h"
#include "framework/listener.h"
#include "pool/pool.h"
#include "shard/shard.h"

#include "framework/atomic.h"
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <string.h>

#define MAX_HOOKS 32

static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER; /* one reload at a time */
static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  char *name;
  int (*fn)(void *arg);
  void *arg;
} hooks[MAX_HOOKS];
static int nhooks;
static uint64_t reloads, reload_failures; /* atomic */

/* Settings the framework applies at run time (glob patterns over dotted paths). */
static const char *const live_paths[] = {
    "log.level",
    "log.file",
    "log.target",
    "log.syslog_*",
    "debug_flags.*",
    "limits.*",
    "shutdown.*",
    "watchdog.*",
    "io_wrapper.*",
    "listener.*.max_connections",
    "listener.*.idle_timeout",
    "listener.*.handshake_timeout",
};

int ec_reload_register(const char *name, int (*fn)(void *arg), void *arg)
{
  int rc = 0;

  if (name == NULL || name[0] == '\0' || fn == NULL)
    return -EINVAL;
  pthread_mutex_lock(&hooks_lock);
  for (int i = 0; i < nhooks; i++)
    if (strcmp(hooks[i].name, name) == 0)
      rc = -EEXIST;
  if (rc == 0 && nhooks == MAX_HOOKS)
    rc = -ENOSPC;
  if (rc == 0 && (hooks[nhooks].name = ec_strdup(name)) == NULL)
    rc = -ENOMEM;
  if (rc == 0) {
    hooks[nhooks].fn = fn;
    hooks[nhooks].arg = arg;
    nhooks++;
  }
  pthread_mutex_unlock(&hooks_lock);
  return rc;
}

void fw__reload_fini(void)
{
  pthread_mutex_lock(&hooks_lock);
  for (int i = 0; i < nhooks; i++)
    ec_free(MEMTYPE_GENERIC, hooks[i].name);
  nhooks = 0;
  pthread_mutex_unlock(&hooks_lock);
  ec__store(&reloads, 0);
  ec__store(&reload_failures, 0);
}

uint64_t ec_framework_reload_count(int failed)
{
  return ec__load(failed ? &reload_failures : &reloads);
}

static int hooked(const char *path)
{
  size_t n;
  int found = 0;

  pthread_mutex_lock(&hooks_lock);
  for (int i = 0; i < nhooks && !found; i++) {
    n = strlen(hooks[i].name);
    /* A hook named "tls" covers listener.*.tls.*, one named after a section covers it. */
    found = (strncmp(path, hooks[i].name, n) == 0 && (path[n] == '.' || path[n] == '\0')) ||
            (strcmp(hooks[i].name, "tls") == 0 && fnmatch("listener.*.tls.*", path, 0) == 0);
  }
  pthread_mutex_unlock(&hooks_lock);
  return found;
}

static int is_live(const char *path)
{
  for (size_t i = 0; i < sizeof(live_paths) / sizeof(live_paths[0]); i++)
    if (fnmatch(live_paths[i], path, 0) == 0)
      return 1;
  return hooked(path);
}

typedef struct diff_count {
  int applied, restart;
} diff_count;

static void on_change(const char *path, const char *old, const char *now, void *arg)
{
  diff_count *c = arg;

  if (is_live(path)) {
    c->applied++;
    ec_debug_printf(DNOTICE, EC_LOG_CONFIG, "reload: %s: %s -> %s (applied)", path, old, now);
  } else {
    c->restart++;
    ec_debug_printf(DWARNING, EC_LOG_CONFIG,
                    "reload: %s: %s -> %s NOT applied: it takes effect only after a restart", path,
                    old, now);
  }
}

static int run_hooks(void)
{
  int rc = 0;

  pthread_mutex_lock(&hooks_lock);
  for (int i = 0; i < nhooks; i++) {
    int r = hooks[i].fn(hooks[i].arg);

    if (r < 0) {
      ec_debug_printf(DERROR, EC_LOG_CONFIG, "reload: hook %s failed: %s", hooks[i].name,
                      strerror(-r));
      if (rc == 0)
        rc = r;
    }
  }
  pthread_mutex_unlock(&hooks_lock);
  return rc;
}

int ec_framework_reload(void)
{
  const config_t *old_cfg, *new_cfg;
  diff_count c = {0, 0};
  int rc, r;

  if (shard__self() != NULL) {
    ec_debug_printf(DERROR, EC_LOG_CONFIG,
                    "ec_framework_reload called on a shard (it reads "
                    "files): use ec_framework_request");
    return -EDEADLK;
  }
  if (!ec_framework_initialized())
    return -ESHUTDOWN;
  if (pthread_mutex_trylock(&reload_lock) != 0)
    return -EBUSY;
  rc = fw__config_reload(&old_cfg, &new_cfg);
  if (rc < 0) {
    ec__fetch_add(&reload_failures, 1);
    ec_debug_printf(DERROR, EC_LOG_CONFIG,
                    "reload: the configuration was refused (%s); the running one stays",
                    strerror(-rc));
    pthread_mutex_unlock(&reload_lock);
    return rc;
  }
  /* The log settings first, so that the new level decides what of the report shows;
   * then the report, the framework's other run-time settings, and the hooks. */
  r = fw__log_reconfigure();
  if (r < 0)
    rc = r;
  fw__config_diff(old_cfg, new_cfg, on_change, &c);
  fw__listeners_reconfigure();
  shard__ops_configure();
  pool__io_configure();
  r = run_hooks();
  if (rc == 0)
    rc = r;
  ec__fetch_add(&reloads, 1);
  ec_debug_printf(DNOTICE, EC_LOG_CONFIG,
                  "configuration reloaded: %d change(s) applied, %d need a restart", c.applied,
                  c.restart);
  pthread_mutex_unlock(&reload_lock);
  return rc;
}
