/*
 * test/test_event_io.c - the buffered I/O helpers (framework/event_io.c): whole writes
 * that survive partial writes and stack buffers, gathering, exact reads across many
 * segments, strings, printf, errors. First against a scripted opset (every partial path
 * on demand, the way a TLS opset would sit underneath), then on running shards over
 * sockets with tiny buffers.
 */
#include "io_fake.h"

#include "scheduler.h"

#include <pthread.h>

/* ---- against the scripted opset ----------------------------------------------------------- */

typedef struct fx {
  fake_io f;
  Event *e;
  int fd;
  event_io_state st;
  int64_t live0; /* MEMTYPE_BUF_STORAGE objects before the test */
} fx;

static int fx_open(fx *x, event_io_opset *ops)
{
  memset(x, 0, sizeof(*x));
  x->live0 = unit_live(MEMTYPE_BUF_STORAGE);
  x->e = fake_event(&x->f, ops, &x->fd);
  return x->e != NULL ? 0 : -1;
}

static void fx_close(fx *x)
{
  event_io_state_clean(&x->st);
  fake_event_free(x->e, x->fd);
  fake_free(&x->f);
}

/* Everything fits: DONE at once, needmask 0, no copy kept. */
static void t_write_done(void)
{
  fx x;

  ASSERT_EQ(fx_open(&x, &fake_ops), 0);
  x.f.room = 100;
  ASSERT_EQ(event_io_write(x.e, "hello\r\n", 7, &x.st), EVENT_IO_DONE);
  ASSERT_EQ(x.st.needmask, 0);
  ASSERT_EQ(x.f.out_len, 7);
  ASSERT_EQ(memcmp(x.f.out, "hello\r\n", 7), 0);
  ASSERT_NULL(x.st.buf);                                /* went out from the caller's buffer */
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_DONE); /* nothing pending */
  ASSERT_EQ(x.st.needmask, 0);
  ASSERT_EQ(event_io_write(x.e, "", 0, &x.st), EVENT_IO_DONE);
  ASSERT_EQ(x.f.writes + x.f.writevs, 1); /* the empty write made no call */
  fx_close(&x);
}

/* The seed's third sample, step by step: PENDING with needmask, the caller's (stack)
 * buffer scribbled over, retries until DONE, then needmask 0 and a fresh write. */
static void t_write_partial_retry(void)
{
  char stackbuf[1000];
  fx x;

  ASSERT_EQ(fx_open(&x, &fake_ops), 0);
  pattern_fill((unsigned char *)stackbuf, 0, sizeof(stackbuf));
  x.f.room = 300;
  ASSERT_EQ(event_io_write(x.e, stackbuf, sizeof(stackbuf), &x.st), EVENT_IO_PENDING);
  ASSERT_EQ(x.st.needmask, E_WRITE);
  ASSERT_EQ(ec_event_io_pending(&x.st), 700);
  memset(stackbuf, 'X', sizeof(stackbuf));                 /* the caller's buffer is gone */
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_PENDING); /* no room: EAGAIN */
  ASSERT_EQ(x.st.needmask, E_WRITE);
  x.f.room = 500;
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_PENDING);
  ASSERT_EQ(ec_event_io_pending(&x.st), 200);
  x.f.room = 1000;
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_DONE);
  ASSERT_EQ(x.st.needmask, 0);
  ASSERT_EQ(x.f.out_len, 1000);
  ASSERT_EQ(pattern_check((unsigned char *)x.f.out, 0, 1000), -1);
  /* A TLS-like opset that needs E_READ to write: reported as is. */
  x.f.room = 0;
  x.f.need = E_READ;
  ASSERT_EQ(event_io_write(x.e, "abc", 3, &x.st), EVENT_IO_PENDING);
  ASSERT_EQ(x.st.needmask, E_READ);
  x.f.room = 10;
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_DONE);
  ASSERT_EQ(memcmp(x.f.out + 1000, "abc", 3), 0);
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), x.live0);
}

/* Writes while output is pending are appended in order and go out with one gathered
 * write; ec_event_io_queue queues without any I/O. */
static void t_gathering(void)
{
  fx x;

  ASSERT_EQ(fx_open(&x, &fake_ops), 0);
  x.f.room = 2;
  ASSERT_EQ(event_io_write(x.e, "250 one\r\n", 9, &x.st), EVENT_IO_PENDING);
  ASSERT_EQ(x.f.writes, 1);
  x.f.room = 0;
  ASSERT_EQ(event_io_write(x.e, "250 two\r\n", 9, &x.st), EVENT_IO_PENDING);
  ASSERT_EQ(x.f.writevs, 1);
  ASSERT_EQ(x.f.last_iovcnt, 2); /* pending + new in one call */
  ASSERT_EQ(event_io_printf(x.e, &x.st, "250 %s\r\n", "three"), EVENT_IO_PENDING);
  ASSERT_EQ(ec_event_io_pending(&x.st), 7 + 9 + 11);
  ASSERT_EQ(ec_event_io_queue(&x.st, "250 four\r\n", 10), EVENT_IO_PENDING);
  ASSERT_EQ(x.st.needmask, E_WRITE);
  ASSERT_EQ(x.f.writes + x.f.writevs, 3); /* queueing made no call */
  x.f.room = 1 << 20;
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_DONE);
  ASSERT_EQ(x.f.writes + x.f.writevs, 4); /* everything in one */
  ASSERT_EQ(x.f.out_len, 39);
  ASSERT_EQ(memcmp(x.f.out, "250 one\r\n250 two\r\n250 three\r\n250 four\r\n", 39), 0);
  /* Queue into an idle state, then one write for all. */
  ASSERT_EQ(ec_event_io_queue(&x.st, "a", 1), EVENT_IO_PENDING);
  ASSERT_EQ(ec_event_io_queue(&x.st, "b", 1), EVENT_IO_PENDING);
  ASSERT_EQ(event_io_write(x.e, "c", 1, &x.st), EVENT_IO_DONE);
  ASSERT_EQ(x.f.writes + x.f.writevs, 5);
  ASSERT_EQ(memcmp(x.f.out + 39, "abc", 3), 0);
  ASSERT_EQ(ec_event_io_queue(&x.st, NULL, 0), EVENT_IO_DONE);
  fx_close(&x);

  /* An opset without event_writev: piece by piece, order kept, stops at a short write. */
  ASSERT_EQ(fx_open(&x, &fake_ops_no_writev), 0);
  x.f.room = 3;
  ASSERT_EQ(event_io_write(x.e, "12345", 5, &x.st), EVENT_IO_PENDING);
  x.f.room = 4;
  ASSERT_EQ(event_io_write(x.e, "67890", 5, &x.st), EVENT_IO_PENDING);
  ASSERT_EQ(x.f.writevs, 0);
  x.f.room = 100;
  ASSERT_EQ(event_io_write(x.e, "ab", 2, &x.st), EVENT_IO_DONE);
  ASSERT_EQ(x.f.out_len, 12);
  ASSERT_EQ(memcmp(x.f.out, "1234567890ab", 12), 0);
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), x.live0);
}

/* Errors: the pending output is dropped and the state can be cleaned (or reused). */
static void t_write_errors(void)
{
  fx x;

  ASSERT_EQ(fx_open(&x, &fake_ops), 0);
  x.f.room = 10;
  ASSERT_EQ(event_io_write(x.e, "0123456789abcdef", 16, &x.st), EVENT_IO_PENDING);
  x.f.wr_err = ECONNRESET;
  errno = 0;
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_ERROR);
  ASSERT_EQ(errno, ECONNRESET);
  ASSERT_EQ(x.st.needmask, 0);
  ASSERT_EQ(ec_event_io_pending(&x.st), 0);
  x.f.wr_err = 0;
  x.f.room = 100;
  ASSERT_EQ(event_io_write(x.e, "ok", 2, &x.st), EVENT_IO_DONE); /* reusable */
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), x.live0);
}

static void t_bad_arguments(void)
{
  event_io_state garbage;
  char buf[8];
  fx x;

  ASSERT_EQ(fx_open(&x, &fake_ops), 0);
  errno = 0;
  ASSERT_EQ(event_io_write(x.e, "a", 1, NULL), EVENT_IO_ERROR);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(event_io_write(NULL, "a", 1, &x.st), EVENT_IO_ERROR);
  ASSERT_EQ(event_io_write(x.e, NULL, 1, &x.st), EVENT_IO_ERROR);
  ASSERT_EQ(event_io_write(x.e, "a", -1, &x.st), EVENT_IO_ERROR);
  ASSERT_EQ(event_io_read(x.e, buf, -1, &x.st), EVENT_IO_ERROR);
  ASSERT_EQ(event_io_retry(x.e, NULL), EVENT_IO_ERROR);
  ASSERT_EQ(event_io_printf(x.e, NULL, "x"), EVENT_IO_ERROR);
  ASSERT_EQ(event_io_write_string(x.e, (string *)NULL, &x.st), EVENT_IO_ERROR);
  memset(&garbage, 0x5a, sizeof(garbage)); /* never initialised */
  errno = 0;
  ASSERT_EQ(event_io_write(x.e, "a", 1, &garbage), EVENT_IO_ERROR);
  ASSERT_EQ(errno, EINVAL);
  /* One operation per state: a read while a write is pending and vice versa. */
  x.f.room = 0;
  ASSERT_EQ(event_io_write(x.e, "abc", 3, &x.st), EVENT_IO_PENDING);
  errno = 0;
  ASSERT_EQ(event_io_read(x.e, buf, 4, &x.st), EVENT_IO_ERROR);
  ASSERT_EQ(errno, EBUSY);
  ASSERT_EQ(ec_event_io_pending(&x.st), 3); /* untouched */
  event_io_state_clean(&x.st);
  ASSERT_NULL(x.st.buf);
  event_io_state_clean(&x.st); /* twice is fine */
  event_io_state_clean(NULL);
  fake_feeds(&x.f, "ab");
  ASSERT_EQ(event_io_read(x.e, buf, 4, &x.st), EVENT_IO_PENDING);
  ASSERT_EQ(event_io_write(x.e, "a", 1, &x.st), EVENT_IO_ERROR);
  ASSERT_EQ(errno, EBUSY);
  ASSERT_EQ(event_io_read(x.e, buf, 5, &x.st), EVENT_IO_ERROR); /* another length */
  ASSERT_EQ(errno, EINVAL);
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), x.live0);
}

/* Exact reads: PENDING until the last byte, into the buffer of the latest call; EOF
 * before it; event_io_retry leaves the bytes in the state. */
static void t_read_exact(void)
{
  char a[64], b[64];
  fx x;

  ASSERT_EQ(fx_open(&x, &fake_ops), 0);
  fake_feeds(&x.f, "0123456789");
  x.f.max_read = 3;
  ASSERT_EQ(event_io_read(x.e, a, 10, &x.st), EVENT_IO_DONE); /* all there: no copy */
  ASSERT_EQ(memcmp(a, "0123456789", 10), 0);
  ASSERT_NULL(x.st.buf);
  ASSERT_EQ(x.st.needmask, 0);

  fake_feeds(&x.f, "abcd");
  memset(a, 0, sizeof(a));
  ASSERT_EQ(event_io_read(x.e, a, 12, &x.st), EVENT_IO_PENDING);
  ASSERT_EQ(x.st.needmask, E_READ);
  fake_feeds(&x.f, "efgh");
  memset(b, 0, sizeof(b));
  ASSERT_EQ(event_io_read(x.e, b, 12, &x.st), EVENT_IO_PENDING); /* another buffer */
  fake_feeds(&x.f, "ijkl");
  memset(a, '-', sizeof(a));
  ASSERT_EQ(event_io_read(x.e, a, 12, &x.st), EVENT_IO_DONE);
  ASSERT_EQ(memcmp(a, "abcdefghijkl", 12), 0);
  ASSERT_EQ(a[12], '-'); /* not a byte more */
  ASSERT_EQ(x.st.needmask, 0);

  fake_feeds(&x.f, "xy");
  ASSERT_EQ(event_io_read(x.e, a, 4, &x.st), EVENT_IO_PENDING);
  fake_feeds(&x.f, "zw");
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_DONE);
  ASSERT_EQ(x.st.needmask, 0);
  ASSERT_EQ(x.st.buflen, 4);
  ASSERT_EQ(memcmp(x.st.buf, "xyzw", 4), 0);

  fake_feeds(&x.f, "tail");
  x.f.eof = 1;
  ASSERT_EQ(event_io_read(x.e, a, 8, &x.st), EVENT_IO_EOF);
  ASSERT_EQ(x.st.offset, 4);
  ASSERT_EQ(memcmp(a, "tail", 4), 0);
  ASSERT_EQ(x.st.needmask, 0);
  ASSERT_EQ(event_io_read(x.e, a, 8, &x.st), EVENT_IO_EOF);
  ASSERT_EQ(x.st.offset, 0);
  x.f.rd_err = ECONNRESET;
  ASSERT_EQ(event_io_read(x.e, a, 8, &x.st), EVENT_IO_ERROR);
  ASSERT_EQ(errno, ECONNRESET);
  ASSERT_EQ(event_io_read(x.e, a, 0, &x.st), EVENT_IO_DONE);
  fx_close(&x);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), x.live0);
}

/* Strings: by pointer and by value; calling again with the same string continues; after
 * DONE the same string is written again in full; a different string is appended. */
static void t_write_string(void)
{
  string s, t;
  fx x;

  ASSERT_EQ(fx_open(&x, &fake_ops), 0);
  ASSERT_EQ(string_init_type(&s, 16, STRING_TYPE_ECSTRING), 1);
  ASSERT_EQ(string_init_type(&t, 16, STRING_TYPE_ECSTRING), 1);
  ASSERT_NOT_NULL(stringprintf(&s, "%s", "0123456789"));
  ASSERT_NOT_NULL(stringprintf(&t, "%s", "TT"));
  x.f.room = 4;
  ASSERT_EQ(event_io_write_string(x.e, s, &x.st), EVENT_IO_PENDING); /* by value */
  x.f.room = 3;
  ASSERT_EQ(event_io_write_string(x.e, s, &x.st), EVENT_IO_PENDING); /* continues */
  ASSERT_EQ(x.f.out_len, 7);
  x.f.room = 100;
  ASSERT_EQ(event_io_write_string(x.e, &s, &x.st), EVENT_IO_DONE); /* by pointer, too */
  ASSERT_EQ(x.f.out_len, 10);
  ASSERT_EQ(memcmp(x.f.out, "0123456789", 10), 0);
  ASSERT_EQ(x.st.needmask, 0);
  x.f.room = 5;
  ASSERT_EQ(event_io_write_string(x.e, s, &x.st), EVENT_IO_PENDING); /* a fresh write */
  ASSERT_EQ(event_io_write_string(x.e, t, &x.st), EVENT_IO_PENDING); /* appended */
  x.f.room = 100;
  ASSERT_EQ(event_io_write_string(x.e, t, &x.st), EVENT_IO_DONE); /* continues */
  ASSERT_EQ(x.f.out_len, 22);
  ASSERT_EQ(memcmp(x.f.out, "01234567890123456789TT", 22), 0);
  string_destroy(&s);
  string_destroy(&t);
  fx_close(&x);
}

static void t_printf(void)
{
  char big[9000];
  fx x;

  ASSERT_EQ(fx_open(&x, &fake_ops), 0);
  x.f.room = 1 << 20;
  ASSERT_EQ(event_io_printf(x.e, &x.st, "%d %s\r\n", 250, "OK"), EVENT_IO_DONE);
  ASSERT_EQ(x.f.out_len, 8);
  ASSERT_EQ(memcmp(x.f.out, "250 OK\r\n", 8), 0);
  memset(big, 'b', sizeof(big));
  big[8191] = '\0'; /* 8191 characters: fits with the NUL */
  ASSERT_EQ(event_io_printf(x.e, &x.st, "%s", big), EVENT_IO_DONE);
  ASSERT_EQ(x.f.out_len, 8 + 8191);
  big[8191] = 'b';
  big[8192] = '\0'; /* 8192: does not */
  errno = 0;
  ASSERT_EQ(event_io_printf(x.e, &x.st, "%s", big), EVENT_IO_ERROR);
  ASSERT_EQ(errno, EMSGSIZE);
  ASSERT_EQ(x.f.out_len, 8 + 8191); /* nothing written */
  fx_close(&x);
}

/* A state keeps a small buffer for the next operation, not a huge one. */
static void t_buffer_reuse(void)
{
  char *big = malloc(1 << 20);
  char *kept;
  fx x;

  ASSERT_NOT_NULL(big);
  ASSERT_EQ(fx_open(&x, &fake_ops), 0);
  x.f.room = 10;
  ASSERT_EQ(event_io_write(x.e, big, 1000, &x.st), EVENT_IO_PENDING);
  kept = x.st.buf;
  ASSERT_NOT_NULL(kept);
  x.f.room = 1 << 30;
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_DONE);
  ASSERT_PTR_EQ(x.st.buf, kept);
  x.f.room = 10;
  ASSERT_EQ(event_io_write(x.e, big, 1000, &x.st), EVENT_IO_PENDING);
  ASSERT_PTR_EQ(x.st.buf, kept); /* re-used */
  x.f.room = 1 << 30;
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_DONE);
  x.f.room = 10;
  ASSERT_EQ(event_io_write(x.e, big, 1 << 20, &x.st), EVENT_IO_PENDING);
  ASSERT_GE(x.st.bufsize, (1 << 20) - 10);
  x.f.room = 1 << 30;
  ASSERT_EQ(event_io_retry(x.e, &x.st), EVENT_IO_DONE);
  ASSERT_NULL(x.st.buf); /* a megabyte is not kept */
  fx_close(&x);
  free(big);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), x.live0);
}

/* Plain descriptors: gathered writes with sendmsg on sockets, writev on pipes. */
static void t_plain_descriptors(void)
{
  event_io_state st = {0};
  int p[2], sp[2], fl;
  char buf[64];
  Event *e;

  ASSERT_EQ(pipe(p), 0);
  fl = fcntl(p[1], F_GETFL);
  fcntl(p[1], F_SETFL, fl | O_NONBLOCK);
  e = build_fd_event(p[1], E_WRITE, 0, fake_never_cb, NULL);
  ASSERT_EQ(ec_event_io_queue(&st, "pi", 2), EVENT_IO_PENDING);
  ASSERT_EQ(event_io_write(e, "pe", 2, &st), EVENT_IO_DONE); /* writev(2) of 2 pieces */
  ASSERT_EQ(read(p[0], buf, sizeof(buf)), 4);
  ASSERT_EQ(memcmp(buf, "pipe", 4), 0);
  event_free(e);
  close(p[0]);
  close(p[1]);

  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp), 0);
  e = build_fd_event(sp[0], E_WRITE, 0, fake_never_cb, NULL);
  ASSERT_EQ(ec_event_io_queue(&st, "soc", 3), EVENT_IO_PENDING);
  ASSERT_EQ(event_io_write(e, "ket", 3, &st), EVENT_IO_DONE);
  ASSERT_EQ(read(sp[1], buf, sizeof(buf)), 6);
  ASSERT_EQ(memcmp(buf, "socket", 6), 0);
  ASSERT_EQ(write(sp[1], "exact", 5), 5);
  ASSERT_EQ(event_io_read(e, buf, 5, &st), EVENT_IO_DONE);
  ASSERT_EQ(memcmp(buf, "exact", 5), 0);
  event_free(e);
  close(sp[0]);
  close(sp[1]);
  event_io_state_clean(&st);
}

/* ---- on the shards, over real sockets ----------------------------------------------------- */

static int sv[2] = {-1, -1};

static void start_shards(void)
{
  ec_framework_options o = unit_options(2);

  CU_ASSERT_EQUAL_FATAL(ec_framework_init(&o), 0);
  CU_ASSERT_EQUAL_FATAL(ec_framework_start(), 0);
}

static void stop_shards(void)
{
  ec_framework_stop();
  CU_ASSERT_EQUAL(ec_framework_join(), 0);
  for (int i = 0; i < 2; i++) {
    if (sv[i] >= 0 && fcntl(sv[i], F_GETFD) >= 0)
      close(sv[i]);
    sv[i] = -1;
  }
}

/* A writer that sends `total` pattern bytes in pieces of varying size from a stack
 * buffer, appending while output is pending (up to a high-water mark), then closes. */
struct writer {
  event_io_state st;
  size_t total, queued;
  int pendings; /* PENDING results */
  int gathered; /* writes made while output was pending */
  int done;     /* 1: all written and closed; -1: failed (atomic) */
  int err;
  int wrong_mask; /* a dispatch without the needmask it asked for */
  int asked;
  int wb;    /* switch write-behind on at the first dispatch */
  int calls; /* dispatches */
};

static int writer_cb(Event *event, int eventtype, void *closure, struct timeval *now)
{
  struct writer *w = closure;
  unsigned char chunk[9000];
  int rc = EVENT_IO_DONE;

  if (w->asked && !(eventtype & w->asked))
    w->wrong_mask++;
  if (w->wb && w->calls == 0 && ec_event_write_behind(event, 1) < 0)
    w->wrong_mask += 1000;
  w->calls++;
  if (w->st.needmask)
    rc = event_io_retry(event, &w->st);
  while (rc != EVENT_IO_ERROR && w->queued < w->total && ec_event_io_pending(&w->st) < 65536) {
    size_t n = 1 + (w->queued * 7919) % sizeof(chunk);

    if (n > w->total - w->queued)
      n = w->total - w->queued;
    pattern_fill(chunk, w->queued, n);
    if (w->st.needmask)
      w->gathered++;
    rc = event_io_write(event, (char *)chunk, (int)n, &w->st);
    memset(chunk, 0xee, n); /* the helper must have copied what it kept */
    w->queued += n;
  }
  if (rc == EVENT_IO_PENDING) {
    w->pendings++;
    w->asked = w->st.needmask;
    return w->st.needmask;
  }
  w->err = rc == EVENT_IO_ERROR ? errno : 0;
  event_io_state_clean(&w->st);
  event_close(event);
  st_rel(&w->done, rc == EVENT_IO_DONE ? 1 : -1);
  return 0;
}

/* Multi-megabyte output over a tiny-buffered TCP connection arrives intact and in order,
 * then the close; no buffer is left behind. Without write-behind (wb 0) the partial path
 * and gathering both ran. With it (wb 1), fast sends came back short, slow sends waited on
 * the socket, E_WRITE was held back until they finished and the 256 KiB cap pushed back;
 * the writer's event_close left output unsent, which went out before the FIN. */
static void large_write(int wb)
{
  struct writer w = {.total = (size_t)unit_scale(6L << 20), .wb = wb};
  int64_t live0 = unit_live(MEMTYPE_BUF_STORAGE);
  unsigned char *got = malloc(w.total + 1);
  size_t n;

  ASSERT_NOT_NULL(got);
  start_shards();
  ASSERT_EQ(tcp_pair(sv, 4096), 0);
  schedule_event(build_fd_event(sv[0], E_WRITE, 0, writer_cb, &w));
  /* Read in odd-sized small pieces so that the writer keeps hitting a full buffer. */
  for (n = 0; n < w.total;) {
    size_t want = 1 + (n % 3001);
    size_t r = peer_read(sv[1], got + n, want, 5000);

    if (r == 0)
      break;
    n += r;
  }
  ASSERT_UEQ(n, w.total);
  ASSERT_EQ(pattern_check(got, 0, w.total), -1);
  ASSERT_TRUE(unit_wait_ge(&w.done, 1, 5000));
  ASSERT_TRUE(peer_sees_eof(sv[1], 5000)); /* nothing more, then the close */
  ASSERT_GT(w.pendings, 10); /* the socket, or write-behind's cap (uring), pushed back */
  if (!wb)
    ASSERT_GT(w.gathered, 10);
  ASSERT_EQ(w.wrong_mask, 0);
  sv[0] = -1;
  stop_shards();
  free(got);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), live0);
}

/* The peer resets the connection in the middle of a long write (with write-behind: while
 * output is parked on the socket): EVENT_IO_ERROR with ECONNRESET or EPIPE, the callback
 * cleans up and closes, nothing leaks. */
static void peer_reset(int wb)
{
  struct writer w = {.total = 64L << 20, .wb = wb};
  int64_t live0 = unit_live(MEMTYPE_BUF_STORAGE);
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  unsigned char buf[20000];

  start_shards();
  ASSERT_EQ(tcp_pair(sv, 4096), 0);
  schedule_event(build_fd_event(sv[0], E_WRITE, 0, writer_cb, &w));
  ASSERT_UEQ(peer_read(sv[1], buf, sizeof(buf), 5000), sizeof(buf));
  ASSERT_EQ(pattern_check(buf, 0, sizeof(buf)), -1);
  ASSERT_EQ(setsockopt(sv[1], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  close(sv[1]); /* RST */
  sv[1] = -1;
  for (int i = 0; i < 5000 && ld(&w.done) == 0; i++)
    usleep(1000);
  ASSERT_EQ(ld(&w.done), -1);
  ASSERT_TRUE(w.err == ECONNRESET || w.err == EPIPE);
  ASSERT_TRUE(w.queued < w.total);
  sv[0] = -1;
  stop_shards();
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), live0);
}

static void t_large_write_over_tcp(void)
{
  large_write(0);
}

static void t_peer_reset_mid_write(void)
{
  peer_reset(0);
}

/* ---- write-behind ------------------------------------------------------------------------ */

/* 1 if the shards' poller carries write-behind output (uring); elsewhere write-behind is
 * switched on but writes go out at once, and the same tests hold. */
static int carried(void)
{
  return strcmp(ec_poller_name(), "uring") == 0;
}

static void t_wb_large_write(void)
{
  large_write(1);
}

static void t_wb_peer_reset(void)
{
  peer_reset(1);
}

/* What one callback sees of its write-behind output, step by step (checked on the shard,
 * reported through `bad`: the number of the first failed step). */
struct wb_steps {
  int peer;  /* the other end */
  int bad;   /* first failed step, 0 if all passed */
  int done;  /* atomic */
  int freed; /* second Event: output left when the scheduler freed it */
};

static int wb_peek(int fd, char *buf, int len)
{
  int n = 0;

  for (int i = 0; i < 200 && n < len; i++) {
    ssize_t r = recv(fd, buf + n, (size_t)(len - n), MSG_DONTWAIT);

    if (r > 0)
      n += (int)r;
    else if (r == 0)
      break;
    else
      usleep(1000);
  }
  return n;
}

static int wb_steps_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct wb_steps *t = closure;
  char got[16];
  int need, step = 0;

  (void)type;
  (void)now;
#define STEP(cond)                                                                                 \
  do {                                                                                             \
    step++;                                                                                        \
    if (!(cond) && t->bad == 0)                                                                    \
      t->bad = step;                                                                               \
  } while (0)
  STEP(ec_event_write_behind(e, 1) == 0);
  STEP(event_write(e, "hello", 5, &need) == 5); /* taken whole */
  if (carried())
    STEP(recv(t->peer, got, sizeof(got), MSG_DONTWAIT) < 0 && errno == EAGAIN); /* not yet */
  else
    step++;
  STEP(ec_event_flush(e) == 0);
  STEP(wb_peek(t->peer, got, 5) == 5 && memcmp(got, "hello", 5) == 0);
  /* After a flush the descriptor may be written directly, in order. */
  STEP(event_write(e, "A", 1, &need) == 1);
  STEP(ec_event_flush(e) == 0);
  STEP(write(e->fd, "B", 1) == 1);
  STEP(wb_peek(t->peer, got, 2) == 2 && memcmp(got, "AB", 2) == 0);
  /* Switching it off with nothing waiting, and on again. */
  STEP(ec_event_write_behind(e, 0) == 0 && e->_priv.wb == NULL);
  STEP(ec_event_write_behind(e, 1) == 0);
  /* Output left at event_close goes out before the FIN. */
  STEP(event_write(e, "tail", 4, &need) == 4);
  STEP(event_close(e) == 0);
#undef STEP
  st_rel(&t->done, 1);
  return 0;
}

/* The scheduler frees an Event (callback returns 0, descriptor left open): its output
 * still goes out. */
static int wb_freed_cb(Event *e, int type, void *closure, struct timeval *now)
{
  struct wb_steps *t = closure;
  int need;

  (void)type;
  (void)now;
  if (ec_event_write_behind(e, 1) != 0 || event_write(e, "bye", 3, &need) != 3)
    t->bad = 100;
  st_rel(&t->freed, 1);
  return 0;
}

static void t_wb_flush_close_free(void)
{
  struct wb_steps t = {0};
  int64_t live0 = unit_live(MEMTYPE_BUF_STORAGE);
  char got[16];
  int pair[2] = {-1, -1};

  start_shards();
  ASSERT_EQ(tcp_pair(sv, 65536), 0);
  t.peer = sv[1];
  schedule_event(build_fd_event(sv[0], E_WRITE, 0, wb_steps_cb, &t));
  ASSERT_TRUE(unit_wait_ge(&t.done, 1, 5000));
  ASSERT_EQ(t.bad, 0);
  ASSERT_UEQ(peer_read(sv[1], got, 4, 5000), 4);
  ASSERT_EQ(memcmp(got, "tail", 4), 0);
  ASSERT_TRUE(peer_sees_eof(sv[1], 5000));
  sv[0] = -1;
  ASSERT_EQ(tcp_pair(pair, 65536), 0);
  schedule_event(build_fd_event(pair[0], E_WRITE, 0, wb_freed_cb, &t));
  ASSERT_TRUE(unit_wait_ge(&t.freed, 1, 5000));
  ASSERT_EQ(t.bad, 0);
  ASSERT_UEQ(peer_read(pair[1], got, 3, 5000), 3);
  ASSERT_EQ(memcmp(got, "bye", 3), 0);
  stop_shards(); /* the shard may still be retiring the Event: close its descriptor after */
  close(pair[0]);
  ASSERT_TRUE(peer_sees_eof(pair[1], 5000));
  close(pair[1]);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), live0);
}

/* Misuse gets an error, not a crash. */
static void t_wb_bad_calls(void)
{
  Event *e;
  int fds[2];

  errno = 0;
  ASSERT_EQ(ec_event_write_behind(NULL, 1), -1);
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(ec_event_flush(NULL), -1);
  ASSERT_EQ(errno, EINVAL);
  start_shards();
  ASSERT_EQ(unix_pair(fds, 65536), 0);
  e = build_fd_event(fds[0], E_READ, 0, writer_cb, NULL);
  ASSERT_NOT_NULL(e);
  ASSERT_EQ(ec_event_write_behind(e, 1), -1); /* not on a shard thread */
  ASSERT_EQ(errno, EPERM);
  ASSERT_EQ(ec_event_flush(e), 0); /* nothing to flush */
  event_free(e);
  close(fds[0]);
  close(fds[1]);
  stop_shards();
}

/* The seed's exact read: a callback reading 100,000 bytes into a (different) buffer per
 * dispatch while the peer sends them in many small segments. */
struct exact {
  event_io_state st;
  unsigned char *bufs[2];
  int len;
  int calls, pendings;
  int done; /* 1 DONE (content checked), -1 anything else (atomic) */
  int bad;  /* first wrong byte + 1 */
  int result;
};

static int exact_cb(Event *event, int eventtype, void *closure, struct timeval *now)
{
  struct exact *x = closure;
  unsigned char *buf = x->bufs[x->calls++ % 2];
  long at;

  memset(buf, 0, (size_t)x->len);
  x->result = event_io_read(event, (char *)buf, x->len, &x->st);
  if (x->result == EVENT_IO_PENDING) {
    add_rel(&x->pendings, 1);
    return x->st.needmask;
  }
  if (x->result == EVENT_IO_DONE) {
    at = pattern_check(buf, 0, (size_t)x->len);
    x->bad = (int)(at + 1);
  }
  event_io_state_clean(&x->st);
  event_close(event);
  st_rel(&x->done, x->result == EVENT_IO_DONE ? 1 : -1);
  return 0;
}

static void t_exact_read_many_segments(void)
{
  struct exact x = {.len = 100000};
  int64_t live0 = unit_live(MEMTYPE_BUF_STORAGE);
  unsigned char *data = malloc((size_t)x.len);
  int seg = 997, sent = 0;

  ASSERT_NOT_NULL(data);
  x.bufs[0] = malloc((size_t)x.len);
  x.bufs[1] = malloc((size_t)x.len);
  ASSERT_TRUE(x.bufs[0] && x.bufs[1]);
  pattern_fill(data, 0, (size_t)x.len);
  start_shards();
  ASSERT_EQ(unix_pair(sv, 4096), 0);
  schedule_event(build_fd_event(sv[0], E_READ, 0, exact_cb, &x));
  while (sent < x.len - 1) {
    int n = seg < x.len - 1 - sent ? seg : x.len - 1 - sent;

    ASSERT_EQ(peer_write(sv[1], data + sent, (size_t)n), 0);
    sent += n;
    if (sent % (seg * 10) == 0)
      usleep(2000); /* let some segments arrive alone */
  }
  usleep(100000);
  ASSERT_EQ(ld(&x.done), 0); /* one byte short: still pending */
  ASSERT_EQ(peer_write(sv[1], data + sent, 1), 0);
  ASSERT_TRUE(unit_wait_ge(&x.done, 1, 5000));
  ASSERT_EQ(x.result, EVENT_IO_DONE);
  ASSERT_EQ(x.bad, 0);
  ASSERT_GT(ld(&x.pendings), 5);
  ASSERT_TRUE(peer_sees_eof(sv[1], 5000));
  sv[0] = -1;
  stop_shards();
  free(data);
  free(x.bufs[0]);
  free(x.bufs[1]);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), live0);
}

/* EOF before the last byte: EVENT_IO_EOF, the sample closes. */
static void t_exact_read_eof(void)
{
  struct exact x = {.len = 8192};
  unsigned char data[100];

  x.bufs[0] = malloc(8192);
  x.bufs[1] = malloc(8192);
  ASSERT_TRUE(x.bufs[0] && x.bufs[1]);
  pattern_fill(data, 0, sizeof(data));
  start_shards();
  ASSERT_EQ(unix_pair(sv, 4096), 0);
  schedule_event(build_fd_event(sv[0], E_READ, 0, exact_cb, &x));
  ASSERT_EQ(peer_write(sv[1], data, sizeof(data)), 0);
  shutdown(sv[1], SHUT_WR);
  for (int i = 0; i < 5000 && ld(&x.done) == 0; i++)
    usleep(1000);
  ASSERT_EQ(ld(&x.done), -1);
  ASSERT_EQ(x.result, EVENT_IO_EOF);
  sv[0] = -1;
  stop_shards();
  free(x.bufs[0]);
  free(x.bufs[1]);
}

/* The seed's last sample's write: a 300,000-byte string passed by value, twice over one
 * connection (the state resets after DONE, so the second write is complete too). */
struct strw {
  event_io_state st;
  string buf;
  int rounds, done;
};

static int strw_cb(Event *event, int eventtype, void *closure, struct timeval *now)
{
  struct strw *s = closure;

  for (;;) {
    switch (event_io_write_string(event, s->buf, &s->st)) {
    case EVENT_IO_PENDING:
      return s->st.needmask;
    case EVENT_IO_DONE:
      if (++s->rounds < 2)
        continue;
      st_rel(&s->done, 1);
      return E_READ; /* and wait for the peer's EOF */
    default:
      st_rel(&s->done, -1);
      event_close(event);
      return 0;
    }
  }
}

static void t_write_string_twice(void)
{
  enum { LEN = 300000 };
  struct strw s = {0};
  unsigned char *got = malloc(2 * LEN);
  int64_t live0 = unit_live(MEMTYPE_BUF_STORAGE);
  Event *e;

  ASSERT_NOT_NULL(got);
  ASSERT_EQ(string_init_type(&s.buf, 8192, STRING_TYPE_ECSTRING), 1);
  for (size_t i = 0; i < LEN; i += 1000) {
    unsigned char piece[1000];

    pattern_fill(piece, i, sizeof(piece));
    ASSERT_EQ(stringwrite2(&s.buf, (char *)piece, sizeof(piece)), 1000);
  }
  start_shards();
  ASSERT_EQ(unix_pair(sv, 4096), 0);
  e = build_fd_event(sv[0], E_WRITE, 0, strw_cb, &s);
  schedule_event(e);
  ASSERT_UEQ(peer_read(sv[1], got, 2 * LEN, 5000), 2 * LEN);
  ASSERT_EQ(pattern_check(got, 0, LEN), -1);
  ASSERT_EQ(pattern_check(got + LEN, 0, LEN), -1);
  ASSERT_TRUE(unit_wait_ge(&s.done, 1, 5000));
  ASSERT_EQ(s.rounds, 2);
  ASSERT_EQ(peer_read(sv[1], got, 1, 100), 0); /* and nothing more */
  stop_shards();                               /* the framework closes the still-scheduled Event */
  event_io_state_clean(&s.st);
  string_destroy(&s.buf);
  free(got);
  ASSERT_EQ(unit_live(MEMTYPE_BUF_STORAGE), live0);
}

static const unit_test tests[] = {
    UNIT_TEST(t_write_done),
    UNIT_TEST(t_write_partial_retry),
    UNIT_TEST(t_gathering),
    UNIT_TEST(t_write_errors),
    UNIT_TEST(t_bad_arguments),
    UNIT_TEST(t_read_exact),
    UNIT_TEST(t_write_string),
    UNIT_TEST(t_printf),
    UNIT_TEST(t_buffer_reuse),
    UNIT_TEST(t_plain_descriptors),
    UNIT_TEST(t_large_write_over_tcp),
    UNIT_TEST(t_peer_reset_mid_write),
    UNIT_TEST(t_exact_read_many_segments),
    UNIT_TEST(t_exact_read_eof),
    UNIT_TEST(t_write_string_twice),
    UNIT_TEST(t_wb_large_write),
    UNIT_TEST(t_wb_peer_reset),
    UNIT_TEST(t_wb_flush_close_free),
    UNIT_TEST(t_wb_bad_calls),
    {NULL, NULL},
};

UNIT_MAIN("event_io", tests)
