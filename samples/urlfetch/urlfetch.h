/*
 * samples/urlfetch/urlfetch.h - the URL fetcher protocol module: the seed's "suspending
 * and resuming a connection" sample as a server.
 */
#ifndef EC_SAMPLE_URLFETCH_H
#define EC_SAMPLE_URLFETCH_H

/* Registers protocol "urlfetch" (ec_protocol_register). 0 or a negative errno. */
int urlfetch_register(void);

#endif
