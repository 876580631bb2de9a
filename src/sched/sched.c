/*
 * src/sched/sched.c - the scheduler loop, dispatch and run lifecycle
 * (keel/sched.h).
 *
 * One loop thread owns time: each pass it materialises every due tick in
 * one store transaction, then starts the queued runs whose time has come
 * on the pool, then sleeps until the next fire, the next retry or a wake.
 * Workers run one attempt each and store its end (and its retry) in one
 * transaction. Everything in memory (jobs, queued runs, running attempts)
 * is under s->mu; the store is the truth and memory is rebuilt from it at
 * start.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <keel/backoff.h>
#include <keel/breaker.h>
#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/cron.h>
#include <keel/log.h>
#include <keel/metrics.h>
#include <keel/pipeline.h>
#include <keel/policy.h>
#include <keel/pool.h>
#include <keel/retry.h>
#include <keel/sched.h>
#include <keel/trace.h>
#include <keel/tz.h>

#include "spool.h"

#define MOD "keeld.sched"
#define MS_PER_S INT64_C(1000)
#define NS_PER_MS INT64_C(1000000)
/* Ticks of one job enumerated in one pass before jumping ahead: a job
 * every second that was down for a day has 86400 of them. */
#define ENUM_CAP 100000
/* Runs a pass writes for one job, whatever the schedule. */
#define ON_TIME_CAP 1000

/* A job definition with what it needs to fire; immutable, shared by the
 * runs that started under it (refcounted under s->mu). */
struct jobref {
	int refs;
	struct keel_job *job;
	struct keel_cron *cron;
	struct keel_tz *tz; /* NULL: UTC */
};

/* A running attempt, so it can be canceled (and, in a cluster, beaten). */
struct act {
	int64_t id;
	uint64_t claim; /* cluster: the claim token; 0 otherwise */
	int lost;	/* cluster: the store says it is no longer ours */
	struct keel_cancel cancel;
	struct act *next;
};

struct entry {
	uint64_t gen; /* tells a re-created job from the one deleted */
	char *name;
	struct jobref *ref;
	int paused;
	int64_t last_tick; /* s */
	int64_t next;	   /* s, KEEL_CRON_NEVER = none */
	int pending;	   /* runs queued in s->pend */
	int running;	   /* attempts on the pool */
	struct act *acts;
	int64_t created_at, updated_at; /* as stored: tell a reload what
					   changed */
	int active;	   /* cluster: queued + running in the store, read
			      before a tick of a forbid or replace job */
	uint64_t seen;	   /* cluster: the reload that last saw it */
};

/* A finished attempt waiting for the loop's next group commit. */
struct done {
	struct keel_run run;
	struct keel_run next;
	int has_next;
	uint64_t gen; /* of its job's entry */
	struct done *link;
};

/* A result the store refused, kept until it takes it. */
struct unsaved {
	struct keel_run run;
	struct keel_run next;
	int has_next;
	struct unsaved *link;
};

struct keel_sched {
	struct keel_sched_config cfg;
	char node[128];
	struct keel_logger *log;

	pthread_mutex_t mu;
	pthread_cond_t wake; /* the loop waits here (monotonic) */
	pthread_cond_t idle; /* broadcast when a run ends */

	struct entry **jobs;
	size_t njobs, capjobs;

	uint64_t gen;
	struct keel_run *pend; /* queued runs, by (not_before, id) */
	size_t npend, cappend;

	struct unsaved *unsaved;
	size_t nunsaved;
	char *spool; /* cfg.spool, copied */

	/* Finished attempts, oldest first, committed together by the loop. */
	struct done *done, **done_tail;
	size_t inflight; /* attempts dispatched, not yet committed */

	struct keel_pool *pool;
	struct keel_pipeline *store_pl;
	pthread_t loop;
	int started, stopping, quit, loop_running;
	uint64_t passes;    /* loop passes, for keel_sched_idle_wait */
	int64_t last_prune; /* monotonic ns */
	int64_t last_unsaved;

	struct keel_sched_stats st;

	/* cluster mode (cfg.cluster); times are monotonic ns unless named */
	char **tags;
	size_t n_tags;
	int leader;	      /* ticks and rescues while set (atomic) */
	int64_t term;	      /* the lease's term when we hold it (atomic) */
	int64_t lead_until;   /* our lease's end on our own clock (atomic) */
	int64_t last_duty;    /* the loop's cluster duties */
	int64_t store_ok_since; /* since when beats succeed after an
				   outage (or the start); 0 = never
				   (atomic) */
	int64_t store_failing_since; /* the first failed beat of the
					current failure; 0 = none (atomic,
					the beat thread writes) */
	/* the beat thread's, under bmu */
	pthread_mutex_t bmu;
	pthread_cond_t bwake;
	pthread_t beat;
	int beat_running, beat_quit, beat_now;
	struct held {
		int64_t id;
		uint64_t claim;
	} *held;	      /* what this node beats */
	size_t nheld, capheld;
	int64_t *lost;	      /* ids the store says are no longer ours */
	size_t nlost;
	int64_t next_claim;
	int claim_now;	      /* claim at the next pass (new runs, a full
				 claim) */
	int recovered;	      /* our own runs of a previous life recovered */
	int identified;	      /* no other live process is this node (the
				 beat thread's) */
	uint64_t reloads;
	int64_t skew;	      /* ms: store clock - wall clock (atomic) */
	struct keel_sched_cluster ci; /* keel_sched_cluster_info; under bmu */

	/* metrics (NULL without a registry) */
	struct keel_family *m_runs, *m_dur, *m_queue, *m_running,
		*m_panics, *m_store_err, *m_breaker, *m_leader, *m_rescued;
	int collecting, pool_bridged;
};

/* ---- small helpers ------------------------------------------------------ */

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * MS_PER_S + ts.tv_nsec / NS_PER_MS;
}

/* The clock runs are stamped with: the store's in a cluster (estimated at
 * each beat), this host's otherwise (skew 0). */
static int64_t now_ms(struct keel_sched *s)
{
	return wall_ms() + __atomic_load_n(&s->skew, __ATOMIC_RELAXED);
}

static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
	KEEL_PRINTF(3, 4);
static void fmt_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Leadership, shared by the beat thread (which decides it) and the loop
 * (which ticks and rescues under it): atomics. */
static int is_leader(struct keel_sched *s)
{
	return __atomic_load_n(&s->leader, __ATOMIC_ACQUIRE);
}

static int64_t lead_until(struct keel_sched *s)
{
	return __atomic_load_n(&s->lead_until, __ATOMIC_ACQUIRE);
}

static int64_t cur_term(struct keel_sched *s)
{
	return __atomic_load_n(&s->term, __ATOMIC_ACQUIRE);
}

static void set_leader(struct keel_sched *s, int leader)
{
	if (!leader)
		__atomic_store_n(&s->lead_until, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&s->leader, leader, __ATOMIC_RELEASE);
	if (s->m_leader != NULL)
		keel_gauge_set(keel_gauge_with(s->m_leader), leader);
}

/* The loop found the term refused (ticks, rescue): another node leads. */
static void step_down(struct keel_sched *s, const char *what)
{
	keel_log_warn(s->log, MOD, what, KEEL_INT("term", cur_term(s)));
	set_leader(s, 0);
}

/* ---- the runs this node holds (cluster) --------------------------------- */

/* A run held from its claim until its result is stored (or refused):
 * what the beat thread beats. Under s->bmu. */
static void held_add(struct keel_sched *s, int64_t id, uint64_t claim)
{
	if (claim == 0)
		return;
	pthread_mutex_lock(&s->bmu);
	if (s->nheld == s->capheld) {
		size_t cap = s->capheld ? s->capheld * 2 : 64;
		struct held *p = realloc(s->held, cap * sizeof(*p));

		if (p == NULL) { /* unbeaten: rescued, at worst retried */
			pthread_mutex_unlock(&s->bmu);
			return;
		}
		s->held = p;
		s->capheld = cap;
	}
	s->held[s->nheld].id = id;
	s->held[s->nheld++].claim = claim;
	pthread_mutex_unlock(&s->bmu);
}

static void held_remove(struct keel_sched *s, int64_t id)
{
	pthread_mutex_lock(&s->bmu);
	for (size_t i = 0; i < s->nheld; i++) {
		if (s->held[i].id == id) {
			s->held[i] = s->held[--s->nheld];
			break;
		}
	}
	pthread_mutex_unlock(&s->bmu);
}

static char *xstrdup(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static void jobref_put(struct jobref *r)
{
	if (r == NULL || --r->refs > 0)
		return;
	keel_job_free(r->job);
	keel_cron_free(r->cron);
	keel_tz_free(r->tz);
	free(r);
}

/* A private copy of j (through JSON: a job is plain data with one writer
 * and one reader format) with its schedule and zone loaded. */
static int jobref_new(const struct keel_job *j, struct jobref **out, char *err,
		      size_t errlen)
{
	struct jobref *r = calloc(1, sizeof(*r));
	json_t *v;
	char cerr[KEEL_CRON_ERR_MAX];
	int rc;

	if (r == NULL)
		return -ENOMEM;
	r->refs = 1;
	v = keel_job_to_json(j);
	if (v == NULL) {
		free(r);
		return -ENOMEM;
	}
	rc = keel_job_from_json(v, &r->job, err, errlen);
	json_decref(v);
	if (rc == 0)
		rc = keel_cron_parse(r->job->schedule, &r->cron, cerr,
				     sizeof(cerr));
	if (rc == 0 && strcmp(r->job->timezone, "UTC") != 0)
		rc = keel_tz_load(r->job->timezone, &r->tz);
	if (rc != 0) {
		fmt_err(err, errlen, "job '%s': cannot load its schedule",
			j->name);
		jobref_put(r);
		return rc;
	}
	*out = r;
	return 0;
}

static const struct keel_tz *jobref_tz(const struct jobref *r)
{
	return r->tz != NULL ? r->tz : keel_tz_utc();
}

static struct entry *find(struct keel_sched *s, const char *name)
{
	for (size_t i = 0; i < s->njobs; i++)
		if (strcmp(s->jobs[i]->name, name) == 0)
			return s->jobs[i];
	return NULL;
}

static int64_t entry_next(const struct entry *e)
{
	const struct keel_job *j = e->ref->job;

	if (e->paused || !j->enabled)
		return KEEL_CRON_NEVER;
	return keel_cron_next(e->ref->cron, jobref_tz(e->ref), e->last_tick);
}

static void entry_free(struct entry *e)
{
	if (e == NULL)
		return;
	jobref_put(e->ref);
	free(e->name);
	free(e);
}

static int jobs_add(struct keel_sched *s, struct entry *e)
{
	e->gen = ++s->gen;
	if (s->njobs == s->capjobs) {
		size_t cap = s->capjobs ? s->capjobs * 2 : 64;
		struct entry **p = realloc(s->jobs, cap * sizeof(*p));

		if (p == NULL)
			return -ENOMEM;
		s->jobs = p;
		s->capjobs = cap;
	}
	s->jobs[s->njobs++] = e;
	return 0;
}

/* A new entry for the stored job sj, added to s->jobs. */
static int entry_add(struct keel_sched *s, const struct keel_store_job *sj,
		     struct entry **out, char *err, size_t errlen)
{
	struct entry *e = calloc(1, sizeof(*e));
	int rc;

	if (e == NULL)
		return -ENOMEM;
	e->name = strdup(sj->job->name);
	rc = e->name == NULL ? -ENOMEM : jobref_new(sj->job, &e->ref, err, errlen);
	if (rc == 0) {
		e->paused = sj->paused;
		e->last_tick = sj->last_tick;
		e->created_at = sj->created_at;
		e->updated_at = sj->updated_at;
		e->next = entry_next(e);
		rc = jobs_add(s, e);
	}
	if (rc != 0) {
		entry_free(e);
		return rc;
	}
	if (out != NULL)
		*out = e;
	return 0;
}

/* ---- the store, through retry and breaker ------------------------------- */

struct st_call {
	int (*fn)(struct keel_store *st, void *a);
	struct keel_store *st;
	void *a;
};

static int st_op(struct keel_exec *x, void *arg)
{
	struct st_call *c = arg;

	(void)x;
	return c->fn(c->st, c->a);
}

/* Busy and failing databases are worth another try and count against the
 * breaker; the other answers (no such job, stale run) are the store doing
 * its job. */
static int st_transient(const struct keel_outcome *o, void *ud)
{
	(void)ud;
	return o->code == -EBUSY || o->code == -EIO || o->code == -ENOMEM ||
	       o->panicked;
}

static int store_do(struct keel_sched *s, int (*fn)(struct keel_store *, void *),
		    void *a)
{
	struct st_call c = { fn, s->cfg.store, a };
	struct keel_outcome out;
	int rc;

	rc = keel_pipeline_execute(s->store_pl, st_op, &c, NULL, &out);
	if (rc != 0 && st_transient(&out, NULL)) {
		__atomic_add_fetch(&s->st.store_errors, 1, __ATOMIC_RELAXED);
		if (s->m_store_err != NULL)
			keel_counter_inc(keel_counter_with(s->m_store_err));
	}
	if (rc == KEEL_EBREAKER_OPEN)
		return -EAGAIN;
	return rc;
}

static int store_pipeline_new(struct keel_sched *s)
{
	struct keel_retry_config rc;
	struct keel_breaker_config bc;
	struct keel_pipeline_config pc;
	struct keel_policy *retry = NULL, *br = NULL;
	int err;

	keel_retry_config_init(&rc);
	rc.name = "keeld.store.retry";
	rc.max_attempts = 4;
	rc.backoff.initial = 20 * NS_PER_MS;
	rc.backoff.max = 500 * NS_PER_MS;
	rc.retry_if = st_transient;
	keel_breaker_config_init(&bc);
	bc.name = "keeld.store";
	bc.classify = st_transient;
	bc.consecutive_failures = 3;
	bc.failure_rate_threshold = 0;
	bc.open_duration = KEEL_SEC;
	err = keel_retry_new(&rc, &retry);
	if (err == 0)
		err = keel_breaker_new(&bc, &br);
	if (err == 0) {
		keel_pipeline_config_init(&pc);
		pc.name = "keeld.store";
		pc.owns_policies = 1;
		pc.keep_order = 1; /* the breaker counts each failed try */
		keel_pipeline_config_add(&pc, retry);
		keel_pipeline_config_add(&pc, br);
		err = keel_pipeline_new(&pc, &s->store_pl);
	}
	if (err != 0) {
		keel_policy_free(retry);
		keel_policy_free(br);
	}
	return err;
}

static void event(struct keel_sched *s, const char *level, const char *kind,
		  const char *job, int64_t run_id, const char *fmt, ...)
	KEEL_PRINTF(6, 7);
static void event(struct keel_sched *s, const char *level, const char *kind,
		  const char *job, int64_t run_id, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Events are a courtesy: a store that cannot take one is already
	 * being reported by the call that failed. */
	(void)keel_store_event_add(s->cfg.store, now_ms(s), level, kind, job,
				   run_id, msg);
}

/* ---- retries ------------------------------------------------------------ */

/* Fills *next with attempt + 1 of r when j allows it. */
static int retry_next(const struct keel_job *j, const struct keel_run *r,
		      int64_t at_ms, struct keel_run *next)
{
	struct keel_backoff b;
	int64_t delay;

	if (r->state != KEEL_RUN_FAILED && r->state != KEEL_RUN_TIMED_OUT &&
	    r->state != KEEL_RUN_CRASHED)
		return 0;
	if (r->attempt >= j->retry.max_attempts)
		return 0;
	keel_backoff_init(&b);
	b.kind = j->retry.backoff;
	b.initial = j->retry.initial;
	b.max = j->retry.max;
	b.jitter = j->retry.jitter ? KEEL_JITTER_FULL : KEEL_JITTER_NONE;
	delay = keel_backoff_delay(&b, r->attempt, 0, NULL);
	memset(next, 0, sizeof(*next));
	next->job = strdup(r->job);
	if (next->job == NULL)
		return 0;
	next->state = KEEL_RUN_QUEUED;
	next->trigger = KEEL_RUN_RETRY;
	next->attempt = r->attempt + 1;
	next->scheduled_at = r->scheduled_at;
	next->created_at = at_ms;
	next->not_before = at_ms + delay / NS_PER_MS;
	next->exit_code = -1;
	memcpy(next->trace_id, r->trace_id, sizeof(next->trace_id));
	return 1;
}

/* ---- the pending queue -------------------------------------------------- */

static int pend_before(const struct keel_run *a, const struct keel_run *b)
{
	if (a->not_before != b->not_before)
		return a->not_before < b->not_before;
	return a->id < b->id;
}

/* Takes ownership of r's strings (r is left zeroed). */
static int pend_add(struct keel_sched *s, struct keel_run *r)
{
	struct entry *e;
	size_t i;

	if (s->npend == s->cappend) {
		size_t cap = s->cappend ? s->cappend * 2 : 256;
		struct keel_run *p = realloc(s->pend, cap * sizeof(*p));

		if (p == NULL)
			return -ENOMEM;
		s->pend = p;
		s->cappend = cap;
	}
	i = s->npend;
	while (i > 0 && pend_before(r, &s->pend[i - 1]))
		i--;
	memmove(&s->pend[i + 1], &s->pend[i],
		(s->npend - i) * sizeof(*s->pend));
	s->pend[i] = *r;
	memset(r, 0, sizeof(*r));
	s->npend++;
	e = find(s, s->pend[i].job);
	if (e != NULL)
		e->pending++;
	return 0;
}

static void pend_remove(struct keel_sched *s, size_t i, struct keel_run *out)
{
	struct entry *e = find(s, s->pend[i].job);

	if (e != NULL)
		e->pending--;
	if (out != NULL)
		*out = s->pend[i];
	else
		keel_run_clear(&s->pend[i]);
	memmove(&s->pend[i], &s->pend[i + 1],
		(s->npend - i - 1) * sizeof(*s->pend));
	s->npend--;
}

static void gauges(struct keel_sched *s)
{
	uint64_t running = s->inflight;

	s->st.queued = s->npend;
	s->st.running = running;
	s->st.jobs = s->njobs;
	if (s->m_queue != NULL)
		keel_gauge_set(keel_gauge_with(s->m_queue), (double)s->npend);
	if (s->m_running != NULL)
		keel_gauge_set(keel_gauge_with(s->m_running), (double)running);
}

/* ---- running one attempt ------------------------------------------------ */

struct work {
	struct keel_sched *s;
	uint64_t gen; /* of the job's entry */
	struct keel_run run;
	struct jobref *ref;
	struct act *act;
};

static void act_unlink(struct entry *e, struct act *a)
{
	for (struct act **p = &e->acts; *p != NULL; p = &(*p)->next) {
		if (*p == a) {
			*p = a->next;
			return;
		}
	}
}

static void trace_from_run(const struct keel_run *r, struct keel_trace *t)
{
	char tp[56];

	memset(t, 0, sizeof(*t));
	if (strlen(r->trace_id) != 32) {
		keel_trace_new(t);
		return;
	}
	/* A fresh span under the run's trace: each attempt is a span. */
	snprintf(tp, sizeof(tp), "00-%s-0000000000000001-01", r->trace_id);
	if (keel_traceparent_parse(tp, strlen(tp), t) != 0) {
		keel_trace_new(t);
		return;
	}
	{
		struct keel_trace parent = *t;

		keel_trace_child(&parent, t);
	}
}

static void count_finish(struct keel_sched *s, const struct keel_run *r)
{
	const char *lv[2] = { r->job, keel_run_state_name(r->state) };
	struct keel_counter *c;
	struct keel_histogram *h;

	if (s->m_runs != NULL) {
		if (keel_counter_get(s->m_runs, lv, 2, &c) == 0)
			keel_counter_inc(c);
	}
	if (s->m_dur != NULL && r->started_at > 0 &&
	    keel_histogram_get(s->m_dur, lv, 1, &h) == 0)
		keel_histogram_observe(
			h, (double)(r->finished_at - r->started_at) / 1e3);
}

struct finish_args {
	const struct keel_run *run;
	struct keel_run *next;
};

static int st_finish(struct keel_store *st, void *a)
{
	struct finish_args *f = a;

	return keel_store_run_finish(st, f->run, f->next);
}

/* Keeps a result the store refused; the loop writes it later. Takes the
 * strings of run and next. */
static void keep_unsaved(struct keel_sched *s, struct keel_run *run,
			 struct keel_run *next, int has_next)
{
	struct unsaved *u = calloc(1, sizeof(*u));

	if (u == NULL) {
		keel_log_error(s->log, MOD,
			       "out of memory: a run's result is lost; it "
			       "will be marked crashed at the next start",
			       KEEL_STR("job", run->job), KEEL_INT("run_id", run->id));
		keel_run_clear(run);
		if (has_next)
			keel_run_clear(next);
		return;
	}
	u->run = *run;
	memset(run, 0, sizeof(*run));
	if (has_next) {
		u->next = *next;
		memset(next, 0, sizeof(*next));
		u->has_next = 1;
	}
	u->link = s->unsaved;
	s->unsaved = u;
	__atomic_add_fetch(&s->nunsaved, 1, __ATOMIC_RELEASE);
	s->st.unsaved = s->nunsaved;
}

/* Under s->mu: the spool file holds s->unsaved as it is now. */
static void spool_sync(struct keel_sched *s)
{
	struct keel__spooled *items;
	size_t n = 0;
	char err[512];
	int rc;

	if (s->spool == NULL)
		return;
	items = calloc(s->nunsaved ? s->nunsaved : 1, sizeof(*items));
	if (items == NULL) {
		keel_log_error(s->log, MOD, "out of memory: the spool is not "
					    "updated");
		return;
	}
	/* Shallow copies: the spool only reads them. */
	for (struct unsaved *u = s->unsaved; u != NULL && n < s->nunsaved;
	     u = u->link, n++) {
		items[n].run = u->run;
		items[n].next = u->next;
		items[n].has_next = u->has_next;
	}
	rc = keel__spool_save(s->spool, items, n, err, sizeof(err));
	free(items);
	if (rc != 0)
		keel_log_error(s->log, MOD,
			       "cannot write the result spool; the results are "
			       "kept in memory only",
			       KEEL_STR("error", err));
}

static void fill_result(struct keel_run *r, struct keel_exec_result *res)
{
	r->state = res->state;
	r->exit_code = res->exit_code;
	r->signal = res->signal;
	r->http_status = res->http_status;
	free(r->error);
	r->error = res->error[0] != '\0' ? strdup(res->error) : NULL;
	free(r->output);
	r->output = res->output; /* taken */
	res->output = NULL;
	res->output_len = 0;
}

/* The entry an attempt belongs to, unless the job was deleted (and maybe
 * created again) since it was dispatched. Under s->mu. */
static struct entry *entry_of(struct keel_sched *s, const char *job,
			      uint64_t gen)
{
	struct entry *e = find(s, job);

	return e != NULL && e->gen == gen ? e : NULL;
}

static void work_free(struct work *w)
{
	keel_run_clear(&w->run);
	if (w->act != NULL)
		keel_cancel_destroy(&w->act->cancel);
	free(w->act);
	free(w);
}

/*
 * The end of an attempt, under s->mu: its result (and follow-up) goes to
 * the queue the loop commits in one transaction; the worker is free at
 * once. Takes the strings of w->run and next.
 */
static void attempt_end(struct keel_sched *s, struct work *w,
			struct keel_run *next, int has_next)
{
	struct entry *e = entry_of(s, w->run.job, w->gen);
	struct done *d = calloc(1, sizeof(*d));

	if (e != NULL && w->act != NULL)
		act_unlink(e, w->act);
	jobref_put(w->ref);
	w->ref = NULL;
	if (d == NULL) {
		/* The store still says running: the next start marks it
		 * crashed and retries it per policy. */
		keel_log_error(s->log, MOD,
			       "out of memory: a run's result is lost",
			       KEEL_STR("job", w->run.job),
			       KEEL_INT("run_id", w->run.id));
		if (e != NULL)
			e->running--;
		s->inflight--;
		if (has_next)
			keel_run_clear(next);
	} else {
		d->run = w->run;
		memset(&w->run, 0, sizeof(w->run));
		if (has_next) {
			d->next = *next;
			memset(next, 0, sizeof(*next));
			d->has_next = 1;
		}
		d->gen = w->gen;
		*s->done_tail = d;
		s->done_tail = &d->link;
	}
	pthread_cond_signal(&s->wake);
}

static void run_task(struct keel_task *t, void *arg)
{
	struct work *w = arg;
	struct keel_sched *s = w->s;
	struct keel_run *r = &w->run;
	struct keel_exec_req req;
	struct keel_exec_result res;
	struct keel_trace tr, old;
	struct keel_run next;
	char tp[56];
	int has_next = 0, rc;

	(void)t;
	memset(&res, 0, sizeof(res));
	memset(&next, 0, sizeof(next));
	trace_from_run(r, &tr);
	keel_trace_set(&tr, &old);
	keel_log_info(s->log, MOD, "run started", KEEL_STR("job", r->job),
		      KEEL_INT("run_id", r->id), KEEL_INT("attempt", r->attempt),
		      KEEL_STR("trigger", keel_run_trigger_name(r->trigger)));

	keel_traceparent_format(&tr, tp);
	req.run_id = r->id;
	req.attempt = r->attempt;
	req.scheduled_at = r->scheduled_at;
	req.cancel = &w->act->cancel;
	req.traceparent = tp;
	rc = keel_exec_run(s->cfg.exec, w->ref->job, &req, &res);
	if (rc != 0) {
		res.state = KEEL_RUN_FAILED;
		if (res.error[0] == '\0')
			snprintf(res.error, sizeof(res.error),
				 "could not start: %s", strerror(-rc));
	}
	if (res.panicked) {
		__atomic_add_fetch(&s->st.panics, 1, __ATOMIC_RELAXED);
		if (s->m_panics != NULL)
			keel_counter_inc(keel_counter_with(s->m_panics));
		event(s, "error", "run.panic", r->job, r->id, "%s", res.error);
	}
	r->finished_at = now_ms(s);
	if (r->finished_at < r->started_at)
		r->finished_at = r->started_at;
	fill_result(r, &res);
	keel_exec_result_clear(&res);
	/* A canceled run is not retried: someone wanted it stopped. */
	has_next = retry_next(w->ref->job, r, r->finished_at, &next);

	if (r->state == KEEL_RUN_SUCCEEDED)
		keel_log_info(s->log, MOD, "run finished", KEEL_STR("job", r->job),
			      KEEL_INT("run_id", r->id),
			      KEEL_STR("state", keel_run_state_name(r->state)),
			      KEEL_INT("duration_ms", r->finished_at - r->started_at));
	else if (r->exit_code >= 0 || r->signal > 0) /* a process */
		keel_log_warn(s->log, MOD, "run finished", KEEL_STR("job", r->job),
			      KEEL_INT("run_id", r->id),
			      KEEL_STR("state", keel_run_state_name(r->state)),
			      KEEL_INT("duration_ms", r->finished_at - r->started_at),
			      KEEL_INT("exit_code", r->exit_code),
			      KEEL_INT("signal", r->signal),
			      KEEL_STR("error", r->error != NULL ? r->error : ""),
			      KEEL_BOOL("retry", has_next));
	else
		keel_log_warn(s->log, MOD, "run finished", KEEL_STR("job", r->job),
			      KEEL_INT("run_id", r->id),
			      KEEL_STR("state", keel_run_state_name(r->state)),
			      KEEL_INT("duration_ms", r->finished_at - r->started_at),
			      KEEL_STR("error", r->error != NULL ? r->error : ""),
			      KEEL_BOOL("retry", has_next));
	keel_trace_set(&old, NULL);

	pthread_mutex_lock(&s->mu);
	attempt_end(s, w, &next, has_next);
	pthread_mutex_unlock(&s->mu);
	keel_run_clear(&next);
	work_free(w);
}

/* A started run dropped unrun by a cancelling pool shutdown: it ends
 * canceled, like the runs the shutdown stopped. */
static void run_dropped(void *arg)
{
	struct work *w = arg;
	struct keel_sched *s = w->s;

	w->run.state = KEEL_RUN_CANCELED;
	w->run.finished_at = now_ms(s);
	free(w->run.error);
	w->run.error = strdup("canceled: keeld stopped before the run began");
	pthread_mutex_lock(&s->mu);
	attempt_end(s, w, NULL, 0);
	pthread_mutex_unlock(&s->mu);
	work_free(w);
}

struct finish_batch {
	struct keel_store_finish *items;
	int *rcs;
	size_t n;
};

static int st_finish_batch(struct keel_store *st, void *a)
{
	struct finish_batch *b = a;

	return keel_store_runs_finish(st, b->items, b->n, b->rcs);
}

/*
 * Under s->mu (released during the transaction): commits every finished
 * attempt in one transaction, then lets memory catch up: the job's slot is
 * free, the retry is queued.
 */
static void flush_done(struct keel_sched *s)
{
	struct done *list = s->done, *d;
	struct finish_batch b;
	size_t n = 0, i, kept = 0;
	int rc;

	if (list == NULL)
		return;
	s->done = NULL;
	s->done_tail = &s->done;
	for (d = list; d != NULL; d = d->link)
		n++;
	b.items = calloc(n, sizeof(*b.items));
	b.rcs = calloc(n, sizeof(*b.rcs));
	b.n = n;
	if (b.items == NULL || b.rcs == NULL) {
		rc = -ENOMEM;
	} else {
		for (d = list, i = 0; d != NULL; d = d->link, i++) {
			b.items[i].run = &d->run;
			b.items[i].next = d->has_next ? &d->next : NULL;
		}
		pthread_mutex_unlock(&s->mu);
		rc = store_do(s, st_finish_batch, &b);
		pthread_mutex_lock(&s->mu);
	}
	for (d = list, i = 0; d != NULL; i++) {
		struct done *link = d->link;
		struct entry *e = entry_of(s, d->run.job, d->gen);
		int item = rc != 0 ? rc : b.rcs[i];

		if (e != NULL)
			e->running--;
		s->inflight--;
		s->st.finished++;
		if (item == 0 || item == -ESTALE || item == -ENOENT)
			held_remove(s, d->run.id); /* the store has its end */
		if (item == 0) {
			count_finish(s, &d->run);
			/* In a cluster the retry waits in the store, for any
			 * node to claim. */
			if (d->has_next && e != NULL && !s->cfg.cluster &&
			    pend_add(s, &d->next) != 0)
				keel_log_error(s->log, MOD,
					       "out of memory: a retry waits "
					       "for the restart",
					       KEEL_STR("job", d->run.job));
		} else if (item != -ESTALE && item != -ENOENT) {
			keel_log_error(s->log, MOD,
				       "cannot store the run's result; kept "
				       "in memory",
				       KEEL_STR("job", d->run.job),
				       KEEL_INT("run_id", d->run.id),
				       KEEL_INT("code", item));
			count_finish(s, &d->run);
			keep_unsaved(s, &d->run, &d->next, d->has_next);
			kept++;
		}
		keel_run_clear(&d->run);
		keel_run_clear(&d->next);
		free(d);
		d = link;
	}
	free(b.items);
	free(b.rcs);
	if (kept > 0)
		spool_sync(s);
	gauges(s);
	pthread_cond_broadcast(&s->idle);
}

struct start_batch {
	const int64_t *ids;
	int *rcs;
	size_t n;
	int64_t at;
	const char *node;
};

static int st_start_batch(struct keel_store *st, void *a)
{
	struct start_batch *b = a;

	return keel_store_runs_start(st, b->ids, b->n, b->at, b->node, b->rcs);
}

/* A work item for a run of e; its run is the caller's to fill, then
 * work_book counts it. NULL when out of memory. */
static struct work *work_new(struct keel_sched *s, struct entry *e)
{
	struct work *w = calloc(1, sizeof(*w));

	if (w != NULL)
		w->act = calloc(1, sizeof(*w->act));
	if (w == NULL || w->act == NULL) {
		free(w);
		return NULL;
	}
	w->s = s;
	w->gen = e->gen;
	w->ref = e->ref;
	keel_cancel_init(&w->act->cancel, NULL, NULL);
	return w;
}

/* Under s->mu: w's run is in flight, and cancelable from now on. */
static void work_book(struct keel_sched *s, struct entry *e, struct work *w)
{
	w->act->id = w->run.id;
	w->act->claim = w->run.claim;
	held_add(s, w->run.id, w->run.claim); /* beaten from now on */
	e->ref->refs++;
	e->running++;
	w->act->next = e->acts;
	e->acts = w->act;
	s->inflight++;
	s->st.started++;
}

/* Under s->mu: hands a started run to the pool. The pool has a free
 * worker for each (inflight <= workers); it refuses only when shutting
 * down, and the run then ends canceled. */
static void work_submit(struct keel_sched *s, struct work *w)
{
	struct keel_task_options opt;

	memset(&opt, 0, sizeof(opt));
	opt.name = w->ref->job->name;
	opt.on_drop = run_dropped;
	if (keel_pool_submit(s->pool, run_task, w, &opt) != 0) {
		w->run.state = KEEL_RUN_CANCELED;
		w->run.finished_at = now_ms(s);
		free(w->run.error);
		w->run.error = strdup("canceled: keeld stopped before the run "
				      "began");
		attempt_end(s, w, NULL, 0);
		work_free(w);
	}
}

/* Undoes dispatch's bookkeeping for w (under s->mu) and frees it; the run
 * goes back to the queue when requeue_at > 0. */
static void undispatch(struct keel_sched *s, struct work *w, int64_t requeue_at)
{
	struct entry *e = entry_of(s, w->run.job, w->gen);

	if (e != NULL) {
		e->running--;
		act_unlink(e, w->act);
	}
	s->inflight--;
	s->st.started--;
	jobref_put(w->ref);
	if (requeue_at > 0 && e != NULL) {
		w->run.not_before = requeue_at;
		pend_add(s, &w->run);
	}
	work_free(w);
}

/*
 * Under s->mu (released during the transaction): starts the queued runs
 * that may start now, as many as there are free workers, marked running
 * in one transaction.
 */
static void dispatch(struct keel_sched *s, int64_t now)
{
	size_t i = 0, n = 0, free_slots;
	struct work **ws;
	int64_t *ids;
	int *rcs;
	struct start_batch b;
	int rc;

	if (s->stopping || s->inflight >= (size_t)s->cfg.workers)
		return;
	free_slots = (size_t)s->cfg.workers - s->inflight;
	ws = calloc(free_slots, sizeof(*ws));
	ids = calloc(free_slots, sizeof(*ids));
	rcs = calloc(free_slots, sizeof(*rcs));
	if (ws == NULL || ids == NULL || rcs == NULL)
		goto out;
	while (i < s->npend && n < free_slots) {
		struct keel_run *r = &s->pend[i];
		struct entry *e;
		struct work *w;

		if (r->not_before > now)
			break; /* sorted: nothing later is due */
		e = find(s, r->job);
		if (e == NULL) { /* deleted */
			pend_remove(s, i, NULL);
			continue;
		}
		if (e->ref->job->concurrency != KEEL_JOB_ALLOW && e->running > 0) {
			i++; /* one at a time for forbid and replace */
			continue;
		}
		w = work_new(s, e);
		if (w == NULL)
			break;
		pend_remove(s, i, &w->run);
		work_book(s, e, w);
		ids[n] = w->run.id;
		ws[n++] = w;
	}
	if (n == 0)
		goto out;
	b.ids = ids;
	b.rcs = rcs;
	b.n = n;
	b.at = now_ms(s);
	b.node = s->node;
	pthread_mutex_unlock(&s->mu);
	rc = store_do(s, st_start_batch, &b);
	pthread_mutex_lock(&s->mu);
	for (i = 0; i < n; i++) {
		struct work *w = ws[i];
		int item = rc != 0 ? rc : rcs[i];

		if (item == -ESTALE || item == -ENOENT) {
			/* Canceled or deleted while it waited. */
			undispatch(s, w, 0);
			continue;
		}
		if (item != 0) {
			/* Still queued in the store: later. */
			undispatch(s, w, now_ms(s) + s->cfg.store_retry / NS_PER_MS);
			continue;
		}
		w->run.state = KEEL_RUN_RUNNING;
		w->run.started_at = b.at;
		work_submit(s, w);
	}
	if (rc != 0)
		keel_log_error(s->log, MOD, "cannot mark runs started; retrying",
			       KEEL_INT("runs", n), KEEL_INT("code", rc));
out:
	free(ws);
	free(ids);
	free(rcs);
	gauges(s);
}

/* ---- ticking ------------------------------------------------------------ */

struct batch {
	struct keel_store_tick *ticks;
	size_t n, cap;
	struct entry **who;	/* the entry of each tick */
	int64_t *next;		/* its next fire after the batch */
	size_t *missed_dropped; /* missed ticks not recorded */
	int64_t term;		/* cluster: the leader's term (fencing) */
};

static void batch_free(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		for (size_t k = 0; k < b->ticks[i].n_runs; k++)
			keel_run_clear(&b->ticks[i].runs[k]);
		free(b->ticks[i].runs);
	}
	free(b->ticks);
	free(b->who);
	free(b->next);
	free(b->missed_dropped);
	memset(b, 0, sizeof(*b));
}

static int batch_grow(struct batch *b)
{
	size_t cap = b->cap ? b->cap * 2 : 16;
	struct keel_store_tick *t = realloc(b->ticks, cap * sizeof(*t));
	struct entry **w;
	int64_t *nx;
	size_t *md;

	if (t == NULL)
		return -ENOMEM;
	b->ticks = t;
	w = realloc(b->who, cap * sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	b->who = w;
	nx = realloc(b->next, cap * sizeof(*nx));
	if (nx == NULL)
		return -ENOMEM;
	b->next = nx;
	md = realloc(b->missed_dropped, cap * sizeof(*md));
	if (md == NULL)
		return -ENOMEM;
	b->missed_dropped = md;
	b->cap = cap;
	return 0;
}

static int new_run(struct keel_run *r, const char *job, int64_t tick_s,
		   int64_t now, enum keel_run_trigger trig,
		   enum keel_run_state state, const char *error)
{
	struct keel_trace t;

	memset(r, 0, sizeof(*r));
	r->job = strdup(job);
	r->error = xstrdup(error);
	if (r->job == NULL || (error != NULL && r->error == NULL)) {
		keel_run_clear(r);
		return -ENOMEM;
	}
	r->state = state;
	r->trigger = trig;
	r->attempt = 1;
	r->scheduled_at = tick_s * MS_PER_S;
	/* Due at its tick: runs start in the order they became due, retries
	 * (due after their backoff) among them, not after every tick. */
	r->not_before = r->scheduled_at;
	r->created_at = now;
	r->exit_code = -1;
	if (state == KEEL_RUN_SKIPPED)
		r->finished_at = now;
	keel_trace_new(&t);
	keel_trace_id_hex(&t, r->trace_id);
	return 0;
}

/*
 * The runs of one job's due ticks. Ticks later than `late` are missed and
 * follow the missed policy (the newest missed_max kept); the others follow
 * the concurrency policy.
 */
static int job_ticks(struct keel_sched *s, struct entry *e, int64_t now,
		     struct keel_store_tick *tk, int64_t *next_out,
		     size_t *dropped_out)
{
	const struct keel_job *j = e->ref->job;
	const struct keel_tz *tz = jobref_tz(e->ref);
	int64_t late_s_edge = (now - s->cfg.late / NS_PER_MS); /* ms */
	int64_t *missed, *ontime;
	size_t nmissed = 0, nontime = 0, dropped = 0, enumerated = 0;
	size_t mcap = (size_t)j->missed_max, n = 0;
	int64_t t = e->next, last = e->last_tick;
	int active = s->cfg.cluster ? e->active : e->pending + e->running;
	int rc = 0;

	missed = malloc(mcap * sizeof(*missed));
	ontime = malloc(ON_TIME_CAP * sizeof(*ontime));
	if (missed == NULL || ontime == NULL) {
		free(missed);
		free(ontime);
		return -ENOMEM;
	}
	while (t != KEEL_CRON_NEVER && t * MS_PER_S <= now) {
		if (t * MS_PER_S < late_s_edge) {
			/* The newest mcap missed ticks, in a ring. */
			if (nmissed == mcap) {
				memmove(missed, missed + 1,
					(mcap - 1) * sizeof(*missed));
				nmissed--;
				dropped++;
			}
			missed[nmissed++] = t;
		} else if (nontime < ON_TIME_CAP) {
			ontime[nontime++] = t;
		} else {
			dropped++;
		}
		last = t;
		if (++enumerated >= ENUM_CAP && t * MS_PER_S < late_s_edge) {
			/* Too far behind to walk: jump to the late edge and
			 * count what lies between as dropped (unknown). */
			int64_t jump = late_s_edge / MS_PER_S - 1;

			if (jump > t) {
				last = jump;
				dropped++;
				t = keel_cron_next(e->ref->cron, tz, jump);
				enumerated = 0;
				continue;
			}
		}
		t = keel_cron_next(e->ref->cron, tz, t);
	}
	*next_out = t;
	*dropped_out = dropped;
	tk->job = e->name;
	tk->last_tick = last;
	tk->runs = calloc(nmissed + nontime + 1, sizeof(*tk->runs));
	if (tk->runs == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nmissed && rc == 0; i++) {
		int run = j->missed == KEEL_JOB_MISSED_ALL ||
			  (j->missed == KEEL_JOB_MISSED_ONCE &&
			   i == nmissed - 1);

		rc = new_run(&tk->runs[n], e->name, missed[i], now,
			     KEEL_RUN_MISSED,
			     run ? KEEL_RUN_QUEUED : KEEL_RUN_SKIPPED,
			     run ? NULL
				 : j->missed == KEEL_JOB_MISSED_SKIP
					   ? "missed: keeld was not running at "
					     "this time (missed \"skip\")"
					   : "missed: folded into a later run "
					     "(missed \"once\")");
		if (rc == 0) {
			n++;
			active += run;
		}
	}
	for (size_t i = 0; i < nontime && rc == 0; i++) {
		enum keel_run_state st = KEEL_RUN_QUEUED;
		const char *why = NULL;

		if (j->concurrency == KEEL_JOB_FORBID && active > 0) {
			st = KEEL_RUN_SKIPPED;
			why = "skipped: the previous run is still active "
			      "(concurrency \"forbid\")";
		} else if (j->concurrency == KEEL_JOB_REPLACE &&
			   i + 1 < nontime) {
			st = KEEL_RUN_SKIPPED;
			why = "skipped: replaced by a later tick before it "
			      "started (concurrency \"replace\")";
		}
		rc = new_run(&tk->runs[n], e->name, ontime[i], now,
			     KEEL_RUN_SCHEDULE, st, why);
		if (rc == 0) {
			n++;
			active += st == KEEL_RUN_QUEUED;
		}
	}
out:
	tk->n_runs = n;
	free(missed);
	free(ontime);
	return rc;
}

static int st_ticks(struct keel_store *st, void *a)
{
	struct batch *b = a;

	if (b->term > 0)
		return keel_store_ticks_fenced(st, b->term, b->ticks, b->n);
	return keel_store_ticks(st, b->ticks, b->n);
}

static int st_active(struct keel_store *st, void *a)
{
	struct keel_run **runs = ((void **)a)[0];
	size_t *n = ((void **)a)[1];

	return keel_store_run_active(st, runs, n);
}

/* Every queued and running run of the cluster (under s->mu). */
static int active_runs(struct keel_sched *s, struct keel_run **runs, size_t *n)
{
	void *a[2] = { runs, n };

	*runs = NULL;
	*n = 0;
	return store_do(s, st_active, a);
}

/* Cluster: e's queued and running runs are wherever the store says. Each
 * becomes canceled now, with no claim check; the node running one stops
 * it at its next beat, when the store tells it the run is no longer its
 * own. Under s->mu. */
static void cancel_stored(struct keel_sched *s, struct entry *e,
			  const char *why)
{
	struct keel_run *runs;
	size_t n;

	if (active_runs(s, &runs, &n) != 0) {
		keel_log_error(s->log, MOD, "cannot cancel the job's runs",
			       KEEL_STR("job", e->name),
			       KEEL_STR("store", keel_store_errmsg(s->cfg.store)));
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct keel_run *r = &runs[i];
		struct finish_args fa = { r, NULL };

		if (strcmp(r->job, e->name) != 0)
			continue;
		r->state = KEEL_RUN_CANCELED;
		r->finished_at = now_ms(s);
		r->claim = 0;
		free(r->error);
		r->error = strdup(why);
		(void)store_do(s, st_finish, &fa);
	}
	keel_store_runs_free(runs, n);
}

/* Cancels e's queued and running runs (replace, delete). Under s->mu. */
static void cancel_active(struct keel_sched *s, struct entry *e,
			  const char *why)
{
	for (struct act *a = e->acts; a != NULL; a = a->next)
		keel_cancel_cancel(&a->cancel, -ECANCELED);
	if (s->cfg.cluster) {
		cancel_stored(s, e, why);
		return;
	}
	for (size_t i = 0; i < s->npend;) {
		struct keel_run r;
		struct finish_args fa;

		if (strcmp(s->pend[i].job, e->name) != 0) {
			i++;
			continue;
		}
		pend_remove(s, i, &r);
		r.state = KEEL_RUN_CANCELED;
		r.finished_at = now_ms(s);
		free(r.error);
		r.error = strdup(why);
		fa.run = &r;
		fa.next = NULL;
		(void)store_do(s, st_finish, &fa);
		keel_run_clear(&r);
	}
}

struct one_tick {
	struct keel_store_tick *tk;
	int64_t term;
};

static int st_tick_one(struct keel_store *st, void *a)
{
	struct one_tick *o = a;

	if (o->term > 0)
		return keel_store_ticks_fenced(st, o->term, o->tk, 1);
	return keel_store_ticks(st, o->tk, 1);
}

/*
 * The batch was refused because a tick exists: stores each job's ticks on
 * their own; ok[i] says which went in. A job whose tick exists takes its
 * last_tick from the store and moves on. 0, or the first other error.
 */
static int tick_one_by_one(struct keel_sched *s, struct batch *b, char *ok)
{
	int first = 0;

	for (size_t i = 0; i < b->n; i++) {
		struct one_tick a = { &b->ticks[i], b->term };
		struct keel_store_job sj;
		struct entry *e = b->who[i];
		int rc = store_do(s, st_tick_one, &a);

		ok[i] = rc == 0;
		if (rc == -EEXIST &&
		    keel_store_job_get(s->cfg.store, e->name, &sj) == 0) {
			keel_log_warn(s->log, MOD,
				      "tick already stored: another keeld may "
				      "be using this store",
				      KEEL_STR("job", e->name),
				      KEEL_INT("last_tick", sj.last_tick));
			if (sj.last_tick > e->last_tick) {
				e->last_tick = sj.last_tick;
				e->next = entry_next(e);
			}
			keel_store_job_clear(&sj);
		} else if (rc != 0 && first == 0) {
			first = rc;
		}
		if (rc == -ESTALE)
			break; /* no longer the leader */
	}
	return first;
}

/* Cluster, under s->mu: e->active for the due jobs that need it (forbid,
 * replace), from the store, where every node's runs are. */
static int count_active(struct keel_sched *s, int64_t now)
{
	struct keel_run *runs;
	size_t n;
	int need = 0, rc;

	for (size_t i = 0; i < s->njobs; i++) {
		struct entry *e = s->jobs[i];

		e->active = 0;
		if (e->next != KEEL_CRON_NEVER && e->next * MS_PER_S <= now &&
		    e->ref->job->concurrency != KEEL_JOB_ALLOW)
			need = 1;
	}
	if (!need)
		return 0;
	rc = active_runs(s, &runs, &n);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		struct entry *e = find(s, runs[i].job);

		if (e != NULL)
			e->active++;
	}
	keel_store_runs_free(runs, n);
	return 0;
}

/* Under s->mu: materialises every due tick in one transaction. */
static void tick_pass(struct keel_sched *s, int64_t now)
{
	struct batch b;
	char *ok = NULL;
	int rc = 0;

	memset(&b, 0, sizeof(b));
	if (s->cfg.cluster) {
		b.term = cur_term(s);
		rc = count_active(s, now);
	}
	for (size_t i = 0; i < s->njobs && rc == 0; i++) {
		struct entry *e = s->jobs[i];

		if (e->next == KEEL_CRON_NEVER || e->next * MS_PER_S > now)
			continue;
		if (b.n == b.cap && (rc = batch_grow(&b)) != 0)
			break;
		memset(&b.ticks[b.n], 0, sizeof(b.ticks[b.n]));
		b.who[b.n] = e;
		rc = job_ticks(s, e, now, &b.ticks[b.n], &b.next[b.n],
			       &b.missed_dropped[b.n]);
		b.n++;
	}
	if (rc == 0 && b.n > 0)
		rc = store_do(s, st_ticks, &b);
	if (rc == -EEXIST) {
		/* Some tick is stored already: another keeld writes to this
		 * store, or the clock went back. Job by job, so the others
		 * still tick. */
		ok = calloc(b.n, 1);
		rc = ok != NULL ? tick_one_by_one(s, &b, ok) : -ENOMEM;
	}
	if (rc == -ESTALE && s->cfg.cluster) {
		step_down(s, "ticks refused: this node's term no longer "
			     "holds the lease; stepping down");
	} else if (rc != 0 && b.n > 0) {
		keel_log_error(s->log, MOD, "cannot store due ticks; retrying",
			       KEEL_INT("code", rc),
			       KEEL_STR("store", keel_store_errmsg(s->cfg.store)));
	}
	if (rc != 0) {
		if (ok == NULL) { /* nothing went in */
			batch_free(&b);
			return;
		}
	}
	for (size_t i = 0; i < b.n; i++) {
		struct entry *e = b.who[i];
		struct keel_store_tick *tk = &b.ticks[i];

		if (ok != NULL && !ok[i])
			continue;
		size_t skipped = 0, queued = 0;
		int replaced = 0;

		e->last_tick = tk->last_tick;
		e->next = b.next[i];
		for (size_t k = 0; k < tk->n_runs; k++) {
			struct keel_run *r = &tk->runs[k];

			if (r->state == KEEL_RUN_SKIPPED) {
				skipped++;
				count_finish(s, r);
				continue;
			}
			if (!replaced &&
			    e->ref->job->concurrency == KEEL_JOB_REPLACE &&
			    (s->cfg.cluster ? e->active
					    : e->pending + e->running) > 0) {
				cancel_active(s, e,
					      "canceled: replaced by a newer "
					      "tick (concurrency \"replace\")");
				replaced = 1;
			}
			queued++;
			/* In a cluster the store has it, for whichever node
			 * polls first: the leader has no head start. */
			if (s->cfg.cluster)
				continue;
			if (pend_add(s, r) != 0)
				keel_log_error(s->log, MOD,
					       "out of memory: a queued run "
					       "waits for the restart",
					       KEEL_STR("job", e->name));
		}
		if (b.missed_dropped[i] > 0 ||
		    (tk->n_runs > 0 && tk->runs[0].trigger == KEEL_RUN_MISSED)) {
			event(s, "warn", "ticks.missed", e->name, 0,
			      "%zu ticks missed (%zu not recorded beyond "
			      "missed_max), policy \"%s\"",
			      skipped + queued + b.missed_dropped[i],
			      b.missed_dropped[i],
			      e->ref->job->missed == KEEL_JOB_MISSED_SKIP ? "skip"
			      : e->ref->job->missed == KEEL_JOB_MISSED_ONCE
				      ? "once"
				      : "all");
		}
	}
	batch_free(&b);
	free(ok);
}

/* ---- results the store refused, history --------------------------------- */

static void flush_unsaved(struct keel_sched *s)
{
	struct unsaved **p = &s->unsaved;
	size_t before = s->nunsaved;

	while (*p != NULL) {
		struct unsaved *u = *p;
		struct finish_args fa = { &u->run, u->has_next ? &u->next : NULL };
		int rc = store_do(s, st_finish, &fa);

		if (rc != 0 && rc != -ESTALE && rc != -ENOENT) {
			p = &u->link;
			if (rc == -EAGAIN)
				break; /* breaker open: later */
			continue;
		}
		*p = u->link;
		__atomic_sub_fetch(&s->nunsaved, 1, __ATOMIC_RELEASE);
		held_remove(s, u->run.id);
		if (rc == 0 && u->has_next && !s->cfg.cluster &&
		    find(s, u->next.job) != NULL)
			pend_add(s, &u->next);
		keel_run_clear(&u->run);
		keel_run_clear(&u->next);
		free(u);
	}
	s->st.unsaved = s->nunsaved;
	if (s->nunsaved != before)
		spool_sync(s);
}

static void prune(struct keel_sched *s, int64_t now)
{
	if (s->cfg.cluster) {
		struct keel_store_node *nodes = NULL;
		size_t n = 0;

		/* Nodes silent for a day are gone for good. */
		if (keel_store_node_list(s->cfg.store, 86400 * MS_PER_S, &nodes,
					 &n) == 0)
			keel_store_nodes_free(nodes, n);
	}
	for (size_t i = 0; i < s->njobs; i++) {
		const struct keel_job *j = s->jobs[i]->ref->job;
		int64_t before = now - (int64_t)j->history.keep_days * 86400 *
					       MS_PER_S;
		size_t n = 0;

		if (keel_store_prune(s->cfg.store, j->name, j->history.keep_runs,
				     before, &n) == 0 && n > 0)
			keel_log_debug(s->log, MOD, "history pruned",
				       KEEL_STR("job", j->name),
				       KEEL_UINT("runs", n));
	}
}

/* ---- recovery ----------------------------------------------------------- */

struct recover_ctx {
	struct keel_sched *s;
	const char *why; /* logged for each run */
};

/* The follow-up of a run found crashed (under s->mu). */
static int recover_decide(const struct keel_run *crashed,
			  struct keel_run *next, void *ud)
{
	struct recover_ctx *rc = ud;
	struct entry *e = find(rc->s, crashed->job);

	keel_log_warn(rc->s->log, MOD, rc->why, KEEL_STR("job", crashed->job),
		      KEEL_INT("run_id", crashed->id),
		      KEEL_INT("attempt", crashed->attempt),
		      KEEL_STR("node", crashed->node != NULL ? crashed->node : ""));
	if (e == NULL)
		return 0;
	return retry_next(e->ref->job, crashed, now_ms(rc->s), next);
}

/* ---- cluster: beats, leadership, job reload, claims ---------------------- */

/* Under s->mu: forgets e (its job was deleted): its attempts here are
 * stopped and find no entry when they end (the store deleted its runs). */
static void entry_remove(struct keel_sched *s, struct entry *e)
{
	for (struct act *a = e->acts; a != NULL; a = a->next)
		keel_cancel_cancel(&a->cancel, -ECANCELED);
	for (size_t i = 0; i < s->njobs; i++) {
		if (s->jobs[i] == e) {
			s->jobs[i] = s->jobs[--s->njobs];
			break;
		}
	}
	entry_free(e);
}

struct list_args {
	struct keel_store_job *jobs;
	size_t n;
};

static int st_job_list(struct keel_store *st, void *a)
{
	struct list_args *l = a;

	return keel_store_job_list(st, &l->jobs, &l->n);
}

/*
 * Cluster, under s->mu: memory catches up with the store, where other
 * nodes create, change, pause and delete jobs, and where another leader
 * moved last_tick on. A job deleted and made again (another created_at)
 * is a new entry. Only what changed is loaded again.
 */
static int jobs_sync(struct keel_sched *s)
{
	struct list_args l = { NULL, 0 };
	uint64_t mark = ++s->reloads;
	char err[256];
	int rc;

	rc = store_do(s, st_job_list, &l);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < l.n; i++) {
		const struct keel_store_job *sj = &l.jobs[i];
		struct entry *e = find(s, sj->job->name);

		if (e != NULL && e->created_at != sj->created_at) {
			entry_remove(s, e);
			e = NULL;
		}
		if (e == NULL) {
			err[0] = '\0';
			if (entry_add(s, sj, &e, err, sizeof(err)) != 0) {
				keel_log_error(s->log, MOD,
					       "cannot load a job another node "
					       "stored",
					       KEEL_STR("job", sj->job->name),
					       KEEL_STR("error", err));
				continue;
			}
		} else if (e->updated_at != sj->updated_at) {
			struct jobref *ref;

			if (!keel_job_equal(e->ref->job, sj->job) &&
			    jobref_new(sj->job, &ref, err, sizeof(err)) == 0) {
				jobref_put(e->ref);
				e->ref = ref;
			}
			e->paused = sj->paused;
			e->updated_at = sj->updated_at;
		}
		if (sj->last_tick > e->last_tick)
			e->last_tick = sj->last_tick;
		e->next = entry_next(e);
		e->seen = mark;
	}
	for (size_t i = 0; i < s->njobs;) {
		if (s->jobs[i]->seen != mark)
			entry_remove(s, s->jobs[i]);
		else
			i++;
	}
	keel_store_jobs_free(l.jobs, l.n);
	return 0;
}

/* ---- the beat thread (cluster) ------------------------------------------ */

/* Under s->bmu: the lease as the store answered (rc == 0) or not. t0 is
 * when the call began: our lease lasts ttl from then on our own clock,
 * never longer than the store's. */
static void lease_seen(struct keel_sched *s, int rc,
		       const struct keel_store_lease *l, int64_t t0)
{
	if (rc != 0) {
		if (is_leader(s))
			keel_log_error(s->log, MOD,
				       "cannot renew the lease: stepping down",
				       KEEL_INT("term", cur_term(s)),
				       KEEL_STR("store",
						keel_store_errmsg(s->cfg.store)));
		set_leader(s, 0);
		s->ci.holder[0] = '\0';
		return;
	}
	snprintf(s->ci.holder, sizeof(s->ci.holder), "%s", l->holder);
	s->ci.term = l->term;
	s->ci.expires_at = l->expires_at;
	if (strcmp(l->holder, s->node) == 0) {
		if (!is_leader(s) || cur_term(s) != l->term) {
			keel_log_info(s->log, MOD, "this node leads",
				      KEEL_INT("term", l->term));
			event(s, "info", "leader.elected", NULL, 0,
			      "%s leads, term %lld", s->node,
			      (long long)l->term);
			s->ci.elected++;
		}
		__atomic_store_n(&s->term, l->term, __ATOMIC_RELEASE);
		__atomic_store_n(&s->lead_until, t0 + s->cfg.lease_ttl,
				 __ATOMIC_RELEASE);
		set_leader(s, 1);
	} else {
		if (is_leader(s))
			keel_log_warn(s->log, MOD, "no longer the leader",
				      KEEL_STR("leader", l->holder),
				      KEEL_INT("term", l->term));
		set_leader(s, 0);
	}
}

/* The moment in ns from now on the monotonic clock, for the waits on
 * s->bwake (a CLOCK_MONOTONIC condition variable). */
static struct timespec bwake_at(int64_t in)
{
	int64_t at = keel_clock_now(NULL) + in;

	return (struct timespec){ (time_t)(at / KEEL_SEC),
				  (long)(at % KEEL_SEC) };
}

/* The last heartbeat of node's row in the store: 0 and *at (-1: no row),
 * or the store's error. */
static int node_last_beat(struct keel_sched *s, int64_t *at)
{
	struct keel_store_node *nodes = NULL;
	size_t n = 0;
	int rc = keel_store_node_list(s->cfg.store, 0, &nodes, &n);

	*at = -1;
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		if (strcmp(nodes[i].id, s->node) == 0)
			*at = nodes[i].last_heartbeat;
	keel_store_nodes_free(nodes, n);
	return 0;
}

/* Room for the difference between this host's clock and the store's when
 * a row's age is judged before the first beat has measured it. */
#define IDENTITY_SKEW_MS 5000

/*
 * Before this node's first beat, on the beat thread: is another live
 * process beating as this node? A second keeld given a live node's
 * --node-id would take over its row and, at its first good beat, recover
 * that node's running runs as crashed, and they would run twice. So when
 * the row beat recently, this waits two heartbeats and half a second (a
 * loaded owner's beat may be late) and reads it again: a row that moved
 * has a live owner. 0: go on (no row, an old one, or one
 * that did not move: its process is gone); -EAGAIN: not known yet (the
 * store did not answer, or stopping); -EADDRINUSE: another process is this
 * node, and this one must do nothing (set in ci.node_conflict).
 */
static int node_identity(struct keel_sched *s)
{
	int64_t first, again;
	struct timespec ts;

	if (node_last_beat(s, &first) != 0)
		return -EAGAIN;
	if (first < 0 || wall_ms() - first > s->cfg.rescue_after / NS_PER_MS +
						     IDENTITY_SKEW_MS)
		return 0;
	ts = bwake_at(2 * s->cfg.heartbeat + 500 * NS_PER_MS);
	pthread_mutex_lock(&s->bmu);
	while (!s->beat_quit &&
	       pthread_cond_timedwait(&s->bwake, &s->bmu, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&s->bmu);
	if (__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE) ||
	    node_last_beat(s, &again) != 0)
		return -EAGAIN;
	if (again < 0 || again == first)
		return 0;
	pthread_mutex_lock(&s->bmu);
	s->ci.node_conflict = 1;
	pthread_mutex_unlock(&s->bmu);
	keel_log_error(s->log, MOD,
		       "another process is beating as this node: this "
		       "scheduler does nothing (no beat, claim or lease); "
		       "stop one of them, or give each its own node id",
		       KEEL_STR("node", s->node),
		       KEEL_INT("heartbeat_was", first),
		       KEEL_INT("heartbeat_now", again));
	event(s, "error", "node.conflict", NULL, 0,
	      "another process is beating as node %s; this one stays idle",
	      s->node);
	return -EADDRINUSE;
}

/*
 * One beat, on the beat thread: takes or renews the lease (a stopping
 * node gives it up), beats the node and the runs it holds, and learns the
 * store's clock. It takes no lock the loop holds across a store call, so
 * a loop busy with a long pass never makes the leader miss its renewal.
 * Runs the store says are no longer ours go to s->lost for the loop.
 * Nothing is done before node_identity has found this node is ours.
 */
static void beat_once(struct keel_sched *s)
{
	struct keel_store *st = s->cfg.store;
	struct keel_store_lease lease;
	int64_t *ids = NULL, t0, w0, w1, store_now = 0, mono;
	uint64_t *claims = NULL;
	int *rcs = NULL;
	size_t n;
	int stopping = __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE);
	int lrc = 0, brc, rrc = 0;

	/* Not one beat before the node is known to be ours: a beat would
	 * take over a live node's row. A conflict holds for good. */
	if (!s->identified) {
		if (stopping || s->ci.node_conflict || node_identity(s) != 0)
			return;
		s->identified = 1;
	}
	pthread_mutex_lock(&s->bmu);
	n = s->nheld;
	ids = calloc(n + 1, sizeof(*ids));
	claims = calloc(n + 1, sizeof(*claims));
	rcs = calloc(n + 1, sizeof(*rcs));
	if (ids == NULL || claims == NULL || rcs == NULL) {
		pthread_mutex_unlock(&s->bmu);
		goto out; /* out of memory: the next beat */
	}
	for (size_t i = 0; i < n; i++) {
		ids[i] = s->held[i].id;
		claims[i] = s->held[i].claim;
	}
	pthread_mutex_unlock(&s->bmu);

	t0 = keel_clock_now(NULL);
	memset(&lease, 0, sizeof(lease));
	if (!stopping)
		lrc = keel_store_lease_acquire(st, s->node,
					       s->cfg.lease_ttl / NS_PER_MS,
					       &lease);
	else if (is_leader(s) &&
		 keel_store_lease_release(st, s->node, cur_term(s)) == 0)
		keel_log_info(s->log, MOD, "lease given up",
			      KEEL_INT("term", cur_term(s)));
	w0 = wall_ms();
	brc = keel_store_node_beat(st, s->node, (int)n,
				   (const char *const *)s->tags, s->n_tags,
				   &store_now);
	w1 = wall_ms();
	if (n > 0)
		rrc = keel_store_runs_beat(st, ids, claims, n, rcs);
	mono = keel_clock_now(NULL);

	pthread_mutex_lock(&s->bmu);
	if (stopping)
		set_leader(s, 0);
	else
		lease_seen(s, lrc, &lease, t0);
	if (brc == 0) {
		int64_t skew = store_now - (w0 + w1) / 2;

		__atomic_store_n(&s->skew, skew, __ATOMIC_RELAXED);
		s->ci.skew = skew;
		s->ci.beat_at = store_now;
	}
	if (lrc != 0 || brc != 0 || (rrc != 0 && rrc != -ESTALE)) {
		if (s->store_failing_since == 0) {
			int rc = lrc != 0 ? lrc : brc != 0 ? brc : rrc;

			/* A lock held too long is not an outage. */
			keel_log_error(s->log, MOD,
				       rc == -EBUSY
					       ? "cannot beat: the store is busy; "
						 "runs go on, results are kept"
					       : "cannot beat: the store is "
						 "unreachable; runs go on, "
						 "results are kept",
				       KEEL_STR("store", keel_store_errmsg(st)));
			__atomic_store_n(&s->store_failing_since, mono,
					 __ATOMIC_RELEASE);
		}
	} else {
		int64_t failed = s->store_failing_since;

		/* Back after an outage long enough for other nodes' run
		 * heartbeats to near rescue_after: the rescue waits for
		 * them to beat (cluster_duties). A blip (a lock timeout, a
		 * reconnect) is not one. */
		if (s->store_ok_since == 0 ||
		    (failed != 0 && mono - failed >= s->cfg.rescue_after / 4))
			__atomic_store_n(&s->store_ok_since, mono,
					 __ATOMIC_RELEASE);
		if (failed != 0)
			keel_log_info(s->log, MOD, "the store answers again",
				      KEEL_INT("after_ms",
					       (mono - failed) / NS_PER_MS));
		__atomic_store_n(&s->store_failing_since, 0, __ATOMIC_RELEASE);
		for (size_t k = 0; k < n; k++) {
			int64_t *p;

			if (rcs[k] != -ESTALE)
				continue;
			for (size_t i = 0; i < s->nheld; i++) {
				if (s->held[i].id == ids[k]) {
					s->held[i] = s->held[--s->nheld];
					break;
				}
			}
			p = realloc(s->lost, (s->nlost + 1) * sizeof(*p));
			if (p != NULL) {
				s->lost = p;
				s->lost[s->nlost++] = ids[k];
			}
		}
	}
	pthread_mutex_unlock(&s->bmu);
	pthread_cond_signal(&s->wake); /* the loop's duties */
out:
	free(ids);
	free(claims);
	free(rcs);
}

static void *beat_main(void *arg)
{
	struct keel_sched *s = arg;

	pthread_mutex_lock(&s->bmu);
	while (!s->beat_quit) {
		struct timespec ts;

		pthread_mutex_unlock(&s->bmu);
		beat_once(s);
		pthread_mutex_lock(&s->bmu);
		/* Stopping wakes it early: the lease is given up at once. */
		ts = bwake_at(s->cfg.heartbeat);
		if (!s->beat_quit && !s->beat_now)
			pthread_cond_timedwait(&s->bwake, &s->bmu, &ts);
		s->beat_now = 0;
	}
	pthread_mutex_unlock(&s->bmu);
	return NULL;
}

/* Under s->mu: the runs the store said are no longer ours are stopped. */
static void runs_lost(struct keel_sched *s)
{
	int64_t *lost;
	size_t n;

	pthread_mutex_lock(&s->bmu);
	lost = s->lost;
	n = s->nlost;
	s->lost = NULL;
	s->nlost = 0;
	pthread_mutex_unlock(&s->bmu);
	for (size_t k = 0; k < n; k++) {
		for (size_t i = 0; i < s->njobs; i++) {
			for (struct act *a = s->jobs[i]->acts; a != NULL;
			     a = a->next) {
				if (a->id != lost[k] || a->lost)
					continue;
				a->lost = 1;
				pthread_mutex_lock(&s->bmu);
				s->ci.lost++;
				pthread_mutex_unlock(&s->bmu);
				keel_cancel_cancel(&a->cancel, -ECANCELED);
				keel_log_warn(s->log, MOD,
					      "run is no longer this node's "
					      "(rescued, canceled or deleted "
					      "elsewhere): stopping it",
					      KEEL_STR("job", s->jobs[i]->name),
					      KEEL_INT("run_id", a->id));
			}
		}
	}
	free(lost);
}

/*
 * Cluster, on the loop under s->mu, once a heartbeat: stops the runs that
 * are no longer ours; after the first good beat, stores a previous life's
 * spooled results and recovers its runs (before any claim); reloads the
 * jobs; and, leading, rescues the runs of nodes that stopped beating.
 */
static void cluster_duties(struct keel_sched *s, int64_t mono)
{
	struct keel_store *st = s->cfg.store;
	int64_t ok_since = __atomic_load_n(&s->store_ok_since, __ATOMIC_ACQUIRE);
	int failing = __atomic_load_n(&s->store_failing_since,
				      __ATOMIC_ACQUIRE) != 0;

	runs_lost(s);
	if (ok_since == 0 || failing)
		return; /* the store does not answer the beats */
	if (!s->recovered) {
		struct recover_ctx rctx = { s, "run was running when this node "
					       "stopped: crashed" };
		size_t n = 0;

		/* A previous life's spooled results first: their runs are
		 * still running under its claims. */
		if (s->unsaved != NULL)
			flush_unsaved(s);
		if (keel_store_recover_node(st, s->node, now_ms(s),
					    recover_decide, &rctx, &n) != 0)
			return; /* the next time */
		s->recovered = 1;
		s->claim_now = 1;
		if (n > 0)
			event(s, "warn", "run.crashed", NULL, 0,
			      "%zu runs were running when %s stopped; marked "
			      "crashed and retried per their policy",
			      n, s->node);
	}
	(void)jobs_sync(s);
	if (is_leader(s) && !s->stopping &&
	    mono - ok_since >= s->cfg.rescue_after / 2 &&
	    keel_clock_now(NULL) < lead_until(s)) {
		struct recover_ctx rctx = { s, "run rescued: its node stopped "
					       "beating" };
		size_t n = 0;
		int rc = keel_store_rescue(st, cur_term(s),
					   s->cfg.rescue_after / NS_PER_MS,
					   recover_decide, &rctx, &n);

		if (rc == -ESTALE) {
			step_down(s, "rescue refused: this node's term no "
				     "longer holds the lease; stepping down");
		} else if (rc == 0 && n > 0) {
			pthread_mutex_lock(&s->bmu);
			s->ci.rescued += n;
			pthread_mutex_unlock(&s->bmu);
			if (s->m_rescued != NULL)
				(void)keel_counter_add(
					keel_counter_with(s->m_rescued),
					(int64_t)n);
			event(s, "warn", "run.rescued", NULL, 0,
			      "%zu runs of nodes that stopped beating were "
			      "marked crashed and retried per their policy",
			      n);
			s->claim_now = 1;
		}
	}
}

struct claim_args {
	const char *node;
	const char *const *tags;
	size_t n_tags;
	int max;
	struct keel_run *runs;
	size_t n;
};

static int st_claim(struct keel_store *st, void *a)
{
	struct claim_args *c = a;

	return keel_store_claim(st, c->node, c->tags, c->n_tags, c->max,
				&c->runs, &c->n);
}

/* Cluster, under s->mu (released during the claim): claims due queued
 * runs for the free workers and starts them. */
static void cluster_claim(struct keel_sched *s, int64_t mono)
{
	struct claim_args c;
	size_t free_slots;
	int synced = 0, rc;

	if (s->stopping || !s->recovered || s->inflight >= (size_t)s->cfg.workers)
		return;
	if (!s->claim_now && mono < s->next_claim)
		return;
	free_slots = (size_t)s->cfg.workers - s->inflight;
	memset(&c, 0, sizeof(c));
	c.node = s->node;
	c.tags = (const char *const *)s->tags;
	c.n_tags = s->n_tags;
	c.max = free_slots > 1000 ? 1000 : (int)free_slots;
	s->claim_now = 0;
	s->next_claim = mono + s->cfg.heartbeat / 5;
	pthread_mutex_unlock(&s->mu);
	rc = store_do(s, st_claim, &c);
	pthread_mutex_lock(&s->mu);
	if (rc != 0)
		return; /* counted by store_do; the next poll */
	if (c.n == (size_t)c.max)
		s->claim_now = 1; /* more may be waiting */
	for (size_t i = 0; i < c.n; i++) {
		struct keel_run *r = &c.runs[i];
		struct entry *e = find(s, r->job);
		struct work *w;

		if (e == NULL && !synced) { /* made on another node just now */
			synced = 1;
			(void)jobs_sync(s);
			e = find(s, r->job);
		}
		w = e != NULL ? work_new(s, e) : NULL;
		if (w == NULL) {
			struct finish_args fa = { r, NULL };

			r->state = KEEL_RUN_CANCELED;
			r->finished_at = now_ms(s);
			free(r->error);
			r->error = strdup(e == NULL ? "canceled: the job was "
						      "deleted"
						    : "canceled: out of memory");
			(void)store_do(s, st_finish, &fa);
			continue;
		}
		w->run = *r;
		memset(r, 0, sizeof(*r));
		work_book(s, e, w);
		work_submit(s, w);
	}
	keel_store_runs_free(c.runs, c.n);
	gauges(s);
}

/* ---- the loop ----------------------------------------------------------- */

static void *loop_main(void *arg)
{
	struct keel_sched *s = arg;

	pthread_mutex_lock(&s->mu);
	while (!s->quit) {
		int64_t now = now_ms(s), mono = keel_clock_now(NULL);
		int64_t wake = now + MS_PER_S; /* ms */
		int cluster = s->cfg.cluster, ticks;
		struct timespec ts;
		int64_t wait_ns;

		__atomic_store_n(&s->st.loop_at, mono, __ATOMIC_RELAXED);
		flush_done(s);
		if (cluster && mono - s->last_duty >= s->cfg.heartbeat) {
			s->last_duty = mono;
			cluster_duties(s, mono);
			now = now_ms(s);
			mono = keel_clock_now(NULL);
		}
		/* A stopping keeld ticks and starts nothing more; in a
		 * cluster only the leader ticks, while its lease lasts. */
		ticks = !s->stopping &&
			(!cluster || (is_leader(s) && mono < lead_until(s)));
		if (ticks)
			tick_pass(s, now);
		if (s->unsaved != NULL &&
		    mono - s->last_unsaved >= s->cfg.store_retry) {
			s->last_unsaved = mono;
			flush_unsaved(s);
		}
		if (cluster)
			cluster_claim(s, mono);
		else
			dispatch(s, now);
		s->passes++;
		pthread_cond_broadcast(&s->idle);
		if (mono - s->last_prune >= s->cfg.prune_interval &&
		    (!cluster || is_leader(s))) {
			s->last_prune = mono;
			prune(s, now);
		}
		for (size_t i = 0; ticks && i < s->njobs; i++) {
			int64_t nx = s->jobs[i]->next;

			if (nx != KEEL_CRON_NEVER && nx * MS_PER_S < wake)
				wake = nx * MS_PER_S;
		}
		if (cluster) {
			int64_t beat = now + (s->last_duty + s->cfg.heartbeat -
					      mono) / NS_PER_MS;

			if (beat < wake)
				wake = beat;
			if (!s->stopping && s->recovered &&
			    s->inflight < (size_t)s->cfg.workers) {
				int64_t claim = s->claim_now
							? now
							: now + (s->next_claim -
								 mono) / NS_PER_MS;

				if (claim < wake)
					wake = claim;
			}
		}
		for (size_t i = 0; !s->stopping &&
				   s->inflight < (size_t)s->cfg.workers &&
				   i < s->npend; i++) {
			struct entry *e = find(s, s->pend[i].job);

			/* The first one that could start now. */
			if (e != NULL && e->ref->job->concurrency != KEEL_JOB_ALLOW &&
			    e->running > 0)
				continue;
			if (s->pend[i].not_before < wake)
				wake = s->pend[i].not_before;
			break;
		}
		now = now_ms(s);
		if (wake <= now)
			wake = now + 1; /* a full pool: do not spin */
		wait_ns = (wake - now) * NS_PER_MS;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)(wait_ns / 1000000000);
		ts.tv_nsec += (long)(wait_ns % 1000000000);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->wake, &s->mu, &ts);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

void keel_sched_config_init(struct keel_sched_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->workers = 16;
	cfg->late = 10 * KEEL_SEC;
	cfg->prune_interval = 60 * KEEL_SEC;
	cfg->store_retry = KEEL_SEC;
	cfg->lease_ttl = 3 * KEEL_SEC;
	cfg->heartbeat = 500 * NS_PER_MS;
	cfg->rescue_after = 6 * KEEL_SEC;
}

/* Cluster settings; the message says what is wrong. */
static int cluster_check(const struct keel_sched_config *cfg, char *err,
			 size_t errlen)
{
	if (!cfg->cluster)
		return 0;
	if (cfg->heartbeat < NS_PER_MS || cfg->heartbeat > 60 * KEEL_SEC) {
		fmt_err(err, errlen, "heartbeat must be 1ms..60s");
		return -EINVAL;
	}
	if (cfg->lease_ttl < 2 * cfg->heartbeat || cfg->lease_ttl > 3600 * KEEL_SEC) {
		fmt_err(err, errlen,
			"lease ttl must be at least two heartbeats (and at "
			"most 1h)");
		return -EINVAL;
	}
	if (cfg->rescue_after < 2 * cfg->heartbeat ||
	    cfg->rescue_after > 86400 * KEEL_SEC) {
		fmt_err(err, errlen,
			"rescue-after must be at least two heartbeats (and at "
			"most 24h)");
		return -EINVAL;
	}
	if (cfg->n_tags > 32 || (cfg->n_tags > 0 && cfg->tags == NULL)) {
		fmt_err(err, errlen, "at most 32 tags");
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->n_tags; i++) {
		if (!keel_job_tag_valid(cfg->tags[i])) {
			fmt_err(err, errlen,
				"a tag is 1-64 characters of [A-Za-z0-9._:=/-]");
			return -EINVAL;
		}
	}
	return 0;
}

static int tags_copy(struct keel_sched *s, const struct keel_sched_config *cfg)
{
	if (!cfg->cluster || cfg->n_tags == 0)
		return 0;
	s->tags = calloc(cfg->n_tags, sizeof(*s->tags));
	if (s->tags == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->n_tags; i++) {
		s->tags[i] = strdup(cfg->tags[i]);
		if (s->tags[i] == NULL)
			return -ENOMEM;
		s->n_tags++;
	}
	return 0;
}

/* The results a previous keeld could not store, into s->unsaved. */
static int spool_load(struct keel_sched *s, char *err, size_t errlen)
{
	struct keel__spooled *items;
	size_t n;
	int rc;

	if (s->spool == NULL)
		return 0;
	rc = keel__spool_load(s->spool, &items, &n, err, errlen);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		held_add(s, items[i].run.id, items[i].run.claim);
		keep_unsaved(s, &items[i].run, &items[i].next,
			     items[i].has_next);
	}
	if (n > 0)
		keel_log_warn(s->log, MOD,
			      "results a previous keeld could not store are "
			      "in the spool; storing them",
			      KEEL_UINT("results", n), KEEL_STR("spool", s->spool));
	keel__spool_free(items, n);
	return 0;
}

static int load(struct keel_sched *s, char *err, size_t errlen)
{
	struct keel_store_job *jobs = NULL;
	struct keel_run *runs = NULL;
	size_t n = 0, nruns = 0, crashed = 0;
	struct recover_ctx rctx = { s, "run was running when keeld stopped: "
				       "crashed" };
	int rc;

	rc = keel_store_job_list(s->cfg.store, &jobs, &n);
	if (rc != 0) {
		fmt_err(err, errlen, "cannot read the jobs: %s",
			keel_store_errmsg(s->cfg.store));
		return rc;
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = entry_add(s, &jobs[i], NULL, err, errlen);
	keel_store_jobs_free(jobs, n);
	if (rc == 0)
		rc = spool_load(s, err, errlen);
	if (rc != 0 || s->cfg.cluster)
		return rc; /* a node stores its spool and recovers its own runs
			      at its first beat */
	if (s->unsaved != NULL)
		flush_unsaved(s); /* before their runs are found running */

	rc = keel_store_recover(s->cfg.store, now_ms(s), recover_decide, &rctx,
				&crashed);
	if (rc != 0) {
		fmt_err(err, errlen, "cannot recover runs: %s",
			keel_store_errmsg(s->cfg.store));
		return rc;
	}
	if (crashed > 0)
		event(s, "warn", "run.crashed", NULL, 0,
		      "%zu runs were running when keeld stopped; marked "
		      "crashed and retried per their policy",
		      crashed);
	rc = keel_store_run_active(s->cfg.store, &runs, &nruns);
	if (rc != 0) {
		fmt_err(err, errlen, "cannot read queued runs: %s",
			keel_store_errmsg(s->cfg.store));
		return rc;
	}
	for (size_t i = 0; i < nruns && rc == 0; i++)
		rc = pend_add(s, &runs[i]);
	keel_store_runs_free(runs, nruns);
	return rc;
}

/* keeld_breaker_state{host,state}: 1 for each host's current state, 0 for
 * the others, read from the http executor at each render. */
static void breaker_one(const char *host, const char *state, void *ud)
{
	static const char *const states[] = { "closed", "half_open", "open" };
	struct keel_sched *s = ud;

	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		const char *lv[2] = { host, states[i] };
		struct keel_gauge *g;

		if (keel_gauge_get(s->m_breaker, lv, 2, &g) == 0)
			keel_gauge_set(g, strcmp(state, states[i]) == 0);
	}
}

static void collect_breakers(struct keel_metrics *reg, void *ud)
{
	struct keel_sched *s = ud;

	(void)reg;
	keel_exec_breakers(s->cfg.exec, breaker_one, s);
}

static int metrics_init(struct keel_sched *s)
{
	static const char *const host_state[] = { "host", "state" };
	static const char *const job_state[] = { "job", "state" };
	static const char *const job[] = { "job" };
	struct keel_metrics *m = s->cfg.metrics;
	int rc;

	if (m == NULL)
		return 0;
	rc = keel_metrics_counter(m, "keeld_runs_total",
				  "Runs that reached a final state, by job and state.",
				  job_state, 2, &s->m_runs);
	if (rc == 0)
		rc = keel_metrics_histogram(m, "keeld_run_duration_seconds",
					    "Run duration from start to end.", job, 1,
					    NULL, 0, &s->m_dur);
	if (rc == 0)
		rc = keel_metrics_gauge(m, "keeld_queue_depth",
					"Runs queued, retries in backoff included.",
					NULL, 0, &s->m_queue);
	if (rc == 0)
		rc = keel_metrics_gauge(m, "keeld_running", "Runs running now.",
					NULL, 0, &s->m_running);
	if (rc == 0)
		rc = keel_metrics_counter(m, "keeld_panics_recovered_total",
					  "In-process handlers that panicked or "
					  "faulted; each failed its run only.",
					  NULL, 0, &s->m_panics);
	if (rc == 0)
		rc = keel_metrics_counter(m, "keeld_store_errors_total",
					  "Store calls that failed after retries.",
					  NULL, 0, &s->m_store_err);
	if (rc == 0)
		rc = keel_metrics_gauge(m, "keeld_breaker_state",
					"Circuit breaker of each HTTP target host: 1 "
					"for its current state.",
					host_state, 2, &s->m_breaker);
	if (rc == 0 && s->cfg.cluster)
		rc = keel_metrics_gauge(m, "keeld_leader",
					"1 while this node holds the cluster's "
					"lease.",
					NULL, 0, &s->m_leader);
	if (rc == 0 && s->cfg.cluster)
		rc = keel_metrics_counter(m, "keeld_runs_rescued_total",
					  "Runs of nodes that stopped beating, "
					  "rescued by this node as leader.",
					  NULL, 0, &s->m_rescued);
	if (rc == 0)
		rc = keel_metrics_add_collector(m, collect_breakers, s);
	if (rc == 0)
		s->collecting = 1;
	return rc;
}

int keel_sched_new(const struct keel_sched_config *cfg, struct keel_sched **out,
		   char *err, size_t errlen)
{
	struct keel_sched *s;
	struct keel_pool_config pc;
	pthread_condattr_t ca;
	int rc;

	if (cfg == NULL || out == NULL || cfg->store == NULL ||
	    cfg->exec == NULL || cfg->workers < 1 || cfg->late < 0 ||
	    cfg->prune_interval <= 0 || cfg->store_retry <= 0) {
		fmt_err(err, errlen, "invalid scheduler configuration");
		return -EINVAL;
	}
	rc = cluster_check(cfg, err, errlen);
	if (rc != 0)
		return rc;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->cfg = *cfg;
	s->log = cfg->log;
	if (cfg->node != NULL && cfg->node[0] != '\0')
		snprintf(s->node, sizeof(s->node), "%s", cfg->node);
	else if (gethostname(s->node, sizeof(s->node) - 1) != 0)
		snprintf(s->node, sizeof(s->node), "localhost");
	s->cfg.node = s->node;
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->bmu, NULL);
	s->done_tail = &s->done;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &ca);
	pthread_cond_init(&s->idle, &ca);
	pthread_cond_init(&s->bwake, &ca);
	pthread_condattr_destroy(&ca);
	s->st.started_at = now_ms(s);
	s->cfg.tags = NULL; /* copied into s->tags */
	if (cfg->spool != NULL && (s->spool = strdup(cfg->spool)) == NULL) {
		keel_sched_free(s);
		return -ENOMEM;
	}
	s->cfg.spool = s->spool;

	rc = tags_copy(s, cfg);
	if (rc == 0)
		rc = store_pipeline_new(s);
	if (rc == 0)
		rc = metrics_init(s);
	if (rc != 0) {
		fmt_err(err, errlen, "cannot set up the scheduler: %s",
			strerror(-rc));
		keel_sched_free(s);
		return rc;
	}
	pthread_mutex_lock(&s->mu);
	rc = load(s, err, errlen);
	gauges(s);
	pthread_mutex_unlock(&s->mu);
	if (rc != 0) {
		keel_sched_free(s);
		return rc;
	}
	keel_pool_config_init(&pc);
	pc.name = "keeld-run";
	pc.min_threads = cfg->workers;
	pc.queue_size = (size_t)cfg->workers * 4;
	pc.when_full = KEEL_POOL_REJECT;
	pc.on_panic = keel_log_task_panic;
	pc.panic_ud = cfg->log;
	rc = keel_pool_new(&pc, &s->pool);
	if (rc != 0) {
		fmt_err(err, errlen, "cannot start %d workers: %s", cfg->workers,
			strerror(-rc));
		keel_sched_free(s);
		return rc;
	}
	if (cfg->metrics != NULL &&
	    keel_metrics_bridge_pool(cfg->metrics, s->pool, "keeld-run") == 0)
		s->pool_bridged = 1;
	*out = s;
	return 0;
}

/* Ends the beat thread (its last beat done). */
static void beat_stop(struct keel_sched *s)
{
	int join;

	pthread_mutex_lock(&s->bmu);
	s->beat_quit = 1;
	join = s->beat_running;
	s->beat_running = 0;
	pthread_cond_signal(&s->bwake);
	pthread_mutex_unlock(&s->bmu);
	if (join)
		pthread_join(s->beat, NULL);
}

int keel_sched_start(struct keel_sched *s)
{
	int rc;

	if (s == NULL)
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	if (s->started) {
		pthread_mutex_unlock(&s->mu);
		return -EALREADY;
	}
	__atomic_store_n(&s->started, 1, __ATOMIC_RELEASE);
	s->last_prune = keel_clock_now(NULL);
	if (s->cfg.cluster) {
		rc = pthread_create(&s->beat, NULL, beat_main, s);
		if (rc == 0)
			s->beat_running = 1;
	} else {
		rc = 0;
	}
	if (rc == 0)
		rc = pthread_create(&s->loop, NULL, loop_main, s);
	if (rc == 0)
		s->loop_running = 1;
	else
		s->started = 0;
	pthread_mutex_unlock(&s->mu);
	if (rc != 0 && s->beat_running) {
		beat_stop(s);
	}
	if (rc != 0)
		return -EAGAIN;
	event(s, "info", "keeld.started", NULL, 0, "scheduler started on %s",
	      s->node);
	return 0;
}

int keel_sched_stop(struct keel_sched *s, int64_t timeout)
{
	int rc = 0, join;

	if (s == NULL)
		return -EINVAL;
	/* The loop ticks and starts nothing more, but goes on committing
	 * what the workers finish and, in a cluster, beating the runs that
	 * still run (so nobody rescues them) after giving the lease up. */
	pthread_mutex_lock(&s->mu);
	__atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->mu);
	if (s->cfg.cluster) { /* give the lease up at once */
		pthread_mutex_lock(&s->bmu);
		s->beat_now = 1;
		pthread_cond_signal(&s->bwake);
		pthread_mutex_unlock(&s->bmu);
	}
	/* Queued work stays in the store; running attempts get timeout. */
	if (s->pool != NULL &&
	    keel_pool_shutdown(s->pool, KEEL_POOL_DRAIN,
			       timeout > 0 ? timeout : 1) == -ETIMEDOUT) {
		rc = -ETIMEDOUT;
		pthread_mutex_lock(&s->mu);
		for (size_t i = 0; i < s->njobs; i++)
			for (struct act *a = s->jobs[i]->acts; a != NULL; a = a->next)
				keel_cancel_cancel(&a->cancel, -ECANCELED);
		pthread_mutex_unlock(&s->mu);
		keel_pool_shutdown(s->pool, KEEL_POOL_CANCEL, 0);
	}
	pthread_mutex_lock(&s->mu);
	s->quit = 1;
	join = s->loop_running;
	s->loop_running = 0;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->mu);
	if (join)
		pthread_join(s->loop, NULL);
	/* The loop is gone: commit what the workers finished, then stop
	 * beating (the runs still unsaved stay in the spool). */
	pthread_mutex_lock(&s->mu);
	flush_done(s);
	if (s->unsaved != NULL)
		flush_unsaved(s);
	pthread_mutex_unlock(&s->mu);
	beat_stop(s);
	if (s->cfg.cluster && is_leader(s)) {
		(void)keel_store_lease_release(s->cfg.store, s->node, cur_term(s));
		set_leader(s, 0);
	}
	return rc;
}

void keel_sched_free(struct keel_sched *s)
{
	if (s == NULL)
		return;
	keel_sched_stop(s, 0);
	if (s->collecting)
		keel_metrics_remove_collector(s->cfg.metrics, collect_breakers, s);
	if (s->pool_bridged)
		keel_metrics_unbridge_pool(s->cfg.metrics, s->pool);
	keel_pool_free(s->pool);
	for (size_t i = 0; i < s->njobs; i++)
		entry_free(s->jobs[i]);
	free(s->jobs);
	for (size_t i = 0; i < s->npend; i++)
		keel_run_clear(&s->pend[i]);
	free(s->pend);
	while (s->unsaved != NULL) {
		struct unsaved *u = s->unsaved;

		s->unsaved = u->link;
		if (s->spool != NULL)
			keel_log_warn(s->log, MOD,
				      "a run's result could not be stored; it "
				      "stays in the spool for the next start",
				      KEEL_STR("job", u->run.job),
				      KEEL_INT("run_id", u->run.id),
				      KEEL_STR("spool", s->spool));
		else
			keel_log_error(s->log, MOD,
				       "a run's result was never stored; it "
				       "will be marked crashed at the next "
				       "start",
				       KEEL_STR("job", u->run.job),
				       KEEL_INT("run_id", u->run.id));
		keel_run_clear(&u->run);
		keel_run_clear(&u->next);
		free(u);
	}
	keel_pipeline_free(s->store_pl);
	for (size_t i = 0; i < s->n_tags; i++)
		free(s->tags[i]);
	free(s->tags);
	free(s->spool);
	free(s->held);
	free(s->lost);
	pthread_cond_destroy(&s->wake);
	pthread_cond_destroy(&s->idle);
	pthread_cond_destroy(&s->bwake);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->bmu);
	free(s);
}

int keel_sched_ready(struct keel_sched *s)
{
	return s != NULL && __atomic_load_n(&s->started, __ATOMIC_ACQUIRE) &&
	       !__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE) &&
	       __atomic_load_n(&s->nunsaved, __ATOMIC_ACQUIRE) == 0;
}

/* ---- API operations ----------------------------------------------------- */

struct put_args {
	const struct keel_job *j;
	int64_t now_s;
	enum keel_store_put res;
};

static int st_put(struct keel_store *st, void *a)
{
	struct put_args *p = a;

	return keel_store_job_put(st, p->j, p->now_s, &p->res);
}

int keel_sched_job_put(struct keel_sched *s, const struct keel_job *j,
		       enum keel_store_put *result, char *err, size_t errlen)
{
	struct put_args pa;
	struct keel_store_job sj;
	struct jobref *ref = NULL;
	struct entry *e;
	int rc;

	if (s == NULL || j == NULL)
		return -EINVAL;
	if (j->type == KEEL_JOB_HANDLER &&
	    !keel_exec_handler_exists(s->cfg.exec, j->handler.name)) {
		fmt_err(err, errlen,
			"executor.name: no handler '%s' is registered in this "
			"keeld", j->handler.name);
		return -EINVAL;
	}
	rc = jobref_new(j, &ref, err, errlen);
	if (rc != 0)
		return rc;
	pa.j = j;
	pa.now_s = now_ms(s) / MS_PER_S;
	pthread_mutex_lock(&s->mu);
	rc = store_do(s, st_put, &pa);
	if (rc == 0 && pa.res != KEEL_STORE_UNCHANGED)
		rc = keel_store_job_get(s->cfg.store, j->name, &sj);
	if (rc != 0) {
		pthread_mutex_unlock(&s->mu);
		jobref_put(ref);
		fmt_err(err, errlen, "the store refused the job: %s",
			keel_store_errmsg(s->cfg.store));
		return rc;
	}
	if (pa.res != KEEL_STORE_UNCHANGED) {
		e = find(s, j->name);
		if (e == NULL) {
			e = calloc(1, sizeof(*e));
			if (e == NULL || (e->name = strdup(j->name)) == NULL ||
			    jobs_add(s, e) != 0) {
				if (e != NULL)
					free(e->name);
				free(e);
				e = NULL;
				rc = -ENOMEM;
			}
		}
		if (e != NULL) {
			jobref_put(e->ref);
			e->ref = ref;
			ref = NULL;
			e->paused = sj.paused;
			e->last_tick = sj.last_tick;
			e->created_at = sj.created_at;
			e->updated_at = sj.updated_at;
			e->next = entry_next(e);
		}
		keel_store_job_clear(&sj);
		pthread_cond_signal(&s->wake);
	}
	gauges(s);
	pthread_mutex_unlock(&s->mu);
	jobref_put(ref);
	if (rc == 0) {
		event(s, "info",
		      pa.res == KEEL_STORE_CREATED    ? "job.created"
		      : pa.res == KEEL_STORE_REPLACED ? "job.replaced"
						      : "job.unchanged",
		      j->name, 0, "job %s", j->name);
		if (result != NULL)
			*result = pa.res;
	}
	return rc;
}

static int st_delete(struct keel_store *st, void *a)
{
	return keel_store_job_delete(st, a);
}

int keel_sched_job_delete(struct keel_sched *s, const char *name)
{
	struct entry *e;
	int rc;

	if (s == NULL || name == NULL)
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	e = find(s, name);
	if (e != NULL)
		cancel_active(s, e, "canceled: the job was deleted");
	rc = store_do(s, st_delete, (void *)name);
	if (rc == 0 && e != NULL)
		entry_remove(s, e);
	gauges(s);
	pthread_mutex_unlock(&s->mu);
	if (rc == 0)
		event(s, "info", "job.deleted", name, 0, "job %s deleted", name);
	return rc;
}

struct pause_args {
	const char *name;
	int paused;
	int64_t now_s;
};

static int st_pause(struct keel_store *st, void *a)
{
	struct pause_args *p = a;

	return keel_store_job_pause(st, p->name, p->paused, p->now_s);
}

int keel_sched_job_pause(struct keel_sched *s, const char *name, int paused)
{
	struct pause_args pa = { name, paused != 0, now_ms(s) / MS_PER_S };
	struct entry *e;
	int rc;

	if (s == NULL || name == NULL)
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	rc = store_do(s, st_pause, &pa);
	e = find(s, name);
	if (rc == 0 && e != NULL) {
		e->paused = pa.paused;
		if (!pa.paused)
			e->last_tick = pa.now_s;
		e->next = entry_next(e);
		pthread_cond_signal(&s->wake);
	}
	pthread_mutex_unlock(&s->mu);
	if (rc == 0)
		event(s, "info", paused ? "job.paused" : "job.resumed", name, 0,
		      "job %s %s", name, paused ? "paused" : "resumed");
	return rc;
}

static int st_insert(struct keel_store *st, void *a)
{
	return keel_store_run_insert(st, a);
}

int keel_sched_run_now(struct keel_sched *s, const char *name,
		       struct keel_run *out)
{
	struct keel_run r;
	struct entry *e;
	int64_t now = now_ms(s);
	int rc;

	if (s == NULL || name == NULL)
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	e = find(s, name);
	if (e == NULL && s->cfg.cluster) {
		/* Made on another node since our last beat? */
		(void)jobs_sync(s);
		e = find(s, name);
	}
	if (e == NULL) {
		pthread_mutex_unlock(&s->mu);
		return -ENOENT;
	}
	rc = new_run(&r, name, now / MS_PER_S, now, KEEL_RUN_MANUAL,
		     KEEL_RUN_QUEUED, NULL);
	if (rc == 0) {
		r.scheduled_at = now;
		r.not_before = now;
		rc = store_do(s, st_insert, &r);
	}
	if (rc == 0 && out != NULL) {
		*out = r;
		out->job = strdup(r.job);
		out->error = NULL;
		out->output = NULL;
		out->node = NULL;
		if (out->job == NULL)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		if (s->cfg.cluster)
			s->claim_now = 1; /* any node may take it */
		else
			pend_add(s, &r);
		pthread_cond_signal(&s->wake);
	}
	keel_run_clear(&r);
	gauges(s);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int keel_sched_run_cancel(struct keel_sched *s, int64_t id)
{
	struct keel_run r;
	int rc;

	if (s == NULL || id <= 0)
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < s->npend; i++) {
		struct finish_args fa;

		if (s->pend[i].id != id)
			continue;
		pend_remove(s, i, &r);
		r.state = KEEL_RUN_CANCELED;
		r.finished_at = now_ms(s);
		free(r.error);
		r.error = strdup("canceled through the API");
		fa.run = &r;
		fa.next = NULL;
		rc = store_do(s, st_finish, &fa);
		keel_run_clear(&r);
		gauges(s);
		pthread_cond_broadcast(&s->idle);
		pthread_mutex_unlock(&s->mu);
		return rc;
	}
	for (size_t i = 0; i < s->njobs; i++) {
		for (struct act *a = s->jobs[i]->acts; a != NULL; a = a->next) {
			if (a->id == id) {
				keel_cancel_cancel(&a->cancel, -ECANCELED);
				pthread_mutex_unlock(&s->mu);
				return 0;
			}
		}
	}
	pthread_mutex_unlock(&s->mu);
	rc = keel_store_run_get(s->cfg.store, id, &r);
	if (rc != 0)
		return rc;
	if (keel_run_state_final(r.state)) {
		rc = -EALREADY;
	} else if (s->cfg.cluster) {
		/* Queued, or running on another node: canceled in the store
		 * now (no claim check); that node stops it at its next beat. */
		struct finish_args fa = { &r, NULL };

		r.state = KEEL_RUN_CANCELED;
		r.finished_at = now_ms(s);
		r.claim = 0;
		free(r.error);
		r.error = strdup("canceled through the API");
		rc = store_do(s, st_finish, &fa);
		if (rc == -ESTALE)
			rc = -EALREADY; /* it ended meanwhile */
	} else {
		rc = -EAGAIN;
	}
	keel_run_clear(&r);
	return rc;
}

int keel_sched_job_state(struct keel_sched *s, const char *name,
			 int64_t *next_s, int *active)
{
	struct entry *e;

	if (s == NULL || name == NULL)
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	e = find(s, name);
	if (e != NULL) {
		if (next_s != NULL)
			*next_s = e->next;
		if (active != NULL)
			*active = e->pending + e->running;
	}
	pthread_mutex_unlock(&s->mu);
	if (e != NULL && active != NULL && s->cfg.cluster) {
		/* Runs are wherever the cluster put them. */
		int64_t counts[KEEL_RUN_NSTATES];

		if (keel_store_run_counts(s->cfg.store, name, counts) == 0)
			*active = (int)(counts[KEEL_RUN_QUEUED] +
					counts[KEEL_RUN_RUNNING]);
	}
	return e != NULL ? 0 : -ENOENT;
}

void keel_sched_stats(struct keel_sched *s, struct keel_sched_stats *out)
{
	if (s == NULL || out == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	gauges(s);
	*out = s->st;
	out->loop_at = __atomic_load_n(&s->st.loop_at, __ATOMIC_RELAXED);
	out->panics = __atomic_load_n(&s->st.panics, __ATOMIC_RELAXED);
	out->store_errors = __atomic_load_n(&s->st.store_errors, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&s->mu);
}

int64_t keel_sched_loop_age(struct keel_sched *s)
{
	int64_t at;

	if (s == NULL)
		return -1;
	at = __atomic_load_n(&s->st.loop_at, __ATOMIC_RELAXED);
	return at == 0 ? -1 : keel_clock_now(NULL) - at;
}

int keel_sched_set_node(struct keel_sched *s, const char *node)
{
	int rc = 0;

	if (s == NULL || node == NULL || node[0] == '\0' ||
	    strlen(node) >= sizeof(s->node))
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	if (s->started)
		rc = -EBUSY;
	else
		snprintf(s->node, sizeof(s->node), "%s", node);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

const char *keel_sched_node(struct keel_sched *s)
{
	return s != NULL ? s->node : NULL;
}

/* Cluster: no run is queued or running on any node. */
static int store_idle(struct keel_sched *s)
{
	int64_t counts[KEEL_RUN_NSTATES];

	return keel_store_run_counts(s->cfg.store, NULL, counts) == 0 &&
	       counts[KEEL_RUN_QUEUED] == 0 && counts[KEEL_RUN_RUNNING] == 0;
}

void keel_sched_cluster_info(struct keel_sched *s, struct keel_sched_cluster *out)
{
	if (out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->bmu);
	if (s->cfg.cluster) {
		*out = s->ci;
		out->cluster = 1;
		out->leader = is_leader(s);
		out->heartbeat = s->cfg.heartbeat / NS_PER_MS;
		out->rescue_after = s->cfg.rescue_after / NS_PER_MS;
	} else {
		out->leader = 1;
		snprintf(out->holder, sizeof(out->holder), "%s", s->node);
	}
	pthread_mutex_unlock(&s->bmu);
}

int keel_sched_idle_wait(struct keel_sched *s, int64_t timeout)
{
	int64_t end = keel_clock_now(NULL) + timeout;
	uint64_t pass0;
	int rc = 0;

	if (s == NULL)
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	/* The loop must have looked at the clock since the call: what was
	 * due by then has been ticked. Two passes: one may have been under
	 * way when we came. */
	pass0 = s->passes;
	for (;;) {
		struct timespec ts;
		int64_t left;

		if (s->npend == 0 && s->inflight == 0 && s->done == NULL &&
		    (s->passes >= pass0 + 2 || !s->loop_running) &&
		    (!s->cfg.cluster || store_idle(s)))
			break;
		left = end - keel_clock_now(NULL);
		if (left <= 0) {
			rc = -ETIMEDOUT;
			break;
		}
		if (left > 50 * NS_PER_MS)
			left = 50 * NS_PER_MS; /* runs of deleted jobs */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)(left / 1000000000);
		ts.tv_nsec += (long)(left % 1000000000);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->idle, &s->mu, &ts);
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}
