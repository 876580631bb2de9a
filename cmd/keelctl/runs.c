/*
 * cmd/keelctl/runs.c - the run commands: run [--wait], runs, show, cancel;
 * and the one-line form of a run that they and watch print.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keelctl.h"

/* How often run --wait asks: a run's state is a row in keeld's store, and
 * two requests a second cost keeld nothing. */
#define KC_WAIT_POLL_MS 500
/* Lines of output run --wait prints at the end (show prints it all). */
#define KC_TAIL_LINES 20

static const char *const kc_states[] = {
    "queued",	 "running", "succeeded", "failed",
    "timed_out", "crashed", "skipped",	 "canceled",
};
const char kc_state_names[] =
    "queued, running, succeeded, failed, timed_out, crashed, skipped, "
    "canceled";

int kc_state_known(const char *s)
{
	for (size_t i = 0; i < sizeof(kc_states) / sizeof(kc_states[0]); i++)
		if (strcmp(s, kc_states[i]) == 0)
			return 1;
	return 0;
}

int kc_state_final(const char *state)
{
	return state != NULL && kc_state_known(state) &&
	       strcmp(state, "queued") != 0 && strcmp(state, "running") != 0;
}

void kc_run_result(const json_t *run, struct kc_buf *out)
{
	long long v;
	const char *sep = "";

	/* keeld's error already says what the numbers say ("exit status 1",
	 * "unexpected status 503 (expected 200-299)"); the numbers alone are
	 * for runs without one (a success: "exit 0"). */
	const char *err = kc_str(run, "error");
	if (err != NULL) {
		kc_buf_puts(out, err);
		return;
	}
	if (kc_int(run, "exit_code", &v)) {
		kc_buf_printf(out, "exit %lld", v);
		sep = ", ";
	}
	if (kc_int(run, "signal", &v) && v != 0) {
		kc_buf_printf(out, "%ssignal %lld", sep, v);
		sep = ", ";
	}
	if (kc_int(run, "http_status", &v) && v != 0)
		kc_buf_printf(out, "%sHTTP %lld", sep, v);
}

void kc_run_line(struct kc *kc, const json_t *run, struct kc_buf *out)
{
	const char *id = kc_str(run, "id");
	const char *job = kc_str(run, "job");
	const char *state = kc_str(run, "state");
	const char *trigger = kc_str(run, "trigger");
	long long attempt = 1, ms;
	char a[32];

	(void)kc;
	kc_buf_printf(out, "run %s of %s %s", id ? id : "?", job ? job : "?",
		      state ? state : "?");
	kc_int(run, "attempt", &attempt);
	if (state != NULL && strcmp(state, "queued") == 0) {
		kc_buf_printf(out, " (%s", trigger ? trigger : "?");
		if (attempt > 1)
			kc_buf_printf(out, ", attempt %lld", attempt);
		int64_t nb = kc_time_of(run, "not_before");
		if (nb > kc_now_ms())
			kc_buf_printf(out, ", not before %s",
				      kc_time_fmt(nb, a, sizeof(a)));
		kc_buf_puts(out, ")");
		return;
	}
	if (state != NULL && strcmp(state, "running") == 0) {
		kc_buf_printf(
		    out, " (started %s",
		    kc_time_fmt(kc_time_of(run, "started_at"), a, sizeof(a)));
		if (attempt > 1)
			kc_buf_printf(out, ", attempt %lld", attempt);
		kc_buf_puts(out, ")");
		return;
	}
	if (kc_int(run, "duration_ms", &ms))
		kc_buf_printf(out, " after %s", kc_dur_fmt(ms, a, sizeof(a)));
	if (attempt > 1)
		kc_buf_printf(out, " (attempt %lld)", attempt);
	struct kc_buf res = {0};
	kc_run_result(run, &res);
	if (res.len > 0)
		kc_buf_printf(out, ": %s", res.p);
	kc_buf_free(&res);
}

/* Prints one line for people: the run line, control characters out. */
static int kc_print_run_line(struct kc *kc, const json_t *run)
{
	struct kc_buf b = {0};
	kc_run_line(kc, run, &b);
	if (b.failed)
		return kc_err("out of memory");
	kc_put_safe(stdout, b.p, b.len);
	fputc('\n', stdout);
	fflush(stdout);
	kc_buf_free(&b);
	return KC_OK;
}

static int kc_get_run(struct kc *kc, const char *id, struct kc_resp *r)
{
	struct kc_buf path = {0};
	kc_buf_puts(&path, "/v1/runs/");
	kc_buf_escape(&path, id);
	if (path.failed)
		return kc_err("out of memory");
	int rc = kc_do(kc, "GET", path.p, NULL, r);
	kc_buf_free(&path);
	return rc;
}

/* ---- run -------------------------------------------------------------------
 */

static void kc_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* The last lines of a run's output, after a one-line heading. */
static void kc_print_tail(const char *id, const char *output)
{
	size_t n = strlen(output);
	if (n == 0)
		return;
	size_t end = output[n - 1] == '\n' ? n - 1 : n;
	size_t start = end, lines = 0;
	while (start > 0) {
		if (output[start - 1] == '\n' && ++lines == KC_TAIL_LINES)
			break;
		start--;
	}
	if (start > 0)
		printf("output (last %d lines; all of it: keelctl show %s):\n",
		       KC_TAIL_LINES, id);
	else
		printf("output:\n");
	kc_put_safe(stdout, output + start, end - start);
	fputc('\n', stdout);
}

/* The retry that follows a run which ended without success, when its job
 * has attempts left: keeld stores it with the same job and scheduled_at,
 * attempt + 1, trigger "retry", in the transaction that ends the run, so
 * it is there as soon as the run is final. A new reference or NULL. */
static json_t *kc_find_retry(struct kc *kc, const json_t *run)
{
	const char *job = kc_str(run, "job");
	const char *sched = kc_str(run, "scheduled_at");
	const char *rid = kc_str(run, "id");
	long long attempt = 0;
	struct kc_buf path = {0};
	struct kc_resp r;
	json_t *found = NULL;

	if (job == NULL || sched == NULL || rid == NULL ||
	    !kc_int(run, "attempt", &attempt))
		return NULL;
	long long id = atoll(rid);
	kc_buf_puts(&path, "/v1/jobs/");
	kc_buf_escape(&path, job);
	kc_buf_puts(&path, "/runs?limit=50");
	if (path.failed || kc_do(kc, "GET", path.p, NULL, &r) != KC_OK) {
		kc_buf_free(&path);
		kc_resp_clear(&r);
		return NULL;
	}
	size_t i;
	json_t *o;
	json_array_foreach(json_object_get(r.body, "runs"), i, o)
	{
		long long a = 0;
		const char *oid = kc_str(o, "id");
		const char *t = kc_str(o, "trigger");
		const char *s = kc_str(o, "scheduled_at");
		if (oid != NULL && atoll(oid) > id && t != NULL &&
		    strcmp(t, "retry") == 0 && s != NULL &&
		    strcmp(s, sched) == 0 && kc_int(o, "attempt", &a) &&
		    a == attempt + 1)
			found = json_incref(o);
	}
	kc_resp_clear(&r);
	kc_buf_free(&path);
	return found;
}

/* Polls run (a new reference, consumed) until it and any retries of it are
 * final. */
static int kc_wait(struct kc *kc, json_t *run)
{
	char last_state[16] = "";
	int rc = KC_OK;

	for (;;) {
		const char *id = kc_str(run, "id");
		const char *state = kc_str(run, "state");
		if (id == NULL || state == NULL) {
			rc = kc_err("the server's run has no id or state");
			break;
		}
		if (!kc->json && strcmp(state, last_state) != 0) {
			snprintf(last_state, sizeof(last_state), "%s", state);
			/* The final line comes with the output below. */
			if (!kc_state_final(state))
				kc_print_run_line(kc, run);
		}
		if (kc_state_final(state)) {
			json_t *next = NULL;
			if (strcmp(state, "succeeded") != 0)
				next = kc_find_retry(kc, run);
			if (next == NULL)
				break;
			if (!kc->json) {
				kc_print_run_line(kc, run);
				printf("retrying as run %s\n",
				       kc_str(next, "id"));
			}
			json_decref(run);
			run = next;
			last_state[0] = '\0';
			continue;
		}
		kc_sleep_ms(KC_WAIT_POLL_MS);
		struct kc_resp r;
		rc = kc_get_run(kc, id, &r);
		if (rc != KC_OK) {
			kc_resp_clear(&r);
			break;
		}
		json_decref(run);
		run = json_incref(r.body);
		kc_resp_clear(&r);
	}
	if (rc != KC_OK) {
		json_decref(run);
		return rc;
	}

	/* The final state, with the output (lists and POST answers carry
	 * none). */
	struct kc_resp r;
	rc = kc_get_run(kc, kc_str(run, "id"), &r);
	json_decref(run);
	if (rc != KC_OK) {
		kc_resp_clear(&r);
		return rc;
	}
	const char *state = kc_str(r.body, "state");
	if (kc->json) {
		rc = kc_print_json(r.body);
	} else {
		kc_print_run_line(kc, r.body);
		const char *output = kc_str(r.body, "output");
		if (output != NULL)
			kc_print_tail(kc_str(r.body, "id"), output);
	}
	if (rc == KC_OK && (state == NULL || strcmp(state, "succeeded") != 0))
		rc = KC_FAIL;
	kc_resp_clear(&r);
	return rc;
}

int kc_cmd_run(struct kc *kc, const char *name)
{
	struct kc_buf path = {0};
	struct kc_resp r = {0};
	int rc;

	kc_buf_puts(&path, "/v1/jobs/");
	kc_buf_escape(&path, name);
	kc_buf_puts(&path, "/run");
	if (path.failed)
		return kc_err("out of memory");
	rc = kc_do(kc, "POST", path.p, NULL, &r);
	kc_buf_free(&path);
	if (rc != KC_OK) {
		kc_resp_clear(&r);
		return rc;
	}
	if (kc->wait) {
		rc = kc_wait(kc, json_incref(r.body));
	} else if (kc->json) {
		rc = kc_print_json(r.body);
	} else {
		rc = kc_print_run_line(kc, r.body);
	}
	kc_resp_clear(&r);
	return rc;
}

/* ---- runs ------------------------------------------------------------------
 */

int kc_cmd_runs(struct kc *kc, const char *name)
{
	static const char *const head[] = {"ID",       "JOB",	  "STATE",
					   "TRIGGER",  "ATTEMPT", "STARTED",
					   "DURATION", "RESULT"};
	struct kc_buf path = {0};
	struct kc_resp r = {0};
	char sep = '?';
	int rc;

	if (name != NULL) {
		kc_buf_puts(&path, "/v1/jobs/");
		kc_buf_escape(&path, name);
		kc_buf_puts(&path, "/runs");
	} else {
		kc_buf_puts(&path, "/v1/runs");
	}
	if (kc->limit > 0) {
		kc_buf_printf(&path, "%climit=%ld", sep, kc->limit);
		sep = '&';
	}
	if (kc->state != NULL) {
		kc_buf_printf(&path, "%cstate=", sep);
		kc_buf_escape(&path, kc->state);
		sep = '&';
	}
	if (kc->before != NULL) {
		kc_buf_printf(&path, "%cbefore=", sep);
		kc_buf_escape(&path, kc->before);
	}
	if (path.failed)
		return kc_err("out of memory");
	rc = kc_do(kc, "GET", path.p, NULL, &r);
	kc_buf_free(&path);
	if (rc != KC_OK || kc->json) {
		if (rc == KC_OK)
			rc = kc_print_json(r.body);
		kc_resp_clear(&r);
		return rc;
	}

	json_t *runs = json_object_get(r.body, "runs");
	if (!json_is_array(runs)) {
		kc_resp_clear(&r);
		return kc_err("the answer has no \"runs\" list");
	}
	if (json_array_size(runs) == 0) {
		printf("No %s%sruns%s%s.\n", kc->state ? kc->state : "",
		       kc->state ? " " : "", name ? " of " : "",
		       name ? name : "");
		kc_resp_clear(&r);
		return KC_OK;
	}
	struct kc_table *t = kc_table_new(8, head);
	int64_t now = kc_now_ms();
	size_t i;
	json_t *run;
	json_array_foreach(runs, i, run)
	{
		const char *state = kc_str(run, "state");
		long long attempt = 0, ms;
		char a[32];
		struct kc_buf res = {0};

		kc_table_cell(t, kc_str(run, "id"), KC_PLAIN);
		kc_table_cell(t, kc_str(run, "job"), KC_PLAIN);
		kc_table_cell(t, state, kc_state_color(state));
		kc_table_cell(t, kc_str(run, "trigger"), KC_PLAIN);
		kc_int(run, "attempt", &attempt);
		kc_table_cellf(t, KC_PLAIN, "%lld", attempt);
		int64_t started = kc_time_of(run, "started_at");
		kc_table_cell(t, kc_time_fmt(started, a, sizeof(a)), KC_PLAIN);
		if (kc_int(run, "duration_ms", &ms))
			kc_table_cell(t, kc_dur_fmt(ms, a, sizeof(a)),
				      KC_PLAIN);
		else if (started != 0 && state != NULL &&
			 strcmp(state, "running") == 0)
			kc_table_cell(t,
				      kc_dur_fmt(now - started, a, sizeof(a)),
				      KC_PLAIN); /* so far */
		else
			kc_table_cell(t, NULL, KC_PLAIN);
		kc_run_result(run, &res);
		/* A long error is cut here; `show` has all of it. */
		if (!res.failed && res.len > 72)
			memcpy(res.p + 69, "...", 4);
		kc_table_cell(t, res.failed ? NULL : res.p, KC_PLAIN);
		kc_buf_free(&res);
	}
	rc = kc_table_print(t, kc->color);
	const char *next = kc_str(r.body, "next");
	if (rc == KC_OK && next != NULL)
		printf("(older runs: add --before %s)\n", next);
	kc_resp_clear(&r);
	return rc;
}

/* ---- show, cancel ----------------------------------------------------------
 */

static void kc_show_time(const char *label, const json_t *run, const char *key)
{
	char a[32];
	int64_t t = kc_time_of(run, key);
	if (t != 0)
		kc_field(label, kc_time_fmt(t, a, sizeof(a)));
}

static void kc_show_int(const char *label, const json_t *run, const char *key)
{
	long long v;
	if (kc_int(run, key, &v))
		kc_fieldf(label, "%lld", v);
}

static void kc_run_show(const json_t *run)
{
	long long v;
	char a[32];

	kc_field("run:", kc_str(run, "id"));
	kc_field("job:", kc_str(run, "job"));
	kc_field("state:", kc_str(run, "state"));
	kc_field("trigger:", kc_str(run, "trigger"));
	kc_show_int("attempt:", run, "attempt");
	kc_show_time("scheduled:", run, "scheduled_at");
	kc_show_time("created:", run, "created_at");
	kc_show_time("not before:", run, "not_before");
	kc_show_time("started:", run, "started_at");
	kc_show_time("finished:", run, "finished_at");
	if (kc_int(run, "duration_ms", &v)) {
		kc_field("duration:", kc_dur_fmt(v, a, sizeof(a)));
	} else if (kc_time_of(run, "started_at") != 0 &&
		   kc_str(run, "state") != NULL &&
		   strcmp(kc_str(run, "state"), "running") == 0) {
		kc_fieldf(
		    "duration:", "%s so far",
		    kc_dur_fmt(kc_now_ms() - kc_time_of(run, "started_at"), a,
			       sizeof(a)));
	}
	kc_show_int("exit code:", run, "exit_code");
	kc_show_int("signal:", run, "signal");
	kc_show_int("http status:", run, "http_status");
	if (kc_str(run, "error") != NULL)
		kc_field("error:", kc_str(run, "error"));
	kc_field("node:", kc_str(run, "node"));
	kc_field("trace id:", kc_str(run, "trace_id"));

	const char *output = kc_str(run, "output");
	if (output == NULL || output[0] == '\0') {
		printf("output:           (none)\n");
		return;
	}
	size_t n = strlen(output);
	printf("output:\n");
	kc_put_safe(stdout, output, n);
	if (output[n - 1] != '\n')
		fputc('\n', stdout);
}

int kc_cmd_show(struct kc *kc, const char *id)
{
	struct kc_resp r = {0};
	int rc = kc_get_run(kc, id, &r);
	if (rc == KC_OK) {
		if (kc->json)
			rc = kc_print_json(r.body);
		else
			kc_run_show(r.body);
	}
	kc_resp_clear(&r);
	return rc;
}

int kc_cmd_cancel(struct kc *kc, const char *id)
{
	struct kc_buf path = {0};
	struct kc_resp r = {0};
	int rc;

	kc_buf_puts(&path, "/v1/runs/");
	kc_buf_escape(&path, id);
	kc_buf_puts(&path, "/cancel");
	if (path.failed)
		return kc_err("out of memory");
	rc = kc_do(kc, "POST", path.p, NULL, &r);
	kc_buf_free(&path);
	if (rc == KC_OK && kc->json) {
		rc = kc_print_json(r.body);
	} else if (rc == KC_OK) {
		/* A running run is killed and becomes canceled shortly:
		 * the answer may still say running. */
		const char *state = kc_str(r.body, "state");
		if (state != NULL && strcmp(state, "canceled") != 0)
			printf("cancel requested; ");
		rc = kc_print_run_line(kc, r.body);
	}
	kc_resp_clear(&r);
	return rc;
}
