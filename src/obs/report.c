/*
 * src/obs/report.c - the error reporter (keel/report.h): events copied into
 * a bounded queue, delivered by one background thread to the webhook,
 * Sentry and the sink, each try run through keel's own retry policy.
 *
 * Why the retry policy: it already does what a delivery loop needs (a
 * backoff with jitter, a server's Retry-After with a cap, a cancel token
 * that ends a wait at once), and its protected call runs in a keel scope,
 * so a bug that panics while one event is rendered or sent fails that
 * event instead of killing the reporter thread.
 *
 * Why one easy handle per destination, kept for the thread's life: libcurl
 * keeps the connection of a handle alive between transfers, so a burst of
 * reports costs one TCP (and TLS) handshake, not one per report.
 *
 * Shutdown must not hang on a server that never answers: each transfer has
 * a timeout, the progress callback abandons a transfer once the reporter's
 * token is cancelled, and the retry waits on that token.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include <keel/backoff.h>
#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/go.h>
#include <keel/report.h>
#include <keel/retry.h>

#include "json.h"

enum { DEST_WEBHOOK = 1, DEST_SENTRY = 2, DEST_SINK = 4 };

struct keel_reporter {
	/* Configuration (read-only once the thread runs). */
	char *webhook_url;
	char *dsn_text;
	struct keel__sentry_dsn *dsn;
	keel_report_sink_fn sink;
	void *sink_ud;
	struct curl_slist *webhook_headers, *sentry_headers;
	char *service, *environment, *release, *server_name;
	struct keel__report_meta meta;
	char *spool_dir;
	unsigned dests;
	int64_t timeout, shutdown_timeout;
	struct keel_policy *retry;
	struct keel_cancel *cancel;

	/* The queue: a ring of cap items; guarded by mu. */
	pthread_mutex_t mu;
	pthread_cond_t work;  /* an item was queued, or stopping */
	pthread_cond_t idle;  /* the queue emptied and nothing is in flight */
	struct keel__report_item **ring;
	size_t cap, head, count;
	struct keel__report_item *busy; /* being delivered */
	int closed;   /* free has begun: send refuses */
	int stopping; /* the thread ends when the queue is empty */
	pthread_t thread;

	/* The thread's own. */
	CURL *curl_webhook, *curl_sentry;

	/* Counters. */
	atomic_uint_least64_t queued, sent, failed, dropped, retried, spooled,
		spool_bad;
};

/* ------------------------------------------------------------------------
 * libcurl set-up
 * ------------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

/* curl_global_init is thread-safe only when libcurl says so
 * (CURL_VERSION_THREADSAFE, 7.84+ built with atomics); pthread_once makes
 * keel's own calls safe either way. No curl_global_cleanup: another thread
 * or library may still use libcurl when a reporter is freed. */
static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------------------
 * Items: deep copies of events
 * ------------------------------------------------------------------------ */

void keel__report_item_free(struct keel__report_item *it)
{
	size_t i;

	if (it == NULL)
		return;
	free(it->message);
	free(it->module);
	free(it->panic_message);
	free(it->panic_kind);
	if (it->frames_owned)
		for (i = 0; i < it->nframes; i++) {
			free((char *)it->frames[i].function);
			free((char *)it->frames[i].file);
		}
	free(it->frames);
	for (i = 0; i < 2 * it->ntags; i++)
		free(it->tags[i]);
	free(it->tags);
	free(it->extra);
	free(it->service);
	free(it->release);
	free(it->environment);
	free(it->server_name);
	free(it->spool_path);
	free(it);
}

void keel__report_event_id(char buf[33])
{
	uint8_t b[16];
	size_t i, got = 0;

	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, GRND_NONBLOCK);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	for (i = got; i < sizeof(b); i += 8) { /* no entropy yet: still unique */
		uint64_t x = keel_backoff_rand(NULL);

		memcpy(b + i, &x, sizeof(b) - i < 8 ? sizeof(b) - i : 8);
	}
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	for (i = 0; i < 16; i++) {
		buf[2 * i] = "0123456789abcdef"[b[i] >> 4];
		buf[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
	}
	buf[32] = '\0';
}

void keel__report_rfc3339(int64_t ns, char buf[32])
{
	struct timespec ts;

	ts.tv_sec = (time_t)(ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	keel__rfc3339(&ts, buf); /* a negative ns is written as the epoch */
}

static const char *level_of(const char *level)
{
	static const char *const levels[] = { "fatal", "error", "warning",
					      "info", "debug" };
	size_t i;

	if (level == NULL)
		return "error";
	for (i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(level, levels[i]) == 0)
			return levels[i];
	return NULL;
}

static int64_t now_realtime(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Everything about ev that can be refused, checked before anything is
 * allocated. */
static int check_event(const struct keel_report_event *ev, size_t *ntags,
		       size_t *extra_len)
{
	size_t n = 0;

	if (ev->message == NULL || level_of(ev->level) == NULL ||
	    (ev->frames == NULL && ev->nframes > 0) || ev->timestamp < 0)
		return -EINVAL;
	if (ev->tags != NULL) {
		while (ev->tags[n] != NULL) {
			if (ev->tags[n + 1] == NULL || ev->tags[n][0] == '\0')
				return -EINVAL;
			n += 2;
		}
	}
	*ntags = n / 2;
	*extra_len = 0;
	if (ev->extra_json != NULL) {
		*extra_len = ev->extra_len != 0 ? ev->extra_len
						: strlen(ev->extra_json);
		if (keel__report_json_object_check(ev->extra_json, *extra_len))
			return -EINVAL;
	}
	return 0;
}

static int dup_to(char **dst, const char *s)
{
	*dst = NULL;
	if (s == NULL)
		return 0;
	*dst = strdup(s);
	return *dst != NULL ? 0 : -ENOMEM;
}

static int item_from_event(const struct keel_report_event *ev,
			   struct keel__report_item **out)
{
	struct keel__report_item *it;
	const struct keel_trace *tr;
	void *const *frames = ev->frames;
	size_t nframes = ev->nframes, ntags, extra_len, i;
	int rc = check_event(ev, &ntags, &extra_len);

	*out = NULL;
	if (rc != 0)
		return rc;
	it = calloc(1, sizeof(*it));
	if (it == NULL)
		return -ENOMEM;
	keel__report_event_id(it->event_id);
	it->level = level_of(ev->level);
	it->timestamp = ev->timestamp != 0 ? ev->timestamp : now_realtime();
	it->handled = 1;
	if (dup_to(&it->message, ev->message) || dup_to(&it->module, ev->module))
		goto oom;
	if (ev->panic != NULL) {
		const struct keel_fault *f = keel_panic_fault(ev->panic);

		it->has_panic = 1;
		it->panic_runtime = keel_panic_is_runtime(ev->panic);
		if (f != NULL)
			it->fault = *f;
		if (dup_to(&it->panic_message, keel_panic_message(ev->panic)) ||
		    dup_to(&it->panic_kind, keel_panic_kind_name(
						    keel_panic_kind(ev->panic))))
			goto oom;
		if (frames == NULL) {
			nframes = keel_panic_stack(ev->panic, &frames);
			it->frames_raw = 1;
		}
	}
	if (nframes > KEEL__REPORT_MAX_FRAMES)
		nframes = KEEL__REPORT_MAX_FRAMES;
	if (nframes > 0) {
		it->frames = calloc(nframes, sizeof(*it->frames));
		if (it->frames == NULL)
			goto oom;
		for (i = 0; i < nframes; i++)
			it->frames[i].pc = frames[i];
		it->nframes = nframes;
	}
	tr = ev->trace != NULL ? ev->trace : keel_trace_current();
	if (tr != NULL && keel_trace_valid(tr)) {
		it->trace = *tr;
		it->has_trace = 1;
	}
	if (ntags > 0) {
		it->tags = calloc(2 * ntags, sizeof(char *));
		if (it->tags == NULL)
			goto oom;
		it->ntags = ntags;
		for (i = 0; i < 2 * ntags; i++)
			if (dup_to(&it->tags[i], ev->tags[i]))
				goto oom;
	}
	if (ev->extra_json != NULL) {
		it->extra = strndup(ev->extra_json, extra_len);
		if (it->extra == NULL)
			goto oom;
		it->extra_len = extra_len;
	}
	*out = it;
	return 0;
oom:
	keel__report_item_free(it);
	return -ENOMEM;
}

void keel__report_name_frames(struct keel__report_item *it)
{
	size_t i;

	if (it->frames_named)
		return;
	if (it->frames_raw && it->nframes > 0) {
		/* Start where the user's code panicked or faulted, as the
		 * crash report does. */
		void *pcs[KEEL__REPORT_MAX_FRAMES];
		size_t skip;

		for (i = 0; i < it->nframes; i++)
			pcs[i] = it->frames[i].pc;
		skip = keel__stack_skip(pcs, it->nframes);
		memmove(it->frames, it->frames + skip,
			(it->nframes - skip) * sizeof(*it->frames));
		it->nframes -= skip;
	}
	for (i = 0; i < it->nframes; i++) {
		struct keel_frame f;

		/* keel's strings live until exit: no copy needed. The faulting
		 * frame's pc is the instruction itself, not a return address. */
		if (keel__frame_resolve(it->frames[i].pc,
					it->fault.signo != 0 &&
						it->frames[i].pc == it->fault.pc,
					&f)) {
			it->frames[i].function = f.function;
			it->frames[i].file = f.file;
			it->frames[i].line = f.line;
		}
	}
	it->frames_named = 1;
}

/* ------------------------------------------------------------------------
 * The webhook body
 * ------------------------------------------------------------------------ */

static void str_or_null(struct keel__json *j, const char *k, const char *v)
{
	keel__json_key(j, k);
	keel__json_str(j, v); /* NULL: null */
}

static void stack_json(struct keel__json *j, const struct keel__report_item *it)
{
	size_t i;

	keel__json_key(j, "stack");
	keel__json_arr(j);
	for (i = 0; i < it->nframes; i++) {
		const struct keel__report_frame *f = &it->frames[i];

		/* Unknown parts are left out, as in keel's other stacks. */
		keel__json_obj(j);
		if (f->function != NULL)
			str_or_null(j, "function", f->function);
		if (f->file != NULL)
			str_or_null(j, "file", f->file);
		if (f->line > 0) {
			keel__json_key(j, "line");
			keel__json_int(j, f->line);
		}
		keel__json_key(j, "pc");
		keel__json_ptr(j, f->pc);
		keel__json_obj_end(j);
	}
	keel__json_arr_end(j);
}

void keel__report_webhook_json(struct keel__json *j,
			       const struct keel__report_item *it,
			       const struct keel__report_meta *m)
{
	char ts[32], hex[33];
	size_t i;

	keel__report_rfc3339(it->timestamp, ts);
	keel__json_obj(j);
	str_or_null(j, "event_id", it->event_id);
	str_or_null(j, "timestamp", ts);
	str_or_null(j, "level", it->level);
	str_or_null(j, "message", it->message);
	str_or_null(j, "module", it->module);
	str_or_null(j, "service", it->service ? it->service : m->service);
	str_or_null(j, "environment",
		    it->environment ? it->environment : m->environment);
	str_or_null(j, "release", it->release ? it->release : m->release);
	str_or_null(j, "server_name",
		    it->server_name ? it->server_name : m->server_name);
	if (it->has_trace) {
		keel_trace_id_hex(&it->trace, hex);
		str_or_null(j, "trace_id", hex);
		keel_span_id_hex(&it->trace, hex);
		str_or_null(j, "span_id", hex);
	} else {
		str_or_null(j, "trace_id", NULL);
		str_or_null(j, "span_id", NULL);
	}
	keel__json_key(j, "tags");
	keel__json_obj(j);
	for (i = 0; i < it->ntags; i++) {
		keel__json_key(j, it->tags[2 * i]);
		keel__json_str(j, it->tags[2 * i + 1]);
	}
	keel__json_obj_end(j);
	keel__json_key(j, "extra");
	if (it->extra != NULL)
		keel__json_raw(j, it->extra, it->extra_len);
	else
		keel__json_raw(j, "{}", 2);
	if (it->has_panic) {
		keel__json_key(j, "panic");
		keel__json_obj(j);
		str_or_null(j, "message", it->panic_message);
		str_or_null(j, "kind", it->panic_kind);
		keel__json_key(j, "runtime");
		keel__json_bool(j, it->panic_runtime);
		keel__json_key(j, "handled");
		keel__json_bool(j, it->handled);
		if (it->fault.signo != 0) {
			keel__json_key(j, "signal");
			keel__json_fault(j, &it->fault);
		}
		stack_json(j, it);
		keel__json_obj_end(j);
	} else if (it->nframes > 0) {
		stack_json(j, it);
	}
	keel__json_obj_end(j);
}

/* ------------------------------------------------------------------------
 * One try: HTTP POST or the sink
 * ------------------------------------------------------------------------ */

struct http_ctx {
	int64_t retry_after; /* ns, from a Retry-After header */
};

static size_t discard_body(char *p, size_t size, size_t n, void *ud)
{
	(void)p;
	(void)ud;
	return size * n;
}

/* Retry-After: delay-seconds or an HTTP-date (RFC 9110, 10.2.3). */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	static const char name[] = "retry-after:";
	struct http_ctx *c = ud;
	size_t len = size * n, k;
	char val[128];

	if (len < sizeof(name) - 1 || strncasecmp(p, name, sizeof(name) - 1))
		return len;
	p += sizeof(name) - 1;
	len -= sizeof(name) - 1;
	while (len > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		len--;
	}
	while (len > 0 && isspace((unsigned char)p[len - 1]))
		len--;
	if (len == 0 || len >= sizeof(val))
		return size * n;
	memcpy(val, p, len);
	val[len] = '\0';
	for (k = 0; k < len && val[k] >= '0' && val[k] <= '9'; k++)
		;
	if (k == len && len <= 9) {
		c->retry_after = atoll(val) * KEEL_SEC;
	} else {
		time_t t = curl_getdate(val, NULL);
		time_t now = time(NULL);

		if (t != -1)
			c->retry_after = t > now ? (int64_t)(t - now) * KEEL_SEC
						 : 0;
	}
	return size * n;
}

/* Abandons a transfer once the reporter is cancelled (libcurl calls this
 * at least once a second, more often while data flows). */
static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c,
		       curl_off_t d)
{
	(void)a;
	(void)b;
	(void)c;
	(void)d;
	return keel_cancel_err(ud) != 0;
}

static int curl_code(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT: return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT: return -ETIMEDOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY: return -EHOSTUNREACH;
	case CURLE_ABORTED_BY_CALLBACK: return -ECANCELED;
	case CURLE_OUT_OF_MEMORY: return -ENOMEM;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE: return -ECONNRESET;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT: return -EPROTO; /* configuration: no retry */
	default: return -EIO;
	}
}

static int http_post(struct keel_reporter *r, CURL **hp, const char *url,
		     struct curl_slist *headers, const char *body, size_t len,
		     int64_t *retry_after)
{
	struct http_ctx ctx = { 0 };
	long status = 0;
	CURLcode rc;
	CURL *h = *hp;

	if (h == NULL) {
		h = curl_easy_init();
		if (h == NULL)
			return -ENOMEM;
		*hp = h;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "keel/" KEEL_VERSION_STRING);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
			 (long)((r->timeout + KEEL_MSEC - 1) / KEEL_MSEC));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &ctx);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, r->cancel);
	rc = curl_easy_perform(h);
	*retry_after = ctx.retry_after;
	if (rc != CURLE_OK)
		return curl_code(rc);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 200 && status < 300)
		return 0;
	if (status == 429)
		return -EBUSY;
	if (status == 408)
		return -ETIMEDOUT;
	if (status >= 500)
		return -EAGAIN;
	return -EPROTO; /* any other answer will not change by asking again */
}

/* What is worth another try (keel/report.h lists it for sinks too). */
static int retryable(const struct keel_outcome *o, void *ud)
{
	(void)ud;
	switch (o->code) {
	case -EAGAIN:
	case -EBUSY:
	case -EIO:
	case -ETIMEDOUT:
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
		return 1;
	default:
		return 0;
	}
}

struct attempt {
	struct keel_reporter *r;
	unsigned dest;
	const char *body;
	size_t len;
};

static int attempt_op(struct keel_exec *x, void *arg)
{
	struct attempt *a = arg;
	struct keel_reporter *r = a->r;
	int64_t ra = 0;
	int rc;

	switch (a->dest) {
	case DEST_WEBHOOK:
		rc = http_post(r, &r->curl_webhook, r->webhook_url,
			       r->webhook_headers, a->body, a->len, &ra);
		break;
	case DEST_SENTRY:
		rc = http_post(r, &r->curl_sentry, r->dsn->envelope_url,
			       r->sentry_headers, a->body, a->len, &ra);
		break;
	default:
		rc = r->sink(r->sink_ud, a->body, a->len);
		if (rc > 0)
			rc = -EINVAL;
	}
	x->retry_after = ra;
	return rc;
}

/* Delivers to one destination with retries; 0 or the last failure. */
static int deliver_to(struct keel_reporter *r, unsigned dest,
		      const char *body, size_t len)
{
	struct attempt a = { r, dest, body, len };
	struct keel_outcome out;
	int rc = keel_policy_execute(r->retry, attempt_op, &a, r->cancel, &out);

	if (out.attempts > 1)
		atomic_fetch_add(&r->retried, (uint64_t)(out.attempts - 1));
	return rc;
}

static void deliver(struct keel_reporter *r, struct keel__report_item *it)
{
	struct keel__json j;

	keel__report_name_frames(it);
	if (r->dests & (DEST_WEBHOOK | DEST_SINK)) {
		keel__json_init(&j, NULL, 2048);
		keel__report_webhook_json(&j, it, &r->meta);
		if (!j.failed) {
			if ((r->dests & DEST_WEBHOOK) &&
			    deliver_to(r, DEST_WEBHOOK, j.buf, j.len) == 0)
				it->done |= DEST_WEBHOOK;
			if ((r->dests & DEST_SINK) &&
			    deliver_to(r, DEST_SINK, j.buf, j.len) == 0)
				it->done |= DEST_SINK;
		}
		keel__json_free(&j);
	}
	if (r->dests & DEST_SENTRY) {
		keel__json_init(&j, NULL, 4096);
		keel__sentry_envelope(&j, it, &r->meta, r->dsn_text,
				      now_realtime());
		if (!j.failed && deliver_to(r, DEST_SENTRY, j.buf, j.len) == 0)
			it->done |= DEST_SENTRY;
		keel__json_free(&j);
	}
}

static void finish(struct keel_reporter *r, struct keel__report_item *it)
{
	if ((it->done & r->dests) == r->dests) {
		if (it->spool_path != NULL && unlink(it->spool_path) != 0 &&
		    errno != ENOENT)
			fprintf(stderr, "keel: cannot delete sent crash record "
					"%s: %s\n",
				it->spool_path, strerror(errno));
		atomic_fetch_add(&r->sent, 1);
	} else if (keel_cancel_err(r->cancel) != 0) {
		atomic_fetch_add(&r->dropped, 1);
	} else {
		atomic_fetch_add(&r->failed, 1);
	}
	keel__report_item_free(it);
}

/* ------------------------------------------------------------------------
 * The queue and the thread
 * ------------------------------------------------------------------------ */

static void *worker(void *arg)
{
	struct keel_reporter *r = arg;

	keel_thread_set_name("keel-report");
	pthread_mutex_lock(&r->mu);
	for (;;) {
		struct keel__report_item *it;

		while (r->count == 0 && !r->stopping)
			pthread_cond_wait(&r->work, &r->mu);
		if (r->count == 0)
			break;
		it = r->ring[r->head];
		r->head = (r->head + 1) % r->cap;
		r->count--;
		r->busy = it;
		pthread_mutex_unlock(&r->mu);
		if (keel_cancel_err(r->cancel) == 0)
			deliver(r, it);
		finish(r, it);
		pthread_mutex_lock(&r->mu);
		r->busy = NULL;
		if (r->count == 0)
			pthread_cond_broadcast(&r->idle);
	}
	pthread_cond_broadcast(&r->idle);
	pthread_mutex_unlock(&r->mu);
	curl_easy_cleanup(r->curl_webhook);
	curl_easy_cleanup(r->curl_sentry);
	r->curl_webhook = r->curl_sentry = NULL;
	return NULL;
}

/* Queues it (taking ownership) or frees it. 1 = skipped (a record already
 * queued), 0, -EAGAIN, -ESHUTDOWN. */
static int enqueue(struct keel_reporter *r, struct keel__report_item *it)
{
	size_t i;
	int rc = 0;

	pthread_mutex_lock(&r->mu);
	if (r->closed) {
		rc = -ESHUTDOWN;
	} else if (it->spool_path != NULL) {
		if (r->busy != NULL && r->busy->spool_path != NULL &&
		    strcmp(r->busy->spool_path, it->spool_path) == 0)
			rc = 1;
		for (i = 0; i < r->count && rc == 0; i++) {
			const struct keel__report_item *q =
				r->ring[(r->head + i) % r->cap];

			if (q->spool_path != NULL &&
			    strcmp(q->spool_path, it->spool_path) == 0)
				rc = 1;
		}
	}
	if (rc == 0 && r->count == r->cap)
		rc = -EAGAIN;
	if (rc == 0) {
		r->ring[(r->head + r->count) % r->cap] = it;
		r->count++;
		pthread_cond_signal(&r->work);
	}
	pthread_mutex_unlock(&r->mu);
	if (rc == 0)
		atomic_fetch_add(&r->queued, 1);
	else
		keel__report_item_free(it);
	if (rc == -EAGAIN)
		atomic_fetch_add(&r->dropped, 1);
	return rc;
}

int keel_reporter_send(struct keel_reporter *r,
		       const struct keel_report_event *ev)
{
	struct keel__report_item *it;
	int rc;

	if (r == NULL || ev == NULL)
		return -EINVAL;
	rc = item_from_event(ev, &it);
	if (rc == -ENOMEM)
		atomic_fetch_add(&r->dropped, 1);
	if (rc != 0)
		return rc;
	return enqueue(r, it);
}

static void deadline_after(struct timespec *ts, int64_t ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ns / KEEL_SEC);
	ts->tv_nsec += (long)(ns % KEEL_SEC);
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

int keel_reporter_flush(struct keel_reporter *r, int64_t timeout)
{
	struct timespec dl;
	int rc = 0;

	if (r == NULL)
		return -EINVAL;
	if (timeout >= 0)
		deadline_after(&dl, timeout);
	pthread_mutex_lock(&r->mu);
	while ((r->count > 0 || r->busy != NULL) && rc == 0) {
		if (timeout < 0)
			pthread_cond_wait(&r->idle, &r->mu);
		else if (pthread_cond_timedwait(&r->idle, &r->mu, &dl) ==
			 ETIMEDOUT)
			rc = (r->count > 0 || r->busy != NULL) ? -ETIMEDOUT : 0;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

void keel_reporter_stats(struct keel_reporter *r, struct keel_reporter_stats *s)
{
	memset(s, 0, sizeof(*s));
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	s->pending = r->count + (r->busy != NULL);
	pthread_mutex_unlock(&r->mu);
	s->queued = atomic_load(&r->queued);
	s->sent = atomic_load(&r->sent);
	s->failed = atomic_load(&r->failed);
	s->dropped = atomic_load(&r->dropped);
	s->retried = atomic_load(&r->retried);
	s->spooled = atomic_load(&r->spooled);
	s->spool_bad = atomic_load(&r->spool_bad);
}

/* ------------------------------------------------------------------------
 * The spool
 * ------------------------------------------------------------------------ */

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int keel_reporter_send_spool(struct keel_reporter *r)
{
	char **names = NULL, path[PATH_MAX];
	size_t n = 0, capn = 0, i;
	struct dirent *de;
	int queued = 0, rc = 0;
	DIR *d;

	if (r == NULL || r->spool_dir == NULL)
		return -EINVAL;
	d = opendir(r->spool_dir);
	if (d == NULL)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		if (!keel__spool_is_record(de->d_name))
			continue;
		if (n == capn) {
			char **nn = realloc(names, (capn ? 2 * capn : 16) *
							   sizeof(*names));
			if (nn == NULL) {
				rc = -ENOMEM;
				break;
			}
			names = nn;
			capn = capn ? 2 * capn : 16;
		}
		names[n] = strdup(de->d_name);
		if (names[n] == NULL) {
			rc = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	/* Oldest first: the names start with the crash time. */
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_names);
	for (i = 0; i < n && rc == 0; i++) {
		struct keel__report_item *it;
		int k = snprintf(path, sizeof(path), "%s/%s", r->spool_dir,
				 names[i]);
		int rr;

		if (k < 0 || (size_t)k >= sizeof(path))
			continue;
		rr = keel__spool_read(path, &it);
		if (rr == -EINVAL) {
			keel__spool_set_aside(path, rr);
			atomic_fetch_add(&r->spool_bad, 1);
			continue;
		}
		if (rr != 0) /* unreadable now (ENOENT: another process
			      * took it): leave it */
			continue;
		rr = enqueue(r, it);
		if (rr == 0) {
			queued++;
			atomic_fetch_add(&r->spooled, 1);
		} else if (rr < 0) {
			/* Full or closed: the rest stay on disk, and a
			 * record left on disk is not a drop. */
			if (rr == -EAGAIN)
				atomic_fetch_sub(&r->dropped, 1);
			break;
		}
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc != 0 ? rc : queued;
}

int keel_reporter_crash_hook(struct keel_reporter *r)
{
	if (r == NULL || r->spool_dir == NULL)
		return -EINVAL;
	return keel__spool_install(r->spool_dir, &r->meta);
}

/* ------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------ */

void keel_reporter_config_init(struct keel_reporter_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->queue_size = 256;
	cfg->max_attempts = 5;
	cfg->backoff_initial = 100 * KEEL_MSEC;
	cfg->backoff_max = 10 * KEEL_SEC;
	cfg->retry_after_max = 60 * KEEL_SEC;
	cfg->timeout = 5 * KEEL_SEC;
	cfg->shutdown_timeout = 2 * KEEL_SEC;
}

static int check_url(const char *url)
{
	const char *p;

	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
		return -EINVAL;
	p = strstr(url, "://") + 3;
	if (*p == '\0' || *p == '/')
		return -EINVAL;
	for (; *p != '\0'; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return -EINVAL;
	return 0;
}

static int check_header(const char *h)
{
	const char *colon = strchr(h, ':'), *p;

	if (colon == NULL || colon == h)
		return -EINVAL;
	for (p = h; p < colon; p++)
		if (!(isalnum((unsigned char)*p) || strchr("!#$%&'*+-.^_`|~", *p)))
			return -EINVAL;
	return strpbrk(h, "\r\n") != NULL ? -EINVAL : 0;
}

static int check_config(const struct keel_reporter_config *cfg)
{
	size_t i;

	if (cfg->webhook_url == NULL && cfg->sentry_dsn == NULL &&
	    cfg->sink == NULL)
		return -EINVAL;
	if (cfg->webhook_url != NULL && check_url(cfg->webhook_url) != 0)
		return -EINVAL;
	if (cfg->queue_size < 1 || cfg->queue_size > 1048576 ||
	    cfg->max_attempts < 1 || cfg->backoff_initial < 0 ||
	    cfg->backoff_max < cfg->backoff_initial ||
	    cfg->retry_after_max < 0 || cfg->timeout <= 0 ||
	    cfg->shutdown_timeout < 0)
		return -EINVAL;
	for (i = 0; cfg->headers != NULL && cfg->headers[i] != NULL; i++)
		if (check_header(cfg->headers[i]) != 0)
			return -EINVAL;
	if (cfg->spool_dir != NULL && cfg->spool_dir[0] == '\0')
		return -EINVAL;
	return 0;
}

static void reporter_destroy(struct keel_reporter *r)
{
	size_t i;

	for (i = 0; i < r->count; i++)
		keel__report_item_free(r->ring[(r->head + i) % r->cap]);
	free(r->ring);
	free(r->webhook_url);
	free(r->dsn_text);
	free(r->dsn);
	curl_slist_free_all(r->webhook_headers);
	curl_slist_free_all(r->sentry_headers);
	free(r->service);
	free(r->environment);
	free(r->release);
	free(r->server_name);
	free(r->spool_dir);
	keel_policy_free(r->retry);
	keel_cancel_free(r->cancel);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->work);
	pthread_cond_destroy(&r->idle);
	free(r);
}

static int append_header(struct curl_slist **l, const char *h)
{
	struct curl_slist *n = curl_slist_append(*l, h);

	if (n == NULL)
		return -ENOMEM;
	*l = n;
	return 0;
}

static int build_headers(struct keel_reporter *r,
			 const struct keel_reporter_config *cfg)
{
	size_t i;

	/* "Expect:" turns off libcurl's 100-continue round trip for larger
	 * bodies: a report is small and the server answers anyway. */
	if (r->webhook_url != NULL) {
		if (append_header(&r->webhook_headers,
				  "Content-Type: application/json") ||
		    append_header(&r->webhook_headers, "Expect:"))
			return -ENOMEM;
		for (i = 0; cfg->headers != NULL && cfg->headers[i] != NULL; i++)
			if (append_header(&r->webhook_headers, cfg->headers[i]))
				return -ENOMEM;
	}
	if (r->dsn != NULL &&
	    (append_header(&r->sentry_headers,
			   "Content-Type: application/x-sentry-envelope") ||
	     append_header(&r->sentry_headers, r->dsn->auth) ||
	     append_header(&r->sentry_headers, "Expect:")))
		return -ENOMEM;
	return 0;
}

static int build_retry(struct keel_reporter *r,
		       const struct keel_reporter_config *cfg)
{
	struct keel_retry_config rc;

	keel_retry_config_init(&rc);
	rc.name = "keel-report";
	rc.max_attempts = cfg->max_attempts;
	rc.backoff.kind = KEEL_BACKOFF_EXPONENTIAL;
	rc.backoff.initial = cfg->backoff_initial;
	rc.backoff.multiplier = 2;
	rc.backoff.max = cfg->backoff_max;
	rc.backoff.jitter = KEEL_JITTER_EQUAL;
	rc.retry_if = retryable;
	rc.honour_retry_after = 1;
	rc.max_retry_after = cfg->retry_after_max;
	return keel_retry_new(&rc, &r->retry);
}

static int make_spool_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -errno;
	if (stat(dir, &st) != 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static int copy_config(struct keel_reporter *r,
		       const struct keel_reporter_config *cfg)
{
	char host[256];

	if (dup_to(&r->webhook_url, cfg->webhook_url) ||
	    dup_to(&r->dsn_text, cfg->sentry_dsn) ||
	    dup_to(&r->service, cfg->service) ||
	    dup_to(&r->environment, cfg->environment) ||
	    dup_to(&r->release, cfg->release) ||
	    dup_to(&r->spool_dir, cfg->spool_dir))
		return -ENOMEM;
	if (cfg->server_name != NULL) {
		if (dup_to(&r->server_name, cfg->server_name))
			return -ENOMEM;
	} else if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		if (dup_to(&r->server_name, host))
			return -ENOMEM;
	}
	r->meta = (struct keel__report_meta){ r->service, r->environment,
					      r->release, r->server_name };
	return 0;
}

/* Starts the thread with every asynchronous signal blocked: SIGPIPE from
 * a dead connection stays pending on this thread instead of killing the
 * process, and the program's own signals go to its own threads. */
static int start_thread(struct keel_reporter *r)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	sigdelset(&all, SIGTRAP);
	sigdelset(&all, SIGABRT);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&r->thread, NULL, worker, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc == 0 ? 0 : -EAGAIN;
}

int keel_reporter_new(const struct keel_reporter_config *cfg,
		      struct keel_reporter **out)
{
	struct keel__sentry_dsn dsn;
	struct keel_reporter *r;
	pthread_condattr_t ca;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (cfg == NULL || out == NULL)
		return -EINVAL;
	rc = check_config(cfg);
	if (rc == 0 && cfg->sentry_dsn != NULL)
		rc = keel__sentry_dsn_parse(cfg->sentry_dsn, &dsn);
	if (rc != 0)
		return rc;
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK)
		return -ENOMEM;
	if (cfg->spool_dir != NULL && (rc = make_spool_dir(cfg->spool_dir)))
		return rc;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->idle, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&r->work, NULL);
	r->cap = cfg->queue_size;
	r->timeout = cfg->timeout;
	r->shutdown_timeout = cfg->shutdown_timeout;
	r->sink = cfg->sink;
	r->sink_ud = cfg->sink_ud;
	r->dests = (cfg->webhook_url ? DEST_WEBHOOK : 0) |
		   (cfg->sentry_dsn ? DEST_SENTRY : 0) |
		   (cfg->sink ? DEST_SINK : 0);
	rc = -ENOMEM;
	r->ring = calloc(r->cap, sizeof(*r->ring));
	r->cancel = keel_cancel_new(NULL, NULL);
	if (r->ring == NULL || r->cancel == NULL || copy_config(r, cfg) != 0)
		goto fail;
	if (cfg->sentry_dsn != NULL) {
		r->dsn = malloc(sizeof(*r->dsn));
		if (r->dsn == NULL)
			goto fail;
		*r->dsn = dsn;
	}
	if ((rc = build_headers(r, cfg)) != 0 || (rc = build_retry(r, cfg)))
		goto fail;
	if ((rc = start_thread(r)) != 0)
		goto fail;
	if (r->spool_dir != NULL)
		(void)keel_reporter_send_spool(r);
	*out = r;
	return 0;
fail:
	reporter_destroy(r);
	return rc;
}

void keel_reporter_free(struct keel_reporter *r)
{
	int rc;

	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->closed = 1;
	pthread_mutex_unlock(&r->mu);
	rc = keel_reporter_flush(r, r->shutdown_timeout);
	pthread_mutex_lock(&r->mu);
	r->stopping = 1;
	pthread_cond_broadcast(&r->work);
	pthread_mutex_unlock(&r->mu);
	if (rc != 0)
		keel_cancel_cancel(r->cancel, -ECANCELED);
	pthread_join(r->thread, NULL);
	reporter_destroy(r);
}
