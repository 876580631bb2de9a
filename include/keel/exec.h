/*
 * keel/exec.h - keeld's executors: run one attempt of a job and say how it
 * ended.
 *
 *   shell    fork + execve of the job's argv (or /bin/sh -c when asked) in
 *            its own process group and session, a minimal environment plus
 *            the job's, stdout and stderr captured into one capped tail,
 *            resource limits, another user when keeld is root; a timeout
 *            or a cancel kills the whole process group (SIGTERM, then
 *            SIGKILL after a grace period).
 *   http     one request with libcurl: the job's method, headers and
 *            body, a traceparent header (unless the job sets one),
 *            "User-Agent: keeld/<version>" (ditto), no Content-Type unless
 *            the job gives one, no redirects followed. The run succeeds
 *            when the status is in the job's expected range; the response
 *            body is kept from its start, up to 64 KiB, as valid UTF-8
 *            (bad bytes and NULs become U+FFFD). A circuit breaker per
 *            target host (scheme://host:port) fails runs fast, without
 *            connecting, once the host has failed breaker_failures times
 *            in a row; failures are the host's: no connection, the job's
 *            timeout, a 5xx the job did not expect. A 4xx or a cancel
 *            counts as a success for the breaker. A cancel stops the
 *            request within about 50 ms.
 *   handler  a C function registered with keel_exec_handler_register, run
 *            on the calling thread inside a keel scope: a handler that
 *            panics or faults fails its run (panicked = 1, error "panic:
 *            <message>", with " (SIGSEGV)" or the like for a fault), never
 *            the process, and is logged at ERROR with its stack. A handler
 *            is not stopped at its timeout: call->cancel is cancelled then,
 *            and the handler should poll it and return; one that returns
 *            after the deadline, whatever it returns, is TIMED_OUT. While
 *            it runs, the thread's trace context (keel/trace.h) is a child
 *            span of the request's traceparent, when there is one.
 *
 * keel_exec_run blocks for the whole attempt: call it from a worker thread
 * (keeld runs it on a keel_pool). Retries are not its business: the
 * scheduler turns a failed attempt into a new run.
 *
 * Thread-safety: an executor context is shared by any number of threads
 * running attempts at once; registering handlers is safe at any time.
 */
#ifndef KEEL_EXEC_H
#define KEEL_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include <keel/cancel.h>
#include <keel/common.h>
#include <keel/job.h>
#include <keel/run.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_executor;
struct keel_logger;

/* What an in-process handler is given. Valid during the call only. */
struct keel_exec_call {
	const struct keel_job *job;
	int64_t run_id;
	int attempt;
	int64_t scheduled_at;	    /* ms */
	struct keel_cancel *cancel; /* cancelled at the timeout or on cancel;
				       a long handler should poll it */
	char *error;		    /* the handler may write a reason here */
	size_t errlen;		    /* its size (>= 256) */
};

/* A handler returns 0 for success, anything else for failure (its reason
 * in call->error if it wrote one). It may panic: the run fails with the
 * panic's message. */
typedef int (*keel_exec_handler_fn)(struct keel_exec_call *call, void *ud);

struct keel_exec_config {
	struct keel_logger *log;     /* NULL: the default logger */
	int64_t kill_grace;	     /* ns between SIGTERM and SIGKILL of a
					timed-out or cancelled process
					group; default 5 s */
	const char *path;	     /* PATH for bare command names and the
					child's PATH; default
					"/usr/local/bin:/usr/bin:/bin" */
	/* Per-host breaker of the http executor (keel/breaker.h's count
	 * breaker): opens after this many consecutive failures (network
	 * errors and 5xx), stays open this long. Defaults 5 and 30 s. */
	int breaker_failures;
	int64_t breaker_open;
	int64_t http_connect_timeout; /* ns, default 10 s */
};

KEEL_API void keel_exec_config_init(struct keel_exec_config *cfg);

/* 0 and *out, -EINVAL for a bad config, -ENOMEM. */
KEEL_API int keel_exec_new(const struct keel_exec_config *cfg,
			   struct keel_executor **out);
/* Frees the context; no attempt may be running. NULL is a no-op. */
KEEL_API void keel_exec_free(struct keel_executor *ex);

/*
 * keel_exec_handler_register - makes fn available to jobs with
 * {"type": "handler", "name": name}. Registering a name again replaces the
 * function for later runs. 0, -EINVAL (bad name: 1-64 of [A-Za-z0-9._-]),
 * -ENOMEM.
 */
KEEL_API int keel_exec_handler_register(struct keel_executor *ex, const char *name,
					keel_exec_handler_fn fn, void *ud);
/* 1 when a handler of that name is registered. */
KEEL_API int keel_exec_handler_exists(struct keel_executor *ex, const char *name);

/* Identity of the attempt, passed to the child as KEEL_JOB, KEEL_RUN_ID,
 * KEEL_ATTEMPT and TRACEPARENT, to an HTTP target as the traceparent
 * header. */
struct keel_exec_req {
	int64_t run_id;
	int attempt;
	int64_t scheduled_at;	    /* ms */
	struct keel_cancel *cancel; /* may be NULL; cancelling it ends the
				       attempt as KEEL_RUN_CANCELED */
	const char *traceparent;    /* may be NULL */
};

/* How an attempt ended. keel_exec_run fills it; keel_exec_result_clear
 * frees what it owns. */
struct keel_exec_result {
	enum keel_run_state state; /* SUCCEEDED, FAILED, TIMED_OUT, CANCELED */
	int exit_code;		   /* -1 = none */
	int signal;		   /* 0 = none */
	int http_status;	   /* 0 = none */
	int panicked;		   /* 1 when a handler panicked or faulted */
	char *output;		   /* captured tail (shell: stdout+stderr,
				      http: response body), NUL-terminated,
				      NULL = nothing */
	size_t output_len;
	char error[512];	   /* "" on success, else why */
};

/*
 * keel_exec_run - runs one attempt of j and fills *res. Returns 0 when the
 * attempt ran (whatever its outcome, which is in res->state), or a negative
 * errno when it could not be attempted at all (-ENOMEM; res->error says;
 * -EINVAL for ex, j or res NULL or an unknown executor type). req may be
 * NULL: an attempt without identity or cancel token. res->error is one
 * line of valid UTF-8. A job that cannot run as defined (an unregistered
 * handler, a URL libcurl refuses) is a FAILED attempt, not an error.
 * The job's timeout (j->timeout) is applied here.
 */
KEEL_API int keel_exec_run(struct keel_executor *ex, const struct keel_job *j,
			   const struct keel_exec_req *req,
			   struct keel_exec_result *res);

KEEL_API void keel_exec_result_clear(struct keel_exec_result *res);

/* The http executor's breakers, for metrics and the dashboard: calls fn
 * for each target host ("http://example.com:80") with its state name:
 * "closed", "open" or "half_open" ("forced_open", "disabled" are never
 * set by keeld). OPEN is left lazily (keel/breaker.h): a host stays "open"
 * after its open time until a run tries it. fn runs without the
 * executor's lock held, so it may call into the executor; hosts are never
 * forgotten while the executor lives. */
KEEL_API void keel_exec_breakers(struct keel_executor *ex,
				 void (*fn)(const char *host,
					    const char *state, void *ud),
				 void *ud);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_EXEC_H */
