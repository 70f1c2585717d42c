/*
 * samples/load/load.c - ecshard-load: an HTTP/1.1, SMTP and echo load generator built on
 * ecshard's public API (client Events connecting out, event_io_* for writes, shards as the
 * threads).
 *
 *   ecshard-load --mode http|smtp|echo --target 127.0.0.1:PORT [options]
 *
 * Each shard owns connections/shards of the connections. Closed loop (the default): every
 * connection keeps `depth` requests in flight and sends the next one when an answer
 * arrives. Open loop (--rate R): every connection sends on a fixed schedule (R/C requests
 * per second each); a request late because the connection was still busy is sent as soon
 * as it can be, and its latency is measured from the time it should have been sent (as
 * wrk2 does), so a stalled server shows up in the percentiles instead of silently slowing
 * the client down (coordinated omission).
 *
 * A "request" is an HTTP request/response, an SMTP message (MAIL .. final 250) or one
 * echo block of --size bytes. Latency runs from the send (or intended send) of the
 * request's first byte to the arrival of its answer's last byte.
 *
 * Loopback only unless --allow-remote. Every run is bounded by --duration (default 10 s)
 * and/or --requests.
 */
#include "ec_config.h"
#include "ec_framework.h"
#include "event.h"
#include "scheduler.h"

#include "hist.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH    256
#define RBUF_INIT    16384
#define RBUF_MAX     (4 * 1024 * 1024)
#define RECONNECT_US 10000
#define MAX_SHARDS   256

enum mode { MODE_ECHO, MODE_HTTP, MODE_SMTP };

/* SMTP session states. */
enum smtp_state {
  SM_GREETING,
  SM_EHLO,
  SM_READY, /* between messages */
  SM_MAIL,
  SM_RCPT,
  SM_DATA,
  SM_PIPE, /* pipelined MAIL+RCPT+DATA: replies counted in `pipe_left` */
  SM_BODY,
  SM_QUIT,
};

typedef struct options {
  enum mode mode;
  const char *target;
  struct sockaddr_storage addr;
  socklen_t addrlen;
  int shards;
  int conns;
  double duration;
  uint64_t requests;
  double rate; /* total requests/s; 0: closed loop */
  int depth;
  const char *path;
  const char *host;
  int size;
  int msgs_per_session;
  int pipelining;
  int json;
  double progress;
  double warmup;
  int allow_remote;
} options;

struct shard_ctx;

typedef struct conn {
  struct shard_ctx *sc;
  Event *e;
  Event *timer;
  int fd;
  int connected;
  event_io_state out;
  char *rbuf;
  int rlen, rcap;
  /* in-flight requests: their start (or intended start) times, oldest first */
  uint64_t start[MAX_DEPTH];
  int head, inflight;
  uint64_t next_ns;  /* open loop: intended time of the next request */
  uint64_t echo_got; /* echo: bytes of the oldest block received */
  /* smtp */
  enum smtp_state sm;
  int pipe_left;
  int session_msgs;
  int ehlo_pipelining;
} conn;

typedef struct shard_ctx {
  int index;
  conn *conns;
  int nconns;
  uint64_t quota; /* requests this shard may start; UINT64_MAX: unlimited */
  uint64_t issued;
  hist h;
  /* counters read by the main thread while running (relaxed atomics) */
  _Atomic uint64_t done, errors, connect_errors, proto_errors, non2xx, sessions, bytes_in,
      bytes_out, reconnects, active;
  _Atomic int finished;
  /* prebuilt requests */
  char *req;
  int reqlen;
  char *body; /* smtp: message body with the final dot */
  int bodylen;
} shard_ctx;

static options opt = {
    .mode = MODE_ECHO,
    .shards = 1,
    .conns = 1,
    .duration = 10.0,
    .depth = 1,
    .path = "/",
    .size = 64,
    .msgs_per_session = 10,
    .pipelining = 1,
    .progress = 1.0,
};
static shard_ctx *ctxs;
static atomic_int stopping;
static atomic_int shards_finished;
static uint64_t t_start_ns, t_record_ns, t_end_ns;

static uint64_t now_ns(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void add(_Atomic uint64_t *c, uint64_t v)
{
  /* one writer (the owner shard): a relaxed load+store is enough and takes no lock */
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v, memory_order_relaxed);
}

static uint64_t rd(_Atomic uint64_t *c)
{
  return atomic_load_explicit(c, memory_order_relaxed);
}

static void conn_open(conn *c);
static int conn_cb(Event *e, int type, void *closure, struct timeval *now);

/* ---- requests ------------------------------------------------------------------------ */

static int may_issue(conn *c)
{
  shard_ctx *sc = c->sc;

  if (atomic_load_explicit(&stopping, memory_order_relaxed) || sc->issued >= sc->quota)
    return 0;
  if (opt.mode == MODE_SMTP)
    return c->sm == SM_READY && c->inflight == 0;
  return c->inflight < opt.depth;
}

static void push_start(conn *c, uint64_t t)
{
  c->start[(c->head + c->inflight) % MAX_DEPTH] = t;
  c->inflight++;
  c->sc->issued++;
}

static void complete(conn *c, int ok)
{
  shard_ctx *sc = c->sc;
  uint64_t t = now_ns(), s = c->start[c->head];

  c->head = (c->head + 1) % MAX_DEPTH;
  c->inflight--;
  if (s >= t_record_ns) {
    hist_record(&sc->h, t > s ? t - s : 0);
    add(&sc->done, 1);
    if (!ok)
      add(&sc->non2xx, 1);
  }
  if (sc->quota != UINT64_MAX && sc->issued >= sc->quota) {
    int busy = 0;

    for (int i = 0; i < sc->nconns; i++)
      busy |= sc->conns[i].inflight;
    if (!busy && !atomic_exchange(&sc->finished, 1))
      atomic_fetch_add(&shards_finished, 1);
  }
}

static int queue(conn *c, const char *buf, int len)
{
  add(&c->sc->bytes_out, (uint64_t)len);
  return ec_event_io_queue(&c->out, buf, len) == EVENT_IO_ERROR ? -1 : 0;
}

static int smtp_send_mail(conn *c)
{
  static const char mail[] = "MAIL FROM:<load@ecshard.test>\r\n";
  static const char rcpt[] = "RCPT TO:<sink@ecshard.test>\r\n";
  static const char data[] = "DATA\r\n";

  if (c->sm == SM_READY && opt.pipelining && c->ehlo_pipelining) {
    c->sm = SM_PIPE;
    c->pipe_left = 3;
    return queue(c, mail, sizeof(mail) - 1) | queue(c, rcpt, sizeof(rcpt) - 1) |
           queue(c, data, sizeof(data) - 1);
  }
  switch (c->sm) {
  case SM_READY:
    c->sm = SM_MAIL;
    return queue(c, mail, sizeof(mail) - 1);
  case SM_MAIL:
    c->sm = SM_RCPT;
    return queue(c, rcpt, sizeof(rcpt) - 1);
  default:
    c->sm = SM_DATA;
    return queue(c, data, sizeof(data) - 1);
  }
}

/* Starts the requests that are due; returns -1 on a failure to queue. */
static int issue(conn *c)
{
  uint64_t t = 0;

  while (may_issue(c)) {
    if (opt.rate > 0) {
      if (t == 0)
        t = now_ns();
      if (c->next_ns > t)
        break;
      push_start(c, c->next_ns);
      c->next_ns += (uint64_t)(1e9 * opt.conns / opt.rate);
    } else {
      push_start(c, now_ns());
    }
    if (opt.mode == MODE_SMTP) {
      if (smtp_send_mail(c) < 0)
        return -1;
    } else if (queue(c, c->sc->req, c->sc->reqlen) < 0) {
      return -1;
    }
  }
  return 0;
}

static int timer_cb(Event *e, int type, void *closure, struct timeval *now);

/* Open loop: wake the connection when its next request is due and it could send it. */
static void arm_timer(conn *c)
{
  uint64_t t, d;
  struct timeval tv;

  if (opt.rate <= 0 || c->timer != NULL || !c->connected || !may_issue(c))
    return;
  t = now_ns();
  d = c->next_ns > t ? c->next_ns - t : 0;
  tv.tv_sec = (time_t)(d / 1000000000ull);
  tv.tv_usec = (suseconds_t)((d % 1000000000ull + 999) / 1000);
  c->timer = build_event(tv, E_FROM_NOW, -1, timer_cb, c);
  if (c->timer != NULL)
    schedule_event(c->timer);
}

/* Sends what is queued; returns the interest mask for the connection, or -1. */
static int flush(conn *c)
{
  int rc = event_io_retry(c->e, &c->out);

  if (rc == EVENT_IO_ERROR)
    return -1;
  return E_READ | (rc == EVENT_IO_PENDING ? c->out.needmask : 0);
}

/* ---- connections --------------------------------------------------------------------- */

static void conn_drop(conn *c, int error, int in_cb)
{
  shard_ctx *sc = c->sc;

  if (error)
    add(&sc->errors, 1);
  if (c->timer != NULL) {
    if (!clear_timed_event(c->timer))
      event_free(c->timer);
    c->timer = NULL;
  }
  event_io_state_clean(&c->out);
  free(c->rbuf);
  c->rbuf = NULL;
  c->rlen = c->rcap = 0;
  /* requests in flight on a dropped connection are lost, not completed */
  sc->issued -= (uint64_t)c->inflight;
  c->inflight = 0;
  c->head = 0;
  c->echo_got = 0;
  if (c->connected)
    add(&sc->active, (uint64_t)-1);
  c->connected = 0;
  if (c->e != NULL) {
    event_close(c->e);
    if (!in_cb)
      event_free(c->e); /* else the callback returns 0 and the scheduler frees it */
  }
  c->e = NULL;
  c->fd = -1;
}

static int reconnect_cb(Event *e, int type, void *closure, struct timeval *now)
{
  conn *c = closure;

  c->timer = NULL;
  if (!atomic_load(&stopping))
    conn_open(c);
  return 0;
}

static void reconnect_later(conn *c, int us)
{
  struct timeval tv = {.tv_sec = 0, .tv_usec = us};

  if (atomic_load(&stopping) || c->sc->issued >= c->sc->quota)
    return;
  add(&c->sc->reconnects, 1);
  c->timer = build_event(tv, E_FROM_NOW, -1, reconnect_cb, c);
  if (c->timer != NULL)
    schedule_event(c->timer);
}

static void conn_open(conn *c)
{
  int fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;

  if (fd < 0) {
    fprintf(stderr, "ecshard-load: socket: %s\n", strerror(errno));
    add(&c->sc->connect_errors, 1);
    reconnect_later(c, 100000);
    return;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, (struct sockaddr *)&opt.addr, opt.addrlen) < 0 && errno != EINPROGRESS) {
    add(&c->sc->connect_errors, 1);
    close(fd);
    reconnect_later(c, 100000);
    return;
  }
  c->fd = fd;
  c->e = build_fd_event(fd, E_WRITE, E_AGGRESSIVE_NONE, conn_cb, c);
  if (c->e == NULL || ec_schedule_event(c->e) < 0) {
    add(&c->sc->connect_errors, 1);
    event_free(c->e);
    c->e = NULL;
    close(fd);
    reconnect_later(c, 100000);
  }
}

static int conn_ready(conn *c)
{
  int err = 0;
  socklen_t len = sizeof(err);

  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
    add(&c->sc->connect_errors, 1);
    return -1;
  }
  c->connected = 1;
  add(&c->sc->active, 1);
  c->next_ns = now_ns();
  if (opt.mode == MODE_SMTP) {
    c->sm = SM_GREETING;
    c->session_msgs = 0;
  }
  return 0;
}

/* ---- answers ------------------------------------------------------------------------- */

static int ci_prefix(const char *s, const char *end, const char *word)
{
  size_t n = strlen(word);

  return (size_t)(end - s) >= n && strncasecmp(s, word, n) == 0;
}

/* Parses complete HTTP responses at the front of rbuf; returns bytes consumed or -1. */
static int http_parse(conn *c)
{
  int used = 0;

  while (c->inflight > 0) {
    char *p = c->rbuf + used, *end = c->rbuf + c->rlen;
    char *hdr_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
    long clen = 0;
    int status, close_after = 0;

    if (hdr_end == NULL)
      break;
    if (end - p < 12 || strncmp(p, "HTTP/1.", 7) != 0) {
      add(&c->sc->proto_errors, 1);
      return -1;
    }
    status = atoi(p + 9);
    for (char *l = memchr(p, '\n', (size_t)(hdr_end - p)); l != NULL && l < hdr_end;) {
      char *h = l + 1, *eol = memchr(h, '\n', (size_t)(hdr_end + 2 - h));

      if (eol == NULL)
        eol = hdr_end;
      if (ci_prefix(h, eol, "content-length:")) {
        clen = strtol(h + 15, NULL, 10);
      } else if (ci_prefix(h, eol, "connection:")) {
        close_after = memmem(h, (size_t)(eol - h), "close", 5) != NULL;
      } else if (ci_prefix(h, eol, "transfer-encoding:")) {
        add(&c->sc->proto_errors, 1); /* chunked answers are not supported */
        return -1;
      }
      l = eol;
    }
    if (clen < 0 || hdr_end + 4 + clen > end)
      break;
    used = (int)(hdr_end + 4 + clen - c->rbuf);
    complete(c, status >= 200 && status < 300);
    if (close_after)
      return -2;
  }
  return used;
}

static int smtp_reply(conn *c, int code)
{
  switch (c->sm) {
  case SM_GREETING:
    if (code != 220)
      return -1;
    c->sm = SM_EHLO;
    return queue(c, "EHLO load.ecshard.test\r\n", 24);
  case SM_EHLO:
    if (code != 250)
      return -1;
    c->sm = SM_READY;
    add(&c->sc->sessions, 1);
    return 0;
  case SM_MAIL:
  case SM_RCPT:
    return code == 250 ? smtp_send_mail(c) : -1;
  case SM_PIPE:
    if (--c->pipe_left > 0)
      return code == 250 ? 0 : -1;
    if (code != 354)
      return -1;
    /* fall through */
  case SM_DATA:
    if (code != 354)
      return -1;
    c->sm = SM_BODY;
    return queue(c, c->sc->body, c->sc->bodylen);
  case SM_BODY:
    if (code != 250)
      return -1;
    complete(c, 1);
    c->sm = SM_READY;
    if (++c->session_msgs >= opt.msgs_per_session ||
        (c->sc->issued >= c->sc->quota && c->sc->quota != UINT64_MAX)) {
      c->sm = SM_QUIT;
      return queue(c, "QUIT\r\n", 6);
    }
    return 0;
  case SM_QUIT:
    return -2; /* the session is over: reconnect */
  default:
    return -1;
  }
}

/* Parses complete SMTP replies (multi-line ones end with "ddd "); consumed bytes or <0. */
static int smtp_parse(conn *c)
{
  int used = 0;

  for (;;) {
    char *p = c->rbuf + used;
    char *nl = memchr(p, '\n', (size_t)(c->rlen - used));
    int rc;

    if (nl == NULL)
      return used;
    used = (int)(nl + 1 - c->rbuf);
    if (nl - p < 3 || p[0] < '1' || p[0] > '5') {
      add(&c->sc->proto_errors, 1);
      return -1;
    }
    if (c->sm == SM_EHLO && nl - p >= 14 && strncasecmp(p + 4, "PIPELINING", 10) == 0)
      c->ehlo_pipelining = 1;
    if (nl - p > 3 && p[3] == '-')
      continue;
    rc = smtp_reply(c, atoi(p));
    if (rc == -2)
      return -2;
    if (rc < 0) {
      add(&c->sc->proto_errors, 1);
      return -1;
    }
  }
}

static int echo_consume(conn *c, int n)
{
  uint64_t got = c->echo_got + (uint64_t)n;

  while (got >= (uint64_t)opt.size && c->inflight > 0) {
    got -= (uint64_t)opt.size;
    complete(c, 1);
  }
  if (c->inflight == 0 && got > 0) {
    add(&c->sc->proto_errors, 1); /* more bytes than were sent */
    return -1;
  }
  c->echo_got = got;
  return 0;
}

/* Reads what is there; 0 to go on, -1 on error, -2 when the peer ended the session. */
static int conn_read(conn *c)
{
  char tmp[65536];

  for (int rounds = 0; rounds < 8; rounds++) {
    int need, n, used, space = 0;

    if (opt.mode == MODE_ECHO) {
      n = event_read(c->e, tmp, sizeof(tmp), &need);
    } else {
      if (c->rcap - c->rlen < 4096) {
        int cap = c->rcap ? c->rcap * 2 : RBUF_INIT;
        char *nb;

        if (cap > RBUF_MAX || (nb = realloc(c->rbuf, (size_t)cap)) == NULL) {
          add(&c->sc->proto_errors, 1);
          return -1;
        }
        c->rbuf = nb;
        c->rcap = cap;
      }
      space = c->rcap - c->rlen;
      n = event_read(c->e, c->rbuf + c->rlen, space, &need);
    }
    if (n < 0 && errno == EAGAIN)
      return 0;
    if (n < 0)
      return -1;
    if (n == 0)
      return (opt.mode == MODE_SMTP && c->sm == SM_QUIT) || c->inflight == 0 ? -2 : -1;
    add(&c->sc->bytes_in, (uint64_t)n);
    if (opt.mode == MODE_ECHO) {
      if (echo_consume(c, n) < 0)
        return -1;
      continue;
    }
    c->rlen += n;
    used = opt.mode == MODE_HTTP ? http_parse(c) : smtp_parse(c);
    if (used < 0)
      return used;
    memmove(c->rbuf, c->rbuf + used, (size_t)(c->rlen - used));
    c->rlen -= used;
    if (n < space)
      return 0; /* short read: the socket is drained */
  }
  return 0;
}

static int conn_cb(Event *e, int type, void *closure, struct timeval *now)
{
  conn *c = closure;
  int rc, mask;

  if (!c->connected) {
    if (conn_ready(c) < 0) {
      conn_drop(c, 0, 1);
      reconnect_later(c, 100000);
      return 0;
    }
  } else if (type & (E_READ | E_EXCEPTION)) {
    rc = conn_read(c);
    if (rc < 0) {
      conn_drop(c, rc == -1, 1);
      if (rc == -2 && opt.mode == MODE_SMTP) {
        if (!atomic_load(&stopping) && c->sc->issued < c->sc->quota)
          conn_open(c); /* the next session */
      } else
        reconnect_later(c, rc == -2 ? 0 : RECONNECT_US);
      return 0;
    }
  }
  if (issue(c) < 0 || (mask = flush(c)) < 0) {
    conn_drop(c, 1, 1);
    reconnect_later(c, RECONNECT_US);
    return 0;
  }
  if (atomic_load_explicit(&stopping, memory_order_relaxed) && c->inflight == 0 &&
      !ec_event_io_pending(&c->out)) {
    conn_drop(c, 0, 1);
    return 0;
  }
  arm_timer(c);
  return mask;
}

static int timer_cb(Event *e, int type, void *closure, struct timeval *now)
{
  conn *c = closure;
  int mask;

  c->timer = NULL;
  if (!c->connected || c->e == NULL)
    return 0;
  if (issue(c) < 0 || (mask = flush(c)) < 0) {
    conn_drop(c, 1, 0);
    reconnect_later(c, RECONNECT_US);
    return 0;
  }
  if (mask != c->e->mask) {
    c->e->mask = mask;
    schedule_event(c->e);
  }
  arm_timer(c);
  return 0;
}

/* ---- setup --------------------------------------------------------------------------- */

static void shard_begin(void *arg)
{
  shard_ctx *sc = arg;

  for (int i = 0; i < sc->nconns; i++)
    conn_open(&sc->conns[i]);
  if (sc->quota == 0 && !atomic_exchange(&sc->finished, 1))
    atomic_fetch_add(&shards_finished, 1);
}

static int build_requests(shard_ctx *sc)
{
  if (opt.mode == MODE_ECHO) {
    sc->reqlen = opt.size;
    sc->req = malloc((size_t)opt.size);
    if (sc->req == NULL)
      return -1;
    for (int i = 0; i < opt.size; i++)
      sc->req[i] = (char)('a' + i % 26);
  } else if (opt.mode == MODE_HTTP) {
    const char *host = opt.host ? opt.host : opt.target;

    sc->reqlen =
        asprintf(&sc->req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ecshard-load\r\n\r\n",
                 opt.path, host);
    if (sc->reqlen < 0)
      return -1;
  } else {
    static const char head[] = "From: load@ecshard.test\r\nTo: sink@ecshard.test\r\n"
                               "Subject: ecshard-load\r\n\r\n";
    int n = (int)sizeof(head) - 1, cap = opt.size + n + 128;

    sc->body = malloc((size_t)cap);
    if (sc->body == NULL)
      return -1;
    memcpy(sc->body, head, (size_t)n);
    while (n < opt.size + (int)sizeof(head) - 1) {
      int line = 76;

      if (opt.size + (int)sizeof(head) - 1 - n < line + 2)
        line = opt.size + (int)sizeof(head) - 1 - n - 2;
      if (line < 1)
        line = 1;
      memset(sc->body + n, 'x', (size_t)line);
      n += line;
      sc->body[n++] = '\r';
      sc->body[n++] = '\n';
    }
    memcpy(sc->body + n, ".\r\n", 3);
    sc->bodylen = n + 3;
  }
  return 0;
}

static int parse_target(const char *t)
{
  char host[256];
  const char *colon = strrchr(t, ':');
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
  size_t hl;
  int rc;

  if (colon == NULL || colon == t) {
    fprintf(stderr, "ecshard-load: --target wants HOST:PORT, not '%s'\n", t);
    return -1;
  }
  hl = (size_t)(colon - t);
  if (t[0] == '[' && hl >= 2 && t[hl - 1] == ']') {
    t++;
    hl -= 2;
  }
  if (hl >= sizeof(host)) {
    fprintf(stderr, "ecshard-load: host name too long\n");
    return -1;
  }
  memcpy(host, t, hl);
  host[hl] = '\0';
  if (!opt.allow_remote)
    hints.ai_flags = strcmp(host, "localhost") == 0 ? 0 : AI_NUMERICHOST;
  rc = getaddrinfo(host, colon + 1, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "ecshard-load: cannot resolve '%s': %s\n", opt.target, gai_strerror(rc));
    return -1;
  }
  memcpy(&opt.addr, res->ai_addr, res->ai_addrlen);
  opt.addrlen = res->ai_addrlen;
  freeaddrinfo(res);
  if (!opt.allow_remote) {
    int loop = 0;

    if (opt.addr.ss_family == AF_INET)
      loop = (ntohl(((struct sockaddr_in *)&opt.addr)->sin_addr.s_addr) >> 24) == 127;
    else if (opt.addr.ss_family == AF_INET6)
      loop = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&opt.addr)->sin6_addr);
    if (!loop) {
      fprintf(stderr,
              "ecshard-load: refusing non-loopback target %s (load tests stay on loopback; "
              "--allow-remote overrides)\n",
              opt.target);
      return -1;
    }
  }
  return 0;
}

static void usage(FILE *out)
{
  fprintf(out,
          "usage: ecshard-load --target HOST:PORT [options]\n"
          "  --mode echo|http|smtp  protocol (default echo)\n"
          "  --shards N             client threads (ecshard shards; default 1)\n"
          "  --conns C              connections in all (default 1), spread over the shards\n"
          "  --duration S           seconds to run (default 10; 0: until --requests)\n"
          "  --requests N           stop after N completed requests (HTTP requests, SMTP\n"
          "                         messages, echo blocks)\n"
          "  --rate R               open loop: R requests/s in all, latency from the\n"
          "                         intended send time (coordinated omission corrected);\n"
          "                         default: closed loop\n"
          "  --depth D              requests in flight per connection (HTTP pipelining,\n"
          "                         echo; default 1, max %d)\n"
          "  --path P --host H      HTTP request path (default /) and Host header\n"
          "  --size B               echo block / SMTP message size in bytes (default 64)\n"
          "  --msgs-per-session M   SMTP messages per session before QUIT (default 10)\n"
          "  --pipelining on|off    SMTP PIPELINING when the server offers it (default on)\n"
          "  --warmup S             discard the first S seconds from the figures\n"
          "  --progress S           progress line on stderr every S seconds (0: none)\n"
          "  --json                 one JSON object on stdout instead of the summary\n"
          "  --allow-remote         allow targets outside loopback\n",
          MAX_DEPTH);
}

static int num_arg(const char *name, const char *v, double lo, double hi, double *out)
{
  char *end;
  double d = strtod(v, &end);

  if (*v == '\0' || *end != '\0' || d < lo || d > hi) {
    fprintf(stderr, "ecshard-load: %s wants a number from %g to %g, not '%s'\n", name, lo, hi, v);
    return -1;
  }
  *out = d;
  return 0;
}

static int parse_args(int argc, char **argv)
{
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    double d;

    if (strcmp(a, "--json") == 0) {
      opt.json = 1;
      continue;
    }
    if (strcmp(a, "--allow-remote") == 0) {
      opt.allow_remote = 1;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    }
    if (v == NULL) {
      fprintf(stderr, "ecshard-load: unknown or incomplete option '%s'\n", a);
      return -1;
    }
    i++;
    if (strcmp(a, "--mode") == 0) {
      if (strcmp(v, "echo") == 0)
        opt.mode = MODE_ECHO;
      else if (strcmp(v, "http") == 0)
        opt.mode = MODE_HTTP;
      else if (strcmp(v, "smtp") == 0)
        opt.mode = MODE_SMTP;
      else {
        fprintf(stderr, "ecshard-load: --mode is echo, http or smtp, not '%s'\n", v);
        return -1;
      }
    } else if (strcmp(a, "--target") == 0) {
      opt.target = v;
    } else if (strcmp(a, "--path") == 0) {
      if (v[0] != '/' || strpbrk(v, " \r\n") != NULL) {
        fprintf(stderr, "ecshard-load: --path must start with / and hold no spaces\n");
        return -1;
      }
      opt.path = v;
    } else if (strcmp(a, "--host") == 0) {
      if (strpbrk(v, " \r\n") != NULL) {
        fprintf(stderr, "ecshard-load: --host must hold no spaces or line breaks\n");
        return -1;
      }
      opt.host = v;
    } else if (strcmp(a, "--pipelining") == 0) {
      if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0) {
        fprintf(stderr, "ecshard-load: --pipelining is on or off\n");
        return -1;
      }
      opt.pipelining = strcmp(v, "on") == 0;
    } else if (strcmp(a, "--shards") == 0) {
      if (num_arg(a, v, 1, MAX_SHARDS, &d) < 0)
        return -1;
      opt.shards = (int)d;
    } else if (strcmp(a, "--conns") == 0) {
      if (num_arg(a, v, 1, 1000000, &d) < 0)
        return -1;
      opt.conns = (int)d;
    } else if (strcmp(a, "--duration") == 0) {
      if (num_arg(a, v, 0, 86400, &opt.duration) < 0)
        return -1;
    } else if (strcmp(a, "--requests") == 0) {
      if (num_arg(a, v, 0, 1e15, &d) < 0)
        return -1;
      opt.requests = (uint64_t)d;
    } else if (strcmp(a, "--rate") == 0) {
      if (num_arg(a, v, 0, 1e9, &opt.rate) < 0)
        return -1;
    } else if (strcmp(a, "--depth") == 0) {
      if (num_arg(a, v, 1, MAX_DEPTH, &d) < 0)
        return -1;
      opt.depth = (int)d;
    } else if (strcmp(a, "--size") == 0) {
      if (num_arg(a, v, 1, 64 * 1024 * 1024, &d) < 0)
        return -1;
      opt.size = (int)d;
    } else if (strcmp(a, "--msgs-per-session") == 0) {
      if (num_arg(a, v, 1, 1e9, &d) < 0)
        return -1;
      opt.msgs_per_session = (int)d;
    } else if (strcmp(a, "--warmup") == 0) {
      if (num_arg(a, v, 0, 3600, &opt.warmup) < 0)
        return -1;
    } else if (strcmp(a, "--progress") == 0) {
      if (num_arg(a, v, 0, 3600, &opt.progress) < 0)
        return -1;
    } else {
      fprintf(stderr, "ecshard-load: unknown option '%s'\n", a);
      return -1;
    }
  }
  if (opt.target == NULL) {
    fprintf(stderr, "ecshard-load: --target HOST:PORT is required\n");
    return -1;
  }
  if (opt.duration == 0 && opt.requests == 0) {
    fprintf(stderr, "ecshard-load: a run needs a bound: --duration > 0 or --requests\n");
    return -1;
  }
  if (opt.conns < opt.shards) {
    fprintf(stderr, "ecshard-load: --conns (%d) must be at least --shards (%d)\n", opt.conns,
            opt.shards);
    return -1;
  }
  if (opt.mode == MODE_SMTP && opt.depth != 1) {
    fprintf(stderr, "ecshard-load: --depth applies to http and echo; SMTP uses --pipelining\n");
    return -1;
  }
  if (opt.warmup >= opt.duration && opt.duration > 0) {
    fprintf(stderr, "ecshard-load: --warmup must be shorter than --duration\n");
    return -1;
  }
  return parse_target(opt.target);
}

/* ---- reporting ----------------------------------------------------------------------- */

typedef struct totals {
  uint64_t done, errors, connect_errors, proto_errors, non2xx, sessions, bytes_in, bytes_out,
      reconnects, active;
} totals;

static void sum(totals *t)
{
  memset(t, 0, sizeof(*t));
  for (int i = 0; i < opt.shards; i++) {
    shard_ctx *sc = &ctxs[i];

    t->done += rd(&sc->done);
    t->errors += rd(&sc->errors);
    t->connect_errors += rd(&sc->connect_errors);
    t->proto_errors += rd(&sc->proto_errors);
    t->non2xx += rd(&sc->non2xx);
    t->sessions += rd(&sc->sessions);
    t->bytes_in += rd(&sc->bytes_in);
    t->bytes_out += rd(&sc->bytes_out);
    t->reconnects += rd(&sc->reconnects);
    t->active += rd(&sc->active);
  }
}

static const char *mode_name(void)
{
  return opt.mode == MODE_ECHO ? "echo" : opt.mode == MODE_HTTP ? "http" : "smtp";
}

static void report(const totals *t, const hist *h, double secs, double cpu_user, double cpu_sys)
{
  double rps = secs > 0 ? (double)t->done / secs : 0;
  double us[6] = {hist_percentile(h, 50) / 1e3, hist_percentile(h, 90) / 1e3,
                  hist_percentile(h, 99) / 1e3, hist_percentile(h, 99.9) / 1e3,
                  (double)h->max / 1e3,         hist_mean(h) / 1e3};
  double cpu_us_per_req = t->done ? (cpu_user + cpu_sys) * 1e6 / (double)t->done : 0;

  if (opt.json) {
    printf("{\"tool\":\"ecshard-load\",\"mode\":\"%s\",\"target\":\"%s\",\"shards\":%d,"
           "\"connections\":%d,\"loop\":\"%s\",\"rate\":%.3f,\"depth\":%d,\"size\":%d,"
           "\"msgs_per_session\":%d,\"pipelining\":%s,\"path\":\"%s\","
           "\"duration_s\":%.6f,\"warmup_s\":%.3f,\"requests\":%" PRIu64 ",\"requests_per_s\":%.1f,"
           "\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,"
           "\"mean\":%.1f,\"samples\":%" PRIu64 "},\"coordinated_omission_corrected\":%s,"
           "\"errors\":%" PRIu64 ",\"connect_errors\":%" PRIu64 ",\"protocol_errors\":%" PRIu64
           ",\"non2xx\":%" PRIu64 ",\"sessions\":%" PRIu64 ",\"reconnects\":%" PRIu64
           ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
           ",\"client_cpu_s\":{\"user\":%.3f,\"sys\":%.3f},\"client_cpu_us_per_request\":%.2f}\n",
           mode_name(), opt.target, opt.shards, opt.conns, opt.rate > 0 ? "open" : "closed",
           opt.rate, opt.depth, opt.size, opt.msgs_per_session, opt.pipelining ? "true" : "false",
           opt.path, secs, opt.warmup, t->done, rps, us[0], us[1], us[2], us[3], us[4], us[5],
           h->total, opt.rate > 0 ? "true" : "false", t->errors, t->connect_errors, t->proto_errors,
           t->non2xx, t->sessions, t->reconnects, t->bytes_in, t->bytes_out, cpu_user, cpu_sys,
           cpu_us_per_req);
    return;
  }
  printf("ecshard-load %s -> %s: %d shard(s), %d connection(s), %s loop", mode_name(), opt.target,
         opt.shards, opt.conns, opt.rate > 0 ? "open" : "closed");
  if (opt.rate > 0)
    printf(" at %.0f req/s (latency from the intended send time)", opt.rate);
  printf("\n  %" PRIu64 " requests in %.2f s: %.0f req/s", t->done, secs, rps);
  if (opt.mode == MODE_SMTP)
    printf(", %" PRIu64 " sessions", t->sessions);
  printf("\n  latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n", us[0],
         us[1], us[2], us[3], us[4], us[5]);
  printf("  errors %" PRIu64 " (connect %" PRIu64 ", protocol %" PRIu64 "), non-2xx %" PRIu64
         ", reconnects %" PRIu64 "\n",
         t->errors, t->connect_errors, t->proto_errors, t->non2xx, t->reconnects);
  printf("  bytes in %" PRIu64 ", out %" PRIu64 "; client CPU %.2f s user + %.2f s sys = %.2f us "
         "per request\n",
         t->bytes_in, t->bytes_out, cpu_user, cpu_sys, cpu_us_per_req);
}

static double tv_s(struct timeval tv)
{
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void on_signal(int sig)
{
  (void)sig;
  atomic_store(&stopping, 1);
}

int main(int argc, char **argv)
{
  char cfg[256];
  ec_framework_options fo = {0};
  uint64_t per, extra, last_done = 0, last_t;
  struct rusage ru0, ru1;
  totals t;
  hist *h;
  int rc, status = 0;

  if (parse_args(argc, argv) < 0) {
    usage(stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  {
    struct rlimit rl;

    /* one descriptor per connection: raise the soft limit to the hard one */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
  }
  snprintf(cfg, sizeof(cfg),
           "event_loop = { concurrency = %d; };\nlog = { level = \"warning\"; };\n", opt.shards);
  fo.config_text = cfg;
  rc = ec_framework_init(&fo);
  if (rc < 0) {
    fprintf(stderr, "ecshard-load: ec_framework_init: %s\n", strerror(-rc));
    return 1;
  }
  ctxs = calloc((size_t)opt.shards, sizeof(*ctxs));
  if (ctxs == NULL)
    return 1;
  per = opt.requests / (uint64_t)opt.shards;
  extra = opt.requests % (uint64_t)opt.shards;
  for (int i = 0; i < opt.shards; i++) {
    shard_ctx *sc = &ctxs[i];

    sc->index = i;
    sc->nconns = opt.conns / opt.shards + (i < opt.conns % opt.shards);
    sc->conns = calloc((size_t)sc->nconns, sizeof(conn));
    sc->quota = opt.requests ? per + ((uint64_t)i < extra) : UINT64_MAX;
    hist_init(&sc->h);
    if (sc->conns == NULL || build_requests(sc) < 0) {
      fprintf(stderr, "ecshard-load: out of memory\n");
      return 1;
    }
    for (int k = 0; k < sc->nconns; k++) {
      sc->conns[k].sc = sc;
      sc->conns[k].fd = -1;
    }
  }
  getrusage(RUSAGE_SELF, &ru0);
  t_start_ns = now_ns();
  t_record_ns = t_start_ns + (uint64_t)(opt.warmup * 1e9);
  rc = ec_framework_start();
  for (int i = 0; rc == 0 && i < opt.shards; i++)
    rc = ec_shard_run(i, shard_begin, &ctxs[i]);
  if (rc < 0) {
    fprintf(stderr, "ecshard-load: cannot start the shards: %s\n", strerror(-rc));
    ec_framework_stop();
    ec_framework_join();
    return 1;
  }
  last_t = t_start_ns;
  for (;;) {
    uint64_t now = now_ns();
    double el = (double)(now - t_start_ns) / 1e9;

    if (atomic_load(&shards_finished) == opt.shards || atomic_load(&stopping))
      break;
    if (opt.duration > 0 && el >= opt.duration)
      break;
    usleep(10000);
    if (opt.progress > 0 && (double)(now - last_t) / 1e9 >= opt.progress) {
      sum(&t);
      fprintf(stderr,
              "[%6.1fs] %8.0f req/s  done %" PRIu64 "  conns %" PRIu64 "  errors %" PRIu64 "%s\n",
              el, (double)(t.done - last_done) * 1e9 / (double)(now - last_t), t.done, t.active,
              t.errors + t.connect_errors, now < t_record_ns ? "  (warm-up)" : "");
      last_done = t.done;
      last_t = now;
      if (t.done == 0 && t.active == 0 && t.connect_errors > 0 && el > 3) {
        fprintf(stderr, "ecshard-load: no connection to %s succeeded; giving up\n", opt.target);
        status = 1;
        break;
      }
    }
  }
  t_end_ns = now_ns();
  atomic_store(&stopping, 1);
  ec_framework_stop();
  ec_framework_join();
  getrusage(RUSAGE_SELF, &ru1);

  h = malloc(sizeof(*h));
  if (h == NULL)
    return 1;
  hist_init(h);
  for (int i = 0; i < opt.shards; i++)
    hist_merge(h, &ctxs[i].h);
  sum(&t);
  {
    uint64_t from = t_record_ns > t_start_ns ? t_record_ns : t_start_ns;
    double secs = t_end_ns > from ? (double)(t_end_ns - from) / 1e9 : 0;

    report(&t, h, secs, tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime),
           tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime));
  }
  if (t.done == 0)
    status = 1;
  for (int i = 0; i < opt.shards; i++) {
    for (int k = 0; k < ctxs[i].nconns; k++) {
      event_io_state_clean(&ctxs[i].conns[k].out);
      free(ctxs[i].conns[k].rbuf);
    }
    free(ctxs[i].conns);
    free(ctxs[i].req);
    free(ctxs[i].body);
  }
  free(ctxs);
  free(h);
  return status;
}
