/*
 * tests/sched/test_exec.c - the executor context (keel/exec.h): config
 * defaults and refusals, the handler registry, dispatch by executor type,
 * and the handler executor: success, failure with and without a reason, a
 * panic and a NULL dereference in a handler (failed runs, logged with the
 * stack; the process goes on), an unregistered handler, timeouts through
 * the cancel token (polled or ignored), cancellation, re-registration,
 * the run's trace context, and many runs on four threads at once.
 *
 * No threads label: cases fault on purpose (the nil dereference), which
 * TSan cannot follow.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/exec.h>
#include <keel/job.h>
#include <keel/log.h>
#include <keel/panic.h>
#include <keel/trace.h>
#include "keel_test.h"

#include "../../src/sched/exec_internal.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static struct keel_job *job_from(const char *text)
{
	char err[KEEL_JOB_ERR_MAX];
	struct keel_job *j = NULL;
	json_error_t e;
	json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &e);

	if (v == NULL)
		KEEL_TEST_FAIL("bad test JSON: %s: %s", e.text, text);
	if (keel_job_from_json(v, &j, err, sizeof(err)) != 0)
		KEEL_TEST_FAIL("job refused: %s\n  %s", err, text);
	json_decref(v);
	return j;
}

/* A handler job named "t" for the handler `name`; timeout "" = none. */
static struct keel_job *handler_job(const char *name, const char *timeout)
{
	char text[512];

	snprintf(
	    text, sizeof(text),
	    "{\"name\": \"t\", \"schedule\": \"@manual\", "
	    "\"executor\": {\"type\": \"handler\", \"name\": \"%s\"%s%s%s}}",
	    name, timeout[0] != '\0' ? ", \"timeout\": \"" : "", timeout,
	    timeout[0] != '\0' ? "\"" : "");
	return job_from(text);
}

/* A logger that keeps its JSON lines. */
static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;
static char cap_buf[1 << 18];
static size_t cap_len;

static void cap_sink(void *ud, enum keel_log_level level, const char *line,
		     size_t len)
{
	(void)ud;
	(void)level;
	pthread_mutex_lock(&cap_mu);
	if (cap_len + len < sizeof(cap_buf)) {
		memcpy(cap_buf + cap_len, line, len);
		cap_len += len;
		cap_buf[cap_len] = '\0';
	}
	pthread_mutex_unlock(&cap_mu);
}

static struct keel_logger *cap_logger(void)
{
	struct keel_log_config lc;
	struct keel_logger *lg;

	keel_log_config_init(&lc);
	lc.format = KEEL_LOG_FORMAT_JSON;
	lc.sink = cap_sink;
	lc.level = KEEL_LOG_DEBUG;
	CHECK_INT(keel_log_new(&lc, &lg), ==, 0);
	return lg;
}

/* The first captured record whose message is msg, parsed. */
static json_t *cap_record(const char *msg)
{
	char *line = cap_buf, *nl;

	for (; *line != '\0'; line = nl + 1) {
		json_t *o;

		nl = strchr(line, '\n');
		if (nl == NULL)
			break;
		o = json_loadb(line, (size_t)(nl - line), 0, NULL);
		if (o == NULL)
			KEEL_TEST_FAIL("log line is not JSON: %.*s",
				       (int)(nl - line), line);
		if (strcmp(json_string_value(json_object_get(o, "message")),
			   msg) == 0)
			return o;
		json_decref(o);
	}
	KEEL_TEST_FAIL("no record \"%s\" in:\n%s", msg, cap_buf);
	return NULL;
}

static void check_dump_contains(const json_t *v, const char *needle)
{
	char *text = json_dumps(v, 0);

	CHECK_CONTAINS(text, needle);
	free(text);
}

static struct keel_executor *new_exec(struct keel_logger *lg)
{
	struct keel_exec_config cfg;
	struct keel_executor *ex = NULL;

	keel_exec_config_init(&cfg);
	cfg.log = lg;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, 0);
	CHECK(ex != NULL);
	return ex;
}

static void req_init(struct keel_exec_req *rq)
{
	memset(rq, 0, sizeof(*rq));
	rq->run_id = 42;
	rq->attempt = 2;
	rq->scheduled_at = 1764152000000;
}

/* ------------------------------------------------------------------------
 * Config and context
 * ------------------------------------------------------------------------ */

TEST(config_defaults)
{
	struct keel_exec_config cfg;

	memset(&cfg, 0x5a, sizeof(cfg));
	keel_exec_config_init(&cfg);
	CHECK(cfg.log == NULL);
	CHECK_INT(cfg.kill_grace, ==, 5 * KEEL_SEC);
	CHECK_STR(cfg.path, "/usr/local/bin:/usr/bin:/bin");
	CHECK_INT(cfg.breaker_failures, ==, 5);
	CHECK_INT(cfg.breaker_open, ==, 30 * KEEL_SEC);
	CHECK_INT(cfg.http_connect_timeout, ==, 10 * KEEL_SEC);
}

TEST(new_refuses_bad_config)
{
	struct keel_exec_config cfg;
	struct keel_executor *ex = (struct keel_executor *)&cfg;

	CHECK_INT(keel_exec_new(NULL, NULL), ==, -EINVAL);
	keel_exec_config_init(&cfg);
	cfg.kill_grace = -1;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, -EINVAL);
	CHECK(ex == NULL);
	keel_exec_config_init(&cfg);
	cfg.breaker_failures = 0;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, -EINVAL);
	keel_exec_config_init(&cfg);
	cfg.breaker_open = 0;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, -EINVAL);
	keel_exec_config_init(&cfg);
	cfg.http_connect_timeout = 0;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, -EINVAL);
	/* The edges that are fine. */
	keel_exec_config_init(&cfg);
	cfg.kill_grace = 0;
	cfg.breaker_failures = 1;
	cfg.breaker_open = 1;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, 0);
	keel_exec_free(ex);
	/* NULL config: the defaults. */
	CHECK_INT(keel_exec_new(NULL, &ex), ==, 0);
	CHECK_STR(ex->cfg.path, "/usr/local/bin:/usr/bin:/bin");
	CHECK_INT(ex->cfg.breaker_failures, ==, 5);
	keel_exec_free(ex);
	keel_exec_free(NULL);
	keel_test_leak_check();
}

TEST(new_copies_path)
{
	struct keel_exec_config cfg;
	struct keel_executor *ex;
	char path[64];

	snprintf(path, sizeof(path), "/opt/x/bin:/bin");
	keel_exec_config_init(&cfg);
	cfg.path = path;
	CHECK_INT(keel_exec_new(&cfg, &ex), ==, 0);
	memset(path, 'z', sizeof(path) - 1);
	CHECK_STR(ex->cfg.path, "/opt/x/bin:/bin");
	CHECK(ex->cfg.path != path);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * The registry
 * ------------------------------------------------------------------------ */

static int h_ok(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	return 0;
}

TEST(registry_names)
{
	struct keel_executor *ex = new_exec(NULL);
	char n64[65], n65[66];

	memset(n64, 'a', 64);
	n64[64] = '\0';
	memset(n65, 'a', 65);
	n65[65] = '\0';
	CHECK_INT(keel_exec_handler_register(ex, "", h_ok, NULL), ==, -EINVAL);
	CHECK_INT(keel_exec_handler_register(ex, NULL, h_ok, NULL), ==,
		  -EINVAL);
	CHECK_INT(keel_exec_handler_register(ex, n65, h_ok, NULL), ==, -EINVAL);
	CHECK_INT(keel_exec_handler_register(ex, "a b", h_ok, NULL), ==,
		  -EINVAL);
	CHECK_INT(keel_exec_handler_register(ex, "a/b", h_ok, NULL), ==,
		  -EINVAL);
	CHECK_INT(keel_exec_handler_register(ex, "caf\xc3\xa9", h_ok, NULL), ==,
		  -EINVAL);
	CHECK_INT(keel_exec_handler_register(ex, "ok", NULL, NULL), ==,
		  -EINVAL);
	CHECK_INT(keel_exec_handler_register(NULL, "ok", h_ok, NULL), ==,
		  -EINVAL);
	CHECK_INT(keel_exec_handler_exists(ex, "ok"), ==, 0);

	CHECK_INT(keel_exec_handler_register(ex, n64, h_ok, NULL), ==, 0);
	CHECK_INT(
	    keel_exec_handler_register(ex, "Report.daily_v2-x", h_ok, NULL), ==,
	    0);
	CHECK_INT(keel_exec_handler_exists(ex, n64), ==, 1);
	CHECK_INT(keel_exec_handler_exists(ex, "Report.daily_v2-x"), ==, 1);
	CHECK_INT(keel_exec_handler_exists(ex, "report.daily_v2-x"), ==, 0);
	CHECK_INT(keel_exec_handler_exists(ex, n65), ==, 0);
	CHECK_INT(keel_exec_handler_exists(ex, NULL), ==, 0);
	CHECK_INT(keel_exec_handler_exists(NULL, "ok"), ==, 0);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Handler runs
 * ------------------------------------------------------------------------ */

struct seen {
	int calls;
	const struct keel_job *job;
	int64_t run_id;
	int attempt;
	int64_t scheduled_at;
	int has_cancel;
	size_t errlen;
	void *ud;
	int64_t cancel_deadline;
	char trace_id[33];
};
static struct seen seen;

static int h_record(struct keel_exec_call *call, void *ud)
{
	const struct keel_trace *t = keel_trace_current();

	seen.calls++;
	seen.job = call->job;
	seen.run_id = call->run_id;
	seen.attempt = call->attempt;
	seen.scheduled_at = call->scheduled_at;
	seen.has_cancel = call->cancel != NULL;
	seen.errlen = call->errlen;
	seen.ud = ud;
	seen.cancel_deadline = keel_cancel_deadline(call->cancel);
	if (t != NULL)
		keel_trace_id_hex(t, seen.trace_id);
	return 0;
}

TEST(handler_success)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("rec", "");
	struct keel_exec_result res;
	struct keel_exec_req rq;
	int ud;

	req_init(&rq);
	CHECK_INT(keel_exec_handler_register(ex, "rec", h_record, &ud), ==, 0);
	memset(&res, 0x5a, sizeof(res));
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_STR(res.error, "");
	CHECK_INT(res.exit_code, ==, -1);
	CHECK_INT(res.signal, ==, 0);
	CHECK_INT(res.http_status, ==, 0);
	CHECK_INT(res.panicked, ==, 0);
	CHECK(res.output == NULL);
	CHECK_INT(res.output_len, ==, 0);

	CHECK_INT(seen.calls, ==, 1);
	CHECK(seen.job == j);
	CHECK_INT(seen.run_id, ==, 42);
	CHECK_INT(seen.attempt, ==, 2);
	CHECK_INT(seen.scheduled_at, ==, 1764152000000);
	CHECK(seen.has_cancel);
	CHECK_INT(seen.errlen, >=, 256);
	CHECK(seen.ud == &ud);
	CHECK_INT(seen.cancel_deadline, ==, KEEL_NEVER); /* no timeout */

	keel_exec_result_clear(&res);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* The job's timeout is the token's deadline. */
TEST(handler_cancel_deadline_is_timeout)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("rec", "90s");
	struct keel_exec_result res;
	struct keel_exec_req rq;
	int64_t t0 = keel_clock_now(NULL), t1;

	req_init(&rq);
	CHECK_INT(keel_exec_handler_register(ex, "rec", h_record, NULL), ==, 0);
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	t1 = keel_clock_now(NULL);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(seen.cancel_deadline, >=, t0 + 90 * KEEL_SEC);
	CHECK_INT(seen.cancel_deadline, <=, t1 + 90 * KEEL_SEC);
	keel_job_free(j);
	keel_exec_free(ex);
}

/* A NULL request is an attempt without identity. */
TEST(handler_null_request)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("rec", "");
	struct keel_exec_result res;

	CHECK_INT(keel_exec_handler_register(ex, "rec", h_record, NULL), ==, 0);
	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(seen.run_id, ==, 0);
	CHECK(seen.has_cancel);
	keel_job_free(j);
	keel_exec_free(ex);
}

static int h_fail_text(struct keel_exec_call *call, void *ud)
{
	(void)ud;
	snprintf(call->error, call->errlen, "disk full on /var");
	return 1;
}

static int h_fail_3(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	return 3;
}

static int h_fail_neg(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	return -5;
}

/* A reason with invalid UTF-8, control characters and no NUL at all. */
static int h_fail_garbage(struct keel_exec_call *call, void *ud)
{
	(void)ud;
	memset(call->error, 'x', call->errlen);
	memcpy(call->error, "bad\xff\xfe\nline\t\xc3\xa9", 13);
	return 1;
}

TEST(handler_failure)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_exec_result res;
	struct keel_exec_req rq;
	struct keel_job *j;
	json_t *s;

	req_init(&rq);
	CHECK_INT(keel_exec_handler_register(ex, "text", h_fail_text, NULL), ==,
		  0);
	CHECK_INT(keel_exec_handler_register(ex, "three", h_fail_3, NULL), ==,
		  0);
	CHECK_INT(keel_exec_handler_register(ex, "neg", h_fail_neg, NULL), ==,
		  0);
	CHECK_INT(keel_exec_handler_register(ex, "junk", h_fail_garbage, NULL),
		  ==, 0);

	j = handler_job("text", "");
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_STR(res.error, "disk full on /var");
	CHECK_INT(res.panicked, ==, 0);
	CHECK_INT(res.exit_code, ==, -1);
	keel_exec_result_clear(&res);
	keel_job_free(j);

	j = handler_job("three", "");
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_STR(res.error, "handler returned 3");
	keel_job_free(j);

	j = handler_job("neg", "");
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_STR(res.error, "handler returned -5");
	keel_job_free(j);

	/* Stored as JSON later: it must be one line of valid UTF-8. */
	j = handler_job("junk", "");
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK(strncmp(res.error, "bad?? line\t\xc3\xa9xxx", 16) == 0);
	CHECK_INT(strlen(res.error), <, sizeof(res.error));
	CHECK(strchr(res.error, '\n') == NULL);
	s = json_string(res.error);
	CHECK(s != NULL);
	json_decref(s);
	keel_job_free(j);

	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(handler_not_registered)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("nope", "");
	struct keel_exec_result res;
	struct keel_exec_req rq;

	req_init(&rq);
	CHECK_INT(keel_exec_handler_register(ex, "other", h_ok, NULL), ==, 0);
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_STR(res.error, "handler 'nope' is not registered in this keeld");
	CHECK_INT(res.panicked, ==, 0);
	keel_job_free(j);
	keel_exec_free(ex);
}

static int h_version(struct keel_exec_call *call, void *ud)
{
	snprintf(call->error, call->errlen, "v%d", (int)(intptr_t)ud);
	return 1;
}

TEST(reregister_replaces)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("h", "");
	struct keel_exec_result res;

	CHECK_INT(keel_exec_handler_register(ex, "h", h_version, (void *)1), ==,
		  0);
	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, 0);
	CHECK_STR(res.error, "v1");
	CHECK_INT(keel_exec_handler_register(ex, "h", h_version, (void *)2), ==,
		  0);
	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, 0);
	CHECK_STR(res.error, "v2");
	CHECK_INT(keel_exec_handler_register(ex, "h", h_ok, NULL), ==, 0);
	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(keel_exec_handler_exists(ex, "h"), ==, 1);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Panics and faults
 * ------------------------------------------------------------------------ */

static int cleanup_ran;

static void note_cleanup(void *arg)
{
	(void)arg;
	cleanup_ran++;
}

static int h_panic(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	keel_defer(note_cleanup, NULL); /* the handler's own scope is open */
	keel_panic("ledger is inconsistent");
	return 0;
}

TEST(handler_panic_fails_the_run)
{
	struct keel_logger *lg = cap_logger();
	struct keel_executor *ex = new_exec(lg);
	struct keel_job *j = handler_job("boom", "");
	struct keel_exec_result res;
	struct keel_exec_req rq;
	json_t *rec, *p;

	req_init(&rq);
	CHECK_INT(keel_exec_handler_register(ex, "boom", h_panic, NULL), ==, 0);
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.panicked, ==, 1);
	CHECK_STR(res.error, "panic: ledger is inconsistent");
	CHECK_INT(cleanup_ran, ==, 1);
	CHECK_INT(keel_panicking(), ==, 0);

	rec = cap_record("handler panicked");
	CHECK_STR(json_string_value(json_object_get(rec, "level")), "ERROR");
	CHECK_STR(json_string_value(json_object_get(rec, "job")), "t");
	CHECK_STR(json_string_value(json_object_get(rec, "handler")), "boom");
	CHECK_INT(json_integer_value(json_object_get(rec, "run_id")), ==, 42);
	CHECK_INT(json_integer_value(json_object_get(rec, "attempt")), ==, 2);
	p = json_object_get(rec, "panic");
	CHECK_STR(json_string_value(json_object_get(p, "message")),
		  "ledger is inconsistent");
	/* Stacks were on for the call: the handler's frame is there. */
	CHECK(json_array_size(json_object_get(p, "stack")) > 0);
	check_dump_contains(p, "h_panic");
	json_decref(rec);

	/* The thread is fine: the next run works. */
	CHECK_INT(keel_exec_handler_register(ex, "ok", h_ok, NULL), ==, 0);
	keel_job_free(j);
	j = handler_job("ok", "");
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(res.panicked, ==, 0);
	/* And stack capture is back off for the caller. */
	CHECK_INT(keel_panic_capture_stacks(0), ==, 0);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_log_free(lg);
}

static int *volatile nil_int;
static volatile int vsink;

KEEL_TEST_NO_SANITIZE static int h_nil(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	vsink = *nil_int;
	return 0;
}

TEST(handler_nil_dereference_fails_the_run)
{
	struct keel_logger *lg = cap_logger();
	struct keel_executor *ex = new_exec(lg);
	struct keel_job *j = handler_job("nil", "");
	struct keel_exec_result res;
	struct keel_exec_req rq;
	json_t *rec, *sig;
	int i;

	req_init(&rq);
	CHECK_INT(keel_exec_handler_register(ex, "nil", h_nil, NULL), ==, 0);
	/* Twice: a second fault on the same thread is caught as well. */
	for (i = 0; i < 2; i++) {
		CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
		CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
		CHECK_INT(res.panicked, ==, 1);
		CHECK_STR(res.error,
			  "panic: runtime error: invalid memory address or nil "
			  "pointer dereference (SIGSEGV)");
	}
	rec = cap_record("handler panicked");
	CHECK_STR(json_string_value(json_object_get(rec, "job")), "t");
	sig = json_object_get(json_object_get(rec, "panic"), "signal");
	CHECK_STR(json_string_value(json_object_get(sig, "name")), "SIGSEGV");
	check_dump_contains(json_object_get(rec, "panic"), "h_nil");
	json_decref(rec);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_log_free(lg);
}

/* ------------------------------------------------------------------------
 * Timeouts and cancellation
 * ------------------------------------------------------------------------ */

/* Polls the token as a long handler should; fails after 20 s. */
static int h_poll(struct keel_exec_call *call, void *ud)
{
	double t0 = keel_test_now();

	(void)ud;
	while (keel_cancel_err(call->cancel) == 0) {
		if (keel_test_now() - t0 > 20)
			return 0;
		usleep(2000);
	}
	snprintf(call->error, call->errlen, "stopped: %d",
		 keel_cancel_err(call->cancel));
	return 1;
}

/* Ignores the token and returns after 400 ms. */
static int h_sleepy(struct keel_exec_call *call, void *ud)
{
	(void)call;
	(void)ud;
	usleep(400 * 1000);
	return 0;
}

TEST(handler_timeout_by_polling)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("poll", "200ms");
	struct keel_exec_result res;
	struct keel_exec_req rq;
	double t0;

	req_init(&rq);
	CHECK_INT(keel_exec_handler_register(ex, "poll", h_poll, NULL), ==, 0);
	t0 = keel_test_now();
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK(keel_test_now() - t0 >= 0.19);
	CHECK(keel_test_now() - t0 < 10);
	CHECK_INT(res.state, ==, KEEL_RUN_TIMED_OUT);
	CHECK_STR(res.error, "timed out after 200ms");
	CHECK_INT(res.panicked, ==, 0);
	keel_job_free(j);
	keel_exec_free(ex);
}

/* Not killed, but late all the same: even a 0 return is a timeout. */
TEST(handler_timeout_ignored_token)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("sleepy", "100ms");
	struct keel_exec_result res;

	CHECK_INT(keel_exec_handler_register(ex, "sleepy", h_sleepy, NULL), ==,
		  0);
	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_TIMED_OUT);
	CHECK_STR(res.error, "timed out after 100ms");
	keel_job_free(j);
	/* The same handler within a generous timeout succeeds. */
	j = handler_job("sleepy", "1m");
	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	keel_job_free(j);
	keel_exec_free(ex);
}

struct canceller {
	struct keel_cancel *tok;
	int ms;
};

static void *cancel_later(void *arg)
{
	struct canceller *c = arg;

	usleep((useconds_t)c->ms * 1000);
	keel_cancel_cancel(c->tok, 0);
	return NULL;
}

TEST(handler_canceled)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("poll", "1m");
	struct keel_exec_result res;
	struct keel_exec_req rq;
	struct keel_cancel *tok = keel_cancel_new(NULL, NULL);
	struct canceller c = {tok, 150};
	pthread_t th;
	double t0;

	req_init(&rq);
	rq.cancel = tok;
	CHECK_INT(keel_exec_handler_register(ex, "poll", h_poll, NULL), ==, 0);
	CHECK_INT(pthread_create(&th, NULL, cancel_later, &c), ==, 0);
	t0 = keel_test_now();
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK(keel_test_now() - t0 < 10);
	pthread_join(th, NULL);
	CHECK_INT(res.state, ==, KEEL_RUN_CANCELED);
	CHECK_STR(res.error, "canceled");
	/* The child token was unlinked from the caller's. */
	CHECK(tok->children == NULL);

	/* Cancelled before it starts: the handler sees it at once. */
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_CANCELED);
	keel_cancel_free(tok);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Trace context
 * ------------------------------------------------------------------------ */

TEST(handler_runs_under_the_runs_trace)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("rec", "");
	struct keel_exec_result res;
	struct keel_exec_req rq;
	struct keel_trace mine, now;

	req_init(&rq);
	rq.traceparent =
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	keel_trace_new(&mine);
	keel_trace_set(&mine, NULL);
	CHECK_INT(keel_exec_handler_register(ex, "rec", h_record, NULL), ==, 0);
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_STR(seen.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
	/* The caller's own context is back. */
	CHECK(keel_trace_current() != NULL);
	now = *keel_trace_current();
	CHECK(memcmp(&now, &mine, sizeof(now)) == 0);

	/* A bad traceparent is ignored, not an error. */
	memset(seen.trace_id, 0, sizeof(seen.trace_id));
	rq.traceparent = "garbage";
	CHECK_INT(keel_exec_run(ex, j, &rq, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_SUCCEEDED);
	CHECK_INT(strlen(seen.trace_id), ==, 32);
	CHECK(strcmp(seen.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736") != 0);
	keel_job_free(j);
	keel_exec_free(ex);
}

/* ------------------------------------------------------------------------
 * Dispatch
 * ------------------------------------------------------------------------ */

TEST(dispatch_refusals)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = handler_job("x", "");
	struct keel_exec_result res;
	enum keel_job_executor saved = j->type;

	CHECK_INT(keel_exec_run(ex, j, NULL, NULL), ==, -EINVAL);
	CHECK_INT(keel_exec_run(NULL, j, NULL, &res), ==, -EINVAL);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK(res.error[0] != '\0');
	CHECK_INT(keel_exec_run(ex, NULL, NULL, &res), ==, -EINVAL);
	j->type = (enum keel_job_executor)7;
	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, -EINVAL);
	CHECK_STR(res.error, "unknown executor type 7");
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	j->type = saved;
	keel_job_free(j);
	keel_exec_free(ex);
}

TEST(dispatch_shell)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = job_from(
	    "{\"name\": \"sh\", \"schedule\": \"@manual\", \"executor\": "
	    "{\"type\": \"shell\", \"command\": [\"/bin/sh\", \"-c\", "
	    "\"echo hi; exit 3\"], \"timeout\": \"30s\"}}");
	struct keel_exec_result res;

	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_INT(res.exit_code, ==, 3);
	CHECK(res.output != NULL);
	CHECK_CONTAINS(res.output, "hi");
	keel_exec_result_clear(&res);
	CHECK(res.output == NULL);
	CHECK_INT(res.output_len, ==, 0);
	CHECK_INT(res.exit_code, ==, -1);
	keel_exec_result_clear(&res); /* twice is fine */
	keel_exec_result_clear(NULL);
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

TEST(dispatch_http_bad_url)
{
	struct keel_executor *ex = new_exec(NULL);
	struct keel_job *j = job_from(
	    "{\"name\": \"web\", \"schedule\": \"@manual\", \"executor\": "
	    "{\"type\": \"http\", \"url\": \"http://127.0.0.1:1/\"}}");
	struct keel_exec_result res;
	char *url = j->http.url;

	/* Past job validation by hand: the executor still refuses it. */
	j->http.url = (char *)"http://[::1";
	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_CONTAINS(res.error, "bad url");
	CHECK_INT(res.http_status, ==, 0);
	j->http.url = (char *)"ftp://127.0.0.1/x";
	CHECK_INT(keel_exec_run(ex, j, NULL, &res), ==, 0);
	CHECK_INT(res.state, ==, KEEL_RUN_FAILED);
	CHECK_STR(res.error, "bad url: scheme 'ftp' is not http or https");
	j->http.url = url;
	keel_job_free(j);
	keel_exec_free(ex);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Many threads
 * ------------------------------------------------------------------------ */

#define THREADS 4
#define RUNS 2000

static atomic_long counted;

static int h_count(struct keel_exec_call *call, void *ud)
{
	(void)call;
	atomic_fetch_add(&counted, (long)(intptr_t)ud);
	return 0;
}

static int h_count_fail(struct keel_exec_call *call, void *ud)
{
	(void)ud;
	atomic_fetch_add(&counted, 1);
	snprintf(call->error, call->errlen, "run %lld",
		 (long long)call->run_id);
	return 1;
}

struct worker {
	struct keel_executor *ex;
	struct keel_job *job, *bad;
	int ok, failed, other;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct keel_exec_req rq;
	struct keel_exec_result res;
	char want[32];
	int i;

	memset(&rq, 0, sizeof(rq));
	for (i = 0; i < RUNS; i++) {
		const struct keel_job *j = i % 4 == 3 ? w->bad : w->job;

		rq.run_id = i;
		if (keel_exec_run(w->ex, j, &rq, &res) != 0) {
			w->other++;
			continue;
		}
		snprintf(want, sizeof(want), "run %d", i);
		if (res.state == KEEL_RUN_SUCCEEDED && j == w->job)
			w->ok++;
		else if (res.state == KEEL_RUN_FAILED && j == w->bad &&
			 strcmp(res.error, want) == 0)
			w->failed++;
		else
			w->other++;
		keel_exec_result_clear(&res);
	}
	return NULL;
}

/* Runs on four threads while a fifth keeps re-registering the handler
 * (with the same function) and registering new names. */
static atomic_int stop_registering;

struct registrar {
	struct keel_executor *ex;
	int n;
};

static void *registrar_main(void *arg)
{
	struct registrar *r = arg;
	char name[32];

	while (!atomic_load(&stop_registering)) {
		CHECK_INT(keel_exec_handler_register(r->ex, "count", h_count,
						     (void *)1),
			  ==, 0);
		snprintf(name, sizeof(name), "extra%d", r->n % 50);
		CHECK_INT(keel_exec_handler_register(r->ex, name, h_ok, NULL),
			  ==, 0);
		r->n++;
		sched_yield();
	}
	return NULL;
}

TEST(many_threads)
{
	struct keel_executor *ex = new_exec(NULL);
	struct worker w[THREADS];
	struct registrar reg = {ex, 0};
	pthread_t th[THREADS], rth;
	int i, ok = 0, failed = 0;

	CHECK_INT(keel_exec_handler_register(ex, "count", h_count, (void *)1),
		  ==, 0);
	CHECK_INT(
	    keel_exec_handler_register(ex, "countfail", h_count_fail, NULL), ==,
	    0);
	memset(w, 0, sizeof(w));
	for (i = 0; i < THREADS; i++) {
		w[i].ex = ex;
		w[i].job = handler_job("count", "1m");
		w[i].bad = handler_job("countfail", "");
	}
	CHECK_INT(pthread_create(&rth, NULL, registrar_main, &reg), ==, 0);
	for (i = 0; i < THREADS; i++)
		CHECK_INT(pthread_create(&th[i], NULL, worker_main, &w[i]), ==,
			  0);
	for (i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		CHECK_INT(w[i].other, ==, 0);
		ok += w[i].ok;
		failed += w[i].failed;
		keel_job_free(w[i].job);
		keel_job_free(w[i].bad);
	}
	atomic_store(&stop_registering, 1);
	pthread_join(rth, NULL);
	CHECK_INT(ok, ==, THREADS * RUNS * 3 / 4);
	CHECK_INT(failed, ==, THREADS * RUNS / 4);
	CHECK_INT(atomic_load(&counted), ==, THREADS * RUNS);
	CHECK(reg.n > 0);
	CHECK_INT(keel_exec_handler_exists(ex, "extra0"), ==, 1);
	keel_exec_free(ex);
	keel_test_leak_check();
}
