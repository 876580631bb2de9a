/*
 * tests/cmd/test_keeld_api.c - keeld's REST API end to end: a real keeld
 * process (keeld_proc.h) and a real HTTP client (libcurl), every endpoint
 * of the contract with its happy path and its errors, plus the daemon's own
 * behaviour seen from outside: token auth, SIGTERM, a data directory in use,
 * a refused jobs file.
 *
 * Each case starts its own keeld in a temporary directory, so cases are
 * independent and can run alone (./test_keeld_api run_now_shell_output).
 * Runs are awaited by polling with generous deadlines: the machine is
 * shared, and nothing here measures speed except "quickly" (seconds, not
 * the 30 s a sleep job would take).
 *
 * Error bodies are keel's standard one (docs/http.md): code, message (the
 * status' reason phrase), timestamp, trace_id and, for a refused input, the
 * reason.
 */
#include "http/http_client.h"
#include "keeld_proc.h"

#include <ctype.h>
#include <dirent.h>

/* ---- helpers -------------------------------------------------------------- */

/* An "Authorization: Bearer ..." header sent with every request, if set. */
static char g_auth[300];

static void req(const struct keeld_proc *k, const char *method,
		const char *path, const char *body, struct hres *r)
{
	const char *hdrs[] = { g_auth, NULL };

	http_req((uint16_t)k->port, method, path, body,
		 g_auth[0] ? hdrs : NULL, r);
	if (r->rc != CURLE_OK) {
		keeld_proc_dump_log(k); /* did keeld die? */
		KEEL_TEST_FAIL("%s %s: curl: %s", method, path,
			       curl_easy_strerror(r->rc));
	}
}

static json_t *parse(const char *what, const char *body)
{
	json_error_t e;
	json_t *v = json_loads(body, JSON_REJECT_DUPLICATES, &e);

	if (v == NULL)
		KEEL_TEST_FAIL("%s: not JSON (%s): %s", what, e.text, body);
	return v;
}

/* method path [body] -> the parsed answer, which must have status want
 * (NULL for an empty body). json_decref it. */
static json_t *api(const struct keeld_proc *k, const char *method,
		   const char *path, const char *body, long want)
{
	struct hres r;
	json_t *v = NULL;

	req(k, method, path, body, &r);
	if (r.status != want) {
		keeld_proc_dump_log(k);
		KEEL_TEST_FAIL("%s %s: status %ld, want %ld: %s", method, path,
			       r.status, want, r.body);
	}
	if (r.len > 0)
		v = parse(path, r.body);
	hres_free(&r);
	return v;
}

static int is_hex32(const char *s)
{
	if (s == NULL || strlen(s) != 32)
		return 0;
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s) || isupper((unsigned char)*s))
			return 0;
	return 1;
}

/* "2026-11-26T02:30:00.000Z" */
static int is_time(const json_t *v)
{
	const char *s = json_string_value(v);

	return s != NULL && strlen(s) == 24 && s[4] == '-' && s[10] == 'T' &&
	       s[19] == '.' && s[23] == 'Z';
}

static int is_id(const json_t *v)
{
	const char *s = json_string_value(v);

	if (s == NULL || *s == '\0')
		return 0;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return 0;
	return 1;
}

/* Checks the standard error body for status and that its reason contains
 * want (when not NULL). */
static void check_error(const struct hres *r, long status, const char *want)
{
	json_t *o = check_error_body(r, status);

	CHECK(is_hex32(json_string_value(json_object_get(o, "trace_id"))));
	if (want != NULL) {
		const char *reason = json_string_value(json_object_get(o, "reason"));

		if (reason == NULL || strstr(reason, want) == NULL)
			KEEL_TEST_FAIL("status %ld: reason should contain "
				       "\"%s\": %s", status, want, r->body);
	}
	json_decref(o);
}

/* method path [body] must fail with status and a reason containing want. */
static void api_err(const struct keeld_proc *k, const char *method,
		    const char *path, const char *body, long status,
		    const char *want)
{
	struct hres r;

	req(k, method, path, body, &r);
	if (r.status != status)
		KEEL_TEST_FAIL("%s %s: status %ld, want %ld: %s", method, path,
			       r.status, status, r.body);
	check_error(&r, status, want);
	hres_free(&r);
}

static const char *str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* A keeld with args, or the test fails. */
static void up(struct keeld_proc *k, const char *const *args)
{
	keeld_proc_init(k);
	keeld_proc_start_ok(k, args);
}

static void down(struct keeld_proc *k)
{
	int rc = keeld_proc_stop(k, 0);

	if (rc != 0 || k->code != 0) {
		keeld_proc_dump_log(k);
		KEEL_TEST_FAIL("keeld did not stop cleanly: rc %d, exit %d, "
			       "signal %d", rc, k->code, k->signo);
	}
	keeld_proc_cleanup(k);
	keel_test_leak_check();
}

/* A shell job that runs argv (a JSON array's inside) every hour. */
static void put_shell_job(const struct keeld_proc *k, const char *name,
			  const char *argv_json, long want)
{
	char body[1024];

	snprintf(body, sizeof(body),
		 "{\"name\":\"%s\",\"schedule\":\"@every 1h\","
		 "\"executor\":{\"type\":\"shell\",\"command\":[%s]}}",
		 name, argv_json);
	json_decref(api(k, "POST", "/v1/jobs", body, want));
}

static void put_handler_job(const struct keeld_proc *k, const char *name,
			    const char *handler)
{
	char body[512];

	snprintf(body, sizeof(body),
		 "{\"name\":\"%s\",\"schedule\":\"@every 1h\","
		 "\"executor\":{\"type\":\"handler\",\"name\":\"%s\"}}",
		 name, handler);
	json_decref(api(k, "POST", "/v1/jobs", body, 201));
}

/* POST /v1/jobs/{name}/run: checks the 202 answer, returns the run id. */
static long long run_now(const struct keeld_proc *k, const char *name)
{
	char path[256];
	json_t *r;
	long long id;

	snprintf(path, sizeof(path), "/v1/jobs/%s/run", name);
	r = api(k, "POST", path, NULL, 202);
	CHECK(is_id(json_object_get(r, "id")));
	CHECK_STR(str(r, "job"), name);
	CHECK_STR(str(r, "state"), "queued");
	CHECK_STR(str(r, "trigger"), "manual");
	CHECK_INT(json_integer_value(json_object_get(r, "attempt")), ==, 1);
	id = atoll(str(r, "id"));
	json_decref(r);
	return id;
}

static int final_state(const char *s)
{
	return s != NULL && strcmp(s, "queued") != 0 && strcmp(s, "running") != 0;
}

/* Polls GET /v1/runs/{id} until its state is want (or final, when want is
 * NULL), for up to timeout seconds; returns the run (with output). */
static json_t *wait_run(const struct keeld_proc *k, long long id,
			const char *want, double timeout)
{
	double end = keel_test_now() + timeout;
	char path[64];

	snprintf(path, sizeof(path), "/v1/runs/%lld", id);
	for (;;) {
		json_t *r = api(k, "GET", path, NULL, 200);
		const char *st = str(r, "state");

		if (want != NULL ? st != NULL && strcmp(st, want) == 0
				 : final_state(st))
			return r;
		if (keel_test_now() > end) {
			char *dump = json_dumps(r, 0);

			keeld_proc_dump_log(k);
			KEEL_TEST_FAIL("run %lld not %s after %.0f s: %s", id,
				       want ? want : "final", timeout, dump);
		}
		json_decref(r);
		usleep(50 * 1000);
	}
}

/* The job view without what may change by itself (running, last_run). */
static json_t *get_job_def(const struct keeld_proc *k, const char *name)
{
	char path[256];
	json_t *v;

	snprintf(path, sizeof(path), "/v1/jobs/%s", name);
	v = api(k, "GET", path, NULL, 200);
	json_object_del(v, "running");
	json_object_del(v, "last_run");
	return v;
}

static void check_same(const json_t *a, const json_t *b, const char *what)
{
	if (!json_equal(a, b)) {
		char *x = json_dumps(a, JSON_SORT_KEYS), *y = json_dumps(b, JSON_SORT_KEYS);

		KEEL_TEST_FAIL("%s changed:\n  before: %s\n  after:  %s", what, x, y);
	}
}

static size_t count_jobs(const struct keeld_proc *k)
{
	json_t *l = api(k, "GET", "/v1/jobs", NULL, 200);
	size_t n = json_array_size(json_object_get(l, "jobs"));

	json_decref(l);
	return n;
}

/* The first event of kind (newest first) for job, or NULL; decref. */
static json_t *find_event(const struct keeld_proc *k, const char *kind,
			  const char *job)
{
	json_t *l = api(k, "GET", "/v1/events?limit=1000", NULL, 200), *e, *found = NULL;
	size_t i;

	json_array_foreach(json_object_get(l, "events"), i, e) {
		if (strcmp(str(e, "kind"), kind) == 0 &&
		    (job == NULL || (str(e, "job") && strcmp(str(e, "job"), job) == 0))) {
			found = json_incref(e);
			break;
		}
	}
	json_decref(l);
	return found;
}

/* ---- jobs: create, replace, view ------------------------------------------ */

TEST(job_created_unchanged_replaced)
{
	static const char job[] =
		"{\"name\":\"backup\",\"schedule\":\"0 30 2 * * *\","
		"\"timezone\":\"Europe/Berlin\",\"executor\":{\"type\":\"shell\","
		"\"command\":[\"/bin/echo\",\"backup\"]}}";
	static const char changed[] =
		"{\"name\":\"backup\",\"schedule\":\"0 45 2 * * *\","
		"\"timezone\":\"Europe/Berlin\",\"executor\":{\"type\":\"shell\","
		"\"command\":[\"/bin/echo\",\"backup\"]}}";
	struct keeld_proc k;
	struct hres r;
	char h[64];
	json_t *v, *first;

	up(&k, NULL);
	req(&k, "POST", "/v1/jobs", job, &r);
	CHECK_INT(r.status, ==, 201);
	CHECK_STR(hres_header_get(&r, "X-Keel-Result", h, sizeof(h)), "created");
	CHECK_CONTAINS(hres_header_get(&r, "Content-Type", h, sizeof(h)),
		       "application/json");
	first = parse("created", r.body);
	CHECK_STR(str(first, "name"), "backup");
	CHECK_STR(str(first, "schedule"), "0 30 2 * * *");
	hres_free(&r);

	req(&k, "POST", "/v1/jobs", job, &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(hres_header_get(&r, "X-Keel-Result", h, sizeof(h)), "unchanged");
	v = parse("unchanged", r.body);
	CHECK_STR(str(v, "schedule"), "0 30 2 * * *");
	CHECK_STR(str(v, "created_at"), str(first, "created_at"));
	json_decref(v);
	hres_free(&r);

	req(&k, "POST", "/v1/jobs", changed, &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(hres_header_get(&r, "X-Keel-Result", h, sizeof(h)), "replaced");
	hres_free(&r);
	v = api(&k, "GET", "/v1/jobs/backup", NULL, 200);
	CHECK_STR(str(v, "schedule"), "0 45 2 * * *");
	CHECK_STR(str(v, "created_at"), str(first, "created_at"));
	CHECK(strcmp(str(v, "updated_at"), str(first, "updated_at")) >= 0);
	json_decref(v);
	CHECK_INT(count_jobs(&k), ==, 1);

	/* The events say what happened, in order. */
	v = find_event(&k, "job.created", "backup");
	CHECK(v != NULL);
	json_decref(v);
	v = find_event(&k, "job.replaced", "backup");
	CHECK(v != NULL);
	json_decref(v);
	json_decref(first);
	down(&k);
}

TEST(job_view_fields)
{
	struct keeld_proc k;
	json_t *v, *x;
	char now[32];
	time_t t = time(NULL);
	long long id;

	up(&k, NULL);
	put_shell_job(&k, "view", "\"/bin/echo\",\"hi\"", 201);
	v = api(&k, "GET", "/v1/jobs/view", NULL, 200);
	/* Every default filled in (docs/keeld.md "Fields"). */
	CHECK_STR(str(v, "name"), "view");
	CHECK_STR(str(v, "timezone"), "UTC");
	CHECK_STR(str(v, "concurrency"), "forbid");
	CHECK_STR(str(v, "missed"), "skip");
	CHECK_INT(json_integer_value(json_object_get(v, "missed_max")), ==, 100);
	CHECK(json_is_true(json_object_get(v, "enabled")));
	x = json_object_get(v, "retry");
	CHECK_INT(json_integer_value(json_object_get(x, "max_attempts")), ==, 1);
	CHECK_STR(str(x, "backoff"), "exponential");
	x = json_object_get(v, "history");
	CHECK_INT(json_integer_value(json_object_get(x, "keep_runs")), ==, 100);
	CHECK_INT(json_integer_value(json_object_get(x, "keep_days")), ==, 30);
	CHECK(json_is_array(json_object_get(v, "tags")));
	x = json_object_get(v, "executor");
	CHECK_STR(str(x, "type"), "shell");
	CHECK_STR(str(x, "timeout"), "0s");
	CHECK_INT(json_integer_value(json_object_get(x, "output_limit")), ==, 65536);
	/* The read-only fields. */
	CHECK(json_is_false(json_object_get(v, "paused")));
	CHECK(is_time(json_object_get(v, "next_run_at")));
	strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%S", gmtime(&t));
	CHECK(strcmp(str(v, "next_run_at"), now) > 0); /* in the future */
	CHECK(json_is_integer(json_object_get(v, "running")));
	CHECK_INT(json_integer_value(json_object_get(v, "running")), ==, 0);
	CHECK(json_is_null(json_object_get(v, "last_run")));
	CHECK(is_time(json_object_get(v, "created_at")));
	CHECK(is_time(json_object_get(v, "updated_at")));
	json_decref(v);

	/* After a run, last_run is that run, without its output. */
	id = run_now(&k, "view");
	json_decref(wait_run(&k, id, "succeeded", 60));
	v = api(&k, "GET", "/v1/jobs/view", NULL, 200);
	x = json_object_get(v, "last_run");
	CHECK(json_is_object(x));
	CHECK_INT(atoll(str(x, "id")), ==, id);
	CHECK_STR(str(x, "state"), "succeeded");
	CHECK(json_object_get(x, "output") == NULL);
	CHECK_INT(json_integer_value(json_object_get(v, "running")), ==, 0);
	json_decref(v);
	down(&k);
}

TEST(job_view_posted_back)
{
	struct keeld_proc k;
	struct hres r;
	char h[64], *body;
	json_t *v, *after;

	up(&k, NULL);
	put_shell_job(&k, "roundtrip", "\"/bin/true\"", 201);
	v = api(&k, "GET", "/v1/jobs/roundtrip", NULL, 200);
	/* The view as it is: the definition is the same. */
	body = json_dumps(v, 0);
	req(&k, "POST", "/v1/jobs", body, &r);
	free(body);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(hres_header_get(&r, "X-Keel-Result", h, sizeof(h)), "unchanged");
	hres_free(&r);
	/* Read-only fields with other values are ignored, not applied. */
	json_object_set_new(v, "paused", json_true());
	json_object_set_new(v, "running", json_integer(99));
	json_object_set_new(v, "next_run_at", json_string("2000-01-01T00:00:00.000Z"));
	json_object_set_new(v, "created_at", json_string("2000-01-01T00:00:00.000Z"));
	json_object_set_new(v, "last_run", json_pack("{s:s}", "id", "12345"));
	body = json_dumps(v, 0);
	req(&k, "POST", "/v1/jobs", body, &r);
	free(body);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(hres_header_get(&r, "X-Keel-Result", h, sizeof(h)), "unchanged");
	hres_free(&r);
	after = api(&k, "GET", "/v1/jobs/roundtrip", NULL, 200);
	CHECK(json_is_false(json_object_get(after, "paused")));
	CHECK_INT(json_integer_value(json_object_get(after, "running")), ==, 0);
	CHECK(json_is_null(json_object_get(after, "last_run")));
	CHECK(strcmp(str(after, "created_at"), "2001") > 0);
	CHECK(strcmp(str(after, "next_run_at"), "2001") > 0);
	/* A changed definition inside a view is applied. */
	json_object_set_new(after, "schedule", json_string("@every 2h"));
	body = json_dumps(after, 0);
	req(&k, "POST", "/v1/jobs", body, &r);
	free(body);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(hres_header_get(&r, "X-Keel-Result", h, sizeof(h)), "replaced");
	hres_free(&r);
	json_decref(after);
	after = api(&k, "GET", "/v1/jobs/roundtrip", NULL, 200);
	CHECK_STR(str(after, "schedule"), "@every 2h");
	json_decref(after);
	json_decref(v);
	down(&k);
}

TEST(jobs_list_sorted_by_name)
{
	static const char *const names[] = { "zeta", "alpha", "mid.2", "beta-1",
					     "mid.10", NULL };
	static const char *const sorted[] = { "alpha", "beta-1", "mid.10",
					      "mid.2", "zeta" };
	struct keeld_proc k;
	json_t *l, *j;
	size_t i;

	up(&k, NULL);
	l = api(&k, "GET", "/v1/jobs", NULL, 200);
	CHECK(json_is_array(json_object_get(l, "jobs")));
	CHECK_INT(json_array_size(json_object_get(l, "jobs")), ==, 0);
	json_decref(l);
	for (i = 0; names[i] != NULL; i++)
		put_shell_job(&k, names[i], "\"/bin/true\"", 201);
	l = api(&k, "GET", "/v1/jobs", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "jobs")), ==, 5);
	json_array_foreach(json_object_get(l, "jobs"), i, j) {
		CHECK_STR(str(j, "name"), sorted[i]);
		/* Full views, not summaries. */
		CHECK(json_object_get(j, "executor") != NULL);
		CHECK(json_object_get(j, "paused") != NULL);
		CHECK(json_object_get(j, "next_run_at") != NULL);
	}
	json_decref(l);
	down(&k);
}

/* ---- refused input --------------------------------------------------------- */

TEST(bad_job_refused_with_reason_and_nothing_changes)
{
	static const struct {
		const char *body, *reason;
	} bad[] = {
		{ "{\"name\":\"keep\",\"schedule\":", "invalid JSON at line 1, column" },
		{ "{\"name\":\"new\"\n,}", "invalid JSON at line 2" },
		{ "[{\"name\":\"new\"}]", "must be a JSON object" },
		{ "\"keep\"", "must be a JSON object" },
		{ "", NULL },
		{ "{\"name\":\"new\",\"schedule\":\"@every 1h\",\"executor\":"
		  "{\"type\":\"shell\",\"comand\":[\"/bin/true\"]}}",
		  "executor.comand: unknown field" },
		{ "{\"name\":\"keep\",\"schedule\":\"@every 1h\",\"executor\":"
		  "{\"type\":\"shell\",\"comand\":[\"/bin/true\"]}}",
		  "executor.comand: unknown field" },
		{ "{\"name\":\"keep\",\"schedule\":\"0 0 0 32 * *\",\"executor\":"
		  "{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}",
		  "(day of month): 32 is out of range 1-31" },
		{ "{\"name\":\"new\",\"schedule\":\"@every 1h\",\"timezone\":"
		  "\"Europe/Nowhere\",\"executor\":{\"type\":\"shell\","
		  "\"command\":[\"/bin/true\"]}}",
		  "timezone: unknown zone 'Europe/Nowhere'" },
		{ "{\"name\":\"keep\",\"schedule\":\"@every 1h\",\"executor\":"
		  "{\"type\":\"shell\",\"command\":[\"bin/true\"]}}",
		  "executor.command[0]: must be an absolute path" },
		{ "{\"name\":\"new\",\"schedule\":\"@every 1h\",\"executor\":"
		  "{\"type\":\"handler\",\"name\":\"no.such.handler\"}}",
		  "no.such.handler" },
		{ "{\"name\":\"keep\",\"schedule\":\"@every 1h\",\"executor\":"
		  "{\"type\":\"handler\",\"name\":\"no.such.handler\"}}",
		  "no.such.handler" },
		{ "{\"name\":\"keep\",\"name\":\"new\",\"schedule\":\"@every 1h\","
		  "\"executor\":{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}",
		  "duplicate" },
		{ "{\"name\":\"keep\",\"schedule\":\"@every 1h\",\"executor\":"
		  "{\"type\":\"shell\",\"command\":[\"/bin/true\"],\"env\":{\"A\":\"1\","
		  "\"A\":\"2\"}}}",
		  "duplicate" },
		{ "{\"name\":\"bad name!\",\"schedule\":\"@every 1h\",\"executor\":"
		  "{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}",
		  "name:" },
		{ "{\"name\":\"new\",\"schedule\":\"@every 1h\"}", "executor" },
		{ "{\"name\":\"keep\",\"schedule\":\"@every 1h\",\"executor\":"
		  "{\"type\":\"shell\",\"command\":[\"/bin/true\"]},"
		  "\"retry\":{\"max_attempts\":0}}",
		  "retry.max_attempts" },
	};
	const char *args[] = { "--demo", NULL };
	struct keeld_proc k;
	json_t *before, *after, *ev_before;
	size_t i, nev;

	up(&k, args);
	put_shell_job(&k, "keep", "\"/bin/echo\",\"kept\"", 201);
	before = get_job_def(&k, "keep");
	ev_before = api(&k, "GET", "/v1/events?limit=1000", NULL, 200);
	nev = json_array_size(json_object_get(ev_before, "events"));
	json_decref(ev_before);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		api_err(&k, "POST", "/v1/jobs", bad[i].body, 400, bad[i].reason);
		after = get_job_def(&k, "keep");
		check_same(before, after, bad[i].body);
		json_decref(after);
		json_decref(api(&k, "GET", "/v1/jobs/new", NULL, 404));
		CHECK_INT(count_jobs(&k), ==, 1);
	}
	/* Nothing happened, so nothing was recorded. */
	ev_before = api(&k, "GET", "/v1/events?limit=1000", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(ev_before, "events")), ==, nev);
	json_decref(ev_before);
	json_decref(before);
	down(&k);
}

TEST(not_found_404)
{
	static const char *const paths[][2] = {
		{ "GET", "/v1/jobs/nope" },
		{ "DELETE", "/v1/jobs/nope" },
		{ "POST", "/v1/jobs/nope/run" },
		{ "POST", "/v1/jobs/nope/pause" },
		{ "POST", "/v1/jobs/nope/resume" },
		{ "GET", "/v1/jobs/nope/runs" },
	};
	static const char *const runs[][2] = {
		{ "GET", "/v1/runs/999999" },
		{ "GET", "/v1/runs/abc" },
		{ "GET", "/v1/runs/0" },
		{ "GET", "/v1/runs/-1" },
		{ "GET", "/v1/runs/1x" },
		{ "POST", "/v1/runs/999999/cancel" },
		{ "POST", "/v1/runs/abc/cancel" },
	};
	struct keeld_proc k;
	size_t i;

	up(&k, NULL);
	put_shell_job(&k, "there", "\"/bin/true\"", 201);
	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		api_err(&k, paths[i][0], paths[i][1], NULL, 404, "' not found");
	for (i = 0; i < sizeof(runs) / sizeof(runs[0]); i++)
		api_err(&k, runs[i][0], runs[i][1], NULL, 404, "run '");
	api_err(&k, "GET", "/v1/nothing", NULL, 404, NULL);
	api_err(&k, "GET", "/v1/jobs/there/nothing", NULL, 404, NULL);
	/* The job that exists was not touched. */
	CHECK_INT(count_jobs(&k), ==, 1);
	down(&k);
}

TEST(wrong_method_405_with_allow)
{
	static const struct {
		const char *method, *path;
		const char *allow[3];
	} cases[] = {
		{ "PUT", "/v1/jobs", { "GET", "POST" } },
		{ "DELETE", "/v1/jobs", { "GET", "POST" } },
		{ "PATCH", "/v1/jobs/x", { "GET", "DELETE" } },
		{ "POST", "/v1/jobs/x", { "GET", "DELETE" } },
		{ "GET", "/v1/jobs/x/run", { "POST" } },
		{ "DELETE", "/v1/runs", { "GET" } },
		{ "DELETE", "/v1/runs/1", { "GET" } },
		{ "GET", "/v1/runs/1/cancel", { "POST" } },
		{ "POST", "/v1/status", { "GET" } },
		{ "POST", "/healthz", { "GET" } },
	};
	struct keeld_proc k;
	size_t i, j;

	up(&k, NULL);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hres r;
		char allow[256];

		req(&k, cases[i].method, cases[i].path, NULL, &r);
		check_error(&r, 405, NULL);
		if (hres_header_get(&r, "Allow", allow, sizeof(allow)) == NULL)
			KEEL_TEST_FAIL("%s %s: no Allow header", cases[i].method,
				       cases[i].path);
		for (j = 0; j < 3 && cases[i].allow[j] != NULL; j++)
			CHECK_CONTAINS(allow, cases[i].allow[j]);
		CHECK(strstr(allow, cases[i].method) == NULL);
		hres_free(&r);
	}
	down(&k);
}

/* ---- runs ------------------------------------------------------------------ */

TEST(run_now_shell_output)
{
	struct keeld_proc k;
	json_t *r, *l, *x;
	long long id;
	char path[128];
	size_t i;
	int seen = 0;

	up(&k, NULL);
	put_shell_job(&k, "echo", "\"/bin/echo\",\"hello\",\"e2e\"", 201);
	id = run_now(&k, "echo");
	r = wait_run(&k, id, NULL, 60);
	CHECK_STR(str(r, "state"), "succeeded");
	CHECK_STR(str(r, "job"), "echo");
	CHECK_STR(str(r, "trigger"), "manual");
	CHECK_STR(str(r, "output"), "hello e2e\n");
	CHECK_INT(json_integer_value(json_object_get(r, "exit_code")), ==, 0);
	CHECK(json_is_null(json_object_get(r, "signal")));
	CHECK(json_is_null(json_object_get(r, "http_status")));
	CHECK(json_is_null(json_object_get(r, "error")));
	CHECK(is_time(json_object_get(r, "scheduled_at")));
	CHECK(is_time(json_object_get(r, "created_at")));
	CHECK(is_time(json_object_get(r, "started_at")));
	CHECK(is_time(json_object_get(r, "finished_at")));
	CHECK(strcmp(str(r, "finished_at"), str(r, "started_at")) >= 0);
	CHECK(json_is_integer(json_object_get(r, "duration_ms")));
	CHECK_INT(json_integer_value(json_object_get(r, "duration_ms")), >=, 0);
	CHECK(is_hex32(str(r, "trace_id")));
	CHECK(str(r, "node") != NULL && str(r, "node")[0] != '\0');
	json_decref(r);

	/* Lists leave the output out; the run is in both. */
	l = api(&k, "GET", "/v1/runs", NULL, 200);
	json_array_foreach(json_object_get(l, "runs"), i, x) {
		CHECK(json_object_get(x, "output") == NULL);
		if (atoll(str(x, "id")) == id) {
			seen++;
			CHECK_STR(str(x, "state"), "succeeded");
			CHECK(json_is_integer(json_object_get(x, "duration_ms")));
		}
	}
	json_decref(l);
	snprintf(path, sizeof(path), "/v1/jobs/echo/runs");
	l = api(&k, "GET", path, NULL, 200);
	json_array_foreach(json_object_get(l, "runs"), i, x) {
		CHECK(json_object_get(x, "output") == NULL);
		CHECK_STR(str(x, "job"), "echo");
		if (atoll(str(x, "id")) == id)
			seen++;
	}
	CHECK(json_is_null(json_object_get(l, "next")));
	json_decref(l);
	CHECK_INT(seen, ==, 2);
	down(&k);
}

TEST(failing_shell_run_has_exit_code)
{
	struct keeld_proc k;
	json_t *r;
	long long id;

	up(&k, NULL);
	put_shell_job(&k, "false", "\"/bin/sh\",\"-c\",\"echo oops >&2; exit 3\"", 201);
	id = run_now(&k, "false");
	r = wait_run(&k, id, NULL, 60);
	CHECK_STR(str(r, "state"), "failed");
	CHECK_INT(json_integer_value(json_object_get(r, "exit_code")), ==, 3);
	CHECK_CONTAINS(str(r, "output"), "oops");
	json_decref(r);
	down(&k);
}

TEST(handler_panic_fails_the_run_not_keeld)
{
	const char *args[] = { "--demo", NULL };
	struct keeld_proc k;
	json_t *r, *st, *ev;
	long long id, ok;

	up(&k, args);
	put_handler_job(&k, "crash", "demo.crash");
	put_handler_job(&k, "fine", "demo.ok");
	id = run_now(&k, "crash");
	r = wait_run(&k, id, NULL, 60);
	CHECK_STR(str(r, "state"), "failed");
	CHECK_CONTAINS(str(r, "error"), "panic");
	CHECK_CONTAINS(str(r, "error"), "SIGSEGV");
	json_decref(r);

	/* keeld lives on, and still runs handlers. */
	CHECK_INT(kill(k.pid, 0), ==, 0);
	json_decref(api(&k, "GET", "/healthz", NULL, 200));
	ok = run_now(&k, "fine");
	json_decref(wait_run(&k, ok, "succeeded", 60));

	st = api(&k, "GET", "/v1/status", NULL, 200);
	CHECK_INT(json_integer_value(json_object_get(st, "panics_recovered")), >=, 1);
	json_decref(st);
	ev = find_event(&k, "run.panic", "crash");
	CHECK(ev != NULL);
	CHECK_INT(atoll(str(ev, "run_id")), ==, id);
	CHECK_STR(str(ev, "level"), "error");
	CHECK_CONTAINS(str(ev, "message"), "panic");
	CHECK(is_time(json_object_get(ev, "at")));
	json_decref(ev);

	/* A second crash is recovered too (the handler's signal state was
	 * restored after the first). */
	id = run_now(&k, "crash");
	r = wait_run(&k, id, NULL, 60);
	CHECK_STR(str(r, "state"), "failed");
	json_decref(r);
	st = api(&k, "GET", "/v1/status", NULL, 200);
	CHECK_INT(json_integer_value(json_object_get(st, "panics_recovered")), >=, 2);
	json_decref(st);
	down(&k);
}

TEST(pause_resume)
{
	struct keeld_proc k;
	json_t *v, *ev;

	up(&k, NULL);
	put_shell_job(&k, "p", "\"/bin/true\"", 201);
	v = api(&k, "POST", "/v1/jobs/p/pause", NULL, 200);
	CHECK(json_is_true(json_object_get(v, "paused")));
	CHECK(json_is_null(json_object_get(v, "next_run_at")));
	CHECK_STR(str(v, "name"), "p");
	json_decref(v);
	v = api(&k, "GET", "/v1/jobs/p", NULL, 200);
	CHECK(json_is_true(json_object_get(v, "paused")));
	CHECK(json_is_null(json_object_get(v, "next_run_at")));
	json_decref(v);
	ev = find_event(&k, "job.paused", "p");
	CHECK(ev != NULL);
	json_decref(ev);
	/* Pausing twice is fine. */
	json_decref(api(&k, "POST", "/v1/jobs/p/pause", NULL, 200));

	v = api(&k, "POST", "/v1/jobs/p/resume", NULL, 200);
	CHECK(json_is_false(json_object_get(v, "paused")));
	CHECK(is_time(json_object_get(v, "next_run_at")));
	json_decref(v);
	v = api(&k, "GET", "/v1/jobs/p", NULL, 200);
	CHECK(json_is_false(json_object_get(v, "paused")));
	CHECK(is_time(json_object_get(v, "next_run_at")));
	json_decref(v);
	ev = find_event(&k, "job.resumed", "p");
	CHECK(ev != NULL);
	json_decref(ev);

	/* A disabled job never fires: no next run either. */
	json_decref(api(&k, "POST", "/v1/jobs",
			"{\"name\":\"off\",\"schedule\":\"@every 1h\",\"enabled\":false,"
			"\"executor\":{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}",
			201));
	v = api(&k, "GET", "/v1/jobs/off", NULL, 200);
	CHECK(json_is_false(json_object_get(v, "enabled")));
	CHECK(json_is_null(json_object_get(v, "next_run_at")));
	json_decref(v);
	down(&k);
}

TEST(delete_job_and_its_runs)
{
	struct keeld_proc k;
	struct hres r;
	json_t *ev;
	long long id;
	char path[64];

	up(&k, NULL);
	put_shell_job(&k, "gone", "\"/bin/echo\",\"x\"", 201);
	put_shell_job(&k, "stays", "\"/bin/echo\",\"y\"", 201);
	id = run_now(&k, "gone");
	json_decref(wait_run(&k, id, "succeeded", 60));
	json_decref(wait_run(&k, run_now(&k, "stays"), "succeeded", 60));

	req(&k, "DELETE", "/v1/jobs/gone", NULL, &r);
	CHECK_INT(r.status, ==, 204);
	CHECK_INT(r.len, ==, 0);
	hres_free(&r);
	api_err(&k, "GET", "/v1/jobs/gone", NULL, 404, "job 'gone' not found");
	api_err(&k, "GET", "/v1/jobs/gone/runs", NULL, 404, "job 'gone' not found");
	snprintf(path, sizeof(path), "/v1/runs/%lld", id);
	api_err(&k, "GET", path, NULL, 404, "' not found");
	api_err(&k, "DELETE", "/v1/jobs/gone", NULL, 404, "job 'gone' not found");
	CHECK_INT(count_jobs(&k), ==, 1);
	{
		json_t *l = api(&k, "GET", "/v1/runs", NULL, 200), *x;
		size_t i;

		CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 1);
		json_array_foreach(json_object_get(l, "runs"), i, x)
			CHECK_STR(str(x, "job"), "stays");
		json_decref(l);
	}
	ev = find_event(&k, "job.deleted", "gone");
	CHECK(ev != NULL);
	json_decref(ev);
	/* The name can be used again: a new job. */
	put_shell_job(&k, "gone", "\"/bin/echo\",\"x\"", 201);
	down(&k);
}

/* Whether a process with exactly this argv[1] exists (the run's child). */
static int proc_with_arg(const char *arg1)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int found = 0;

	CHECK(d != NULL);
	while (!found && (e = readdir(d)) != NULL) {
		char path[300], buf[512];
		FILE *f;
		size_t n;

		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		f = fopen(path, "re");
		if (f == NULL)
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		if (n > strlen(buf) + 1 && strcmp(buf + strlen(buf) + 1, arg1) == 0)
			found = 1;
	}
	closedir(d);
	return found;
}

static void wait_proc_gone(const char *arg1, double timeout)
{
	double end = keel_test_now() + timeout;

	while (proc_with_arg(arg1)) {
		if (keel_test_now() > end)
			KEEL_TEST_FAIL("the run's process 'sleep %s' still runs",
				       arg1);
		usleep(50 * 1000);
	}
}

TEST(delete_cancels_running_runs)
{
	struct keeld_proc k;
	char arg[64], argv_json[128];
	long long id;
	double t0;

	/* A sleep no other test starts: its process is found by argv[1]. */
	snprintf(arg, sizeof(arg), "%d.5", 600 + (int)(getpid() % 1000));
	snprintf(argv_json, sizeof(argv_json), "\"sleep\",\"%s\"", arg);
	up(&k, NULL);
	put_shell_job(&k, "long", argv_json, 201);
	id = run_now(&k, "long");
	json_decref(wait_run(&k, id, "running", 60));
	{
		double end = keel_test_now() + 30;

		while (!proc_with_arg(arg)) {
			CHECK(keel_test_now() < end);
			usleep(20 * 1000);
		}
	}
	t0 = keel_test_now();
	json_decref(api(&k, "DELETE", "/v1/jobs/long", NULL, 204));
	wait_proc_gone(arg, 20);
	CHECK(keel_test_now() - t0 < 20);
	api_err(&k, "GET", "/v1/jobs/long", NULL, 404, NULL);
	{
		char path[64];

		snprintf(path, sizeof(path), "/v1/runs/%lld", id);
		/* Gone at once, or after the kill lands. */
		for (double end = keel_test_now() + 20;; usleep(50 * 1000)) {
			struct hres r;

			req(&k, "GET", path, NULL, &r);
			hres_free(&r);
			if (r.status == 404)
				break;
			CHECK(keel_test_now() < end);
		}
	}
	down(&k);
}

TEST(runs_paging_and_state_filter)
{
	struct keeld_proc k;
	long long ids[5], bad;
	json_t *l, *x;
	char path[128];
	const char *next;
	size_t i;

	up(&k, NULL);
	put_shell_job(&k, "p", "\"/bin/true\"", 201);
	put_shell_job(&k, "q", "\"/bin/false\"", 201);
	for (i = 0; i < 5; i++) {
		ids[i] = run_now(&k, "p");
		json_decref(wait_run(&k, ids[i], "succeeded", 60));
	}
	bad = run_now(&k, "q");
	json_decref(wait_run(&k, bad, "failed", 60));

	/* Page through p's runs two at a time, newest first. */
	l = api(&k, "GET", "/v1/jobs/p/runs?limit=2", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 2);
	CHECK_INT(atoll(str(json_array_get(json_object_get(l, "runs"), 0), "id")), ==, ids[4]);
	CHECK_INT(atoll(str(json_array_get(json_object_get(l, "runs"), 1), "id")), ==, ids[3]);
	next = str(l, "next");
	CHECK(next != NULL);
	snprintf(path, sizeof(path), "/v1/jobs/p/runs?limit=2&before=%s", next);
	json_decref(l);
	l = api(&k, "GET", path, NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 2);
	CHECK_INT(atoll(str(json_array_get(json_object_get(l, "runs"), 0), "id")), ==, ids[2]);
	CHECK_INT(atoll(str(json_array_get(json_object_get(l, "runs"), 1), "id")), ==, ids[1]);
	CHECK(str(l, "next") != NULL);
	snprintf(path, sizeof(path), "/v1/jobs/p/runs?limit=2&before=%s", str(l, "next"));
	json_decref(l);
	l = api(&k, "GET", path, NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 1);
	CHECK_INT(atoll(str(json_array_get(json_object_get(l, "runs"), 0), "id")), ==, ids[0]);
	CHECK(json_is_null(json_object_get(l, "next")));
	json_decref(l);

	/* All jobs: every run, newest first. */
	l = api(&k, "GET", "/v1/runs?limit=1000", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 6);
	CHECK_INT(atoll(str(json_array_get(json_object_get(l, "runs"), 0), "id")), ==, bad);
	for (i = 1; i < 6; i++)
		CHECK_INT(atoll(str(json_array_get(json_object_get(l, "runs"), i), "id")), <,
			  atoll(str(json_array_get(json_object_get(l, "runs"), i - 1), "id")));
	CHECK(json_is_null(json_object_get(l, "next")));
	json_decref(l);
	l = api(&k, "GET", "/v1/runs?limit=4", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 4);
	snprintf(path, sizeof(path), "/v1/runs?limit=4&before=%s", str(l, "next"));
	json_decref(l);
	l = api(&k, "GET", path, NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 2);
	json_decref(l);

	/* The state filter. */
	l = api(&k, "GET", "/v1/runs?state=failed", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 1);
	CHECK_INT(atoll(str(json_array_get(json_object_get(l, "runs"), 0), "id")), ==, bad);
	json_decref(l);
	l = api(&k, "GET", "/v1/runs?state=succeeded&limit=1000", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 5);
	json_array_foreach(json_object_get(l, "runs"), i, x)
		CHECK_STR(str(x, "state"), "succeeded");
	json_decref(l);
	l = api(&k, "GET", "/v1/jobs/q/runs?state=succeeded", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 0);
	CHECK(json_is_null(json_object_get(l, "next")));
	json_decref(l);
	l = api(&k, "GET", "/v1/runs?state=canceled", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "runs")), ==, 0);
	json_decref(l);

	/* Bad parameters: 400 with the reason, on every list. */
	static const char *const lists[] = { "/v1/runs", "/v1/jobs/p/runs" };
	for (i = 0; i < 2; i++) {
		static const char *const bad_limits[] = { "0", "1001", "abc", "-1",
							  "", "1.5" };
		for (size_t j = 0; j < sizeof(bad_limits) / sizeof(bad_limits[0]); j++) {
			snprintf(path, sizeof(path), "%s?limit=%s", lists[i], bad_limits[j]);
			api_err(&k, "GET", path, NULL, 400, "limit");
		}
		snprintf(path, sizeof(path), "%s?state=bogus", lists[i]);
		api_err(&k, "GET", path, NULL, 400, "state");
		snprintf(path, sizeof(path), "%s?state=SUCCEEDED", lists[i]);
		api_err(&k, "GET", path, NULL, 400, "state");
		snprintf(path, sizeof(path), "%s?before=abc", lists[i]);
		api_err(&k, "GET", path, NULL, 400, "before");
	}
	json_decref(api(&k, "GET", "/v1/runs?limit=1", NULL, 200));
	json_decref(api(&k, "GET", "/v1/runs?limit=1000", NULL, 200));
	down(&k);
}

TEST(events_paging)
{
	struct keeld_proc k;
	json_t *l, *e;
	char path[128];
	size_t i;

	up(&k, NULL);
	for (i = 0; i < 3; i++) {
		char name[16];

		snprintf(name, sizeof(name), "e%zu", i);
		put_shell_job(&k, name, "\"/bin/true\"", 201);
	}
	l = api(&k, "GET", "/v1/events?limit=2", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "events")), ==, 2);
	json_array_foreach(json_object_get(l, "events"), i, e) {
		CHECK(is_id(json_object_get(e, "id")));
		CHECK(is_time(json_object_get(e, "at")));
		CHECK(str(e, "level") != NULL && str(e, "kind") != NULL &&
		      str(e, "message") != NULL);
		CHECK(json_object_get(e, "job") != NULL);
		CHECK(json_object_get(e, "run_id") != NULL);
	}
	/* Newest first: the last job created. */
	CHECK_STR(str(json_array_get(json_object_get(l, "events"), 0), "kind"), "job.created");
	CHECK_STR(str(json_array_get(json_object_get(l, "events"), 0), "job"), "e2");
	CHECK(is_id(json_object_get(l, "next")));
	snprintf(path, sizeof(path), "/v1/events?limit=2&before=%s", str(l, "next"));
	json_decref(l);
	l = api(&k, "GET", path, NULL, 200);
	CHECK_INT(json_array_size(json_object_get(l, "events")), >=, 1);
	CHECK_STR(str(json_array_get(json_object_get(l, "events"), 0), "job"), "e0");
	json_decref(l);
	api_err(&k, "GET", "/v1/events?limit=0", NULL, 400, "limit");
	api_err(&k, "GET", "/v1/events?before=x", NULL, 400, "before");
	down(&k);
}

TEST(cancel_running_run)
{
	struct keeld_proc k;
	json_t *r;
	long long id, done;
	char path[64];
	double t0;

	up(&k, NULL);
	put_shell_job(&k, "sleepy", "\"sleep\",\"30\"", 201);
	put_shell_job(&k, "quick", "\"/bin/true\"", 201);
	id = run_now(&k, "sleepy");
	json_decref(wait_run(&k, id, "running", 60));
	t0 = keel_test_now();
	snprintf(path, sizeof(path), "/v1/runs/%lld/cancel", id);
	r = api(&k, "POST", path, NULL, 200);
	CHECK_INT(atoll(str(r, "id")), ==, id);
	CHECK(strcmp(str(r, "state"), "running") == 0 ||
	      strcmp(str(r, "state"), "canceled") == 0);
	json_decref(r);
	r = wait_run(&k, id, NULL, 20);
	CHECK_STR(str(r, "state"), "canceled");
	CHECK(is_time(json_object_get(r, "finished_at")));
	json_decref(r);
	/* "Shortly": well before the sleep would have ended. */
	CHECK(keel_test_now() - t0 < 20);
	/* A final run cannot be canceled again. */
	api_err(&k, "POST", path, NULL, 409, NULL);
	done = run_now(&k, "quick");
	json_decref(wait_run(&k, done, "succeeded", 60));
	snprintf(path, sizeof(path), "/v1/runs/%lld/cancel", done);
	api_err(&k, "POST", path, NULL, 409, NULL);
	r = api(&k, "GET", "/v1/runs?state=canceled", NULL, 200);
	CHECK_INT(json_array_size(json_object_get(r, "runs")), ==, 1);
	json_decref(r);
	down(&k);
}

/* With every worker busy, a run waits in the queue; canceling it must not
 * wait for a worker ("a queued run becomes canceled at once"). */
TEST(cancel_queued_run_at_once)
{
	const char *args[] = { "--workers", "1", "--drain-timeout", "1s", NULL };
	struct keeld_proc k;
	json_t *r;
	long long busy, queued;
	char path[64];

	up(&k, args);
	put_shell_job(&k, "busy", "\"sleep\",\"30\"", 201);
	put_shell_job(&k, "waits", "\"/bin/true\"", 201);
	busy = run_now(&k, "busy");
	json_decref(wait_run(&k, busy, "running", 60));
	queued = run_now(&k, "waits");
	usleep(300 * 1000);
	snprintf(path, sizeof(path), "/v1/runs/%lld", queued);
	r = api(&k, "GET", path, NULL, 200);
	CHECK_STR(str(r, "state"), "queued");
	json_decref(r);
	snprintf(path, sizeof(path), "/v1/runs/%lld/cancel", queued);
	r = api(&k, "POST", path, NULL, 200);
	CHECK_STR(str(r, "state"), "canceled");
	json_decref(r);
	snprintf(path, sizeof(path), "/v1/runs/%lld", queued);
	r = api(&k, "GET", path, NULL, 200);
	CHECK_STR(str(r, "state"), "canceled");
	json_decref(r);
	/* The busy run was not touched. */
	snprintf(path, sizeof(path), "/v1/runs/%lld", busy);
	r = api(&k, "GET", path, NULL, 200);
	CHECK_STR(str(r, "state"), "running");
	json_decref(r);
	down(&k);
}

/* ---- status, health, metrics ----------------------------------------------- */

TEST(health_ready_status_metrics)
{
	const char *args[] = { "--demo", NULL };
	struct keeld_proc k;
	struct hres r;
	json_t *v, *x;
	char h[128], want[PATH_MAX + 16];

	up(&k, args);
	v = api(&k, "GET", "/healthz", NULL, 200);
	CHECK_STR(str(v, "status"), "ok");
	json_decref(v);
	v = api(&k, "GET", "/readyz", NULL, 200);
	CHECK_STR(str(v, "status"), "ready");
	json_decref(v);

	put_shell_job(&k, "m", "\"/bin/true\"", 201);
	put_handler_job(&k, "h", "demo.fail");
	json_decref(wait_run(&k, run_now(&k, "m"), "succeeded", 60));
	json_decref(wait_run(&k, run_now(&k, "h"), "failed", 60));

	v = api(&k, "GET", "/v1/status", NULL, 200);
	CHECK(str(v, "version") != NULL);
	CHECK(str(v, "node") != NULL);
	CHECK(is_time(json_object_get(v, "started_at")));
	CHECK(json_is_integer(json_object_get(v, "uptime_s")));
	CHECK_INT(json_integer_value(json_object_get(v, "uptime_s")), >=, 0);
	snprintf(want, sizeof(want), "sqlite:%s", k.data_dir);
	CHECK_STR(str(v, "store"), want);
	CHECK_INT(json_integer_value(json_object_get(v, "jobs")), ==, 2);
	CHECK_INT(json_integer_value(json_object_get(v, "queued")), ==, 0);
	CHECK_INT(json_integer_value(json_object_get(v, "running")), ==, 0);
	CHECK_INT(json_integer_value(json_object_get(v, "panics_recovered")), ==, 0);
	CHECK(json_is_array(json_object_get(v, "breakers")));
	x = json_object_get(v, "runs");
	CHECK(json_is_object(x));
	CHECK_INT(json_integer_value(json_object_get(x, "succeeded")), ==, 1);
	CHECK_INT(json_integer_value(json_object_get(x, "failed")), ==, 1);
	json_decref(v);

	req(&k, "GET", "/metrics", NULL, &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_CONTAINS(hres_header_get(&r, "Content-Type", h, sizeof(h)), "text/plain");
	CHECK_CONTAINS(h, "version=0.0.4");
	CHECK_CONTAINS(r.body, "keeld_runs_total{job=\"m\",state=\"succeeded\"} 1\n");
	CHECK_CONTAINS(r.body, "keeld_runs_total{job=\"h\",state=\"failed\"} 1\n");
	CHECK_CONTAINS(r.body, "keeld_run_duration_seconds_count{job=\"m\"} 1\n");
	CHECK_CONTAINS(r.body, "keeld_queue_depth ");
	CHECK_CONTAINS(r.body, "keeld_panics_recovered_total 0\n");
	CHECK_CONTAINS(r.body, "http_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"201\"} 2\n");
	hres_free(&r);
	down(&k);
}

/* --node defaults to HOST:PORT: with --listen 127.0.0.1:0 the port is the
 * one the kernel picked, which is the one clients use. */
TEST(status_node_is_the_listening_port)
{
	struct keeld_proc k;
	json_t *v;
	const char *node, *colon;

	up(&k, NULL);
	v = api(&k, "GET", "/v1/status", NULL, 200);
	node = str(v, "node");
	CHECK(node != NULL);
	colon = strrchr(node, ':');
	CHECK(colon != NULL);
	CHECK_INT(atoi(colon + 1), ==, k.port);
	json_decref(v);
	down(&k);
}

/* ---- auth ------------------------------------------------------------------ */

static void check_auth(struct keeld_proc *k, const char *token)
{
	static const char *const protected[][2] = {
		{ "GET", "/v1/jobs" },
		{ "POST", "/v1/jobs" },
		{ "GET", "/v1/status" },
		{ "GET", "/v1/runs" },
		{ "GET", "/v1/events" },
		{ "GET", "/v1/jobs/x" },
		{ "POST", "/v1/jobs/x/run" },
		{ "GET", "/metrics" },
	};
	static const char *const wrong[] = {
		"",
		"Authorization: Bearer wrong",
		"Authorization: Bearer ",
		"Authorization: Basic dXNlcjpwYXNz",
		NULL,
	};
	char right[300];
	size_t i, w;

	snprintf(right, sizeof(right), "Authorization: Bearer %s", token);
	for (i = 0; i < sizeof(protected) / sizeof(protected[0]); i++) {
		for (w = 0; wrong[w] != NULL; w++) {
			struct hres r;
			char h[128];

			snprintf(g_auth, sizeof(g_auth), "%s", wrong[w]);
			req(k, protected[i][0], protected[i][1], NULL, &r);
			check_error(&r, 401, NULL);
			CHECK_CONTAINS(hres_header_get(&r, "WWW-Authenticate", h, sizeof(h)),
				       "Bearer");
			hres_free(&r);
		}
	}
	/* Nothing was created by the refused POSTs. */
	snprintf(g_auth, sizeof(g_auth), "%s", right);
	CHECK_INT(count_jobs(k), ==, 0);
	put_shell_job(k, "authed", "\"/bin/true\"", 201);
	json_decref(api(k, "GET", "/v1/status", NULL, 200));
	{
		struct hres r;

		req(k, "GET", "/metrics", NULL, &r);
		CHECK_INT(r.status, ==, 200);
		hres_free(&r);
	}
	/* The public paths need no token. */
	g_auth[0] = '\0';
	json_decref(api(k, "GET", "/healthz", NULL, 200));
	json_decref(api(k, "GET", "/readyz", NULL, 200));
	{
		struct hres r;

		req(k, "GET", "/", NULL, &r);
		CHECK_INT(r.status, ==, 200);
		CHECK_CONTAINS(r.body, "<html");
		hres_free(&r);
	}
}

TEST(token_auth)
{
	const char *args[] = { "--token", "s3cret-T0ken", NULL };
	struct keeld_proc k;

	up(&k, args);
	check_auth(&k, "s3cret-T0ken");
	down(&k);
}

TEST(token_from_environment_and_file)
{
	const char *env[] = { "KEELD_TOKEN=from-env", NULL };
	struct keeld_proc k;
	char file[PATH_MAX];
	const char *args[] = { "--token-file", file, NULL };

	keeld_proc_init(&k);
	k.env = env;
	keeld_proc_start_ok(&k, NULL);
	check_auth(&k, "from-env");
	CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);
	CHECK_INT(k.code, ==, 0);

	/* A token file's trailing newline is not part of the token; the file
	 * wins over the environment. */
	keeld_proc_write_file(&k, "token", "from-file\n", file, sizeof(file));
	snprintf(k.data_dir, sizeof(k.data_dir), "%s/data2", k.dir);
	CHECK_INT(mkdir(k.data_dir, 0700), ==, 0);
	keeld_proc_start_ok(&k, args);
	check_auth(&k, "from-file");
	down(&k);
}

/* GET /healthz with a Cookie header of n bytes of value: its status. */
static long big_cookie_status(const struct keeld_proc *k, size_t n,
			      struct hres *r)
{
	static char cookie[32 * 1024];
	const char *hdrs[] = { cookie, NULL };
	int len = snprintf(cookie, sizeof(cookie), "Cookie: s=");

	CHECK(n + (size_t)len < sizeof(cookie));
	memset(cookie + len, 'a', n);
	cookie[(size_t)len + n] = '\0';
	http_req((uint16_t)k->port, "GET", "/healthz", NULL, hdrs, r);
	CHECK_INT(r->rc, ==, CURLE_OK);
	return r->status;
}

/* The request-size limit: 8 KiB by default, so a browser's 8,500-byte
 * cookie gets the JSON 431; --max-header-size (or its variable) raises
 * it; a value out of range stops keeld before it writes anything. */
TEST(max_header_size_option)
{
	static const char *const bad[] = { "1023", "1048577", "8k", "", "-1" };
	const char *args[] = { "--max-header-size", "16384", NULL };
	const char *env[] = { "KEELD_MAX_HEADER_SIZE=12000", NULL };
	/* keeld's settings, and cookies just under and over each */
	const struct {
		const char *const *args, *const *env;
		size_t under, over;
	} c[] = {
		{ NULL, NULL, 8000, 8500 },
		{ args, NULL, 16200, 16700 },
		{ NULL, env, 11800, 12300 },
	};
	struct keeld_proc k;
	struct hres r;

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		keeld_proc_init(&k);
		k.env = c[i].env;
		keeld_proc_start_ok(&k, c[i].args);
		CHECK_INT(big_cookie_status(&k, c[i].under, &r), ==, 200);
		hres_free(&r);
		CHECK_INT(big_cookie_status(&k, c[i].over, &r), ==, 431);
		json_decref(check_error_body(&r, 431));
		hres_free(&r);
		down(&k);
	}

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *a[] = { "--max-header-size", bad[i], NULL };
		char *log;

		keeld_proc_init(&k);
		CHECK_INT(keeld_proc_start(&k, a, 0), ==, -ECHILD);
		CHECK_INT(k.code, ==, 2);
		log = keeld_proc_log(&k);
		CHECK_CONTAINS(log, "keeld: --max-header-size: '");
		CHECK_CONTAINS(log, "is not an integer 1024..1048576");
		free(log);
		CHECK(keeld_proc_data_empty(&k));
		keeld_proc_cleanup(&k);
	}
}

/* ---- the process ----------------------------------------------------------- */

TEST(sigterm_exits_zero)
{
	struct keeld_proc k;
	double t0;
	char *log;

	up(&k, NULL);
	put_shell_job(&k, "idle", "\"/bin/true\"", 201);
	t0 = keel_test_now();
	CHECK_INT(keeld_proc_stop(&k, 30), ==, 0);
	CHECK_INT(k.exited, ==, 1);
	CHECK_INT(k.code, ==, 0);
	CHECK(keel_test_now() - t0 < 30);
	log = keeld_proc_log(&k);
	CHECK_CONTAINS(log, "keeld stopped");
	free(log);
	keeld_proc_cleanup(&k);
}

TEST(sigterm_with_a_running_run_exits_within_the_drain_timeout)
{
	const char *args[] = { "--drain-timeout", "2s", NULL };
	struct keeld_proc k;
	json_t *r;
	long long id;
	char path[64];
	double t0, took;

	up(&k, args);
	put_shell_job(&k, "long", "\"sleep\",\"60\"", 201);
	id = run_now(&k, "long");
	json_decref(wait_run(&k, id, "running", 60));
	t0 = keel_test_now();
	CHECK_INT(keeld_proc_stop(&k, 40), ==, 0);
	took = keel_test_now() - t0;
	CHECK_INT(k.code, ==, 0);
	/* It waited for the run (the drain), then stopped it: not 60 s. */
	CHECK(took >= 1.5);
	CHECK(took < 30);

	/* The run is final in the store: a restarted keeld says so. */
	keeld_proc_start_ok(&k, NULL);
	snprintf(path, sizeof(path), "/v1/runs/%lld", id);
	r = api(&k, "GET", path, NULL, 200);
	CHECK(final_state(str(r, "state")));
	CHECK(strcmp(str(r, "state"), "succeeded") != 0);
	json_decref(r);
	down(&k);
}

TEST(second_keeld_on_the_same_data_dir_exits_1)
{
	struct keeld_proc a, b;
	char *log;

	up(&a, NULL);
	put_shell_job(&a, "mine", "\"/bin/true\"", 201);
	keeld_proc_init(&b);
	snprintf(b.data_dir, sizeof(b.data_dir), "%s", a.data_dir);
	CHECK_INT(keeld_proc_start(&b, NULL, 0), ==, -ECHILD);
	CHECK_INT(b.exited, ==, 1);
	CHECK_INT(b.code, ==, 1);
	log = keeld_proc_log(&b);
	CHECK_CONTAINS(log, "in use by another keeld");
	free(log);
	keeld_proc_cleanup(&b);
	/* The first one is unharmed. */
	json_decref(api(&a, "GET", "/healthz", NULL, 200));
	CHECK_INT(count_jobs(&a), ==, 1);
	down(&a);
}

/* A jobs file refused: exit 1, the job and the reason on stderr, and a
 * keeld started afterwards on the same data dir has none of its jobs. */
static void check_jobs_file_refused(const char *text, const char *const *need)
{
	struct keeld_proc k;
	char file[PATH_MAX], *log;
	const char *args[] = { "--demo", "--jobs", file, NULL };
	size_t i;

	keeld_proc_init(&k);
	keeld_proc_write_file(&k, "jobs.json", text, file, sizeof(file));
	CHECK_INT(keeld_proc_start(&k, args, 0), ==, -ECHILD);
	CHECK_INT(k.code, ==, 1);
	log = keeld_proc_log(&k);
	for (i = 0; need[i] != NULL; i++)
		CHECK_CONTAINS(log, need[i]);
	free(log);
	keeld_proc_start_ok(&k, NULL);
	CHECK_INT(count_jobs(&k), ==, 0);
	down(&k);
}

TEST(jobs_file_with_a_bad_schedule_is_refused)
{
	static const char *const need[] = { "job 2", "day of month", NULL };

	check_jobs_file_refused(
		"[{\"name\":\"a\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/true\"]}},\n"
		" {\"name\":\"b\",\"schedule\":\"0 0 0 32 * *\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/true\"]}},\n"
		" {\"name\":\"c\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}]\n",
		need);
}

/* The handler check happens when the job is stored, after the file was
 * parsed: the jobs before the bad one must not be stored either. */
TEST(jobs_file_with_an_unknown_handler_stores_nothing)
{
	static const char *const need[] = { "'b'", "no.such.handler", NULL };

	check_jobs_file_refused(
		"{\"jobs\":[{\"name\":\"a\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/true\"]}},\n"
		" {\"name\":\"b\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"handler\",\"name\":\"no.such.handler\"}}]}\n",
		need);
}

TEST(jobs_file_invalid_json_or_duplicate_names)
{
	static const char *const need1[] = { "line 2", NULL };
	static const char *const need2[] = { "'a'", NULL };

	check_jobs_file_refused("[{\"name\":\"a\",\n ]", need1);
	check_jobs_file_refused(
		"[{\"name\":\"a\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/true\"]}},"
		"{\"name\":\"a\",\"schedule\":\"@every 2h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}]",
		need2);
}

TEST(jobs_file_forms_accepted)
{
	static const char *const forms[] = {
		"[{\"name\":\"a\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}]",
		"{\"jobs\":[{\"name\":\"a\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}]}",
		"{\"name\":\"a\",\"schedule\":\"@every 1h\",\"executor\":"
		"{\"type\":\"shell\",\"command\":[\"/bin/true\"]}}",
	};
	size_t i;

	for (i = 0; i < 3; i++) {
		struct keeld_proc k;
		char file[PATH_MAX];
		const char *args[] = { "--jobs", file, NULL };
		json_t *v;

		keeld_proc_init(&k);
		keeld_proc_write_file(&k, "jobs.json", forms[i], file, sizeof(file));
		keeld_proc_start_ok(&k, args);
		CHECK_INT(count_jobs(&k), ==, 1);
		v = api(&k, "GET", "/v1/jobs/a", NULL, 200);
		CHECK_STR(str(v, "schedule"), "@every 1h");
		json_decref(v);
		/* Started again with the same file: unchanged, still one. */
		CHECK_INT(keeld_proc_stop(&k, 0), ==, 0);
		keeld_proc_start_ok(&k, args);
		CHECK_INT(count_jobs(&k), ==, 1);
		down(&k);
	}
}

/* The sample jobs file that `make run` starts keeld with is valid and
 * its in-process jobs find the demo handlers. */
TEST(sample_jobs_file_of_make_run)
{
	struct keeld_proc k;
	const char *args[] = { "--demo", "--jobs",
			       KEEL_SOURCE_DIR "/etc/keeld/jobs.json", NULL };
	json_t *v;

	keeld_proc_init(&k);
	keeld_proc_start_ok(&k, args);
	CHECK_INT(count_jobs(&k), ==, 7);
	v = api(&k, "GET", "/v1/jobs/nightly-backup", NULL, 200);
	CHECK_STR(str(v, "timezone"), "Europe/Berlin");
	json_decref(v);
	down(&k);
}
