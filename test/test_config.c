/*
 * test/test_config.c - framework/config.c: layers, schema checks, --set, print.
 *
 * The suite includes config.c itself (STYLE: tests may reach statics) to read the error
 * messages that fw__config_load() only logs, to drive the --set converter with every
 * schema type, and to check the schema machinery (open groups, required members) on a
 * table of its own.
 */
#include "unit.h"

#include "framework/config.c"

#include <limits.h>

/* Buffer sizes stay well under the 512-byte message buffer of ASSERT_STR_EQ, which gcc's
 * -Wformat-truncation checks against the arrays passed to it. */
#define ERRLEN       256
#define TMP_PATH_LEN 64

/* ---- helpers -------------------------------------------------------------------------- */

/* Writes text to a new file under /tmp; path receives its name. 0 or -errno. */
static int write_temp(const char *text, char *path, size_t len)
{
  size_t n = strlen(text);
  int fd;

  snprintf(path, len, "/tmp/ecshard-config-XXXXXX");
  fd = mkstemp(path);
  if (fd < 0)
    return -errno;
  if (write(fd, text, n) != (ssize_t)n) {
    close(fd);
    unlink(path);
    return -EIO;
  }
  close(fd);
  return 0;
}

/* config_build() into a scratch state: the return code, the first error in buf and the
 * number of errors in *count. Nothing stays loaded. */
static int build_capture(const ec_framework_options *o, char *buf, size_t len, int *count)
{
  cfg_errors er = {.buf = buf, .len = len};
  cfg_state *st = calloc(1, sizeof(*st));
  int rc;

  if (st == NULL)
    return -ENOMEM;
  buf[0] = '\0';
  config_init(&st->cfg);
  rc = config_build(o, st, &er);
  state_free(st);
  if (count != NULL)
    *count = er.count;
  return rc;
}

static int set_capture(const char *entry, char *buf, size_t len)
{
  const char *set[] = {entry, NULL};
  ec_framework_options o = {.set = set};

  return build_capture(&o, buf, len, NULL);
}

static int same_setting(const config_setting_t *a, const config_setting_t *b)
{
  const char *na = config_setting_name(a), *nb = config_setting_name(b);

  if (config_setting_type(a) != config_setting_type(b))
    return 0;
  if ((na == NULL) != (nb == NULL) || (na != NULL && strcmp(na, nb) != 0))
    return 0;
  switch (config_setting_type(a)) {
  case CONFIG_TYPE_INT:
  case CONFIG_TYPE_INT64:
    return config_setting_get_int64(a) == config_setting_get_int64(b);
  case CONFIG_TYPE_FLOAT:
    return config_setting_get_float(a) == config_setting_get_float(b);
  case CONFIG_TYPE_BOOL:
    return config_setting_get_bool(a) == config_setting_get_bool(b);
  case CONFIG_TYPE_STRING:
    return strcmp(config_setting_get_string(a), config_setting_get_string(b)) == 0;
  default:
    if (config_setting_length(a) != config_setting_length(b))
      return 0;
    for (int i = 0; i < config_setting_length(a); i++)
      if (!same_setting(config_setting_get_elem(a, (unsigned)i),
                        config_setting_get_elem(b, (unsigned)i)))
        return 0;
    return 1;
  }
}

/* ec_config_print() into a malloc'd string (NULL on failure). */
static char *print_to_string(void)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  int rc;

  if (f == NULL)
    return NULL;
  rc = ec_config_print(f);
  fclose(f);
  if (rc != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* ---- defaults ------------------------------------------------------------------------- */

static void t_defaults(void)
{
  ec_framework_options zero;
  const config_setting_t *df;

  memset(&zero, 0, sizeof(zero));
  for (int pass = 0; pass < 2; pass++) {
    ASSERT_EQ(fw__config_load(pass == 0 ? NULL : &zero), 0);
    ASSERT_NOT_NULL(fw__config());
    ASSERT_EQ(ec_config_get_int("event_loop.concurrency", -1), 0);
    ASSERT_STR_EQ(ec_config_get_string("event_loop.poller", NULL), "auto");
    ASSERT_EQ(ec_config_get_int("event_loop.mailbox_budget", -1), 1024);
    ASSERT_EQ(ec_config_get_int("event_loop.events_per_wait", -1), 512);
    ASSERT_EQ(ec_config_get_int("event_loop.max_timed_events_per_iter", -1), 1024);
    ASSERT_STR_EQ(ec_config_get_string("log.level", NULL), "warning");
    ASSERT_STR_EQ(ec_config_get_string("log.file", NULL), "");
    ASSERT_EQ(ec_config_get_int("log.queue_size", -1), 8192);
    df = config_lookup(fw__config(), "debug_flags");
    ASSERT_NOT_NULL(df);
    ASSERT_TRUE(config_setting_is_group(df));
    ASSERT_EQ(config_setting_length(df), 0);
    /* Settings remember where they came from. */
    ASSERT_STR_EQ(config_setting_source_file(config_lookup(fw__config(), "log.level")),
                  "<defaults>");
    fw__config_unload();
    ASSERT_NULL(fw__config());
  }
}

static void t_default_text_is_valid(void)
{
  char err[ERRLEN];

  ASSERT_NOT_NULL(ec_config_default_text());
  ASSERT_EQ(fw__config_check_text(ec_config_default_text(), "<defaults>", err, sizeof(err)), 0);
  ASSERT_STR_EQ(err, "");
  /* The example in the debug_flags comment is valid as written. */
  ASSERT_EQ(fw__config_check_text("debug_flags = { DEBUG = [ \"LOG1\", \"FD\" ]; };", "<t>", err,
                                  sizeof(err)),
            0);
}

/* ---- layers --------------------------------------------------------------------------- */

static void t_file_overrides(void)
{
  char path[TMP_PATH_LEN];
  const config_setting_t *s;
  ec_framework_options o;

  ASSERT_EQ(write_temp("# test\n"
                       "event_loop = {\n"
                       "  concurrency = 3;\n"
                       "};\n"
                       "log = { level = \"debug\"; queue_size = 0x400; };\n"
                       "debug_flags = { DEBUG = [ \"LOG1\", \"FD\" ]; };\n",
                       path, sizeof(path)),
            0);
  memset(&o, 0, sizeof(o));
  o.config_file = path;
  /* The file wins over config_text when both are given. */
  o.config_text = "event_loop = { concurrency = 9; };";
  ASSERT_EQ(fw__config_load(&o), 0);
  unlink(path);
  ASSERT_EQ(ec_config_get_int("event_loop.concurrency", -1), 3);
  /* Deep merge: the rest of the group keeps its defaults. */
  ASSERT_STR_EQ(ec_config_get_string("event_loop.poller", NULL), "auto");
  ASSERT_EQ(ec_config_get_int("event_loop.events_per_wait", -1), 512);
  ASSERT_STR_EQ(ec_config_get_string("log.level", NULL), "debug");
  ASSERT_STR_EQ(ec_config_get_string("log.file", NULL), "");
  ASSERT_EQ(ec_config_get_int("log.queue_size", -1), 1024);
  ASSERT_STR_EQ(ec_config_get_string("debug_flags.DEBUG.[0]", NULL), "LOG1");
  ASSERT_STR_EQ(ec_config_get_string("debug_flags.DEBUG.[1]", NULL), "FD");
  /* Origins survive the merge: file and line for what the file set. */
  s = config_lookup(fw__config(), "event_loop.concurrency");
  ASSERT_NOT_NULL(s);
  ASSERT_STR_EQ(config_setting_source_file(s), path);
  ASSERT_EQ(config_setting_source_line(s), 3);
  s = config_lookup(fw__config(), "event_loop.poller");
  ASSERT_STR_EQ(config_setting_source_file(s), "<defaults>");
  fw__config_unload();
}

static void t_text_overrides(void)
{
  ec_framework_options o;

  memset(&o, 0, sizeof(o));
  o.config_text = "event_loop = { poller = \"poll\"; mailbox_budget = 64; };\n"
                  "log = { file = \"/tmp/ecshard test.log\"; level = \"ERROR\"; };\n"
                  "debug_flags = { INFO = ( \"NET\" ); DEBUG = [ ]; };\n";
  ASSERT_EQ(fw__config_load(&o), 0);
  ASSERT_STR_EQ(ec_config_get_string("event_loop.poller", NULL), "poll");
  ASSERT_EQ(ec_config_get_int("event_loop.mailbox_budget", -1), 64);
  ASSERT_EQ(ec_config_get_int("event_loop.concurrency", -1), 0);
  ASSERT_STR_EQ(ec_config_get_string("log.file", NULL), "/tmp/ecshard test.log");
  ASSERT_STR_EQ(ec_config_get_string("log.level", NULL), "ERROR");
  ASSERT_STR_EQ(ec_config_get_string("debug_flags.INFO.[0]", NULL), "NET");
  ASSERT_STR_EQ(config_setting_source_file(config_lookup(fw__config(), "log.file")),
                "<config_text>");
  ASSERT_EQ(config_setting_source_line(config_lookup(fw__config(), "log.file")), 2);
  fw__config_unload();
}

static void t_include_is_relative_to_file(void)
{
  char dir[] = "/tmp/ecshard-config-dir-XXXXXX", main_path[PATH_MAX], inc[PATH_MAX];
  char err[ERRLEN];
  ec_framework_options o;
  FILE *f;

  ASSERT_NOT_NULL(mkdtemp(dir));
  snprintf(main_path, sizeof(main_path), "%s/main.conf", dir);
  snprintf(inc, sizeof(inc), "%s/inc.conf", dir);
  f = fopen(main_path, "w");
  ASSERT_NOT_NULL(f);
  fputs("event_loop = { concurrency = 2; };\n@include \"inc.conf\"\n", f);
  fclose(f);
  f = fopen(inc, "w");
  ASSERT_NOT_NULL(f);
  fputs("log = { level = \"info\"; };\n", f);
  fclose(f);

  memset(&o, 0, sizeof(o));
  o.config_file = main_path;
  ASSERT_EQ(fw__config_load(&o), 0);
  ASSERT_EQ(ec_config_get_int("event_loop.concurrency", -1), 2);
  ASSERT_STR_EQ(ec_config_get_string("log.level", NULL), "info");
  fw__config_unload();

  /* An error inside the included file names that file. */
  f = fopen(inc, "w");
  ASSERT_NOT_NULL(f);
  fputs("\nlog = { levle = \"info\"; };\n", f);
  fclose(f);
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -EINVAL);
  ASSERT_TRUE(strstr(err, "inc.conf:2: unknown setting 'log.levle'") != NULL);
  unlink(inc);
  unlink(main_path);
  rmdir(dir);
}

/* ---- --set and shards ----------------------------------------------------------------- */

static void t_set_overrides(void)
{
  const char *set[] = {"event_loop.poller=poll",
                       "event_loop.concurrency=2",
                       " log.queue_size = 0x100 ",
                       "log.file=\"/tmp/a \\\"b\\\".log\"",
                       "log.level=123",
                       "debug_flags.DEBUG=LOG1,FD",
                       "debug_flags.INFO=[\"NET\", \"SHARD\"]",
                       NULL};
  ec_framework_options o;
  const config_setting_t *s;

  memset(&o, 0, sizeof(o));
  o.config_text = "event_loop = { concurrency = 7; events_per_wait = 8; };";
  o.set = set;
  /* log.level=123 is a string to the schema, and then not a level name. */
  ASSERT_EQ(fw__config_load(&o), -EINVAL);
  ASSERT_NULL(fw__config());
  set[4] = "log.level=notice";
  ASSERT_EQ(fw__config_load(&o), 0);

  s = config_lookup(fw__config(), "event_loop.poller");
  ASSERT_EQ(config_setting_type(s), CONFIG_TYPE_STRING);
  ASSERT_STR_EQ(config_setting_get_string(s), "poll");
  s = config_lookup(fw__config(), "event_loop.concurrency");
  ASSERT_EQ(config_setting_type(s), CONFIG_TYPE_INT);
  ASSERT_EQ(config_setting_get_int(s), 2);
  ASSERT_STR_EQ(config_setting_source_file(s), "--set 'event_loop.concurrency=2'");
  ASSERT_EQ(ec_config_get_int("event_loop.events_per_wait", -1), 8);
  ASSERT_EQ(ec_config_get_int("log.queue_size", -1), 256);
  ASSERT_EQ(config_setting_get_format(config_lookup(fw__config(), "log.queue_size")),
            CONFIG_FORMAT_HEX);
  ASSERT_STR_EQ(ec_config_get_string("log.file", NULL), "/tmp/a \"b\".log");
  ASSERT_STR_EQ(ec_config_get_string("log.level", NULL), "notice");
  ASSERT_STR_EQ(ec_config_get_string("debug_flags.DEBUG.[1]", NULL), "FD");
  ASSERT_STR_EQ(ec_config_get_string("debug_flags.INFO.[1]", NULL), "SHARD");
  fw__config_unload();
}

static void t_set_converts_to_schema_type(void)
{
  static const cfg_entry e_int = {.name = "i", .type = CFG_INT, .max = LLONG_MAX};
  static const cfg_entry e_float = {.name = "f", .type = CFG_FLOAT};
  static const cfg_entry e_bool = {.name = "b", .type = CFG_BOOL};
  static const cfg_entry e_str = {.name = "s", .type = CFG_STRING};
  static const cfg_entry e_list = {.name = "l", .type = CFG_STRING_LIST};
  static const struct {
    const cfg_entry *e;
    const char *text;
    int rc;
    int type;
    long long i;
    double d;
    const char *s;
  } cases[] = {
      {&e_bool, "yes", 0, CONFIG_TYPE_BOOL, 1, 0, NULL},
      {&e_bool, "on", 0, CONFIG_TYPE_BOOL, 1, 0, NULL},
      {&e_bool, "TRUE", 0, CONFIG_TYPE_BOOL, 1, 0, NULL},
      {&e_bool, "1", 0, CONFIG_TYPE_BOOL, 1, 0, NULL},
      {&e_bool, "no", 0, CONFIG_TYPE_BOOL, 0, 0, NULL},
      {&e_bool, "Off", 0, CONFIG_TYPE_BOOL, 0, 0, NULL},
      {&e_bool, "false", 0, CONFIG_TYPE_BOOL, 0, 0, NULL},
      {&e_bool, "0", 0, CONFIG_TYPE_BOOL, 0, 0, NULL},
      {&e_bool, "2", -EINVAL, 0, 0, 0, NULL},
      {&e_bool, "maybe", -EINVAL, 0, 0, 0, NULL},
      {&e_int, "42", 0, CONFIG_TYPE_INT, 42, 0, NULL},
      {&e_int, "-7", 0, CONFIG_TYPE_INT, -7, 0, NULL},
      {&e_int, "0x1F", 0, CONFIG_TYPE_INT, 31, 0, NULL},
      {&e_int, "010", 0, CONFIG_TYPE_INT, 10, 0, NULL},
      {&e_int, "5000000000", 0, CONFIG_TYPE_INT64, 5000000000LL, 0, NULL},
      {&e_int, "1.0", -EINVAL, 0, 0, 0, NULL},
      {&e_int, "abc", -EINVAL, 0, 0, 0, NULL},
      {&e_int, "", -EINVAL, 0, 0, 0, NULL},
      {&e_int, "99999999999999999999", -EINVAL, 0, 0, 0, NULL},
      {&e_float, "2", 0, CONFIG_TYPE_FLOAT, 0, 2.0, NULL},
      {&e_float, "1.5e3", 0, CONFIG_TYPE_FLOAT, 0, 1500.0, NULL},
      {&e_float, "-.25", 0, CONFIG_TYPE_FLOAT, 0, -0.25, NULL},
      {&e_float, "inf", -EINVAL, 0, 0, 0, NULL},
      {&e_str, "123", 0, CONFIG_TYPE_STRING, 0, 0, "123"},
      {&e_str, "yes", 0, CONFIG_TYPE_STRING, 0, 0, "yes"},
      {&e_str, "", 0, CONFIG_TYPE_STRING, 0, 0, ""},
      {&e_str, "\"a b\\t\"", 0, CONFIG_TYPE_STRING, 0, 0, "a b\t"},
      {&e_str, "\"unterminated", -EINVAL, 0, 0, 0, NULL},
      {&e_str, "\"a\"; x = 1", -EINVAL, 0, 0, 0, NULL},
      {&e_list, "LOG1, FD", 0, CONFIG_TYPE_ARRAY, 2, 0, "FD"},
      {&e_list, "[ \"A\", \"B\", \"C\" ]", 0, CONFIG_TYPE_ARRAY, 3, 0, "B"},
      {&e_list, "\"A\"", 0, CONFIG_TYPE_ARRAY, 1, 0, NULL},
      {&e_list, "", 0, CONFIG_TYPE_ARRAY, 0, 0, NULL},
      {&e_list, "A,,B", -EINVAL, 0, 0, 0, NULL},
      {&e_list, "[ 1, 2 ]", -EINVAL, 0, 0, 0, NULL},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    config_t c;
    const config_setting_t *s;
    const char *why = NULL;
    char what[128];
    int rc;

    snprintf(what, sizeof(what), "case %zu: %s = '%s'", i, cases[i].e->name, cases[i].text);
    config_init(&c);
    rc = set_leaf(config_root_setting(&c), cases[i].e->name, cases[i].e, cases[i].text, &why);
    if (rc != cases[i].rc) {
      config_destroy(&c);
      UNIT_FAIL_(what);
    }
    s = config_lookup(&c, cases[i].e->name);
    if (rc == 0) {
      int ok = s != NULL && config_setting_type(s) == cases[i].type;

      if (ok && cases[i].type == CONFIG_TYPE_BOOL)
        ok = config_setting_get_bool(s) == cases[i].i;
      else if (ok && (cases[i].type == CONFIG_TYPE_INT || cases[i].type == CONFIG_TYPE_INT64))
        ok = config_setting_get_int64(s) == cases[i].i;
      else if (ok && cases[i].type == CONFIG_TYPE_FLOAT)
        ok = config_setting_get_float(s) == cases[i].d;
      else if (ok && cases[i].type == CONFIG_TYPE_STRING)
        ok = strcmp(config_setting_get_string(s), cases[i].s) == 0;
      else if (ok && cases[i].type == CONFIG_TYPE_ARRAY)
        ok = config_setting_length(s) == cases[i].i &&
             (cases[i].s == NULL || strcmp(config_setting_get_string_elem(s, 1), cases[i].s) == 0);
      config_destroy(&c);
      if (!ok)
        UNIT_FAIL_(what);
    } else {
      config_destroy(&c);
      if (why == NULL)
        UNIT_FAIL_(what);
    }
    CU_PASS(what);
  }
}

static void t_set_errors(void)
{
  static const struct {
    const char *entry;
    const char *msg;
  } cases[] = {
      {"event_loop.concurrency",
       "--set 'event_loop.concurrency': expected KEY=VALUE, e.g. event_loop.concurrency=4"},
      {"=5", "--set '=5': malformed setting path ''"},
      {"event_loop..x=1", "--set 'event_loop..x=1': malformed setting path 'event_loop..x'"},
      {"event_loop.c%=1", "--set 'event_loop.c%=1': malformed setting name 'c%' in "
                          "'event_loop.c%'"},
      {"event_loop.nope=1", "--set 'event_loop.nope=1': unknown setting 'event_loop.nope'"},
      {"nope=1", "--set 'nope=1': unknown setting 'nope'"},
      {"event_loop.concurrency.x=1",
       "--set 'event_loop.concurrency.x=1': unknown setting 'event_loop.concurrency.x'"},
      {"event_loop.concurrency=abc",
       "--set 'event_loop.concurrency=abc': 'event_loop.concurrency' must be an integer"},
      {"event_loop.concurrency=5000", "--set 'event_loop.concurrency=5000': "
                                      "'event_loop.concurrency' must be between 0 and 1024 "
                                      "(got 5000)"},
      {"event_loop=1", "--set 'event_loop=1': 'event_loop' is a group; set one of its members"},
      {"event_loop.poller=select", "--set 'event_loop.poller=select': 'event_loop.poller' must "
                                   "be one of auto, epoll, uring, poll, kqueue (got 'select')"},
      {"log.queue_size=1000", "--set 'log.queue_size=1000': 'log.queue_size' must be a power "
                              "of two (got 1000)"},
      {"debug_flags.debug=LOG1",
       "--set 'debug_flags.debug=LOG1': unknown setting 'debug_flags.debug' (keys are level "
       "names in upper case: DEBUG, INFO, NOTICE, WARNING, ERROR, CRITICAL)"},
      {"debug_flags.DEBUG=LOG1,BOGUS",
       "--set 'debug_flags.DEBUG=LOG1,BOGUS': 'debug_flags.DEBUG[1]' must be a subsystem name "
       "(LOG1, FD, NET, SHARD, CONFIG, ALL, ...) (got 'BOGUS')"},
  };
  char err[ERRLEN];
  const char *several[] = {"nope=1", "event_loop.concurrency=2", "log.level=loud", NULL};
  ec_framework_options o;
  int count;

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    ASSERT_EQ(set_capture(cases[i].entry, err, sizeof(err)), -EINVAL);
    ASSERT_STR_EQ(err, cases[i].msg);
  }
  /* fw__config_load() reports the same way and leaves nothing loaded. */
  memset(&o, 0, sizeof(o));
  o.set = several;
  ASSERT_EQ(fw__config_load(&o), -EINVAL);
  ASSERT_NULL(fw__config());
  /* Every bad entry is reported, not only the first. */
  ASSERT_EQ(build_capture(&o, err, sizeof(err), &count), -EINVAL);
  ASSERT_EQ(count, 2);
  ASSERT_STR_EQ(err, "--set 'nope=1': unknown setting 'nope'");
}

static void t_shards_override(void)
{
  const char *set[] = {"event_loop.concurrency=2", NULL};
  ec_framework_options o;
  char err[ERRLEN];

  memset(&o, 0, sizeof(o));
  o.shards = 7;
  ASSERT_EQ(fw__config_load(&o), 0);
  ASSERT_EQ(ec_config_get_int("event_loop.concurrency", -1), 7);
  ASSERT_STR_EQ(config_setting_source_file(config_lookup(fw__config(), "event_loop.concurrency")),
                "shards option (7)");
  fw__config_unload();

  /* shards beats both the text and --set. */
  o.config_text = "event_loop = { concurrency = 3; };";
  o.set = set;
  o.shards = 5;
  ASSERT_EQ(fw__config_load(&o), 0);
  ASSERT_EQ(ec_config_get_int("event_loop.concurrency", -1), 5);
  fw__config_unload();

  /* 0 leaves the configured value. */
  o.shards = 0;
  ASSERT_EQ(fw__config_load(&o), 0);
  ASSERT_EQ(ec_config_get_int("event_loop.concurrency", -1), 2);
  fw__config_unload();

  o.shards = 5000;
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -EINVAL);
  ASSERT_STR_EQ(err, "shards option (5000): 'event_loop.concurrency' must be between 0 and "
                     "1024 (got 5000)");
  ASSERT_EQ(fw__config_load(&o), -EINVAL);
  o.shards = -1;
  ASSERT_EQ(fw__config_load(&o), -EINVAL);
  ASSERT_NULL(fw__config());
}

/* ---- errors in a layer ---------------------------------------------------------------- */

static void t_syntax_error_names_file_and_line(void)
{
  /* (A missing ';' is no error: libconfig's separators are optional.) */
  static const char bad[] = "event_loop = {\n"
                            "  concurrency = 3;\n"
                            "  poller = ;\n"
                            "};\n";
  char err[ERRLEN], path[TMP_PATH_LEN], want[128];
  ec_framework_options o;

  ASSERT_EQ(fw__config_check_text(bad, "<t>", err, sizeof(err)), -EINVAL);
  ASSERT_TRUE(strstr(err, ":3:") != NULL);
  ASSERT_STR_EQ(err, "<t>:3: syntax error");
  ASSERT_EQ(fw__config_check_text("a = 1;\nb = ;\n", NULL, err, sizeof(err)), -EINVAL);
  ASSERT_STR_EQ(err, "<text>:2: syntax error");

  ASSERT_EQ(write_temp(bad, path, sizeof(path)), 0);
  memset(&o, 0, sizeof(o));
  o.config_file = path;
  ASSERT_EQ(fw__config_load(&o), -EINVAL);
  ASSERT_NULL(fw__config());
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -EINVAL);
  snprintf(want, sizeof(want), "%s:3: syntax error", path);
  ASSERT_STR_EQ(err, want);
  unlink(path);

  o.config_file = NULL;
  o.config_text = bad;
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -EINVAL);
  ASSERT_STR_EQ(err, "<config_text>:3: syntax error");
}

static void t_bad_settings_rejected(void)
{
  static const struct {
    const char *text;
    const char *msg;
  } cases[] = {
      {"event_loop = {\n  concurency = 2;\n};", "<t>:2: unknown setting 'event_loop.concurency'"},
      {"foo = 1;", "<t>:1: unknown setting 'foo'"},
      {"event_loop = {\n  concurrency = \"2\";\n};",
       "<t>:2: 'event_loop.concurrency' must be an integer"},
      {"event_loop = { concurrency = 1.5; };",
       "<t>:1: 'event_loop.concurrency' must be an integer"},
      {"event_loop = { concurrency = 2000; };",
       "<t>:1: 'event_loop.concurrency' must be between 0 and 1024 (got 2000)"},
      {"event_loop = { concurrency = -1; };",
       "<t>:1: 'event_loop.concurrency' must be between 0 and 1024 (got -1)"},
      {"event_loop = { mailbox_budget = 0; };",
       "<t>:1: 'event_loop.mailbox_budget' must be between 1 and 1048576 (got 0)"},
      {"event_loop = { poller = \"select\"; };",
       "<t>:1: 'event_loop.poller' must be one of auto, epoll, uring, poll, kqueue (got 'select')"},
      {"event_loop = 5;", "<t>:1: 'event_loop' must be a group { ... }"},
      {"log = { level = \"loud\"; };", "<t>:1: 'log.level' must be a level name (debug, info, "
                                       "notice, warning, error, critical) (got 'loud')"},
      {"log = { file = 5; };", "<t>:1: 'log.file' must be a string"},
      {"log = { queue_size = 1000; };",
       "<t>:1: 'log.queue_size' must be a power of two (got 1000)"},
      {"log = { queue_size = 8; };",
       "<t>:1: 'log.queue_size' must be between 16 and 16777216 (got 8)"},
      {"debug_flags = { debug = [ \"LOG1\" ]; };",
       "<t>:1: unknown setting 'debug_flags.debug' (keys are level names in upper case: DEBUG, "
       "INFO, NOTICE, WARNING, ERROR, CRITICAL)"},
      {"debug_flags = { VERBOSE = [ \"LOG1\" ]; };",
       "<t>:1: unknown setting 'debug_flags.VERBOSE' (keys are level names in upper case: "
       "DEBUG, INFO, NOTICE, WARNING, ERROR, CRITICAL)"},
      {"debug_flags = { DEBUG = [ \"LOG1\", \"NOPE\" ]; };",
       "<t>:1: 'debug_flags.DEBUG[1]' must be a subsystem name (LOG1, FD, NET, SHARD, CONFIG, "
       "ALL, ...) (got 'NOPE')"},
      {"debug_flags = { DEBUG = 5; };",
       "<t>:1: 'debug_flags.DEBUG' must be a string or an array of strings"},
      {"debug_flags = { DEBUG = [ 1, 2 ]; };", "<t>:1: 'debug_flags.DEBUG[0]' must be a string"},
      {"debug_flags = 1;", "<t>:1: 'debug_flags' must be a group { ... }"},
  };
  char err[ERRLEN], small[12];
  int count;
  ec_framework_options o;

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    ASSERT_EQ(fw__config_check_text(cases[i].text, "<t>", err, sizeof(err)), -EINVAL);
    ASSERT_STR_EQ(err, cases[i].msg);
  }
  /* Valid variants: lists for arrays, empty arrays, int64 and hex integers, any case of a
   * level name in log.level. */
  ASSERT_EQ(fw__config_check_text("debug_flags = { INFO = ( \"NET\" ); DEBUG = [ ]; };\n"
                                  "event_loop = { concurrency = 4L; events_per_wait = 0x40; };\n"
                                  "log = { level = \"Critical\"; };",
                                  "<t>", err, sizeof(err)),
            0);

  /* A small or absent errbuf is fine. */
  ASSERT_EQ(fw__config_check_text("foo = 1;", "<t>", small, sizeof(small)), -EINVAL);
  ASSERT_EQ(strlen(small), sizeof(small) - 1);
  ASSERT_EQ(fw__config_check_text("foo = 1;", "<t>", NULL, 0), -EINVAL);
  ASSERT_EQ(fw__config_check_text(NULL, "<t>", err, sizeof(err)), -EINVAL);
  ASSERT_STR_EQ(err, "<t>: no configuration text");

  /* Loading reports every problem of the layer and keeps nothing. */
  memset(&o, 0, sizeof(o));
  o.config_text = "event_loop = {\n  concurency = 2;\n  poller = 1;\n};\nlog = { x = 1; };\n";
  ASSERT_EQ(build_capture(&o, err, sizeof(err), &count), -EINVAL);
  ASSERT_EQ(count, 3);
  ASSERT_STR_EQ(err, "<config_text>:2: unknown setting 'event_loop.concurency'");
  ASSERT_EQ(fw__config_load(&o), -EINVAL);
  ASSERT_NULL(fw__config());
}

static void t_missing_file(void)
{
  char err[ERRLEN], dir[] = "/tmp/ecshard-config-dir-XXXXXX";
  ec_framework_options o;

  memset(&o, 0, sizeof(o));
  o.config_file = "/tmp/ecshard-no-such-dir/none.conf";
  ASSERT_EQ(fw__config_load(&o), -ENOENT);
  ASSERT_NULL(fw__config());
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -ENOENT);
  ASSERT_STR_EQ(err, "/tmp/ecshard-no-such-dir/none.conf: cannot read configuration file: No "
                     "such file or directory");

  /* libconfig would read a directory as an empty file. */
  ASSERT_NOT_NULL(mkdtemp(dir));
  o.config_file = dir;
  ASSERT_EQ(fw__config_load(&o), -EISDIR);
  rmdir(dir);
}

/* ---- print ---------------------------------------------------------------------------- */

static void t_print_round_trip(void)
{
  const char *set[] = {"log.queue_size=0x8000", "debug_flags.DEBUG=LOG1,FD", NULL};
  ec_framework_options o;
  char *first, *second, err[ERRLEN];
  config_t reparsed;

  memset(&o, 0, sizeof(o));
  o.config_text = "event_loop = { concurrency = 12L; poller = \"epoll\"; };\n"
                  "log = { file = \"/tmp/x \\\"q\\\" \\\\ \\t\\x01 \xc3\xa9.log\"; };\n"
                  "debug_flags = { NOTICE = ( \"NET\", \"SSL\" ); ERROR = [ ]; };\n";
  o.set = set;
  ASSERT_EQ(fw__config_load(&o), 0);
  first = print_to_string();
  ASSERT_NOT_NULL(first);

  /* The output is valid configuration and parses back to the same tree. */
  ASSERT_EQ(fw__config_check_text(first, "<printed>", err, sizeof(err)), 0);
  config_init(&reparsed);
  ASSERT_TRUE(config_read_string(&reparsed, first));
  ASSERT_TRUE(same_setting(config_root_setting(&reparsed), config_root_setting(fw__config())));
  config_destroy(&reparsed);
  ASSERT_TRUE(strstr(first, "queue_size = 0x8000;") != NULL);
  /* Overridden settings keep their place: the int64 12L replaced the int in place. */
  ASSERT_TRUE(strstr(first, "event_loop = {\n  concurrency = 12;\n") != NULL);
  fw__config_unload();

  /* Loading the printout and printing again gives the same text. */
  memset(&o, 0, sizeof(o));
  o.config_text = first;
  ASSERT_EQ(fw__config_load(&o), 0);
  ASSERT_STR_EQ(ec_config_get_string("log.file", NULL), "/tmp/x \"q\" \\ \t\x01 \xc3\xa9.log");
  ASSERT_EQ(ec_config_get_int("event_loop.concurrency", -1), 12);
  second = print_to_string();
  ASSERT_NOT_NULL(second);
  ASSERT_STR_EQ(second, first);
  fw__config_unload();
  free(first);
  free(second);

  /* Nothing loaded, or no stream: an error, not a crash. */
  ASSERT_EQ(ec_config_print(stdout), -EINVAL);
  ASSERT_EQ(fw__config_load(NULL), 0);
  ASSERT_EQ(ec_config_print(NULL), -EINVAL);
  fw__config_unload();
}

/* ---- life cycle and readers ----------------------------------------------------------- */

static void t_load_unload_repeatedly(void)
{
  const char *set[] = {"event_loop.poller=poll", NULL};
  ec_framework_options o;
  long n = unit_scale(200);

  memset(&o, 0, sizeof(o));
  o.config_text = "log = { level = \"info\"; };";
  o.set = set;
  for (long i = 0; i < n; i++) {
    o.shards = (int)(i % 4);
    ASSERT_EQ(fw__config_load(i % 3 == 0 ? NULL : &o), 0);
    ASSERT_EQ(ec_config_get_int("event_loop.concurrency", -1), i % 3 == 0 ? 0 : i % 4);
    fw__config_unload();
    /* A failed load in between leaves no trace. */
    if (i % 10 == 0) {
      o.shards = 99999;
      ASSERT_EQ(fw__config_load(&o), -EINVAL);
    }
  }
  /* Unload twice is harmless; load over a loaded configuration is refused. */
  fw__config_unload();
  ASSERT_EQ(fw__config_load(NULL), 0);
  ASSERT_EQ(fw__config_load(NULL), -EALREADY);
  ASSERT_EQ(ec_config_get_int("log.queue_size", -1), 8192);
  fw__config_unload();
  fw__config_unload();
}

static void t_get_wrong_type_returns_default(void)
{
  /* Not loaded: every reader returns def. */
  ASSERT_EQ(ec_config_get_int("event_loop.concurrency", 77), 77);
  ASSERT_STR_EQ(ec_config_get_string("log.level", "def"), "def");
  ASSERT_EQ(ec_config_get_bool("log.level", 1), 1);
  ASSERT_TRUE(ec_config_get_double("event_loop.concurrency", 2.5) == 2.5);

  ASSERT_EQ(fw__config_load(NULL), 0);
  ASSERT_EQ(ec_config_get_int("log.level", 42), 42);
  ASSERT_EQ(ec_config_get_int("event_loop", 43), 43);
  ASSERT_EQ(ec_config_get_int("event_loop.nope", 44), 44);
  ASSERT_EQ(ec_config_get_int(NULL, 45), 45);
  ASSERT_EQ(ec_config_get_int("", 46), 46);
  ASSERT_STR_EQ(ec_config_get_string("event_loop.concurrency", "d"), "d");
  ASSERT_STR_EQ(ec_config_get_string("debug_flags", "d"), "d");
  ASSERT_TRUE(ec_config_get_double("log.file", 2.5) == 2.5);
  ASSERT_TRUE(ec_config_get_double("log.queue_size", 0) == 8192.0);
  ASSERT_EQ(ec_config_get_bool("log.level", 1), 1);
  ASSERT_EQ(ec_config_get_bool("log.level", 0), 0);
  /* bool accepts an integer. */
  ASSERT_EQ(ec_config_get_bool("event_loop.concurrency", 1), 0);
  ASSERT_EQ(ec_config_get_bool("log.queue_size", 0), 1);
  fw__config_unload();
}

/* ---- the schema machinery, on a table of its own -------------------------------------- */

static const cfg_entry pool_members[] = {
    {.name = "concurrency", .type = CFG_INT, .flags = CFG_REQUIRED, .min = 1, .max = 64},
    {.name = "backlog", .type = CFG_INT, .min = 0, .max = 1000000},
    {.name = "pin", .type = CFG_BOOL},
    {.name = "weight", .type = CFG_FLOAT},
    {.name = NULL},
};
static const cfg_entry pool_entry = {.name = "pool", .type = CFG_GROUP, .members = pool_members};
static const cfg_entry pools_root_members[] = {
    {.name = "threadpools", .type = CFG_GROUP_OF, .of = &pool_entry},
    {.name = NULL},
};
static const cfg_entry pools_root = {.name = "", .type = CFG_GROUP, .members = pools_root_members};

/* check_config() of text against pools_root; the first error in err. */
static int check_pools(const char *text, int final, char *err, size_t len)
{
  cfg_errors er = {.buf = err, .len = len};
  config_t c;
  int n = -1;

  err[0] = '\0';
  config_init(&c);
  if (config_read_string(&c, text))
    n = check_config(&c, &pools_root, "<t>", final, &er);
  config_destroy(&c);
  return n;
}

static void t_group_of_schema(void)
{
  char err[ERRLEN];

  ASSERT_EQ(check_pools("threadpools = {\n"
                        "  IO = { concurrency = 16; backlog = 100; };\n"
                        "  CPU = { concurrency = 4; pin = true; weight = 1; };\n"
                        "};",
                        1, err, sizeof(err)),
            0);
  /* Required members are checked on the merged result only, never on one layer. */
  ASSERT_EQ(check_pools("threadpools = { IO = { backlog = 1; }; };", 0, err, sizeof(err)), 0);
  ASSERT_EQ(check_pools("threadpools = { IO = { backlog = 1; }; };", 1, err, sizeof(err)), 1);
  ASSERT_STR_EQ(err, "<t>:1: 'threadpools.IO.concurrency' is required");
  ASSERT_EQ(check_pools("threadpools = {\n IO = { concurency = 1; };\n};", 0, err, sizeof(err)), 1);
  ASSERT_STR_EQ(err, "<t>:2: unknown setting 'threadpools.IO.concurency'");
  ASSERT_EQ(check_pools("threadpools = { IO = 5; };", 0, err, sizeof(err)), 1);
  ASSERT_STR_EQ(err, "<t>:1: 'threadpools.IO' must be a group { ... }");
  ASSERT_EQ(
      check_pools("threadpools = { IO = { pin = 1; weight = \"x\"; }; };", 0, err, sizeof(err)), 2);
  ASSERT_STR_EQ(err, "<t>:1: 'threadpools.IO.pin' must be a boolean (true or false)");
}

/* ---- module sections ------------------------------------------------------------------ */

static const char *const modes[] = {"spool", "sink", NULL};
static const ec_config_item mod_items[] = {
    {.name = "mode", .kind = EC_CONFIG_STRING, .choices = modes},
    {.name = "max_recipients", .kind = EC_CONFIG_INT, .min = 1, .max = 1000},
    {.name = "timeout", .kind = EC_CONFIG_FLOAT, .min = 0.5, .max = 3600},
    {.name = "verbose", .kind = EC_CONFIG_BOOL},
    {.name = "names", .kind = EC_CONFIG_STRING_LIST},
    {.name = "anything", .kind = EC_CONFIG_INT},
    {.name = NULL},
};

static void t_module_section(void)
{
  const char *set[] = {"mod.max_recipients=7", "mod.names=a,b,c", NULL};
  ec_framework_options o = {.config_text = "mod = { timeout = 2; verbose = true; };", .set = set};
  char err[ERRLEN];

  ASSERT_EQ(ec_config_section_register("mod", mod_items,
                                       "mode = \"spool\"; max_recipients = 100;"
                                       " anything = -5000000000L;"),
            0);
  /* The same module again is harmless; a different table under the name is a clash. */
  ASSERT_EQ(ec_config_section_register("mod", mod_items, NULL), 0);
  ASSERT_EQ(ec_config_section_register("mod", mod_items + 1, NULL), -EEXIST);
  ASSERT_EQ(ec_config_section_register("listener", mod_items, NULL), -EEXIST);
  ASSERT_EQ(ec_config_section_register("bad name", mod_items, NULL), -EINVAL);

  /* Values: defaults, then the text, then --set; validation as for built-in sections. */
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), 0);
  ASSERT_EQ(fw__config_load(&o), 0);
  ASSERT_STR_EQ(ec_config_get_string("mod.mode", "?"), "spool");
  ASSERT_EQ(ec_config_get_int("mod.max_recipients", 0), 7);
  ASSERT_EQ(ec_config_get_int("mod.anything", 0), -5000000000LL);
  ASSERT_TRUE(ec_config_get_double("mod.timeout", 0) == 2.0);
  ASSERT_EQ(ec_config_get_bool("mod.verbose", 0), 1);
  ASSERT_EQ(ec_config_get_list_count("mod.names"), 3);
  ASSERT_STR_EQ(ec_config_get_list_string("mod.names", 2), "c");
  ASSERT_NULL(ec_config_get_list_string("mod.names", 3));
  ASSERT_EQ(ec_config_get_list_count("mod.nothing"), -ENOENT);
  ASSERT_EQ(ec_config_get_list_count("mod.mode"), 1);
  /* Loaded: registering now is refused. */
  ASSERT_EQ(ec_config_section_register("late", mod_items, NULL), -EBUSY);
  fw__config_unload();

  ASSERT_EQ(ec_config_section_register("mod", mod_items, NULL), 0);
  o = (ec_framework_options){.config_text = "mod = {\n  mode = \"queue\";\n};"};
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -EINVAL);
  ASSERT_STR_EQ(err, "<config_text>:2: 'mod.mode' must be one of spool, sink (got 'queue')");
  o = (ec_framework_options){.config_text = "mod = { timeout = 0.1; };"};
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -EINVAL);
  ASSERT_STR_EQ(err, "<config_text>:1: 'mod.timeout' must be between 0.5 and 3600 (got 0.1)");
  o = (ec_framework_options){.config_text = "mod = { max_recipients = 0; };"};
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -EINVAL);
  ASSERT_STR_EQ(err, "<config_text>:1: 'mod.max_recipients' must be between 1 and 1000 (got 0)");
  o = (ec_framework_options){.config_text = "mod = { colour = 1; };"};
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -EINVAL);
  ASSERT_STR_EQ(err, "<config_text>:1: unknown setting 'mod.colour'");
  ASSERT_EQ(set_capture("mod.verbose=maybe", err, sizeof(err)), -EINVAL);
  ASSERT_STR_EQ(err, "--set 'mod.verbose=maybe': 'mod.verbose' must be a boolean (true/false, "
                     "yes/no, on/off, 1/0)");
  /* Unloading ends the registration: the section is unknown again. */
  ASSERT_EQ(fw__config_load(NULL), 0);
  fw__config_unload();
  o = (ec_framework_options){.config_text = "mod = { };"};
  ASSERT_EQ(build_capture(&o, err, sizeof(err), NULL), -EINVAL);
  ASSERT_STR_EQ(err, "<config_text>:1: unknown setting 'mod'");
}

static const unit_test tests[] = {
    UNIT_TEST(t_defaults),
    UNIT_TEST(t_default_text_is_valid),
    UNIT_TEST(t_file_overrides),
    UNIT_TEST(t_text_overrides),
    UNIT_TEST(t_include_is_relative_to_file),
    UNIT_TEST(t_set_overrides),
    UNIT_TEST(t_set_converts_to_schema_type),
    UNIT_TEST(t_set_errors),
    UNIT_TEST(t_shards_override),
    UNIT_TEST(t_syntax_error_names_file_and_line),
    UNIT_TEST(t_bad_settings_rejected),
    UNIT_TEST(t_missing_file),
    UNIT_TEST(t_print_round_trip),
    UNIT_TEST(t_load_unload_repeatedly),
    UNIT_TEST(t_get_wrong_type_returns_default),
    UNIT_TEST(t_group_of_schema),
    UNIT_TEST(t_module_section),
    {NULL, NULL},
};

UNIT_MAIN("config", tests)
