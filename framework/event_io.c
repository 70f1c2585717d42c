/*
 * framework/event_io.c - event_read / event_write: I/O through the Event's opset.
 *
 * Plain descriptors use read(2) and send(2) with MSG_NOSIGNAL, so a peer that went away
 * costs an EPIPE, not the process. Both always set *needmask (the seed's first sample
 * returns it after a successful read).
 */
#include "event.h"
#include "shard/shard.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

int ec_event_read_fd(int fd, void *buf, int len, int *needmask)
{
  ssize_t n;

  *needmask = E_READ;
  if (len < 0 || (buf == NULL && len > 0)) {
    errno = EINVAL;
    return -1;
  }
  do
    n = read(fd, buf, (size_t)len);
  while (n < 0 && errno == EINTR);
  return (int)n;
}

int(event_read)(Event *e, void *buf, int len, int *needmask)
{
  if (e == NULL) {
    *needmask = E_READ;
    errno = EINVAL;
    return -1;
  }
  if (e->io_opset != NULL && e->io_opset->event_read != NULL)
    return (e->io_opset->event_read)(e, buf, len, needmask);
  return ec_event_read_fd(e->fd, buf, len, needmask);
}

int event_write(Event *e, const void *buf, int len, int *needmask)
{
  ssize_t n;

  *needmask = E_WRITE;
  if (e == NULL || len < 0 || (buf == NULL && len > 0)) {
    errno = EINVAL;
    return -1;
  }
  if (e->io_opset != NULL && e->io_opset->event_write != NULL)
    return e->io_opset->event_write(e, buf, len, needmask);
  if (!(e->_priv.flags & SHARD__EVF_NOTSOCK)) {
    do
      n = send(e->fd, buf, (size_t)len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0 || errno != ENOTSOCK)
      return (int)n;
    /* A pipe or a file: remember, so that later writes go straight to write(2). */
    e->_priv.flags |= SHARD__EVF_NOTSOCK;
  }
  do
    n = write(e->fd, buf, (size_t)len);
  while (n < 0 && errno == EINTR);
  return (int)n;
}
