/*
 * samples/urlfetch/urlfetch.c - the URL fetcher protocol module, built only on the public
 * API: the seed's "Suspending and resuming a connection" sample, run as a server.
 *
 * A client sends a line "URL\r\n" (a path, a file:// URL or an http(s):// URL) and gets
 * the resource's bytes back, then may send the next line on the same connection. While
 * the IO pool fetches the resource the session is suspended: its Event is duplicated,
 * cleared from the shard and freed, and the duplicate is resumed by the job's completion
 * (ec_async_wake_event) on the shard that owns it. A fetch that fails closes the
 * connection, as in the seed.
 *
 * The callback is the seed's, with four additions, each marked "ecshard:": E_TIMEOUT
 * (the listener's idle timeout, or a stopping server's drain deadline) closes the session;
 * a refused ec_queue_async_job ends the session instead of stranding it; close_out
 * releases the string the seed leaks; and the state comes from session_start rather than
 * from the seed's hand-made socket. docs/guide-suspend-resume.md walks
 * through it.
 */
#include "urlfetch.h"

#include "ec_config.h"
#include "ec_framework.h"
#include "ec_growbuf.h"
#include "event.h"
#include "io_wrapper.h"
#include "scheduler.h"

struct my_state {
  minimal_tryread_construct mtc;
  io_job *job;
  Event *session;
  enum { WAITING_FOR_LINE, WAITING_FOR_URL, WRITING_DATA } state;
  event_io_state st;
  string buf;
};

static int my_callback(Event *event, int eventtype, void *closure, struct timeval *now)
{
  int len;
  int needmask = 0;
  struct my_state *self = (struct my_state *)closure;

  (void)now;
  /* ecshard: idle too long, or the server is draining: end the session. */
  if (eventtype & E_TIMEOUT)
    goto close_out;

state_change:
  switch (self->state) {
  case WAITING_FOR_LINE:
    len = tryread_until(event, &needmask, &self->mtc, "\r\n");
    if (len == -1 && errno == EAGAIN) {
      return needmask;
    }
    if (len <= 0) {
      if (len < 0)
        log1_printf(DERROR, "My socket had a problem during read %d: %s\n", errno, strerror(errno));
      goto close_out;
    }
    /* duplicate the current session */
    self->session = ec_malloc(MEMTYPE_EVENT);
    memcpy(self->session, event, sizeof(*event));
    event_post_dup(self->session, event);
    /* remove the event from the kernel level scheduler */
    clear_event_by_fd(event->fd);
    /* create a job to read in the url */
    self->job = io_wrapper_create_read_job(self->mtc.gb_donebuffer);
    self->job->buffer = &self->buf;
    self->buf.len = 0;
    ec_free(MEMTYPE_MESSAGE_BODY, self->mtc.gb_donebuffer);
    /* arrange for that job to schedule our new event */
    ec_async_wake_event(&self->job->job, self->session, E_READ | E_WRITE);
    /* queue the job to the thread pool */
    if (!ec_queue_async_job(&self->job->job)) {
      /* ecshard: refused (the pool is shutting down, or its backlog is full): end the
       * session through its duplicate, which holds the connection now. */
      log1_printf(DERROR, "cannot queue the fetch: %s\n", strerror(errno));
      io_wrapper_free_read_job(self->job);
      self->job = NULL;
      minimal_tryread_construct_free(&self->mtc);
      event_io_state_clean(&self->st);
      string_destroy(&self->buf);
      event_close(self->session);
      event_free(self->session);
      free(self);
      return 0;
    }
    self->state = WAITING_FOR_URL;
    /* tell ecelerity scheduler to free event */
    return 0;

  case WAITING_FOR_URL:
    /* when we get here, our IO job completed */
    if (self->job->status == IOJ_COMPLETED) {
      /* success, all our data is in self->job->buffer */
      self->state = WRITING_DATA;
      goto state_change;
    }
    /* there was an error */
    log1_printf(DERROR, "Error fetching URL %s: status %d, error %d\n", self->job->filename,
                (int)self->job->status, self->job->errorcode);
    goto close_out;

  case WRITING_DATA:
    switch (event_io_write_string(event, self->buf, &self->st)) {
    case EVENT_IO_PENDING:
      return self->st.needmask;
    case EVENT_IO_DONE:
      self->state = WAITING_FOR_LINE;
      io_wrapper_free_read_job(self->job);
      self->job = NULL;
      goto state_change;
    }
    log1_printf(DERROR, "My socket had a problem during write %d: %s\n", errno, strerror(errno));
    goto close_out;
  }
close_out:
  if (self->job) {
    io_wrapper_free_read_job(self->job);
    self->job = NULL;
  }
  minimal_tryread_construct_free(&self->mtc);
  event_io_state_clean(&self->st);
  string_destroy(&self->buf); /* ecshard: the seed leaks the buffer here */
  free(self);
  event_close(event); /* close the event descriptor */
  return 0;           /* the scheduler will de-schedule and free the event structure */
}

/* ecshard: the seed's "..." block, for a connection the framework accepted. */
static int urlfetch_start(Event *e, const ec_accept_info *info, void *closure)
{
  struct my_state *state = calloc(1, sizeof(*state));

  (void)info;
  (void)closure;
  if (state == NULL || !string_init_type(&state->buf, 8192, STRING_TYPE_ECSTRING)) {
    free(state);
    event_close(e);
    return 0;
  }
  e->callback = my_callback;
  e->closure = state;
  return E_READ;
}

int urlfetch_register(void)
{
  ec_protocol p = {
      .name = "urlfetch",
      .session_start = urlfetch_start,
  };

  return ec_protocol_register(&p);
}
