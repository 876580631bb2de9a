/*
 * cmd/keelctl/client.c - keelctl's HTTP: one libcurl easy handle per
 * invocation (so `watch` and `run --wait` keep one connection), JSON in and
 * out, keel's error body turned into one line.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keelctl.h"

/* A run's output can be 64 MiB, and JSON escaping can make it several
 * times that; past this the answer is refused rather than eat the
 * machine. */
#define KC_MAX_RESPONSE (512u << 20)

/* ---- strings ------------------------------------------------------------ */

void kc_buf_free(struct kc_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

void kc_buf_reset(struct kc_buf *b)
{
	b->len = 0;
	b->failed = 0;
	if (b->p != NULL)
		b->p[0] = '\0';
}

static int kc_buf_grow(struct kc_buf *b, size_t n)
{
	if (b->failed)
		return -1;
	if (b->len + n + 1 <= b->cap)
		return 0;
	size_t cap = b->cap != 0 ? b->cap : 64;
	while (cap < b->len + n + 1) {
		if (cap > SIZE_MAX / 2) {
			b->failed = 1;
			return -1;
		}
		cap *= 2;
	}
	char *p = realloc(b->p, cap);
	if (p == NULL) {
		b->failed = 1;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

void kc_buf_add(struct kc_buf *b, const char *s, size_t n)
{
	if (kc_buf_grow(b, n) != 0)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void kc_buf_puts(struct kc_buf *b, const char *s)
{
	kc_buf_add(b, s, strlen(s));
}

void kc_buf_printf(struct kc_buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = 1;
		return;
	}
	if (kc_buf_grow(b, (size_t)n) != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void kc_buf_escape(struct kc_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		/* RFC 3986 unreserved characters go as they are. */
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '~') {
			kc_buf_add(b, (const char *)&c, 1);
		} else {
			char e[3] = {'%', hex[c >> 4], hex[c & 15]};
			kc_buf_add(b, e, 3);
		}
	}
}

volatile sig_atomic_t kc_stop;

/* ---- the session -----------------------------------------------------------
 */

int kc_open(struct kc *kc)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return kc_err("cannot initialise libcurl");
	kc->curl = curl_easy_init();
	if (kc->curl == NULL)
		return kc_err("cannot initialise libcurl");
	return KC_OK;
}

void kc_close(struct kc *kc)
{
	if (kc->curl != NULL)
		curl_easy_cleanup(kc->curl);
	kc->curl = NULL;
	curl_global_cleanup();
}

void kc_resp_clear(struct kc_resp *resp)
{
	json_decref(resp->body);
	memset(resp, 0, sizeof(*resp));
}

struct kc_sink {
	struct kc_buf body;
	char *result; /* resp->result */
	int too_big;
};

static size_t kc_on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct kc_sink *s = ud;
	size_t n = size * nmemb;

	if (s->body.len + n > KC_MAX_RESPONSE) {
		s->too_big = 1;
		return 0; /* aborts the transfer */
	}
	kc_buf_add(&s->body, data, n);
	return s->body.failed ? 0 : n;
}

static int kc_on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow,
			  curl_off_t ultotal, curl_off_t ulnow)
{
	return kc_stop ? 1 : 0; /* non-zero aborts the transfer */
}

static size_t kc_on_header(char *data, size_t size, size_t nmemb, void *ud)
{
	static const char name[] = "X-Keel-Result:";
	struct kc_sink *s = ud;
	size_t n = size * nmemb;

	if (n > sizeof(name) - 1 &&
	    strncasecmp(data, name, sizeof(name) - 1) == 0) {
		const char *v = data + sizeof(name) - 1;
		const char *end = data + n;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
				   end[-1] == ' ' || end[-1] == '\t'))
			end--;
		size_t len = (size_t)(end - v);
		if (len < 16) {
			memcpy(s->result, v, len);
			s->result[len] = '\0';
		}
	}
	return n;
}

/* The options of one request: curl_easy_reset keeps the connection, so
 * each request starts from a clean handle without reconnecting. */
static int kc_setup(struct kc *kc, const char *method, const char *url,
		    const char *body, struct curl_slist *headers,
		    struct kc_sink *sink)
{
	CURL *c = kc->curl;
	CURLcode rc = CURLE_OK;

	curl_easy_reset(c);
	kc->curl_err[0] = '\0';
#define KC_OPT(o, v)                                                           \
	do {                                                                   \
		if (rc == CURLE_OK)                                            \
			rc = curl_easy_setopt(c, o, v);                        \
	} while (0)
	KC_OPT(CURLOPT_URL, url);
	KC_OPT(CURLOPT_ERRORBUFFER, kc->curl_err);
	KC_OPT(CURLOPT_NOSIGNAL, 1L);
	KC_OPT(CURLOPT_TIMEOUT_MS, kc->timeout_ms);
	KC_OPT(CURLOPT_CONNECTTIMEOUT_MS, kc->timeout_ms);
	KC_OPT(CURLOPT_HTTPHEADER, headers);
	KC_OPT(CURLOPT_WRITEFUNCTION, kc_on_body);
	KC_OPT(CURLOPT_WRITEDATA, sink);
	KC_OPT(CURLOPT_HEADERFUNCTION, kc_on_header);
	KC_OPT(CURLOPT_HEADERDATA, sink);
	KC_OPT(CURLOPT_XFERINFOFUNCTION, kc_on_progress);
	KC_OPT(CURLOPT_NOPROGRESS, 0L);
	KC_OPT(CURLOPT_USERAGENT, "keelctl/" KEEL_VERSION_STRING);
	/* The token goes to the server the user named and nowhere else:
	 * no redirects, no other protocols. */
	KC_OPT(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
	KC_OPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
	KC_OPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	if (strcmp(method, "GET") == 0) {
		KC_OPT(CURLOPT_HTTPGET, 1L);
	} else if (strcmp(method, "POST") == 0) {
		KC_OPT(CURLOPT_POST, 1L);
		KC_OPT(CURLOPT_POSTFIELDS, body != NULL ? body : "");
		KC_OPT(CURLOPT_POSTFIELDSIZE,
		       (long)(body != NULL ? strlen(body) : 0));
	} else {
		KC_OPT(CURLOPT_CUSTOMREQUEST, method);
	}
#undef KC_OPT
	if (rc != CURLE_OK)
		return kc_err("libcurl: %s", curl_easy_strerror(rc));
	return KC_OK;
}

static struct curl_slist *kc_headers(struct kc *kc, int has_body)
{
	struct curl_slist *h = NULL, *n;
	struct kc_buf auth = {0};

	n = curl_slist_append(h, "Accept: application/json");
	if (n == NULL)
		goto fail;
	h = n;
	if (has_body) {
		n = curl_slist_append(h, "Content-Type: application/json");
		if (n == NULL)
			goto fail;
		h = n;
	}
	/* curl adds "Expect: 100-continue" to larger POSTs, a round trip the
	 * API does not need. */
	n = curl_slist_append(h, "Expect:");
	if (n == NULL)
		goto fail;
	h = n;
	if (kc->token != NULL) {
		kc_buf_printf(&auth, "Authorization: Bearer %s", kc->token);
		if (auth.failed)
			goto fail;
		n = curl_slist_append(h, auth.p);
		/* The token does not linger in freed memory longer than
		 * needed. */
		explicit_bzero(auth.p, auth.len);
		kc_buf_free(&auth);
		if (n == NULL)
			goto fail;
		h = n;
	}
	return h;
fail:
	kc_buf_free(&auth);
	curl_slist_free_all(h);
	return NULL;
}

int kc_call(struct kc *kc, const char *method, const char *path,
	    const json_t *body, struct kc_resp *resp)
{
	struct kc_sink sink = {.result = resp->result};
	struct kc_buf url = {0};
	struct curl_slist *headers = NULL;
	char *text = NULL;
	int rc = KC_FAIL;

	memset(resp, 0, sizeof(*resp));
	if (body != NULL) {
		text = json_dumps(body, JSON_COMPACT);
		if (text == NULL) {
			kc_err("out of memory");
			goto out;
		}
	}
	kc_buf_puts(&url, kc->server);
	kc_buf_puts(&url, path);
	headers = kc_headers(kc, body != NULL);
	if (url.failed || headers == NULL) {
		kc_err("out of memory");
		goto out;
	}
	rc = kc_setup(kc, method, url.p, text, headers, &sink);
	if (rc != KC_OK)
		goto out;

	CURLcode cc = curl_easy_perform(kc->curl);
	if (cc != CURLE_OK) {
		if (sink.too_big)
			rc = kc_err("%s %s: the answer is larger than %u MiB",
				    method, path, KC_MAX_RESPONSE >> 20);
		else if (sink.body.failed)
			rc = kc_err("out of memory");
		else {
			/* A server that took the connection and then said
			 * nothing is told apart from one that was never
			 * reached: the first is hung, the second down. */
			curl_off_t connected = 0;
			curl_easy_getinfo(kc->curl, CURLINFO_CONNECT_TIME_T,
					  &connected);
			snprintf(kc->unreachable, sizeof(kc->unreachable),
				 "%s %s: %s",
				 connected > 0 ? "no answer from"
					       : "cannot connect to",
				 kc->server,
				 kc->curl_err[0] != '\0'
				     ? kc->curl_err
				     : curl_easy_strerror(cc));
			if (!kc->quiet && cc != CURLE_ABORTED_BY_CALLBACK)
				kc_err("%s", kc->unreachable);
			rc = KC_UNREACHABLE;
		}
		goto out;
	}
	curl_easy_getinfo(kc->curl, CURLINFO_RESPONSE_CODE, &resp->status);

	if (sink.body.len > 0) {
		json_error_t jerr;
		resp->body = json_loadb(sink.body.p, sink.body.len, 0, &jerr);
		/* A non-JSON error body (a proxy's HTML page, say) is
		 * reported by kc_check with the status alone; a success must
		 * be what the API promises. */
		if (resp->body == NULL && resp->status >= 200 &&
		    resp->status < 300) {
			rc = kc_err("%s %s: the server's answer is not JSON "
				    "(HTTP %ld): %s",
				    method, path, resp->status, jerr.text);
			goto out;
		}
	}
	rc = KC_OK;
out:
	kc_buf_free(&sink.body);
	kc_buf_free(&url);
	curl_slist_free_all(headers);
	free(text);
	return rc;
}

int kc_check(struct kc *kc, const struct kc_resp *resp, const char *what)
{
	if (resp->status >= 200 && resp->status < 300)
		return KC_OK;

	/* keel's error body: {"code","message","timestamp","trace_id"} with
	 * "reason" when the server has one to give; older or other servers
	 * put the reason in "message". */
	const char *msg = kc_str(resp->body, "reason");
	if (msg == NULL)
		msg = kc_str(resp->body, "message");

	struct kc_buf line = {0};
	if (what != NULL)
		kc_buf_printf(&line, "%s: ", what);
	if (msg != NULL)
		kc_buf_printf(&line, "%s (HTTP %ld)", msg, resp->status);
	else /* a proxy, or not keeld at all */
		kc_buf_printf(&line,
			      "%s answered HTTP %ld without keel's error "
			      "body; is it keeld?",
			      kc->server, resp->status);
	if (resp->status == 401)
		kc_buf_puts(&line, kc->token != NULL
				       ? "; check --token or KEELCTL_TOKEN"
				       : "; the server needs a token: --token "
					 "or KEELCTL_TOKEN");
	if (line.failed)
		return kc_err("out of memory");
	fputs("keelctl: ", stderr);
	kc_put_safe(stderr, line.p, line.len);
	fputc('\n', stderr);
	kc_buf_free(&line);
	return KC_FAIL;
}

int kc_do(struct kc *kc, const char *method, const char *path,
	  const json_t *body, struct kc_resp *resp)
{
	int rc = kc_call(kc, method, path, body, resp);
	if (rc != KC_OK)
		return rc;
	return kc_check(kc, resp, NULL);
}
