/*
 * framework/framework.c - bootstrap: init, start, stop, join, run (DESIGN §3.13).
 */
#include "ec_stats.h"
#include "framework/internal.h"
#include "framework/listener.h"
#include "pool/pool.h"
#include "shard/acceptor.h"
#include "shard/shard.h"

#include "framework/atomic.h"
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

enum { FW_DOWN, FW_INIT, FW_RUNNING, FW_STOPPING };

static int state = FW_DOWN; /* atomic */

static pthread_mutex_t lifecycle = PTHREAD_MUTEX_INITIALIZER;

/* ec_framework_request: an eventfd the thread in ec_framework_run polls, created once and
 * never closed (a request may come from a signal handler at any time), and the requests
 * pending. `run_active` says whether anybody polls it. All atomic. */
static int req_fd = -1;
static int req_bits;
static int run_active;

int fw__shards_running(void)
{
  return ec__load(&state) == FW_RUNNING;
}

int ec_framework_initialized(void)
{
  return ec__load(&state) != FW_DOWN;
}

int ec_framework_init(const ec_framework_options *opts)
{
  long long n, budget, nevents;
  const char *poller;
  int rc;

  pthread_mutex_lock(&lifecycle);
  if (ec__load(&state) != FW_DOWN) {
    pthread_mutex_unlock(&lifecycle);
    ec_debug_printf(DERROR, EC_LOG_START, "ec_framework_init: already initialised");
    return -EALREADY;
  }
  rc = fw__config_load(opts);
  if (rc < 0)
    goto out;
  rc = fw__log_start();
  if (rc < 0) {
    fw__config_unload();
    goto out;
  }
  n = ec_config_get_int("event_loop.concurrency", 0);
  if (n <= 0)
    n = fw__cpu_count();
  poller = ec_config_get_string("event_loop.poller", "auto");
  budget = ec_config_get_int("event_loop.mailbox_budget", 1024);
  nevents = ec_config_get_int("event_loop.events_per_wait", 512);
  if (budget < 1)
    budget = 1;
  if (nevents < 1)
    nevents = 1;
  rc = shard__create_all((int)n, poller, (int)budget, (int)nevents,
                         (int)ec_config_get_int("event_loop.max_timed_events_per_iter", 1024));
  if (rc < 0) {
    fw__log_stop();
    fw__config_unload();
    goto out;
  }
  /* Operations: stall thresholds and callback timing, the admin and console protocols. */
  fw__stats_init();
  shard__ops_configure();
  rc = fw__admin_register();
  if (rc < 0) {
    shard__destroy_all();
    fw__log_stop();
    fw__config_unload();
    goto out;
  }
  /* Thread pools (pool/): queues ready now, so jobs may be queued from init on; their
   * workers start with ec_framework_start. */
  rc = pool__init();
  if (rc < 0) {
    shard__destroy_all();
    fw__log_stop();
    fw__config_unload();
    goto out;
  }
  ec__store(&state, FW_INIT);
  ec_debug_printf(DNOTICE, EC_LOG_START, "ecshard %s: %lld shards, %s poller",
                  ECSHARD_VERSION_STRING, n, ec_poller_name());
out:
  pthread_mutex_unlock(&lifecycle);
  return rc;
}

int ec_framework_start(void)
{
  int rc;

  pthread_mutex_lock(&lifecycle);
  if (ec__load(&state) != FW_INIT) {
    int st = ec__load(&state);

    pthread_mutex_unlock(&lifecycle);
    return st == FW_DOWN ? -EINVAL : st == FW_STOPPING ? -ECANCELED : -EALREADY;
  }
  /* Listeners open here, on this thread, so that a port in use fails the start. Their
   * acceptors reach the shards through the mailboxes. */
  rc = fw__listeners_open();
  if (rc < 0) {
    pthread_mutex_unlock(&lifecycle);
    ec_debug_printf(DERROR, EC_LOG_START, "ec_framework_start: listeners: %s", strerror(-rc));
    return rc;
  }
  rc = pool__start(); /* worker threads; jobs queued since init start running */
  if (rc == 0)
    rc = shard__start_all();
  if (rc == 0)
    shard__watchdog_start(); /* logs a failure; the shards serve without it */
  /* A stop that arrives meanwhile has moved the state on already; keep it. */
  if (rc == 0)
    ec__cas_int(&state, FW_INIT, FW_RUNNING);
  pthread_mutex_unlock(&lifecycle);
  /* A listener that could not be watched on some shard (out of memory) would take its
   * share of connections and never accept them: fail the start instead. */
  if (rc == 0 && shard__acceptors_settle() > 0) {
    ec_debug_printf(DERROR, EC_LOG_START,
                    "ec_framework_start: listeners could not be installed on every shard; "
                    "stopping (call ec_framework_join)");
    ec_framework_stop();
    rc = -ENOMEM;
  }
  return rc;
}

void ec_framework_stop(void)
{
  /* Async-signal-safe: atomics and one write(2) to a descriptor that is never closed
   * (shard__stop_all), no lock, so it may race with a join in another thread. */
  if (ec__load(&state) == FW_DOWN)
    return;
  if (!ec__cas_int(&state, FW_RUNNING, FW_STOPPING))
    ec__cas_int(&state, FW_INIT, FW_STOPPING); /* before start: start will refuse */
  shard__stop_all();
}

int ec_framework_join(void)
{
  pthread_mutex_lock(&lifecycle);
  if (ec__load(&state) == FW_DOWN) {
    pthread_mutex_unlock(&lifecycle);
    return -EINVAL;
  }
  if (shard__self() != NULL) {
    pthread_mutex_unlock(&lifecycle);
    ec_debug_printf(DERROR, EC_LOG_START, "ec_framework_join called on a shard");
    return -EDEADLK;
  }
  /* Shards that never started have nothing to wait for; running ones finish on stop. */
  shard__join_all();
  shard__watchdog_stop();
  /* The pools drain (or drop, skip_on_shutdown) their queues and join their workers while
   * the shard mailboxes still take completions; shard__destroy_all then runs those. */
  pool__stop();
  shard__destroy_all();
  pool__fini();
  fw__listeners_free();
  fw__stats_fini();
  fw__reload_fini();
  ec_debug_printf(DINFO, EC_LOG_START, "ecshard stopped");
  fw__log_stop();
  fw__config_unload();
  fw__alloc_thread_exit();
  ec__store(&state, FW_DOWN);
  pthread_mutex_unlock(&lifecycle);
  return 0;
}

int ec_framework_request(int what)
{
  uint64_t one = 1;
  int fd = ec__load(&req_fd);

  /* Async-signal-safe: atomics and one write(2). */
  if (fd < 0 || !ec__load(&run_active))
    return -ENOTSUP;
  __atomic_fetch_or(&req_bits, what, __ATOMIC_ACQ_REL); /* pairs with the exchange in run */
  if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
    return -errno;
  return 0;
}

/* SIGHUP and SIGUSR1 (or the same requests from ec_framework_request). */
static void handle_requests(int bits, int stopping)
{
  if (bits & EC_REQUEST_LOGREOPEN) {
    ec_debug_printf(DNOTICE, EC_LOG_SIG, "reopening the log");
    fw__log_reopen();
  }
  if (bits & EC_REQUEST_RELOAD) {
    if (stopping)
      ec_debug_printf(DNOTICE, EC_LOG_SIG, "reload requested while stopping: ignored");
    else
      ec_framework_reload();
  }
}

static int signal_request(uint32_t signo)
{
  return signo == SIGHUP ? EC_REQUEST_RELOAD : signo == SIGUSR1 ? EC_REQUEST_LOGREOPEN : 0;
}

static int request_fd(void)
{
  int fd = ec__load(&req_fd);

  if (fd < 0) {
    fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd >= 0)
      ec__store(&req_fd, fd);
  }
  return fd;
}

static int take_requests(int fd)
{
  uint64_t v;

  while (read(fd, &v, sizeof(v)) > 0)
    ;
  return __atomic_exchange_n(&req_bits, 0, __ATOMIC_ACQ_REL); /* pairs with the fetch_or */
}

int ec_framework_run(void)
{
  sigset_t sigs, old;
  struct pollfd p[3];
  int sfd, efd, rfd = -1, rc, rc2;

  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);  /* reload the configuration */
  sigaddset(&sigs, SIGUSR1); /* reopen the log file (rotation) */
  pthread_sigmask(SIG_BLOCK, &sigs, &old);
  sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
  efd = shard__stop_fd(); /* readable once ec_framework_stop ran; never closed */
  if (sfd < 0) {
    rc = -errno;
    ec_debug_printf(DCRITICAL, EC_LOG_START, "ec_framework_run: signalfd: %s", strerror(errno));
    goto out;
  }
  rfd = request_fd();
  rc = ec_framework_start();
  if (rc < 0)
    goto out;
  ec__store(&run_active, 1);
  p[0] = (struct pollfd){.fd = sfd, .events = POLLIN};
  p[1] = (struct pollfd){.fd = efd, .events = POLLIN};
  p[2] = (struct pollfd){.fd = rfd, .events = POLLIN};
  for (;;) {
    if (ec__load(&state) != FW_RUNNING)
      break;
    if (poll(p, rfd >= 0 ? 3 : 2, -1) < 0 && errno != EINTR)
      break;
    if (p[0].revents) {
      struct signalfd_siginfo si;

      if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        continue;
      if (signal_request(si.ssi_signo)) {
        ec_debug_printf(DNOTICE, EC_LOG_SIG, "signal %u", si.ssi_signo);
        handle_requests(signal_request(si.ssi_signo), 0);
        continue;
      }
      ec_debug_printf(DNOTICE, EC_LOG_SIG, "signal %u: stopping", si.ssi_signo);
      break;
    }
    if (p[1].revents)
      break;
    if (rfd >= 0 && p[2].revents)
      handle_requests(take_requests(rfd), 0);
  }
  ec_framework_stop();
  /* While the sessions drain, a second SIGINT/SIGTERM ends the drain at once (the
   * impatient operator's Ctrl-C twice). */
  while (shard__running() > 0) {
    struct pollfd q = {.fd = sfd, .events = POLLIN};
    struct signalfd_siginfo si;

    if (poll(&q, 1, 10) > 0 && read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
      if (signal_request(si.ssi_signo)) {
        handle_requests(signal_request(si.ssi_signo), 1);
        continue;
      }
      ec_debug_printf(DNOTICE, EC_LOG_SIG, "signal %u again: ending the drain now", si.ssi_signo);
      shard__drain_force();
    }
    if (rfd >= 0)
      handle_requests(take_requests(rfd), 1);
  }
  ec__store(&run_active, 0);
out:
  rc2 = ec_framework_join();
  if (rc == 0)
    rc = rc2;
  if (sfd >= 0) {
    struct signalfd_siginfo si;

    /* Signals that arrived meanwhile are consumed: restoring the mask must not deliver a
     * SIGTERM that kills the process after a clean stop. */
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
      ;
    close(sfd);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}
