/*
 * src/sched/store.c - keel/store.h's public functions: they check their
 * arguments and call the engine (store_internal.h). Also what does not
 * depend on the engine: the config's defaults, the frees, the error text
 * kept per thread, how a job is stored as text and read back, and the
 * UTF-8 clean-up of what runs bring in.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <keel/store.h>

#include "../obs/json.h"
#include "store_internal.h"

/* ------------------------------------------------------------------------
 * Error text, per thread
 * ------------------------------------------------------------------------ */

/* The last error of this thread and the store it came from: an API thread
 * asking keel_store_errmsg after a call sees its own call's reason, never
 * another thread's. */
static __thread const struct keel_store *err_store;
static __thread char err_text[1024];

void keel__store_errf(const struct keel_store *st, const char *fmt, ...)
{
	va_list ap;

	err_store = st;
	va_start(ap, fmt);
	vsnprintf(err_text, sizeof(err_text), fmt, ap);
	va_end(ap);
}

const char *keel__store_errmsg(const struct keel_store *st)
{
	return st != NULL && st == err_store ? err_text : "";
}

const char *keel_store_errmsg(struct keel_store *st)
{
	if (st == NULL)
		return "";
	if (st->ops->errmsg != NULL)
		return st->ops->errmsg(st);
	return keel__store_errmsg(st);
}

static int inval(const struct keel_store *st, const char *what)
{
	keel__store_errf(st, "%s", what);
	return -EINVAL;
}

/* ------------------------------------------------------------------------
 * Helpers for the engines
 * ------------------------------------------------------------------------ */

char *keel__store_strndup(const char *s, size_t n, int *oom)
{
	char *p;

	if (s == NULL)
		return NULL;
	p = malloc(n + 1);
	if (p == NULL) {
		*oom = 1;
		return NULL;
	}
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

int keel__store_utf8(const char *s, const char **out, char **tmp)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n, i, bad = 0, k;
	char *p, *w;

	*tmp = NULL;
	*out = s;
	if (s == NULL)
		return 0;
	n = strlen(s);
	for (i = 0; i < n; i += k) {
		k = u[i] < 0x80 ? 1 : keel__utf8_len(u + i, n - i);
		if (k == 0) {
			bad++;
			k = 1;
		}
	}
	if (bad == 0)
		return 0;
	/* Each bad byte (1) becomes U+FFFD (3 bytes). */
	p = malloc(n + 2 * bad + 1);
	if (p == NULL)
		return -ENOMEM;
	w = p;
	for (i = 0; i < n; i += k) {
		k = u[i] < 0x80 ? 1 : keel__utf8_len(u + i, n - i);
		if (k == 0) {
			memcpy(w, "\xef\xbf\xbd", 3);
			w += 3;
			k = 1;
		} else {
			memcpy(w, s + i, k);
			w += k;
		}
	}
	*w = '\0';
	*tmp = p;
	*out = p;
	return 0;
}

int keel__store_decide(struct keel_store *st, const struct keel_run *crashed,
		       int (*decide)(const struct keel_run *crashed,
				     struct keel_run *next, void *ud),
		       void *ud, const char *what, struct keel_run *next)
{
	int rc, want;

	memset(next, 0, sizeof(*next));
	want = decide(crashed, next, ud);
	if (want <= 0) {
		keel_run_clear(next);
		if (want < 0)
			keel__store_errf(st, "%s: decide failed for run %lld (%d)",
					 what, (long long)crashed->id, want);
		return want;
	}
	if (next->job == NULL && (next->job = strdup(crashed->job)) == NULL) {
		keel__store_errf(st, "out of memory");
		return -ENOMEM;
	}
	rc = keel__store_run_check(st, next, 1);
	if (rc != 0) {
		keel_run_clear(next);
		return rc;
	}
	return 1;
}

int keel__store_run_check(const struct keel_store *st,
			  const struct keel_run *r, int need_job)
{
	if (r == NULL)
		return inval(st, "run is NULL");
	if (need_job && (r->job == NULL || r->job[0] == '\0'))
		return inval(st, "run has no job");
	if (keel_run_state_name(r->state) == NULL) {
		keel__store_errf(st, "run state %d is out of range",
				 (int)r->state);
		return -EINVAL;
	}
	if (keel_run_trigger_name(r->trigger) == NULL) {
		keel__store_errf(st, "run trigger %d is out of range",
				 (int)r->trigger);
		return -EINVAL;
	}
	if (r->attempt < 1) {
		keel__store_errf(st, "run attempt %d must be >= 1", r->attempt);
		return -EINVAL;
	}
	if (r->scheduled_at < 0 || r->created_at < 0 || r->not_before < 0 ||
	    r->started_at < 0 || r->finished_at < 0)
		return inval(st, "run times must be >= 0");
	if (memchr(r->trace_id, '\0', sizeof(r->trace_id)) == NULL)
		return inval(st, "run trace_id is not NUL-terminated");
	return 0;
}

int keel__store_job_encode(const struct keel_store *st,
			   const struct keel_job *j, char **out)
{
	char why[KEEL_JOB_ERR_MAX];
	struct keel_job *back = NULL;
	json_t *v = keel_job_to_json(j);
	int rc;

	*out = NULL;
	if (v == NULL) {
		keel__store_errf(st, "job '%s': out of memory", j->name);
		return -ENOMEM;
	}
	/* A job made by hand, not by keel_job_from_json, could be one that
	 * does not read back: refused now rather than stored and found
	 * corrupt at the next start. */
	rc = keel_job_from_json(v, &back, why, sizeof(why));
	keel_job_free(back);
	if (rc != 0) {
		json_decref(v);
		keel__store_errf(st, "job '%s': %s", j->name,
				 rc == -ENOMEM ? "out of memory" : why);
		return rc == -ENOMEM ? -ENOMEM : -EINVAL;
	}
	/* Sorted keys: the same job is always the same text. */
	*out = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(v);
	if (*out == NULL) {
		keel__store_errf(st, "job '%s': out of memory", j->name);
		return -ENOMEM;
	}
	return 0;
}

int keel__store_job_decode(const struct keel_store *st, const char *name,
			   const char *spec, struct keel_job **out)
{
	char why[KEEL_JOB_ERR_MAX];
	struct keel_job *j = NULL;
	json_error_t je;
	json_t *v;
	int rc;

	*out = NULL;
	if (spec == NULL) {
		keel__store_errf(st,
				 "job '%s': stored definition is corrupt: "
				 "it is empty",
				 name);
		return -EIO;
	}
	v = json_loads(spec, JSON_REJECT_DUPLICATES, &je);
	if (v == NULL) {
		keel__store_errf(st,
				 "job '%s': stored definition is corrupt: "
				 "not JSON (%s at character %d)",
				 name, je.text, je.position);
		return -EIO;
	}
	rc = keel_job_from_json(v, &j, why, sizeof(why));
	json_decref(v);
	if (rc == -ENOMEM) {
		keel__store_errf(st, "job '%s': out of memory", name);
		return -ENOMEM;
	}
	if (rc != 0) {
		keel__store_errf(st,
				 "job '%s': stored definition is corrupt: %s",
				 name, why);
		return -EIO;
	}
	if (strcmp(j->name, name) != 0) {
		keel__store_errf(st,
				 "job '%s': stored definition is corrupt: "
				 "it names job '%s'",
				 name, j->name);
		keel_job_free(j);
		return -EIO;
	}
	*out = j;
	return 0;
}

int keel__store_tags_json(const struct keel_store *st,
			  const char *const *tags, size_t n, char **out)
{
	json_t *a = json_array();
	size_t i;

	*out = NULL;
	if (a == NULL)
		goto oom;
	for (i = 0; i < n; i++) {
		/* json_string refuses what is not UTF-8. */
		json_t *v = json_string(tags[i]);

		if (v == NULL) {
			json_decref(a);
			keel__store_errf(st, "tag %zu is not valid UTF-8", i);
			return -EINVAL;
		}
		if (json_array_append_new(a, v) != 0) {
			json_decref(a);
			goto oom;
		}
	}
	*out = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	if (*out != NULL)
		return 0;
oom:
	keel__store_errf(st, "out of memory");
	return -ENOMEM;
}

void keel__store_tags_free(char **tags, size_t n)
{
	if (tags == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(tags[i]);
	free(tags);
}

int keel__store_tags_parse(const struct keel_store *st, const char *text,
			   char ***tags, size_t *n)
{
	json_error_t je;
	json_t *a;
	char **v;
	size_t i, len;

	*tags = NULL;
	*n = 0;
	if (text == NULL)
		return 0;
	a = json_loads(text, 0, &je);
	if (a == NULL || !json_is_array(a)) {
		json_decref(a);
		keel__store_errf(st, "stored tags are not a JSON array: %.64s",
				 text);
		return -EIO;
	}
	len = json_array_size(a);
	if (len == 0) {
		json_decref(a);
		return 0;
	}
	v = calloc(len, sizeof(*v));
	if (v == NULL) {
		json_decref(a);
		keel__store_errf(st, "out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < len; i++) {
		const char *t = json_string_value(json_array_get(a, i));

		if (t == NULL) {
			keel__store_tags_free(v, len);
			json_decref(a);
			keel__store_errf(st, "stored tags are not strings: "
					     "%.64s",
					 text);
			return -EIO;
		}
		v[i] = strdup(t);
		if (v[i] == NULL) {
			keel__store_tags_free(v, len);
			json_decref(a);
			keel__store_errf(st, "out of memory");
			return -ENOMEM;
		}
	}
	json_decref(a);
	*tags = v;
	*n = len;
	return 0;
}

/* ------------------------------------------------------------------------
 * Config and frees
 * ------------------------------------------------------------------------ */

void keel_store_config_init(struct keel_store_config *cfg)
{
	if (cfg == NULL)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->sync_full = 0;
	cfg->busy_timeout = INT64_C(5000000000);
	cfg->idle_timeout = INT64_C(5000000000);
}

void keel_store_job_clear(struct keel_store_job *j)
{
	if (j == NULL)
		return;
	keel_job_free(j->job);
	memset(j, 0, sizeof(*j));
}

void keel_store_jobs_free(struct keel_store_job *jobs, size_t n)
{
	if (jobs == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		keel_store_job_clear(&jobs[i]);
	free(jobs);
}

void keel_store_runs_free(struct keel_run *runs, size_t n)
{
	if (runs == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		keel_run_clear(&runs[i]);
	free(runs);
}

void keel_store_nodes_free(struct keel_store_node *nodes, size_t n)
{
	if (nodes == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(nodes[i].id);
		keel__store_tags_free(nodes[i].tags, nodes[i].n_tags);
	}
	free(nodes);
}

void keel_store_events_free(struct keel_store_event *ev, size_t n)
{
	if (ev == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(ev[i].level);
		free(ev[i].kind);
		free(ev[i].job);
		free(ev[i].message);
	}
	free(ev);
}

/* ------------------------------------------------------------------------
 * The public calls: check, then the engine
 * ------------------------------------------------------------------------ */

void keel_store_close(struct keel_store *st)
{
	if (st == NULL)
		return;
	if (err_store == st)
		err_store = NULL;
	st->ops->close(st);
}

int keel_store_job_put(struct keel_store *st, const struct keel_job *j,
		       int64_t now_s, enum keel_store_put *result)
{
	enum keel_store_put dummy;

	if (st == NULL)
		return -EINVAL;
	if (j == NULL || j->name == NULL || j->schedule == NULL)
		return inval(st, "job_put: job, its name and schedule are "
				 "required");
	return st->ops->job_put(st, j, now_s, result ? result : &dummy);
}

int keel_store_job_delete(struct keel_store *st, const char *name)
{
	if (st == NULL)
		return -EINVAL;
	if (name == NULL)
		return inval(st, "job_delete: name is NULL");
	return st->ops->job_delete(st, name);
}

int keel_store_job_pause(struct keel_store *st, const char *name, int paused,
			 int64_t now_s)
{
	if (st == NULL)
		return -EINVAL;
	if (name == NULL)
		return inval(st, "job_pause: name is NULL");
	return st->ops->job_pause(st, name, paused != 0, now_s);
}

int keel_store_job_get(struct keel_store *st, const char *name,
		       struct keel_store_job *out)
{
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (st == NULL)
		return -EINVAL;
	if (name == NULL || out == NULL)
		return inval(st, "job_get: name and out are required");
	return st->ops->job_get(st, name, out);
}

int keel_store_job_list(struct keel_store *st, struct keel_store_job **out,
			size_t *n)
{
	if (out != NULL)
		*out = NULL;
	if (n != NULL)
		*n = 0;
	if (st == NULL)
		return -EINVAL;
	if (out == NULL || n == NULL)
		return inval(st, "job_list: out and n are required");
	return st->ops->job_list(st, out, n);
}

/* keel_store_ticks's checks of a batch of n > 0 ticks. */
static int ticks_check(struct keel_store *st,
		       const struct keel_store_tick *ticks, size_t n)
{
	if (ticks == NULL)
		return inval(st, "ticks: ticks is NULL");
	for (size_t i = 0; i < n; i++) {
		const struct keel_store_tick *t = &ticks[i];

		if (t->job == NULL)
			return inval(st, "ticks: a tick has no job");
		if (t->n_runs > 0 && t->runs == NULL)
			return inval(st, "ticks: a tick has n_runs but no runs");
		for (size_t k = 0; k < t->n_runs; k++) {
			int rc = keel__store_run_check(st, &t->runs[k], 0);

			if (rc != 0)
				return rc;
			if (t->runs[k].job != NULL &&
			    strcmp(t->runs[k].job, t->job) != 0) {
				keel__store_errf(st,
						 "ticks: a run of job '%s' in "
						 "the tick of job '%s'",
						 t->runs[k].job, t->job);
				return -EINVAL;
			}
		}
	}
	return 0;
}

int keel_store_ticks(struct keel_store *st, struct keel_store_tick *ticks,
		     size_t n)
{
	int rc;

	if (st == NULL)
		return -EINVAL;
	if (n == 0)
		return 0;
	rc = ticks_check(st, ticks, n);
	if (rc != 0)
		return rc;
	return st->ops->ticks(st, ticks, n);
}

int keel_store_run_insert(struct keel_store *st, struct keel_run *r)
{
	int rc;

	if (st == NULL)
		return -EINVAL;
	rc = keel__store_run_check(st, r, 1);
	if (rc != 0)
		return rc;
	return st->ops->run_insert(st, r);
}

int keel_store_run_start(struct keel_store *st, int64_t id,
			 int64_t started_at, const char *node)
{
	if (st == NULL)
		return -EINVAL;
	if (id <= 0)
		return inval(st, "run_start: id must be > 0");
	return st->ops->run_start(st, id, started_at, node);
}

int keel_store_run_finish(struct keel_store *st, const struct keel_run *r,
			  struct keel_run *next)
{
	int rc;

	if (st == NULL)
		return -EINVAL;
	if (r == NULL || r->id <= 0)
		return inval(st, "run_finish: a run with an id is required");
	if (!keel_run_state_final(r->state)) {
		keel__store_errf(st, "run_finish: state '%s' is not final",
				 keel_run_state_name(r->state)
					 ? keel_run_state_name(r->state)
					 : "?");
		return -EINVAL;
	}
	if (r->finished_at < 0)
		return inval(st, "run_finish: finished_at must be >= 0");
	if (next != NULL) {
		rc = keel__store_run_check(st, next, 1);
		if (rc != 0)
			return rc;
	}
	return st->ops->run_finish(st, r, next);
}

int keel_store_runs_start(struct keel_store *st, const int64_t *ids,
			  size_t n, int64_t started_at, const char *node,
			  int *rcs)
{
	if (st == NULL)
		return -EINVAL;
	if (n > 0 && (ids == NULL || rcs == NULL))
		return inval(st, "runs_start: ids and rcs are required");
	for (size_t i = 0; i < n; i++)
		if (ids[i] <= 0)
			return inval(st, "runs_start: ids must be > 0");
	if (n == 0)
		return 0;
	if (st->ops->runs_start != NULL)
		return st->ops->runs_start(st, ids, n, started_at, node, rcs);
	for (size_t i = 0; i < n; i++)
		rcs[i] = st->ops->run_start(st, ids[i], started_at, node);
	return 0;
}

int keel_store_runs_finish(struct keel_store *st,
			   struct keel_store_finish *items, size_t n, int *rcs)
{
	if (st == NULL)
		return -EINVAL;
	if (n > 0 && (items == NULL || rcs == NULL))
		return inval(st, "runs_finish: items and rcs are required");
	for (size_t i = 0; i < n; i++) {
		const struct keel_run *r = items[i].run;
		int rc;

		if (r == NULL || r->id <= 0 || !keel_run_state_final(r->state) ||
		    r->finished_at < 0)
			return inval(st, "runs_finish: each item needs a run "
					 "with an id, a final state and "
					 "finished_at >= 0");
		if (items[i].next != NULL &&
		    (rc = keel__store_run_check(st, items[i].next, 1)) != 0)
			return rc;
	}
	if (n == 0)
		return 0;
	if (st->ops->runs_finish != NULL)
		return st->ops->runs_finish(st, items, n, rcs);
	for (size_t i = 0; i < n; i++)
		rcs[i] = st->ops->run_finish(st, items[i].run, items[i].next);
	return 0;
}

int keel_store_run_get(struct keel_store *st, int64_t id, struct keel_run *out)
{
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (st == NULL)
		return -EINVAL;
	if (out == NULL)
		return inval(st, "run_get: out is NULL");
	if (id <= 0) {
		keel__store_errf(st, "no run %lld", (long long)id);
		return -ENOENT;
	}
	return st->ops->run_get(st, id, out);
}

int keel_store_run_list(struct keel_store *st,
			const struct keel_store_run_query *q,
			struct keel_run **out, size_t *n)
{
	if (out != NULL)
		*out = NULL;
	if (n != NULL)
		*n = 0;
	if (st == NULL)
		return -EINVAL;
	if (q == NULL || out == NULL || n == NULL)
		return inval(st, "run_list: q, out and n are required");
	if (q->limit < 1 || q->limit > 1000)
		return inval(st, "run_list: limit must be 1..1000");
	if (q->state != -1 &&
	    keel_run_state_name((enum keel_run_state)q->state) == NULL)
		return inval(st, "run_list: state must be -1 or a run state");
	if (q->before_id < 0)
		return inval(st, "run_list: before_id must be >= 0");
	return st->ops->run_list(st, q, out, n);
}

int keel_store_run_active(struct keel_store *st, struct keel_run **out,
			  size_t *n)
{
	if (out != NULL)
		*out = NULL;
	if (n != NULL)
		*n = 0;
	if (st == NULL)
		return -EINVAL;
	if (out == NULL || n == NULL)
		return inval(st, "run_active: out and n are required");
	return st->ops->run_active(st, out, n);
}

int keel_store_recover(struct keel_store *st, int64_t now_ms,
		       int (*decide)(const struct keel_run *crashed,
				     struct keel_run *next, void *ud),
		       void *ud, size_t *n_crashed)
{
	size_t dummy;

	if (n_crashed != NULL)
		*n_crashed = 0;
	if (st == NULL)
		return -EINVAL;
	return st->ops->recover(st, NULL, now_ms, decide, ud,
				n_crashed ? n_crashed : &dummy);
}

int keel_store_prune(struct keel_store *st, const char *job, int keep_runs,
		     int64_t before_ms, size_t *deleted)
{
	size_t dummy;

	if (deleted != NULL)
		*deleted = 0;
	if (st == NULL)
		return -EINVAL;
	if (job == NULL)
		return inval(st, "prune: job is NULL");
	return st->ops->prune(st, job, keep_runs, before_ms,
			      deleted ? deleted : &dummy);
}

int keel_store_run_counts(struct keel_store *st, const char *job,
			  int64_t counts[KEEL_RUN_NSTATES])
{
	if (st == NULL)
		return -EINVAL;
	if (counts == NULL)
		return inval(st, "run_counts: counts is NULL");
	memset(counts, 0, sizeof(int64_t) * KEEL_RUN_NSTATES);
	return st->ops->run_counts(st, job, counts);
}

int keel_store_event_add(struct keel_store *st, int64_t at_ms,
			 const char *level, const char *kind, const char *job,
			 int64_t run_id, const char *message)
{
	if (st == NULL)
		return -EINVAL;
	if (level == NULL || kind == NULL || message == NULL)
		return inval(st, "event_add: level, kind and message are "
				 "required");
	if (run_id < 0)
		return inval(st, "event_add: run_id must be >= 0");
	return st->ops->event_add(st, at_ms, level, kind, job, run_id, message);
}

int keel_store_event_list(struct keel_store *st, int64_t before_id, int limit,
			  struct keel_store_event **out, size_t *n)
{
	if (out != NULL)
		*out = NULL;
	if (n != NULL)
		*n = 0;
	if (st == NULL)
		return -EINVAL;
	if (out == NULL || n == NULL)
		return inval(st, "event_list: out and n are required");
	if (limit < 1 || limit > 1000)
		return inval(st, "event_list: limit must be 1..1000");
	if (before_id < 0)
		return inval(st, "event_list: before_id must be >= 0");
	return st->ops->event_list(st, before_id, limit, out, n);
}

/* ------------------------------------------------------------------------
 * The cluster
 * ------------------------------------------------------------------------ */

static int unsupported(const struct keel_store *st, const char *what)
{
	keel__store_errf(st, "%s: the %s store has no cluster support", what,
			 st->ops->name);
	return -ENOTSUP;
}

/* A node's name: 1..KEEL__STORE_NODE_MAX bytes of UTF-8 (it is compared
 * as it is, so it cannot be cleaned as texts are). */
static int check_node(const struct keel_store *st, const char *what,
		      const char *node)
{
	const char *clean;
	char *tmp = NULL;
	size_t len;

	if (node == NULL || node[0] == '\0') {
		keel__store_errf(st, "%s: a node name is required", what);
		return -EINVAL;
	}
	len = strlen(node);
	if (len > KEEL__STORE_NODE_MAX) {
		keel__store_errf(st, "%s: node name of %zu bytes (at most %d)",
				 what, len, KEEL__STORE_NODE_MAX);
		return -EINVAL;
	}
	if (keel__store_utf8(node, &clean, &tmp) != 0) {
		keel__store_errf(st, "out of memory");
		return -ENOMEM;
	}
	free(tmp);
	if (tmp != NULL) {
		keel__store_errf(st, "%s: node name is not valid UTF-8", what);
		return -EINVAL;
	}
	return 0;
}

/* tags as JSON for an engine; a NULL tag is -EINVAL. */
static int tags_arg(const struct keel_store *st, const char *what,
		    const char *const *tags, size_t n, char **json)
{
	*json = NULL;
	if (n > 0 && tags == NULL) {
		keel__store_errf(st, "%s: n_tags without tags", what);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (tags[i] == NULL) {
			keel__store_errf(st, "%s: tag %zu is NULL", what, i);
			return -EINVAL;
		}
	}
	return keel__store_tags_json(st, tags, n, json);
}

int keel_store_lease_acquire(struct keel_store *st, const char *node,
			     int64_t ttl_ms, struct keel_store_lease *out)
{
	int rc;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (st == NULL)
		return -EINVAL;
	if (out == NULL)
		return inval(st, "lease_acquire: out is NULL");
	if ((rc = check_node(st, "lease_acquire", node)) != 0)
		return rc;
	if (ttl_ms <= 0 || ttl_ms > INT64_C(86400000) * 365)
		return inval(st, "lease_acquire: ttl_ms must be > 0 (and under "
				 "a year)");
	if (st->ops->lease_acquire == NULL)
		return unsupported(st, "lease_acquire");
	return st->ops->lease_acquire(st, node, ttl_ms, out);
}

int keel_store_lease_release(struct keel_store *st, const char *node,
			     int64_t term)
{
	int rc;

	if (st == NULL)
		return -EINVAL;
	if ((rc = check_node(st, "lease_release", node)) != 0)
		return rc;
	if (term <= 0)
		return inval(st, "lease_release: term must be > 0");
	if (st->ops->lease_release == NULL)
		return unsupported(st, "lease_release");
	return st->ops->lease_release(st, node, term);
}

int keel_store_node_beat(struct keel_store *st, const char *node, int running,
			 const char *const *tags, size_t n_tags,
			 int64_t *now_ms)
{
	int64_t dummy;
	char *json = NULL;
	int rc;

	if (now_ms != NULL)
		*now_ms = 0;
	if (st == NULL)
		return -EINVAL;
	if ((rc = check_node(st, "node_beat", node)) != 0)
		return rc;
	if (running < 0)
		return inval(st, "node_beat: running must be >= 0");
	if (st->ops->node_beat == NULL)
		return unsupported(st, "node_beat");
	if ((rc = tags_arg(st, "node_beat", tags, n_tags, &json)) != 0)
		return rc;
	rc = st->ops->node_beat(st, node, running, json,
				now_ms ? now_ms : &dummy);
	free(json);
	return rc;
}

int keel_store_node_list(struct keel_store *st, int64_t forget_ms,
			 struct keel_store_node **out, size_t *n)
{
	if (out != NULL)
		*out = NULL;
	if (n != NULL)
		*n = 0;
	if (st == NULL)
		return -EINVAL;
	if (out == NULL || n == NULL)
		return inval(st, "node_list: out and n are required");
	if (forget_ms < 0)
		return inval(st, "node_list: forget_ms must be >= 0");
	if (st->ops->node_list == NULL)
		return unsupported(st, "node_list");
	return st->ops->node_list(st, forget_ms, out, n);
}

int keel_store_claim(struct keel_store *st, const char *node,
		     const char *const *tags, size_t n_tags, int max,
		     struct keel_run **out, size_t *n)
{
	char *json = NULL;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (n != NULL)
		*n = 0;
	if (st == NULL)
		return -EINVAL;
	if (out == NULL || n == NULL)
		return inval(st, "claim: out and n are required");
	if ((rc = check_node(st, "claim", node)) != 0)
		return rc;
	if (max < 1 || max > KEEL__STORE_CLAIM_MAX)
		return inval(st, "claim: max must be 1..1000");
	if (st->ops->claim == NULL)
		return unsupported(st, "claim");
	if ((rc = tags_arg(st, "claim", tags, n_tags, &json)) != 0)
		return rc;
	rc = st->ops->claim(st, node, json, max, out, n);
	free(json);
	return rc;
}

int keel_store_runs_beat(struct keel_store *st, const int64_t *ids,
			 const uint64_t *claims, size_t n, int *rcs)
{
	if (st == NULL)
		return -EINVAL;
	if (n > 0 && (ids == NULL || claims == NULL || rcs == NULL))
		return inval(st, "runs_beat: ids, claims and rcs are required");
	for (size_t i = 0; i < n; i++)
		if (ids[i] <= 0 || claims[i] == 0 ||
		    claims[i] > (uint64_t)INT64_MAX)
			return inval(st, "runs_beat: ids must be > 0, claims "
					 "a claim's token (not 0)");
	if (st->ops->runs_beat == NULL)
		return unsupported(st, "runs_beat");
	if (n == 0)
		return 0;
	return st->ops->runs_beat(st, ids, claims, n, rcs);
}

int keel_store_ticks_fenced(struct keel_store *st, int64_t term,
			    struct keel_store_tick *ticks, size_t n)
{
	int rc;

	if (st == NULL)
		return -EINVAL;
	if (term <= 0)
		return inval(st, "ticks_fenced: term must be > 0");
	if (st->ops->ticks_fenced == NULL)
		return unsupported(st, "ticks_fenced");
	/* The same checks as keel_store_ticks; the engine checks the term
	 * even for no ticks (the caller learns it lost the lease). */
	if (n > 0 && (rc = ticks_check(st, ticks, n)) != 0)
		return rc;
	return st->ops->ticks_fenced(st, term, ticks, n);
}

int keel_store_rescue(struct keel_store *st, int64_t term, int64_t stale_ms,
		      int (*decide)(const struct keel_run *crashed,
				    struct keel_run *next, void *ud),
		      void *ud, size_t *n_rescued)
{
	size_t dummy;

	if (n_rescued != NULL)
		*n_rescued = 0;
	if (st == NULL)
		return -EINVAL;
	if (term <= 0)
		return inval(st, "rescue: term must be > 0");
	if (stale_ms <= 0)
		return inval(st, "rescue: stale_ms must be > 0");
	if (st->ops->rescue == NULL)
		return unsupported(st, "rescue");
	return st->ops->rescue(st, term, stale_ms, decide, ud,
			       n_rescued ? n_rescued : &dummy);
}

int keel_store_recover_node(struct keel_store *st, const char *node,
			    int64_t now_ms,
			    int (*decide)(const struct keel_run *crashed,
					  struct keel_run *next, void *ud),
			    void *ud, size_t *n_crashed)
{
	size_t dummy;
	int rc;

	if (n_crashed != NULL)
		*n_crashed = 0;
	if (st == NULL)
		return -EINVAL;
	if ((rc = check_node(st, "recover_node", node)) != 0)
		return rc;
	return st->ops->recover(st, node, now_ms, decide, ud,
				n_crashed ? n_crashed : &dummy);
}
