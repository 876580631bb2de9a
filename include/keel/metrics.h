/*
 * keel/metrics.h - counters, gauges and histograms with labels, cheap enough
 * for the hot path, rendered in the Prometheus text exposition format 0.0.4.
 *
 *	struct keel_metrics *reg;
 *	struct keel_family *req;
 *	struct keel_counter *get_ok;
 *
 *	keel_metrics_new(NULL, &reg);
 *	keel_metrics_counter(reg, "http_requests_total", "Requests served.",
 *			     KEEL_LABELS("method", "code"), &req);
 *	get_ok = keel_counter_with(req, "GET", "200");   (once, at set-up)
 *	...
 *	keel_counter_inc(get_ok);                         (hot path, ~3 ns)
 *	...
 *	keel_metrics_render(reg, &text, &len);            (GET /metrics)
 *
 * The model is Prometheus': a registry holds families (one metric name, its
 * help text, its type and its label names); a family holds one child per
 * tuple of label values, and a child holds the value. Looking a child up
 * takes the family's lock; updating a child through its handle takes none.
 * Keep handles: look up once, update many times.
 *
 * How updates stay cheap. Counters and histograms are sharded by thread:
 * every thread that holds one of keel's per-thread slots (keel__thread_slot,
 * 32 of them) gets its own row of the child, on cache lines of its own, the
 * first time it updates that child (one small allocation, once per thread
 * and child), and from then on updates it with a plain load and store: no
 * locked instruction, no line shared with another thread. Threads without a
 * slot use a shared row with atomic adds. Measured on a 2-core VM through
 * libkeel.so: keel_counter_inc 2.7 ns, on one thread and with two threads
 * bumping the same counter alike (a single relaxed atomic add: 9.6 ns, and
 * 37 ns with two threads); keel_histogram_observe 8.4 ns. A render adds the
 * rows up. Gauges are one atomic word each (set must be exact), updated by
 * compare-and-swap: 13 ns, more when threads contend for one gauge.
 *
 * Histograms keep one count per bucket and the sum; _count is not stored
 * but added up from the buckets in the same read, so in every rendering the
 * buckets are cumulative and non-decreasing and le="+Inf" equals _count,
 * even while other threads observe. _sum is read in the same pass and may
 * miss an observation whose bucket was counted (or the other way round).
 *
 * Lifetime: handles (families and children) stay valid until
 * keel_metrics_free, even after keel_metrics_remove. Freeing the registry
 * while another thread still updates a handle is a use-after-free.
 *
 * Errors: every function that can fail returns 0 or a negative errno and
 * changes nothing on failure. Thread-safety: everything may be called from
 * any thread at any time, except where a function says otherwise.
 */
#ifndef KEEL_METRICS_H
#define KEEL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <keel/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_metrics;   /* a registry */
struct keel_family;    /* one metric name and its children */
struct keel_counter;   /* one child of a counter family */
struct keel_gauge;     /* one child of a gauge family */
struct keel_histogram; /* one child of a histogram family */
struct keel_policy;
struct keel_pool;
struct keel_pipeline;

/* The Content-Type of keel_metrics_render's output, for the HTTP layer. */
#define KEEL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Limits: bytes in a metric name, label names per family, finite buckets
 * per histogram. */
#define KEEL_METRICS_MAX_NAME 200
#define KEEL_METRICS_MAX_LABELS 16
#define KEEL_METRICS_MAX_BUCKETS 256

/*
 * KEEL_LABELS("a", "b") expands to the two arguments (array, count) that
 * registration and lookup take; KEEL_NO_LABELS to (NULL, 0).
 */
#define KEEL__STRS(...) ((const char *const[]){ NULL, ##__VA_ARGS__ } + 1)
#define KEEL__NSTRS(...)                                                      \
	(sizeof((const char *const[]){ NULL, ##__VA_ARGS__ }) /               \
		 sizeof(const char *) -                                       \
	 1)
#define KEEL_LABELS(...) KEEL__STRS(__VA_ARGS__), KEEL__NSTRS(__VA_ARGS__)
#define KEEL_NO_LABELS NULL, 0

/* ------------------------------------------------------------------------
 * The registry
 * ------------------------------------------------------------------------ */

struct keel_metrics_config {
	/*
	 * Most children (label-value tuples) one family may hold; a lookup
	 * that would create one more fails with -ENOSPC. It stops a label
	 * fed from unbounded input (a user id, a URL) from eating the
	 * process. Default 10000; >= 1.
	 */
	size_t max_series;
};

KEEL_API void keel_metrics_config_init(struct keel_metrics_config *cfg);

/*
 * keel_metrics_new - an empty registry in *out. cfg may be NULL (defaults).
 * 0; -EINVAL (out NULL, max_series 0); -ENOMEM. The caller owns the
 * registry and frees it with keel_metrics_free.
 */
KEEL_API int keel_metrics_new(const struct keel_metrics_config *cfg,
			      struct keel_metrics **out);

/*
 * keel_metrics_free - frees the registry, its families and children, and
 * removes its collectors and bridges (a bridged breaker gets its previous
 * event listener back, so bridged policies must still exist or have been
 * unbridged; see the bridges below). NULL is a no-op. Not while another
 * thread uses the registry or any of its handles.
 */
KEEL_API void keel_metrics_free(struct keel_metrics *reg);

/* ------------------------------------------------------------------------
 * Families
 * ------------------------------------------------------------------------ */

/*
 * keel_metrics_counter, _gauge, _histogram - register a family and store it
 * in *out.
 *
 *   name    [a-zA-Z_:][a-zA-Z0-9_:]*, at most KEEL_METRICS_MAX_NAME
 *           bytes; counters should end in _total.
 *   help    one line of text for # HELP (UTF-8; backslashes and newlines
 *           are escaped on output); NULL or "" for none.
 *   labels  nlabels label names, each [a-zA-Z_][a-zA-Z0-9_]*, not starting
 *           with "__", no two alike, at most KEEL_METRICS_MAX_LABELS;
 *           histograms may not use "le". (KEEL_LABELS(...), KEEL_NO_LABELS.)
 *   bounds  (histograms) the buckets' upper bounds, nbounds of them, in
 *           any order: they are sorted; each must be a number, not -Inf,
 *           none twice; a +Inf is dropped (the +Inf bucket always exists).
 *           NULL with nbounds 0: keel_metrics_default_buckets.
 *
 * Everything is copied. A family without labels has its one child from
 * the start (it renders 0 until updated); get it with keel_counter_with(fam)
 * and friends.
 *
 * Registering the same definition again (name, type, help, label names in
 * order, bounds) returns the existing family with 0, so independent modules
 * may each register what they use. Returns -EINVAL for a bad argument, and
 * -EEXIST when the name is taken by a different definition or would clash
 * with a histogram's series (a histogram "x" owns x_bucket, x_sum and
 * x_count); -ENOMEM. On failure *out is untouched and the registry is as
 * before.
 */
KEEL_API int keel_metrics_counter(struct keel_metrics *reg, const char *name,
				  const char *help, const char *const *labels,
				  size_t nlabels, struct keel_family **out);
KEEL_API int keel_metrics_gauge(struct keel_metrics *reg, const char *name,
				const char *help, const char *const *labels,
				size_t nlabels, struct keel_family **out);
KEEL_API int keel_metrics_histogram(struct keel_metrics *reg, const char *name,
				    const char *help, const char *const *labels,
				    size_t nlabels, const double *bounds,
				    size_t nbounds, struct keel_family **out);

/* Prometheus' client default: .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10
 * (seconds). */
#define KEEL_METRICS_DEFAULT_BUCKETS_N 11
KEEL_API extern const double
	keel_metrics_default_buckets[KEEL_METRICS_DEFAULT_BUCKETS_N];

/*
 * Bucket lists, written into out[0..count):
 *   exponential: start, start*factor, start*factor^2, ... (start > 0,
 *                factor > 1);
 *   linear:      start, start+width, ...                  (width > 0).
 * count is 1..KEEL_METRICS_MAX_BUCKETS and every bound must be finite.
 * 0, or -EINVAL (out untouched).
 */
KEEL_API int keel_metrics_buckets_exponential(double start, double factor,
					      size_t count, double *out);
KEEL_API int keel_metrics_buckets_linear(double start, double width,
					 size_t count, double *out);

/* ------------------------------------------------------------------------
 * Children
 * ------------------------------------------------------------------------ */

/*
 * keel_counter_get, _gauge_get, _histogram_get - the child for one tuple of
 * label values (n of them, one per label name, in order; valid UTF-8, any
 * bytes otherwise: quotes, backslashes and newlines are escaped on output),
 * created at zero on first use. Takes the family's lock; keep the handle.
 * 0; -EINVAL (NULL arguments, a family of another type, n not the number
 * of labels, a NULL or non-UTF-8 value); -ENOSPC (the family holds
 * max_series children); -ENOMEM.
 */
KEEL_API int keel_counter_get(struct keel_family *fam,
			      const char *const *values, size_t n,
			      struct keel_counter **out);
KEEL_API int keel_gauge_get(struct keel_family *fam, const char *const *values,
			    size_t n, struct keel_gauge **out);
KEEL_API int keel_histogram_get(struct keel_family *fam,
				const char *const *values, size_t n,
				struct keel_histogram **out);

/*
 * keel_counter_with(fam, "GET", "200") - the same, with the values as
 * arguments (none for a family without labels). Returns the handle, or
 * NULL with errno set to the error above. The update functions ignore a
 * NULL handle, so an unchecked lookup failure loses counts, not the process.
 */
#define keel_counter_with(fam, ...)                                           \
	keel__counter_with((fam), KEEL_LABELS(__VA_ARGS__))
#define keel_gauge_with(fam, ...)                                             \
	keel__gauge_with((fam), KEEL_LABELS(__VA_ARGS__))
#define keel_histogram_with(fam, ...)                                         \
	keel__histogram_with((fam), KEEL_LABELS(__VA_ARGS__))
KEEL_API struct keel_counter *keel__counter_with(struct keel_family *fam,
						 const char *const *values,
						 size_t n);
KEEL_API struct keel_gauge *keel__gauge_with(struct keel_family *fam,
					     const char *const *values,
					     size_t n);
KEEL_API struct keel_histogram *keel__histogram_with(struct keel_family *fam,
						     const char *const *values,
						     size_t n);

/*
 * keel_metrics_remove - takes one child out of its family: it is no longer
 * rendered, and a later lookup of the same values creates a fresh child at
 * zero. The removed child's handle stays valid (updates to it are kept but
 * never shown) until keel_metrics_free. 0; -EINVAL (as for _get); -ENOENT
 * when there is no such child. A family without labels keeps its child:
 * -EINVAL.
 */
KEEL_API int keel_metrics_remove(struct keel_family *fam,
				 const char *const *values, size_t n);

/* ------------------------------------------------------------------------
 * Updates: lock-free, allocation-free after a thread's first update of a
 * child. A NULL handle is ignored (-EINVAL where there is a return value).
 * ------------------------------------------------------------------------ */

KEEL_API void keel_counter_inc(struct keel_counter *c);
/* Adds n; a negative n is -EINVAL and adds nothing. */
KEEL_API int keel_counter_add(struct keel_counter *c, int64_t n);
/* Adds v (seconds, bytes...); v < 0 or NaN is -EINVAL and adds nothing. */
KEEL_API int keel_counter_add_double(struct keel_counter *c, double v);
/*
 * keel_counter_set, _set_double - set the count to v. For collectors that
 * mirror a count kept elsewhere (keel_pool_stats, /proc): a child is either
 * set or added to, never both at once (a set racing an add on another
 * thread may lose the add). _set_double: v < 0 or NaN is -EINVAL.
 */
KEEL_API void keel_counter_set(struct keel_counter *c, uint64_t v);
KEEL_API int keel_counter_set_double(struct keel_counter *c, double v);
/* The current count: all threads' rows added up (a moment old). */
KEEL_API double keel_counter_value(const struct keel_counter *c);

/* Gauges: any double, NaN and infinities included. */
KEEL_API void keel_gauge_set(struct keel_gauge *g, double v);
KEEL_API void keel_gauge_add(struct keel_gauge *g, double v);
KEEL_API void keel_gauge_sub(struct keel_gauge *g, double v);
KEEL_API void keel_gauge_inc(struct keel_gauge *g);
KEEL_API void keel_gauge_dec(struct keel_gauge *g);
KEEL_API double keel_gauge_value(const struct keel_gauge *g);

/*
 * keel_histogram_observe - counts v in the first bucket whose bound is
 * >= v (the +Inf bucket if none) and adds it to the sum. NaN is -EINVAL
 * and changes nothing; +-Inf are counted (and make the sum infinite).
 */
KEEL_API int keel_histogram_observe(struct keel_histogram *h, double v);
/* Count and sum, read as a render reads them (count = sum of buckets).
 * Either pointer may be NULL. */
KEEL_API void keel_histogram_read(const struct keel_histogram *h,
				  uint64_t *count, double *sum);

/* ------------------------------------------------------------------------
 * Collectors and rendering
 * ------------------------------------------------------------------------ */

/*
 * A collector refreshes values that live elsewhere just before each render
 * (keel_pool_stats, /proc/self, a queue's length). It runs on the
 * rendering thread, one render at a time, and may register families, look
 * up, update and remove children; it must not call keel_metrics_render,
 * keel_metrics_add_collector, _remove_collector or the bridge functions on
 * the same registry (they return -EDEADLK there).
 */
typedef void (*keel_metrics_collect_fn)(struct keel_metrics *reg, void *ud);

/* 0; -EINVAL (NULL reg or fn); -EEXIST (the same fn and ud are already
 * there); -EDEADLK (from a collector); -ENOMEM. */
KEEL_API int keel_metrics_add_collector(struct keel_metrics *reg,
					keel_metrics_collect_fn fn, void *ud);
/* Removes the collector added with fn and ud, waiting for a render that is
 * running it: when this returns 0 it is not running and never will again.
 * -ENOENT when there is none; -EINVAL; -EDEADLK (from a collector). */
KEEL_API int keel_metrics_remove_collector(struct keel_metrics *reg,
					   keel_metrics_collect_fn fn, void *ud);

/*
 * keel_metrics_render - runs the collectors, then writes every family that
 * has children in the text exposition format 0.0.4 into a new
 * NUL-terminated buffer *buf (free() it) of *len bytes (len may be NULL):
 *
 *	# HELP http_requests_total Requests served.
 *	# TYPE http_requests_total counter
 *	http_requests_total{method="GET",code="200"} 1027
 *
 * Families are sorted by name and children by label values, so the same
 * state renders the same text. Numbers: integers without exponent where the
 * value is an exact integer, else the shortest text that reads back as the
 * same double; +Inf, -Inf, NaN. Histograms: x_bucket{...,le="<bound>"}
 * cumulative in ascending order, le="+Inf" equal to x_count, x_sum,
 * x_count. Safe while other threads update (values are a moment old).
 * 0; -EINVAL (NULL reg or buf); -EDEADLK (from a collector); -ENOMEM (*buf
 * is then NULL).
 */
KEEL_API int keel_metrics_render(struct keel_metrics *reg, char **buf,
				 size_t *len);

/*
 * keel_metrics_add_process - the standard process metrics, read from /proc
 * at each render: process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds. 0; -EEXIST when already added; the errors of
 * registration.
 */
KEEL_API int keel_metrics_add_process(struct keel_metrics *reg);

/* ------------------------------------------------------------------------
 * Bridges: policies and pools as metrics
 * ------------------------------------------------------------------------ */

/*
 * keel_metrics_bridge_policy - exports a policy's counters (read with
 * keel_policy_stats at each render, so they equal them exactly):
 *
 *   keel_policy_calls_total{policy,kind,outcome}     every kind; outcome is
 *       success, failure, panic (recovered panics and faults) or rejected
 *       (breaker open, bulkhead full, rate limited, budget empty)
 *   keel_policy_retries_total{policy,kind}           retry
 *   keel_policy_timeouts_total{policy,kind}          timeout
 *   keel_policy_fallbacks_total{policy,kind}         fallback
 *   keel_policy_injected_total{policy,kind}          chaos
 *   keel_breaker_state{policy}                       breaker: 0 closed,
 *       1 open, 2 half-open, 3 forced-open, 4 disabled
 *   keel_breaker_transitions_total{policy,from,to}   breaker; from, to are
 *       keel_breaker_state_name()s
 *
 * policy is keel_policy_name(p) and kind keel_policy_kind_name(). The
 * transitions come from the breaker's KEEL_EV_STATE events: bridging a
 * breaker installs an event listener that counts them and then calls the
 * listener that was there before (which keeps working); other policies'
 * listeners are not touched. Because a listener is set, the breaker emits
 * an event for every call, which reads its clock once per call.
 *
 * Bridging the same policy again only counts a reference (so that
 * keel_metrics_bridge_pipeline can share policies); two different policies
 * of one kind with the same name would give the same series: -EEXIST.
 * 0; -EINVAL; -EEXIST; -EDEADLK (from a collector); -ENOMEM.
 *
 * Lifetime and threads: the registry reads the policy at every render until
 * it is unbridged. Call keel_metrics_unbridge_policy before
 * keel_policy_free, or keep the policy alive until keel_metrics_free. As
 * with keel_policy_on_event, bridge and unbridge a breaker while no call is
 * running through it.
 */
KEEL_API int keel_metrics_bridge_policy(struct keel_metrics *reg,
					struct keel_policy *p);
/*
 * keel_metrics_unbridge_policy - drops one reference; the last one removes
 * the policy's series, waits for a render that is reading it, and gives a
 * breaker its previous listener back (unless the listener was replaced
 * since; then the current one stays). After it returns 0 for the last
 * reference, the registry never touches p again. -ENOENT when p is not
 * bridged; -EINVAL; -EDEADLK.
 */
KEEL_API int keel_metrics_unbridge_policy(struct keel_metrics *reg,
					  struct keel_policy *p);
/* Every policy of the pipeline, as above (all or none are bridged). */
KEEL_API int keel_metrics_bridge_pipeline(struct keel_metrics *reg,
					  struct keel_pipeline *pl);
KEEL_API int keel_metrics_unbridge_pipeline(struct keel_metrics *reg,
					    struct keel_pipeline *pl);

/*
 * keel_metrics_bridge_pool - exports keel_pool_stats(pool), read at each
 * render, with the label pool="<name>" (name is copied):
 *
 *   counters keel_pool_tasks_submitted_total, _rejected_total,
 *            _completed_total, _panicked_total, _cancelled_total,
 *            _caller_runs_total, _overdue_total,
 *            keel_pool_task_latency_samples_total (tasks timed);
 *   gauges   keel_pool_queued_tasks, keel_pool_running_tasks,
 *            keel_pool_threads, keel_pool_task_latency_avg_seconds,
 *            keel_pool_task_latency_max_seconds (submit to finish).
 *
 * 0; -EINVAL (NULL, an invalid UTF-8 name); -EEXIST (the pool, or another
 * pool with this name, is bridged); -EDEADLK; -ENOMEM.
 * Call keel_metrics_unbridge_pool before keel_pool_free: it removes the
 * series and waits for a render that is reading the pool; after it returns
 * the registry never touches the pool again. -ENOENT when not bridged.
 */
KEEL_API int keel_metrics_bridge_pool(struct keel_metrics *reg,
				      struct keel_pool *pool, const char *name);
KEEL_API int keel_metrics_unbridge_pool(struct keel_metrics *reg,
					struct keel_pool *pool);

/* ------------------------------------------------------------------------
 * For keel's own layers (the bridges, the HTTP metrics middleware). Not
 * part of the API.
 * ------------------------------------------------------------------------ */

/* One family to register; type: 0 counter, 1 gauge, 2 histogram. */
struct keel__family_spec {
	int type;
	const char *name;
	const char *help;
	const char *const *labels;
	size_t nlabels;
	const double *bounds;
	size_t nbounds;
};
/* Registers n families all or nothing (out[0..n)); errors as for
 * keel_metrics_counter. Registration is otherwise per family. */
KEEL_API int keel__metrics_register_all(struct keel_metrics *reg,
					const struct keel__family_spec *specs,
					size_t n, struct keel_family **out);
/*
 * The collector lock: held while collectors run. _lock returns -EDEADLK
 * on a thread running this registry's collectors, -EINVAL for NULL. With
 * it held: _insert (release, when not NULL, is called with ud by
 * keel_metrics_free), _erase (-ENOENT), _find (the ud of the first
 * collector with fn for which match(ud, arg) is true; match NULL: any).
 */
KEEL_API int keel__metrics_collectors_lock(struct keel_metrics *reg);
KEEL_API void keel__metrics_collectors_unlock(struct keel_metrics *reg);
KEEL_API int keel__metrics_collector_insert(struct keel_metrics *reg,
					    keel_metrics_collect_fn fn,
					    void *ud, void (*release)(void *ud));
KEEL_API int keel__metrics_collector_erase(struct keel_metrics *reg,
					   keel_metrics_collect_fn fn, void *ud);
KEEL_API void *keel__metrics_collector_find(struct keel_metrics *reg,
					    keel_metrics_collect_fn fn,
					    int (*match)(void *ud,
							 const void *arg),
					    const void *arg);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_METRICS_H */
