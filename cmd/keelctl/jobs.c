/*
 * cmd/keelctl/jobs.c - the job commands: list, get, add, remove, pause,
 * resume.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keelctl.h"

/* "/v1/jobs/<name escaped><suffix>" into b. */
static void kc_job_path(struct kc_buf *b, const char *name, const char *suffix)
{
	kc_buf_puts(b, "/v1/jobs/");
	kc_buf_escape(b, name);
	kc_buf_puts(b, suffix);
}

/* "active", "paused" or "disabled" (a disabled job never fires, paused or
 * not, so that is what counts). */
static const char *kc_job_state(const json_t *job, enum kc_color *color)
{
	if (json_is_false(json_object_get(job, "enabled"))) {
		*color = KC_DIM;
		return "disabled";
	}
	if (json_is_true(json_object_get(job, "paused"))) {
		*color = KC_YELLOW;
		return "paused";
	}
	*color = KC_GREEN;
	return "active";
}

/* The schedule, with its zone when that matters: cron schedules run on
 * the zone's wall clock; @every, @at and @manual ignore it. */
static void kc_job_schedule(const json_t *job, struct kc_buf *b)
{
	const char *sched = kc_str(job, "schedule");
	const char *tz = kc_str(job, "timezone");

	kc_buf_puts(b, sched != NULL ? sched : "-");
	if (sched != NULL && sched[0] != '@' && tz != NULL &&
	    strcmp(tz, "UTC") != 0)
		kc_buf_printf(b, " (%s)", tz);
}

/* The time a run last changed: finished, else started, else created. */
static int64_t kc_run_when(const json_t *run)
{
	int64_t t = kc_time_of(run, "finished_at");
	if (t == 0)
		t = kc_time_of(run, "started_at");
	if (t == 0)
		t = kc_time_of(run, "created_at");
	return t;
}

int kc_cmd_list(struct kc *kc)
{
	static const char *const head[] = {"NAME",    "SCHEDULE", "STATE",
					   "RUNNING", "NEXT RUN", "LAST RUN"};
	struct kc_resp r;
	int rc = kc_do(kc, "GET", "/v1/jobs", NULL, &r);

	if (rc != KC_OK)
		goto out;
	if (kc->json) {
		rc = kc_print_json(r.body);
		goto out;
	}
	json_t *jobs = json_object_get(r.body, "jobs");
	if (!json_is_array(jobs)) {
		rc = kc_err("GET /v1/jobs: the answer has no \"jobs\" list");
		goto out;
	}
	if (json_array_size(jobs) == 0) {
		printf("No jobs yet. Add one with: keelctl add FILE\n");
		goto out;
	}

	struct kc_table *t = kc_table_new(6, head);
	int64_t now = kc_now_ms();
	size_t i;
	json_t *job;
	json_array_foreach(jobs, i, job)
	{
		struct kc_buf sched = {0};
		enum kc_color sc;
		const char *state = kc_job_state(job, &sc);
		long long running = 0;
		char tbuf[32], rel[32];

		kc_job_schedule(job, &sched);
		kc_int(job, "running", &running);
		kc_table_cell(t, kc_str(job, "name"), KC_PLAIN);
		kc_table_cell(t, sched.failed ? NULL : sched.p, KC_PLAIN);
		kc_table_cell(t, state, sc);
		kc_table_cellf(t, running > 0 ? KC_YELLOW : KC_PLAIN, "%lld",
			       running);
		kc_table_cell(t,
			      kc_time_fmt(kc_time_of(job, "next_run_at"), tbuf,
					  sizeof(tbuf)),
			      KC_PLAIN);
		json_t *last = json_object_get(job, "last_run");
		if (json_is_object(last)) {
			const char *ls = kc_str(last, "state");
			kc_table_cellf(t, kc_state_color(ls), "%s %s",
				       ls != NULL ? ls : "?",
				       kc_time_rel(kc_run_when(last), now, rel,
						   sizeof(rel)));
		} else {
			kc_table_cell(t, NULL, KC_PLAIN);
		}
		kc_buf_free(&sched);
	}
	rc = kc_table_print(t, kc->color);
out:
	kc_resp_clear(&r);
	return rc;
}

/* ---- get -------------------------------------------------------------------
 */

/* An argument as a shell would need it: bare when it is plain, else in
 * single quotes. */
static void kc_shell_word(struct kc_buf *b, const char *s)
{
	if (s[0] != '\0' && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				      "abcdefghijklmnopqrstuvwxyz0123456789"
				      "-_./=:,+@%") == strlen(s)) {
		kc_buf_puts(b, s);
		return;
	}
	kc_buf_puts(b, "'");
	for (; *s != '\0'; s++) {
		if (*s == '\'')
			kc_buf_puts(b, "'\\''");
		else
			kc_buf_add(b, s, 1);
	}
	kc_buf_puts(b, "'");
}

/* "shell: /usr/bin/backup --full", "http: POST https://..." ... */
static void kc_executor(const json_t *ex, struct kc_buf *b)
{
	const char *type = kc_str(ex, "type");

	if (type == NULL) {
		kc_buf_puts(b, "-");
		return;
	}
	kc_buf_printf(b, "%s: ", type);
	if (strcmp(type, "shell") == 0) {
		json_t *cmd = json_object_get(ex, "command");
		size_t i;
		json_t *arg;
		if (json_is_true(json_object_get(ex, "shell")))
			kc_buf_puts(b, "/bin/sh -c ");
		json_array_foreach(cmd, i, arg)
		{
			if (i > 0)
				kc_buf_puts(b, " ");
			kc_shell_word(b, json_is_string(arg)
					     ? json_string_value(arg)
					     : "?");
		}
	} else if (strcmp(type, "http") == 0) {
		const char *m = kc_str(ex, "method");
		kc_buf_printf(b, "%s %s", m != NULL ? m : "GET",
			      kc_str(ex, "url") != NULL ? kc_str(ex, "url")
							: "?");
	} else {
		const char *name = kc_str(ex, "name");
		kc_buf_puts(b, name != NULL ? name : "?");
	}
	const char *timeout = kc_str(ex, "timeout");
	if (timeout != NULL && strcmp(timeout, "0s") != 0)
		kc_buf_printf(b, " (timeout %s)", timeout);
}

static void kc_time_field(const char *label, const json_t *obj, const char *key,
			  int64_t now)
{
	int64_t t = kc_time_of(obj, key);
	char a[32], r[32];

	if (t == 0)
		kc_field(label, NULL);
	else
		kc_fieldf(label, "%s (%s)", kc_time_fmt(t, a, sizeof(a)),
			  kc_time_rel(t, now, r, sizeof(r)));
}

static void kc_job_show(struct kc *kc, const json_t *job)
{
	struct kc_buf b = {0};
	enum kc_color sc;
	int64_t now = kc_now_ms();
	long long n;

	kc_field("name:", kc_str(job, "name"));
	kc_job_schedule(job, &b);
	kc_field("schedule:", b.failed ? NULL : b.p);
	kc_buf_reset(&b);
	kc_field("state:", kc_job_state(job, &sc));
	kc_executor(json_object_get(job, "executor"), &b);
	kc_field("executor:", b.failed ? NULL : b.p);
	kc_buf_reset(&b);
	kc_time_field("next run:", job, "next_run_at", now);

	json_t *last = json_object_get(job, "last_run");
	if (json_is_object(last)) {
		char rel[32];
		kc_run_line(kc, last, &b);
		kc_buf_printf(
		    &b, " (%s)",
		    kc_time_rel(kc_run_when(last), now, rel, sizeof(rel)));
		kc_field("last run:", b.failed ? NULL : b.p);
		kc_buf_reset(&b);
	} else {
		kc_field("last run:", "never");
	}
	if (kc_int(job, "running", &n))
		kc_fieldf("running:", "%lld", n);

	json_t *retry = json_object_get(job, "retry");
	long long attempts = 1;
	kc_int(retry, "max_attempts", &attempts);
	if (attempts <= 1)
		kc_field("retry:", "no (1 attempt)");
	else
		kc_fieldf(
		    "retry:", "%lld attempts, %s backoff %s..%s", attempts,
		    kc_str(retry, "backoff") ? kc_str(retry, "backoff") : "?",
		    kc_str(retry, "initial") ? kc_str(retry, "initial") : "?",
		    kc_str(retry, "max") ? kc_str(retry, "max") : "?");
	kc_field("concurrency:", kc_str(job, "concurrency"));
	long long mmax = 0;
	kc_int(job, "missed_max", &mmax);
	const char *missed = kc_str(job, "missed");
	if (missed != NULL && strcmp(missed, "all") == 0)
		kc_fieldf("missed runs:", "all (at most %lld)", mmax);
	else
		kc_field("missed runs:", missed);

	json_t *hist = json_object_get(job, "history");
	long long keep_runs = 0, keep_days = 0;
	if (kc_int(hist, "keep_runs", &keep_runs) &&
	    kc_int(hist, "keep_days", &keep_days))
		kc_fieldf("history:", "%lld runs, %lld days", keep_runs,
			  keep_days);

	json_t *tags = json_object_get(job, "tags");
	size_t i;
	json_t *tag;
	json_array_foreach(tags, i, tag)
	{
		if (i > 0)
			kc_buf_puts(&b, ", ");
		kc_buf_puts(&b,
			    json_is_string(tag) ? json_string_value(tag) : "?");
	}
	if (json_array_size(tags) > 0)
		kc_field("tags:", b.failed ? NULL : b.p);
	kc_time_field("created:", job, "created_at", now);
	kc_time_field("updated:", job, "updated_at", now);
	kc_buf_free(&b);
}

int kc_cmd_get(struct kc *kc, const char *name)
{
	struct kc_buf path = {0};
	struct kc_resp r = {0};
	int rc;

	kc_job_path(&path, name, "");
	if (path.failed)
		return kc_err("out of memory");
	rc = kc_do(kc, "GET", path.p, NULL, &r);
	if (rc == KC_OK) {
		if (kc->json)
			rc = kc_print_json(r.body);
		else
			kc_job_show(kc, r.body);
	}
	kc_resp_clear(&r);
	kc_buf_free(&path);
	return rc;
}

/* ---- add -------------------------------------------------------------------
 */

/* The jobs of a jobs file: an array of jobs, {"jobs": [...]} (what `list
 * --json` prints) or one job object. A new reference, or NULL with the
 * reason printed. */
static json_t *kc_jobs_load(const char *file)
{
	const char *label = strcmp(file, "-") == 0 ? "standard input" : file;
	json_error_t jerr;
	json_t *doc;

	/* Duplicate keys are refused, as keeld refuses them: the last value
	 * silently winning is how typos hide. */
	struct stat st;
	if (strcmp(file, "-") != 0 && stat(file, &st) == 0 &&
	    S_ISDIR(st.st_mode)) {
		kc_err("%s: is a directory, not a jobs file", file);
		return NULL;
	}
	if (strcmp(file, "-") == 0)
		doc = json_loadf(stdin, JSON_REJECT_DUPLICATES, &jerr);
	else
		doc = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
	if (doc == NULL) {
		if (json_error_code(&jerr) == json_error_cannot_open_file)
			kc_err("%s", jerr.text); /* names the file and why */
		else
			kc_err("%s: line %d, column %d: %s", label, jerr.line,
			       jerr.column, jerr.text);
		return NULL;
	}

	json_t *list = NULL;
	if (json_is_array(doc)) {
		list = json_incref(doc);
	} else if (json_is_object(doc) &&
		   json_object_get(doc, "jobs") != NULL) {
		list = json_incref(json_object_get(doc, "jobs"));
		if (!json_is_array(list)) {
			kc_err("%s: \"jobs\" must be an array of jobs", label);
			json_decref(list);
			list = NULL;
		}
	} else if (json_is_object(doc)) {
		list = json_array();
		if (list == NULL || json_array_append(list, doc) != 0) {
			kc_err("out of memory");
			json_decref(list);
			list = NULL;
		}
	} else {
		kc_err("%s: expected a job object, an array of jobs or "
		       "{\"jobs\": [...]}",
		       label);
	}
	json_decref(doc);
	if (list == NULL)
		return NULL;

	size_t i;
	json_t *job;
	json_array_foreach(list, i, job)
	{
		if (!json_is_object(job)) {
			kc_err("%s: job %zu of %zu is not a JSON object", label,
			       i + 1, json_array_size(list));
			json_decref(list);
			return NULL;
		}
	}
	if (json_array_size(list) == 0) {
		kc_err("%s: no jobs in it", label);
		json_decref(list);
		return NULL;
	}
	return list;
}

/* "created", "replaced" or "unchanged", from X-Keel-Result or else the
 * status (201 is a creation; 200 one of the others). */
static const char *kc_put_result(const struct kc_resp *r)
{
	if (r->result[0] != '\0')
		return r->result;
	return r->status == 201 ? "created" : "saved";
}

/*
 * Each job is POSTed in file order and the first refusal stops the rest:
 * the jobs before it are in place (each POST stands alone), none after it
 * was sent, and the message says which is which. Going on past an error
 * would leave a half-applied file whose state depends on which lines
 * happened to be wrong; stopping makes "fix the line, run again" always
 * right, since unchanged jobs are not touched the second time.
 */
int kc_cmd_add(struct kc *kc, const char *file)
{
	json_t *jobs = kc_jobs_load(file);
	json_t *out = NULL;
	int rc = KC_OK;

	if (jobs == NULL)
		return KC_FAIL;
	if (kc->json && (out = json_array()) == NULL) {
		json_decref(jobs);
		return kc_err("out of memory");
	}

	size_t n = json_array_size(jobs), i;
	json_t *job;
	json_array_foreach(jobs, i, job)
	{
		struct kc_resp r;
		const char *name = kc_str(job, "name");
		char what[128];

		if (name != NULL)
			snprintf(what, sizeof(what), "job %s", name);
		else
			snprintf(what, sizeof(what), "job %zu of %zu", i + 1,
				 n);
		rc = kc_call(kc, "POST", "/v1/jobs", job, &r);
		if (rc == KC_OK)
			rc = kc_check(kc, &r, what);
		if (rc != KC_OK) {
			kc_resp_clear(&r);
			if (n > 1)
				kc_err("stopped at the first error: %zu of %zu "
				       "job%s applied before it, %zu not sent",
				       i, n, n == 1 ? "" : "s", n - i - 1);
			break;
		}
		if (kc->json) {
			json_t *o = json_pack(
			    "{s:s, s:O}", "result", kc_put_result(&r), "job",
			    r.body != NULL ? r.body : json_null());
			if (o == NULL || json_array_append_new(out, o) != 0)
				rc = kc_err("out of memory");
		} else {
			const char *res = kc_put_result(&r);
			const char *shown = kc_str(r.body, "name");
			printf("job %s %s\n",
			       shown != NULL ? shown : (name ? name : "?"),
			       res);
		}
		kc_resp_clear(&r);
		if (rc != KC_OK)
			break;
	}
	/* With --json, what was applied is printed even after an error, so
	 * a script sees the same facts a person does. */
	if (out != NULL) {
		int prc = kc_print_json(out);
		if (rc == KC_OK)
			rc = prc;
	}
	json_decref(out);
	json_decref(jobs);
	return rc;
}

/* ---- remove, pause, resume ------------------------------------------- */

int kc_cmd_remove(struct kc *kc, const char *name)
{
	struct kc_buf path = {0};
	struct kc_resp r = {0};
	int rc;

	kc_job_path(&path, name, "");
	if (path.failed)
		return kc_err("out of memory");
	rc = kc_do(kc, "DELETE", path.p, NULL, &r);
	/* 204 has no body: --json prints nothing, the exit status says it. */
	if (rc == KC_OK && !kc->json)
		printf("job %s removed\n", name);
	kc_resp_clear(&r);
	kc_buf_free(&path);
	return rc;
}

int kc_cmd_pause(struct kc *kc, const char *name, int pause)
{
	struct kc_buf path = {0};
	struct kc_resp r = {0};
	int rc;

	kc_job_path(&path, name, pause ? "/pause" : "/resume");
	if (path.failed)
		return kc_err("out of memory");
	rc = kc_do(kc, "POST", path.p, NULL, &r);
	if (rc == KC_OK && kc->json) {
		rc = kc_print_json(r.body);
	} else if (rc == KC_OK) {
		int64_t next = kc_time_of(r.body, "next_run_at");
		char a[32], rel[32];
		printf("job %s %s", name, pause ? "paused" : "resumed");
		if (json_is_false(json_object_get(r.body, "enabled")))
			printf(" (it is disabled: it does not run either way)");
		else if (!pause && next != 0)
			printf(
			    "; next run %s (%s)",
			    kc_time_fmt(next, a, sizeof(a)),
			    kc_time_rel(next, kc_now_ms(), rel, sizeof(rel)));
		printf("\n");
	}
	kc_resp_clear(&r);
	kc_buf_free(&path);
	return rc;
}
