/*
 * framework/listener.c - the protocol registry and the listeners of the configuration.
 *
 * Protocols register by name before start; the `listener` section binds addresses to
 * them. ec_framework_start opens every socket on the calling thread, so that a bad
 * address or a port in use fails the start with a clear message instead of a shard
 * discovering it later. In reuseport mode every shard gets its own SO_REUSEPORT socket per
 * address and the kernel spreads connections; in single mode (and for Unix sockets, where
 * SO_REUSEPORT does not balance) one shard accepts and hands connections to the others.
 */
#include "framework/listener.h"
#include "ec_ssl.h"
#include "framework/atomic.h"
#include "framework/internal.h"
#include "framework/tls.h"
#include "shard/acceptor.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/un.h>

#define MAX_PROTOCOLS 64

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static ec_protocol protocols[MAX_PROTOCOLS];
static int nprotocols;

static fw__listener **listeners;
static int nlisteners;
static int64_t sessions_active; /* atomic: all listeners */
static int64_t sessions_max;
static uint64_t retry_ns, drain_ns;

int ec_protocol_register(const ec_protocol *p)
{
  int rc = 0;

  if (p == NULL || p->name == NULL || p->name[0] == '\0' || p->session_start == NULL)
    return -EINVAL;
  pthread_mutex_lock(&reg_lock);
  for (int i = 0; i < nprotocols; i++)
    if (strcmp(protocols[i].name, p->name) == 0)
      rc = -EEXIST;
  if (rc == 0 && nprotocols == MAX_PROTOCOLS)
    rc = -ENOMEM;
  if (rc == 0) {
    ec_protocol *c = &protocols[nprotocols];

    *c = *p;
    c->name = ec_mt_strdup(MEMTYPE_CONFIG, p->name);
    c->busy_reply = p->busy_reply ? ec_mt_strdup(MEMTYPE_CONFIG, p->busy_reply) : NULL;
    if (c->name == NULL || (p->busy_reply && c->busy_reply == NULL)) {
      ec_free(MEMTYPE_CONFIG, (void *)c->name);
      ec_free(MEMTYPE_CONFIG, (void *)c->busy_reply);
      rc = -ENOMEM;
    } else {
      nprotocols++;
    }
  }
  pthread_mutex_unlock(&reg_lock);
  if (rc == -EEXIST)
    ec_debug_printf(DERROR, EC_LOG_NET, "ec_protocol_register: '%s' is registered already",
                    p->name);
  return rc;
}

static const ec_protocol *protocol_find(const char *name)
{
  const ec_protocol *p = NULL;

  pthread_mutex_lock(&reg_lock);
  for (int i = 0; i < nprotocols && p == NULL; i++)
    if (strcmp(protocols[i].name, name) == 0)
      p = &protocols[i];
  pthread_mutex_unlock(&reg_lock);
  return p;
}

/* ---- addresses ---------------------------------------------------------------------------- */

typedef struct laddr {
  struct sockaddr_storage ss;
  socklen_t len;
  int is_unix;
} laddr;

/* "1.2.3.4:80", "[::1]:80", "*:80" (all IPv4), "unix:/path". */
static const char *parse_addr(const char *s, laddr *a)
{
  char host[INET6_ADDRSTRLEN + 2];
  const char *colon;
  size_t hl;
  char *end;
  long port;

  memset(a, 0, sizeof(*a));
  if (strncmp(s, "unix:", 5) == 0) {
    struct sockaddr_un *u = (struct sockaddr_un *)&a->ss;

    if (s[5] == '\0' || strlen(s + 5) >= sizeof(u->sun_path))
      return "a unix: address needs a path shorter than 108 bytes";
    u->sun_family = AF_UNIX;
    memcpy(u->sun_path, s + 5, strlen(s + 5) + 1); /* the length was checked above */
    a->len = sizeof(*u);
    a->is_unix = 1;
    return NULL;
  }
  if (s[0] == '[') {
    const char *rb = strchr(s, ']');

    if (rb == NULL || rb[1] != ':')
      return "an IPv6 address is written [ADDR]:PORT";
    hl = (size_t)(rb - s - 1);
    colon = rb + 1;
    if (hl >= sizeof(host))
      return "bad IPv6 address";
    memcpy(host, s + 1, hl);
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL)
      return "a listen address is HOST:PORT, [IPv6]:PORT or unix:/path";
    hl = (size_t)(colon - s);
    if (hl >= sizeof(host))
      return "bad IPv4 address";
    memcpy(host, s, hl);
  }
  host[hl] = '\0';
  errno = 0;
  port = strtol(colon + 1, &end, 10);
  /* Port 0 would give every shard's SO_REUSEPORT socket a different ephemeral port. */
  if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 1 || port > 65535)
    return "the port must be a number from 1 to 65535";
  if (s[0] == '[') {
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&a->ss;

    if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
      return "bad IPv6 address";
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    a->len = sizeof(*a6);
  } else {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&a->ss;

    if (strcmp(host, "*") == 0 || host[0] == '\0')
      a4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
      return "bad IPv4 address (numeric addresses only)";
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    a->len = sizeof(*a4);
  }
  return NULL;
}

const char *fw__listen_addr_check(const char *addr)
{
  laddr a;

  return addr ? parse_addr(addr, &a) : "missing";
}

/* A Unix socket file left by an earlier run: remove it if nobody listens there. */
static void unlink_stale(const struct sockaddr_un *u)
{
  struct stat st;
  int fd;

  if (stat(u->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
    return;
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  if (connect(fd, (const struct sockaddr *)u, sizeof(*u)) < 0 && errno == ECONNREFUSED)
    unlink(u->sun_path);
  close(fd);
}

/*
 * SO_REUSEPORT lets any process of the same user join a port and take a share of its
 * connections: a second instance started by mistake would silently split the traffic.
 * A plain bind (without SO_REUSEPORT) fails if anybody is bound there, so try one first.
 */
static int port_free(const laddr *a, const char *what)
{
  int one = 1, rc = 0;
  int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return 0; /* the real socket() will report it */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)); /* TIME_WAIT is fine */
  if (a->ss.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno == EADDRINUSE) {
    ec_debug_printf(DERROR, EC_LOG_NET,
                    "listener %s: address in use (another process listens there; with "
                    "SO_REUSEPORT it would get a share of our connections)",
                    what);
    rc = -EADDRINUSE;
  }
  close(fd);
  return rc;
}

static int open_socket(const laddr *a, int reuseport, int backlog, const char *what)
{
  int one = 1;
  int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  if (fd < 0) {
    ec_debug_printf(DERROR, EC_LOG_NET, "listener %s: socket() failed: %s", what, strerror(errno));
    return -errno;
  }
  if (!a->is_unix) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->ss.ss_family == AF_INET6)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
      int err = errno;

      ec_debug_printf(DERROR, EC_LOG_NET,
                      "listener %s: setsockopt(SO_REUSEPORT) failed: %s (use accept_mode = "
                      "\"single\")",
                      what, strerror(err));
      close(fd);
      return -err;
    }
  } else {
    unlink_stale((const struct sockaddr_un *)&a->ss);
  }
  if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, backlog) < 0) {
    int err = errno;

    ec_debug_printf(DERROR, EC_LOG_NET, "listener %s: bind/listen failed: %s", what, strerror(err));
    close(fd);
    return -err;
  }
  return fd;
}

/* ---- the listener section ---------------------------------------------------------------- */

static double get_double(const config_setting_t *g, const char *name, double def)
{
  const config_setting_t *s = config_setting_get_member(g, name);

  if (s == NULL)
    return def;
  if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
    return config_setting_get_float(s);
  return (double)config_setting_get_int64(s);
}

static long long get_int(const config_setting_t *g, const char *name, long long def)
{
  const config_setting_t *s = config_setting_get_member(g, name);

  return s ? config_setting_get_int64(s) : def;
}

static int get_bool(const config_setting_t *g, const char *name, int def)
{
  const config_setting_t *s = config_setting_get_member(g, name);

  return s ? config_setting_get_bool(s) : def;
}

static const char *where(const config_setting_t *s, char *buf, size_t len)
{
  const char *file = config_setting_source_file(s);
  unsigned line = config_setting_source_line(s);

  if (line > 0)
    snprintf(buf, len, "%s:%u", file ? file : "<config>", line);
  else /* --set overrides have no line */
    snprintf(buf, len, "%s", file ? file : "<config>");
  return buf;
}

static void listener_free(fw__listener *l)
{
  if (l == NULL)
    return;
  SSL_CTX_free(l->tls_ctx);
  ec_free(MEMTYPE_CONFIG, l->name);
  ec_free(MEMTYPE_CONFIG, l);
}

/* Opens the sockets of one address and posts an acceptor per socket to its shard. */
static int open_address(fw__listener *l, const config_setting_t *g, const char *text, int backlog)
{
  char what[256], loc[256];
  const char *why;
  laddr a;
  int n = ec_shard_count(), nsock, single;
  int rc;

  snprintf(what, sizeof(what), "%s (%s)", l->name, text);
  why = parse_addr(text, &a);
  if (why != NULL) {
    ec_debug_printf(DERROR, EC_LOG_NET, "%s: listener %s: %s",
                    where(config_setting_get_member(g, "listen"), loc, sizeof(loc)), what, why);
    return -EINVAL;
  }
  /* SO_REUSEPORT does not balance Unix sockets: those always use one acceptor. */
  single = l->single || a.is_unix;
  nsock = single ? 1 : n;
  if (!single && (rc = port_free(&a, what)) < 0)
    return rc;
  for (int i = 0; i < nsock; i++) {
    int fd = open_socket(&a, !single, backlog, what);

    if (fd < 0)
      return fd;
    rc = shard__acceptor_install(l, fd, single ? l->index % n : i, single,
                                 a.is_unix ? ((struct sockaddr_un *)&a.ss)->sun_path : NULL);
    if (rc < 0) {
      close(fd);
      return rc;
    }
  }
  ec_debug_printf(
      DNOTICE, EC_LOG_NET, "listener %s: %s, protocol %s, %s%s%s", l->name, text, l->proto->name,
      single ? "one acceptor handing off to all shards" : "a SO_REUSEPORT socket on every shard",
      l->proxy_protocol ? ", PROXY protocol" : "",
      l->tls_ctx == NULL ? ""
      : l->tls_implicit  ? ", TLS"
                         : ", STARTTLS available");
  return 0;
}

/* A string list member (or a lone string) as a NULL-terminated array of pointers into
 * the configuration; *n gets the count. NULL with *n == 0 when absent. */
static const char **string_list(const config_setting_t *g, const char *name, int *n)
{
  const config_setting_t *s = config_setting_get_member(g, name);
  const char **v;
  int cnt;

  *n = 0;
  if (s == NULL)
    return NULL;
  cnt = config_setting_type(s) == CONFIG_TYPE_STRING ? 1 : config_setting_length(s);
  v = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*v) * (size_t)(cnt + 1));
  if (v == NULL)
    return NULL;
  for (int i = 0; i < cnt; i++)
    v[i] = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                        : config_setting_get_string_elem(s, i);
  v[cnt] = NULL;
  *n = cnt;
  return v;
}

static int tls_version(const config_setting_t *t, const char *name, int def)
{
  const char *v = NULL;

  if (!config_setting_lookup_string(t, name, &v))
    return def;
  return strcmp(v, "TLSv1.3") == 0 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

/* The file:line of member `path` ("ciphers", "sni.mail.key") of the tls section `t`, or of
 * the section itself. */
static const char *tls_where(const config_setting_t *t, const char *path, char *buf, size_t len)
{
  const config_setting_t *s =
      path != NULL ? config_setting_lookup((config_setting_t *)t, path) : NULL;

  return where(s != NULL ? s : t, buf, len);
}

/* The listener's `tls` section: its server context, built before any socket opens. */
static int open_tls(fw__listener *l, const config_setting_t *g)
{
  const config_setting_t *t = config_setting_get_member(g, "tls");
  const config_setting_t *sni;
  const char *mode = "implicit", *auth = "none", *bad = NULL;
  fw__tls_cert *certs = NULL;
  const char **alpn = NULL, **tkeys = NULL;
  const char ***names = NULL;
  fw__tls_opts o;
  char err[512], loc[256];
  int rc = 0;

  if (t == NULL)
    return 0;
  memset(&o, 0, sizeof(o));
  o.def.label = "default";
  config_setting_lookup_string(t, "certificate", &o.def.certificate);
  config_setting_lookup_string(t, "key", &o.def.key);
  config_setting_lookup_string(t, "mode", &mode);
  o.min_version = tls_version(t, "min_version", TLS1_2_VERSION);
  o.max_version = tls_version(t, "max_version", TLS1_3_VERSION);
  config_setting_lookup_string(t, "ciphers", &o.ciphers);
  config_setting_lookup_string(t, "ciphersuites", &o.ciphersuites);
  config_setting_lookup_string(t, "client_auth", &auth);
  o.client_auth = strcmp(auth, "required") == 0   ? FW__TLS_AUTH_REQUIRED
                  : strcmp(auth, "optional") == 0 ? FW__TLS_AUTH_OPTIONAL
                                                  : FW__TLS_AUTH_NONE;
  config_setting_lookup_string(t, "client_ca", &o.client_ca);
  o.verify_depth = (int)get_int(t, "verify_depth", 4);
  o.session_tickets = get_bool(t, "session_tickets", 1);
  o.session_lifetime = get_double(t, "session_lifetime", 3600.0);
  alpn = string_list(t, "alpn", &o.nalpn);
  o.alpn = alpn;
  tkeys = string_list(t, "ticket_key_files", &o.nticket_key_files);
  o.ticket_key_files = tkeys;
  sni = config_setting_get_member(t, "sni");
  if (sni != NULL && config_setting_length(sni) > 0) {
    int n = config_setting_length(sni);

    certs = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*certs) * (size_t)n);
    names = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*names) * (size_t)n);
    if (certs == NULL || names == NULL) {
      rc = -ENOMEM;
      goto out;
    }
    memset(names, 0, sizeof(*names) * (size_t)n);
    for (int i = 0; i < n; i++) {
      const config_setting_t *e = config_setting_get_elem(sni, (unsigned)i);

      memset(&certs[i], 0, sizeof(certs[i]));
      certs[i].label = config_setting_name(e);
      config_setting_lookup_string(e, "certificate", &certs[i].certificate);
      config_setting_lookup_string(e, "key", &certs[i].key);
      names[i] = string_list(e, "names", &certs[i].nnames);
      certs[i].names = names[i];
    }
    o.sni = certs;
    o.nsni = n;
  }
  l->tls_implicit = strcmp(mode, "implicit") == 0;
  l->tls_ctx = fw__tls_server_ctx_build(&o, err, sizeof(err), &bad);
  if (l->tls_ctx == NULL) {
    ec_debug_printf(DERROR, EC_LOG_NET, "%s: listener %s: TLS: %s",
                    tls_where(t, bad, loc, sizeof(loc)), l->name, err);
    rc = -EINVAL;
  }
out:
  for (int i = 0; names != NULL && i < o.nsni; i++)
    ec_free(MEMTYPE_CONFIG, names[i]);
  ec_free(MEMTYPE_CONFIG, names);
  ec_free(MEMTYPE_CONFIG, certs);
  ec_free(MEMTYPE_CONFIG, alpn);
  ec_free(MEMTYPE_CONFIG, tkeys);
  return rc;
}

static int open_listener(const config_setting_t *g, int index)
{
  const config_setting_t *listen = config_setting_get_member(g, "listen");
  const char *proto_name = NULL, *mode = "reuseport";
  char loc[256];
  fw__listener *l;
  int rc = 0;

  config_setting_lookup_string(g, "protocol", &proto_name);
  config_setting_lookup_string(g, "accept_mode", &mode);
  l = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*l));
  if (l == NULL)
    return -ENOMEM;
  memset(l, 0, sizeof(*l));
  l->index = index;
  l->name = ec_mt_strdup(MEMTYPE_CONFIG, config_setting_name(g));
  l->proto = proto_name ? protocol_find(proto_name) : NULL;
  if (l->proto == NULL) {
    ec_debug_printf(DERROR, EC_LOG_NET, "%s: listener %s: unknown protocol '%s'",
                    where(config_setting_get_member(g, "protocol"), loc, sizeof(loc)),
                    config_setting_name(g), proto_name ? proto_name : "");
    listener_free(l);
    return -EINVAL;
  }
  l->single = strcmp(mode, "single") == 0;
  l->proxy_protocol = get_bool(g, "proxy_protocol", 0);
  l->tcp_nodelay = get_bool(g, "tcp_nodelay", 1);
  l->rcvbuf = (int)get_int(g, "rcvbuf", 0);
  l->sndbuf = (int)get_int(g, "sndbuf", 0);
  l->accepts_per_iter = (int)get_int(g, "accepts_per_iteration", 64);
  l->max_connections = get_int(g, "max_connections", 0);
  l->idle_ns = (uint64_t)(get_double(g, "idle_timeout", 300.0) * 1e9);
  l->handshake_ns = (uint64_t)(get_double(g, "handshake_timeout", 10.0) * 1e9);
  listeners[index] = l;
  nlisteners = index + 1;
  if ((rc = open_tls(l, g)) < 0)
    return rc;
  if (config_setting_type(listen) == CONFIG_TYPE_STRING) {
    rc = open_address(l, g, config_setting_get_string(listen), (int)get_int(g, "backlog", 4096));
  } else {
    for (int i = 0; rc == 0 && i < config_setting_length(listen); i++)
      rc = open_address(l, g, config_setting_get_string_elem(listen, i),
                        (int)get_int(g, "backlog", 4096));
  }
  return rc;
}

void fw__listeners_reconfigure(void)
{
  const config_setting_t *sect = config_lookup(fw__config(), "listener");

  /* Relaxed: each value stands alone; the shards pick it up at their next use. */
  ec__store(&sessions_max, ec_config_get_int("limits.max_connections", 0));
  ec__store(&retry_ns, (uint64_t)(ec_config_get_double("limits.accept_retry_delay", 0.1) * 1e9));
  ec__store(&drain_ns, (uint64_t)(ec_config_get_double("shutdown.drain_timeout", 10.0) * 1e9));
  for (int i = 0; i < nlisteners; i++) {
    fw__listener *l = listeners[i];
    const config_setting_t *g = sect && l ? config_setting_get_member(sect, l->name) : NULL;

    if (g == NULL)
      continue; /* removed: reported by the reload as needing a restart */
    ec__store(&l->max_connections, get_int(g, "max_connections", 0));
    ec__store(&l->idle_ns, (uint64_t)(get_double(g, "idle_timeout", 300.0) * 1e9));
    ec__store(&l->handshake_ns, (uint64_t)(get_double(g, "handshake_timeout", 10.0) * 1e9));
  }
}

int fw__listeners_open(void)
{
  const config_setting_t *sect = config_lookup(fw__config(), "listener");
  int n = sect ? config_setting_length(sect) : 0;
  int rc = 0, k = 0;

  shard__acceptors_reset();
  sessions_max = ec_config_get_int("limits.max_connections", 0);
  retry_ns = (uint64_t)(ec_config_get_double("limits.accept_retry_delay", 0.1) * 1e9);
  drain_ns = (uint64_t)(ec_config_get_double("shutdown.drain_timeout", 10.0) * 1e9);
  ec__store(&sessions_active, 0);
  if (n == 0)
    return 0;
  listeners = ec_malloc_size(MEMTYPE_CONFIG, sizeof(*listeners) * (size_t)n);
  if (listeners == NULL)
    return -ENOMEM;
  memset(listeners, 0, sizeof(*listeners) * (size_t)n);
  for (int i = 0; rc == 0 && i < n; i++) {
    const config_setting_t *g = config_setting_get_elem(sect, (unsigned)i);

    if (!get_bool(g, "enabled", 1))
      continue;
    rc = open_listener(g, k++);
  }
  return rc;
}

void fw__listeners_free(void)
{
  for (int i = 0; i < nlisteners; i++)
    listener_free(listeners[i]);
  ec_free(MEMTYPE_CONFIG, listeners);
  listeners = NULL;
  nlisteners = 0;
  pthread_mutex_lock(&reg_lock);
  for (int i = 0; i < nprotocols; i++) {
    ec_free(MEMTYPE_CONFIG, (void *)protocols[i].name);
    ec_free(MEMTYPE_CONFIG, (void *)protocols[i].busy_reply);
  }
  nprotocols = 0;
  pthread_mutex_unlock(&reg_lock);
}

int fw__listener_count(void)
{
  return nlisteners;
}

fw__listener *fw__listener_get(int index)
{
  return index >= 0 && index < nlisteners ? listeners[index] : NULL;
}

int fw__sessions_reserve(fw__listener *l)
{
  /* Counted first, checked after: two shards racing for the last slot cannot both win
   * (pairs with the decrements in fw__sessions_release). */
  int64_t all = ec__fetch_add(&sessions_active, 1) + 1;
  int64_t mine = ec__fetch_add(&l->active, 1) + 1;

  int64_t max_all = ec__load(&sessions_max), max_mine = ec__load(&l->max_connections);

  if ((max_all > 0 && all > max_all) || (max_mine > 0 && mine > max_mine)) {
    fw__sessions_release(l);
    return -EBUSY;
  }
  return 0;
}

void fw__sessions_release(fw__listener *l)
{
  ec__fetch_add(&sessions_active, -1);
  ec__fetch_add(&l->active, -1);
}

uint64_t fw__accept_retry_ns(void)
{
  return ec__load(&retry_ns); /* a reload may change it */
}

uint64_t fw__drain_ns(void)
{
  return ec__load(&drain_ns); /* a reload may change it */
}

uint64_t ec_sessions_active(void)
{
  int64_t v = ec__load(&sessions_active);

  return v > 0 ? (uint64_t)v : 0;
}

int ec_listener_stats_get(const char *name, ec_listener_stats *out)
{
  for (int i = 0; name != NULL && i < nlisteners; i++) {
    fw__listener *l = listeners[i];

    if (l == NULL || strcmp(l->name, name) != 0)
      continue;
    out->accepted = ec__load(&l->accepted);
    out->refused = ec__load(&l->refused);
    out->timeouts = ec__load(&l->timeouts);
    out->proxy_errors = ec__load(&l->proxy_errors);
    out->accept_pauses = ec__load(&l->pauses);
    out->active = (uint64_t)ec__load(&l->active);
    return 0;
  }
  return -ENOENT;
}
