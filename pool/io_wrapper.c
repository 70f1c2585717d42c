/*
 * pool/io_wrapper.c - io_wrapper read jobs: a file, a file:// URL or an http(s):// URL
 * read whole into a string, on a pool worker.
 *
 * HTTP is libcurl's (Debian's libcurl4-openssl-dev): a maintained HTTP/1.1 client with
 * redirects, chunked decoding, timeouts and TLS beats a hand-written one on every count
 * that matters here (parser bugs are security bugs). It runs on the worker thread with
 * CURLOPT_NOSIGNAL (no SIGALRM-based DNS timeouts in a threaded process), one easy handle
 * per job, restricted to http and https for the request and for every redirect, and with
 * no proxy unless io_wrapper.proxy names one (environment variables are ignored: a server
 * should not route its fetches through whatever http_proxy its shell had).
 *
 * Files are read with read(2) straight into the string's buffer, sized from fstat when
 * the file is regular. Both paths stop at io_wrapper.max_size and leave the string as
 * they found it on failure.
 */
#include "io_wrapper.h"
#include "pool/pool.h"

#include "framework/internal.h"

#include <ctype.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <pthread.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- settings ------------------------------------------------------------------------ */

typedef struct io_cfg {
  int64_t max_size;
  long connect_timeout_ms;
  long timeout_ms;
  long max_redirects;
  int verify_peer;
  char proxy[256];
  char ca_file[512];
} io_cfg;

#define IO_DEFAULTS                                                                                \
  {                                                                                                \
    .max_size = 64 << 20, .connect_timeout_ms = 10000, .timeout_ms = 60000, .max_redirects = 5,    \
    .verify_peer = 1, .proxy = "", .ca_file = ""                                                   \
  }

/* Written by pool__io_configure (init), read by workers and SYNC callers: a snapshot
 * under the lock, so that a job never sees half an update. */
static io_cfg settings = IO_DEFAULTS;
static pthread_mutex_t settings_lock = PTHREAD_MUTEX_INITIALIZER;

static long seconds_ms(double s)
{
  return s <= 0 ? 0 : s > 86400 ? 86400000L : (long)(s * 1000 + 0.5);
}

void pool__io_configure(void)
{
  io_cfg c = IO_DEFAULTS;

  c.max_size = ec_config_get_int("io_wrapper.max_size", c.max_size);
  c.connect_timeout_ms = seconds_ms(ec_config_get_double("io_wrapper.connect_timeout", 10.0));
  c.timeout_ms = seconds_ms(ec_config_get_double("io_wrapper.timeout", 60.0));
  c.max_redirects = (long)ec_config_get_int("io_wrapper.max_redirects", c.max_redirects);
  c.verify_peer = ec_config_get_bool("io_wrapper.verify_peer", 1);
  snprintf(c.proxy, sizeof(c.proxy), "%s", ec_config_get_string("io_wrapper.proxy", ""));
  snprintf(c.ca_file, sizeof(c.ca_file), "%s", ec_config_get_string("io_wrapper.ca_file", ""));
  pthread_mutex_lock(&settings_lock);
  settings = c;
  pthread_mutex_unlock(&settings_lock);
}

void pool__io_reset(void)
{
  io_cfg c = IO_DEFAULTS;

  pthread_mutex_lock(&settings_lock);
  settings = c;
  pthread_mutex_unlock(&settings_lock);
}

static void settings_get(io_cfg *out)
{
  pthread_mutex_lock(&settings_lock);
  *out = settings;
  pthread_mutex_unlock(&settings_lock);
}

/* ---- results ------------------------------------------------------------------------- */

static void set_result(io_job *j, int status, int errorcode)
{
  j->status = status;
  j->errorcode = errorcode;
}

/* Drops whatever a failed read appended. */
static void truncate_to(string *s, int len)
{
  s->len = len;
  if (s->buffer != NULL && s->allocd > len)
    s->buffer[len] = '\0';
}

/* ---- files --------------------------------------------------------------------------- */

/* Makes room for `want` more bytes; 0 or an errno value. */
static int reserve(string *s, size_t want)
{
  int rc = ec_string_reserve(s, want);

  return rc < 0 ? -rc : 0;
}

static void read_fd(io_job *j, int fd, const struct stat *st, const io_cfg *c)
{
  string *s = j->buffer;
  size_t got = 0, max = (size_t)c->max_size;
  size_t chunk = (size_t)64 * 1024;
  int err;

  /* A regular file's size is known: one allocation, whose spare byte lets the read that
   * finds EOF happen without growing the string. */
  if (S_ISREG(st->st_mode)) {
    if ((uint64_t)st->st_size > (uint64_t)max) {
      set_result(j, IOJ_STORE_FAILED, EFBIG);
      return;
    }
    if ((err = reserve(s, (size_t)st->st_size + 1)) != 0) {
      set_result(j, IOJ_STORE_FAILED, err);
      return;
    }
  }
  for (;;) {
    int free_bytes = s->allocd - s->len - 1; /* one byte stays for the NUL */
    size_t room;
    ssize_t n;

    if (free_bytes <= 0) {
      if ((err = reserve(s, chunk)) != 0) {
        set_result(j, IOJ_STORE_FAILED, err);
        return;
      }
      if (chunk < (size_t)1024 * 1024)
        chunk *= 2;
      free_bytes = s->allocd - s->len - 1;
    }
    room = (size_t)free_bytes;
    if (room > max - got + 1)
      room = max - got + 1; /* one byte over the limit is enough to know */
    n = read(fd, s->buffer + s->len, room);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      set_result(j, IOJ_READ_FAILED, errno);
      return;
    }
    if (n == 0)
      break;
    got += (size_t)n;
    if (got > max) {
      set_result(j, IOJ_STORE_FAILED, EFBIG);
      return;
    }
    s->len += (int)n;
  }
  s->buffer[s->len] = '\0';
  set_result(j, IOJ_COMPLETED, 0);
}

static void read_path(io_job *j, const char *path, const io_cfg *c)
{
  struct stat st;
  int fd;

  if (*path == '\0') {
    set_result(j, IOJ_OPEN_FAILED, ENOENT);
    return;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    set_result(j, IOJ_OPEN_FAILED, errno);
    return;
  }
  if (fstat(fd, &st) < 0)
    set_result(j, IOJ_OPEN_FAILED, errno);
  else if (S_ISDIR(st.st_mode))
    set_result(j, IOJ_OPEN_FAILED, EISDIR);
  else
    read_fd(j, fd, &st, c);
  close(fd);
}

static int hexval(int ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch = tolower(ch);
  return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* "file://[localhost]/path[?query][#fragment]" -> "/path", percent escapes decoded. */
static void read_file_url(io_job *j, const char *rest, const io_cfg *c)
{
  size_t n;
  char *path, *o;

  if (strncasecmp(rest, "localhost/", 10) == 0)
    rest += 9;
  if (*rest != '/') {
    set_result(j, IOJ_OPEN_FAILED, EINVAL); /* another host's file: not ours to read */
    return;
  }
  n = strcspn(rest, "?#");
  path = malloc(n + 1);
  if (path == NULL) {
    set_result(j, IOJ_OPEN_FAILED, ENOMEM);
    return;
  }
  o = path;
  for (size_t i = 0; i < n; i++) {
    int hi, lo;

    if (rest[i] != '%') {
      *o++ = rest[i];
      continue;
    }
    hi = i + 2 < n ? hexval((unsigned char)rest[i + 1]) : -1;
    lo = hi >= 0 ? hexval((unsigned char)rest[i + 2]) : -1;
    if (lo < 0 || (hi == 0 && lo == 0)) { /* malformed, or an embedded NUL */
      free(path);
      set_result(j, IOJ_OPEN_FAILED, EINVAL);
      return;
    }
    *o++ = (char)(hi * 16 + lo);
    i += 2;
  }
  *o = '\0';
  read_path(j, path, c);
  free(path);
}

/* ---- HTTP(S) through libcurl --------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
  /* Once per process and never undone: curl_global_cleanup is not thread-safe and a
   * re-initialised framework would need it again. */
  curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct sink {
  string *s;
  size_t got, max;
  int err; /* why the write callback stopped the transfer */
} sink;

static size_t on_data(char *data, size_t size, size_t nmemb, void *arg)
{
  sink *k = arg;
  size_t len = size * nmemb;

  if (len > k->max - k->got) {
    k->err = EFBIG;
    return 0; /* CURLE_WRITE_ERROR */
  }
  if (len > 0 && stringwrite2(k->s, data, len) < 0) {
    k->err = errno ? errno : ENOMEM;
    return 0;
  }
  k->got += len;
  return len;
}

/* errno-like code for a transport failure. */
static int curl_errno(CURL *h, CURLcode rc)
{
  long os = 0;

  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return ETIMEDOUT;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return EHOSTUNREACH;
  case CURLE_TOO_MANY_REDIRECTS:
    return ELOOP;
  case CURLE_UNSUPPORTED_PROTOCOL:
    return EPROTONOSUPPORT;
  case CURLE_URL_MALFORMAT:
    return EINVAL;
  case CURLE_OUT_OF_MEMORY:
    return ENOMEM;
  case CURLE_FILESIZE_EXCEEDED:
    return EFBIG;
  case CURLE_GOT_NOTHING:
    return ECONNRESET;
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_BAD_CONTENT_ENCODING:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_HTTP2:
    return EPROTO;
  default:
    break;
  }
  if (curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os) == CURLE_OK && os > 0)
    return (int)os;
  return rc == CURLE_COULDNT_CONNECT ? ECONNREFUSED : EIO;
}

static void http_options(CURL *h, const char *url, const io_cfg *c, sink *k, char *errbuf)
{
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, c->max_redirects > 0 ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, c->max_redirects);
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_size);
  curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "ecshard/" ECSHARD_VERSION_STRING);
  curl_easy_setopt(h, CURLOPT_PROXY, c->proxy); /* "": no proxy, whatever the environment */
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, c->verify_peer ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, c->verify_peer ? 2L : 0L);
  if (c->ca_file[0] != '\0')
    curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, k);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
}

static void read_http(io_job *j, const char *url, const io_cfg *c)
{
  char errbuf[CURL_ERROR_SIZE] = "";
  sink k = {.s = j->buffer, .max = (size_t)c->max_size};
  long code = 0;
  CURLcode rc;
  CURL *h;

  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK || (h = curl_easy_init()) == NULL) {
    set_result(j, IOJ_OPEN_FAILED, ENOMEM);
    return;
  }
  http_options(h, url, c, &k, errbuf);
  rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  if (rc == CURLE_OK && code >= 200 && code < 300)
    set_result(j, IOJ_COMPLETED, 0);
  else if (rc == CURLE_OK || rc == CURLE_HTTP_RETURNED_ERROR)
    set_result(j, IOJ_OPEN_FAILED, (int)code); /* a status that is not a success */
  else if (rc == CURLE_WRITE_ERROR && k.err != 0)
    set_result(j, IOJ_STORE_FAILED, k.err);
  else if (rc == CURLE_FILESIZE_EXCEEDED || rc == CURLE_OUT_OF_MEMORY)
    set_result(j, IOJ_STORE_FAILED, curl_errno(h, rc));
  else
    /* Until a success status arrived the resource could not be opened (no answer, a
     * refused redirect, ...); after it, the read broke. */
    set_result(j, code >= 200 && code < 300 ? IOJ_READ_FAILED : IOJ_OPEN_FAILED, curl_errno(h, rc));
  if (j->status != IOJ_COMPLETED)
    ec_debug_printf(DDEBUG, EC_LOG_POOL, "io_wrapper: %s: status %d, error %d (%s; HTTP %ld)", url,
                    (int)j->status, j->errorcode, errbuf[0] ? errbuf : curl_easy_strerror(rc),
                    code);
  curl_easy_cleanup(h);
}

/* ---- the job ------------------------------------------------------------------------- */

static int has_scheme(const char *url, const char *scheme)
{
  size_t n = strlen(scheme);

  return strncasecmp(url, scheme, n) == 0 && strncmp(url + n, "://", 3) == 0;
}

/* "scheme://" at the start: letters, digits, + - . after a first letter (RFC 3986). */
static int looks_like_url(const char *s)
{
  const char *p = s;

  if (!isalpha((unsigned char)*p))
    return 0;
  while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
    p++;
  return strncmp(p, "://", 3) == 0;
}

static void io_work(ec_async_job *job, void *closure)
{
  io_job *j = (io_job *)job; /* job is the first member */
  string *s = j->buffer;
  const char *url = j->filename;
  int start;
  io_cfg c;

  (void)closure;
  if (s == NULL) {
    set_result(j, IOJ_MISUSED, EINVAL);
    return;
  }
  settings_get(&c);
  start = s->len;
  if (has_scheme(url, "file"))
    read_file_url(j, url + 7, &c);
  else if (has_scheme(url, "http") || has_scheme(url, "https"))
    read_http(j, url, &c);
  else if (looks_like_url(url))
    set_result(j, IOJ_OPEN_FAILED, EPROTONOSUPPORT);
  else
    read_path(j, url, &c);
  if (j->status != IOJ_COMPLETED)
    truncate_to(s, start);
}

io_job *io_wrapper_create_read_job(const char *filename)
{
  size_t n;
  io_job *j;
  char *copy;

  if (filename == NULL) {
    errno = EINVAL;
    return NULL;
  }
  /* The seed passes a line as tryread_until returned it, "\r\n" included. */
  n = strlen(filename);
  while (n > 0 && strchr(" \t\r\n", filename[n - 1]) != NULL)
    n--;
  j = ec_malloc_size(MEMTYPE_EC_ASYNC_JOB, sizeof(*j) + n + 1);
  if (j == NULL)
    return NULL;
  memset(j, 0, sizeof(*j));
  copy = (char *)(j + 1);
  memcpy(copy, filename, n);
  copy[n] = '\0';
  j->filename = copy;
  j->job.job_class = ECTP_CLASS_IO;
  j->job.completion = ECTP_COMPLETE_NONE;
  j->job.worker = io_work;
  j->status = IOJ_MISUSED;
  return j;
}

void io_wrapper_free_read_job(io_job *job)
{
  ec_free(MEMTYPE_EC_ASYNC_JOB, job);
}
