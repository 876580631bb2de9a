/*
 * cmd/keeld/keeld.c - the daemon's wiring: options, logger, store,
 * executors, scheduler, HTTP server, signals and systemd (keeld.h).
 *
 * Start-up is all or nothing: every step that fails says why on stderr
 * (and in the log) and keeld exits 1 with nothing half-started. Running,
 * the main thread only waits for signals and feeds the systemd watchdog
 * while the scheduler loop is alive, so a hung keeld is restarted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <keel.h>
#include <keel/api.h>
#include <keel/exec.h>
#include <keel/sched.h>
#include <keel/store.h>

#include "keeld.h"

#define MOD "keeld"

struct opts {
	const char *listen;
	const char *data_dir;
	const char *jobs;
	const char *token;
	const char *token_file;
	const char *node;
	const char *log_level;
	const char *log_format;
	const char *sync;
	const char *store;  /* NULL: SQLite in data_dir */
	const char *tags;   /* "a,b" */
	char tag_text[32 * 65 + 1]; /* tags, split in place by parse_tags */
	const char *tag[32];
	size_t n_tags;
	int workers;
	int http_threads;
	int max_header; /* bytes of a request line and headers */
	int64_t drain_timeout;
	int64_t missed_after;
	int64_t lease_ttl, heartbeat, rescue_after;
	int demo;
};

static void usage(FILE *f)
{
	fputs("usage: keeld [options]\n"
	      "\n"
	      "Runs the keel scheduler. Every option can also be set in the\n"
	      "environment variable shown; the command line wins.\n"
	      "\n"
	      "  --listen ADDR:PORT      HTTP API and dashboard "
	      "(KEELD_LISTEN, default 127.0.0.1:8080)\n"
	      "  --data-dir DIR          state directory (KEELD_DATA_DIR, default\n"
	      "                          /var/lib/keeld as root, else "
	      "~/.local/state/keeld)\n"
	      "  --store URI             postgresql://... (or libpq's \"host=... "
	      "dbname=...\"):\n"
	      "                          a cluster node on that database "
	      "(KEELD_STORE;\n"
	      "                          default: SQLite in the data directory)\n"
	      "  --jobs FILE             JSON jobs created or replaced at start "
	      "(KEELD_JOBS)\n"
	      "  --token TOKEN           bearer token required by the API "
	      "(KEELD_TOKEN)\n"
	      "  --token-file FILE       read the token from FILE "
	      "(KEELD_TOKEN_FILE)\n"
	      "  --workers N             runs at once (KEELD_WORKERS, default 16)\n"
	      "  --http-threads N        HTTP event threads (KEELD_HTTP_THREADS, "
	      "default 1)\n"
	      "  --max-header-size N     bytes of a request's line and headers, "
	      "1024..1048576;\n"
	      "                          more is refused with 431 "
	      "(KEELD_MAX_HEADER_SIZE,\n"
	      "                          default 8192)\n"
	      "  --node-id NAME          this node's name, stamped on its runs\n"
	      "                          (KEELD_NODE_ID, default HOST:PORT; "
	      "alias --node)\n"
	      "  --tags A,B              cluster: this node's tags; a job with "
	      "tags runs\n"
	      "                          only on nodes that have them all "
	      "(KEELD_TAGS)\n"
	      "  --lease-ttl DUR         cluster: leader lease (KEELD_LEASE_TTL, "
	      "default 3s)\n"
	      "  --heartbeat DUR         cluster: beat period (KEELD_HEARTBEAT, "
	      "default 500ms)\n"
	      "  --rescue-after DUR      cluster: a run unbeaten this long is "
	      "rescued\n"
	      "                          (KEELD_RESCUE_AFTER, default 6s)\n"
	      "  --drain-timeout DUR     SIGTERM: wait this long for running runs\n"
	      "                          (KEELD_DRAIN_TIMEOUT, default 30s)\n"
	      "  --missed-after DUR      a tick this late is missed "
	      "(KEELD_MISSED_AFTER, default 10s)\n"
	      "  --sync normal|full      database sync (KEELD_SYNC, default "
	      "normal)\n"
	      "  --log-level LEVEL       debug, info, warn, error "
	      "(KEELD_LOG_LEVEL, default info)\n"
	      "  --log-format FMT        json or console (KEELD_LOG_FORMAT, "
	      "default json)\n"
	      "  --demo                  register the demo handlers (demo.ok,\n"
	      "                          demo.fail, demo.crash) (KEELD_DEMO=1)\n"
	      "  --help, --version\n",
	      f);
}

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v != NULL && v[0] != '\0' ? v : def;
}

static int parse_int(const char *what, const char *s, int min, int max,
		     int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "keeld: %s: '%s' is not an integer %d..%d\n",
			what, s, min, max);
		return -1;
	}
	*out = (int)v;
	return 0;
}

static int parse_dur(const char *what, const char *s, int64_t min,
		     int64_t max, int64_t *out)
{
	char err[KEEL_CRON_ERR_MAX];

	if (keel_duration_parse(s, min, max, out, err, sizeof(err)) != 0) {
		fprintf(stderr, "keeld: %s: %s\n", what, err);
		return -1;
	}
	return 0;
}

/* A libpq URI, or a keyword string ("host=... dbname=..."). The password
 * it may hold is never printed back. */
static int is_pg_uri(const char *s)
{
	return strncmp(s, "postgresql://", 13) == 0 ||
	       strncmp(s, "postgres://", 11) == 0 || strchr(s, '=') != NULL;
}

/* --tags "a,b": 1..32 distinct valid tags, into o->tag (pointing into
 * o->tag_text). */
static int parse_tags(struct opts *o)
{
	const char *list = o->tags;
	char *buf = o->tag_text, *p, *save = NULL;
	size_t n = 0;

	o->n_tags = 0;
	if (strlen(list) >= sizeof(o->tag_text)) {
		fprintf(stderr, "keeld: --tags: at most 32 tags of 64 characters\n");
		return -1;
	}
	snprintf(buf, sizeof(o->tag_text), "%s", list);
	if (buf[0] == ',' || (buf[0] != '\0' && buf[strlen(buf) - 1] == ',') ||
	    strstr(buf, ",,") != NULL) {
		fprintf(stderr, "keeld: --tags: an empty tag in '%s'\n", list);
		return -1;
	}
	for (p = strtok_r(buf, ",", &save); p != NULL;
	     p = strtok_r(NULL, ",", &save)) {
		if (!keel_job_tag_valid(p)) {
			fprintf(stderr,
				"keeld: --tags: '%s' is not 1-64 characters of "
				"[A-Za-z0-9._:=/-]\n",
				p);
			return -1;
		}
		for (size_t k = 0; k < n; k++) {
			if (strcmp(o->tag[k], p) == 0) {
				fprintf(stderr, "keeld: --tags: '%s' twice\n", p);
				return -1;
			}
		}
		if (n == sizeof(o->tag) / sizeof(o->tag[0])) {
			fprintf(stderr, "keeld: --tags: at most 32 tags\n");
			return -1;
		}
		o->tag[n++] = p;
	}
	if (n == 0) {
		fprintf(stderr, "keeld: --tags: no tag in '%s'\n", list);
		return -1;
	}
	o->n_tags = n;
	return 0;
}

enum {
	O_LISTEN = 256, O_DATA, O_JOBS, O_TOKEN, O_TOKEN_FILE, O_WORKERS,
	O_HTTP_THREADS, O_NODE, O_DRAIN, O_MISSED, O_SYNC, O_LEVEL, O_FORMAT,
	O_DEMO, O_HELP, O_VERSION, O_STORE, O_TAGS, O_LEASE, O_BEAT, O_RESCUE,
	O_MAX_HEADER,
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longs[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "data-dir", required_argument, NULL, O_DATA },
		{ "jobs", required_argument, NULL, O_JOBS },
		{ "token", required_argument, NULL, O_TOKEN },
		{ "token-file", required_argument, NULL, O_TOKEN_FILE },
		{ "workers", required_argument, NULL, O_WORKERS },
		{ "http-threads", required_argument, NULL, O_HTTP_THREADS },
		{ "max-header-size", required_argument, NULL, O_MAX_HEADER },
		{ "node", required_argument, NULL, O_NODE },
		{ "node-id", required_argument, NULL, O_NODE },
		{ "store", required_argument, NULL, O_STORE },
		{ "tags", required_argument, NULL, O_TAGS },
		{ "lease-ttl", required_argument, NULL, O_LEASE },
		{ "heartbeat", required_argument, NULL, O_BEAT },
		{ "rescue-after", required_argument, NULL, O_RESCUE },
		{ "drain-timeout", required_argument, NULL, O_DRAIN },
		{ "missed-after", required_argument, NULL, O_MISSED },
		{ "sync", required_argument, NULL, O_SYNC },
		{ "log-level", required_argument, NULL, O_LEVEL },
		{ "log-format", required_argument, NULL, O_FORMAT },
		{ "demo", no_argument, NULL, O_DEMO },
		{ "help", no_argument, NULL, O_HELP },
		{ "version", no_argument, NULL, O_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	const char *workers = env_or("KEELD_WORKERS", "16");
	const char *threads = env_or("KEELD_HTTP_THREADS", "1");
	const char *header = env_or("KEELD_MAX_HEADER_SIZE", "8192");
	const char *drain = env_or("KEELD_DRAIN_TIMEOUT", "30s");
	const char *missed = env_or("KEELD_MISSED_AFTER", "10s");
	const char *lease = env_or("KEELD_LEASE_TTL", "3s");
	const char *beat = env_or("KEELD_HEARTBEAT", "500ms");
	const char *rescue = env_or("KEELD_RESCUE_AFTER", "6s");
	int c;

	o->listen = env_or("KEELD_LISTEN", "127.0.0.1:8080");
	o->data_dir = env_or("KEELD_DATA_DIR", NULL);
	o->jobs = env_or("KEELD_JOBS", NULL);
	o->token = env_or("KEELD_TOKEN", NULL);
	o->token_file = env_or("KEELD_TOKEN_FILE", NULL);
	o->node = env_or("KEELD_NODE_ID", env_or("KEELD_NODE", NULL));
	o->store = env_or("KEELD_STORE", NULL);
	o->tags = env_or("KEELD_TAGS", NULL);
	o->log_level = env_or("KEELD_LOG_LEVEL", "info");
	o->log_format = env_or("KEELD_LOG_FORMAT", "json");
	o->sync = env_or("KEELD_SYNC", "normal");
	o->demo = strcmp(env_or("KEELD_DEMO", "0"), "1") == 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		switch (c) {
		case O_LISTEN: o->listen = optarg; break;
		case O_DATA: o->data_dir = optarg; break;
		case O_JOBS: o->jobs = optarg; break;
		case O_TOKEN: o->token = optarg; break;
		case O_TOKEN_FILE: o->token_file = optarg; break;
		case O_WORKERS: workers = optarg; break;
		case O_HTTP_THREADS: threads = optarg; break;
		case O_MAX_HEADER: header = optarg; break;
		case O_NODE: o->node = optarg; break;
		case O_DRAIN: drain = optarg; break;
		case O_MISSED: missed = optarg; break;
		case O_SYNC: o->sync = optarg; break;
		case O_LEVEL: o->log_level = optarg; break;
		case O_FORMAT: o->log_format = optarg; break;
		case O_DEMO: o->demo = 1; break;
		case O_STORE: o->store = optarg; break;
		case O_TAGS: o->tags = optarg; break;
		case O_LEASE: lease = optarg; break;
		case O_BEAT: beat = optarg; break;
		case O_RESCUE: rescue = optarg; break;
		case O_HELP: usage(stdout); exit(0);
		case O_VERSION: printf("keeld %s\n", KEEL_VERSION_STRING); exit(0);
		default:
			fprintf(stderr, "keeld: unknown or incomplete option '%s'\n",
				argv[optind - 1]);
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "keeld: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return -1;
	}
	if (parse_int("--workers", workers, 1, 1024, &o->workers) != 0 ||
	    parse_int("--http-threads", threads, 1, 64, &o->http_threads) != 0 ||
	    parse_int("--max-header-size", header, 1024, 1024 * 1024,
		      &o->max_header) != 0 ||
	    parse_dur("--drain-timeout", drain, 0, 24 * 3600 * KEEL_SEC,
		      &o->drain_timeout) != 0 ||
	    parse_dur("--missed-after", missed, KEEL_SEC, 24 * 3600 * KEEL_SEC,
		      &o->missed_after) != 0 ||
	    parse_dur("--heartbeat", beat, KEEL_MSEC, 60 * KEEL_SEC,
		      &o->heartbeat) != 0 ||
	    parse_dur("--lease-ttl", lease, KEEL_MSEC, 3600 * KEEL_SEC,
		      &o->lease_ttl) != 0 ||
	    parse_dur("--rescue-after", rescue, KEEL_MSEC, 24 * 3600 * KEEL_SEC,
		      &o->rescue_after) != 0)
		return -1;
	if (o->lease_ttl < 2 * o->heartbeat || o->rescue_after < 2 * o->heartbeat) {
		fprintf(stderr, "keeld: --lease-ttl and --rescue-after must be at "
				"least two --heartbeat periods\n");
		return -1;
	}
	if (o->store != NULL) {
		char why[256];

		/* Not echoed: it may hold a password. */
		if (!is_pg_uri(o->store)) {
			fprintf(stderr,
				"keeld: --store: not a PostgreSQL URI "
				"(postgresql://...) or libpq connection string "
				"(\"host=... dbname=...\"); leave it out for "
				"SQLite in --data-dir\n");
			return -1;
		}
		if (keel_store_pg_conninfo_check(o->store, why, sizeof(why)) != 0) {
			fprintf(stderr, "keeld: --store: %s\n", why);
			return -1;
		}
	}
	if (o->tags != NULL && o->store == NULL) {
		fprintf(stderr, "keeld: --tags needs a cluster (--store "
				"postgresql://...)\n");
		return -1;
	}
	if (o->tags != NULL && parse_tags(o) != 0)
		return -1;
	if (strcmp(o->sync, "normal") != 0 && strcmp(o->sync, "full") != 0) {
		fprintf(stderr, "keeld: --sync: '%s' is not normal or full\n",
			o->sync);
		return -1;
	}
	if (strcmp(o->log_format, "json") != 0 &&
	    strcmp(o->log_format, "console") != 0) {
		fprintf(stderr, "keeld: --log-format: '%s' is not json or console\n",
			o->log_format);
		return -1;
	}
	return 0;
}

/* "127.0.0.1:8080", "[::1]:8080", ":8080" (all IPv4 addresses). */
static int parse_listen(const char *s, char *addr, size_t alen, uint16_t *port)
{
	const char *colon;
	int p;

	if (s[0] == '[') {
		const char *end = strchr(s, ']');

		if (end == NULL || end[1] != ':')
			goto bad;
		snprintf(addr, alen, "%.*s", (int)(end - s - 1), s + 1);
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			goto bad;
		snprintf(addr, alen, "%.*s", (int)(colon - s), s);
		if (addr[0] == '\0')
			snprintf(addr, alen, "0.0.0.0");
	}
	if (parse_int("--listen port", colon + 1, 0, 65535, &p) != 0)
		return -1;
	*port = (uint16_t)p;
	return 0;
bad:
	fprintf(stderr, "keeld: --listen: '%s' is not ADDR:PORT\n", s);
	return -1;
}

static char *read_file(const char *path, size_t max, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(max + 1);
	if (buf == NULL) {
		fclose(f);
		snprintf(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	n = fread(buf, 1, max + 1, f);
	if (ferror(f) || n > max) {
		snprintf(err, errlen, "%s: %s", path,
			 ferror(f) ? strerror(errno) : "larger than allowed");
		fclose(f);
		free(buf);
		return NULL;
	}
	fclose(f);
	buf[n] = '\0';
	return buf;
}

/* ---- the jobs file ------------------------------------------------------- */

/*
 * Every job of the file is validated before any is stored: a file with one
 * bad job changes nothing and keeld does not start.
 */
static int load_jobs(struct keel_sched *s, struct keel_executor *ex,
		     const char *path, struct keel_logger *lg)
{
	json_error_t je;
	json_t *root, *arr;
	struct keel_job **jobs;
	size_t n, i;
	char err[KEEL_JOB_ERR_MAX];
	int rc = 0;

	root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		fprintf(stderr, "keeld: jobs file %s: line %d, column %d: %s\n",
			path, je.line, je.column, je.text);
		return -1;
	}
	if (json_is_array(root))
		arr = root;
	else if (json_is_object(root) && json_object_get(root, "jobs") != NULL)
		arr = json_object_get(root, "jobs");
	else
		arr = NULL;
	n = arr != NULL ? json_array_size(arr) : 1;
	if (arr != NULL && !json_is_array(arr)) {
		fprintf(stderr, "keeld: jobs file %s: \"jobs\" must be an array\n",
			path);
		json_decref(root);
		return -1;
	}
	jobs = calloc(n ? n : 1, sizeof(*jobs));
	if (jobs == NULL) {
		json_decref(root);
		return -1;
	}
	for (i = 0; i < n && rc == 0; i++) {
		json_t *v = arr != NULL ? json_array_get(arr, i) : root;

		rc = keel_job_from_json(v, &jobs[i], err, sizeof(err));
		if (rc != 0) {
			const char *name = json_string_value(
				json_object_get(v, "name"));

			if (name != NULL)
				fprintf(stderr,
					"keeld: jobs file %s: job %zu ('%s'): %s\n",
					path, i + 1, name, err);
			else
				fprintf(stderr,
					"keeld: jobs file %s: job %zu: %s\n",
					path, i + 1, err);
		} else if (jobs[i]->type == KEEL_JOB_HANDLER &&
			   !keel_exec_handler_exists(ex, jobs[i]->handler.name)) {
			fprintf(stderr,
				"keeld: jobs file %s: job %zu ('%s'): "
				"executor.name: no handler '%s' is registered "
				"in this keeld\n",
				path, i + 1, jobs[i]->name, jobs[i]->handler.name);
			rc = -EINVAL;
		}
		for (size_t k = 0; rc == 0 && k < i; k++) {
			if (strcmp(jobs[k]->name, jobs[i]->name) == 0) {
				fprintf(stderr,
					"keeld: jobs file %s: job %zu: name "
					"'%s' is also job %zu\n",
					path, i + 1, jobs[i]->name, k + 1);
				rc = -EINVAL;
			}
		}
	}
	for (i = 0; i < n && rc == 0; i++) {
		enum keel_store_put res;

		rc = keel_sched_job_put(s, jobs[i], &res, err, sizeof(err));
		if (rc != 0)
			fprintf(stderr, "keeld: jobs file %s: job '%s': %s\n",
				path, jobs[i]->name, err);
		else
			keel_log_info(lg, MOD, "job from the jobs file",
				      KEEL_STR("job", jobs[i]->name),
				      KEEL_STR("result",
					       res == KEEL_STORE_CREATED ? "created"
					       : res == KEEL_STORE_REPLACED
						       ? "replaced"
						       : "unchanged"));
	}
	for (i = 0; i < n; i++)
		keel_job_free(jobs[i]);
	free(jobs);
	json_decref(root);
	return rc == 0 ? 0 : -1;
}

/* ---- demo handlers (--demo) ---------------------------------------------- */

static int demo_ok(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	return 0;
}

static int demo_fail(struct keel_exec_call *call, void *ud)
{
	(void)ud;
	snprintf(call->error, call->errlen,
		 "demo.fail: attempt %d failed on purpose", call->attempt);
	return 1;
}

static volatile int *demo_null;

/* The fault must reach keel's handler, not UBSan's check (ASan builds). */
__attribute__((noinline, no_sanitize("undefined"))) static int
demo_crash(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	/* A real NULL dereference: the fault fails this run only. */
	return *demo_null;
}

/* ---- running -------------------------------------------------------------- */

struct daemon {
	struct opts o;
	struct keel_logger *log;
	struct keel_metrics *metrics;
	struct keel_store *store;
	struct keel_executor *exec;
	struct keel_sched *sched;
	struct keel_http_router *router;
	struct keel_http_server *http;
	struct keel_http_metrics *http_metrics;
	struct keel_api *api;
	struct keel_http_auth auth;
	char *token;
	int started; /* the scheduler ran: stopping drains it */
	char data_dir[PATH_MAX];
	char node[256];
	char store_desc[PATH_MAX + 16];
	char spool[PATH_MAX + 256];
};

/* The result spool: in the data directory, one per node (several nodes of
 * a cluster may share a host and a directory). "" when the directory
 * cannot be made: results then wait in memory only. */
static void spool_path(struct daemon *d)
{
	char name[256];
	size_t i;

	if (mkdir(d->data_dir, 0700) != 0 && errno != EEXIST) {
		keel_log_warn(d->log, MOD,
			      "no result spool: cannot make the data directory",
			      KEEL_STR("data_dir", d->data_dir),
			      KEEL_STR("error", strerror(errno)));
		d->spool[0] = '\0';
		return;
	}
	snprintf(name, sizeof(name), "%s", d->node);
	for (i = 0; name[i] != '\0'; i++)
		if (name[i] == '/' || name[i] == '\\' || (unsigned char)name[i] < 32)
			name[i] = '_';
	if ((size_t)snprintf(d->spool, sizeof(d->spool), "%s/results-%.200s.json",
			     d->data_dir, name) >= sizeof(d->spool))
		d->spool[0] = '\0'; /* a data directory path of 4 KiB */
}

static int default_data_dir(char *out, size_t len)
{
	const char *home = getenv("HOME");

	if (geteuid() == 0) {
		snprintf(out, len, "/var/lib/keeld");
		return 0;
	}
	if (home == NULL || home[0] == '\0') {
		fprintf(stderr, "keeld: no --data-dir and no $HOME\n");
		return -1;
	}
	snprintf(out, len, "%s/.local/state/keeld", home);
	/* The parents of the default, as `mkdir -p` would. */
	{
		char p[PATH_MAX];

		snprintf(p, sizeof(p), "%s/.local", home);
		mkdir(p, 0700);
		snprintf(p, sizeof(p), "%s/.local/state", home);
		mkdir(p, 0700);
	}
	return 0;
}

static int setup_log(struct daemon *d)
{
	struct keel_log_config lc;
	enum keel_log_level lvl;

	if (keel_log_level_parse(d->o.log_level, &lvl) != 0) {
		fprintf(stderr, "keeld: --log-level: unknown level '%s'\n",
			d->o.log_level);
		return -1;
	}
	keel_log_config_init(&lc);
	lc.level = lvl;
	lc.format = strcmp(d->o.log_format, "console") == 0
			    ? KEEL_LOG_FORMAT_CONSOLE
			    : KEEL_LOG_FORMAT_JSON;
	lc.service = "keeld";
	lc.async = 1;
	if (keel_log_new(&lc, &d->log) != 0) {
		fprintf(stderr, "keeld: cannot create the logger\n");
		return -1;
	}
	keel_log_set_default(d->log);
	return 0;
}

/* --node, else HOST:PORT. */
static void node_name(struct daemon *d, unsigned port)
{
	char host[200] = "localhost";

	if (d->o.node != NULL) {
		snprintf(d->node, sizeof(d->node), "%s", d->o.node);
		return;
	}
	gethostname(host, sizeof(host) - 1);
	snprintf(d->node, sizeof(d->node), "%s:%u", host, port);
}

/* Fails with a message on stderr and in the log. */
#define FAIL(d, ...)                                                           \
	do {                                                                   \
		char m__[2048];                                                \
		snprintf(m__, sizeof(m__), __VA_ARGS__);                       \
		fprintf(stderr, "keeld: %s\n", m__);                           \
		keel_log_fatal((d)->log, MOD, m__);                            \
		return -1;                                                     \
	} while (0)

static int start(struct daemon *d, keeld_setup_fn setup, void *ud)
{
	struct keel_store_config stc;
	struct keel_exec_config ec;
	struct keel_sched_config sc;
	struct keel_http_config hc;
	struct keel_metrics_config mc;
	struct keel_api_config ac;
	static const char *const public_paths[] = { "/", "/healthz", "/readyz",
						    NULL };
	char addr[128], err[1024];
	uint16_t port;
	int rc;

	if (parse_listen(d->o.listen, addr, sizeof(addr), &port) != 0)
		return -1;
	if (d->o.data_dir != NULL)
		snprintf(d->data_dir, sizeof(d->data_dir), "%s", d->o.data_dir);
	else if (default_data_dir(d->data_dir, sizeof(d->data_dir)) != 0)
		return -1;
	if (d->o.token_file != NULL) {
		char *t = read_file(d->o.token_file, 4096, err, sizeof(err));

		if (t == NULL)
			FAIL(d, "--token-file: %s", err);
		t[strcspn(t, "\r\n")] = '\0';
		d->token = t;
	} else if (d->o.token != NULL) {
		d->token = strdup(d->o.token);
	}
	if (d->token != NULL && d->token[0] == '\0')
		FAIL(d, "the token is empty");

	keel_metrics_config_init(&mc);
	if (keel_metrics_new(&mc, &d->metrics) != 0 ||
	    keel_metrics_add_process(d->metrics) != 0)
		FAIL(d, "cannot create the metrics registry");

	keel_store_config_init(&stc);
	stc.sync_full = strcmp(d->o.sync, "full") == 0;
	/* A node paused inside a transaction (SIGSTOP, a frozen VM) loses
	 * its session, and the locks that would hold a takeover off, when
	 * its lease would have run out anyway. */
	stc.idle_timeout = d->o.lease_ttl;
	if (d->o.store != NULL) {
		rc = keel_store_pg_open(d->o.store, &stc, &d->store, err,
					sizeof(err));
		if (rc != 0)
			FAIL(d, "store (PostgreSQL): %s", err);
		snprintf(d->store_desc, sizeof(d->store_desc), "postgresql");
	} else {
		rc = keel_store_sqlite_open(d->data_dir, &stc, &d->store, err,
					    sizeof(err));
		if (rc != 0)
			FAIL(d, "store: %s", err);
		snprintf(d->store_desc, sizeof(d->store_desc), "sqlite:%s",
			 d->data_dir);
	}

	keel_exec_config_init(&ec);
	ec.log = d->log;
	if (keel_exec_new(&ec, &d->exec) != 0)
		FAIL(d, "cannot create the executors");
	if (d->o.demo &&
	    (keel_exec_handler_register(d->exec, "demo.ok", demo_ok, NULL) != 0 ||
	     keel_exec_handler_register(d->exec, "demo.fail", demo_fail, NULL) != 0 ||
	     keel_exec_handler_register(d->exec, "demo.crash", demo_crash, NULL) != 0))
		FAIL(d, "cannot register the demo handlers");
	if (setup != NULL && setup(d->exec, ud) != 0)
		FAIL(d, "the embedding program's setup failed");

	/* Port 0: the kernel's choice, renamed once known. */
	node_name(d, port);
	keel_sched_config_init(&sc);
	sc.store = d->store;
	sc.exec = d->exec;
	sc.log = d->log;
	sc.metrics = d->metrics;
	sc.node = d->node;
	sc.workers = d->o.workers;
	sc.late = d->o.missed_after;
	spool_path(d);
	sc.spool = d->spool[0] != '\0' ? d->spool : NULL;
	if (d->o.store != NULL) {
		sc.cluster = 1;
		sc.lease_ttl = d->o.lease_ttl;
		sc.heartbeat = d->o.heartbeat;
		sc.rescue_after = d->o.rescue_after;
		sc.tags = d->o.tag; /* checked and split by parse_opts */
		sc.n_tags = d->o.n_tags;
	}
	rc = keel_sched_new(&sc, &d->sched, err, sizeof(err));
	if (rc != 0)
		FAIL(d, "scheduler: %s", err);
	if (d->o.jobs != NULL && load_jobs(d->sched, d->exec, d->o.jobs, d->log) != 0)
		FAIL(d, "the jobs file %s was refused; nothing from it was "
			"stored", d->o.jobs);

	if (keel_http_router_new(&d->router) != 0)
		FAIL(d, "out of memory");
	ac.sched = d->sched;
	ac.store = d->store;
	ac.exec = d->exec;
	ac.metrics = d->metrics;
	ac.store_desc = d->store_desc;
	if (keel_api_new(&ac, d->router, &d->api) != 0)
		FAIL(d, "cannot set up the API routes");
	keel_http_config_init(&hc);
	hc.address = addr;
	hc.port = port;
	hc.router = d->router;
	hc.threads = (unsigned)d->o.http_threads;
	hc.max_header_size = (size_t)d->o.max_header;
	hc.logger = d->log;
	if (keel_http_server_new(&hc, &d->http) != 0 ||
	    keel_http_metrics_new(d->metrics, &d->http_metrics) != 0)
		FAIL(d, "cannot create the HTTP server");
	keel_http_use(d->http, keel_http_mw_recover, d->log);
	keel_http_use(d->http, keel_http_mw_trace, NULL);
	keel_http_use(d->http, keel_http_mw_access_log, d->log);
	keel_http_use(d->http, keel_http_mw_metrics, d->http_metrics);
	if (d->token != NULL) {
		d->auth.token = d->token;
		d->auth.public = public_paths;
		keel_http_use(d->http, keel_http_mw_auth, &d->auth);
	}
	rc = keel_http_server_start(d->http);
	if (rc != 0)
		FAIL(d, "cannot listen on %s: %s", d->o.listen, strerror(-rc));
	if (port == 0 && d->o.node == NULL) {
		node_name(d, keel_http_server_port(d->http));
		keel_sched_set_node(d->sched, d->node);
	}
	rc = keel_sched_start(d->sched);
	if (rc != 0)
		FAIL(d, "cannot start the scheduler: %s", strerror(-rc));
	d->started = 1;
	keel_log_info(d->log, MOD, "keeld started",
		      KEEL_STR("version", KEEL_VERSION_STRING),
		      KEEL_STR("listen", d->o.listen),
		      KEEL_UINT("port", keel_http_server_port(d->http)),
		      KEEL_STR("data_dir", d->data_dir),
		      KEEL_STR("store", d->store_desc),
		      KEEL_STR("node", d->node),
		      KEEL_BOOL("auth", d->token != NULL));
	fprintf(stderr, "keeld: listening on http://%s%s%s:%u/ (dashboard, API under /v1), store %s%s%s\n",
		strchr(addr, ':') ? "[" : "", addr, strchr(addr, ':') ? "]" : "",
		keel_http_server_port(d->http), d->store_desc,
		d->o.store != NULL ? ", node " : "",
		d->o.store != NULL ? d->node : "");
	return 0;
}

static void stop(struct daemon *d)
{
	if (d->api != NULL)
		keel_api_set_draining(d->api);
	if (d->sched != NULL && d->started) {
		keel_log_info(d->log, MOD, "draining",
			      KEEL_INT("timeout_ms", d->o.drain_timeout / KEEL_MSEC));
		if (keel_sched_stop(d->sched, d->o.drain_timeout) == -ETIMEDOUT)
			keel_log_warn(d->log, MOD,
				      "drain timed out: running runs were "
				      "canceled");
	}
	if (d->http != NULL)
		keel_http_server_stop(d->http, 5 * KEEL_SEC);
	keel_http_server_free(d->http);
	keel_api_free(d->api);
	keel_http_router_free(d->router);
	keel_http_metrics_free(d->http_metrics);
	keel_sched_free(d->sched);
	keel_exec_free(d->exec);
	keel_store_close(d->store);
	keel_metrics_free(d->metrics);
	free(d->token);
}

/* A cluster node whose id another live keeld has: the scheduler found it
 * before its first beat and does nothing; this one stops (status 1). */
static int node_taken(struct daemon *d)
{
	struct keel_sched_cluster ci;

	keel_sched_cluster_info(d->sched, &ci);
	if (!ci.node_conflict)
		return 0;
	keel_log_error(d->log, MOD,
		       "another keeld is running as this node; stopping",
		       KEEL_STR("node", d->node));
	fprintf(stderr,
		"keeld: another keeld is running as node %s (its heartbeat "
		"goes on in the store); give each its own --node-id\n",
		d->node);
	return 1;
}

/* Waits for SIGTERM/SIGINT; feeds the watchdog while the loop lives; stops
 * (1) when another keeld is this cluster node. */
static int wait_signals(struct daemon *d, const sigset_t *set)
{
	uint64_t wd_usec = 0;
	int64_t period = KEEL_SEC;
	int watchdog = sd_watchdog_enabled(0, &wd_usec) > 0;

	if (watchdog && (int64_t)wd_usec * 1000 / 4 < period)
		period = (int64_t)wd_usec * 1000 / 4;
	sd_notifyf(0, "READY=1\nSTATUS=scheduling, API on %s", d->o.listen);
	for (;;) {
		struct timespec ts = { (time_t)(period / KEEL_SEC),
				       (long)(period % KEEL_SEC) };
		int sig = sigtimedwait(set, NULL, &ts);

		if (sig < 0 && node_taken(d))
			return 1;
		if (sig == SIGTERM || sig == SIGINT) {
			keel_log_info(d->log, MOD, "signal received, stopping",
				      KEEL_STR("signal", sig == SIGTERM ? "SIGTERM"
									: "SIGINT"));
			sd_notify(0, "STOPPING=1\nSTATUS=draining");
			return 0;
		}
		if (watchdog) {
			int64_t age = keel_sched_loop_age(d->sched);

			/* The loop passes every second; one that has not for
			 * half the watchdog time is hung: stop feeding. */
			if (age < (int64_t)wd_usec * 1000 / 2)
				sd_notify(0, "WATCHDOG=1");
			else
				keel_log_error(d->log, MOD,
					       "scheduler loop stalled; not "
					       "feeding the watchdog",
					       KEEL_INT("stalled_ms",
							age / KEEL_MSEC));
		}
	}
}

int keeld_main(int argc, char **argv, keeld_setup_fn setup, void *ud)
{
	struct daemon d;
	sigset_t set;
	int rc;

	memset(&d, 0, sizeof(d));
	if (parse_opts(argc, argv, &d.o) != 0)
		return 2;
	if (keel_init() != 0) {
		fprintf(stderr, "keeld: cannot initialise keel\n");
		return 1;
	}
	/* Every thread created from here on inherits the mask: the signals
	 * are taken by sigtimedwait in this thread only. SIGPIPE: a client
	 * that hangs up is an error on a write, not a death. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (setup_log(&d) != 0)
		return 2;
	keel_log_reopen_on_sighup();
	rc = start(&d, setup, ud);
	if (rc == 0)
		rc = wait_signals(&d, &set);
	stop(&d);
	keel_log_info(d.log, MOD,
		      rc == 0	   ? "keeld stopped"
		      : d.started ? "keeld stopped on an error"
				   : "keeld failed to start");
	keel_log_flush(d.log);
	keel_log_set_default(NULL);
	keel_log_free(d.log);
	return rc == 0 ? 0 : 1;
}
