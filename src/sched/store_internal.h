/*
 * src/sched/store_internal.h - what an engine of keel/store.h implements,
 * and the helpers that do not depend on the engine. Not installed.
 *
 * store.c holds the public keel_store_* functions: they check their
 * arguments (so an engine never sees a NULL it was not promised) and call
 * the engine through its ops. An engine (store_sqlite.c, store_pg.c)
 * embeds struct keel_store first in its own struct and implements every
 * op with the semantics keel/store.h documents.
 */
#ifndef KEEL_SCHED_STORE_INTERNAL_H
#define KEEL_SCHED_STORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>
#include <keel/store.h>

/*
 * One function per operation; store.c has checked what the header promises
 * (st, out pointers and required strings not NULL, r->state final for
 * run_finish, runs valid for keel__store_run_check, limits in range) and
 * zeroed *out / *n. Each returns 0 or a negative errno, with a message
 * set by keel__store_errf for anything else than 0.
 */
struct keel_store_ops {
	const char *name; /* "sqlite": for messages */
	void (*close)(struct keel_store *st);
	/* The thread's last error text; NULL = keel__store_errmsg (the
	 * thread-local text that keel__store_errf keeps). */
	const char *(*errmsg)(struct keel_store *st);

	int (*job_put)(struct keel_store *st, const struct keel_job *j,
		       int64_t now_s, enum keel_store_put *result);
	int (*job_delete)(struct keel_store *st, const char *name);
	int (*job_pause)(struct keel_store *st, const char *name, int paused,
			 int64_t now_s);
	int (*job_get)(struct keel_store *st, const char *name,
		       struct keel_store_job *out);
	int (*job_list)(struct keel_store *st, struct keel_store_job **out,
			size_t *n);

	int (*ticks)(struct keel_store *st, struct keel_store_tick *ticks,
		     size_t n);
	int (*run_insert)(struct keel_store *st, struct keel_run *r);
	int (*run_start)(struct keel_store *st, int64_t id, int64_t started_at,
			 const char *node);
	int (*run_finish)(struct keel_store *st, const struct keel_run *r,
			  struct keel_run *next);
	/* Group commit (keel_store_runs_start/finish); an engine may leave
	 * them NULL: store.c then makes the single calls one by one. */
	int (*runs_start)(struct keel_store *st, const int64_t *ids, size_t n,
			  int64_t started_at, const char *node, int *rcs);
	int (*runs_finish)(struct keel_store *st,
			   struct keel_store_finish *items, size_t n, int *rcs);
	int (*run_get)(struct keel_store *st, int64_t id, struct keel_run *out);
	int (*run_list)(struct keel_store *st,
			const struct keel_store_run_query *q,
			struct keel_run **out, size_t *n);
	int (*run_active)(struct keel_store *st, struct keel_run **out,
			  size_t *n);
	/* node NULL: every running run (keel_store_recover); else only
	 * node's (keel_store_recover_node). */
	int (*recover)(struct keel_store *st, const char *node, int64_t now_ms,
		       int (*decide)(const struct keel_run *crashed,
				     struct keel_run *next, void *ud),
		       void *ud, size_t *n_crashed);
	int (*prune)(struct keel_store *st, const char *job, int keep_runs,
		     int64_t before_ms, size_t *deleted);
	int (*run_counts)(struct keel_store *st, const char *job,
			  int64_t counts[KEEL_RUN_NSTATES]);

	int (*event_add)(struct keel_store *st, int64_t at_ms,
			 const char *level, const char *kind, const char *job,
			 int64_t run_id, const char *message);
	int (*event_list)(struct keel_store *st, int64_t before_id, int limit,
			  struct keel_store_event **out, size_t *n);

	/*
	 * The cluster (keel/store.h's last section). An engine without them
	 * leaves them NULL: the public calls answer -ENOTSUP. store.c has
	 * checked node (1..KEEL__STORE_NODE_MAX bytes of UTF-8), ttl, term,
	 * stale and max (> 0), and made tags a JSON array of strings
	 * (keel__store_tags_json), so an engine stores and compares it as it
	 * likes. now_ms is never NULL.
	 */
	int (*lease_acquire)(struct keel_store *st, const char *node,
			     int64_t ttl_ms, struct keel_store_lease *out);
	int (*lease_release)(struct keel_store *st, const char *node,
			     int64_t term);
	int (*node_beat)(struct keel_store *st, const char *node, int running,
			 const char *tags_json, int64_t *now_ms);
	int (*node_list)(struct keel_store *st, int64_t forget_ms,
			 struct keel_store_node **out, size_t *n);
	int (*claim)(struct keel_store *st, const char *node,
		     const char *tags_json, int max, struct keel_run **out,
		     size_t *n);
	int (*runs_beat)(struct keel_store *st, const int64_t *ids,
			 const uint64_t *claims, size_t n, int *rcs);
	int (*ticks_fenced)(struct keel_store *st, int64_t term,
			    struct keel_store_tick *ticks, size_t n);
	int (*rescue)(struct keel_store *st, int64_t term, int64_t stale_ms,
		      int (*decide)(const struct keel_run *crashed,
				    struct keel_run *next, void *ud),
		      void *ud, size_t *n_rescued);
};

struct keel_store {
	const struct keel_store_ops *ops;
};

/* ---- engine-independent rules, shared so every engine agrees ---------- */

/* What keel_store_recover writes into a crashed run's error. */
#define KEEL__STORE_CRASHED_ERROR "keeld stopped while the run was running"
/* What keel_store_rescue writes into a rescued run's error: the text, the
 * node's name, the end ("rescued: node a:8080 stopped beating"). */
#define KEEL__STORE_RESCUED_ERROR "rescued: node "
#define KEEL__STORE_RESCUED_END " stopped beating"
/* A node's name: at most this many bytes (struct keel_store_lease's
 * holder has one more, for the NUL). */
#define KEEL__STORE_NODE_MAX 127
/* keel_store_claim's max, at most. */
#define KEEL__STORE_CLAIM_MAX 1000
/* Events kept (about: the older ones go every KEEL__STORE_EVENTS_TRIM
 * inserts, when an id is a multiple of it). */
#define KEEL__STORE_EVENTS_KEEP 10000
#define KEEL__STORE_EVENTS_TRIM 100

/* Sets this thread's error text for st (see keel_store_errmsg); returns
 * nothing so callers write `keel__store_errf(...); return -EIO;`. */
void keel__store_errf(const struct keel_store *st, const char *fmt, ...)
	KEEL_PRINTF(2, 3);
/* This thread's last error text for st, "" if none. */
const char *keel__store_errmsg(const struct keel_store *st);

/*
 * A run that may be stored: job set (need_job), state, trigger in range,
 * attempt >= 1, times >= 0. -EINVAL with the reason in st's message.
 */
int keel__store_run_check(const struct keel_store *st,
			  const struct keel_run *r, int need_job);

/*
 * Asks decide (keel_store_recover, _rescue) for the follow-up of crashed:
 * 1 with *next a checked run to insert (its job defaults to crashed's;
 * keel_run_clear it after), 0 for none, or a negative errno (decide's
 * own, -ENOMEM, -EINVAL) with st's message set; what names the call.
 */
int keel__store_decide(struct keel_store *st, const struct keel_run *crashed,
		       int (*decide)(const struct keel_run *crashed,
				     struct keel_run *next, void *ud),
		       void *ud, const char *what, struct keel_run *next);

/*
 * The text a job is stored as: keel_job_to_json, compact, keys sorted, so
 * an unchanged job is stored as the same bytes; checked to read back.
 * *out is malloc'd. -ENOMEM, -EINVAL (j is not a valid job: the message
 * says why).
 */
int keel__store_job_encode(const struct keel_store *st,
			   const struct keel_job *j, char **out);

/*
 * A stored definition back into a job (*out the caller's). A text that is
 * not JSON, not a valid job or names another job is corrupt: -EIO, and the
 * message names the job ("job 'backup': stored definition is corrupt:
 * ..."); never a crash. -ENOMEM.
 */
int keel__store_job_decode(const struct keel_store *st, const char *name,
			   const char *spec, struct keel_job **out);

/*
 * s as valid UTF-8: *out is s itself when it is (and *tmp NULL), else a
 * malloc'd copy in *tmp with each bad byte replaced by U+FFFD, as the
 * logger does. NULL stays NULL. The caller frees *tmp. -ENOMEM.
 */
int keel__store_utf8(const char *s, const char **out, char **tmp);

/* A malloc'd copy of n bytes of s and a NUL; NULL for s NULL or no memory
 * (*oom set). */
char *keel__store_strndup(const char *s, size_t n, int *oom);

/* n strings (valid UTF-8, not NULL) as a compact JSON array, malloc'd
 * into *out ("[]" for none): how tags (and lists of names) go to an
 * engine. -ENOMEM, -EINVAL (a string is not valid UTF-8). */
int keel__store_tags_json(const struct keel_store *st,
			  const char *const *tags, size_t n, char **out);

/* A JSON array of strings back into *tags / *n (malloc'd, NULL and 0 for
 * an empty one; freed with keel__store_tags_free). NULL text is an empty
 * list; what is not such an array is -EIO, -ENOMEM. */
int keel__store_tags_parse(const struct keel_store *st, const char *text,
			   char ***tags, size_t *n);
void keel__store_tags_free(char **tags, size_t n);

/* This build's SQLite migration steps (*n of them). For the tests. */
KEEL_API const char *const *keel__store_sqlite_steps(size_t *n);

/*
 * For the tests: keel_store_sqlite_open with its own list of migration
 * steps (SQL texts; steps[0] creates version 1) instead of this build's,
 * so a test can show that a step n + 1 is applied to a database at n, in
 * one transaction with the version, and that a failing step leaves the
 * database at n.
 */
KEEL_API int keel__store_sqlite_open_steps(const char *dir,
					   const struct keel_store_config *cfg,
					   const char *const *steps,
					   size_t n_steps,
					   struct keel_store **out, char *err,
					   size_t errlen);

/* The same two for the PostgreSQL store (store_pg.c). */
KEEL_API const char *const *keel__store_pg_steps(size_t *n);
KEEL_API int keel__store_pg_open_steps(const char *conninfo,
				       const struct keel_store_config *cfg,
				       const char *const *steps, size_t n_steps,
				       struct keel_store **out, char *err,
				       size_t errlen);

#endif /* KEEL_SCHED_STORE_INTERNAL_H */
