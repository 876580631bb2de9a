/*
 * src/sched/exec.c - the executor context (keel/exec.h): its config, the
 * registry of in-process handlers, dispatch to the three executors, and
 * the handler executor itself.
 *
 * A handler runs on the caller's thread inside keel_call, with a deferred
 * call that recovers: a handler that panics or faults fails its run, is
 * logged with its stack, and the worker thread goes on. Handlers are not
 * killed at their timeout (a thread cannot be stopped safely): they get a
 * cancel token that is cancelled at the deadline and are expected to poll
 * it; one that returns late is a timed-out run all the same.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/error.h>
#include <keel/cron.h>
#include <keel/exec.h>
#include <keel/log.h>
#include <keel/panic.h>
#include <keel/trace.h>

#include "../obs/json.h"
#include "exec_internal.h"

#define HANDLER_NAME_MAX 64
/* call->error: at least 256 bytes (keel/exec.h), small enough that
 * "panic: " or nothing in front still fits res->error. */
#define CALL_ERR_SIZE 384

struct keel__exec_handler {
	struct keel__exec_handler *next;
	keel_exec_handler_fn fn; /* guarded by ex->mu: replaced in place */
	void *ud;
	char name[HANDLER_NAME_MAX + 1];
};

/* ------------------------------------------------------------------------
 * Config and context
 * ------------------------------------------------------------------------ */

#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

void keel_exec_config_init(struct keel_exec_config *cfg)
{
	if (cfg == NULL)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->log = NULL;
	cfg->kill_grace = 5 * KEEL_SEC;
	cfg->path = DEFAULT_PATH;
	cfg->breaker_failures = 5;
	cfg->breaker_open = 30 * KEEL_SEC;
	cfg->http_connect_timeout = 10 * KEEL_SEC;
}

/* curl_global_init is thread-safe only in libcurl 7.84+ built with
 * atomics; pthread_once makes ours safe either way. It is never undone:
 * other parts of the process (keel's reporters) may use libcurl too. */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int keel_exec_new(const struct keel_exec_config *cfg,
		  struct keel_executor **out)
{
	struct keel_exec_config def;
	struct keel_executor *ex;
	const char *path;

	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	if (cfg == NULL) {
		keel_exec_config_init(&def);
		cfg = &def;
	}
	if (cfg->kill_grace < 0 || cfg->breaker_failures < 1 ||
	    cfg->breaker_open <= 0 || cfg->http_connect_timeout <= 0)
		return -EINVAL;
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK)
		return curl_init_rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO;
	ex = calloc(1, sizeof(*ex));
	if (ex == NULL)
		return -ENOMEM;
	path = cfg->path != NULL ? cfg->path : DEFAULT_PATH;
	ex->path = strdup(path);
	if (ex->path == NULL) {
		free(ex);
		return -ENOMEM;
	}
	ex->cfg = *cfg;
	ex->cfg.path = ex->path;
	pthread_mutex_init(&ex->mu, NULL);
	*out = ex;
	return 0;
}

void keel_exec_free(struct keel_executor *ex)
{
	struct keel__exec_handler *h, *next;

	if (ex == NULL)
		return;
	for (h = ex->handlers; h != NULL; h = next) {
		next = h->next;
		free(h);
	}
	keel__exec_breakers_free(ex);
	pthread_mutex_destroy(&ex->mu);
	free(ex->path);
	free(ex);
}

/* ------------------------------------------------------------------------
 * The handler registry
 * ------------------------------------------------------------------------ */

/* Same charset as a job's name (keel/job.h). */
static int handler_name_ok(const char *s)
{
	size_t i;

	if (s == NULL)
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i >= HANDLER_NAME_MAX)
			return 0;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return 0;
	}
	return i > 0;
}

/* Under ex->mu. */
static struct keel__exec_handler *handler_find(struct keel_executor *ex,
					       const char *name)
{
	struct keel__exec_handler *h;

	for (h = ex->handlers; h != NULL; h = h->next)
		if (strcmp(h->name, name) == 0)
			return h;
	return NULL;
}

int keel_exec_handler_register(struct keel_executor *ex, const char *name,
			       keel_exec_handler_fn fn, void *ud)
{
	struct keel__exec_handler *h, *fresh;

	if (ex == NULL || fn == NULL || !handler_name_ok(name))
		return -EINVAL;
	/* Allocated before the lock, freed when the name was taken: keeps
	 * malloc out of the critical section the runs share. */
	fresh = calloc(1, sizeof(*fresh));
	if (fresh == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&ex->mu);
	h = handler_find(ex, name);
	if (h != NULL) {
		/* Replaced in place, never freed before keel_exec_free: a run
		 * copies fn and ud under the lock, so it uses one pair or the
		 * other, never half of each. */
		h->fn = fn;
		h->ud = ud;
	} else {
		snprintf(fresh->name, sizeof(fresh->name), "%s", name);
		fresh->fn = fn;
		fresh->ud = ud;
		fresh->next = ex->handlers;
		ex->handlers = fresh;
		fresh = NULL;
	}
	pthread_mutex_unlock(&ex->mu);
	free(fresh);
	return 0;
}

int keel_exec_handler_exists(struct keel_executor *ex, const char *name)
{
	int found;

	if (ex == NULL || !handler_name_ok(name))
		return 0;
	pthread_mutex_lock(&ex->mu);
	found = handler_find(ex, name) != NULL;
	pthread_mutex_unlock(&ex->mu);
	return found;
}

/* 0 and *fn, *ud of the handler, or -ENOENT. */
static int handler_get(struct keel_executor *ex, const char *name,
		       keel_exec_handler_fn *fn, void **ud)
{
	struct keel__exec_handler *h;
	int rc = -ENOENT;

	if (!handler_name_ok(name))
		return rc;
	pthread_mutex_lock(&ex->mu);
	h = handler_find(ex, name);
	if (h != NULL) {
		*fn = h->fn;
		*ud = h->ud;
		rc = 0;
	}
	pthread_mutex_unlock(&ex->mu);
	return rc;
}

/* ------------------------------------------------------------------------
 * Text helpers
 * ------------------------------------------------------------------------ */

/* Makes s one line of valid UTF-8 in place (exec_internal.h). */
void keel__exec_clean_line(char *s)
{
	unsigned char *p = (unsigned char *)s;
	size_t n = strlen(s), i = 0;

	while (n > 0 &&
	       (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' '))
		p[--n] = '\0';
	while (i < n) {
		size_t k;

		if (p[i] < 0x80) {
			if (p[i] < 0x20 && p[i] != '\t')
				p[i] = ' '; /* one line in logs and tables */
			i++;
			continue;
		}
		k = keel__utf8_len(p + i, n - i);
		if (k == 0) {
			p[i++] = '?';
			continue;
		}
		i += k;
	}
}

/* ------------------------------------------------------------------------
 * The handler executor
 * ------------------------------------------------------------------------ */

struct handler_frame {
	struct keel_executor *ex;
	const struct keel_job *job;
	keel_exec_handler_fn fn;
	void *ud;
	struct keel_exec_call *call;
	struct keel_exec_result *res;
	int rc;
};

static const char *fault_suffix_name(const struct keel_panic *p)
{
	const struct keel_fault *f = keel_panic_fault(p);

	return f != NULL && f->signo != 0 ? keel__signal_name(f->signo) : NULL;
}

/* Deferred: a panic in the handler becomes the run's error, and a log
 * record with the stack (read here, while the panic is still valid). */
static void handler_recover(void *arg)
{
	struct handler_frame *f = arg;
	const struct keel_panic *p = keel_recover();
	const char *sig;

	if (p == NULL)
		return;
	f->res->panicked = 1;
	sig = fault_suffix_name(p);
	if (sig != NULL)
		snprintf(f->res->error, sizeof(f->res->error), "panic: %s (%s)",
			 keel_panic_message(p), sig);
	else
		snprintf(f->res->error, sizeof(f->res->error), "panic: %s",
			 keel_panic_message(p));
	{
		const struct keel_field fields[] = {
		    KEEL_STR("job", f->job->name),
		    KEEL_STR("handler", f->job->handler.name),
		    KEEL_INT("run_id", f->call->run_id),
		    KEEL_INT("attempt", f->call->attempt),
		};

		keel_log_panic(f->ex->cfg.log, KEEL_LOG_ERROR, "keeld.exec",
			       "handler panicked", p, fields,
			       sizeof(fields) / sizeof(fields[0]));
	}
}

static void handler_body(void *arg)
{
	struct handler_frame *f = arg;

	keel_defer(handler_recover, f);
	f->rc = f->fn(f->call, f->ud);
}

/* The run's trace context on this thread while its handler runs, so that
 * what the handler logs (and its panic record) carries the run's trace. */
static int trace_enter(const char *traceparent, struct keel_trace *saved)
{
	struct keel_trace t;

	if (traceparent == NULL ||
	    keel_traceparent_parse(traceparent, strlen(traceparent), &t) != 0)
		return 0;
	keel_trace_child(&t, &t);
	keel_trace_set(&t, saved);
	return 1;
}

static int exec_handler(struct keel_executor *ex, const struct keel_job *j,
			const struct keel_exec_req *req, int64_t deadline,
			struct keel_exec_result *res)
{
	struct handler_frame f;
	struct keel_exec_call call;
	struct keel_cancel tok;
	struct keel_trace saved;
	char errbuf[CALL_ERR_SIZE];
	int traced, old_stacks, cancelled;
	int64_t now;

	memset(&f, 0, sizeof(f));
	if (j->handler.name == NULL ||
	    handler_get(ex, j->handler.name, &f.fn, &f.ud) != 0) {
		snprintf(res->error, sizeof(res->error),
			 "handler '%s' is not registered in this keeld",
			 j->handler.name != NULL ? j->handler.name : "");
		return 0;
	}
	keel_cancel_init(&tok, NULL, req->cancel);
	keel_cancel_set_deadline(&tok, deadline);
	errbuf[0] = '\0';
	memset(&call, 0, sizeof(call));
	call.job = j;
	call.run_id = req->run_id;
	call.attempt = req->attempt;
	call.scheduled_at = req->scheduled_at;
	call.cancel = &tok;
	call.error = errbuf;
	call.errlen = sizeof(errbuf);
	f.ex = ex;
	f.job = j;
	f.call = &call;
	f.res = res;

	traced = trace_enter(req->traceparent, &saved);
	old_stacks = keel_panic_capture_stacks(1);
	(void)keel_call(handler_body, &f);
	keel_panic_capture_stacks(old_stacks);
	if (traced)
		keel_trace_set(&saved, NULL);

	now = keel_clock_now(NULL);
	cancelled = keel_cancel_err(req->cancel) != 0;
	keel_cancel_destroy(&tok);
	errbuf[sizeof(errbuf) - 1] = '\0'; /* the handler may not have */

	/* A panic says most about what went wrong; then the deadline (the
	 * run took too long, whatever it returned), then a cancel. */
	if (res->panicked) {
		res->state = KEEL_RUN_FAILED;
	} else if (deadline != KEEL_NEVER && now >= deadline) {
		char d[32];

		keel_duration_format(j->timeout, d, sizeof(d));
		res->state = KEEL_RUN_TIMED_OUT;
		snprintf(res->error, sizeof(res->error), "timed out after %s",
			 d);
	} else if (cancelled) {
		res->state = KEEL_RUN_CANCELED;
		snprintf(res->error, sizeof(res->error), "canceled");
	} else if (f.rc == 0) {
		res->state = KEEL_RUN_SUCCEEDED;
	} else {
		res->state = KEEL_RUN_FAILED;
		if (errbuf[0] != '\0')
			snprintf(res->error, sizeof(res->error), "%s", errbuf);
		else
			snprintf(res->error, sizeof(res->error),
				 "handler returned %d", f.rc);
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Dispatch
 * ------------------------------------------------------------------------ */

static void result_init(struct keel_exec_result *res)
{
	memset(res, 0, sizeof(*res));
	res->state = KEEL_RUN_FAILED;
	res->exit_code = -1;
}

int keel_exec_run(struct keel_executor *ex, const struct keel_job *j,
		  const struct keel_exec_req *req, struct keel_exec_result *res)
{
	static const struct keel_exec_req no_req;
	int64_t deadline = KEEL_NEVER;
	int rc;

	if (res == NULL)
		return -EINVAL;
	result_init(res);
	if (ex == NULL || j == NULL) {
		snprintf(res->error, sizeof(res->error),
			 "no executor or no job");
		return -EINVAL;
	}
	if (req == NULL)
		req = &no_req;
	if (j->timeout > 0) {
		int64_t now = keel_clock_now(NULL);

		deadline = j->timeout < KEEL_NEVER - now ? now + j->timeout
							 : KEEL_NEVER;
	}
	switch (j->type) {
	case KEEL_JOB_SHELL:
		rc = keel__exec_shell(ex, j, req, deadline, res);
		break;
	case KEEL_JOB_HTTP:
		rc = keel__exec_http(ex, j, req, deadline, res);
		break;
	case KEEL_JOB_HANDLER:
		rc = exec_handler(ex, j, req, deadline, res);
		break;
	default:
		snprintf(res->error, sizeof(res->error),
			 "unknown executor type %d", (int)j->type);
		return -EINVAL;
	}
	if (rc < 0 && res->error[0] == '\0')
		snprintf(res->error, sizeof(res->error), "%s",
			 rc == -ENOMEM ? "out of memory" : keel_strerror(rc));
	/* Whatever an executor wrote (a path, a program's words, a cut
	 * message), it is stored and shown as JSON: one valid line. */
	keel__exec_clean_line(res->error);
	return rc;
}

void keel_exec_result_clear(struct keel_exec_result *res)
{
	if (res == NULL)
		return;
	free(res->output);
	result_init(res);
}
