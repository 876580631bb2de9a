/*
 * src/obs/metrics_bridge.c - policies and pools as metrics.
 *
 * Both bridges are collectors: at each render they read the object's own
 * counters (keel_policy_stats, keel_pool_stats) and set their series to
 * them, so the numbers are exactly the object's and the hot paths of the
 * policies and the pool pay nothing. The one thing no counter keeps is
 * which breaker transition happened (stats only count them), so a bridged
 * breaker also gets an event listener that counts transitions by from/to
 * and then calls the listener it replaced.
 *
 * A bridge lives in the registry's collector list (keel__metrics_collector_*),
 * so finding one, adding and removing it all happen under the collector
 * lock, which a render holds while it reads the objects: once an unbridge
 * has returned, no render is reading the object or will again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <keel/breaker.h>
#include <keel/metrics.h>
#include <keel/pipeline.h>
#include <keel/policy.h>
#include <keel/pool.h>

#define NSTATES 5 /* enum keel_breaker_state */

/* Removes the child with these values, if it is there. */
static void drop(struct keel_family *f, const char *a, const char *b,
		 const char *c, size_t n)
{
	const char *v[3] = { a, b, c };

	if (f != NULL)
		(void)keel_metrics_remove(f, v, n);
}

/* ------------------------------------------------------------------------
 * Policies
 * ------------------------------------------------------------------------ */

enum { OUT_SUCCESS, OUT_FAILURE, OUT_PANIC, OUT_REJECTED, OUT__N };

static const char *const outcome_names[OUT__N] = { "success", "failure",
						   "panic", "rejected" };

struct pbridge {
	struct keel_metrics *reg;
	struct keel_policy *p;
	int refs;
	enum keel_policy_kind kind;
	const char *kind_name;
	struct keel_family *calls, *extra, *state, *trans;
	struct keel_counter *outcome[OUT__N];
	struct keel_counter *extra_c;  /* retries, timeouts, ... or NULL */
	unsigned extra_field;          /* its KEEL__STAT index */
	struct keel_gauge *state_g;
	struct keel_counter *tr[NSTATES][NSTATES]; /* filled by events */
	keel_event_fn prev_fn;
	void *prev_ud;
	int hooked;
	char name[];
};

/* The counter a kind has on top of the outcomes. */
static const struct {
	const char *metric, *help;
	unsigned field;
} kind_extra[KEEL_POLICY__COUNT] = {
	[KEEL_POLICY_RETRY] = { "keel_policy_retries_total",
				"Extra attempts made by retry policies.",
				KEEL__STAT(retries) },
	[KEEL_POLICY_TIMEOUT] = { "keel_policy_timeouts_total",
				  "Calls whose timeout fired.",
				  KEEL__STAT(timeouts) },
	[KEEL_POLICY_FALLBACK] = { "keel_policy_fallbacks_total",
				   "Outcomes produced by a fallback.",
				   KEEL__STAT(fallbacks) },
	[KEEL_POLICY_CHAOS] = { "keel_policy_injected_total",
				"Faults injected by chaos policies.",
				KEEL__STAT(injected) },
};

static void policy_collect(struct keel_metrics *reg, void *ud)
{
	struct pbridge *b = ud;
	struct keel_policy_stats st;
	const uint64_t *w = (const uint64_t *)(const void *)&st;

	(void)reg;
	keel_policy_stats(b->p, &st);
	keel_counter_set(b->outcome[OUT_SUCCESS], st.successes);
	keel_counter_set(b->outcome[OUT_FAILURE], st.failures);
	keel_counter_set(b->outcome[OUT_PANIC], st.panics);
	keel_counter_set(b->outcome[OUT_REJECTED], st.rejections);
	if (b->extra_c != NULL)
		keel_counter_set(b->extra_c, w[b->extra_field]);
	if (b->state_g != NULL)
		keel_gauge_set(b->state_g, (double)keel_breaker_state(b->p));
}

/* The breaker's listener: counts the transition, then chains. */
static void policy_event(const struct keel_event *ev, void *ud)
{
	struct pbridge *b = ud;

	if (ev->type == KEEL_EV_STATE && ev->from >= 0 && ev->from < NSTATES &&
	    ev->to >= 0 && ev->to < NSTATES) {
		struct keel_counter **slot = &b->tr[ev->from][ev->to];
		struct keel_counter *c = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

		if (c == NULL) {
			/* A lookup returns the same child to every thread. */
			c = keel_counter_with(b->trans, b->name,
					      keel_breaker_state_name(ev->from),
					      keel_breaker_state_name(ev->to));
			__atomic_store_n(slot, c, __ATOMIC_RELEASE);
		}
		keel_counter_inc(c);
	}
	if (b->prev_fn != NULL)
		b->prev_fn(ev, b->prev_ud);
}

static void policy_unhook(struct pbridge *b)
{
	if (b->hooked && b->p->on_event == policy_event && b->p->event_ud == b)
		keel_policy_on_event(b->p, b->prev_fn, b->prev_ud);
	b->hooked = 0;
}

static void policy_series_drop(struct pbridge *b)
{
	int i, j;

	for (i = 0; i < OUT__N; i++)
		drop(b->calls, b->name, b->kind_name, outcome_names[i], 3);
	drop(b->extra, b->name, b->kind_name, NULL, 2);
	drop(b->state, b->name, NULL, NULL, 1);
	for (i = 0; i < NSTATES; i++)
		for (j = 0; j < NSTATES; j++)
			if (b->tr[i][j] != NULL)
				drop(b->trans, b->name,
				     keel_breaker_state_name(i),
				     keel_breaker_state_name(j), 3);
}

/* keel_metrics_free: the registry goes, the policy stays. */
static void policy_release(void *ud)
{
	struct pbridge *b = ud;

	policy_unhook(b);
	free(b);
}

static int same_policy(void *ud, const void *arg)
{
	return ((struct pbridge *)ud)->p == arg;
}

struct name_kind {
	const char *name;
	enum keel_policy_kind kind;
};

static int same_series(void *ud, const void *arg)
{
	const struct pbridge *b = ud;
	const struct name_kind *nk = arg;

	return b->kind == nk->kind && strcmp(b->name, nk->name) == 0;
}

static int policy_families(struct pbridge *b)
{
	static const char *const l_pko[] = { "policy", "kind", "outcome" };
	static const char *const l_ft[] = { "policy", "from", "to" };
	struct keel__family_spec sp[4];
	struct keel_family *f[4];
	size_t n = 0, i;
	int rc;

	sp[n++] = (struct keel__family_spec){
		0, "keel_policy_calls_total",
		"Calls through resilience policies, by how they ended.",
		l_pko, 3, NULL, 0 };
	if (kind_extra[b->kind].metric != NULL)
		sp[n++] = (struct keel__family_spec){
			0, kind_extra[b->kind].metric, kind_extra[b->kind].help,
			l_pko, 2, NULL, 0 };
	if (b->kind == KEEL_POLICY_BREAKER) {
		sp[n++] = (struct keel__family_spec){
			1, "keel_breaker_state",
			"Circuit breaker state: 0 closed, 1 open, 2 half-open, "
			"3 forced-open, 4 disabled.",
			l_pko, 1, NULL, 0 };
		sp[n++] = (struct keel__family_spec){
			0, "keel_breaker_transitions_total",
			"Circuit breaker state changes.", l_ft, 3, NULL, 0 };
	}
	rc = keel__metrics_register_all(b->reg, sp, n, f);
	if (rc != 0)
		return rc;
	i = 0;
	b->calls = f[i++];
	if (kind_extra[b->kind].metric != NULL) {
		b->extra = f[i++];
		b->extra_field = kind_extra[b->kind].field;
	}
	if (b->kind == KEEL_POLICY_BREAKER) {
		b->state = f[i++];
		b->trans = f[i++];
	}
	return 0;
}

static int policy_children(struct pbridge *b)
{
	const char *v[3] = { b->name, b->kind_name, NULL };
	int i, rc;

	for (i = 0; i < OUT__N; i++) {
		v[2] = outcome_names[i];
		rc = keel_counter_get(b->calls, v, 3, &b->outcome[i]);
		if (rc != 0)
			return rc;
	}
	if (b->extra != NULL) {
		rc = keel_counter_get(b->extra, v, 2, &b->extra_c);
		if (rc != 0)
			return rc;
	}
	if (b->state != NULL) {
		rc = keel_gauge_get(b->state, v, 1, &b->state_g);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* With the collector lock held. */
static int policy_bridge_locked(struct keel_metrics *reg, struct keel_policy *p)
{
	struct name_kind nk = { keel_policy_name(p), keel_policy_kind(p) };
	size_t len = strlen(nk.name) + 1;
	struct pbridge *b;
	int rc;

	b = keel__metrics_collector_find(reg, policy_collect, same_policy, p);
	if (b != NULL) {
		b->refs++;
		return 0;
	}
	if ((unsigned)nk.kind >= KEEL_POLICY__COUNT)
		return -EINVAL;
	if (keel__metrics_collector_find(reg, policy_collect, same_series, &nk))
		return -EEXIST;
	b = calloc(1, sizeof(*b) + len);
	if (b == NULL)
		return -ENOMEM;
	memcpy(b->name, nk.name, len);
	b->reg = reg;
	b->p = p;
	b->refs = 1;
	b->kind = nk.kind;
	b->kind_name = keel_policy_kind_name(nk.kind);
	rc = policy_families(b);
	if (rc == 0)
		rc = policy_children(b);
	if (rc == 0)
		rc = keel__metrics_collector_insert(reg, policy_collect, b,
						    policy_release);
	if (rc != 0) {
		policy_series_drop(b);
		free(b);
		return rc;
	}
	if (b->kind == KEEL_POLICY_BREAKER) {
		b->prev_fn = p->on_event;
		b->prev_ud = p->event_ud;
		keel_policy_on_event(p, policy_event, b);
		b->hooked = 1;
	}
	return 0;
}

static int policy_unbridge_locked(struct keel_metrics *reg,
				  struct keel_policy *p)
{
	struct pbridge *b;

	b = keel__metrics_collector_find(reg, policy_collect, same_policy, p);
	if (b == NULL)
		return -ENOENT;
	if (--b->refs > 0)
		return 0;
	keel__metrics_collector_erase(reg, policy_collect, b);
	policy_unhook(b);
	policy_series_drop(b);
	free(b);
	return 0;
}

int keel_metrics_bridge_policy(struct keel_metrics *reg, struct keel_policy *p)
{
	int rc;

	if (p == NULL)
		return -EINVAL;
	rc = keel__metrics_collectors_lock(reg);
	if (rc != 0)
		return rc;
	rc = policy_bridge_locked(reg, p);
	keel__metrics_collectors_unlock(reg);
	return rc;
}

int keel_metrics_unbridge_policy(struct keel_metrics *reg,
				 struct keel_policy *p)
{
	int rc;

	if (p == NULL)
		return -EINVAL;
	rc = keel__metrics_collectors_lock(reg);
	if (rc != 0)
		return rc;
	rc = policy_unbridge_locked(reg, p);
	keel__metrics_collectors_unlock(reg);
	return rc;
}

int keel_metrics_bridge_pipeline(struct keel_metrics *reg,
				 struct keel_pipeline *pl)
{
	struct keel_policy *const *ps;
	int n, i, rc;

	if (pl == NULL)
		return -EINVAL;
	n = keel_pipeline_policies(pl, &ps);
	rc = keel__metrics_collectors_lock(reg);
	if (rc != 0)
		return rc;
	for (i = 0; i < n && rc == 0; i++)
		rc = policy_bridge_locked(reg, ps[i]);
	if (rc != 0)
		for (i -= 1; i-- > 0;)
			policy_unbridge_locked(reg, ps[i]);
	keel__metrics_collectors_unlock(reg);
	return rc;
}

int keel_metrics_unbridge_pipeline(struct keel_metrics *reg,
				   struct keel_pipeline *pl)
{
	struct keel_policy *const *ps;
	int n, i, rc;

	if (pl == NULL)
		return -EINVAL;
	n = keel_pipeline_policies(pl, &ps);
	rc = keel__metrics_collectors_lock(reg);
	if (rc != 0)
		return rc;
	/* All bridged, or nothing changes. */
	for (i = 0; i < n; i++)
		if (!keel__metrics_collector_find(reg, policy_collect,
						  same_policy, ps[i]))
			rc = -ENOENT;
	for (i = 0; i < n && rc == 0; i++)
		policy_unbridge_locked(reg, ps[i]);
	keel__metrics_collectors_unlock(reg);
	return rc;
}

/* ------------------------------------------------------------------------
 * Pools
 * ------------------------------------------------------------------------ */

enum {
	PC_SUBMITTED, PC_REJECTED, PC_COMPLETED, PC_PANICKED, PC_CANCELLED,
	PC_CALLER_RUNS, PC_OVERDUE, PC_LATENCY_SAMPLES, PC__N
};
enum { PG_QUEUED, PG_RUNNING, PG_THREADS, PG_LAT_AVG, PG_LAT_MAX, PG__N };

static const char *const pool_label[] = { "pool" };

#define POOL_COUNTER(name, help) { 0, name, help, pool_label, 1, NULL, 0 }
#define POOL_GAUGE(name, help) { 1, name, help, pool_label, 1, NULL, 0 }

static const struct keel__family_spec pool_specs[PC__N + PG__N] = {
	POOL_COUNTER("keel_pool_tasks_submitted_total",
		     "Tasks accepted by submit (caller-runs included)."),
	POOL_COUNTER("keel_pool_tasks_rejected_total",
		     "Tasks refused by submit (queue full or shut down)."),
	POOL_COUNTER("keel_pool_tasks_completed_total",
		     "Tasks that ran to the end."),
	POOL_COUNTER("keel_pool_tasks_panicked_total",
		     "Tasks ended by a recovered panic or fault."),
	POOL_COUNTER("keel_pool_tasks_cancelled_total",
		     "Queued tasks dropped by a cancelling shutdown."),
	POOL_COUNTER("keel_pool_tasks_caller_runs_total",
		     "Tasks run on the submitting thread."),
	POOL_COUNTER("keel_pool_tasks_overdue_total",
		     "Tasks reported past their deadline."),
	POOL_COUNTER("keel_pool_task_latency_samples_total",
		     "Tasks whose submit-to-finish latency was timed."),
	POOL_GAUGE("keel_pool_queued_tasks", "Tasks waiting in the queue."),
	POOL_GAUGE("keel_pool_running_tasks", "Tasks running now."),
	POOL_GAUGE("keel_pool_threads", "Worker threads now."),
	POOL_GAUGE("keel_pool_task_latency_avg_seconds",
		   "Average submit-to-finish latency of timed tasks."),
	POOL_GAUGE("keel_pool_task_latency_max_seconds",
		   "Largest submit-to-finish latency of timed tasks."),
};

struct qbridge {
	struct keel_pool *pool;
	struct keel_family *fam[PC__N + PG__N];
	struct keel_counter *c[PC__N];
	struct keel_gauge *g[PG__N];
	char name[];
};

static void pool_collect(struct keel_metrics *reg, void *ud)
{
	struct qbridge *b = ud;
	struct keel_pool_stats st;

	(void)reg;
	keel_pool_stats(b->pool, &st);
	keel_counter_set(b->c[PC_SUBMITTED], st.submitted);
	keel_counter_set(b->c[PC_REJECTED], st.rejected);
	keel_counter_set(b->c[PC_COMPLETED], st.completed);
	keel_counter_set(b->c[PC_PANICKED], st.panicked);
	keel_counter_set(b->c[PC_CANCELLED], st.cancelled);
	keel_counter_set(b->c[PC_CALLER_RUNS], st.caller_runs);
	keel_counter_set(b->c[PC_OVERDUE], st.overdue);
	keel_counter_set(b->c[PC_LATENCY_SAMPLES], st.latency_count);
	keel_gauge_set(b->g[PG_QUEUED], (double)st.queued);
	keel_gauge_set(b->g[PG_RUNNING], (double)st.running);
	keel_gauge_set(b->g[PG_THREADS], (double)st.threads);
	keel_gauge_set(b->g[PG_LAT_AVG], st.latency_avg_ns / 1e9);
	keel_gauge_set(b->g[PG_LAT_MAX], st.latency_max_ns / 1e9);
}

static void pool_series_drop(struct qbridge *b)
{
	size_t i;

	for (i = 0; i < PC__N + PG__N; i++)
		drop(b->fam[i], b->name, NULL, NULL, 1);
}

static int same_pool(void *ud, const void *arg)
{
	return ((struct qbridge *)ud)->pool == arg;
}

static int same_pool_name(void *ud, const void *arg)
{
	return strcmp(((struct qbridge *)ud)->name, arg) == 0;
}

static int pool_bridge_locked(struct keel_metrics *reg, struct keel_pool *pool,
			      const char *name)
{
	const char *v[1] = { name };
	size_t len = strlen(name) + 1, i;
	struct qbridge *b;
	int rc = 0;

	if (keel__metrics_collector_find(reg, pool_collect, same_pool, pool) ||
	    keel__metrics_collector_find(reg, pool_collect, same_pool_name,
					 name))
		return -EEXIST;
	b = calloc(1, sizeof(*b) + len);
	if (b == NULL)
		return -ENOMEM;
	b->pool = pool;
	memcpy(b->name, name, len);
	rc = keel__metrics_register_all(reg, pool_specs, PC__N + PG__N, b->fam);
	if (rc != 0) {
		free(b);
		return rc;
	}
	for (i = 0; i < PC__N && rc == 0; i++)
		rc = keel_counter_get(b->fam[i], v, 1, &b->c[i]);
	for (i = 0; i < PG__N && rc == 0; i++)
		rc = keel_gauge_get(b->fam[PC__N + i], v, 1, &b->g[i]);
	if (rc == 0)
		rc = keel__metrics_collector_insert(reg, pool_collect, b, free);
	if (rc != 0) {
		pool_series_drop(b);
		free(b);
	}
	return rc;
}

int keel_metrics_bridge_pool(struct keel_metrics *reg, struct keel_pool *pool,
			     const char *name)
{
	int rc;

	if (pool == NULL || name == NULL)
		return -EINVAL;
	rc = keel__metrics_collectors_lock(reg);
	if (rc != 0)
		return rc;
	rc = pool_bridge_locked(reg, pool, name);
	keel__metrics_collectors_unlock(reg);
	return rc;
}

int keel_metrics_unbridge_pool(struct keel_metrics *reg, struct keel_pool *pool)
{
	struct qbridge *b;
	int rc;

	if (pool == NULL)
		return -EINVAL;
	rc = keel__metrics_collectors_lock(reg);
	if (rc != 0)
		return rc;
	b = keel__metrics_collector_find(reg, pool_collect, same_pool, pool);
	if (b == NULL) {
		rc = -ENOENT;
	} else {
		keel__metrics_collector_erase(reg, pool_collect, b);
		pool_series_drop(b);
		free(b);
	}
	keel__metrics_collectors_unlock(reg);
	return rc;
}
