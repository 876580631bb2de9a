/*
 * tests/sched/test_job.c - job definitions (keel/job.h): the issue's example
 * parses and round-trips; every default; every rejection with its exact
 * reason and *out untouched; random valid jobs round-trip through JSON;
 * keel_job_equal tells every changed field; the shared duration grammar
 * (keel_duration_parse).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <keel/backoff.h>
#include <keel/cron.h>
#include <keel/job.h>
#include "keel_test.h"

#define EXAMPLE                                                               \
	"{\"name\": \"backup\", \"schedule\": \"0 30 2 * * *\", "             \
	"\"timezone\": \"Europe/Berlin\", "                                   \
	"\"executor\": {\"type\": \"shell\", \"command\": "                   \
	"[\"/usr/local/bin/backup\", \"--full\"], \"timeout\": \"10m\"}, "    \
	"\"retry\": {\"max_attempts\": 3, \"backoff\": \"exponential\", "     \
	"\"initial\": \"1s\", \"max\": \"1m\"}, "                             \
	"\"concurrency\": \"forbid\", \"missed\": \"once\", \"enabled\": true}"

#define S INT64_C(1000000000)

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);

	if (v == NULL)
		KEEL_TEST_FAIL("bad test JSON: %s: %s", e.text, text);
	return v;
}

static struct keel_job *parse(const char *text)
{
	char err[KEEL_JOB_ERR_MAX];
	struct keel_job *j = NULL;
	json_t *v = load(text);
	int rc = keel_job_from_json(v, &j, err, sizeof(err));

	if (rc != 0)
		KEEL_TEST_FAIL("refused (%d): %s\n  %s", rc, err, text);
	json_decref(v);
	return j;
}

/* from_json(to_json(j)) equals j, and writes the same JSON again. */
static void check_round_trip(const struct keel_job *j)
{
	char err[KEEL_JOB_ERR_MAX];
	struct keel_job *k = NULL;
	json_t *a = keel_job_to_json(j), *b;

	CHECK(a != NULL);
	if (keel_job_from_json(a, &k, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("to_json output refused: %s", err);
	CHECK(keel_job_equal(j, k));
	CHECK(keel_job_equal(k, j));
	b = keel_job_to_json(k);
	CHECK(b != NULL);
	CHECK(json_equal(a, b));
	json_decref(a);
	json_decref(b);
	keel_job_free(k);
}

TEST(issue_example)
{
	struct keel_job *j = parse(EXAMPLE);

	CHECK_STR(j->name, "backup");
	CHECK_STR(j->schedule, "0 30 2 * * *");
	CHECK_STR(j->timezone, "Europe/Berlin");
	CHECK_INT(j->type, ==, KEEL_JOB_SHELL);
	CHECK_INT(j->shell.n_command, ==, 2);
	CHECK_STR(j->shell.command[0], "/usr/local/bin/backup");
	CHECK_STR(j->shell.command[1], "--full");
	CHECK_INT(j->timeout, ==, 600 * S);
	CHECK_INT(j->retry.max_attempts, ==, 3);
	CHECK_INT(j->retry.backoff, ==, KEEL_BACKOFF_EXPONENTIAL);
	CHECK_INT(j->retry.initial, ==, S);
	CHECK_INT(j->retry.max, ==, 60 * S);
	CHECK_INT(j->concurrency, ==, KEEL_JOB_FORBID);
	CHECK_INT(j->missed, ==, KEEL_JOB_MISSED_ONCE);
	CHECK_INT(j->enabled, ==, 1);
	check_round_trip(j);
	keel_job_free(j);
	keel_job_free(NULL);
	keel_test_leak_check();
}

TEST(defaults)
{
	struct keel_job *j = parse("{\"name\": \"a\", \"schedule\": \"@daily\", "
				   "\"executor\": {\"type\": \"shell\", "
				   "\"command\": [\"true\"]}}");

	CHECK_STR(j->timezone, "UTC");
	CHECK_INT(j->timeout, ==, 0);
	CHECK_INT(j->shell.shell, ==, 0);
	CHECK_INT(j->shell.n_env, ==, 0);
	CHECK(j->shell.dir == NULL);
	CHECK_INT(j->shell.output_limit, ==, 65536);
	CHECK_INT(j->shell.memory_limit, ==, 0);
	CHECK_INT(j->shell.cpu_limit, ==, 0);
	CHECK(j->shell.user == NULL);
	CHECK_INT(j->retry.max_attempts, ==, 1);
	CHECK_INT(j->retry.backoff, ==, KEEL_BACKOFF_EXPONENTIAL);
	CHECK_INT(j->retry.initial, ==, S);
	CHECK_INT(j->retry.max, ==, 60 * S);
	CHECK_INT(j->retry.jitter, ==, 1);
	CHECK_INT(j->concurrency, ==, KEEL_JOB_FORBID);
	CHECK_INT(j->missed, ==, KEEL_JOB_MISSED_SKIP);
	CHECK_INT(j->missed_max, ==, 100);
	CHECK_INT(j->enabled, ==, 1);
	CHECK_INT(j->history.keep_runs, ==, 100);
	CHECK_INT(j->history.keep_days, ==, 30);
	CHECK_INT(j->n_tags, ==, 0);
	CHECK(j->http.method == NULL && j->handler.name == NULL);
	check_round_trip(j);
	keel_job_free(j);

	j = parse("{\"name\": \"h\", \"schedule\": \"@every 1m\", \"executor\": "
		  "{\"type\": \"http\", \"url\": \"https://example.com/hook\"}}");
	CHECK_INT(j->type, ==, KEEL_JOB_HTTP);
	CHECK_STR(j->http.method, "GET");
	CHECK_STR(j->http.url, "https://example.com/hook");
	CHECK_INT(j->http.n_headers, ==, 0);
	CHECK(j->http.body == NULL);
	CHECK_INT(j->http.status_min, ==, 200);
	CHECK_INT(j->http.status_max, ==, 299);
	CHECK_INT(j->shell.output_limit, ==, 0);
	check_round_trip(j);
	keel_job_free(j);

	j = parse("{\"name\": \"f\", \"schedule\": \"@manual\", \"executor\": "
		  "{\"type\": \"handler\", \"name\": \"reindex\"}}");
	CHECK_INT(j->type, ==, KEEL_JOB_HANDLER);
	CHECK_STR(j->handler.name, "reindex");
	check_round_trip(j);
	keel_job_free(j);
	keel_test_leak_check();
}

TEST(every_field)
{
	struct keel_job *j = parse(
	    "{\"name\": \"All.fields_1-x\", \"schedule\": \"@every 1h30m\", "
	    "\"timezone\": \"America/New_York\", \"executor\": {\"type\": "
	    "\"shell\", \"command\": [\"echo $X > out\"], \"shell\": true, "
	    "\"env\": {\"X\": \"1\", \"A_B\": \"two words\"}, \"dir\": \"/tmp\", "
	    "\"timeout\": \"1h0m500ms\", \"output_limit\": 0, "
	    "\"memory_limit\": 1048576, \"cpu_limit\": \"90s\", \"user\": "
	    "\"nobody\"}, \"retry\": {\"max_attempts\": 100, \"backoff\": "
	    "\"linear\", \"initial\": \"500ms\", \"max\": \"24h\", \"jitter\": "
	    "false}, \"concurrency\": \"replace\", \"missed\": \"all\", "
	    "\"missed_max\": 10000, \"enabled\": false, \"history\": "
	    "{\"keep_runs\": 1, \"keep_days\": 36500}, \"tags\": [\"team=ops\", "
	    "\"nightly\"]}");
	json_t *v;

	CHECK_INT(j->shell.shell, ==, 1);
	CHECK_INT(j->shell.n_env, ==, 2);
	CHECK_STR(j->shell.env[0].name, "A_B"); /* sorted */
	CHECK_STR(j->shell.env[0].value, "two words");
	CHECK_STR(j->shell.env[1].name, "X");
	CHECK_STR(j->shell.dir, "/tmp");
	CHECK_INT(j->timeout, ==, 3600 * S + 500000000);
	CHECK_INT(j->shell.output_limit, ==, 0);
	CHECK_INT(j->shell.memory_limit, ==, 1048576);
	CHECK_INT(j->shell.cpu_limit, ==, 90 * S);
	CHECK_STR(j->shell.user, "nobody");
	CHECK_INT(j->retry.backoff, ==, KEEL_BACKOFF_LINEAR);
	CHECK_INT(j->retry.initial, ==, 500000000);
	CHECK_INT(j->retry.jitter, ==, 0);
	CHECK_INT(j->concurrency, ==, KEEL_JOB_REPLACE);
	CHECK_INT(j->missed, ==, KEEL_JOB_MISSED_ALL);
	CHECK_INT(j->missed_max, ==, 10000);
	CHECK_INT(j->enabled, ==, 0);
	CHECK_INT(j->history.keep_runs, ==, 1);
	CHECK_INT(j->history.keep_days, ==, 36500);
	CHECK_INT(j->n_tags, ==, 2);
	CHECK_STR(j->tags[0], "team=ops"); /* order kept */
	/* Durations come back in the largest exact units. */
	v = keel_job_to_json(j);
	CHECK_STR(json_string_value(json_object_get(
		      json_object_get(v, "executor"), "timeout")),
		  "1h500ms");
	CHECK_STR(json_string_value(json_object_get(
		      json_object_get(v, "executor"), "cpu_limit")),
		  "1m30s");
	json_decref(v);
	check_round_trip(j);
	keel_job_free(j);

	j = parse("{\"name\": \"h\", \"schedule\": \"*/5 * * * *\", "
		  "\"executor\": {\"type\": \"http\", \"method\": \"POST\", "
		  "\"url\": \"http://127.0.0.1:8080/x?y=1\", \"headers\": "
		  "{\"X-Token\": \"abc\", \"Content-Type\": \"application/json\"}, "
		  "\"body\": \"{}\", \"expect_status\": 204, \"timeout\": \"5s\"}}");
	CHECK_STR(j->http.method, "POST");
	CHECK_STR(j->http.headers[0].name, "Content-Type");
	CHECK_STR(j->http.body, "{}");
	CHECK_INT(j->http.status_min, ==, 204);
	CHECK_INT(j->http.status_max, ==, 204);
	check_round_trip(j);
	keel_job_free(j);

	j = parse("{\"name\": \"h\", \"schedule\": \"@hourly\", \"executor\": "
		  "{\"type\": \"http\", \"url\": \"http://h\", "
		  "\"expect_status\": \"200-399\", \"body\": \"\"}}");
	CHECK_INT(j->http.status_min, ==, 200);
	CHECK_INT(j->http.status_max, ==, 399);
	CHECK_STR(j->http.body, "");
	check_round_trip(j);
	keel_job_free(j);
	keel_test_leak_check();
}

/* A valid job with one member replaced: "%s" in the template is the
 * replaced part. */
#define JOB_T(exec, rest)                                                     \
	"{\"name\": \"j\", \"schedule\": \"@daily\", \"executor\": " exec rest "}"
#define SHELL_OK "{\"type\": \"shell\", \"command\": [\"/bin/true\"]}"

TEST(rejections)
{
	static const struct {
		const char *json, *reason;
	} bad[] = {
	    {"[]", "job: must be a JSON object"},
	    {"{\"schedule\": \"@daily\", \"executor\": " SHELL_OK "}",
	     "name: missing"},
	    {JOB_T(SHELL_OK, ", \"nmae\": 1"), "nmae: unknown field"},
	    {"{\"name\": \"back up\", \"schedule\": \"@daily\", \"executor\": "
	     SHELL_OK "}", "name: must be 1-64 characters of [A-Za-z0-9._-]"},
	    {"{\"name\": \"\", \"schedule\": \"@daily\", \"executor\": "
	     SHELL_OK "}", "name: must not be empty"},
	    {"{\"name\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", "
	     "\"schedule\": \"@daily\", \"executor\": " SHELL_OK "}",
	     "name: must be 1-64 characters of [A-Za-z0-9._-]"},
	    {"{\"name\": 7, \"schedule\": \"@daily\", \"executor\": "
	     SHELL_OK "}", "name: must be a string"},
	    {"{\"name\": \"a\\u0000b\", \"schedule\": \"@daily\", \"executor\": "
	     SHELL_OK "}", "name: must not contain a NUL character"},
	    {"{\"name\": \"j\", \"executor\": " SHELL_OK "}",
	     "schedule: missing (e.g. \"0 30 2 * * *\" or \"@every 1h\")"},
	    {"{\"name\": \"j\", \"schedule\": \"0 0 32 * *\", \"executor\": "
	     SHELL_OK "}", "schedule: field 3 (day of month): 32 is out of range 1-31"},
	    {"{\"name\": \"j\", \"schedule\": \"@every 500ms\", \"executor\": "
	     SHELL_OK "}", "schedule: @every: unknown unit in '500ms' (h, m or s; "
	     "durations are whole seconds)"},
	    {JOB_T(SHELL_OK, ", \"timezone\": \"Europe/Nowhere\""),
	     "timezone: unknown zone 'Europe/Nowhere'"},
	    {JOB_T(SHELL_OK, ", \"timezone\": \"../etc/passwd\""),
	     "timezone: unknown zone '../etc/passwd'"},
	    {JOB_T(SHELL_OK, ", \"timezone\": 1"), "timezone: must be a string"},
	    {"{\"name\": \"j\", \"schedule\": \"@daily\"}", "executor: missing"},
	    {JOB_T("[]", ""), "executor: must be an object"},
	    {JOB_T("{\"command\": [\"/bin/true\"]}", ""),
	     "executor.type: missing (shell, http or handler)"},
	    {JOB_T("{\"type\": \"ssh\"}", ""),
	     "executor.type: 'ssh' is not one of shell, http, handler"},
	    {JOB_T("{\"type\": \"shell\", \"comand\": [\"/bin/true\"]}", ""),
	     "executor.comand: unknown field"},
	    {JOB_T("{\"type\": \"shell\", \"url\": \"http://x\", \"command\": [\"ls\"]}", ""),
	     "executor.url: unknown field"},
	    {JOB_T("{\"type\": \"shell\"}", ""),
	     "executor.command: missing (an array of strings: the program and "
	     "its arguments)"},
	    {JOB_T("{\"type\": \"shell\", \"command\": []}", ""),
	     "executor.command: must not be empty"},
	    {JOB_T("{\"type\": \"shell\", \"command\": \"ls -l\"}", ""),
	     "executor.command: must be an array of strings"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\", 1]}", ""),
	     "executor.command[1]: must be a string"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\", \"\"]}", ""),
	     "executor.command[1]: must not be empty"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"bin/backup\"]}", ""),
	     "executor.command[0]: must be an absolute path or a name without "
	     "'/' (looked up in PATH)"},
	    {JOB_T("{\"type\": \"shell\", \"shell\": true, \"command\": [\"a\", \"b\"]}", ""),
	     "executor.command: with \"shell\": true, must be exactly one string "
	     "(the script for /bin/sh -c)"},
	    {JOB_T("{\"type\": \"shell\", \"shell\": 1, \"command\": [\"a\"]}", ""),
	     "executor.shell: must be true or false"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"env\": {\"1X\": \"a\"}}", ""),
	     "executor.env.1X: name must be [A-Za-z_][A-Za-z0-9_]*"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"env\": {\"X\": 1}}", ""),
	     "executor.env.X: must be a string"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"env\": [\"X=1\"]}", ""),
	     "executor.env: must be an object of strings"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"dir\": \"tmp\"}", ""),
	     "executor.dir: must be an absolute path"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"timeout\": \"10\"}", ""),
	     "executor.timeout: '10' lacks a unit after 10 (h, m, s or ms)"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"timeout\": \"8d\"}", ""),
	     "executor.timeout: unknown unit in '8d' (h, m, s or ms)"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"timeout\": \"169h\"}", ""),
	     "executor.timeout: duration must be at most 168h"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"timeout\": 10}", ""),
	     "executor.timeout: must be a duration string such as \"1h30m\", "
	     "\"10s\" or \"500ms\""},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"output_limit\": -1}", ""),
	     "executor.output_limit: -1 is out of range 0..67108864"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"output_limit\": 1.5}", ""),
	     "executor.output_limit: must be an integer"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"memory_limit\": 1000}", ""),
	     "executor.memory_limit: 1000 is below 1 MiB (1048576; 0 means no limit)"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"cpu_limit\": \"1500ms\"}", ""),
	     "executor.cpu_limit: must be whole seconds (RLIMIT_CPU counts seconds)"},
	    {JOB_T("{\"type\": \"shell\", \"command\": [\"ls\"], \"user\": \"a b\"}", ""),
	     "executor.user: must be a user name or uid of [A-Za-z0-9._-]"},
	    {JOB_T("{\"type\": \"http\"}", ""), "executor.url: missing"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"ftp://x/\"}", ""),
	     "executor.url: must be an http:// or https:// URL"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"http:///x\"}", ""),
	     "executor.url: has no host"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"http://x/a b\"}", ""),
	     "executor.url: must not contain spaces or control characters "
	     "(percent-encode them)"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"http://x\", \"method\": \"GE T\"}", ""),
	     "executor.method: must be an HTTP method token such as GET or POST"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"http://x\", \"headers\": {\"A\": \"b\\r\\nX: y\"}}", ""),
	     "executor.headers.A: must not contain control characters"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"http://x\", \"headers\": {\"A:\": \"b\"}}", ""),
	     "executor.headers.A:: name must be an HTTP token"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"http://x\", \"expect_status\": 600}", ""),
	     "executor.expect_status: must be a status (200) or a range of "
	     "statuses (\"200-299\") within 100-599"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"http://x\", \"expect_status\": \"299-200\"}", ""),
	     "executor.expect_status: must be a status (200) or a range of "
	     "statuses (\"200-299\") within 100-599"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"http://x\", \"expect_status\": \"2xx\"}", ""),
	     "executor.expect_status: must be a status (200) or a range of "
	     "statuses (\"200-299\") within 100-599"},
	    {JOB_T("{\"type\": \"http\", \"url\": \"http://x\", \"command\": [\"ls\"]}", ""),
	     "executor.command: unknown field"},
	    {JOB_T("{\"type\": \"handler\"}", ""),
	     "executor.name: missing (the registered handler's name)"},
	    {JOB_T("{\"type\": \"handler\", \"name\": \"a/b\"}", ""),
	     "executor.name: must be 1-64 characters of [A-Za-z0-9._-]"},
	    {JOB_T(SHELL_OK, ", \"retry\": {\"max_attempts\": 0}"),
	     "retry.max_attempts: 0 is out of range 1..100"},
	    {JOB_T(SHELL_OK, ", \"retry\": {\"max_attempts\": 101}"),
	     "retry.max_attempts: 101 is out of range 1..100"},
	    {JOB_T(SHELL_OK, ", \"retry\": {\"max_attempts\": \"3\"}"),
	     "retry.max_attempts: must be an integer"},
	    {JOB_T(SHELL_OK, ", \"retry\": {\"backoff\": \"fibonacci\"}"),
	     "retry.backoff: 'fibonacci' is not one of constant, linear, exponential"},
	    {JOB_T(SHELL_OK, ", \"retry\": {\"initial\": \"0s\"}"),
	     "retry.initial: duration must be at least 1ms"},
	    {JOB_T(SHELL_OK, ", \"retry\": {\"initial\": \"1.5s\"}"),
	     "retry.initial: fractions are not supported (write 1h30m, not 1.5h)"},
	    {JOB_T(SHELL_OK, ", \"retry\": {\"initial\": \"2m\"}"),
	     "retry.max: must not be below retry.initial"},
	    {JOB_T(SHELL_OK, ", \"retry\": {\"jitter\": \"yes\"}"),
	     "retry.jitter: must be true or false"},
	    {JOB_T(SHELL_OK, ", \"retry\": {\"attempts\": 3}"),
	     "retry.attempts: unknown field"},
	    {JOB_T(SHELL_OK, ", \"retry\": 3"), "retry: must be an object"},
	    {JOB_T(SHELL_OK, ", \"concurrency\": \"queue\""),
	     "concurrency: 'queue' is not one of allow, forbid, replace"},
	    {JOB_T(SHELL_OK, ", \"missed\": \"some\""),
	     "missed: 'some' is not one of skip, once, all"},
	    {JOB_T(SHELL_OK, ", \"missed_max\": 0"),
	     "missed_max: 0 is out of range 1..10000"},
	    {JOB_T(SHELL_OK, ", \"enabled\": null"), "enabled: must be true or false"},
	    {JOB_T(SHELL_OK, ", \"history\": {\"keep_runs\": 0}"),
	     "history.keep_runs: 0 is out of range 1..1000000"},
	    {JOB_T(SHELL_OK, ", \"history\": {\"keep_days\": 36501}"),
	     "history.keep_days: 36501 is out of range 1..36500"},
	    {JOB_T(SHELL_OK, ", \"history\": {\"keep\": 1}"),
	     "history.keep: unknown field"},
	    {JOB_T(SHELL_OK, ", \"tags\": [\"a\", \"a\"]"), "tags[1]: duplicate tag"},
	    {JOB_T(SHELL_OK, ", \"tags\": [\"a b\"]"),
	     "tags[0]: must be 1-64 characters of [A-Za-z0-9._:=/-]"},
	    {JOB_T(SHELL_OK, ", \"tags\": \"a\""), "tags: must be an array of strings"},
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[KEEL_JOB_ERR_MAX];
		struct keel_job *sentinel = (struct keel_job *)&err, *j;
		json_t *v = load(bad[i].json);
		int rc;

		j = sentinel;
		memset(err, 'x', sizeof(err));
		rc = keel_job_from_json(v, &j, err, sizeof(err));
		if (rc != -EINVAL)
			KEEL_TEST_FAIL("%s gave %d", bad[i].json, rc);
		CHECK(j == sentinel);
		if (strcmp(err, bad[i].reason) != 0)
			KEEL_TEST_FAIL("%s:\n  got:  %s\n  want: %s",
				       bad[i].json, err, bad[i].reason);
		json_decref(v);
	}
	keel_test_leak_check();
}

TEST(bad_arguments_and_small_buffers)
{
	char err[8];
	struct keel_job *j = NULL;
	json_t *v = load(EXAMPLE);

	CHECK_INT(keel_job_from_json(NULL, &j, err, sizeof(err)), ==, -EINVAL);
	CHECK_STR(err, "job: no");
	CHECK_INT(keel_job_from_json(v, NULL, NULL, 0), ==, -EINVAL);
	CHECK(j == NULL);
	CHECK(keel_job_to_json(NULL) == NULL);
	CHECK(keel_job_equal(NULL, NULL));
	CHECK_INT(keel_job_from_json(v, &j, NULL, 0), ==, 0);
	CHECK(!keel_job_equal(j, NULL));
	keel_job_free(j);
	json_decref(v);
	/* Duplicate keys: the caller's JSON_REJECT_DUPLICATES refuses them. */
	CHECK(json_loads("{\"name\": \"a\", \"name\": \"b\"}",
			 JSON_REJECT_DUPLICATES, NULL) == NULL);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Random valid jobs round-trip
 * ------------------------------------------------------------------------ */

static uint64_t rng = 42;

static unsigned pick(unsigned n)
{
	return (unsigned)(keel_backoff_rand(&rng) % n);
}

static json_t *rand_duration(int64_t min_ms, int64_t max_ms)
{
	char buf[64];
	int64_t ms = min_ms + (int64_t)(keel_backoff_rand(&rng) %
					(uint64_t)(max_ms - min_ms + 1));

	/* Spelled in a random, not canonical, way. */
	if (pick(2))
		snprintf(buf, sizeof(buf), "%lldms", (long long)ms);
	else if (ms % 1000 == 0)
		snprintf(buf, sizeof(buf), "%llds", (long long)(ms / 1000));
	else
		snprintf(buf, sizeof(buf), "%llds%lldms",
			 (long long)(ms / 1000), (long long)(ms % 1000));
	return json_string(buf);
}

static json_t *rand_word(const char *charset)
{
	char buf[65];
	size_t n = 1 + pick(12), i, m = strlen(charset);

	for (i = 0; i < n; i++)
		buf[i] = charset[pick((unsigned)m)];
	buf[n] = '\0';
	return json_string(buf);
}

#define NAME_CHARS "abcXYZ019._-"

static json_t *rand_job(unsigned k)
{
	static const char *const scheds[] = {"@daily", "0 30 2 * * *",
					     "@every 90s", "@manual",
					     "0 0 L * ?", "*/5 9-17 * * 1-5"};
	static const char *const zones[] = {"UTC", "Europe/Berlin",
					    "America/New_York",
					    "Australia/Lord_Howe"};
	static const char *const conc[] = {"allow", "forbid", "replace"};
	static const char *const missed[] = {"skip", "once", "all"};
	static const char *const backoff[] = {"constant", "linear",
					      "exponential"};
	json_t *o = json_object(), *e = json_object(), *a;
	unsigned t = k % 3, i, n;

	json_object_set_new(o, "name", rand_word(NAME_CHARS));
	json_object_set_new(o, "schedule", json_string(scheds[pick(6)]));
	if (pick(2))
		json_object_set_new(o, "timezone", json_string(zones[pick(4)]));
	if (pick(2))
		json_object_set_new(e, "timeout", rand_duration(0, 86400000));
	if (t == 0) {
		int sh = (int)pick(2);

		json_object_set_new(e, "type", json_string("shell"));
		a = json_array();
		n = sh ? 1 : 1 + pick(4);
		for (i = 0; i < n; i++)
			json_array_append_new(a, rand_word(NAME_CHARS " /$"));
		json_array_set_new(a, 0,
				   json_string(sh ? "echo hi | wc" : "/bin/echo"));
		json_object_set_new(e, "command", a);
		if (sh || pick(2))
			json_object_set_new(e, "shell", json_boolean(sh));
		if (pick(2)) {
			json_t *env = json_object();

			n = pick(4);
			for (i = 0; i < n; i++) {
				char name[8];

				snprintf(name, sizeof(name), "V%u", pick(9));
				json_object_set_new(env, name,
						    rand_word(NAME_CHARS " "));
			}
			json_object_set_new(e, "env", env);
		}
		if (pick(2))
			json_object_set_new(e, "dir", json_string("/var/tmp"));
		if (pick(2))
			json_object_set_new(e, "output_limit",
					    json_integer(pick(1 << 20)));
		if (pick(2))
			json_object_set_new(e, "memory_limit",
					    json_integer(pick(2) ? 0 : (1 << 20) + pick(1 << 30)));
		if (pick(2))
			json_object_set_new(e, "cpu_limit",
					    json_sprintf("%us", pick(100000)));
		if (pick(2))
			json_object_set_new(e, "user", rand_word(NAME_CHARS));
	} else if (t == 1) {
		json_object_set_new(e, "type", json_string("http"));
		json_object_set_new(e, "url", json_string(pick(2) ? "http://a:1/b" : "https://h/"));
		if (pick(2))
			json_object_set_new(e, "method", json_string(pick(2) ? "POST" : "PUT"));
		if (pick(2)) {
			json_t *h = json_object();

			json_object_set_new(h, "X-A", rand_word(NAME_CHARS));
			json_object_set_new(h, "accept", rand_word(NAME_CHARS));
			json_object_set_new(e, "headers", h);
		}
		if (pick(2))
			json_object_set_new(e, "body", rand_word(NAME_CHARS "{}\" "));
		if (pick(2))
			json_object_set_new(e, "expect_status",
					    pick(2) ? json_integer(100 + pick(500))
						    : json_string("200-399"));
	} else {
		json_object_set_new(e, "type", json_string("handler"));
		json_object_set_new(e, "name", rand_word(NAME_CHARS));
	}
	json_object_set_new(o, "executor", e);
	if (pick(2)) {
		json_t *r = json_object();

		json_object_set_new(r, "max_attempts", json_integer(1 + pick(100)));
		json_object_set_new(r, "backoff", json_string(backoff[pick(3)]));
		json_object_set_new(r, "initial", rand_duration(1, 1000));
		json_object_set_new(r, "max", rand_duration(1000, 86400000));
		json_object_set_new(r, "jitter", json_boolean(pick(2)));
		json_object_set_new(o, "retry", r);
	}
	if (pick(2))
		json_object_set_new(o, "concurrency", json_string(conc[pick(3)]));
	if (pick(2))
		json_object_set_new(o, "missed", json_string(missed[pick(3)]));
	if (pick(2))
		json_object_set_new(o, "missed_max", json_integer(1 + pick(10000)));
	if (pick(2))
		json_object_set_new(o, "enabled", json_boolean(pick(2)));
	if (pick(2)) {
		json_t *h = json_object();

		json_object_set_new(h, "keep_runs", json_integer(1 + pick(1000000)));
		json_object_set_new(h, "keep_days", json_integer(1 + pick(36500)));
		json_object_set_new(o, "history", h);
	}
	if (pick(2)) {
		a = json_array();
		n = pick(5);
		for (i = 0; i < n; i++) {
			char tag[16];

			snprintf(tag, sizeof(tag), "t%u=v", i);
			json_array_append_new(a, json_string(tag));
		}
		json_object_set_new(o, "tags", a);
	}
	return o;
}

TEST(random_jobs_round_trip)
{
	unsigned k;

	for (k = 0; k < 3000; k++) {
		char err[KEEL_JOB_ERR_MAX];
		struct keel_job *j = NULL;
		json_t *v = rand_job(k);

		if (keel_job_from_json(v, &j, err, sizeof(err)) != 0) {
			char *s = json_dumps(v, 0);

			KEEL_TEST_FAIL("random job refused: %s\n  %s", err, s);
		}
		check_round_trip(j);
		keel_job_free(j);
		json_decref(v);
	}
	keel_test_leak_check();
}

/* Every field change is seen by keel_job_equal. */
TEST(equal_tells_every_field)
{
	static const char *const changes[] = {
	    "{\"name\": \"other\"}",
	    "{\"schedule\": \"0 30 2 * * 1\"}",
	    "{\"timezone\": \"Europe/Paris\"}",
	    "{\"executor\": {\"type\": \"shell\", \"command\": [\"/usr/local/bin/backup\"], \"timeout\": \"10m\"}}",
	    "{\"executor\": {\"type\": \"shell\", \"command\": [\"/usr/local/bin/backup\", \"--full\"], \"timeout\": \"11m\"}}",
	    "{\"executor\": {\"type\": \"shell\", \"command\": [\"/usr/local/bin/backup\", \"--full\"], \"timeout\": \"10m\", \"env\": {\"A\": \"1\"}}}",
	    "{\"executor\": {\"type\": \"shell\", \"command\": [\"/usr/local/bin/backup\", \"--full\"], \"timeout\": \"10m\", \"dir\": \"/\"}}",
	    "{\"executor\": {\"type\": \"shell\", \"command\": [\"/usr/local/bin/backup\", \"--full\"], \"timeout\": \"10m\", \"output_limit\": 1}}",
	    "{\"executor\": {\"type\": \"shell\", \"command\": [\"/usr/local/bin/backup\", \"--full\"], \"timeout\": \"10m\", \"memory_limit\": 2000000}}",
	    "{\"executor\": {\"type\": \"shell\", \"command\": [\"/usr/local/bin/backup\", \"--full\"], \"timeout\": \"10m\", \"cpu_limit\": \"1s\"}}",
	    "{\"executor\": {\"type\": \"shell\", \"command\": [\"/usr/local/bin/backup\", \"--full\"], \"timeout\": \"10m\", \"user\": \"root\"}}",
	    "{\"executor\": {\"type\": \"handler\", \"name\": \"backup\", \"timeout\": \"10m\"}}",
	    "{\"retry\": {\"max_attempts\": 4, \"backoff\": \"exponential\", \"initial\": \"1s\", \"max\": \"1m\"}}",
	    "{\"retry\": {\"max_attempts\": 3, \"backoff\": \"constant\", \"initial\": \"1s\", \"max\": \"1m\"}}",
	    "{\"retry\": {\"max_attempts\": 3, \"backoff\": \"exponential\", \"initial\": \"2s\", \"max\": \"1m\"}}",
	    "{\"retry\": {\"max_attempts\": 3, \"backoff\": \"exponential\", \"initial\": \"1s\", \"max\": \"2m\"}}",
	    "{\"retry\": {\"max_attempts\": 3, \"backoff\": \"exponential\", \"initial\": \"1s\", \"max\": \"1m\", \"jitter\": false}}",
	    "{\"concurrency\": \"allow\"}",
	    "{\"missed\": \"all\"}",
	    "{\"missed_max\": 5}",
	    "{\"enabled\": false}",
	    "{\"history\": {\"keep_runs\": 5}}",
	    "{\"history\": {\"keep_days\": 5}}",
	    "{\"tags\": [\"x\"]}",
	};
	struct keel_job *base = parse(EXAMPLE), *same = parse(EXAMPLE);
	size_t i;

	CHECK(keel_job_equal(base, same));
	for (i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
		json_t *v = load(EXAMPLE), *c = load(changes[i]);
		char err[KEEL_JOB_ERR_MAX];
		struct keel_job *j = NULL;

		json_object_update(v, c);
		if (keel_job_from_json(v, &j, err, sizeof(err)) != 0)
			KEEL_TEST_FAIL("%s refused: %s", changes[i], err);
		if (keel_job_equal(base, j) || keel_job_equal(j, base))
			KEEL_TEST_FAIL("change not seen: %s", changes[i]);
		keel_job_free(j);
		json_decref(v);
		json_decref(c);
	}
	keel_job_free(base);
	keel_job_free(same);
	keel_test_leak_check();
}

TEST(duration_grammar)
{
	static const struct {
		const char *text;
		int64_t ns;
	} good[] = {
	    {"0s", 0},
	    {"500ms", 500000000},
	    {"10m", 600 * S},
	    {"1h30m", 5400 * S},
	    {"1h0m5s", 3605 * S},
	    {"1s1h", 3601 * S},
	    {"1m1ms", 60 * S + 1000000},
	};
	static const struct {
		const char *text, *reason;
	} bad[] = {
	    {"", "missing duration (e.g. 1h30m)"},
	    {"h", "'h' is not a duration (a number then h, m, s or ms, e.g. 1h30m)"},
	    {"-1s", "'-1s' is not a duration (a number then h, m, s or ms, e.g. 1h30m)"},
	    {"1.5h", "fractions are not supported (write 1h30m, not 1.5h)"},
	    {"90", "'90' lacks a unit after 90 (h, m, s or ms)"},
	    {"1d", "unknown unit in '1d' (h, m, s or ms)"},
	    {"1 s", "unknown unit in '1 s' (h, m, s or ms)"},
	    {"25h", "duration must be at most 24h"},
	    {"99999999999999999999s", "duration must be at most 24h"},
	    {"0ms", "duration must be at least 1ms"},
	};
	char err[KEEL_CRON_ERR_MAX];
	int64_t ns;
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ns = -1;
		if (keel_duration_parse(good[i].text, 0, INT64_MAX, &ns, err,
					sizeof(err)) != 0)
			KEEL_TEST_FAIL("%s refused: %s", good[i].text, err);
		CHECK_INT(ns, ==, good[i].ns);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ns = -7;
		CHECK_INT(keel_duration_parse(bad[i].text, 1000000,
					      86400 * S, &ns, err, sizeof(err)),
			  ==, -EINVAL);
		CHECK_INT(ns, ==, -7);
		if (strcmp(err, bad[i].reason) != 0)
			KEEL_TEST_FAIL("%s:\n  got:  %s\n  want: %s",
				       bad[i].text, err, bad[i].reason);
	}
	/* The bounds are inclusive; INT64_MAX ns is reachable exactly. */
	CHECK_INT(keel_duration_parse("24h", 0, 86400 * S, &ns, NULL, 0), ==, 0);
	CHECK_INT(ns, ==, 86400 * S);
	CHECK_INT(keel_duration_parse("9223372036854775807ms", 0, INT64_MAX,
				      &ns, NULL, 0), ==, -EINVAL);
	CHECK_INT(keel_duration_parse(NULL, 0, 1, &ns, NULL, 0), ==, -EINVAL);
}
