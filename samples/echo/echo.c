/*
 * samples/echo/echo.c - the echo protocol module, built only on the public API.
 *
 * An idle connection holds no buffer: data is read into a stack buffer and written back
 * at once; only bytes the peer is too slow to take are copied to the heap, and reading
 * stops until they are gone (backpressure). The idle timeout and the drain deadline reach
 * the callback as E_TIMEOUT.
 */
#include "echo.h"

#include "ec_config.h"
#include "ec_framework.h"
#include "event.h"

#define ECHO_CHUNK  16384
#define ECHO_ROUNDS 4 /* reads per dispatch, so one busy peer cannot hog the shard */

typedef struct pending {
  size_t len, off;
  char data[];
} pending;

static int finish(Event *e)
{
  free(e->closure);
  e->closure = NULL;
  event_close(e);
  return 0;
}

/* Writes what the peer did not take yet; 0 when all is out, else the mask to wait for. */
static int flush_pending(Event *e)
{
  pending *p = e->closure;
  int need;

  while (p->off < p->len) {
    int n = event_write(e, p->data + p->off, (int)(p->len - p->off), &need);

    if (n < 0)
      return errno == EAGAIN ? need : -1;
    p->off += (size_t)n;
  }
  free(p);
  e->closure = NULL;
  return 0;
}

static int echo_cb(Event *e, int eventtype, void *closure, struct timeval *now)
{
  char buf[ECHO_CHUNK];
  int need, rc;

  if (eventtype & E_TIMEOUT)
    return finish(e); /* idle, or the server is stopping */
  if (e->closure != NULL && (rc = flush_pending(e)) != 0)
    return rc < 0 ? finish(e) : rc;
  for (int round = 0; round < ECHO_ROUNDS; round++) {
    int n = event_read(e, buf, sizeof(buf), &need);
    int w = 0;

    if (n < 0 && errno == EAGAIN)
      return need;
    if (n <= 0)
      return finish(e);
    while (w < n) {
      int k = event_write(e, buf + w, n - w, &need);

      if (k < 0 && errno != EAGAIN)
        return finish(e);
      if (k < 0) {
        pending *p = malloc(sizeof(*p) + (size_t)(n - w));

        if (p == NULL)
          return finish(e);
        p->len = (size_t)(n - w);
        p->off = 0;
        memcpy(p->data, buf + w, p->len);
        e->closure = p;
        return need;
      }
      w += k;
    }
  }
  return E_READ;
}

static int echo_start(Event *e, const ec_accept_info *info, void *closure)
{
  e->callback = echo_cb;
  e->closure = NULL;
  return E_READ;
}

int echo_register(void)
{
  ec_protocol p = {
      .name = "echo",
      .session_start = echo_start,
      .busy_reply = NULL, /* echo has no words for "busy": refused connections just close */
  };

  return ec_protocol_register(&p);
}
