/*
 * shard/acceptor.c - accepting on the shards, sessions, timeouts and the graceful drain.
 *
 * Each acceptor is an fd Event on a listening socket, owned by one shard. It accepts up
 * to accepts_per_iteration connections per dispatch and starts a session for each on the
 * same shard (reuseport) or posts it to a chosen shard (single mode). A session is a small
 * record tied to the connection's Event (Event._priv.session) from accept until
 * event_close: connection limits count sessions, and the idle and handshake timeouts are
 * kept per (shard, listener) as lists in last-activity order, so that noting activity is
 * an unlink and an append (no timer per connection) and finding the expired ones looks
 * only at the list heads.
 *
 * EMFILE/ENFILE (and ENOBUFS/ENOMEM) pause the acceptor: its Event floats (no interest,
 * so level-triggered readiness cannot spin the shard) and a timer puts it back after
 * limits.accept_retry_delay; sessions already open are served meanwhile (nginx does the
 * same). On stop, each shard accepts what is already queued on its sockets, closes them
 * (so no handshaked connection is reset by the close), and lets its sessions run until
 * they end or shutdown.drain_timeout passes; then they get E_TIMEOUT.
 */
#include "shard/acceptor.h"
#include "ec_ssl.h"
#include "framework/atomic.h"
#include "framework/internal.h"
#include "framework/proxy.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

struct shard__lstate {
  struct ec_session *head[2], *tail[2]; /* by phase; head = least recently active */
};

typedef struct shard__acceptor {
  fw__listener *l;
  int fd;
  Event *ev;       /* the listening Event */
  Event *retry;    /* pending EMFILE retry timer, or NULL */
  int pausing;     /* paused since the last successful accept: log once per episode */
  int single;      /* hands connections to all shards */
  char *unix_path; /* removed at close */
} shard__acceptor;

#define EXPIRE_BUDGET 1024 /* E_TIMEOUT dispatches per iteration */

static uint64_t timeout_of(const fw__listener *l, int phase)
{
  /* Relaxed: a reload may change them (fw__listeners_reconfigure). */
  return phase == SHARD__SESSION_HANDSHAKE ? ec__load(&l->handshake_ns) : ec__load(&l->idle_ns);
}

/* ---- per-shard bookkeeping ---------------------------------------------------------------- */

static struct shard__lstate *lstate(shard *s, int listener)
{
  if (listener >= s->nlstates) {
    int n = fw__listener_count();
    struct shard__lstate *ls;

    if (n <= listener)
      n = listener + 1;
    ls = ec_realloc(MEMTYPE_FD_TABLE, s->lstates, sizeof(*ls) * (size_t)n);
    if (ls == NULL)
      return NULL;
    memset(ls + s->nlstates, 0, sizeof(*ls) * (size_t)(n - s->nlstates));
    s->lstates = ls;
    s->nlstates = n;
  }
  return &s->lstates[listener];
}

static void unlink_session(shard *s, struct ec_session *ss)
{
  struct shard__lstate *ls = &s->lstates[ss->listener];

  if (ss->prev)
    ss->prev->next = ss->next;
  else
    ls->head[ss->phase] = ss->next;
  if (ss->next)
    ss->next->prev = ss->prev;
  else
    ls->tail[ss->phase] = ss->prev;
  ss->prev = ss->next = NULL;
}

static void append_session(shard *s, struct ec_session *ss)
{
  struct shard__lstate *ls = &s->lstates[ss->listener];

  ss->prev = ls->tail[ss->phase];
  ss->next = NULL;
  if (ss->prev)
    ss->prev->next = ss;
  else
    ls->head[ss->phase] = ss;
  ls->tail[ss->phase] = ss;
}

void shard__session_touch(shard *s, struct ec_session *ss)
{
  /* The handshake deadline counts from accept: a peer trickling a header byte by byte
   * must not push it back (slowloris). */
  if (ss->phase == SHARD__SESSION_HANDSHAKE)
    return;
  ss->last_ns = s->now_ns;
  if (s->lstates[ss->listener].tail[ss->phase] == ss)
    return; /* already the most recent: the common case under load costs nothing more */
  unlink_session(s, ss);
  append_session(s, ss);
}

static void set_phase(shard *s, struct ec_session *ss, int phase)
{
  unlink_session(s, ss);
  ss->phase = (uint8_t)phase;
  ss->last_ns = s->now_ns;
  append_session(s, ss);
}

void shard__session_tls_phase(Event *e, int done)
{
  struct ec_session *ss = e->_priv.session;
  shard *s = shard__self();
  int phase = done ? SHARD__SESSION_ACTIVE : SHARD__SESSION_HANDSHAKE;

  if (ss == NULL || s == NULL || ss->shard != s->id || ss->ev != e || ss->phase == phase)
    return;
  set_phase(s, ss, phase); /* the handshake deadline counts from here */
}

/* ---- ending sessions ---------------------------------------------------------------------- */

static void session_end_local(void *arg)
{
  struct ec_session *ss = arg;
  shard *s = shard__self();

  unlink_session(s, ss);
  if (ss->ev != NULL)
    ss->ev->_priv.session = NULL;
  fw__sessions_release(fw__listener_get(ss->listener));
  ec__store(&s->nsessions, s->nsessions - 1); /* read by single-mode hand-off */
  ec_free(MEMTYPE_ACCEPT_CONSTRUCT, ss->hbuf);
  ec_free(MEMTYPE_ACCEPT_CONSTRUCT, ss);
}

void shard__session_end(struct ec_session *ss)
{
  shard *s = shard__self();

  if (ss->ev != NULL) {
    ss->ev->_priv.session = NULL;
    ss->ev = NULL;
  }
  /* The lists belong to the owner: a suspended session closed by a worker is ended there. */
  if (s != NULL && s->id == ss->shard)
    session_end_local(ss);
  else if (shard__post(shard__get(ss->shard), SHARD__MSG_RUN, NULL, 0, session_end_local, ss) < 0)
    ec_debug_printf(DCRITICAL, EC_LOG_NET, "session %p: cannot post its end to shard %d",
                    (void *)ss, ss->shard);
}

void shard__session_forget(Event *e)
{
  struct ec_session *ss = e->_priv.session;

  if (ss != NULL && ss->ev == e)
    ss->ev = NULL;
  e->_priv.session = NULL;
}

/* ---- starting sessions -------------------------------------------------------------------- */

static void refuse(const fw__listener *l, int fd)
{
  const char *reply = l->proto->busy_reply;

  /* Best effort and never blocking: a refused client gets the protocol's "busy" line if
   * the socket buffer takes it at once. */
  if (reply != NULL && send(fd, reply, strlen(reply), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
    ec_debug_printf(DDEBUG, EC_LOG_NET, "listener %s: busy reply: %s", l->name, strerror(errno));
}

/* The client's address as accept4 reported it (saves a getpeername per connection). */
typedef struct peer_addr {
  struct sockaddr_storage ss;
  socklen_t len;
} peer_addr;

static void fill_info(ec_accept_info *info, const fw__listener *l, int fd, int shard_id,
                      const peer_addr *peer)
{
  memset(info, 0, sizeof(*info));
  info->listener = l->name;
  info->protocol = l->proto->name;
  info->shard = shard_id;
  info->tls_ctx = l->tls_ctx;
  info->tls = l->tls_implicit;
  if (peer != NULL) {
    info->peer = peer->ss;
    info->peer_len = peer->len;
  } else {
    info->peer_len = sizeof(info->peer);
    if (getpeername(fd, (struct sockaddr *)&info->peer, &info->peer_len) < 0)
      info->peer_len = 0;
  }
  info->local_len = sizeof(info->local);
  if (getsockname(fd, (struct sockaddr *)&info->local, &info->local_len) < 0)
    info->local_len = 0;
}

/*
 * Hands the connection to its protocol: the accept hook, then session_start. Returns the
 * mask to schedule `e` with, or 0 when the session ended (the connection is closed; the
 * caller frees `e`).
 */
static int start_protocol(shard *s, struct ec_session *ss, Event *e, const ec_accept_info *info)
{
  fw__listener *l = fw__listener_get(ss->listener);
  int mask;

  /* Implicit TLS stays in the handshake phase (its deadline still counting from accept)
   * until tls.c reports the TLS handshake finished (shard__session_tls_phase). */
  if (!l->tls_implicit)
    set_phase(s, ss, SHARD__SESSION_ACTIVE);
  if (l->proto->accept_hook != NULL && l->proto->accept_hook(info, l->proto->closure) != 0) {
    ec__fetch_add(&l->refused, 1);
    refuse(l, e->fd);
    event_close(e);
    return 0;
  }
  e->callback = NULL;
  e->closure = NULL;
  /* Implicit TLS: the handshake runs inside the protocol's first event_read/event_write. */
  if (l->tls_implicit && ec_ssl_attach_server(e, l->tls_ctx) < 0) {
    event_close(e);
    return 0;
  }
  mask = l->proto->session_start(e, info, l->proto->closure);
  if (mask != 0 && e->callback == NULL) {
    ec_debug_printf(DERROR, EC_LOG_NET,
                    "listener %s: protocol %s returned mask 0x%x from session_start but set no "
                    "callback; closing the connection",
                    l->name, l->proto->name, mask);
    mask = 0;
  }
  if (mask == 0 && e->fd >= 0)
    event_close(e); /* the protocol ended it without closing: do not leak the descriptor */
  return mask;
}

static int unstarted_cb(Event *e, int type, void *closure, struct timeval *now)
{
  event_close(e); /* never dispatched in practice: only E_TIMEOUT could reach it */
  return 0;
}

/* Reads a PROXY header without consuming a byte beyond it (MSG_PEEK first). */
static int proxy_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct ec_session *ss = closure;
  shard *s = shard__self();
  fw__listener *l = fw__listener_get(ss->listener);
  unsigned char buf[FW__PROXY_MAX];
  fw__proxy_result pr;
  ec_accept_info info;
  const char *why = NULL;
  size_t have;
  ssize_t n;
  int len;

  if (type & E_TIMEOUT) {
    ec__fetch_add(&l->proxy_errors, 1);
    ec_debug_printf(DINFO, EC_LOG_NET, "listener %s: no PROXY header in time; closing", l->name);
    event_close(e);
    return 0;
  }
  /* Peek, so that no byte after the header is taken from the protocol. While the header is
   * incomplete every byte there is part of it, so those are consumed into hbuf: leaving
   * them in the socket would keep it readable and spin the shard. */
  have = ss->hlen;
  if (have > 0)
    memcpy(buf, ss->hbuf, have);
  n = recv(e->fd, buf + have, sizeof(buf) - have, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return E_READ;
  if (n <= 0) {
    event_close(e);
    return 0;
  }
  len = fw__proxy_parse(buf, have + (size_t)n, &pr, &why);
  if (len == 0) {
    if (ss->hbuf == NULL &&
        (ss->hbuf = ec_malloc_size(MEMTYPE_ACCEPT_CONSTRUCT, FW__PROXY_MAX)) == NULL) {
      event_close(e);
      return 0;
    }
    if (recv(e->fd, ss->hbuf + have, (size_t)n, 0) != n) {
      event_close(e);
      return 0;
    }
    ss->hlen = (uint16_t)(have + (size_t)n);
    return E_READ;
  }
  if (len < 0 || recv(e->fd, buf + have, (size_t)len - have, 0) != (ssize_t)(len - (int)have)) {
    ec__fetch_add(&l->proxy_errors, 1);
    ec_debug_printf(DNOTICE, EC_LOG_NET, "listener %s: bad PROXY header (%s); closing", l->name,
                    why ? why : "short read");
    event_close(e);
    return 0;
  }
  ec_free(MEMTYPE_ACCEPT_CONSTRUCT, ss->hbuf);
  ss->hbuf = NULL;
  ss->hlen = 0;
  fill_info(&info, l, e->fd, s->id, NULL); /* rare: only LOCAL headers keep it */
  if (!pr.local) {
    info.peer = pr.src;
    info.peer_len = pr.src_len;
    info.local = pr.dst;
    info.local_len = pr.dst_len;
    info.proxied = 1;
  }
  return start_protocol(s, ss, e, &info);
}

/* Starts a session for accepted descriptor `fd` on the calling shard. */
static void session_begin(shard *s, fw__listener *l, int fd, const peer_addr *peer)
{
  struct ec_session *ss;
  ec_accept_info info;
  Event *e;
  int one = 1, mask;

  if (fw__sessions_reserve(l) < 0) {
    ec__fetch_add(&l->refused, 1);
    refuse(l, fd);
    close(fd);
    return;
  }
  ec__fetch_add(&l->accepted, 1);
  if (l->tcp_nodelay)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* EOPNOTSUPP on Unix */
  if (l->rcvbuf > 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &l->rcvbuf, sizeof(l->rcvbuf));
  if (l->sndbuf > 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &l->sndbuf, sizeof(l->sndbuf));
  ss = ec_malloc_size(MEMTYPE_ACCEPT_CONSTRUCT, sizeof(*ss));
  e = build_fd_event(fd, E_READ, 0, unstarted_cb, ss);
  if (ss == NULL || e == NULL || lstate(s, l->index) == NULL) {
    ec_debug_printf(DERROR, EC_LOG_NET, "listener %s: out of memory for a session", l->name);
    ec_free(MEMTYPE_ACCEPT_CONSTRUCT, ss);
    event_free(e);
    fw__sessions_release(l);
    close(fd);
    return;
  }
  memset(ss, 0, sizeof(*ss));
  ss->listener = l->index;
  ss->shard = s->id;
  ss->ev = e;
  ss->phase = SHARD__SESSION_HANDSHAKE;
  ss->last_ns = s->now_ns;
  append_session(s, ss);
  ec__store(&s->nsessions, s->nsessions + 1);
  e->_priv.session = ss;
  if (l->proxy_protocol) {
    e->callback = proxy_cb;
    mask = E_READ;
  } else {
    fill_info(&info, l, fd, s->id, peer);
    mask = start_protocol(s, ss, e, &info);
  }
  if (mask == 0) {
    event_free(e);
    return;
  }
  e->mask = mask;
  if (shard__schedule_local(s, e) < 0) {
    event_close(e);
    event_free(e);
  }
}

/* ---- accepting -------------------------------------------------------------------------- */

struct handoff {
  fw__listener *l;
  int fd;
  peer_addr peer;
};

static void handoff_run(void *arg)
{
  struct handoff *h = arg;

  session_begin(shard__self(), h->l, h->fd, &h->peer);
  ec_free(MEMTYPE_GENERIC, h);
}

/* Single mode: the shard with the fewest sessions gets the connection (ties rotate). */
static void hand_off(shard *s, fw__listener *l, int fd, const peer_addr *peer)
{
  int n = ec_shard_count(), best = -1;
  int64_t best_load = INT64_MAX;
  struct handoff *h;

  for (int k = 0; k < n; k++) {
    int i = (int)((s->handoff_rr + (unsigned)k) % (unsigned)n);
    int64_t load = ec__load(&shard__get(i)->nsessions);

    if (load < best_load) {
      best = i;
      best_load = load;
    }
  }
  s->handoff_rr++;
  if (best == s->id) {
    session_begin(s, l, fd, peer);
    return;
  }
  h = ec_malloc_size(MEMTYPE_GENERIC, sizeof(*h));
  if (h != NULL) {
    h->l = l;
    h->fd = fd;
    h->peer = *peer;
  }
  if (h == NULL || shard__post(shard__get(best), SHARD__MSG_RUN, NULL, 0, handoff_run, h) < 0) {
    ec_free(MEMTYPE_GENERIC, h);
    session_begin(s, l, fd, peer); /* serve it here rather than drop it */
  }
}

static int retry_cb(Event *e, int type, void *closure, struct timeval *now)
{
  shard__acceptor *a = closure;

  a->retry = NULL;
  if (a->ev != NULL)
    schedule_event(a->ev); /* back from the floating set, watching for connections */
  return 0;
}

static void pause_accepting(shard *s, shard__acceptor *a, int err)
{
  fw__listener *l = a->l;

  ec__fetch_add(&l->pauses, 1);
  ec_debug_printf(a->pausing++ ? DDEBUG : DWARNING, EC_LOG_NET,
                  "listener %s: accept4(fd %d) failed: %s; pausing accepts on shard %d for %.0f "
                  "ms (open sessions are still served)",
                  l->name, a->fd, strerror(err), s->id, (double)fw__accept_retry_ns() / 1e6);
  float_event(a->ev);
  a->retry = build_event_from_now_f((float)((double)fw__accept_retry_ns() / 1e9), -1, retry_cb, a);
  if (a->retry != NULL)
    shard__schedule_local(s, a->retry);
}

/* Accepts up to `budget` connections; returns 1 if accepting had to pause. */
static int accept_some(shard *s, shard__acceptor *a, int budget)
{
  for (int i = 0; i < budget; i++) {
    peer_addr peer;
    int fd;

    peer.len = sizeof(peer.ss);
    fd = accept4(a->fd, (struct sockaddr *)&peer.ss, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd >= 0) {
      if (a->pausing) {
        ec_debug_printf(DNOTICE, EC_LOG_NET,
                        "listener %s: accepting again on shard %d after %d "
                        "pauses",
                        a->l->name, s->id, a->pausing);
        a->pausing = 0;
      }
      if (a->single && ec_shard_count() > 1)
        hand_off(s, a->l, fd, &peer);
      else
        session_begin(s, a->l, fd, &peer);
      continue;
    }
    switch (errno) {
    case EAGAIN:
      return 0;
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM: /* a firewall said no to this one */
      continue;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
      pause_accepting(s, a, errno);
      return 1;
    default:
      ec_debug_printf(DERROR, EC_LOG_NET, "listener %s: accept4(fd %d) failed: %s", a->l->name,
                      a->fd, strerror(errno));
      return 0;
    }
  }
  return 0;
}

static int acceptor_cb(Event *e, int type, void *closure, struct timeval *now)
{
  shard__acceptor *a = closure;

  accept_some(shard__self(), a, a->l->accepts_per_iter);
  return E_READ; /* ignored if accepting paused: the Event floats */
}

static int install_failures; /* acceptors that could not be installed (atomic) */
static int installs_pending; /* acceptor_add closures posted and not yet run (atomic) */

static void acceptor_add(void *arg)
{
  shard__acceptor *a = arg;
  shard *s = shard__self();

  if (s->nacceptors == s->acceptors_cap) {
    int cap = s->acceptors_cap ? 2 * s->acceptors_cap : 4;
    shard__acceptor **v = ec_realloc(MEMTYPE_FD_TABLE, s->acceptors, sizeof(*v) * (size_t)cap);

    if (v == NULL)
      goto fail;
    s->acceptors = v;
    s->acceptors_cap = cap;
  }
  a->ev = build_fd_event(a->fd, E_READ, 0, acceptor_cb, a);
  if (a->ev == NULL || lstate(s, a->l->index) == NULL || shard__schedule_local(s, a->ev) < 0)
    goto fail;
  s->acceptors[s->nacceptors++] = a;
  if (ec__load_acquire(&s->draining)) /* installed after a stop: close at once */
    shard__drain_begin(s);
  ec__fetch_add(&installs_pending, -1); /* pairs with the load in shard__acceptors_settle */
  return;
fail:
  ec__fetch_add(&install_failures, 1);
  ec__fetch_add(&installs_pending, -1);
  ec_debug_printf(DERROR, EC_LOG_NET, "listener %s: shard %d cannot watch fd %d", a->l->name, s->id,
                  a->fd);
  event_free(a->ev);
  close(a->fd);
  ec_free(MEMTYPE_CONFIG, a->unix_path);
  ec_free(MEMTYPE_NETLISTENER_INSTANCE, a);
}

void shard__acceptors_reset(void)
{
  ec__store(&installs_pending, 0);
  ec__store(&install_failures, 0);
}

int shard__acceptors_settle(void)
{
  /*
   * Polls rather than waiting for a reply from each shard: a stop may come at any moment,
   * and a shard that has left its loop handles no more messages (the join runs the
   * closures still queued). Installing takes microseconds once the shards run, so this
   * rarely sleeps at all.
   */
  while (ec__load_acquire(&installs_pending) > 0 && !ec_framework_stopping()) {
    struct timespec ts = {0, 200000};

    nanosleep(&ts, NULL);
  }
  return __atomic_exchange_n(&install_failures, 0, __ATOMIC_ACQ_REL);
}

int shard__acceptor_install(fw__listener *l, int fd, int id, int single, const char *unix_path)
{
  shard__acceptor *a = ec_malloc_size(MEMTYPE_NETLISTENER_INSTANCE, sizeof(*a));
  int rc;

  if (a == NULL)
    return -ENOMEM;
  a->single = single;
  a->unix_path = unix_path ? ec_mt_strdup(MEMTYPE_CONFIG, unix_path) : NULL;
  a->l = l;
  a->fd = fd;
  a->ev = NULL;
  a->retry = NULL;
  a->pausing = 0;
  ec__fetch_add(&installs_pending, 1);
  rc = shard__post(shard__get(id), SHARD__MSG_RUN, NULL, 0, acceptor_add, a);
  if (rc < 0) {
    ec__fetch_add(&installs_pending, -1);
    ec_free(MEMTYPE_CONFIG, a->unix_path);
    ec_free(MEMTYPE_NETLISTENER_INSTANCE, a);
  }
  return rc;
}

static void acceptor_close(shard *s, shard__acceptor *a)
{
  if (a->retry != NULL && !clear_timed_event(a->retry))
    event_free(a->retry);
  a->retry = NULL;
  if (a->ev != NULL) {
    shard__unregister(s, a->ev);
    event_close(a->ev);
    shard__retire(s, a->ev);
    a->ev = NULL;
  }
  if (a->unix_path != NULL) {
    unlink(a->unix_path); /* bound by this acceptor: nobody listens there any more */
    ec_free(MEMTYPE_CONFIG, a->unix_path);
  }
  ec_free(MEMTYPE_NETLISTENER_INSTANCE, a);
}

/* ---- timeouts and the drain ------------------------------------------------------------- */

/* Sends E_TIMEOUT to a session's Event if it is scheduled here and idle. */
static void expire(shard *s, struct ec_session *ss)
{
  fw__listener *l = fw__listener_get(ss->listener);
  Event *e = ss->ev;

  /* Another full period before it is looked at again. Moved by hand: touching does not
   * move a session in the handshake phase, and one left at the head would be picked again
   * at every iteration. */
  ss->last_ns = s->now_ns;
  if (s->lstates[ss->listener].tail[ss->phase] != ss) {
    unlink_session(s, ss);
    append_session(s, ss);
  }
  if (e == NULL || ec__load(&e->_priv.state) != SHARD__EV_SCHEDULED ||
      (e->_priv.flags & SHARD__EVF_DISPATCHING))
    return; /* suspended (a worker has it) or busy: try again later */
  ec__fetch_add(&l->timeouts, 1);
  shard__dispatch(s, e, E_TIMEOUT); /* may end the session: ss is not touched after */
}

int64_t shard__sessions_expire(shard *s)
{
  int64_t next = -1;
  int budget = EXPIRE_BUDGET;

  for (int li = 0; li < s->nlstates; li++) {
    fw__listener *l = fw__listener_get(li);

    for (int ph = 0; l != NULL && ph < 2; ph++) {
      uint64_t t = timeout_of(l, ph);
      struct ec_session *ss;

      if (t == 0)
        continue;
      while ((ss = s->lstates[li].head[ph]) != NULL) {
        uint64_t due = ss->last_ns + t;

        if (due > s->now_ns || budget == 0) {
          int64_t d = due > s->now_ns ? (int64_t)(due - s->now_ns) : 0;

          if (next < 0 || d < next)
            next = d;
          break;
        }
        budget--;
        expire(s, ss);
      }
    }
  }
  return next;
}

void shard__drain_begin(shard *s)
{
  if (!s->draining) {
    ec__store_release(&s->draining, 1);
    s->drain_deadline = s->now_ns + fw__drain_ns();
  }
  /* Take what the kernel already queued (those clients completed the handshake), then
   * close: closing a SO_REUSEPORT socket resets whatever is still in its queue. */
  for (int i = 0; i < s->nacceptors; i++) {
    shard__acceptor *a = s->acceptors[i];

    if (a->retry == NULL)
      accept_some(s, a, 1 << 16);
    acceptor_close(s, a);
  }
  s->nacceptors = 0;
}

int shard__drain_done(shard *s)
{
  if (s->nsessions == 0)
    return 1;
  if (s->now_ns < s->drain_deadline)
    return 0;
  /* Deadline: every session still open is told to finish now. */
  for (int li = 0; li < s->nlstates; li++) {
    for (int ph = 0; ph < 2; ph++) {
      int n = 0;

      for (struct ec_session *ss = s->lstates[li].head[ph]; ss; ss = ss->next)
        n++;
      while (n-- > 0 && s->lstates[li].head[ph] != NULL)
        expire(s, s->lstates[li].head[ph]);
    }
  }
  return 1;
}

void shard__sessions_free(shard *s)
{
  for (int i = 0; i < s->nacceptors; i++)
    acceptor_close(s, s->acceptors[i]);
  s->nacceptors = 0;
  ec_free(MEMTYPE_FD_TABLE, s->acceptors);
  s->acceptors = NULL;
  s->acceptors_cap = 0;
  for (int li = 0; li < s->nlstates; li++) {
    for (int ph = 0; ph < 2; ph++) {
      while (s->lstates[li].head[ph] != NULL) {
        struct ec_session *ss = s->lstates[li].head[ph];

        if (ss->ev != NULL)
          ss->ev->_priv.session = NULL;
        ss->ev = NULL;
        session_end_local(ss);
      }
    }
  }
  ec_free(MEMTYPE_FD_TABLE, s->lstates);
  s->lstates = NULL;
  s->nlstates = 0;
}
