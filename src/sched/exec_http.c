/*
 * src/sched/exec_http.c - the http executor (keel/exec.h): one request
 * with libcurl's easy interface, a fresh handle per attempt (runs are
 * minutes apart; a connection cache would mostly hold dead connections),
 * behind a circuit breaker per target host.
 *
 * The breaker's failures are the host's failures: no connection, no
 * answer in time, or a 5xx. A 4xx is the job's problem (a wrong URL, a bad
 * token), so it counts as a success for the breaker while the run fails.
 * A cancelled attempt tells nothing about the host and counts as a
 * success too.
 *
 * The response body is kept from its start, up to OUTPUT_MAX bytes: for
 * HTTP the head (a status page, a JSON error) says more than the tail.
 * It is stored as valid UTF-8 without NULs (each bad byte becomes U+FFFD),
 * since it ends up in JSON.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include <keel/cron.h>
#include <keel/cancel.h>
#include <keel/clock.h>
#include <keel/common.h>

#include <keel/breaker.h>
#include <keel/policy.h>

#include "../obs/json.h"
#include "exec_internal.h"

#define OUTPUT_MAX (64 * 1024)
#define HOST_KEY_MAX 300
#define LAST_ERROR_MAX 256
#define USER_AGENT "keeld/" KEEL_VERSION_STRING

/* One per target host, created on its first request, kept until
 * keel_exec_free (the list only grows: one entry per distinct host a job
 * ever named). Nodes are never moved or freed while the context lives, so
 * a run keeps its pointer after dropping ex->mu. */
struct keel__exec_breaker {
	struct keel__exec_breaker *next;
	struct keel_policy *br;
	char last_error[LAST_ERROR_MAX]; /* guarded by ex->mu */
	char host[];			 /* "scheme://host:port" */
};

/* ------------------------------------------------------------------------
 * Text helpers
 * ------------------------------------------------------------------------ */

/* Length of an incomplete but so far valid UTF-8 sequence that ends s
 * (the body was cut inside a character), else 0. */
static size_t cut_sequence(const unsigned char *s, size_t n)
{
	size_t back;

	for (back = 1; back <= 3 && back <= n; back++) {
		unsigned char c = s[n - back];
		size_t want;

		if ((c & 0xc0) == 0x80)
			continue; /* a continuation byte: look further back */
		want = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
		return want > back ? back : 0;
	}
	return 0;
}

/*
 * The captured body as a new NUL-terminated string of valid UTF-8 without
 * NULs: each byte that is not part of a valid sequence, and each NUL,
 * becomes U+FFFD. When the body was cut, a character cut in two at the
 * end is dropped rather than replaced. NULL when out of memory.
 */
static char *clean_output(const char *in, size_t n, int cut, size_t *outlen)
{
	const unsigned char *s = (const unsigned char *)in;
	char *out, *small;
	size_t i = 0, o = 0;

	if (cut)
		n -= cut_sequence(s, n);
	if (n > (SIZE_MAX - 1) / 3)
		return NULL;
	out = malloc(n * 3 + 1);
	if (out == NULL)
		return NULL;
	while (i < n) {
		size_t k =
		    s[i] != 0 && s[i] < 0x80 ? 1 : keel__utf8_len(s + i, n - i);

		if (k == 0) {
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(out + o, s + i, k);
		o += k;
		i += k;
	}
	out[o] = '\0';
	*outlen = o;
	small = realloc(out, o + 1);
	return small != NULL ? small : out;
}

/* src into dst (n > 0 bytes), cut to fit; a character cut in two is
 * mended by keel__exec_clean_line later. */
static void copy_text(char *dst, size_t n, const char *src)
{
	size_t len = strnlen(src, n - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* ------------------------------------------------------------------------
 * Breakers
 * ------------------------------------------------------------------------ */

/* "scheme://host:port" of url into key, or -EINVAL with why in err. */
static int host_key(const char *url, char *key, size_t keylen, char *err,
		    size_t errlen)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	CURLUcode uc;
	int rc = -EINVAL, w;

	if (u == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	uc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (uc == CURLUE_OK)
		uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	if (uc == CURLUE_OK)
		uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
	if (uc == CURLUE_OK)
		uc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
	if (uc == CURLUE_OUT_OF_MEMORY) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
	} else if (uc != CURLUE_OK) {
		snprintf(err, errlen, "bad url: %s", curl_url_strerror(uc));
	} else if (strcasecmp(scheme, "http") != 0 &&
		   strcasecmp(scheme, "https") != 0) {
		snprintf(err, errlen,
			 "bad url: scheme '%s' is not http or https", scheme);
	} else {
		/* Host names are case-insensitive: one breaker per host. */
		for (char *p = host; *p != '\0'; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		for (char *p = scheme; *p != '\0'; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		w = snprintf(key, keylen, "%s://%s:%s", scheme, host, port);
		if (w < 0 || (size_t)w >= keylen)
			snprintf(err, errlen, "bad url: host name too long");
		else
			rc = 0;
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}

/* The breaker of key, made on first use; NULL when out of memory. */
static struct keel__exec_breaker *breaker_get(struct keel_executor *ex,
					      const char *key)
{
	struct keel_breaker_config bc;
	struct keel__exec_breaker *b;
	size_t n = strlen(key);

	pthread_mutex_lock(&ex->mu);
	for (b = ex->breakers; b != NULL; b = b->next)
		if (strcmp(b->host, key) == 0)
			goto out;
	/* Made under the lock so that two first runs against one host
	 * cannot make two breakers; it happens once per host. */
	b = calloc(1, sizeof(*b) + n + 1);
	if (b == NULL)
		goto out;
	memcpy(b->host, key, n + 1);
	keel_breaker_config_init(&bc);
	bc.name = b->host;
	/* keel/exec.h's count breaker: consecutive failures only, no rates
	 * (so no window), and one probe at a time when the open time is
	 * over, as a scheduler has no traffic to spare on a sick host. */
	bc.consecutive_failures = (unsigned)ex->cfg.breaker_failures;
	bc.failure_rate_threshold = 0;
	bc.slow_rate_threshold = 0;
	bc.window_size = 0;
	bc.open_duration = ex->cfg.breaker_open;
	bc.half_open_calls = 1;
	if (keel_breaker_new(&bc, &b->br) != 0) {
		free(b);
		b = NULL;
		goto out;
	}
	b->next = ex->breakers;
	ex->breakers = b;
out:
	pthread_mutex_unlock(&ex->mu);
	return b;
}

void keel__exec_breakers_free(struct keel_executor *ex)
{
	struct keel__exec_breaker *b, *next;

	for (b = ex->breakers; b != NULL; b = next) {
		next = b->next;
		keel_policy_free(b->br);
		free(b);
	}
	ex->breakers = NULL;
}

/* keel/exec.h's names, as keeld's API shows them (keel/breaker.h's own
 * names use '-', run states use '_'). */
static const char *state_name(enum keel_breaker_state s)
{
	switch (s) {
	case KEEL_BREAKER_CLOSED:
		return "closed";
	case KEEL_BREAKER_OPEN:
		return "open";
	case KEEL_BREAKER_HALF_OPEN:
		return "half_open";
	case KEEL_BREAKER_FORCED_OPEN:
		return "forced_open";
	case KEEL_BREAKER_DISABLED:
		return "disabled";
	}
	return "unknown";
}

void keel_exec_breakers(struct keel_executor *ex,
			void (*fn)(const char *host, const char *state,
				   void *ud),
			void *ud)
{
	struct keel__exec_breaker *b;

	if (ex == NULL || fn == NULL)
		return;
	/* Nodes are only ever prepended and live until keel_exec_free, so
	 * the list from the head read now can be walked without the lock,
	 * and fn may call into the executor. */
	pthread_mutex_lock(&ex->mu);
	b = ex->breakers;
	pthread_mutex_unlock(&ex->mu);
	for (; b != NULL; b = b->next)
		fn(b->host, state_name(keel_breaker_state(b->br)), ud);
}

/* The run's error when the breaker refused it. */
static void breaker_refusal(struct keel_executor *ex,
			    struct keel__exec_breaker *b,
			    struct keel_exec_result *res)
{
	struct keel_breaker_view v;
	char last[LAST_ERROR_MAX], when[32];

	keel_breaker_view(b->br, &v);
	pthread_mutex_lock(&ex->mu);
	memcpy(last, b->last_error, sizeof(last));
	pthread_mutex_unlock(&ex->mu);
	if (last[0] == '\0')
		snprintf(last, sizeof(last), "unknown");
	if (v.state == KEEL_BREAKER_OPEN && v.until_half_open > 0) {
		/* Whole seconds, rounded up: "30s" rather than "29s999ms". */
		int64_t s = (v.until_half_open + KEEL_SEC - 1) / KEEL_SEC;

		keel_duration_format(s * KEEL_SEC, when, sizeof(when));
		snprintf(res->error, sizeof(res->error),
			 "circuit breaker open for %s: last failure: %s; "
			 "next try in %s",
			 b->host, last, when);
	} else if (v.state == KEEL_BREAKER_FORCED_OPEN) {
		snprintf(res->error, sizeof(res->error),
			 "circuit breaker forced open for %s", b->host);
	} else {
		snprintf(res->error, sizeof(res->error),
			 "circuit breaker %s for %s: another run is probing "
			 "the host; last failure: %s",
			 state_name(v.state), b->host, last);
	}
}

/* ------------------------------------------------------------------------
 * The request
 * ------------------------------------------------------------------------ */

struct body {
	char *buf;
	size_t len, cap;
	int cut; /* more came than was kept */
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
	struct body *b = ud;
	size_t n = size * nmemb, take;

	take = n < OUTPUT_MAX - b->len ? n : OUTPUT_MAX - b->len;
	if (take < n)
		b->cut = 1;
	if (take > 0 && b->len + take > b->cap) {
		size_t cap = b->cap != 0 ? b->cap : 4096;
		char *nb;

		while (cap < b->len + take)
			cap *= 2;
		if (cap > OUTPUT_MAX)
			cap = OUTPUT_MAX;
		nb = realloc(b->buf, cap);
		if (nb == NULL) {
			/* Out of memory for the output only: the request
			 * goes on, with what was kept so far. */
			b->cut = 1;
			return n;
		}
		b->buf = nb;
		b->cap = cap;
	}
	if (take > 0) {
		memcpy(b->buf + b->len, p, take);
		b->len += take;
	}
	return n; /* the rest is read and dropped, so the server finishes */
}

/* Between the cancel checks of perform(), while data flows. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow,
		       curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return keel_cancel_err(ud) != 0;
}

/*
 * curl_easy_perform, but through a multi handle of its own so that the
 * wait for the server can be cut into CANCEL_POLL_MS slices: the easy
 * interface looks at the progress callback only about once a second while
 * the server is silent, so a cancel would take that long. The handle's
 * own timeouts apply as with curl_easy_perform.
 */
#define CANCEL_POLL_MS 50

static CURLcode perform(CURL *c, struct keel_cancel *cancel)
{
	CURLM *m = curl_multi_init();
	CURLcode rc = CURLE_OK;
	CURLMsg *msg;
	int running = 1, left;

	if (m == NULL)
		return CURLE_OUT_OF_MEMORY;
	if (curl_multi_add_handle(m, c) != CURLM_OK) {
		curl_multi_cleanup(m);
		return CURLE_OUT_OF_MEMORY;
	}
	for (;;) {
		CURLMcode mc = curl_multi_perform(m, &running);

		if (mc != CURLM_OK) {
			rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY
						       : CURLE_FAILED_INIT;
			break;
		}
		if (running == 0)
			break;
		if (keel_cancel_err(cancel) != 0) {
			rc = CURLE_ABORTED_BY_CALLBACK;
			break;
		}
		mc = curl_multi_poll(
		    m, NULL, 0, cancel != NULL ? CANCEL_POLL_MS : 1000, NULL);
		if (mc != CURLM_OK) {
			rc = CURLE_FAILED_INIT;
			break;
		}
	}
	if (rc == CURLE_OK) {
		rc = CURLE_FAILED_INIT; /* no message: should not happen */
		while ((msg = curl_multi_info_read(m, &left)) != NULL)
			if (msg->msg == CURLMSG_DONE && msg->easy_handle == c)
				rc = msg->data.result;
	}
	curl_multi_remove_handle(m, c);
	curl_multi_cleanup(m);
	return rc;
}

static int has_header(const struct keel_job_http *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->n_headers; i++)
		if (strcasecmp(h->headers[i].name, name) == 0)
			return 1;
	return 0;
}

/* Printable ASCII without spaces: a traceparent that cannot smuggle a
 * line break into the request. */
static int header_value_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
}

/* Appends one line as it is ("Name:" removes a header curl would add);
 * -ENOMEM. */
static int add_raw(struct curl_slist **list, const char *line)
{
	struct curl_slist *l = curl_slist_append(*list, line);

	if (l == NULL)
		return -ENOMEM;
	*list = l;
	return 0;
}

/* Appends "name: value" (or "name;", curl's way to send an empty value);
 * -ENOMEM. */
static int add_header(struct curl_slist **list, const char *name,
		      const char *value)
{
	size_t n = strlen(name) + strlen(value) + 3;
	char *line = malloc(n);
	int rc;

	if (line == NULL)
		return -ENOMEM;
	if (value[0] == '\0')
		snprintf(line, n, "%s;", name);
	else
		snprintf(line, n, "%s: %s", name, value);
	rc = add_raw(list, line);
	free(line);
	return rc;
}

static int build_headers(const struct keel_job_http *h,
			 const struct keel_exec_req *req,
			 struct curl_slist **out)
{
	struct curl_slist *list = NULL;
	size_t i;
	int rc = 0;

	for (i = 0; i < h->n_headers && rc == 0; i++)
		rc = add_header(&list, h->headers[i].name, h->headers[i].value);
	/* The job's own traceparent wins: it asked for it. */
	if (rc == 0 && req->traceparent != NULL &&
	    header_value_ok(req->traceparent) && !has_header(h, "traceparent"))
		rc = add_header(&list, "traceparent", req->traceparent);
	/* No "Expect: 100-continue" wait before a larger body: the target
	 * may not answer it, and the body is small. */
	if (rc == 0 && !has_header(h, "Expect"))
		rc = add_raw(&list, "Expect:");
	/* No Content-Type unless the job gives one: libcurl's default for a
	 * body (a form) would be keeld's guess, not the job's. */
	if (rc == 0 && !has_header(h, "Content-Type"))
		rc = add_raw(&list, "Content-Type:");
	if (rc != 0) {
		curl_slist_free_all(list);
		return rc;
	}
	*out = list;
	return 0;
}

static int method_has_body(const char *m)
{
	return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 ||
	       strcmp(m, "PATCH") == 0;
}

/* ms for a curl timeout: at least 1 (0 would mean none), rounded up. */
static long timeout_ms(int64_t ns)
{
	int64_t ms = (ns + KEEL_MSEC - 1) / KEEL_MSEC;

	if (ms < 1)
		ms = 1;
	if (ms > (int64_t)(LONG_MAX / 2))
		ms = LONG_MAX / 2;
	return (long)ms;
}

/* Sets every option of one attempt; a CURLcode. */
static CURLcode setup(CURL *c, struct keel_executor *ex,
		      const struct keel_job *j, const struct keel_exec_req *req,
		      int64_t remaining, struct curl_slist *headers,
		      struct body *body, char *errbuf)
{
	const struct keel_job_http *h = &j->http;
	const char *method = h->method != NULL ? h->method : "GET";
	CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                          \
	do {                                                                   \
		if (rc == CURLE_OK)                                            \
			rc = curl_easy_setopt(c, opt, val);                    \
	} while (0)
	SET(CURLOPT_ERRORBUFFER, errbuf);
	SET(CURLOPT_URL, h->url);
	/* Only the protocols a job may name (job.h), redirects included. */
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
	SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SET(CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for DNS timeouts: threads */
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_USERAGENT, USER_AGENT);
	SET(CURLOPT_HTTPHEADER, headers);
	SET(CURLOPT_CONNECTTIMEOUT_MS,
	    timeout_ms(ex->cfg.http_connect_timeout));
	if (remaining != KEEL_NEVER)
		SET(CURLOPT_TIMEOUT_MS, timeout_ms(remaining));
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, body);
	SET(CURLOPT_NOPROGRESS, 0L);
	SET(CURLOPT_XFERINFOFUNCTION, on_progress);
	SET(CURLOPT_XFERINFODATA, req->cancel);
	if (strcmp(method, "HEAD") == 0) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (h->body != NULL || method_has_body(method)) {
		/* POST/PUT/PATCH always send a length (0 without a body):
		 * some servers answer 411 to a POST without one. */
		const char *b = h->body != NULL ? h->body : "";

		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(b));
		SET(CURLOPT_POSTFIELDS, b);
		if (strcmp(method, "POST") != 0)
			SET(CURLOPT_CUSTOMREQUEST, method);
	} else if (strcmp(method, "GET") != 0) {
		SET(CURLOPT_CUSTOMREQUEST, method);
	}
#undef SET
	return rc;
}

/* Failures of the attempt that are not the host's: they do not count
 * against its breaker. */
static int local_error(CURLcode rc)
{
	switch (rc) {
	case CURLE_OUT_OF_MEMORY:
	case CURLE_ABORTED_BY_CALLBACK:
	case CURLE_WRITE_ERROR:
	case CURLE_READ_ERROR:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_FAILED_INIT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_UNKNOWN_OPTION:
		return 1;
	default:
		return 0;
	}
}

static void timeout_error(const struct keel_job *j,
			  struct keel_exec_result *res)
{
	char d[32];

	keel_duration_format(j->timeout, d, sizeof(d));
	res->state = KEEL_RUN_TIMED_OUT;
	snprintf(res->error, sizeof(res->error), "timed out after %s", d);
}

static void status_range(const struct keel_job_http *h, char *buf, size_t n)
{
	if (h->status_min == h->status_max)
		snprintf(buf, n, "%d", h->status_min);
	else
		snprintf(buf, n, "%d-%d", h->status_min, h->status_max);
}

static int http_attempt(struct keel_executor *ex, const struct keel_job *j,
			const struct keel_exec_req *req, int64_t deadline,
			struct keel_exec_result *res)
{
	char key[HOST_KEY_MAX], errbuf[CURL_ERROR_SIZE];
	struct keel__exec_breaker *b;
	struct keel_breaker_permit pm;
	struct curl_slist *headers = NULL;
	struct body body = {0};
	CURL *c = NULL;
	CURLcode cc;
	long status = 0;
	int64_t remaining = KEEL_NEVER, now;
	int rc, host_failed = 0;

	res->state = KEEL_RUN_FAILED;
	if (j->http.url == NULL) {
		snprintf(res->error, sizeof(res->error), "bad url: none");
		return 0;
	}
	rc = host_key(j->http.url, key, sizeof(key), res->error,
		      sizeof(res->error));
	if (rc == -ENOMEM)
		return rc;
	if (rc != 0)
		return 0; /* a bad URL fails the run, not keel_exec_run */
	b = breaker_get(ex, key);
	if (b == NULL) {
		snprintf(res->error, sizeof(res->error), "out of memory");
		return -ENOMEM;
	}
	if (keel_cancel_err(req->cancel) != 0) {
		res->state = KEEL_RUN_CANCELED;
		snprintf(res->error, sizeof(res->error), "canceled");
		return 0;
	}
	if (deadline != KEEL_NEVER) {
		remaining = deadline - keel_clock_now(NULL);
		if (remaining <= 0) {
			/* Nothing sent: the host is blameless. */
			timeout_error(j, res);
			return 0;
		}
	}
	if (keel_breaker_allow(b->br, &pm) != 0) {
		breaker_refusal(ex, b, res);
		return 0;
	}

	rc = build_headers(&j->http, req, &headers);
	if (rc == 0) {
		c = curl_easy_init();
		if (c == NULL)
			rc = -ENOMEM;
	}
	errbuf[0] = '\0';
	if (rc == 0) {
		cc = setup(c, ex, j, req, remaining, headers, &body, errbuf);
		if (cc != CURLE_OK)
			rc = cc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
	}
	if (rc != 0) {
		/* Never sent: the permit is given back as a success. */
		keel_breaker_record(b->br, &pm, 0, KEEL_BREAKER_MEASURE);
		curl_easy_cleanup(c);
		curl_slist_free_all(headers);
		snprintf(res->error, sizeof(res->error), "%s",
			 rc == -ENOMEM ? "out of memory"
				       : "cannot set up the request");
		return rc;
	}

	cc = perform(c, req->cancel);
	now = keel_clock_now(NULL);
	(void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	res->http_status = (int)status;
	if (body.len > 0) {
		res->output = clean_output(body.buf, body.len, body.cut,
					   &res->output_len);
		if (res->output == NULL)
			res->output_len = 0;
	}
	free(body.buf);
	curl_easy_cleanup(c);
	curl_slist_free_all(headers);

	if (cc == CURLE_OK) {
		if (status >= j->http.status_min &&
		    status <= j->http.status_max) {
			/* Even a 5xx, when the job expects it. */
			res->state = KEEL_RUN_SUCCEEDED;
		} else {
			char want[32];

			status_range(&j->http, want, sizeof(want));
			snprintf(res->error, sizeof(res->error),
				 "unexpected status %ld (expected %s)", status,
				 want);
			host_failed = status >= 500;
		}
	} else if (cc == CURLE_ABORTED_BY_CALLBACK) {
		res->state = KEEL_RUN_CANCELED;
		snprintf(res->error, sizeof(res->error), "canceled");
	} else if (cc == CURLE_OPERATION_TIMEDOUT && deadline != KEEL_NEVER &&
		   now >= deadline - KEEL_MSEC) {
		/* The job's timeout (curl's own clock may end it a hair
		 * before ours); a connect timeout alone is a failure. */
		host_failed = 1;
		timeout_error(j, res);
	} else {
		host_failed = !local_error(cc);
		snprintf(res->error, sizeof(res->error), "%s",
			 errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc));
		keel__exec_clean_line(res->error); /* before it is kept as last_error */
	}
	if (host_failed) {
		pthread_mutex_lock(&ex->mu);
		copy_text(b->last_error, sizeof(b->last_error),
			  res->error[0] != '\0' ? res->error : "server error");
		pthread_mutex_unlock(&ex->mu);
	}
	keel_breaker_record(b->br, &pm, host_failed ? -EIO : 0,
			    KEEL_BREAKER_MEASURE);
	return 0;
}

int keel__exec_http(struct keel_executor *ex, const struct keel_job *j,
		    const struct keel_exec_req *req, int64_t deadline,
		    struct keel_exec_result *res)
{
	int rc = http_attempt(ex, j, req, deadline, res);

	/* Whatever went into the error (curl's text, a host name, a cut
	 * message) leaves as one line of valid UTF-8: it is stored as JSON. */
	keel__exec_clean_line(res->error);
	return rc;
}
