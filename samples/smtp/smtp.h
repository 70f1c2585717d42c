/*
 * samples/smtp/smtp.h - the "smtp" protocol module: an ESMTP server (RFC 5321) that
 * spools every accepted message durably (maildir-style) before it answers 250, or
 * discards it (sink mode, for benchmarks). Configuration: the top-level `smtp` section
 * (docs/smtp.md).
 */
#ifndef EC_SAMPLE_SMTP_H
#define EC_SAMPLE_SMTP_H

#include <stdint.h>

/* Registers the `smtp` configuration section and protocol "smtp". Call before
 * ec_framework_init (the section must be known when the configuration is read); each
 * call also resets the module's state for a new framework run. 0 or a negative errno. */
int smtp_register(void);

/* Counters of the module, kept per shard. */
typedef struct smtp_stats {
  uint64_t sessions;         /* sessions greeted with 220 */
  uint64_t sessions_refused; /* sessions refused with 421 (session limits) */
  uint64_t messages;         /* messages answered 250 after DATA */
  uint64_t bytes;            /* bytes of those messages (after dot-unstuffing) */
  uint64_t rejects;          /* 4xx and 5xx replies to commands and messages */
  uint64_t spool_errors;     /* messages whose spool write failed (answered 451) */
  uint64_t fsyncs;           /* fsync calls made by spool writes */
} smtp_stats;

/* Counters of shard `shard`, or their sum over all shards for shard == -1. 0, or
 * -EINVAL (bad shard). Any thread; each counter is read atomically, the set is not a
 * snapshot. */
int smtp_stats_get(int shard, smtp_stats *out);

#endif
