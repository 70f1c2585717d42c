/*
 * test/test_event.c - the Event API and the callback contract on running shards
 * (shard/event.c, shard/shard.c), over real socketpairs.
 */
#include "unit.h"

#include "event.h"
#include "scheduler.h"
#include "sp_async.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>

static int sv[2];

static void start(int shards)
{
  ec_framework_options o = unit_options(shards);

  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
  CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

/* Stops the framework and closes the test's ends. Events still scheduled at shutdown are
 * closed by the framework, so only descriptors still open are closed here (the suite is
 * single-threaded once join returned, so a number cannot have been reused meanwhile). */
static void finish(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
  for (int i = 0; i < 2; i++)
    if (sv[i] >= 0 && fcntl(sv[i], F_GETFD) >= 0)
      close(sv[i]);
}

static int load(const int *v)
{
  return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static void bump(int *v)
{
  __atomic_add_fetch(v, 1, __ATOMIC_RELEASE);
}

/* ---- reads, the callback contract -------------------------------------------------------- */

struct rd {
  int calls, bytes, eagain, wrong_shard, needmask, last_type, stop_after;
  int byte_per_call; /* read one byte per dispatch */
  int owner;
};

static int read_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct rd *r = closure;
  char buf[64];
  int need = -1;
  int n = event_read(e, buf, r->byte_per_call ? 1 : (int)sizeof(buf), &need);

  if (ec_shard_self() != ec_event_shard(e) || !is_scheduler_thread())
    bump(&r->wrong_shard);
  r->needmask = need;
  r->last_type = type;
  if (n < 0 && errno == EAGAIN)
    bump(&r->eagain);
  if (n > 0)
    __atomic_add_fetch(&r->bytes, n, __ATOMIC_RELEASE);
  bump(&r->calls);
  if (r->stop_after && load(&r->calls) >= r->stop_after)
    return 0;
  return n > 0 || (n < 0 && errno == EAGAIN) ? need : 0;
}

static void t_read_dispatch(void)
{
  struct rd r = {0};
  Event *e;

  start(2);
  e = build_fd_event(sv[0], E_READ, 0, read_cb, &r);
  ASSERT_NOT_NULL(e);
  schedule_event(e);
  ASSERT_EQ(write(sv[1], "hello", 5), 5);
  ASSERT_TRUE(unit_wait_ge(&r.bytes, 5, 5000));
  ASSERT_EQ(load(&r.wrong_shard), 0);
  ASSERT_EQ(r.needmask, E_READ);
  ASSERT_EQ(r.last_type, E_READ);
  ASSERT_EQ(load(&r.eagain), 0);           /* never dispatched without data */
  ASSERT_EQ(ec_event_shard(e), sv[0] % 2); /* built off the shards: fd mod N */
  finish();
}

/* Level-triggered: one byte per dispatch still drains 10 bytes without new data, and the
 * callback never runs when nothing is readable. */
static void t_level_triggered(void)
{
  struct rd r = {.byte_per_call = 1};

  start(1);
  schedule_event(build_fd_event(sv[0], E_READ, 0, read_cb, &r));
  ASSERT_EQ(write(sv[1], "0123456789", 10), 10);
  ASSERT_TRUE(unit_wait_ge(&r.bytes, 10, 5000));
  usleep(100000);
  ASSERT_EQ(load(&r.calls), 10);
  ASSERT_EQ(load(&r.eagain), 0);
  finish();
}

static void t_aggressive_high(void)
{
  struct rd r = {.byte_per_call = 1};

  start(1);
  schedule_event(build_fd_event(sv[0], E_READ, E_AGGRESSIVE_HIGH, read_cb, &r));
  ASSERT_EQ(write(sv[1], "0123456789", 10), 10);
  ASSERT_TRUE(unit_wait_ge(&r.bytes, 10, 5000));
  usleep(50000);
  ASSERT_EQ(load(&r.calls), 10);
  ASSERT_EQ(load(&r.eagain), 0); /* repeats only while the fd is really readable */
  finish();
}

/* Returning 0 frees the Event (not its descriptor). */
static void t_return_zero_frees(void)
{
  struct rd r = {.stop_after = 1};
  int64_t before;

  start(2);
  before = unit_live(MEMTYPE_EVENT);
  schedule_event(build_fd_event(sv[0], E_READ, 0, read_cb, &r));
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before + 1);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT_TRUE(unit_wait_ge(&r.calls, 1, 5000));
  for (int i = 0; i < 1000 && unit_live(MEMTYPE_EVENT) != before; i++)
    usleep(1000);
  ASSERT_EQ(unit_live(MEMTYPE_EVENT), before);
  ASSERT_TRUE(fcntl(sv[0], F_GETFD) >= 0); /* still open */
  ASSERT_EQ(write(sv[1], "y", 1), 1);
  usleep(50000);
  ASSERT_EQ(load(&r.calls), 1); /* no longer watched */
  finish();
}

/* Returning the registered mask costs no poller call; a new mask costs one. */
static int same_mask_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct rd *r = closure;
  char buf[16];
  int need;

  if (event_read(e, buf, sizeof(buf), &need) > 0)
    __atomic_add_fetch(&r->bytes, 1, __ATOMIC_RELEASE);
  bump(&r->calls);
  return E_READ;
}

static void t_same_mask_no_syscall(void)
{
  struct rd r = {0};
  ec_shard_stats a, b;
  char c = 'x';

  start(1);
  schedule_event(build_fd_event(sv[0], E_READ, 0, same_mask_cb, &r));
  ASSERT_EQ(write(sv[1], &c, 1), 1);
  ASSERT_TRUE(unit_wait_ge(&r.bytes, 1, 5000));
  ec_shard_stats_get(0, &a);
  for (int i = 2; i <= 50; i++) {
    ASSERT_EQ(write(sv[1], &c, 1), 1);
    ASSERT_TRUE(unit_wait_ge(&r.bytes, i, 5000));
  }
  ec_shard_stats_get(0, &b);
  ASSERT_UEQ(b.syscalls_ctl, a.syscalls_ctl);
  ASSERT_TRUE(b.dispatched >= a.dispatched + 49);
  finish();
}

/* The seed's flip-flop: write when writable, then wait for a read, with mask changes. */
struct flip {
  int writes, reads;
};

static int flip_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct flip *f = closure;
  char buf[64];
  int need = 0;

  if (type & E_WRITE) {
    if (event_write(e, "ping", 4, &need) != 4)
      return 0;
    bump(&f->writes);
    return E_READ;
  }
  if (event_read(e, buf, sizeof(buf), &need) <= 0)
    return errno == EAGAIN ? need : 0;
  bump(&f->reads);
  return E_WRITE;
}

static void t_mask_changes(void)
{
  struct flip f = {0};
  char buf[8];
  ec_shard_stats st;

  start(2);
  schedule_event(build_fd_event(sv[0], E_WRITE, 0, flip_cb, &f));
  for (int i = 1; i <= 5; i++) {
    struct pollfd p = {.fd = sv[1], .events = POLLIN};

    ASSERT_EQ(poll(&p, 1, 5000), 1);
    ASSERT_EQ(read(sv[1], buf, sizeof(buf)), 4);
    ASSERT_TRUE(unit_wait_ge(&f.writes, i, 5000)); /* counted just after the write */
    ASSERT_EQ(write(sv[1], "pong", 4), 4);
    ASSERT_TRUE(unit_wait_ge(&f.reads, i, 5000));
  }
  ec_shard_stats_get(sv[0] % 2, &st);
  ASSERT_TRUE(st.syscalls_ctl >= 10); /* each flip changed the interest */
  finish();
}

/* ---- misuse ------------------------------------------------------------------------------- */

struct twice {
  Event *a, *b;
  int rc_a, rc_b;
};

static void schedule_twice(void *arg)
{
  struct twice *t = arg;

  t->rc_a = ec_schedule_event(t->a);
  t->rc_b = ec_schedule_event(t->b);
}

static int never_cb(Event *e, int type, void *closure, struct timeval *now)
{
  if (closure)
    bump((int *)closure);
  return e->mask;
}

static void t_double_schedule_same_fd(void)
{
  int calls = 0;
  struct twice t = {0};

  start(2);
  t.a = build_fd_event(sv[0], 0, 0, never_cb, &calls);
  t.b = build_fd_event(sv[0], 0, 0, never_cb, &calls);
  ASSERT_EQ(ec_shard_call(t.a->fd % 2, schedule_twice, &t), 0);
  ASSERT_EQ(t.rc_a, 0);
  ASSERT_EQ(t.rc_b, -EEXIST);
  event_free(t.b); /* never scheduled: the caller still owns it */
  {
    /* Posted from another thread, the same conflict is found by the owner, which logs it
     * and frees the Event it was handed (nobody else could). */
    int64_t before = unit_live(MEMTYPE_EVENT);
    Event *c = build_fd_event(t.a->fd, 0, 0, never_cb, &calls);

    ASSERT_EQ(ec_schedule_event(c), 0);
    for (int i = 0; i < 5000 && unit_live(MEMTYPE_EVENT) != before; i++)
      usleep(1000);
    ASSERT_EQ(unit_live(MEMTYPE_EVENT), before);
  }
  finish(); /* t.a is closed and freed at shutdown */
}

struct freeself {
  int calls, refused_errno;
};

static int free_self_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct freeself *f = closure;

  errno = 0;
  event_free(e); /* refused: being dispatched */
  f->refused_errno = errno;
  bump(&f->calls);
  return 0;
}

static void t_event_free_while_dispatching(void)
{
  struct freeself f = {0};

  start(1);
  schedule_event(build_fd_event(sv[0], E_WRITE, 0, free_self_cb, &f));
  ASSERT_TRUE(unit_wait_ge(&f.calls, 1, 5000));
  ASSERT_EQ(f.refused_errno, EBUSY);
  finish();
}

static void free_scheduled(void *arg)
{
  Event *e = arg;

  errno = 0;
  event_free(e);
  e->closure = (void *)(intptr_t)errno;
}

static void t_event_free_scheduled(void)
{
  int calls = 0;
  Event *e;

  start(1);
  e = build_fd_event(sv[0], 0, 0, never_cb, &calls);
  ASSERT_EQ(ec_schedule_event(e), 0);
  ASSERT_EQ(ec_shard_call(0, free_scheduled, e), 0);
  ASSERT_EQ((intptr_t)e->closure, EBUSY);
  e->closure = &calls;
  sv[0] = -1; /* closed and freed by the shutdown sweep */
  finish();
}

static void t_bad_arguments(void)
{
  Event fake;

  ASSERT_EQ(ec_schedule_event(NULL), -EINVAL);
  errno = 0;
  ASSERT_NULL(build_fd_event(-1, E_READ, 0, never_cb, NULL));
  ASSERT_EQ(errno, EINVAL);
  ASSERT_NULL(build_fd_event(0, E_READ, 0, NULL, NULL));
  ASSERT_NULL(build_fd_event(0, E_READ, 7, never_cb, NULL));
  memset(&fake, 0, sizeof(fake));
  start(1);
  ASSERT_EQ(ec_schedule_event(&fake), -EINVAL); /* not built by the framework */
  errno = 0;
  ASSERT_NULL(clear_event_by_fd(sv[0])); /* off the shards */
  ASSERT_EQ(errno, EPERM);
  ASSERT_NULL(get_event_by_fd(sv[0]));
  ASSERT_EQ(is_scheduler_thread(), 0);
  ASSERT_EQ(ec_shard_self(), -1);
  ASSERT_EQ(ec_shard_run(5, free_scheduled, NULL), -EINVAL);
  finish();
  {
    Event *e = build_fd_event(3, E_READ, 0, never_cb, NULL);

    ASSERT_EQ(ec_schedule_event(e), -ESHUTDOWN); /* framework not initialised */
    event_free(e);
  }
}

/* ---- the fd table: clear, get, sets, float ------------------------------------------------ */

struct table_check {
  Event *e;
  int fd;
  int got_ok, set_ok, cleared_ok, unknown_errno, float_ok, unfloat_ok;
};

static void check_table(void *arg)
{
  struct table_check *t = arg;
  Event **set;
  int count;

  t->got_ok = get_event_by_fd(t->fd) == t->e;
  get_fd_event_set(&set, &count);
  t->set_ok = count > t->fd && set[t->fd] == t->e;
  errno = 0;
  t->unknown_errno = get_event_by_fd(100000) == NULL ? errno : 0;
  float_event(t->e);
  get_fd_event_set(&set, &count);
  t->float_ok = set[t->fd] == NULL;
  get_floating_event_set(&set, &count);
  t->float_ok &= count == 1 && set[0] == t->e;
  schedule_event(t->e);
  get_floating_event_set(&set, &count);
  t->unfloat_ok = count == 0 && get_event_by_fd(t->fd) == t->e;
  t->cleared_ok = clear_event_by_fd(t->fd) == t->e && get_event_by_fd(t->fd) == NULL;
}

static void t_fd_table(void)
{
  int calls = 0;
  struct table_check t = {0};

  start(2);
  t.fd = sv[0];
  t.e = build_fd_event(sv[0], E_READ, 0, never_cb, &calls);
  ASSERT_EQ(ec_event_place(t.e, 1), 0);
  ASSERT_EQ(ec_schedule_event(t.e), 0);
  ASSERT_EQ(ec_event_place(t.e, 0), -EBUSY); /* a posted request holds it */
  ASSERT_EQ(ec_shard_call(1, check_table, &t), 0);
  ASSERT_TRUE(t.got_ok);
  ASSERT_TRUE(t.set_ok);
  ASSERT_EQ(t.unknown_errno, ENOENT);
  ASSERT_TRUE(t.float_ok);
  ASSERT_TRUE(t.unfloat_ok);
  ASSERT_TRUE(t.cleared_ok);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  usleep(50000);
  ASSERT_EQ(load(&calls), 0); /* cleared: not watched */
  event_free(t.e);            /* cleared Events belong to the caller */
  finish();
}

/* ---- scheduling from other threads and on the owner --------------------------------------- */

struct sd {
  int calls, type, shard, inside_a, reentered;
  Event *b;
};

static int sd_b_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct sd *d = closure;

  if (load(&d->inside_a))
    bump(&d->reentered);
  d->type = type;
  d->shard = ec_shard_self();
  bump(&d->calls);
  return 0;
}

static int sd_a_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct sd *d = closure;

  __atomic_store_n(&d->inside_a, 1, __ATOMIC_RELEASE);
  schedule_event_and_dispatch(d->b, E_WRITE); /* on the owner: runs after we return */
  __atomic_store_n(&d->inside_a, 0, __ATOMIC_RELEASE);
  return 0;
}

static void t_dispatch_from_foreign_thread(void)
{
  struct sd d = {0};
  Event *e;

  start(2);
  e = build_fd_event(sv[0], 0, 0, sd_b_cb, &d);
  ASSERT_EQ(ec_event_place(e, 1), 0);
  schedule_event_and_dispatch(e, E_READ | E_WRITE);
  ASSERT_TRUE(unit_wait_ge(&d.calls, 1, 5000));
  ASSERT_EQ(d.type, E_READ | E_WRITE);
  ASSERT_EQ(d.shard, 1);
  finish();
}

static void t_dispatch_on_owner_not_reentrant(void)
{
  struct sd d = {0};
  Event *a;

  start(1);
  d.b = build_fd_event(sv[1], 0, 0, sd_b_cb, &d);
  a = build_fd_event(sv[0], E_WRITE, 0, sd_a_cb, &d);
  schedule_event(a);
  ASSERT_TRUE(unit_wait_ge(&d.calls, 1, 5000));
  ASSERT_EQ(load(&d.reentered), 0);
  ASSERT_EQ(d.type, E_WRITE);
  finish();
}

static void t_sp_async_always_posts(void)
{
  struct sd d = {0};
  ec_shard_stats a, b;
  Event *e;

  start(1);
  e = build_fd_event(sv[0], 0, 0, sd_b_cb, &d);
  ec_shard_stats_get(0, &a);
  sp_async_schedule_event(e, E_READ);
  ASSERT_TRUE(unit_wait_ge(&d.calls, 1, 5000));
  /* The shard publishes its message count after the batch it is handling: wait for it. */
  for (int i = 0; i < 5000; i++) {
    ec_shard_stats_get(0, &b);
    if (b.messages >= a.messages + 1)
      break;
    usleep(1000);
  }
  ASSERT_TRUE(b.messages >= a.messages + 1);
  finish();
}

/* ---- suspend and resume (the seed's pattern) ----------------------------------------------- */

struct susp {
  int phase, calls, resumed_type, resumed_shard, io_moved, orig_shard;
  Event *dup;
  pthread_t worker;
};

static void *resumer(void *arg)
{
  struct susp *s = arg;

  usleep(20000);
  schedule_event_and_dispatch(s->dup, E_READ | E_WRITE); /* from a foreign thread */
  return NULL;
}

static int susp_cb(Event *event, int type, void *closure, struct timeval *now)
{
  struct susp *s = closure;
  char buf[16];
  int need;

  if (s->phase == 0) {
    if (event_read(event, buf, sizeof(buf), &need) <= 0)
      return need;
    s->orig_shard = ec_shard_self();
    event->io_data = s; /* stands in for per-connection I/O state */
    s->dup = ec_malloc(MEMTYPE_EVENT);
    memcpy(s->dup, event, sizeof(*event));
    event_post_dup(s->dup, event);
    s->io_moved = s->dup->io_data == s && event->io_data == NULL;
    clear_event_by_fd(event->fd);
    s->phase = 1;
    pthread_create(&s->worker, NULL, resumer, s);
    return 0; /* the scheduler frees the original */
  }
  s->resumed_type = type;
  s->resumed_shard = ec_shard_self();
  bump(&s->calls);
  event->io_data = NULL;
  event_close(event);
  return 0;
}

static void t_suspend_resume(void)
{
  struct susp s = {0};
  char c;

  start(2);
  schedule_event(build_fd_event(sv[0], E_READ, 0, susp_cb, &s));
  ASSERT_EQ(write(sv[1], "go", 2), 2);
  ASSERT_TRUE(unit_wait_ge(&s.calls, 1, 5000));
  pthread_join(s.worker, NULL);
  ASSERT_TRUE(s.io_moved);
  ASSERT_EQ(s.resumed_type, E_READ | E_WRITE);
  ASSERT_EQ(s.resumed_shard, s.orig_shard);
  ASSERT_EQ(read(sv[1], &c, 1), 0); /* the duplicate closed the connection */
  sv[0] = -1;                       /* the duplicate closed it */
  finish();
}

/* ---- close, write, read(fd) ---------------------------------------------------------------- */

struct cl {
  int calls, rc, fd_after, other_rc, other_errno;
};

static int close_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct cl *c = closure;

  c->rc = event_close(e);
  c->fd_after = e->fd;
  bump(&c->calls);
  return 0;
}

static void t_event_close(void)
{
  struct cl c = {0};
  char buf[4];
  Event *e;

  start(2);
  schedule_event(build_fd_event(sv[0], E_WRITE, 0, close_cb, &c));
  ASSERT_TRUE(unit_wait_ge(&c.calls, 1, 5000));
  ASSERT_EQ(c.rc, 0);
  ASSERT_EQ(c.fd_after, -1);
  ASSERT_EQ(read(sv[1], buf, sizeof(buf)), 0); /* EOF */
  /* Off the owner, a scheduled Event cannot be closed. */
  e = build_fd_event(sv[1], 0, 0, never_cb, &c.calls);
  ASSERT_EQ(ec_schedule_event(e), 0);
  usleep(20000);
  errno = 0;
  ASSERT_EQ(event_close(e), -1);
  ASSERT_EQ(errno, EPERM);
  sv[0] = sv[1] = -1; /* closed by the sample and by the shutdown sweep */
  finish();
}

static void t_write_never_sigpipe(void)
{
  struct sigaction old, dfl = {.sa_handler = SIG_DFL};
  int p[2], need = 0;
  Event *e;

  start(1);
  sigaction(SIGPIPE, &dfl, &old);
  close(sv[1]);
  e = build_fd_event(sv[0], 0, 0, never_cb, NULL);
  errno = 0;
  ASSERT_EQ(event_write(e, "x", 1, &need), -1);
  ASSERT_EQ(errno, EPIPE);
  ASSERT_EQ(need, E_WRITE);
  event_free(e);
  /* Not a socket: event_write falls back to write(2). */
  ASSERT_EQ(pipe(p), 0);
  e = build_fd_event(p[1], 0, 0, never_cb, NULL);
  ASSERT_EQ(event_write(e, "ab", 2, &need), 2);
  ASSERT_EQ(event_write(e, "c", 1, &need), 1);
  {
    char buf[4];
    ASSERT_EQ(read(p[0], buf, sizeof(buf)), 3);
  }
  event_free(e);
  close(p[0]);
  close(p[1]);
  sigaction(SIGPIPE, &old, NULL);
  sv[1] = -1;
  finish();
}

static void t_read_fd_form(void)
{
  char buf[8];
  int need = 0;

  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  ASSERT_EQ(write(sv[1], "abc", 3), 3);
  ASSERT_EQ(event_read(sv[0], buf, sizeof(buf), &need), 3); /* the seed's event->fd form */
  ASSERT_EQ(need, E_READ);
  ASSERT_EQ(event_read(sv[0], buf, sizeof(buf), &need), -1);
  ASSERT_EQ(errno, EAGAIN);
  ASSERT_EQ(need, E_READ);
  close(sv[0]);
  close(sv[1]);
}

/* ---- stale readiness ------------------------------------------------------------------------ */

/* Two readable descriptors on one shard; whichever runs first closes the other and makes a
 * new socketpair that reuses its number. The readiness collected for the closed one must
 * not reach the new Event (which is not readable). */
struct stale {
  int fds[2];
  Event *ev[2];
  int calls, wrong, newfd, pair[2];
  Event *fresh;
};

static int fresh_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct stale *st = closure;
  char c;
  int need;

  if (event_read(e, &c, 1, &need) < 0 && errno == EAGAIN)
    bump(&st->wrong);
  return need;
}

static int stale_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct stale *st = closure;
  int other = e == st->ev[0] ? 1 : 0;
  char buf[8];
  int need;

  if (event_read(e, buf, sizeof(buf), &need) < 0 && errno == EAGAIN)
    bump(&st->wrong);
  if (st->ev[other] != NULL) {
    Event *o = clear_event_by_fd(st->fds[other]);

    event_close(o);
    event_free(o);
    st->ev[other] = NULL;
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, st->pair);
    st->fresh = build_fd_event(st->fds[other] == st->pair[0] ? st->pair[0] : st->pair[1], E_READ, 0,
                               fresh_cb, st);
    st->newfd = st->fresh->fd;
    schedule_event(st->fresh);
  }
  st->ev[e == st->ev[0] ? 0 : 1] = NULL;
  bump(&st->calls);
  event_close(e);
  return 0;
}

static void schedule_both(void *arg)
{
  Event **ev = arg;

  schedule_event(ev[0]);
  schedule_event(ev[1]);
}

static void t_stale_readiness(void)
{
  struct stale st = {0};
  int a[2], b[2];

  start(1);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
  st.fds[0] = a[0];
  st.fds[1] = b[0];
  st.ev[0] = build_fd_event(a[0], E_READ, 0, stale_cb, &st);
  st.ev[1] = build_fd_event(b[0], E_READ, 0, stale_cb, &st);
  ASSERT_EQ(write(a[1], "x", 1), 1);
  ASSERT_EQ(write(b[1], "y", 1), 1);
  /* Schedule both before the shard runs them, so both are ready in one batch. */
  ASSERT_EQ(ec_shard_call(0, schedule_both, st.ev), 0);
  ASSERT_TRUE(unit_wait_ge(&st.calls, 1, 5000));
  usleep(100000);
  ASSERT_EQ(load(&st.calls), 1);
  ASSERT_EQ(load(&st.wrong), 0);
  finish();
  close(a[1]);
  close(b[1]);
  close(st.pair[0] == st.newfd ? st.pair[1] : st.pair[0]);
}

/* ---- clock, recurrent functions, placement ------------------------------------------------ */

static int recur_calls;
static int recur_shard = -2;
static int recur_fn(void *closure, struct timeval *now)
{
  __atomic_store_n(&recur_shard, ec_shard_self(), __ATOMIC_RELEASE);
  bump(&recur_calls);
  return 0;
}

struct nowcheck {
  int calls, same;
};

static int now_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct nowcheck *n = closure;
  struct timeval tv;

  get_now(&tv);
  n->same = tv.tv_sec == now->tv_sec && tv.tv_usec == now->tv_usec && get_now_ts() == now->tv_sec &&
            is_scheduler_thread();
  bump(&n->calls);
  return 0;
}

static void t_clock_and_recurrent(void)
{
  struct nowcheck n = {0};
  struct timeval tv;

  start(2);
  __atomic_store_n(&recur_calls, 0, __ATOMIC_RELEASE);
  scheduler_recurrent_func_add(recur_fn, NULL);
  ASSERT_TRUE(unit_wait_ge(&recur_calls, 2, 5000)); /* runs at least once a second */
  ASSERT_EQ(load(&recur_shard), 0);
  schedule_event(build_fd_event(sv[0], E_WRITE, 0, now_cb, &n));
  ASSERT_TRUE(unit_wait_ge(&n.calls, 1, 5000));
  ASSERT_TRUE(n.same);
  get_now(&tv);
  ASSERT_TRUE(tv.tv_sec >= time(NULL) - 1);
  finish();
}

static void built_on_shard(void *arg)
{
  Event **e = arg;

  *e = build_fd_event(sv[0], 0, 0, never_cb, NULL);
}

static void t_placement(void)
{
  Event *e = NULL;

  start(2);
  ASSERT_EQ(ec_shard_call(1, built_on_shard, &e), 0);
  ASSERT_EQ(ec_event_shard(e), 1); /* built on shard 1: belongs to shard 1 */
  ASSERT_EQ(ec_event_place(e, 0), 0);
  ASSERT_EQ(ec_event_shard(e), 0);
  ASSERT_EQ(ec_event_place(e, 7), -EINVAL);
  event_free(e);
  finish();
}

/* ---- polling for readiness before sleeping (event_loop.io_spin_ns) --------------------------- */

/* Echoes every byte back: the shard's half of a lock-step conversation. */
static int echo_cb(Event *e, int type, void *closure, struct timeval *now)
{
  int *echoed = closure;
  int need = -1, n;
  char c;

  (void)type;
  (void)now;
  while ((n = event_read(e, &c, 1, &need)) == 1) {
    if (event_write(e, &c, 1, &need) != 1)
      return 0;
    bump(echoed);
  }
  return n < 0 && errno == EAGAIN ? need : 0;
}

/* `n` round trips of one byte over sv[1], each sent `gap_us` after the last answer. */
static int round_trips(int n, int gap_us)
{
  for (int i = 0; i < n; i++) {
    struct pollfd p = {.fd = sv[1], .events = POLLIN};
    char c = 'x';

    if (gap_us > 0)
      usleep((useconds_t)gap_us);
    if (write(sv[1], &c, 1) != 1 || poll(&p, 1, 5000) != 1 || read(sv[1], &c, 1) != 1)
      return -1;
  }
  return 0;
}

static void start_with(const char *config)
{
  ec_framework_options o = unit_options(1);

  o.config_text = config;
  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
  CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

/* Pins the calling thread to one CPU; 0 or -1. */
static int pin_self(int cpu)
{
  cpu_set_t one;

  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  return pthread_setaffinity_np(pthread_self(), sizeof(one), &one) == 0 ? 0 : -1;
}

static void pin_shard(void *arg)
{
  *(int *)arg = pin_self(*(int *)arg);
}

static void t_io_spin(void)
{
  ec_shard_stats a, b, c;
  cpu_set_t all;
  int echoed = 0, cpus[2], ncpu = 0, pinned = 0, rc;

  /* A 1 ms window: long enough for this thread's next byte, even under a sanitizer. */
  start_with("event_loop = { io_spin_ns = 1000000; };");
  /* A peer on the polling shard's own CPU waits for the poll to end, so it never finds
   * the shard polling (docs/architecture.md 3.3): with two CPUs, the shard and this
   * thread get one each, whatever else the machine runs. */
  CU_ASSERT_EQUAL_FATAL(pthread_getaffinity_np(pthread_self(), sizeof(all), &all), 0);
  for (int i = 0; i < CPU_SETSIZE && ncpu < 2; i++)
    if (CPU_ISSET(i, &all))
      cpus[ncpu++] = i;
  if (ncpu == 2) {
    rc = cpus[0];
    ASSERT_EQ(ec_shard_call(0, pin_shard, &rc), 0);
    pinned = rc == 0 && pin_self(cpus[1]) == 0;
  }
  schedule_event(build_fd_event(sv[0], E_READ, 0, echo_cb, &echoed));
  rc = round_trips(2000, 0);
  pthread_setaffinity_np(pthread_self(), sizeof(all), &all);
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(unit_wait_ge(&echoed, 2000, 5000)); /* counted just after the write */
  ec_shard_stats_get(0, &a);
  ASSERT_TRUE(a.io_spins >= 1);
  if (pinned)
    ASSERT_TRUE(a.io_spin_hits >= 1); /* the next byte found the shard polling */
  ASSERT_TRUE(a.io_spin_hits <= a.io_spins);
  /* Round trips 20 ms apart: every poll misses and halves the window (1 ms to off takes
   * 11 misses), and idle periods longer than the setting never grow it back. (20 ms:
   * only a preemption of the shard nearly that long could put a poll in the way.) */
  ASSERT_EQ(round_trips(20, 20000), 0);
  ec_shard_stats_get(0, &b);
  ASSERT_TRUE(b.io_spins - a.io_spins <= 12);
  ASSERT_UEQ(b.io_spin_hits, a.io_spin_hits);
  ASSERT_EQ(round_trips(10, 20000), 0);
  ec_shard_stats_get(0, &c);
  ASSERT_UEQ(c.io_spins, b.io_spins); /* off: the shard sleeps at once */
  /* Back-to-back traffic again: sleeps shorter than the setting grow the window back.
   * (Whether the polls then hit depends on where the scheduler runs this thread: on the
   * shard's CPU it waits for the poll to end.) */
  ASSERT_EQ(round_trips(2000, 0), 0);
  ec_shard_stats_get(0, &c);
  ASSERT_TRUE(c.io_spins > b.io_spins);
  ASSERT_TRUE(unit_wait_ge(&echoed, 4030, 5000));
  ASSERT_EQ(load(&echoed), 4030);
  finish();

  /* The default (0): no polling. */
  echoed = 0;
  start_with(NULL);
  schedule_event(build_fd_event(sv[0], E_READ, 0, echo_cb, &echoed));
  ASSERT_EQ(round_trips(500, 0), 0);
  ec_shard_stats_get(0, &a);
  ASSERT_UEQ(a.io_spins, 0);
  ASSERT_UEQ(a.io_spin_hits, 0);
  finish();
}

static const unit_test tests[] = {
    UNIT_TEST(t_read_dispatch),
    UNIT_TEST(t_level_triggered),
    UNIT_TEST(t_aggressive_high),
    UNIT_TEST(t_return_zero_frees),
    UNIT_TEST(t_same_mask_no_syscall),
    UNIT_TEST(t_mask_changes),
    UNIT_TEST(t_double_schedule_same_fd),
    UNIT_TEST(t_event_free_while_dispatching),
    UNIT_TEST(t_event_free_scheduled),
    UNIT_TEST(t_bad_arguments),
    UNIT_TEST(t_fd_table),
    UNIT_TEST(t_dispatch_from_foreign_thread),
    UNIT_TEST(t_dispatch_on_owner_not_reentrant),
    UNIT_TEST(t_sp_async_always_posts),
    UNIT_TEST(t_suspend_resume),
    UNIT_TEST(t_event_close),
    UNIT_TEST(t_write_never_sigpipe),
    UNIT_TEST(t_read_fd_form),
    UNIT_TEST(t_stale_readiness),
    UNIT_TEST(t_clock_and_recurrent),
    UNIT_TEST(t_placement),
    UNIT_TEST(t_io_spin),
    {NULL, NULL},
};

UNIT_MAIN("event", tests)
