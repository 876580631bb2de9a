/*
 * cmd/keelctl/main.c - keelctl, the command line over keeld's REST API
 * (docs/keelctl.md): options, the command table, exit status.
 *
 *   keelctl [--server URL] [--token TOKEN] [--json] [--timeout 10s]
 *           <command> [args]
 *
 * Options may come before or after the command (`keelctl runs backup
 * --limit 5 --json`); `--` ends them, for a job name that starts with '-'.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <keel/cron.h>

#include "keelctl.h"

#define KC_DEFAULT_SERVER "http://127.0.0.1:8080"
#define KC_DEFAULT_TIMEOUT_MS 10000

static const char kc_usage[] =
    "Usage: keelctl [options] <command> [args]\n"
    "\n"
    "Commands:\n"
    "  list                  the jobs: state, next run, last run\n"
    "  get NAME              one job\n"
    "  add FILE|-            create or replace the jobs in FILE (- = stdin):\n"
    "                        a job, an array of jobs, or {\"jobs\": [...]};\n"
    "                        stops at the first refusal\n"
    "  remove NAME           delete a job and its runs\n"
    "  run NAME [--wait]     start a run now; --wait follows it and its\n"
    "                        retries to the end, exit 0 only if it succeeded\n"
    "  pause NAME            stop a job's schedule (manual runs still work)\n"
    "  resume NAME           restart it from now on\n"
    "  runs [NAME] [--limit N] [--state STATE] [--before ID]\n"
    "                        recent runs, newest first\n"
    "  show RUN_ID           one run, with its output\n"
    "  cancel RUN_ID         cancel a queued or running run\n"
    "  events [--limit N] [--before ID]\n"
    "                        keeld's event log, newest first\n"
    "  status                the daemon: version, store, queue, counts\n"
    "  watch [NAME]          print new runs and state changes until Ctrl-C\n"
    "  help                  this text\n"
    "\n"
    "Options:\n"
    "  --server URL    keeld's address (default: $KEELCTL_SERVER, else\n"
    "                  " KC_DEFAULT_SERVER ")\n"
    "  --token TOKEN   bearer token (default: $KEELCTL_TOKEN, else\n"
    "                  $KEELD_TOKEN; the environment keeps it out of ps)\n"
    "  --json          the server's JSON (watch: one object a line)\n"
    "  --timeout D     per request: 500ms, 10s, 1m (default 10s)\n"
    "  --version       keelctl's version\n"
    "  -h, --help      this text\n"
    "\n"
    "STATE: queued, running, succeeded, failed, timed_out, crashed, skipped,\n"
    "canceled. N: 1..1000.\n"
    "\n"
    "Exit status: 0 done; 1 the server refused (the message says why) or a\n"
    "local error; 2 bad usage; 3 the server could not be reached.\n";

/* Which command takes which option. */
enum {
	KC_O_WAIT = 1 << 0,
	KC_O_LIMIT = 1 << 1,
	KC_O_STATE = 1 << 2,
	KC_O_BEFORE = 1 << 3,
};

enum kc_cmd_id {
	KC_LIST,
	KC_GET,
	KC_ADD,
	KC_REMOVE,
	KC_RUN,
	KC_PAUSE,
	KC_RESUME,
	KC_RUNS,
	KC_SHOW,
	KC_CANCEL,
	KC_EVENTS,
	KC_STATUS,
	KC_WATCH,
	KC_HELP,
};

static const struct kc_cmd {
	const char *name;
	enum kc_cmd_id id;
	int min_args, max_args;
	const char *args; /* for "usage: keelctl <name> <args>" */
	int opts;
} kc_cmds[] = {
    {"list", KC_LIST, 0, 0, "", 0},
    {"get", KC_GET, 1, 1, "NAME", 0},
    {"add", KC_ADD, 1, 1, "FILE|-", 0},
    {"remove", KC_REMOVE, 1, 1, "NAME", 0},
    {"run", KC_RUN, 1, 1, "NAME [--wait]", KC_O_WAIT},
    {"pause", KC_PAUSE, 1, 1, "NAME", 0},
    {"resume", KC_RESUME, 1, 1, "NAME", 0},
    {"runs", KC_RUNS, 0, 1, "[NAME] [--limit N] [--state STATE] [--before ID]",
     KC_O_LIMIT | KC_O_STATE | KC_O_BEFORE},
    {"show", KC_SHOW, 1, 1, "RUN_ID", 0},
    {"cancel", KC_CANCEL, 1, 1, "RUN_ID", 0},
    {"events", KC_EVENTS, 0, 0, "[--limit N] [--before ID]",
     KC_O_LIMIT | KC_O_BEFORE},
    {"status", KC_STATUS, 0, 0, "", 0},
    {"watch", KC_WATCH, 0, 1, "[NAME]", 0},
    {"help", KC_HELP, 0, 1, "", 0},
};

static int kc_usage_error(const char *fmt, ...) KEEL_PRINTF(1, 2);

static int kc_usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("keelctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	fputs(kc_usage, stderr);
	return KC_USAGE;
}

/* A run or event id: 1-19 digits (the server refuses what int64 cannot
 * hold). */
static int kc_is_id(const char *s)
{
	size_t n = strlen(s);
	return n > 0 && n <= 19 && strspn(s, "0123456789") == n;
}

static int kc_has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

/* The base URL: a scheme is added when missing ("localhost:8080"), only
 * http and https are taken, and a trailing '/' goes (paths start with
 * one). */
static int kc_set_server(struct kc *kc, const char *url)
{
	struct kc_buf b = {0};

	if (url[0] == '\0' || kc_has_ctl(url) || strchr(url, ' ') != NULL)
		return kc_usage_error("--server: '%s' is not a URL", url);
	const char *sep = strstr(url, "://");
	if (sep == NULL) {
		kc_buf_puts(&b, "http://");
	} else if (!(sep - url == 4 && strncasecmp(url, "http", 4) == 0) &&
		   !(sep - url == 5 && strncasecmp(url, "https", 5) == 0)) {
		return kc_usage_error("--server: '%s': only http:// and "
				      "https:// URLs",
				      url);
	}
	kc_buf_puts(&b, url);
	while (b.len > 0 && b.p[b.len - 1] == '/')
		b.p[--b.len] = '\0';
	if (b.failed)
		return kc_err("out of memory");
	kc->server = b.p;
	return KC_OK;
}

static int kc_set_timeout(struct kc *kc, const char *text)
{
	char err[KEEL_CRON_ERR_MAX];
	int64_t ns;

	/* keel's one duration grammar, as in job definitions. */
	if (keel_duration_parse(text, 1000000LL, 3600LL * 1000000000LL, &ns,
				err, sizeof(err)) != 0)
		return kc_usage_error("--timeout: %s", err);
	kc->timeout_ms = (long)(ns / 1000000);
	return KC_OK;
}

static int kc_set_limit(struct kc *kc, const char *text)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v < 1 || v > 1000)
		return kc_usage_error("--limit: '%s' is not a number from 1 "
				      "to 1000",
				      text);
	kc->limit = v;
	return KC_OK;
}

static int kc_color_wanted(void)
{
	const char *no = getenv("NO_COLOR"); /* no-color.org */
	const char *term = getenv("TERM");

	if (no != NULL && no[0] != '\0')
		return 0;
	if (term != NULL && strcmp(term, "dumb") == 0)
		return 0;
	return isatty(STDOUT_FILENO);
}

static const char *kc_env(const char *name)
{
	const char *v = getenv(name);
	return v != NULL && v[0] != '\0' ? v : NULL;
}

static int kc_dispatch(struct kc *kc, const struct kc_cmd *cmd, char **args)
{
	switch (cmd->id) {
	case KC_LIST:
		return kc_cmd_list(kc);
	case KC_GET:
		return kc_cmd_get(kc, args[0]);
	case KC_ADD:
		return kc_cmd_add(kc, args[0]);
	case KC_REMOVE:
		return kc_cmd_remove(kc, args[0]);
	case KC_RUN:
		return kc_cmd_run(kc, args[0]);
	case KC_PAUSE:
		return kc_cmd_pause(kc, args[0], 1);
	case KC_RESUME:
		return kc_cmd_pause(kc, args[0], 0);
	case KC_RUNS:
		return kc_cmd_runs(kc, args[0]);
	case KC_SHOW:
		return kc_cmd_show(kc, args[0]);
	case KC_CANCEL:
		return kc_cmd_cancel(kc, args[0]);
	case KC_EVENTS:
		return kc_cmd_events(kc);
	case KC_STATUS:
		return kc_cmd_status(kc);
	case KC_WATCH:
		return kc_cmd_watch(kc, args[0]);
	case KC_HELP:
		break;
	}
	fputs(kc_usage, stdout);
	return KC_OK;
}

/* Everything from the command line into kc; *cmd and *args (NULL-padded
 * to the command's arguments) for the command. */
static int kc_parse(struct kc *kc, int argc, char **argv,
		    const struct kc_cmd **cmd, char **args)
{
	enum {
		O_SERVER = 256,
		O_TOKEN,
		O_JSON,
		O_TIMEOUT,
		O_WAIT,
		O_LIMIT,
		O_STATE,
		O_BEFORE,
		O_VERSION
	};
	static const struct option longopts[] = {
	    {"server", required_argument, NULL, O_SERVER},
	    {"token", required_argument, NULL, O_TOKEN},
	    {"json", no_argument, NULL, O_JSON},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"wait", no_argument, NULL, O_WAIT},
	    {"limit", required_argument, NULL, O_LIMIT},
	    {"state", required_argument, NULL, O_STATE},
	    {"before", required_argument, NULL, O_BEFORE},
	    {"version", no_argument, NULL, O_VERSION},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *server = kc_env("KEELCTL_SERVER");
	const char *timeout = NULL;
	const char *limit = NULL;
	int given = 0, rc, c;

	kc->token = kc_env("KEELCTL_TOKEN");
	if (kc->token == NULL)
		kc->token = kc_env("KEELD_TOKEN");
	opterr = 0; /* keelctl's own messages, with the usage */
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case O_SERVER:
			server = optarg;
			break;
		case O_TOKEN:
			kc->token = optarg[0] != '\0' ? optarg : NULL;
			break;
		case O_JSON:
			kc->json = 1;
			break;
		case O_TIMEOUT:
			timeout = optarg;
			break;
		case O_WAIT:
			kc->wait = 1;
			given |= KC_O_WAIT;
			break;
		case O_LIMIT:
			limit = optarg;
			given |= KC_O_LIMIT;
			break;
		case O_STATE:
			kc->state = optarg;
			given |= KC_O_STATE;
			break;
		case O_BEFORE:
			kc->before = optarg;
			given |= KC_O_BEFORE;
			break;
		case O_VERSION:
			printf("keelctl %s\n", KEEL_VERSION_STRING);
			exit(KC_OK);
		case 'h':
			fputs(kc_usage, stdout);
			exit(KC_OK);
		default:
			if (optopt != 0 && optopt < 256)
				return kc_usage_error("unknown option -%c",
						      optopt);
			/* A long option: getopt names it in argv. */
			if (optopt == 0)
				return kc_usage_error("unknown option %s",
						      argv[optind - 1]);
			return kc_usage_error("%s needs a value",
					      argv[optind - 1]);
		}
	}

	if (optind >= argc)
		return kc_usage_error("no command given");
	const char *name = argv[optind++];
	*cmd = NULL;
	for (size_t i = 0; i < sizeof(kc_cmds) / sizeof(kc_cmds[0]); i++)
		if (strcmp(name, kc_cmds[i].name) == 0)
			*cmd = &kc_cmds[i];
	if (*cmd == NULL)
		return kc_usage_error("unknown command '%s'", name);
	int nargs = argc - optind;
	if (nargs < (*cmd)->min_args || nargs > (*cmd)->max_args) {
		if ((*cmd)->max_args == 0 && (*cmd)->args[0] == '\0')
			return kc_usage_error("%s takes no arguments", name);
		return kc_usage_error("usage: keelctl %s %s", name,
				      (*cmd)->args);
	}
	for (int i = 0; i < nargs; i++) {
		if (argv[optind + i][0] == '\0')
			return kc_usage_error("%s: an empty argument", name);
		args[i] = argv[optind + i];
	}

	static const struct {
		int bit;
		const char *name;
	} opt_names[] = {{KC_O_WAIT, "--wait"},
			 {KC_O_LIMIT, "--limit"},
			 {KC_O_STATE, "--state"},
			 {KC_O_BEFORE, "--before"}};
	for (size_t i = 0; i < sizeof(opt_names) / sizeof(opt_names[0]); i++)
		if ((given & opt_names[i].bit) &&
		    !((*cmd)->opts & opt_names[i].bit))
			return kc_usage_error("%s is not an option of %s",
					      opt_names[i].name, name);

	if (((*cmd)->id == KC_SHOW || (*cmd)->id == KC_CANCEL) &&
	    !kc_is_id(args[0]))
		return kc_usage_error("%s: '%s' is not a run id (a number)",
				      name, args[0]);
	if (limit != NULL && (rc = kc_set_limit(kc, limit)) != KC_OK)
		return rc;
	if (kc->state != NULL && !kc_state_known(kc->state))
		return kc_usage_error("--state: '%s' is not a run state (%s)",
				      kc->state, kc_state_names);
	if (kc->before != NULL && !kc_is_id(kc->before))
		return kc_usage_error("--before: '%s' is not an id (a number)",
				      kc->before);
	if (kc->token != NULL && kc_has_ctl(kc->token))
		return kc_usage_error("the token has control characters "
				      "(a line break?)");
	kc->timeout_ms = KC_DEFAULT_TIMEOUT_MS;
	if (timeout != NULL && (rc = kc_set_timeout(kc, timeout)) != KC_OK)
		return rc;
	return kc_set_server(kc, server != NULL ? server : KC_DEFAULT_SERVER);
}

int main(int argc, char **argv)
{
	struct kc kc = {0};
	const struct kc_cmd *cmd = NULL;
	char *args[2] = {NULL, NULL};
	int rc;

	rc = kc_parse(&kc, argc, argv, &cmd, args);
	if (rc != KC_OK) {
		free(kc.server);
		return rc;
	}
	if (cmd->id == KC_HELP) {
		fputs(kc_usage, stdout);
		free(kc.server);
		return KC_OK;
	}
	kc.color = !kc.json && kc_color_wanted();
	rc = kc_open(&kc);
	if (rc == KC_OK)
		rc = kc_dispatch(&kc, cmd, args);
	kc_close(&kc);
	free(kc.server);
	if (fflush(stdout) != 0 && rc == KC_OK)
		rc = kc_err("cannot write the output");
	return rc;
}
