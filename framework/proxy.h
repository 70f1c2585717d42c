/*
 * framework/proxy.h - the PROXY protocol header parser (HAProxy's v1 text and v2 binary
 * forms), for listeners behind a load balancer. Internal.
 */
#ifndef EC_FRAMEWORK_PROXY_H
#define EC_FRAMEWORK_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest header accepted: v1 is at most 107 bytes; v2 is 16 + its length field, which we
 * cap (HAProxy sends addresses plus a few TLVs). */
#define FW__PROXY_MAX 1024

typedef struct fw__proxy_result {
  int version;                 /* 1 or 2 */
  int local;                   /* LOCAL / UNKNOWN: no addresses, keep the socket's own */
  struct sockaddr_storage src; /* the client */
  socklen_t src_len;
  struct sockaddr_storage dst; /* the address the client connected to */
  socklen_t dst_len;
} fw__proxy_result;

/*
 * Parses the start of a connection. Returns the header's length (> 0) with *out filled
 * when a complete, valid header is at the start of buf; 0 if what is there is a valid
 * beginning but incomplete (read more and call again); -1 if it is not a PROXY header or
 * is malformed (*why says how).
 */
int fw__proxy_parse(const unsigned char *buf, size_t len, fw__proxy_result *out, const char **why);

#endif /* EC_FRAMEWORK_PROXY_H */
