/*
 * samples/http/http.c - the HTTP/1.1 origin server module, built only on include/.
 *
 * The hot path (a keep-alive GET of the fixed route): the callback reads once into the
 * shard's scratch buffer, parses the head in place (http_parse.c), appends the response to
 * the shard's output buffer and writes it with one event_write; pipelined requests that
 * arrived together are answered with that same single write. It then returns E_READ and
 * does not read again until the poller says so: one read and one write per request, the
 * shard's wait shared by every connection that was ready.
 *
 * Memory: a connection owns a heap input buffer only while it holds part of a request
 * head (or requests queued behind a file being sent), and a heap output buffer only
 * while the peer is slower than its responses. An idle keep-alive connection holds its
 * small http_conn and nothing else.
 *
 * Timeouts: each connection has one deadline (header, body, send, keep-alive or linger,
 * depending on where it is); a per-shard sweep that runs once a second
 * (scheduler_recurrent_func_add) dispatches E_TIMEOUT to those past theirs. Setting a
 * deadline is a store, so keeping them costs the request path nothing.
 *
 * Errors that leave the request stream out of sync (malformed heads, framing, bodies, and
 * timeouts) are answered with their 4xx and `Connection: close`; the connection then
 * shuts down its sending side and drains what the client still sends for a moment
 * ("lingering close", as nginx does), so that the client reads the answer instead of a
 * reset.
 */
#include "http.h"
#include "http_parse.h"

#include "ec_config.h"
#include "ec_framework.h"
#include "ec_log.h"
#include "ec_ssl.h"
#include "ec_stats.h"
#include "event.h"
#include "scheduler.h"
#include "sp_async.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define IN_SCRATCH   16384     /* the shard's read buffer */
#define OUT_SCRATCH  65536     /* the shard's response buffer */
#define FILE_BURST   (1 << 20) /* sendfile bytes per dispatch, so one download cannot hog a shard */
#define LINGER_MS    2000      /* how long a closing connection drains the client's bytes */
#define MAX_PATH_LEN 4096
#define ALOG_BUF     8192
#define SWEEP_MS     500 /* how often a shard looks for connections past their deadline */
#define ROUNDS       8   /* buffered pipelined batches handled per dispatch */

/* ---- configuration ---------------------------------------------------------------------- */

static struct http_config {
  http_limits lim;
  uint64_t max_body;
  uint32_t max_requests;  /* per connection; 0: no limit */
  uint32_t body_min_rate; /* bytes/s a body must keep up */
  int header_ms, body_ms, send_ms, keepalive_ms;
  int access_log;
  int root_fd; /* the document root (O_PATH), -1 if it could not be opened */
  char *docroot;
  char *fixed_path, *fixed_body, *fixed_type;
  size_t fixed_path_len, fixed_body_len, fixed_type_len, fixed_len_text_len;
  char fixed_len_text[24];
} cfg = {.root_fd = -1};

static pthread_once_t cfg_once = PTHREAD_ONCE_INIT;

/* Status classes, counted per shard by the shard alone. */
typedef struct http_shard {
  struct http_conn *conns; /* every open connection of this shard (for the sweep) */
  uint64_t now_ms;         /* from the callbacks' `now` */
  uint64_t next_sweep_ms;
  time_t date_sec;
  char date[40]; /* "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" */
  size_t date_len;
  char *in, *out; /* IN_SCRATCH + 1 and OUT_SCRATCH bytes, allocated on first use */
  size_t out_len;
  char *alog; /* access log lines waiting to be handed to the logger */
  size_t alog_len;
  uint64_t st_requests, st_status[6], st_bad, st_timeouts, st_files;
  int sweeping; /* the recurrent sweep is registered */
} http_shard;

static http_shard *shards;
static int nshards;

/* ---- connections ------------------------------------------------------------------------- */

enum { PH_IDLE, PH_HEAD, PH_BODY, PH_SEND, PH_LINGER };

#define CF_CLOSE     0x01 /* close once the output is out */
#define CF_MORE      0x02 /* c->in holds input not looked at since the last answer */
#define CF_TIMEDOUT  0x04 /* the sweep found the deadline passed */
#define CF_DEFERRED  0x08 /* the fixed route answers once the body is consumed */
#define CF_DEF_HEAD  0x10 /* ... to a HEAD */
#define CF_DEF_KEEP  0x20 /* ... keeping the connection */
#define CF_DEF_HTTP0 0x40 /* ... to an HTTP/1.0 client */
#define CF_TLS       0x80

typedef struct http_conn {
  struct http_conn *prev, *next;
  Event *e;
  char *in; /* unparsed input (heap) or NULL */
  uint32_t in_len, in_cap;
  char *out; /* unsent output (heap) or NULL */
  uint32_t out_len, out_off;
  uint64_t deadline_ms;
  uint64_t body_left; /* HTTP_BODY_LENGTH: bytes to discard */
  http_chunked ck;
  int file_fd;
  uint32_t requests;
  uint64_t file_off, file_left;
  uint16_t shard;
  uint8_t phase, body, flags;
  char peer[]; /* client address text, only when the access log is on */
} http_conn;

static void cfg_fail(const char *what, const char *value)
{
  ec_debug_printf(DERROR, EC_LOG_HTTP, "http: %s '%s' refused; using the default\n", what, value);
}

static long long cfg_int(const char *path, long long def, long long min, long long max)
{
  long long v = ec_config_get_int(path, def);

  if (v < min || v > max) {
    char txt[32];

    snprintf(txt, sizeof(txt), "%lld", v);
    cfg_fail(path, txt);
    return def;
  }
  return v;
}

static int cfg_ms(const char *path, double def)
{
  double v = ec_config_get_double(path, def);

  if (!(v > 0 && v <= 86400)) {
    char txt[32];

    snprintf(txt, sizeof(txt), "%g", v);
    cfg_fail(path, txt);
    v = def;
  }
  return (int)(v * 1000);
}

/* The sample document root: installed next to the binary (<prefix>/share/ecshard/www),
 * else the source tree's samples/http/www (a build run in place, scripts/run.sh). */
static char *default_docroot(void)
{
  char exe[PATH_MAX], path[PATH_MAX + 32];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

  if (n > 0) {
    char *slash;

    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash != NULL) {
      *slash = '\0';
      snprintf(path, sizeof(path), "%s/../share/ecshard/www", exe);
      if (access(path, R_OK | X_OK) == 0)
        return strdup(path);
    }
  }
  return strdup(ECSHARD_HTTP_WWW);
}

static char *cfg_str(const char *path, const char *def)
{
  const char *v = ec_config_get_string(path, def);

  return strdup(v != NULL ? v : def);
}

static void cfg_load(void)
{
  const char *root;

  cfg.lim.max_request_line = (uint32_t)cfg_int("http.max_request_line", 8192, 64, 1 << 20);
  cfg.lim.max_head = (uint32_t)cfg_int("http.max_header_bytes", 16384, 256, 1 << 20);
  cfg.lim.max_headers = (uint32_t)cfg_int("http.max_headers", 100, 1, HTTP_MAX_HEADERS);
  cfg.max_body = (uint64_t)cfg_int("http.max_body", 1 << 20, 0, 1LL << 50);
  cfg.max_requests = (uint32_t)cfg_int("http.max_requests", 10000, 0, 1 << 30);
  cfg.body_min_rate = (uint32_t)cfg_int("http.body_min_rate", 1024, 1, 1 << 30);
  cfg.header_ms = cfg_ms("http.header_timeout", 10.0);
  cfg.body_ms = cfg_ms("http.body_timeout", 30.0);
  cfg.send_ms = cfg_ms("http.send_timeout", 30.0);
  cfg.keepalive_ms = cfg_ms("http.keepalive_timeout", 75.0);
  cfg.access_log = ec_config_get_bool("http.access_log", 0);
  cfg.fixed_path = cfg_str("http.fixed_path", "/hello");
  cfg.fixed_body = cfg_str("http.fixed_body", "hello\n");
  cfg.fixed_type = cfg_str("http.fixed_type", "text/plain");
  if (strlen(cfg.fixed_type) > 256 || strpbrk(cfg.fixed_type, "\r\n") != NULL) {
    cfg_fail("http.fixed_type (a header value of at most 256 bytes)", cfg.fixed_type);
    free(cfg.fixed_type);
    cfg.fixed_type = strdup("text/plain");
  }
  if (strlen(cfg.fixed_body) > OUT_SCRATCH / 2) {
    cfg_fail("http.fixed_body (longer than 32 KiB)", "...");
    free(cfg.fixed_body);
    cfg.fixed_body = strdup("hello\n");
  }
  cfg.fixed_path_len = strlen(cfg.fixed_path);
  cfg.fixed_body_len = strlen(cfg.fixed_body);
  cfg.fixed_type_len = strlen(cfg.fixed_type);
  cfg.fixed_len_text_len =
      (size_t)snprintf(cfg.fixed_len_text, sizeof(cfg.fixed_len_text), "%zu", cfg.fixed_body_len);
  root = ec_config_get_string("http.docroot", "");
  cfg.docroot = root != NULL && root[0] != '\0' ? strdup(root) : default_docroot();
  if (cfg.docroot != NULL)
    cfg.root_fd = open(cfg.docroot, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (cfg.root_fd < 0)
    ec_debug_printf(DERROR, EC_LOG_HTTP,
                    "http: open(%s) of the document root failed: %s; static files answer 404\n",
                    cfg.docroot ? cfg.docroot : "(null)", strerror(errno));
  else
    ec_debug_printf(DNOTICE, EC_LOG_HTTP, "http: document root %s\n", cfg.docroot);
  nshards = ec_shard_count();
  /* http_stats_get reads it from any thread: publish after nshards (pairs with its load) */
  __atomic_store_n(&shards, calloc((size_t)(nshards > 0 ? nshards : 1), sizeof(*shards)),
                   __ATOMIC_RELEASE);
}

/* ---- the shard's clock, scratch buffers and counters --------------------------------- */

static void shard_clock(http_shard *sh, const struct timeval *now)
{
  sh->now_ms = (uint64_t)now->tv_sec * 1000 + (uint64_t)now->tv_usec / 1000;
  if (now->tv_sec != sh->date_sec) {
    struct tm tm;

    sh->date_sec = now->tv_sec;
    gmtime_r(&sh->date_sec, &tm);
    sh->date_len = strftime(sh->date, sizeof(sh->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  }
}

static void count(http_shard *sh, int status)
{
  /* Single writer (this shard); http_stats_get reads with relaxed loads. */
  __atomic_store_n(&sh->st_requests, sh->st_requests + 1, __ATOMIC_RELAXED);
  __atomic_store_n(&sh->st_status[status / 100], sh->st_status[status / 100] + 1, __ATOMIC_RELAXED);
}

static void count_inc(uint64_t *v)
{
  __atomic_store_n(v, *v + 1, __ATOMIC_RELAXED); /* single writer, see count() */
}

static void alog_flush(http_shard *sh)
{
  if (sh->alog_len == 0)
    return;
  /* The logger thread writes it; a full queue drops it (counted), never blocks us. */
  ec_debug_printf(DNOTICE, EC_LOG_HTTP, "%.*s", (int)sh->alog_len, sh->alog);
  sh->alog_len = 0;
}

static void alog(http_shard *sh, http_conn *c, const http_request *r, int status, uint64_t bytes)
{
  char line[512];
  int n;

  if (sh->alog == NULL && (sh->alog = malloc(ALOG_BUF)) == NULL)
    return;
  n = snprintf(line, sizeof(line), "access %s \"%.*s %.*s HTTP/1.%d\" %d %llu\n", c->peer,
               r ? (int)r->method_len : 1, r ? r->method : "-",
               r ? (int)(r->target_len > 256 ? 256 : r->target_len) : 1, r ? r->target : "-",
               r ? r->minor_version : 1, status, (unsigned long long)bytes);
  if (n <= 0)
    return;
  if ((size_t)n >= sizeof(line))
    n = sizeof(line) - 1;
  if (sh->alog_len + (size_t)n > ALOG_BUF)
    alog_flush(sh);
  memcpy(sh->alog + sh->alog_len, line, (size_t)n);
  sh->alog_len += (size_t)n;
}

/* ---- output ----------------------------------------------------------------------------- */

/* Copies `n` bytes to the shard's output buffer; 0, or -1 when they do not fit. */
static int out_put(http_shard *sh, const void *p, size_t n)
{
  if (sh->out_len + n > OUT_SCRATCH)
    return -1;
  memcpy(sh->out + sh->out_len, p, n);
  sh->out_len += n;
  return 0;
}

#define OUT_LIT(sh, s) out_put((sh), (s), sizeof(s) - 1)

/* Writes p[0 .. n) while nothing else is pending; what the peer does not take now is kept
 * in c->out. 0 all written, 1 pending (*need), -1 error. */
static int send_bytes(http_conn *c, const char *p, size_t n, int *need)
{
  while (n > 0) {
    int w = event_write(c->e, p, (int)(n > INT_MAX ? INT_MAX : n), need);

    if (w < 0) {
      if (errno != EAGAIN)
        return -1;
      if ((c->out = malloc(n)) == NULL)
        return -1;
      memcpy(c->out, p, n);
      c->out_len = (uint32_t)n;
      c->out_off = 0;
      return 1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Writes the connection's own pending output. */
static int flush_conn(http_conn *c, int *need)
{
  while (c->out_off < c->out_len) {
    int w = event_write(c->e, c->out + c->out_off, (int)(c->out_len - c->out_off), need);

    if (w < 0)
      return errno == EAGAIN ? 1 : -1;
    c->out_off += (uint32_t)w;
  }
  free(c->out);
  c->out = NULL;
  c->out_len = c->out_off = 0;
  return 0;
}

/*
 * Sends the shard's output buffer for this connection with one write; behind output that
 * is still pending it is appended to that instead, so answers keep their order. Either way
 * the shard's buffer is empty afterwards. 0 all out, 1 pending (*need), -1 error.
 */
static int flush_shard(http_shard *sh, http_conn *c, int *need)
{
  size_t n = sh->out_len;

  sh->out_len = 0;
  if (c->out != NULL) {
    char *p;

    if (n > 0) {
      if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
      }
      if ((p = realloc(c->out, c->out_len + n)) == NULL)
        return -1;
      memcpy(p + c->out_len, sh->out, n);
      c->out = p;
      c->out_len += (uint32_t)n;
    }
    return flush_conn(c, need);
  }
  return n == 0 ? 0 : send_bytes(c, sh->out, n, need);
}

/* Makes room for `n` more bytes in the shard's output buffer (writing it out, or moving it
 * behind the connection's pending output). 0, or -1 on a write error. */
static int out_room(http_shard *sh, http_conn *c, size_t n)
{
  int need;

  if (sh->out_len + n <= OUT_SCRATCH)
    return 0;
  return flush_shard(sh, c, &need) < 0 ? -1 : 0;
}

static void file_done(http_conn *c)
{
  close(c->file_fd);
  c->file_fd = -1;
  c->file_left = 0;
}

/* Sends the rest of the file being served: sendfile(2) on a plain socket, reads and
 * event_write through the TLS opset otherwise. 0 done, 1 pending (*need), -1 error. */
static int pump_file(http_conn *c, int *need)
{
  uint64_t burst = 0;

  /* sendfile(2) writes to the socket directly: the head must be out before it. */
  if (!(c->flags & CF_TLS) && c->file_left > 0 && ec_event_flush(c->e) < 0) {
    *need = E_WRITE;
    return errno == EAGAIN ? 1 : -1;
  }
  while (c->file_left > 0) {
    if (!(c->flags & CF_TLS)) {
      off_t off = (off_t)c->file_off;
      size_t want = c->file_left > FILE_BURST ? FILE_BURST : (size_t)c->file_left;
      ssize_t n = sendfile(c->e->fd, c->file_fd, &off, want);

      *need = E_WRITE;
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return 1;
      if (n <= 0) {
        ec_debug_printf(DWARNING, EC_LOG_HTTP, "http: sendfile(fd %d) failed: %s\n", c->e->fd,
                        n == 0 ? "file shrank" : strerror(errno));
        return -1;
      }
      c->file_off += (uint64_t)n;
      c->file_left -= (uint64_t)n;
      burst += (uint64_t)n;
    } else {
      char buf[16384];
      size_t want = c->file_left > sizeof(buf) ? sizeof(buf) : (size_t)c->file_left;
      ssize_t n = pread(c->file_fd, buf, want, (off_t)c->file_off);
      int rc;

      if (n <= 0) {
        ec_debug_printf(DWARNING, EC_LOG_HTTP, "http: pread(fd %d) failed: %s\n", c->file_fd,
                        n == 0 ? "file shrank" : strerror(errno));
        return -1;
      }
      c->file_off += (uint64_t)n;
      c->file_left -= (uint64_t)n;
      burst += (uint64_t)n;
      rc = send_bytes(c, buf, (size_t)n, need);
      if (rc != 0)
        return rc; /* the rest of this piece waits in c->out */
    }
    if (burst >= FILE_BURST && c->file_left > 0) {
      *need = E_WRITE; /* let other connections run; the socket is still writable */
      return 1;
    }
  }
  file_done(c);
  return 0;
}

/* ---- responses -------------------------------------------------------------------------- */

static const char *reason(int status)
{
  switch (status) {
  case 100:
    return "Continue";
  case 200:
    return "OK";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 304:
    return "Not Modified";
  case 400:
    return "Bad Request";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 416:
    return "Range Not Satisfiable";
  case 417:
    return "Expectation Failed";
  case 431:
    return "Request Header Fields Too Large";
  case 501:
    return "Not Implemented";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Internal Server Error";
  }
}

/* Status line, Server and Date. */
static int put_status(http_shard *sh, int status)
{
  char line[64];
  int n;

  if (status == 200)
    return OUT_LIT(sh, "HTTP/1.1 200 OK\r\nServer: ecshard\r\n") ||
           out_put(sh, sh->date, sh->date_len);
  n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\nServer: ecshard\r\n", status, reason(status));
  return out_put(sh, line, (size_t)n) || out_put(sh, sh->date, sh->date_len);
}

/* The Connection header (if any) and the empty line. keep: 1 keep-alive, 0 close. */
static int put_end(http_shard *sh, int keep, int http10)
{
  if (!keep)
    return OUT_LIT(sh, "Connection: close\r\n\r\n");
  if (http10)
    return OUT_LIT(sh, "Connection: keep-alive\r\n\r\n");
  return OUT_LIT(sh, "\r\n");
}

/* An error answer; errors that close say so (keep 0). */
static void respond_error(http_shard *sh, http_conn *c, const http_request *r, int status, int keep,
                          const char *extra)
{
  char head[160];
  const char *why = reason(status);
  int n = snprintf(head, sizeof(head), "Content-Type: text/plain\r\nContent-Length: %zu\r\n%s",
                   strlen(why) + 5, extra ? extra : "");
  char body[80];
  int bn = snprintf(body, sizeof(body), "%d %s\n", status, why);

  if (out_room(sh, c, 512) < 0)
    c->flags |= CF_CLOSE;
  put_status(sh, status);
  out_put(sh, head, (size_t)n);
  put_end(sh, keep, r && r->minor_version == 0);
  out_put(sh, body, (size_t)bn);
  count(sh, status);
  if (!keep)
    c->flags |= CF_CLOSE;
  if (status == 400 || status == 413 || status == 414 || status == 417 || status == 431 ||
      status == 501 || status == 505)
    count_inc(&sh->st_bad); /* refused heads and bodies (408 counts as a timeout) */
  if (cfg.access_log)
    alog(sh, c, r, status, (uint64_t)bn);
}

static int respond_fixed(http_shard *sh, http_conn *c, int head, int keep, int http10)
{
  if (out_room(sh, c, 256 + cfg.fixed_type_len + cfg.fixed_body_len) < 0)
    return -1;
  put_status(sh, 200);
  OUT_LIT(sh, "Content-Type: ");
  out_put(sh, cfg.fixed_type, cfg.fixed_type_len);
  OUT_LIT(sh, "\r\nContent-Length: ");
  out_put(sh, cfg.fixed_len_text, cfg.fixed_len_text_len);
  OUT_LIT(sh, "\r\n");
  put_end(sh, keep, http10);
  if (!head)
    out_put(sh, cfg.fixed_body, cfg.fixed_body_len);
  count(sh, 200);
  return 0;
}

/* ---- static files ------------------------------------------------------------------------ */

/*
 * Opens path beneath the document root. openat2(RESOLVE_BENEATH) refuses any resolution
 * that leaves the root, symlinks included (Linux 5.6); where it does not exist, the
 * descriptor's real path is checked against the root's instead.
 */
static int open_beneath(const char *path)
{
  struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                         .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
  int fd = (int)syscall(SYS_openat2, cfg.root_fd, path[0] ? path : ".", &how, sizeof(how));

  if (fd >= 0 || errno != ENOSYS)
    return fd;
  fd = openat(cfg.root_fd, path[0] ? path : ".", O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd >= 0) {
    char link[64], real[PATH_MAX], root[PATH_MAX];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, real, sizeof(real) - 1);
    if (n < 0 || realpath(cfg.docroot, root) == NULL) {
      close(fd);
      errno = EACCES;
      return -1;
    }
    real[n] = '\0';
    if (strncmp(real, root, strlen(root)) != 0 ||
        (real[strlen(root)] != '/' && real[strlen(root)] != '\0')) {
      close(fd);
      errno = EXDEV;
      return -1;
    }
  }
  return fd;
}

static const char *content_type(const char *path)
{
  static const struct {
    const char *ext, *type;
  } types[] = {
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"txt", "text/plain; charset=utf-8"},
      {"css", "text/css"},
      {"js", "text/javascript"},
      {"json", "application/json"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"svg", "image/svg+xml"},
      {"ico", "image/x-icon"},
      {"pdf", "application/pdf"},
      {"wasm", "application/wasm"},
      {"xml", "application/xml"},
      {"webp", "image/webp"},
  };
  const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');

  if (dot != NULL && (slash == NULL || dot > slash))
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
      if (strcasecmp(dot + 1, types[i].ext) == 0)
        return types[i].type;
  return "application/octet-stream";
}

/* IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), the only form servers must send; the
 * obsolete forms are not taken (the condition is then ignored, RFC 9110 §13.1.3). */
static int parse_http_date(const char *s, size_t n, time_t *out)
{
  char buf[40];
  struct tm tm;
  const char *end;

  if (n >= sizeof(buf))
    return -1;
  memcpy(buf, s, n);
  buf[n] = '\0';
  memset(&tm, 0, sizeof(tm));
  end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == NULL || *end != '\0')
    return -1;
  *out = timegm(&tm);
  return 0;
}

/* If-None-Match: "*" or a list of entity tags, compared weakly (RFC 9110 §13.1.2). */
static int etag_matches(const http_header *h, const char *etag, size_t etag_len)
{
  const char *p = h->value, *end = h->value + h->value_len;

  while (p < end) {
    const char *q;

    while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
      p++;
    if (p < end && *p == '*')
      return 1;
    if (end - p >= 2 && p[0] == 'W' && p[1] == '/')
      p += 2;
    if (p >= end || *p != '"')
      return 0;
    q = memchr(p + 1, '"', (size_t)(end - p - 1));
    if (q == NULL)
      return 0;
    if ((size_t)(q + 1 - p) == etag_len && memcmp(p, etag, etag_len) == 0)
      return 1;
    p = q + 1;
  }
  return 0;
}

/* Serves a GET or HEAD from the document root. Returns 0 (answer queued; maybe a file
 * left to send in c->file_fd) or -1 (could not queue: output pending, stop). */
static int serve_file(http_shard *sh, http_conn *c, const http_request *r, const http_info *in,
                      const char *upath, const char *path_end, int head, int keep)
{
  char path[MAX_PATH_LEN], hdr[512], etag[48], lm[40];
  struct stat st;
  uint64_t first = 0, last = 0, len;
  int dir, rc, fd, status = 200, n;
  struct tm tm;

  rc = http_normalize_path(upath, (size_t)(path_end - upath), path, sizeof(path) - 16, &dir);
  if (rc < 0) {
    respond_error(sh, c, r, -rc, 0, NULL);
    return 0;
  }
  if (cfg.root_fd < 0) {
    respond_error(sh, c, r, 404, keep, NULL);
    return 0;
  }
  if (dir || path[0] == '\0') {
    size_t pl = strlen(path); /* normalize left 16 bytes free for this */

    snprintf(path + pl, sizeof(path) - pl, "%s", pl ? "/index.html" : "index.html");
  }
  fd = open_beneath(path);
  if (fd < 0) {
    int e = errno;

    respond_error(sh, c, r, e == EACCES || e == EPERM ? 403 : 404, keep, NULL);
    if (e != ENOENT && e != ENOTDIR)
      ec_debug_printf(DINFO, EC_LOG_HTTP, "http: open of '%s' refused: %s\n", path, strerror(e));
    return 0;
  }
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    int isdir = S_ISDIR(st.st_mode);

    close(fd);
    if (isdir) {
      /* A directory named without its slash: send the client to it. */
      char loc[MAX_PATH_LEN + 32];
      int ln = snprintf(loc, sizeof(loc), "Location: %.*s/\r\n", (int)(path_end - upath), upath);

      if (ln > 0 && (size_t)ln < sizeof(loc)) {
        respond_error(sh, c, r, 301, keep, loc);
        return 0;
      }
    }
    respond_error(sh, c, r, 404, keep, NULL);
    return 0;
  }
  len = (uint64_t)st.st_size;
  snprintf(etag, sizeof(etag), "\"%llx-%llx\"", (unsigned long long)st.st_mtime,
           (unsigned long long)st.st_size);
  gmtime_r(&st.st_mtime, &tm);
  strftime(lm, sizeof(lm), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (in->if_none_match != NULL) {
    if (etag_matches(in->if_none_match, etag, strlen(etag)))
      status = 304;
  } else if (in->if_modified_since != NULL) {
    time_t ims;

    if (parse_http_date(in->if_modified_since->value, in->if_modified_since->value_len, &ims) ==
            0 &&
        st.st_mtime <= ims)
      status = 304;
  }
  if (status == 200 && in->range != NULL) {
    int use = 1;

    if (in->if_range != NULL)
      use = (in->if_range->value_len == strlen(etag) &&
             memcmp(in->if_range->value, etag, strlen(etag)) == 0) ||
            (in->if_range->value_len == strlen(lm) &&
             memcmp(in->if_range->value, lm, strlen(lm)) == 0);
    rc = use ? http_parse_range(in->range->value, in->range->value_len, len, &first, &last) : -1;
    if (rc == 0) {
      char cr[64];

      close(fd);
      snprintf(cr, sizeof(cr), "Content-Range: bytes */%llu\r\n", (unsigned long long)len);
      respond_error(sh, c, r, 416, keep, cr);
      return 0;
    }
    if (rc == 1)
      status = 206;
  }
  if (status != 206) {
    first = 0;
    last = len ? len - 1 : 0;
  }
  if (out_room(sh, c, 1024) < 0) {
    close(fd);
    return -1;
  }
  put_status(sh, status);
  if (status == 304) {
    n = snprintf(hdr, sizeof(hdr), "ETag: %s\r\nLast-Modified: %s\r\n", etag, lm);
  } else {
    uint64_t clen = len ? last - first + 1 : 0;

    n = snprintf(hdr, sizeof(hdr),
                 "Content-Type: %s\r\nContent-Length: %llu\r\nLast-Modified: %s\r\nETag: "
                 "%s\r\nAccept-Ranges: bytes\r\n",
                 content_type(path), (unsigned long long)clen, lm, etag);
    if (status == 206)
      n += snprintf(hdr + n, sizeof(hdr) - (size_t)n, "Content-Range: bytes %llu-%llu/%llu\r\n",
                    (unsigned long long)first, (unsigned long long)last, (unsigned long long)len);
    if (!head && clen > 0) {
      c->file_fd = fd;
      c->file_off = first;
      c->file_left = clen;
      fd = -1;
    }
  }
  if (fd >= 0)
    close(fd);
  out_put(sh, hdr, (size_t)n);
  put_end(sh, keep, r->minor_version == 0);
  count(sh, status);
  if (status != 304)
    count_inc(&sh->st_files);
  if (cfg.access_log)
    alog(sh, c, r, status, status == 304 || head ? 0 : (len ? last - first + 1 : 0));
  return 0;
}

/* ---- requests ---------------------------------------------------------------------------- */

static int method_is(const http_request *r, const char *m, size_t n)
{
  return r->method_len == n && memcmp(r->method, m, n) == 0;
}

/*
 * Handles one parsed head: queues its answer (or defers it until the body is consumed)
 * and sets up the body to skip. Returns 0 to go on with the next request, 1 to stop
 * (closing, a file to send first, or output that could not be queued).
 */
static int handle_request(http_shard *sh, http_conn *c, const http_request *r, size_t avail)
{
  http_info in;
  const char *path = r->target, *path_end, *q;
  int rc, head, keep, fixed;

  rc = http_request_info(r, cfg.max_body, &in);
  if (rc < 0) {
    respond_error(sh, c, r, -rc, 0, NULL);
    return 1;
  }
  c->requests++;
  keep = in.keep_alive && (cfg.max_requests == 0 || c->requests < cfg.max_requests) &&
         !ec_framework_stopping();
  head = method_is(r, "HEAD", 4);
  /* absolute-form (RFC 9112 §3.2.2): take the path; "*" only for OPTIONS */
  path_end = r->target + r->target_len;
  if (r->target_len > 7 && (http_token_eq(r->target, 7, "http://") ||
                            (r->target_len > 8 && http_token_eq(r->target, 8, "https://")))) {
    const char *s = memchr(r->target + 8, '/', r->target_len - 8);

    if (s != NULL) {
      path = s;
    } else {
      path = "/";
      path_end = path + 1;
    }
  }
  q = memchr(path, '?', (size_t)(path_end - path));
  if (q != NULL)
    path_end = q;
  if (path[0] != '/') {
    if (method_is(r, "OPTIONS", 7) && r->target_len == 1 && r->target[0] == '*')
      respond_error(sh, c, r, 200, keep, "Allow: GET, HEAD, POST, OPTIONS\r\n");
    else
      respond_error(sh, c, r, 400, 0, NULL);
    return c->flags & CF_CLOSE ? 1 : 0;
  }
  fixed = cfg.fixed_path_len > 0 && (size_t)(path_end - path) == cfg.fixed_path_len &&
          memcmp(path, cfg.fixed_path, cfg.fixed_path_len) == 0;
  if (in.body != HTTP_BODY_NONE) {
    if (!fixed || !(method_is(r, "POST", 4) || method_is(r, "PUT", 3))) {
      /* Bodies are taken by the fixed route only; elsewhere the body would have to be
       * skipped for nothing: refuse and close. */
      respond_error(sh, c, r, fixed ? 405 : 413, 0,
                    fixed ? "Allow: GET, HEAD, POST, PUT\r\n" : NULL);
      return 1;
    }
    c->body = (uint8_t)in.body;
    c->body_left = in.content_length;
    memset(&c->ck, 0, sizeof(c->ck));
    c->flags |= CF_DEFERRED | (keep ? CF_DEF_KEEP : 0) | (r->minor_version == 0 ? CF_DEF_HTTP0 : 0);
    /* 100 Continue only when the body is not here yet (RFC 9110 §10.1.1). */
    if (in.expect_continue && r->minor_version == 1 &&
        (in.body == HTTP_BODY_CHUNKED || avail < in.content_length))
      OUT_LIT(sh, "HTTP/1.1 100 Continue\r\n\r\n");
    if (cfg.access_log)
      alog(sh, c, r, 200, cfg.fixed_body_len);
    return 0;
  }
  if (fixed) {
    if (!head && !method_is(r, "GET", 3) && !method_is(r, "POST", 4) && !method_is(r, "PUT", 3)) {
      respond_error(sh, c, r, 405, keep, "Allow: GET, HEAD, POST, PUT\r\n");
      return 0;
    }
    if (respond_fixed(sh, c, head, keep, r->minor_version == 0) < 0)
      return 1;
    if (cfg.access_log)
      alog(sh, c, r, 200, head ? 0 : cfg.fixed_body_len);
  } else if (head || method_is(r, "GET", 3)) {
    if (serve_file(sh, c, r, &in, path, path_end, head, keep) < 0)
      return 1;
  } else {
    respond_error(sh, c, r, 405, keep, "Allow: GET, HEAD\r\n");
  }
  if (!keep)
    c->flags |= CF_CLOSE;
  return (c->flags & CF_CLOSE) || c->file_fd >= 0;
}

/* ---- bodies ------------------------------------------------------------------------------ */

/* Skips body bytes of the current request. 1 body complete, 0 all of buf used and more
 * to come, or the negated status of a body error. */
static int consume_body(http_conn *c, const char *buf, size_t len, size_t *used)
{
  if (c->body == HTTP_BODY_LENGTH) {
    uint64_t n = len < c->body_left ? len : c->body_left;

    c->body_left -= n;
    *used = (size_t)n;
    return c->body_left == 0;
  }
  return http_chunked_consume(&c->ck, buf, len, cfg.max_body, used);
}

static void body_finished(http_shard *sh, http_conn *c)
{
  int f = c->flags;

  c->body = HTTP_BODY_NONE;
  c->flags &= (uint8_t) ~(CF_DEFERRED | CF_DEF_KEEP | CF_DEF_HEAD | CF_DEF_HTTP0);
  if (!(f & CF_DEFERRED))
    return;
  if (respond_fixed(sh, c, !!(f & CF_DEF_HEAD), !!(f & CF_DEF_KEEP), !!(f & CF_DEF_HTTP0)) < 0 ||
      !(f & CF_DEF_KEEP))
    c->flags |= CF_CLOSE;
}

/* ---- input ------------------------------------------------------------------------------- */

/* Works through buf[0 .. len): bodies to skip, heads to answer. Stops at an incomplete
 * head, at an answer that closes, at a file to send, and when output backs up. Returns
 * the offset where it stopped. */
static size_t process(http_shard *sh, http_conn *c, const char *buf, size_t len)
{
  http_request r;
  size_t off = 0;

  while (off < len && !(c->flags & CF_CLOSE) && c->file_fd < 0 && c->out == NULL) {
    int rc;

    if (c->body != HTTP_BODY_NONE) {
      size_t used = 0;

      rc = consume_body(c, buf + off, len - off, &used);
      off += used;
      /* Progress buys time at body_min_rate: a body trickled slower than that times out
       * (R-U-Dead-Yet), however often its bytes come. set_deadline caps the credit. */
      c->deadline_ms += (uint64_t)used * 1000 / cfg.body_min_rate;
      if (rc < 0) {
        c->body = HTTP_BODY_NONE;
        c->flags &= (uint8_t) ~(CF_DEFERRED | CF_DEF_KEEP | CF_DEF_HEAD | CF_DEF_HTTP0);
        respond_error(sh, c, NULL, -rc, 0, NULL);
        break;
      }
      if (rc == 0)
        break;
      body_finished(sh, c);
      continue;
    }
    rc = http_parse_request(buf + off, len - off, &cfg.lim, &r);
    if (rc == 0)
      break;
    if (rc < 0) {
      respond_error(sh, c, NULL, -rc, 0, NULL);
      break;
    }
    off += (size_t)rc;
    if (handle_request(sh, c, &r, len - off))
      break;
  }
  return off;
}

/* Keeps buf[off .. len) (an incomplete head, or requests behind a file being sent) in
 * the connection's own buffer; an empty one is released. 0 or -1 (no memory). */
static int keep_rest(http_conn *c, const char *buf, size_t len, size_t off)
{
  size_t rest = (c->flags & CF_CLOSE) ? 0 : len - off;

  if (rest == 0) {
    if (c->in != NULL) { /* free(NULL) costs ~40 instructions in jemalloc: not per request */
      free(c->in);
      c->in = NULL;
      c->in_len = c->in_cap = 0;
    }
    return 0;
  }
  if (buf == c->in) {
    memmove(c->in, c->in + off, rest);
  } else {
    size_t cap = rest < 2048 ? 2048 : rest;

    if ((c->in = malloc(cap)) == NULL)
      return -1;
    c->in_cap = (uint32_t)cap;
    memcpy(c->in, buf + off, rest);
  }
  c->in_len = (uint32_t)rest;
  if (c->file_fd >= 0 || c->out != NULL)
    c->flags |= CF_MORE;
  return 0;
}

/* ---- connection life --------------------------------------------------------------------- */

static int conn_close(http_shard *sh, http_conn *c)
{
  Event *e = c->e;

  if (c->prev)
    c->prev->next = c->next;
  else
    sh->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (c->file_fd >= 0)
    close(c->file_fd);
  free(c->in);
  free(c->out);
  free(c);
  e->closure = NULL;
  event_close(e);
  return 0;
}

/* After an answer that closes: stop sending (FIN), then read and drop what the client
 * still sends for a while, so that it reads the answer rather than a reset. */
static int start_linger(http_shard *sh, http_conn *c)
{
  if (c->flags & CF_TLS)
    return conn_close(sh, c);
  /* The answer may still be with the shard (write-behind): out first, then the FIN. */
  if (ec_event_flush(c->e) < 0) {
    if (errno != EAGAIN)
      return conn_close(sh, c);
    c->phase = PH_SEND;
    c->deadline_ms = sh->now_ms + (uint64_t)cfg.send_ms;
    return E_WRITE; /* comes back here (CF_CLOSE) once it has gone */
  }
  if (shutdown(c->e->fd, SHUT_WR) < 0)
    return conn_close(sh, c);
  c->phase = PH_LINGER;
  c->deadline_ms = sh->now_ms + LINGER_MS;
  free(c->in);
  c->in = NULL;
  c->in_len = c->in_cap = 0;
  return E_READ;
}

static int linger(http_shard *sh, http_conn *c)
{
  for (int i = 0; i < 4; i++) {
    int need, n = event_read(c->e, sh->in, IN_SCRATCH, &need);

    if (n < 0 && errno == EAGAIN)
      return need;
    if (n <= 0)
      return conn_close(sh, c);
  }
  return E_READ;
}

static void set_deadline(http_shard *sh, http_conn *c)
{
  if (c->body != HTTP_BODY_NONE) {
    uint64_t cap = sh->now_ms + (uint64_t)cfg.body_ms;

    if (c->phase != PH_BODY || c->deadline_ms > cap)
      c->deadline_ms = cap;
    c->phase = PH_BODY;
  } else if (c->in_len > 0) {
    if (c->phase != PH_HEAD) { /* from the first byte of the head: trickling does not help */
      c->phase = PH_HEAD;
      c->deadline_ms = sh->now_ms + (uint64_t)cfg.header_ms;
    }
  } else {
    c->phase = PH_IDLE;
    c->deadline_ms = sh->now_ms + (uint64_t)cfg.keepalive_ms;
  }
}

static int on_timeout(http_shard *sh, http_conn *c)
{
  int need;

  if (!(c->flags & CF_TIMEDOUT))
    return conn_close(sh, c); /* the listener's idle timeout, or the drain deadline */
  c->flags &= (uint8_t)~CF_TIMEDOUT;
  if (sh->now_ms < c->deadline_ms && !ec_framework_stopping())
    return -1; /* the connection moved on since the sweep looked: not a timeout */
  if ((c->phase == PH_HEAD || c->phase == PH_BODY) && c->out == NULL && c->file_fd < 0) {
    count_inc(&sh->st_timeouts);
    respond_error(sh, c, NULL, 408, 0, NULL);
    if (flush_shard(sh, c, &need) == 0)
      return start_linger(sh, c);
  } else if (c->phase != PH_IDLE && c->phase != PH_LINGER) {
    count_inc(&sh->st_timeouts);
  }
  return conn_close(sh, c);
}

/* Output owed from earlier dispatches: the connection's buffer, then the file. */
static int drive_output(http_conn *c, int *need)
{
  int rc = 0;

  if (c->out != NULL && (rc = flush_conn(c, need)) != 0)
    return rc;
  if (c->file_fd >= 0)
    rc = pump_file(c, need);
  return rc;
}

/* One read into the connection's head buffer, or the shard's scratch buffer. */
static int read_input(http_shard *sh, http_conn *c, char **buf, size_t *len, int *need)
{
  int n;

  if (c->in != NULL) {
    if (c->in_len == c->in_cap) {
      uint32_t cap = c->in_cap * 2, lim = cfg.lim.max_head + 1;
      char *p;

      if (cap > lim)
        cap = lim > c->in_cap ? lim : c->in_cap + 1;
      if ((p = realloc(c->in, cap)) == NULL)
        return -1;
      c->in = p;
      c->in_cap = cap;
    }
    n = event_read(c->e, c->in + c->in_len, (int)(c->in_cap - c->in_len), need);
    if (n > 0) {
      c->in_len += (uint32_t)n;
      *buf = c->in;
      *len = c->in_len;
    }
    return n;
  }
  n = event_read(c->e, sh->in, IN_SCRATCH, need);
  if (n > 0) {
    *buf = sh->in;
    *len = (size_t)n;
  }
  return n;
}

static int http_cb(Event *e, int type, void *closure, struct timeval *now)
{
  http_conn *c = closure;
  http_shard *sh = &shards[c->shard];
  int need = E_READ, did_read = 0, rc;

  shard_clock(sh, now);
  if (type & E_TIMEOUT) {
    rc = on_timeout(sh, c);
    if (rc >= 0)
      return rc;
  }
  if (c->phase == PH_LINGER)
    return linger(sh, c);
  for (int round = 0;; round++) {
    char *buf;
    size_t len, off;

    if (c->out != NULL || c->file_fd >= 0) {
      rc = drive_output(c, &need);
      if (rc < 0)
        return conn_close(sh, c);
      if (rc > 0) {
        c->phase = PH_SEND;
        c->deadline_ms = sh->now_ms + (uint64_t)cfg.send_ms;
        return need;
      }
    }
    if (c->flags & CF_CLOSE)
      return start_linger(sh, c);
    if (c->flags & CF_MORE) {
      if (round >= ROUNDS)
        return E_WRITE; /* more later: the socket is writable, so this comes back soon */
      c->flags &= (uint8_t)~CF_MORE;
      buf = c->in;
      len = c->in_len;
    } else if (!did_read) {
      int n = read_input(sh, c, &buf, &len, &need);

      if (n < 0 && errno == EAGAIN) {
        set_deadline(sh, c);
        return need;
      }
      if (n <= 0)
        return conn_close(sh, c);
      did_read = 1;
    } else {
      break;
    }
    off = process(sh, c, buf, len);
    if (keep_rest(c, buf, len, off) < 0 || flush_shard(sh, c, &need) < 0)
      return conn_close(sh, c);
  }
  set_deadline(sh, c);
  return E_READ;
}

/* Twice a second per shard: connections past their deadline get E_TIMEOUT; while the
 * server stops, idle keep-alive connections are closed at once. */
static int sweep(void *closure, struct timeval *now)
{
  http_shard *sh = closure;
  uint64_t ms = (uint64_t)now->tv_sec * 1000 + (uint64_t)now->tv_usec / 1000;
  int stopping;

  if (ms < sh->next_sweep_ms && !ec_framework_stopping())
    return 0;
  sh->next_sweep_ms = ms + SWEEP_MS;
  shard_clock(sh, now);
  stopping = ec_framework_stopping();
  for (http_conn *c = sh->conns; c != NULL; c = c->next) {
    if (c->flags & CF_TIMEDOUT)
      continue;
    if (ms >= c->deadline_ms || (stopping && c->phase == PH_IDLE)) {
      c->flags |= CF_TIMEDOUT;
      schedule_event_and_dispatch(c->e, E_TIMEOUT);
    }
  }
  alog_flush(sh);
  return 0;
}

static void peer_text(const ec_accept_info *info, char *out, size_t n)
{
  snprintf(out, n, "-");
  if (info->peer.ss_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)&info->peer)->sin_addr, out, (socklen_t)n);
  else if (info->peer.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&info->peer)->sin6_addr, out, (socklen_t)n);
}

static int http_start(Event *e, const ec_accept_info *info, void *closure)
{
  struct timeval now;
  http_shard *sh;
  http_conn *c;
  int idx = ec_shard_self();

  pthread_once(&cfg_once, cfg_load);
  if (shards == NULL || idx < 0 || idx >= nshards) {
    event_close(e);
    return 0;
  }
  sh = &shards[idx];
  if (sh->in == NULL) {
    sh->in = malloc(IN_SCRATCH + 1);
    sh->out = malloc(OUT_SCRATCH);
    if (sh->in == NULL || sh->out == NULL) {
      free(sh->in);
      free(sh->out);
      sh->in = sh->out = NULL;
      event_close(e);
      return 0;
    }
  }
  if (!sh->sweeping) {
    scheduler_recurrent_func_add(sweep, sh);
    sh->sweeping = 1;
  }
  c = calloc(1, sizeof(*c) + (cfg.access_log ? INET6_ADDRSTRLEN : 0));
  if (c == NULL) {
    event_close(e);
    return 0;
  }
  if (cfg.access_log)
    peer_text(info, c->peer, INET6_ADDRSTRLEN);
  c->e = e;
  c->file_fd = -1;
  c->shard = (uint16_t)idx;
  if (ec_ssl_is_event_ssl(e))
    c->flags |= CF_TLS;
  else
    (void)ec_event_write_behind(e, 1); /* answers go out with the shard's next wait */
  c->next = sh->conns;
  if (sh->conns)
    sh->conns->prev = c;
  sh->conns = c;
  get_now(&now);
  shard_clock(sh, &now);
  c->phase = PH_IDLE;
  c->deadline_ms = sh->now_ms + (uint64_t)cfg.header_ms; /* the first request */
  e->callback = http_cb;
  e->closure = c;
  return E_READ;
}

/* ---- stats and registration -------------------------------------------------------------- */

static void add_stats(const http_shard *sh, http_stats *out)
{
  out->requests += __atomic_load_n(&sh->st_requests, __ATOMIC_RELAXED);
  for (int i = 1; i < 6; i++)
    out->status[i] += __atomic_load_n(&sh->st_status[i], __ATOMIC_RELAXED);
  out->bad_requests += __atomic_load_n(&sh->st_bad, __ATOMIC_RELAXED);
  out->timeouts += __atomic_load_n(&sh->st_timeouts, __ATOMIC_RELAXED);
  out->files += __atomic_load_n(&sh->st_files, __ATOMIC_RELAXED);
}

int http_shard_stats_get(int shard, http_stats *out)
{
  memset(out, 0, sizeof(*out));
  if (__atomic_load_n(&shards, __ATOMIC_ACQUIRE) == NULL)
    return -ENOENT;
  if (shard < 0 || shard >= nshards)
    return -EINVAL;
  add_stats(&shards[shard], out);
  return 0;
}

int http_stats_get(http_stats *out)
{
  memset(out, 0, sizeof(*out));
  if (__atomic_load_n(&shards, __ATOMIC_ACQUIRE) == NULL)
    return -ENOENT;
  for (int i = 0; i < nshards; i++)
    add_stats(&shards[i], out);
  return 0;
}

/* The framework's metrics source "http": the counters above, summed over the shards, in
 * every render of GET /metrics, /stats and the console (ec_stats.h). */
static void stats_source(ec_stats_writer *w, void *arg)
{
  static const char *const classes[6] = {NULL, "1xx", "2xx", "3xx", "4xx", "5xx"};
  http_stats st;

  (void)arg;
  http_stats_get(&st); /* zeros before the first connection */
  for (int i = 1; i < 6; i++) {
    const char *labels[] = {"class", classes[i], NULL};

    ec_stats_emit_u64(w, "ecshard_http_responses_total", EC_STATS_COUNTER,
                      "HTTP responses sent by the http module, by status class", labels,
                      st.status[i]);
  }
  ec_stats_emit_u64(w, "ecshard_http_refused_total", EC_STATS_COUNTER,
                    "Requests refused as malformed or over a limit (the connection closed)", NULL,
                    st.bad_requests);
  ec_stats_emit_u64(w, "ecshard_http_timeouts_total", EC_STATS_COUNTER,
                    "Header, body and send timeouts", NULL, st.timeouts);
  ec_stats_emit_u64(w, "ecshard_http_file_responses_total", EC_STATS_COUNTER,
                    "Static file responses (200 and 206)", NULL, st.files);
}

/* The `http` section (docs/http.md). Bounds are checked by the configuration loader. */
static const ec_config_item http_items[] = {
    {"docroot", EC_CONFIG_STRING, 0, 0, NULL},
    {"fixed_path", EC_CONFIG_STRING, 0, 0, NULL},
    {"fixed_body", EC_CONFIG_STRING, 0, 0, NULL},
    {"fixed_type", EC_CONFIG_STRING, 0, 0, NULL},
    {"max_request_line", EC_CONFIG_INT, 64, 1 << 20, NULL},
    {"max_header_bytes", EC_CONFIG_INT, 256, 1 << 20, NULL},
    {"max_headers", EC_CONFIG_INT, 1, HTTP_MAX_HEADERS, NULL},
    {"max_body", EC_CONFIG_INT, 0, 1e15, NULL},
    {"max_requests", EC_CONFIG_INT, 0, 1 << 30, NULL},
    {"body_min_rate", EC_CONFIG_INT, 1, 1 << 30, NULL},
    {"header_timeout", EC_CONFIG_FLOAT, 0.001, 86400, NULL},
    {"body_timeout", EC_CONFIG_FLOAT, 0.001, 86400, NULL},
    {"send_timeout", EC_CONFIG_FLOAT, 0.001, 86400, NULL},
    {"keepalive_timeout", EC_CONFIG_FLOAT, 0.001, 86400, NULL},
    {"access_log", EC_CONFIG_BOOL, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

int http_register(void)
{
  static char defaults[PATH_MAX + 512];
  ec_protocol p = {
      .name = "http",
      .session_start = http_start,
      .busy_reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: "
                    "close\r\n\r\n",
  };
  char *root = default_docroot();
  int rc;

  /* The sample document root goes into the defaults, so that --print-config shows it. */
  snprintf(defaults, sizeof(defaults),
           "docroot = \"%s\"; fixed_path = \"/hello\"; fixed_body = \"hello\\n\"; "
           "fixed_type = \"text/plain\"; max_request_line = 8192; max_header_bytes = 16384; "
           "max_headers = 100; max_body = 1048576; body_min_rate = 1024; max_requests = 10000; "
           "header_timeout = 10.0; body_timeout = 30.0; send_timeout = 30.0; "
           "keepalive_timeout = 75.0; access_log = false;",
           root != NULL && strpbrk(root, "\"\\") == NULL ? root : "");
  free(root);
  rc = ec_config_section_register("http", http_items, defaults);
  if (rc < 0)
    return rc;
  rc = ec_stats_register_source("http", stats_source, NULL);
  if (rc < 0 && rc != -EEXIST)
    return rc;
  return ec_protocol_register(&p);
}
