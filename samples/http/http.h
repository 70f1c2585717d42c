/*
 * samples/http/http.h - the HTTP/1.1 origin server module (protocol "http"): static files
 * from a document root and one fixed response route, keep-alive and pipelining, request
 * bodies (Content-Length, chunked, Expect: 100-continue), refusal of request smuggling,
 * limits and timeouts from the `http` configuration section. Guide: docs/http.md.
 */
#ifndef EC_SAMPLE_HTTP_H
#define EC_SAMPLE_HTTP_H

#include <stdint.h>

/* Registers protocol "http" (ec_protocol_register), its configuration section "http"
 * (ec_config_section_register) and its metrics source "http" (ec_stats_register_source).
 * Before ec_framework_init. 0 or a negative errno. */
int http_register(void);

/* Requests answered, summed over the shards, by status class (1xx .. 5xx). */
typedef struct http_stats {
  uint64_t requests;     /* final responses sent */
  uint64_t status[6];    /* [1] .. [5]: responses by class; [0] unused */
  uint64_t bad_requests; /* malformed or refused heads and bodies (4xx that close) */
  uint64_t timeouts;     /* header, body and send timeouts */
  uint64_t files;        /* static file responses (200, 206) */
} http_stats;

/* Sums the per-shard counters (read without locking; each is exact on its shard). Any
 * thread. 0, or -ENOENT before the first connection was served. */
int http_stats_get(http_stats *out);

/* Counters of one shard. 0, -EINVAL (bad index), -ENOENT (nothing served yet). */
int http_shard_stats_get(int shard, http_stats *out);

#endif
