/*
 * shard/mailbox.c - the per-shard multi-producer, single-consumer mailbox and its wakeup.
 *
 * The queue is Concurrency Kit's intrusive stack: producers push with one CAS
 * (ck_stack_push_upmc) and the owner detaches everything with one atomic exchange
 * (ck_stack_batch_pop_upmc), so there is no ABA exposure (only the owner pops) and no
 * bound: a producer never waits for the consumer and nothing is dropped. The detached
 * batch is LIFO; reversing it restores each producer's order. It is handled with a
 * per-iteration budget, and whatever exceeds the budget stays on an owner-local backlog
 * that is handled first next time, so cross-thread traffic cannot starve I/O.
 *
 * Wakeups are coalesced with a sleeping flag (Seastar's reactor::wakeup): the owner sets
 * `sleeping`, issues a full fence and looks at the mailbox once more before it blocks;
 * a producer pushes, issues a full fence, and writes the eventfd only if it sees the flag
 * and wins the CAS that clears it. Either the owner sees the message before sleeping or
 * the producer sees the flag (the two fences order store->load on both sides), and at
 * most one write happens per sleep however many producers race.
 */
#include "framework/internal.h"
#include "shard/shard.h"

#include "framework/atomic.h"
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#if defined(HAVE_SYS_EVENTFD_H)
#include <sys/eventfd.h>
#endif

int shard__wakefd_open(shard *s)
{
#if defined(HAVE_SYS_EVENTFD_H)
  s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->wakefd < 0)
    return -errno;
  s->wakefd_read = s->wakefd;
#else
  int p[2];

  if (pipe(p) < 0)
    return -errno;
  for (int i = 0; i < 2; i++) {
    fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
    fcntl(p[i], F_SETFD, FD_CLOEXEC);
  }
  s->wakefd_read = p[0];
  s->wakefd = p[1];
#endif
  return 0;
}

void shard__wakefd_close(shard *s)
{
  if (s->wakefd_read >= 0 && s->wakefd_read != s->wakefd)
    close(s->wakefd_read);
  if (s->wakefd >= 0)
    close(s->wakefd);
  s->wakefd = s->wakefd_read = -1;
}

void shard__wakefd_drain(shard *s)
{
  uint64_t buf[8];

  /* An eventfd is emptied by one read; a pipe may hold several bytes. */
  while (read(s->wakefd_read, buf, sizeof(buf)) > 0 && s->wakefd_read != s->wakefd)
    ;
}

void shard__wake(shard *s)
{
  uint64_t one = 1;
  ssize_t n;

  /* write(2) is async-signal-safe, which ec_framework_stop relies on. */
  n = write(s->wakefd, &one, sizeof(one));
  (void)n; /* EAGAIN: the counter is saturated, the shard will wake anyway */
}

int shard__post(shard *s, int kind, Event *ev, int mask, void (*fn)(void *), void *arg)
{
  shard__msg *m = shard__msg_alloc();

  if (m == NULL)
    return -ENOMEM;
  m->kind = kind;
  m->mask = mask;
  m->ev = ev;
  m->fn = fn;
  m->arg = arg;
  if (ev != NULL)
    ec__fetch_add(&ev->_priv.refs, 1u); /* dropped by the owner in shard__event_unref */
  /* The CAS inside the push publishes the message; TSan cannot see ck's ordering, so tell
   * it (pairs with the acquire in refill_backlog). */
  ec__tsan_release(&s->mailbox);
  ck_stack_push_upmc(&s->mailbox, &m->entry);
  /* Pairs with the fence in shard__prepare_sleep: our push is visible before we read
   * `sleeping`, and the owner's store of `sleeping` before it reads the mailbox. The
   * push's CAS is that fence on x86. */
  ec__fence_after_rmw();
  if (ec__load(&s->sleeping) && ec__cas_int(&s->sleeping, 1, 0)) {
    ec__fetch_add(&s->wakeups_sent, 1);
    shard__wake(s);
  }
  return 0;
}

int shard__prepare_sleep(shard *s)
{
  ec__store(&s->sleeping, 1);
  /* Pairs with the fence in shard__post (see the file comment). */
  ec__fence();
  if (ec__load(&s->mailbox.head) != NULL) {
    ec__store(&s->sleeping, 0);
    return 0;
  }
  return 1;
}

void shard__end_sleep(shard *s)
{
  /* A producer may have cleared it already (and written the eventfd). */
  ec__store(&s->sleeping, 0);
}

int shard__mailbox_pending(shard *s)
{
  return s->backlog_head != NULL || ec__load(&s->mailbox.head) != NULL;
}

/* Detaches the mailbox and appends it, in posting order, to the backlog. */
static void refill_backlog(shard *s)
{
  ck_stack_entry_t *e;
  shard__msg *head = NULL, *tail = NULL;
  uint64_t detached = 0;

  /* A plain read first: the exchange would take the line from the producers even when
   * there is nothing to detach. */
  if (ec__load(&s->mailbox.head) == NULL)
    return;
  e = ck_stack_batch_pop_upmc(&s->mailbox);

  ec__tsan_acquire(&s->mailbox); /* pairs with the release in shard__post */

  while (e != NULL) {
    ck_stack_entry_t *next = e->next;
    shard__msg *m = shard__msg_from_entry(e);

    detached++;
    m->entry.next = head ? &head->entry : NULL;
    head = m;
    if (tail == NULL)
      tail = m;
    e = next;
  }
  if (head == NULL)
    return;
  /* Backlog depth for the stats: detached minus handled (both owner-written). */
  ec__store(&s->counters.mailbox_detached, s->counters.mailbox_detached + detached);
  tail->entry.next = NULL;
  if (s->backlog_tail)
    s->backlog_tail->entry.next = &head->entry;
  else
    s->backlog_head = head;
  s->backlog_tail = tail;
}

static void handle(shard *s, shard__msg *m)
{
  switch (m->kind) {
  case SHARD__MSG_SCHEDULE: {
    Event *e = m->ev;

    if (!(e->_priv.flags & SHARD__EVF_DEAD)) {
      int rc = shard__schedule_local(s, e);

      if (rc < 0) {
        /* The poster handed the Event over and got 0 back: nobody else will free it. */
        ec_debug_printf(DERROR, EC_LOG_SHARD,
                        "shard %d: posted schedule of Event %p (fd %d) failed: %s; freeing "
                        "the Event (its descriptor stays open)",
                        s->id, (void *)e, e->fd, strerror(-rc));
        shard__retire(s, e);
      } else if (m->mask && !(e->_priv.flags & SHARD__EVF_DEAD))
        shard__dispatch(s, e, m->mask); /* one dispatch per request, in posting order */
    }
    shard__event_unref(s, e);
    break;
  }
  case SHARD__MSG_RUN:
    shard__stat_fn(s, (void (*)(void))m->fn); /* named by the watchdog if it stalls */
    m->fn(m->arg);
    shard__stat_fn(s, NULL);
    break;
  }
}

int shard__mailbox_drain(shard *s, int budget)
{
  shard__msg_batch done;
  int n = 0;

  done.n = 0;

  if (s->backlog_head == NULL)
    refill_backlog(s);
  while (n < budget && s->backlog_head != NULL) {
    shard__msg *m = s->backlog_head;

    s->backlog_head = m->entry.next ? shard__msg_from_entry(m->entry.next) : NULL;
    if (s->backlog_head == NULL) {
      s->backlog_tail = NULL;
      if (n + 1 < budget)
        refill_backlog(s);
    }
    handle(s, m);
    shard__msg_release_batch(&done, m);
    n++;
  }
  shard__msg_release_flush(&done);
  ec__store(&s->counters.messages, s->counters.messages + (uint64_t)n);
  return n;
}

void shard__mailbox_flush(shard *s)
{
  while (shard__mailbox_pending(s))
    shard__mailbox_drain(s, 1 << 30);
}
