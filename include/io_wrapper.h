/*
 * io_wrapper.h - a thread-pool job that reads a whole resource into a string: a file
 * path, a file:// URL, or an http:// / https:// URL (Momentum's io_wrapper read job).
 *
 * The seed's suspend/resume sample is the model:
 *
 *   self->job = io_wrapper_create_read_job(line);         // copies the URL
 *   self->job->buffer = &self->buf;                         // the caller's string
 *   ec_async_wake_event(&self->job->job, session, E_READ | E_WRITE);
 *   ec_queue_async_job(&self->job->job);                    // on the IO pool
 *   ...                                                     // resumed: check job->status
 *   io_wrapper_free_read_job(self->job);
 *
 * The job runs on the IO pool (job.job_class = ECTP_CLASS_IO; change it before queueing
 * to use another pool). HTTP(S) goes through libcurl on the worker thread: redirects (up
 * to io_wrapper.max_redirects, to http/https only), chunked bodies, connect and total
 * timeouts, TLS with certificate verification. Limits and timeouts come from the
 * `io_wrapper` configuration section (docs/reference/io_wrapper.md).
 */
#ifndef EC_IO_WRAPPER_H
#define EC_IO_WRAPPER_H

#include "ec_config.h"
#include "ec_string.h"
#include "ec_thread_pool.h"
#include "event.h"

typedef struct _io_job {
  ec_async_job job;     /* first: the job is the io_job */
  const char *filename; /* the URL or path, as copied (trailing CR/LF/blanks removed) */
  string *buffer;       /* where the content is appended; set by the caller */
  /* After completion: 0, an errno value (ENOENT, ECONNREFUSED, ETIMEDOUT, EFBIG, ...),
   * or, for an HTTP response that is not a success, its status code (404, 500, ...). */
  int errorcode;
  enum _io_job_status {
    IOJ_MISUSED,      /* no buffer set (errorcode EINVAL); also the status before the work ran */
    IOJ_OPEN_FAILED,  /* could not open: no such file, refused, bad status, bad URL */
    IOJ_READ_FAILED,  /* failed while reading: I/O error, connection lost, timeout */
    IOJ_STORE_FAILED, /* could not keep the data: out of memory, over io_wrapper.max_size */
    IOJ_COMPLETED     /* the whole resource was appended to *buffer */
  } status;
} io_job;

/*
 * Allocates a read job for `filename`: a path, "file://[localhost]/path" (percent
 * escapes decoded), "http://..." or "https://...". The string is copied, without its
 * trailing CR, LF, spaces and tabs (a line read with tryread_until works as is). The job
 * is set up for the IO pool with completion ECTP_COMPLETE_NONE, status IOJ_MISUSED and
 * errorcode 0; the caller sets `buffer` and the completion, then queues it. On failure the
 * buffer keeps its previous length (partial data is dropped). Any thread. NULL (errno
 * EINVAL / ENOMEM) on failure.
 */
EC_API io_job *io_wrapper_create_read_job(const char *filename);

/* Frees a job from io_wrapper_create_read_job (not its buffer). NULL is ignored. Not
 * while the job is queued or running. Any thread. */
EC_API void io_wrapper_free_read_job(io_job *job);

#endif /* EC_IO_WRAPPER_H */
