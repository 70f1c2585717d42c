/*
 * test/test_lifecycle.c - init, start, stop, join and run (framework/framework.c) and what
 * shutdown does with work still scheduled or queued.
 */
#include "unit.h"

#include "event.h"
#include "scheduler.h"
#include "sp_async.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

static int load(const int *v)
{
  return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static int count_cb(Event *e, int type, void *closure, struct timeval *now)
{
  char buf[64];
  int need;

  __atomic_add_fetch((int *)closure, 1, __ATOMIC_RELEASE);
  if (event_read(e, buf, sizeof(buf), &need) > 0 || errno == EAGAIN)
    return need;
  return 0;
}

static void t_cycles(void)
{
  int64_t events = unit_live(MEMTYPE_EVENT);
  int64_t tables = unit_live(MEMTYPE_FD_TABLE);

  for (int i = 0; i < 20; i++) {
    ec_framework_options o = unit_options(1 + i % 3);

    ASSERT_EQ(ec_framework_init(&o), 0);
    ASSERT_EQ(ec_shard_count(), 1 + i % 3);
    if (i % 2)
      ASSERT_EQ(ec_framework_start(), 0); /* every other cycle never starts */
    ec_framework_stop();
    ASSERT_EQ(ec_framework_join(), 0);
    ASSERT_EQ(ec_shard_count(), 0);
  }
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), events);
  ASSERT_EQ(unit_live(MEMTYPE_FD_TABLE), tables);
}

static void t_misuse(void)
{
  ec_framework_options o = unit_options(1);

  ASSERT_EQ(ec_framework_start(), -EINVAL); /* not initialised */
  ASSERT_EQ(ec_framework_join(), -EINVAL);
  ec_framework_stop(); /* harmless */
  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_framework_init(&o), -EALREADY);
  ASSERT_EQ(ec_framework_start(), 0);
  ASSERT_EQ(ec_framework_start(), -EALREADY);
  ec_framework_stop();
  ec_framework_stop(); /* idempotent */
  ASSERT_EQ(ec_framework_join(), 0);
  ASSERT_EQ(ec_framework_join(), -EINVAL);
}

static void t_default_shards_is_cpu_count(void)
{
  ec_framework_options o = unit_options(0);

  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_shard_count(), sysconf(_SC_NPROCESSORS_ONLN));
  ASSERT_EQ(ec_framework_join(), 0);
  ASSERT_EQ(ec_framework_init(NULL), 0); /* NULL: all defaults */
  ASSERT_TRUE(ec_shard_count() >= 1);
  ASSERT_EQ(ec_framework_join(), 0);
}

/* Events scheduled between init and start run once the shards start. */
static void t_schedule_before_start(void)
{
  ec_framework_options o = unit_options(2);
  int sv[2], calls = 0;

  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT_EQ(ec_schedule_event(build_fd_event(sv[0], E_READ, 0, count_cb, &calls)), 0);
  usleep(20000);
  ASSERT_EQ(load(&calls), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  ASSERT_TRUE(unit_wait_ge(&calls, 1, 5000));
  ec_framework_stop();
  ASSERT_EQ(ec_framework_join(), 0);
  close(sv[1]);
}

/* Shutdown with Events still scheduled (and one floating, one queued for after the stop):
 * every Event is freed and every descriptor closed. */
static void float_it(void *arg)
{
  float_event(arg);
}

static void t_shutdown_with_events(void)
{
  enum { N = 100 };
  ec_framework_options o = unit_options(2);
  int peers[N + 2], calls = 0;
  int64_t before = unit_live(MEMTYPE_EVENT);
  Event *floating;

  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  for (int i = 0; i < N + 2; i++) {
    int sv[2];
    Event *e;

    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    peers[i] = sv[1];
    e = build_fd_event(sv[0], E_READ, 0, count_cb, &calls);
    if (i < N) {
      ASSERT_EQ(ec_schedule_event(e), 0);
    } else if (i == N) {
      floating = e;
      ASSERT_EQ(ec_event_place(e, 0), 0);
      ASSERT_EQ(ec_schedule_event(e), 0);
      usleep(10000);
      ASSERT_EQ(ec_shard_call(0, float_it, floating), 0);
    } else {
      ec_framework_stop();
      ASSERT_EQ(ec_schedule_event(e), 0); /* after the stop: handled at join */
    }
  }
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before + N + 2);
  ec_framework_stop();
  ASSERT_EQ(ec_framework_join(), 0);
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before);
  for (int i = 0; i < N + 2; i++) {
    char c;

    ASSERT_EQ(read(peers[i], &c, 1), 0); /* EOF: the framework closed our partner */
    close(peers[i]);
  }
  ASSERT_EQ(load(&calls), 0);
}

/* Closures posted after the stop still run (at join, in the shard's context). */
static int late_ran, late_shard = -2;
static void late(void *arg)
{
  late_shard = ec_shard_self();
  __atomic_add_fetch(&late_ran, 1, __ATOMIC_RELEASE);
}

static void t_messages_after_stop(void)
{
  ec_framework_options o = unit_options(2);

  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_framework_start(), 0);
  ec_framework_stop();
  usleep(20000);
  ASSERT_EQ(ec_shard_run(1, late, NULL), 0);
  ASSERT_EQ(ec_framework_join(), 0);
  ASSERT_EQ(late_ran, 1);
  ASSERT_EQ(late_shard, 1);
}

static int calls_deadlk = 0;
static void call_other(void *arg)
{
  calls_deadlk = ec_shard_call(1, late, NULL);
}

static void t_shard_call(void)
{
  ec_framework_options o = unit_options(2);

  ASSERT_EQ(ec_framework_init(&o), 0);
  ASSERT_EQ(ec_shard_call(0, late, NULL), -ESHUTDOWN); /* not started */
  ASSERT_EQ(ec_framework_start(), 0);
  ASSERT_EQ(ec_shard_call(0, call_other, NULL), 0);
  ASSERT_EQ(calls_deadlk, -EDEADLK); /* a shard must not wait for another */
  ASSERT_EQ(ec_shard_call(9, late, NULL), -EINVAL);
  ec_framework_stop();
  ASSERT_EQ(ec_framework_join(), 0);
}

/* ec_framework_run stops on SIGTERM and on ec_framework_stop from another thread. */
static int run_rc = 1;
static void *runner(void *arg)
{
  run_rc = ec_framework_run();
  return NULL;
}

static void t_run_until_signal(void)
{
  for (int round = 0; round < 2; round++) {
    ec_framework_options o = unit_options(2);
    pthread_t t;

    ASSERT_EQ(ec_framework_init(&o), 0);
    run_rc = 1;
    pthread_create(&t, NULL, runner, NULL);
    for (int i = 0; i < 5000 && ec_shard_call(0, late, NULL) != 0; i++)
      usleep(1000); /* until the shards run */
    if (round == 0)
      pthread_kill(t, SIGTERM); /* blocked in that thread and read from its signalfd */
    else
      ec_framework_stop();
    pthread_join(t, NULL);
    ASSERT_EQ(run_rc, 0);
    ASSERT_EQ(ec_framework_initialized(), 0);
  }
}

static void t_bad_config(void)
{
  ec_framework_options o = unit_options(1);
  const char *set[] = {"event_loop.poller=nonesuch", NULL};

  o.set = set;
  ASSERT_EQ(ec_framework_init(&o), -EINVAL);
  ASSERT_EQ(ec_framework_initialized(), 0);
  o.set = NULL;
  o.config_file = "/nonexistent/ecshard.conf";
  ASSERT_TRUE(ec_framework_init(&o) < 0);
  ASSERT_EQ(ec_framework_initialized(), 0);
}

static const unit_test tests[] = {
    UNIT_TEST(t_cycles),
    UNIT_TEST(t_misuse),
    UNIT_TEST(t_default_shards_is_cpu_count),
    UNIT_TEST(t_schedule_before_start),
    UNIT_TEST(t_shutdown_with_events),
    UNIT_TEST(t_messages_after_stop),
    UNIT_TEST(t_shard_call),
    UNIT_TEST(t_run_until_signal),
    UNIT_TEST(t_bad_config),
    {NULL, NULL},
};

UNIT_MAIN("lifecycle", tests)
