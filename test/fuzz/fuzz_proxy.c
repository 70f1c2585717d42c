/*
 * test/fuzz/fuzz_proxy.c - libFuzzer target for the PROXY protocol v1/v2 header parser
 * (framework/proxy.c), which reads the first bytes of every connection on a
 * proxy_protocol listener before anything else has checked them.
 *
 * Each input is parsed whole and then as every prefix, the way the acceptor calls the
 * parser while a header trickles in: a prefix may only be "incomplete" (0) or the same
 * verdict as the whole; a header length never exceeds the bytes given.
 */
#include "framework/proxy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fw__proxy_result whole, part;
  const char *why = NULL;
  unsigned char *copy;
  int n;

  /* An exact-size heap copy: ASan sees any read past the end. */
  copy = malloc(size ? size : 1);
  if (copy == NULL)
    return 0;
  memcpy(copy, data, size);
  n = fw__proxy_parse(copy, size, &whole, &why);
  if (n > (int)size || (n < 0 && why == NULL))
    abort();
  for (size_t len = 0; len < size && len < 600; len++) {
    unsigned char *p = malloc(len ? len : 1);
    int k;

    if (p == NULL)
      break;
    memcpy(p, data, len);
    k = fw__proxy_parse(p, len, &part, &why);
    free(p);
    if (k > (int)len)
      abort();
    /* A complete header found in a prefix is the header of the whole input too. */
    if (k > 0 && n != k)
      abort();
  }
  free(copy);
  return 0;
}
