/*
 * test/fuzz/fuzz_config.c - libFuzzer target for configuration text: libconfig's parser
 * and ecshard's schema validation (framework/config.c), which every file and --set value
 * goes through. A configuration is trusted less than it looks: it is often generated.
 *
 * The input is the text itself (NUL-terminated copy). The check must return 0 or -EINVAL
 * with a message, never crash or leak.
 */
#include "framework/internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *text = malloc(size + 1), err[256];
  int rc;

  if (text == NULL)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  rc = fw__config_check_text(text, "<fuzz>", err, sizeof(err));
  if (rc != 0 && (rc != -EINVAL || err[0] == '\0'))
    abort();
  free(text);
  return 0;
}
