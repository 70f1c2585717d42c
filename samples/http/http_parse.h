/*
 * samples/http/http_parse.h - the HTTP/1.1 request parser of the http module: a request
 * head parsed in place (every string points into the caller's buffer, nothing is
 * copied), the framing and smuggling checks of RFC 9112, and a streaming decoder that
 * walks (and discards) a chunked body.
 *
 * Pure functions on memory: no I/O, no allocation, no global state. The fuzz target
 * (test/fuzz_http_parse.c) and the differential test against libhttp-parser
 * (test/test_http_diff.c) drive exactly these functions.
 */
#ifndef EC_SAMPLE_HTTP_PARSE_H
#define EC_SAMPLE_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* Limits of a request head. A request over them fails with the status to answer. */
typedef struct http_limits {
  uint32_t max_request_line; /* bytes of the request line without CRLF: 414 */
  uint32_t max_head;         /* bytes of request line + header fields: 431 */
  uint32_t max_headers;      /* header fields: 431; at most HTTP_MAX_HEADERS */
} http_limits;

#define HTTP_MAX_HEADERS 256

typedef struct http_header {
  const char *name, *value; /* value without leading and trailing whitespace */
  uint32_t name_len, value_len;
} http_header;

typedef struct http_request {
  const char *method, *target;
  uint32_t method_len, target_len;
  int minor_version; /* 0 or 1 (HTTP/1.2 and later minors count as 1.1) */
  unsigned num_headers;
  uint32_t head_len; /* bytes up to and including the empty line (leading CRLFs too) */
  http_header headers[HTTP_MAX_HEADERS];
} http_request;

/*
 * Parses the request head at buf[0 .. len). Returns its length (> 0) when complete, 0
 * when more bytes are needed (and none of the limits is exceeded yet), or the negated
 * HTTP status to answer: -400 (malformed: bad token, bare CR, obs-fold, whitespace
 * before a colon, control characters), -414 (request line over max_request_line), -431
 * (head over max_head, or more than max_headers fields), -505 (an HTTP major version
 * other than 1).
 */
int http_parse_request(const char *buf, size_t len, const http_limits *lim, http_request *r);

enum { HTTP_BODY_NONE = 0, HTTP_BODY_LENGTH = 1, HTTP_BODY_CHUNKED = 2 };

/* What a parsed head means for framing and for the handlers. */
typedef struct http_info {
  int body;                /* HTTP_BODY_* */
  uint64_t content_length; /* HTTP_BODY_LENGTH */
  unsigned keep_alive : 1; /* the client allows the connection to stay open */
  unsigned expect_continue : 1;
  const http_header *host, *if_none_match, *if_modified_since, *range, *if_range;
} http_info;

/*
 * Checks a parsed head for the framing rules that prevent request smuggling and fills
 * `info`. 0, or the negated status to answer (the connection must then be closed):
 * -400 for Content-Length and Transfer-Encoding together, a repeated or non-numeric
 * Content-Length, a Transfer-Encoding whose final coding is not chunked (or chunked
 * twice), Transfer-Encoding in an HTTP/1.0 request, a missing, repeated or malformed
 * Host in HTTP/1.1; -413 for a Content-Length over max_body; -417 for an Expect other
 * than 100-continue; -501 for a transfer coding other than chunked.
 */
int http_request_info(const http_request *r, uint64_t max_body, http_info *info);

/* Streaming decoder of a chunked body (RFC 9112 §7.1); start from a zeroed struct. */
typedef struct http_chunked {
  uint64_t left;  /* bytes left in the current chunk */
  uint64_t total; /* data bytes seen so far */
  uint32_t line;  /* bytes of the current size line or trailer section */
  uint8_t state, digits;
} http_chunked;

/*
 * Consumes bytes of a chunked body from buf[0 .. len): *used says how many (the body
 * ends there when the result is 1; the next request starts after it). Returns 1 at the
 * end of the body (after the trailer section), 0 when all `len` bytes were consumed and
 * more are needed, -400 for malformed framing, -413 once the data exceeds max_body.
 */
int http_chunked_consume(http_chunked *c, const char *buf, size_t len, uint64_t max_body,
                         size_t *used);

/*
 * Decodes the path of an origin-form target (p[0 .. n), starting with '/', without the
 * query) and removes its dot segments (RFC 3986 §5.2.4) after decoding, so that %2e%2e is
 * one too. Writes the path relative to the document root (no leading '/', no "." or ".."
 * segments, no empty segments) NUL-terminated into out. 0, or -400 (bad escape, %00, a
 * path that climbs above the root), -414 (longer than outsz). *dir: it ended with '/'.
 */
int http_normalize_path(const char *p, size_t n, char *out, size_t outsz, int *dir);

/*
 * A Range header value against a representation of `size` bytes: one range of
 * "bytes=a-b", "bytes=a-" or "bytes=-n". 1 satisfiable (*first .. *last, inclusive), 0 not
 * satisfiable (416), -1 ignore the header (several ranges, other units, bad syntax: the
 * whole representation is sent, RFC 9110 §14.2).
 */
int http_parse_range(const char *v, size_t n, uint64_t size, uint64_t *first, uint64_t *last);

/* Case-insensitive comparison of a length-delimited string with a lower-case literal. */
int http_token_eq(const char *s, size_t len, const char *lower);

#endif
