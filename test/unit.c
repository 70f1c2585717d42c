/*
 * test/unit.c - main() of every CUnit suite (see unit.h).
 */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

const char *unit_set[UNIT_MAX_SET + 1];

/* A test that failed half-way may leave the framework running: stop it so that the next
 * test starts clean. */
static void teardown(void)
{
  if (ec_framework_initialized()) {
    ec_framework_stop();
    ec_framework_join();
  }
}

int unit_main(int argc, char **argv, const char *suite, const unit_test *tests)
{
  const char *only = NULL;
  int nset = 0;
  CU_pSuite s;
  unsigned failures;

  signal(SIGPIPE, SIG_IGN);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && nset < UNIT_MAX_SET)
      unit_set[nset++] = argv[++i];
    else
      only = argv[i];
  }
  unit_set[nset] = NULL;

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  s = CU_add_suite_with_setup_and_teardown(suite, NULL, NULL, NULL, teardown);
  if (s == NULL)
    return 2;
  for (const unit_test *t = tests; t->name; t++)
    if (only == NULL || strcmp(only, t->name) == 0)
      CU_add_test(s, t->name, t->fn);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  return failures ? 1 : 0;
}

int unit_free_port(void)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}
