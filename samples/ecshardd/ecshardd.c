/*
 * samples/ecshardd/ecshardd.c - the ecshard host: serves the sample protocol modules on
 * the shards, as the configuration's listeners say.
 *
 *   ecshardd [--config FILE] [--shards N] [--set KEY=VALUE]... [--print-config]
 *
 * Without --config it runs its embedded default: one shard per CPU and every sample on
 * its loopback port (DESIGN §3.16), the admin listener on 127.0.0.1:9090 and the console
 * on $XDG_RUNTIME_DIR/ecshardd.console (./ecshardd.console without XDG_RUNTIME_DIR). SIGTERM or
 * SIGINT stop it gracefully: the listeners close at once and open sessions get
 * shutdown.drain_timeout seconds to finish. SIGHUP reloads the configuration, SIGUSR1 reopens the
 * log file (docs/operations.md).
 */
#include "ec_config.h"
#include "ec_framework.h"

#include "echo.h"
#include "http.h"
#include "smtp.h"
#include "urlfetch.h"

#define MAX_SET 64

/* The modules this build serves; a listener naming any other protocol is an error. */
static const char default_config[] =
    "# ecshardd's embedded default: every sample on loopback, one shard per CPU.\n"
    "event_loop = { concurrency = 0; };\n"
    "log = { level = \"notice\"; };\n"
    "listener = {\n"
    "  echo = { listen = \"127.0.0.1:7007\"; protocol = \"echo\"; idle_timeout = 300.0; };\n"
    "  urlfetch = { listen = \"127.0.0.1:7070\"; protocol = \"urlfetch\"; };\n"
    "  http = { listen = \"127.0.0.1:8080\"; protocol = \"http\"; idle_timeout = 600.0; };\n"
    "  # HTTPS and SMTP's STARTTLS use a self-signed certificate made on first start and\n"
    "  # kept in the working directory (docs/tls.md); configure a real one with --config.\n"
    "  https = { listen = \"127.0.0.1:8443\"; protocol = \"http\"; idle_timeout = 600.0;\n"
    "            tls = { certificate = \"self-signed\"; key = \"ecshardd-selfsigned.pem\";\n"
    "                    alpn = [ \"http/1.1\" ]; }; };\n"
    "  smtp = { listen = \"127.0.0.1:2525\"; protocol = \"smtp\"; idle_timeout = 600.0;\n"
    "           tls = { certificate = \"self-signed\"; key = \"ecshardd-selfsigned.pem\";\n"
    "                   mode = \"starttls\"; }; };\n"
    "  # Operations (docs/operations.md): metrics over HTTP (GET /metrics, /stats, /health)\n"
    "  # and the console (ecshard-console) on a Unix socket in the working directory.\n"
    "  admin = { listen = \"127.0.0.1:9090\"; protocol = \"admin\"; idle_timeout = 10.0; };\n"
    "  console = { listen = \"unix:ecshardd.console\"; protocol = \"console\";\n"
    "              idle_timeout = 600.0; };\n"
    "};\n"
    "# The SMTP module spools to ./spool (relative to the working directory, made on first\n"
    "# use); --set smtp.mode=sink accepts and discards instead (docs/smtp.md).\n"
    "smtp = { mode = \"spool\"; spool_dir = \"spool\"; };\n";

static int register_modules(void)
{
  static const struct {
    const char *name;
    int (*reg)(void);
  } modules[] = {{"echo", echo_register},
                 {"http", http_register},
                 {"urlfetch", urlfetch_register},
                 {"smtp", smtp_register}};

  for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++) {
    int rc = modules[i].reg();

    if (rc < 0) {
      fprintf(stderr, "ecshardd: cannot register the %s module: %s\n", modules[i].name,
              strerror(-rc));
      return rc;
    }
  }
  return 0;
}

static void usage(FILE *out)
{
  fprintf(out,
          "usage: ecshardd [--config FILE] [--shards N] [--set KEY=VALUE]... "
          "[--print-config]\n"
          "  --config FILE   configuration file (default: the embedded one below)\n"
          "  --shards N      scheduler threads (event_loop.concurrency)\n"
          "  --set K=V       override any setting, e.g. --set listener.echo.listen="
          "\\\"127.0.0.1:7000\\\"\n"
          "  --print-config  print the effective configuration and exit\n"
          "  --version       print the version and exit\n"
          "\nembedded default configuration:\n%s",
          default_config);
}

int main(int argc, char **argv)
{
  const char *set[MAX_SET + 2];
  char console[160];
  ec_framework_options opts = {0};
  int nset = 0, print = 0, rc;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];

    if (strcmp(a, "--config") == 0 && i + 1 < argc) {
      opts.config_file = argv[++i];
    } else if (strcmp(a, "--shards") == 0 && i + 1 < argc) {
      char *end;
      long n = strtol(argv[++i], &end, 10);

      if (*end != '\0' || n < 1 || n > 1024) {
        fprintf(stderr, "ecshardd: --shards wants a number from 1 to 1024, not '%s'\n", argv[i]);
        return 2;
      }
      opts.shards = (int)n;
    } else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
      if (nset == MAX_SET) {
        fprintf(stderr, "ecshardd: at most %d --set options\n", MAX_SET);
        return 2;
      }
      set[nset++] = argv[++i];
    } else if (strcmp(a, "--print-config") == 0) {
      print = 1;
    } else if (strcmp(a, "--version") == 0) {
      printf("ecshardd %s\n", ECSHARD_VERSION_STRING);
      return 0;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "ecshardd: unknown or incomplete option '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  set[nset] = NULL;
  opts.set = set;
  if (opts.config_file == NULL) {
    const char *xdg = getenv("XDG_RUNTIME_DIR");

    opts.config_text = default_config;
    /* The embedded console socket goes to the user's runtime directory when there is one
     * (ecshard-console looks there too), else the working directory. As the first
     * override, so that a --set of the user's still wins. */
    if (xdg != NULL && xdg[0] == '/' && strlen(xdg) < 80) {
      snprintf(console, sizeof(console), "listener.console.listen=\"unix:%s/ecshardd.console\"",
               xdg);
      memmove(&set[1], &set[0], sizeof(set[0]) * (size_t)(nset + 1));
      set[0] = console;
    }
  }

  /* Modules first: their configuration sections must be known when init reads the
   * configuration (ec_config_section_register). */
  if (register_modules() < 0)
    return 1;
  rc = ec_framework_init(&opts);
  if (rc < 0) {
    fprintf(stderr, "ecshardd: the configuration was refused (%s); see the messages above\n",
            strerror(-rc));
    return 1;
  }
  if (print) {
    rc = ec_config_print(stdout);
    ec_framework_join();
    return rc < 0 ? 1 : 0;
  }
  rc = ec_framework_run();
  if (rc < 0) {
    fprintf(stderr, "ecshardd: %s\n", strerror(-rc));
    return 1;
  }
  return 0;
}
