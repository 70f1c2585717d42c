/*
 * samples/urlfetch/urlfetch_main.c - ecshard-urlfetch: serves the URL fetcher alone.
 *
 *   ecshard-urlfetch [--listen ADDR:PORT] [--shards N] [--config FILE] [--set KEY=VALUE]...
 *
 * Listens on 127.0.0.1:7070 by default (DESIGN §3.16). Try it:
 *
 *   printf '/etc/hostname\r\nhttp://127.0.0.1:8080/hello\r\n' | nc -q 1 127.0.0.1 7070
 *
 * Each line's resource comes back as it is, one after the other on the connection.
 * SIGINT or SIGTERM stop it gracefully.
 */
#include "ec_config.h"
#include "ec_framework.h"

#include "urlfetch.h"

#define MAX_SET 32

int main(int argc, char **argv)
{
  const char *listen_addr = "127.0.0.1:7070";
  const char *set[MAX_SET + 3];
  char listen_set[128];
  ec_framework_options opts = {0};
  int nset = 0, rc;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
      listen_addr = argv[++i];
    } else if (strcmp(argv[i], "--shards") == 0 && i + 1 < argc) {
      opts.shards = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      opts.config_file = argv[++i];
    } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && nset < MAX_SET) {
      set[nset++] = argv[++i];
    } else {
      fprintf(stderr,
              "usage: %s [--listen ADDR:PORT] [--shards N] [--config FILE] [--set K=V]...\n",
              argv[0]);
      return 2;
    }
  }
  /* The listener comes last, so that --listen wins over a configuration file. */
  snprintf(listen_set, sizeof(listen_set), "listener.urlfetch.listen=\"%s\"", listen_addr);
  set[nset++] = "listener.urlfetch.protocol=urlfetch";
  set[nset++] = listen_set;
  set[nset] = NULL;
  opts.set = set;
  rc = ec_framework_init(&opts);
  if (rc < 0) {
    fprintf(stderr, "%s: the configuration was refused (%s)\n", argv[0], strerror(-rc));
    return 1;
  }
  rc = urlfetch_register();
  if (rc == 0)
    rc = ec_framework_run();
  else
    ec_framework_join();
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", argv[0], strerror(-rc));
    return 1;
  }
  return 0;
}
