/*
 * test/test_listener.c - listeners, acceptors and sessions (framework/listener.c,
 * shard/acceptor.c) over real loopback sockets: spreading over shards, hand-off mode,
 * connection limits, the accept hook, idle and handshake timeouts, the PROXY protocol,
 * graceful drain, Unix and IPv6 listeners, configuration errors.
 *
 * The "probe" protocol greets each connection with "HELLO shard=N peer=ADDR proxied=P\n",
 * echoes what it reads, and answers E_TIMEOUT with "BYE\n" before closing.
 */
#include "unit.h"

#include "event.h"
#include "scheduler.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/un.h>

static int refuse_all;

static int probe_cb(Event *e, int type, void *closure, struct timeval *now)
{
  char buf[512];
  int need, n;

  if (type & E_TIMEOUT) {
    event_write(e, "BYE\n", 4, &need);
    event_close(e);
    return 0;
  }
  n = event_read(e, buf, sizeof(buf), &need);
  if (n < 0 && errno == EAGAIN)
    return need;
  if (n <= 0) {
    event_close(e);
    return 0;
  }
  event_write(e, buf, n, &need); /* small lines: the socket buffer takes them */
  return E_READ;
}

static int probe_start(Event *e, const ec_accept_info *info, void *closure)
{
  char line[256], addr[INET6_ADDRSTRLEN] = "?";
  int port = 0, need;

  if (info->peer.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&info->peer;

    inet_ntop(AF_INET, &a->sin_addr, addr, sizeof(addr));
    port = ntohs(a->sin_port);
  } else if (info->peer.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&info->peer;

    inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof(addr));
    port = ntohs(a->sin6_port);
  } else if (info->peer.ss_family == AF_UNIX) {
    strcpy(addr, "unix");
  }
  snprintf(line, sizeof(line), "HELLO shard=%d peer=%s:%d proxied=%d\n", info->shard, addr, port,
           info->proxied);
  e->callback = probe_cb;
  if (event_write(e, line, (int)strlen(line), &need) < 0) {
    event_close(e);
    return 0;
  }
  return E_READ;
}

static int probe_hook(const ec_accept_info *info, void *closure)
{
  return __atomic_load_n(&refuse_all, __ATOMIC_ACQUIRE);
}

/* Starts the framework with `shards` shards, the probe protocol and the given
 * configuration text; the harness's --set overrides (the poller) still apply. */
static int start_cfg(int shards, const char *text)
{
  ec_framework_options o = unit_options(shards);
  ec_protocol p = {.name = "probe",
                   .session_start = probe_start,
                   .accept_hook = probe_hook,
                   .busy_reply = "BUSY\r\n"};
  int rc;

  o.config_text = text;
  rc = ec_framework_init(&o);
  if (rc < 0)
    return rc;
  if (ec_protocol_register(&p) < 0)
    return -1;
  rc = ec_framework_start();
  return rc;
}

static void finish(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
}

static int connect_to(int family, const char *addr, int port)
{
  struct sockaddr_storage ss = {0};
  socklen_t len;
  int fd = socket(family, SOCK_STREAM, 0);

  if (family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;

    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, addr, &a->sin_addr);
    len = sizeof(*a);
  } else if (family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, addr, &a->sin6_addr);
    len = sizeof(*a);
  } else {
    struct sockaddr_un *a = (struct sockaddr_un *)&ss;

    a->sun_family = AF_UNIX;
    snprintf(a->sun_path, sizeof(a->sun_path), "%s", addr);
    len = sizeof(*a);
  }
  if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Reads one line (up to '\n') within 5 s; returns its length, 0 on EOF, -1 on timeout. */
static int read_line(int fd, char *buf, size_t len)
{
  size_t got = 0;

  while (got + 1 < len) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, 5000) != 1)
      return -1;
    n = read(fd, buf + got, 1);
    if (n <= 0)
      return got > 0 ? (int)got : (int)n;
    if (buf[got++] == '\n')
      break;
  }
  buf[got] = '\0';
  return (int)got;
}

static int expect_eof(int fd)
{
  char c;
  struct pollfd p = {.fd = fd, .events = POLLIN};

  return poll(&p, 1, 5000) == 1 && read(fd, &c, 1) <= 0;
}

/* ---- spreading connections ---------------------------------------------------------------- */

static void spread(const char *mode)
{
  char cfg[512], line[256];
  int port = unit_free_port(), fds[64], seen[2] = {0, 0};
  ec_listener_stats st;

  snprintf(cfg, sizeof(cfg),
           "listener = { p = { listen = \"127.0.0.1:%d\"; protocol = \"probe\"; "
           "accept_mode = \"%s\"; }; };",
           port, mode);
  ASSERT_EQ(start_cfg(2, cfg), 0);
  for (int i = 0; i < 64; i++) {
    int shard = -1;

    fds[i] = connect_to(AF_INET, "127.0.0.1", port);
    ASSERT_TRUE(fds[i] >= 0);
    ASSERT_TRUE(read_line(fds[i], line, sizeof(line)) > 0);
    ASSERT_EQ(sscanf(line, "HELLO shard=%d", &shard), 1);
    ASSERT_TRUE(shard == 0 || shard == 1);
    seen[shard]++;
  }
  ASSERT_TRUE(seen[0] > 0); /* every shard accepted (or was handed) connections */
  ASSERT_TRUE(seen[1] > 0);
  ASSERT_EQ(ec_listener_stats_get("p", &st), 0);
  ASSERT_UEQ(st.accepted, 64);
  ASSERT_UEQ(st.active, 64);
  ASSERT_UEQ(ec_sessions_active(), 64);
  ASSERT_EQ(write(fds[0], "ping\n", 5), 5);
  ASSERT_EQ(read_line(fds[0], line, sizeof(line)), 5);
  ASSERT_STR_EQ(line, "ping\n");
  for (int i = 0; i < 64; i++)
    close(fds[i]);
  for (int i = 0; i < 5000 && ec_sessions_active() != 0; i++)
    usleep(1000);
  ASSERT_UEQ(ec_sessions_active(), 0); /* event_close ended every session */
  finish();
}

static void t_spread_reuseport(void)
{
  spread("reuseport");
}

static void t_spread_single_acceptor(void)
{
  spread("single");
}

/* ---- limits and the accept hook ----------------------------------------------------------- */

static void t_connection_limits(void)
{
  char cfg[512], line[256];
  int port = unit_free_port(), fds[4], extra;
  ec_listener_stats st;

  snprintf(cfg, sizeof(cfg),
           "listener = { p = { listen = \"127.0.0.1:%d\"; protocol = \"probe\"; "
           "max_connections = 3; }; };",
           port);
  ASSERT_EQ(start_cfg(2, cfg), 0);
  for (int i = 0; i < 3; i++) {
    fds[i] = connect_to(AF_INET, "127.0.0.1", port);
    ASSERT_TRUE(read_line(fds[i], line, sizeof(line)) > 0);
    ASSERT_EQ(strncmp(line, "HELLO", 5), 0);
  }
  fds[3] = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_TRUE(read_line(fds[3], line, sizeof(line)) > 0);
  ASSERT_STR_EQ(line, "BUSY\r\n"); /* the protocol's refusal, then the close */
  ASSERT_TRUE(expect_eof(fds[3]));
  close(fds[3]);
  close(fds[0]); /* frees a slot */
  for (int i = 0; i < 5000; i++) {
    ec_listener_stats_get("p", &st);
    if (st.active == 2)
      break;
    usleep(1000);
  }
  extra = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_TRUE(read_line(extra, line, sizeof(line)) > 0);
  ASSERT_EQ(strncmp(line, "HELLO", 5), 0);
  ASSERT_EQ(ec_listener_stats_get("p", &st), 0);
  ASSERT_UEQ(st.refused, 1);
  /* The accept hook refuses early, with the same reply. */
  __atomic_store_n(&refuse_all, 1, __ATOMIC_RELEASE);
  close(fds[1]);
  usleep(50000);
  fds[3] = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_TRUE(read_line(fds[3], line, sizeof(line)) > 0);
  ASSERT_STR_EQ(line, "BUSY\r\n");
  __atomic_store_n(&refuse_all, 0, __ATOMIC_RELEASE);
  close(fds[3]);
  close(fds[2]);
  close(extra);
  finish();
}

static void t_process_wide_limit(void)
{
  char cfg[512], line[256];
  int port = unit_free_port(), a, b, c;

  snprintf(cfg, sizeof(cfg),
           "limits = { max_connections = 2; };\n"
           "listener = { p = { listen = \"127.0.0.1:%d\"; protocol = \"probe\"; }; };",
           port);
  ASSERT_EQ(start_cfg(1, cfg), 0);
  a = connect_to(AF_INET, "127.0.0.1", port);
  b = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_TRUE(read_line(a, line, sizeof(line)) > 0);
  ASSERT_TRUE(read_line(b, line, sizeof(line)) > 0);
  c = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_TRUE(read_line(c, line, sizeof(line)) > 0);
  ASSERT_STR_EQ(line, "BUSY\r\n");
  close(a);
  close(b);
  close(c);
  finish();
}

/* ---- timeouts ----------------------------------------------------------------------------- */

static void t_idle_timeout(void)
{
  char cfg[512], line[256];
  int port = unit_free_port(), fd;
  ec_listener_stats st;

  snprintf(cfg, sizeof(cfg),
           "listener = { p = { listen = \"127.0.0.1:%d\"; protocol = \"probe\"; "
           "idle_timeout = 0.5; }; };",
           port);
  ASSERT_EQ(start_cfg(1, cfg), 0);
  fd = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_TRUE(read_line(fd, line, sizeof(line)) > 0);
  /* Activity keeps the session: 10 lines 50 ms apart span longer than the timeout. */
  for (int i = 0; i < 10; i++) {
    usleep(50000);
    ASSERT_EQ(write(fd, "x\n", 2), 2);
    ASSERT_EQ(read_line(fd, line, sizeof(line)), 2);
  }
  /* Then silence: E_TIMEOUT reaches the protocol, which says BYE and closes. */
  ASSERT_TRUE(read_line(fd, line, sizeof(line)) > 0);
  ASSERT_STR_EQ(line, "BYE\n");
  ASSERT_TRUE(expect_eof(fd));
  ASSERT_EQ(ec_listener_stats_get("p", &st), 0);
  ASSERT_UEQ(st.timeouts, 1);
  close(fd);
  finish();
}

/* ---- the PROXY protocol ------------------------------------------------------------------- */

static void t_proxy_protocol(void)
{
  static const unsigned char v2[] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49,
                                     0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c, 10,   9,    8,    7,
                                     127,  0,    0,    1,    0x30, 0x39, 0x1f, 0x90};
  char cfg[512], line[256];
  int port = unit_free_port(), fd;
  ec_listener_stats st;

  snprintf(cfg, sizeof(cfg),
           "listener = { p = { listen = \"127.0.0.1:%d\"; protocol = \"probe\"; "
           "proxy_protocol = true; handshake_timeout = 0.5; }; };",
           port);
  ASSERT_EQ(start_cfg(2, cfg), 0);
  /* v1, in two pieces, with payload right behind the header. */
  fd = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_EQ(write(fd, "PROXY TCP4 192.0.2.1 ", 21), 21);
  usleep(20000);
  ASSERT_EQ(write(fd, "198.51.100.7 4242 80\r\nafter\n", 28), 28);
  ASSERT_TRUE(read_line(fd, line, sizeof(line)) > 0);
  ASSERT_TRUE(strstr(line, " peer=192.0.2.1:4242 proxied=1\n") != NULL);
  ASSERT_EQ(read_line(fd, line, sizeof(line)), 6);
  ASSERT_STR_EQ(line, "after\n");
  close(fd);
  fd = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_EQ(write(fd, v2, sizeof(v2)), (ssize_t)sizeof(v2));
  ASSERT_EQ(write(fd, "after\n", 6), 6);
  ASSERT_TRUE(read_line(fd, line, sizeof(line)) > 0);
  ASSERT_TRUE(strstr(line, " peer=10.9.8.7:12345 proxied=1\n") != NULL);
  ASSERT_EQ(read_line(fd, line, sizeof(line)), 6); /* payload after the header intact */
  ASSERT_STR_EQ(line, "after\n");
  close(fd);
  /* Malformed: closed without a greeting. */
  fd = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_EQ(write(fd, "GET / HTTP/1.0\r\n\r\n", 18), 18);
  ASSERT_TRUE(expect_eof(fd));
  close(fd);
  /* Nothing at all: the handshake timeout closes it. */
  fd = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_TRUE(expect_eof(fd));
  close(fd);
  /* Half a header, trickled: the deadline counts from accept, not from the last byte. */
  fd = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_EQ(write(fd, "PROXY TCP4 ", 11), 11);
  usleep(300000);
  ASSERT_EQ(write(fd, "1", 1), 1);
  ASSERT_TRUE(expect_eof(fd));
  close(fd);
  ASSERT_EQ(ec_listener_stats_get("p", &st), 0);
  ASSERT_UEQ(st.proxy_errors, 3);
  finish();
}

/* ---- graceful stop ------------------------------------------------------------------------ */

static void t_graceful_drain(void)
{
  char cfg[512], line[256];
  int port = unit_free_port(), fd, late = 0;

  snprintf(cfg, sizeof(cfg),
           "shutdown = { drain_timeout = 30.0; };\n"
           "listener = { p = { listen = \"127.0.0.1:%d\"; protocol = \"probe\"; }; };",
           port);
  ASSERT_EQ(start_cfg(2, cfg), 0);
  fd = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_TRUE(read_line(fd, line, sizeof(line)) > 0);
  ec_framework_stop();
  ASSERT_TRUE(ec_framework_stopping());
  /* The listeners close at once: new connections are refused... */
  for (int i = 0; i < 5000; i++) {
    late = connect_to(AF_INET, "127.0.0.1", port);
    if (late < 0)
      break;
    close(late);
    usleep(1000);
  }
  ASSERT_EQ(late, -1);
  /* ...while the open session is still served. */
  ASSERT_EQ(write(fd, "still\n", 6), 6);
  ASSERT_EQ(read_line(fd, line, sizeof(line)), 6);
  close(fd); /* the last session ends: the shards finish */
  ASSERT_EQ(ec_framework_join(), 0);
}

static void t_drain_deadline(void)
{
  char cfg[512], line[256];
  int port = unit_free_port(), fd;

  snprintf(cfg, sizeof(cfg),
           "shutdown = { drain_timeout = 0.3; };\n"
           "listener = { p = { listen = \"127.0.0.1:%d\"; protocol = \"probe\"; }; };",
           port);
  ASSERT_EQ(start_cfg(1, cfg), 0);
  fd = connect_to(AF_INET, "127.0.0.1", port);
  ASSERT_TRUE(read_line(fd, line, sizeof(line)) > 0);
  ec_framework_stop();
  ASSERT_EQ(ec_framework_join(), 0); /* the session never ends by itself */
  ASSERT_TRUE(read_line(fd, line, sizeof(line)) > 0);
  ASSERT_STR_EQ(line, "BYE\n"); /* it was told, with E_TIMEOUT */
  ASSERT_TRUE(expect_eof(fd));
  close(fd);
}

/* ---- other address families, configuration errors ------------------------------------------ */

static void t_unix_and_ipv6(void)
{
  char cfg[512], line[256], path[64];
  int port = unit_free_port(), fd, v6;

  snprintf(path, sizeof(path), "/tmp/ecshard-test-%d.sock", (int)getpid());
  v6 = socket(AF_INET6, SOCK_STREAM, 0) >= 0; /* leaks one fd in the test; fine */
  snprintf(cfg, sizeof(cfg),
           "listener = { u = { listen = \"unix:%s\"; protocol = \"probe\"; };\n"
           "             s = { listen = [ \"[::1]:%d\" ]; protocol = \"probe\"; enabled = %s; "
           "}; };",
           path, port, v6 ? "true" : "false");
  ASSERT_EQ(start_cfg(2, cfg), 0);
  fd = connect_to(AF_UNIX, path, 0);
  ASSERT_TRUE(fd >= 0);
  ASSERT_TRUE(read_line(fd, line, sizeof(line)) > 0);
  ASSERT_TRUE(strstr(line, "peer=unix") != NULL);
  close(fd);
  if (v6 && (fd = connect_to(AF_INET6, "::1", port)) >= 0) {
    ASSERT_TRUE(read_line(fd, line, sizeof(line)) > 0);
    ASSERT_TRUE(strstr(line, "peer=::1:") != NULL);
    close(fd);
  }
  finish();
  ASSERT_TRUE(access(path, F_OK) < 0); /* the socket file is removed at shutdown */
}

static void t_config_errors(void)
{
  ec_framework_options o = unit_options(1);
  char cfg[512];

  /* A bad address is a configuration error with file and line. */
  o.config_text =
      "listener = {\n  p = { listen = \"127.0.0.1:99999\"; protocol = \"probe\"; };\n};";
  ASSERT_EQ(ec_framework_init(&o), -EINVAL);
  o.config_text = "listener = { p = { protocol = \"probe\"; }; };"; /* listen is required */
  ASSERT_EQ(ec_framework_init(&o), -EINVAL);
  /* An unknown protocol is found when the listeners open. */
  snprintf(cfg, sizeof(cfg),
           "listener = { p = { listen = \"127.0.0.1:%d\"; protocol = \"nonesuch\"; }; };",
           unit_free_port());
  ASSERT_EQ(start_cfg(1, cfg), -EINVAL);
  ASSERT_EQ(ec_framework_join(), 0);
  /* A port in use fails the start too. */
  {
    int busy = socket(AF_INET, SOCK_STREAM, 0), port = unit_free_port();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(busy, (struct sockaddr *)&a, sizeof(a)), 0);
    ASSERT_EQ(listen(busy, 1), 0);
    snprintf(cfg, sizeof(cfg),
             "listener = { p = { listen = \"127.0.0.1:%d\"; protocol = \"probe\"; }; };", port);
    ASSERT_EQ(start_cfg(1, cfg), -EADDRINUSE);
    ASSERT_EQ(ec_framework_join(), 0);
    close(busy);
  }
}

static const unit_test tests[] = {
    UNIT_TEST(t_spread_reuseport),
    UNIT_TEST(t_spread_single_acceptor),
    UNIT_TEST(t_connection_limits),
    UNIT_TEST(t_process_wide_limit),
    UNIT_TEST(t_idle_timeout),
    UNIT_TEST(t_proxy_protocol),
    UNIT_TEST(t_graceful_drain),
    UNIT_TEST(t_drain_deadline),
    UNIT_TEST(t_unix_and_ipv6),
    UNIT_TEST(t_config_errors),
    {NULL, NULL},
};

UNIT_MAIN("listener", tests)
