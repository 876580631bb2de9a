/* KEEL_TEST_LABELS: threads */
/*
 * tests/http/test_response.c - the response builder and the JSON helpers
 * as units (a response on the stack, no server), then the same through a
 * real server where what matters is what the client receives: the
 * Content-Type defaults, custom headers, the body handed to
 * libmicrohttpd, and keel_http_error's body read back with jansson.
 */
#include "http/http_client.h"

#include "../../src/http/internal.h"

static void resp_new(struct keel_http_resp *rs)
{
	memset(rs, 0x5a, sizeof(*rs));
	keel__http_resp_init(rs);
}

/* ------------------------------------------------------------------------
 * Units
 * ------------------------------------------------------------------------ */

TEST(defaults_and_status)
{
	struct keel_http_resp rs;

	resp_new(&rs);
	CHECK_INT(keel_http_resp_status(&rs), ==, 200);
	CHECK_INT(keel_http_resp_size(&rs), ==, 0);
	CHECK_INT(keel_http_committed(&rs), ==, 0);
	CHECK(keel_http_resp_header(&rs, "Content-Type") == NULL);
	keel_http_status(&rs, 201);
	CHECK_INT(keel_http_resp_status(&rs), ==, 201);
	/* not a status: ignored, nothing changes */
	keel_http_status(&rs, 99);
	keel_http_status(&rs, 1000);
	keel_http_status(&rs, -1);
	CHECK_INT(keel_http_resp_status(&rs), ==, 201);
	/* NULL is harmless */
	keel_http_status(NULL, 200);
	keel_http_write_header(NULL, 200);
	CHECK_INT(keel_http_committed(NULL), ==, 0);
	CHECK_INT(keel_http_resp_status(NULL), ==, 0);
	CHECK_INT(keel_http_resp_size(NULL), ==, 0);
	keel_http_reset(NULL);
	keel__http_resp_release(&rs);
}

/* The first few headers live inside the response; more, and longer ones,
 * go to the heap: every path keeps every value (ASan checks the frees). */
TEST(many_and_long_headers)
{
	struct keel_http_resp rs;
	char name[32], value[256], want[256];
	int i, round;

	resp_new(&rs);
	for (round = 0; round < 2; round++) {
		for (i = 0; i < 40; i++) {
			snprintf(name, sizeof(name), "X-H%d", i);
			memset(value, 'a' + i % 26, (size_t)(i * 5 % 200));
			value[i * 5 % 200] = '\0';
			CHECK_INT(keel_http_set_header(&rs, name, value), ==, 0);
		}
		/* Replace some: in the arena and on the heap. */
		CHECK_INT(keel_http_set_header(&rs, "x-h0", "first"), ==, 0);
		CHECK_INT(keel_http_set_header(&rs, "X-H39", "last"), ==, 0);
		CHECK_STR(keel_http_resp_header(&rs, "X-H0"), "first");
		CHECK_STR(keel_http_resp_header(&rs, "x-h39"), "last");
		for (i = 1; i < 39; i++) {
			snprintf(name, sizeof(name), "X-H%d", i);
			memset(want, 'a' + i % 26, (size_t)(i * 5 % 200));
			want[i * 5 % 200] = '\0';
			CHECK_STR(keel_http_resp_header(&rs, name), want);
		}
		keel_http_reset(&rs); /* and again, from empty */
		CHECK(keel_http_resp_header(&rs, "X-H1") == NULL);
	}
	keel__http_resp_release(&rs);
	keel_test_leak_check();
}

TEST(committed_semantics)
{
	struct keel_http_resp rs;

	resp_new(&rs);
	CHECK_INT(keel_http_set_header(&rs, "X-A", "1"), ==, 0);
	keel_http_write_header(&rs, 202);
	CHECK_INT(keel_http_committed(&rs), ==, 1);
	CHECK_INT(keel_http_resp_status(&rs), ==, 202);
	/* the status is fixed from now on */
	keel_http_status(&rs, 500);
	keel_http_write_header(&rs, 404);
	CHECK_INT(keel_http_resp_status(&rs), ==, 202);
	/* errors and reset cannot replace it */
	CHECK_INT(keel_http_error(&rs, 500, NULL), ==, -EBUSY);
	CHECK_INT(keel_http_errorf(&rs, 500, "x %d", 1), ==, -EBUSY);
	keel_http_reset(&rs);
	CHECK_INT(keel_http_resp_status(&rs), ==, 202);
	CHECK_STR(keel_http_resp_header(&rs, "X-A"), "1");
	/* the body still grows (Go: Write after WriteHeader) */
	CHECK_INT(keel_http_write(&rs, "ab", 2), ==, 0);
	CHECK_INT(keel_http_resp_size(&rs), ==, 2);
	keel__http_resp_release(&rs);
}

TEST(headers_validation)
{
	struct keel_http_resp rs;
	static const char *const bad_names[] = {
	    "", "X A", "X:A", "X\r\nY", "X\nY", "(x)", "X/Y", "\xc3\xa9", "X\"",
	};
	static const char *const bad_values[] = {
	    "a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x01", "a\x7f",
	};
	size_t i;

	resp_new(&rs);
	for (i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
		CHECK_INT(keel_http_set_header(&rs, bad_names[i], "v"), ==,
			  -EINVAL);
	CHECK_INT(keel_http_set_header(&rs, NULL, "v"), ==, -EINVAL);
	for (i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++)
		CHECK_INT(keel_http_set_header(&rs, "X-V", bad_values[i]), ==,
			  -EINVAL);
	CHECK_INT(keel_http_set_header(&rs, "X-V", NULL), ==, -EINVAL);
	CHECK_INT(keel_http_set_header(NULL, "X-V", "v"), ==, -EINVAL);
	/* nothing was stored */
	CHECK_INT(rs.nheaders, ==, 0);
	CHECK(keel_http_resp_header(&rs, "X-V") == NULL);

	/* good ones; tabs and spaces and UTF-8 in values are fine */
	CHECK_INT(keel_http_set_header(&rs, "X-Odd!#$%&'*+-.^_`|~9",
				       "a\tb c \xc3\xa9"),
		  ==, 0);
	CHECK_STR(keel_http_resp_header(&rs, "x-odd!#$%&'*+-.^_`|~9"),
		  "a\tb c \xc3\xa9");
	CHECK_INT(keel_http_set_header(&rs, "Cache-Control", "no-store"), ==,
		  0);
	CHECK_INT(keel_http_set_header(&rs, "Empty", ""), ==, 0);
	CHECK_STR(keel_http_resp_header(&rs, "empty"), "");
	/* replaced, case-insensitively, not added */
	CHECK_INT(keel_http_set_header(&rs, "cache-control", "max-age=5"), ==,
		  0);
	CHECK_STR(keel_http_resp_header(&rs, "CACHE-CONTROL"), "max-age=5");
	CHECK_INT(rs.nheaders, ==, 3);
	/* a bad replacement keeps the old value */
	CHECK_INT(keel_http_set_header(&rs, "Cache-Control", "x\r\n"), ==,
		  -EINVAL);
	CHECK_STR(keel_http_resp_header(&rs, "Cache-Control"), "max-age=5");
	CHECK(keel_http_resp_header(&rs, NULL) == NULL);
	CHECK(keel_http_resp_header(NULL, "x") == NULL);
	/* many headers: the array grows */
	for (i = 0; i < 50; i++) {
		char n[16];

		snprintf(n, sizeof(n), "H%zu", i);
		CHECK_INT(keel_http_set_header(&rs, n, n), ==, 0);
	}
	CHECK_STR(keel_http_resp_header(&rs, "h49"), "H49");
	CHECK_INT(rs.nheaders, ==, 53);
	keel__http_resp_release(&rs);
	keel_test_leak_check();
}

/* Every byte, alone and inside a name and a value, against RFC 9110 as
 * written: names are tokens (tchar), values have no controls but tab. */
TEST(header_bytes_every_value)
{
	static const char tspecial_ok[] = "!#$%&'*+-.^_`|~";
	struct keel_http_resp rs;
	int c;

	resp_new(&rs);
	for (c = 1; c < 256; c++) {
		char name[8] = { 'X', '-', (char)c, 'a', 0 };
		char value[8] = { 'v', (char)c, 'w', 0 };
		int tchar = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
			    (c >= 'a' && c <= 'z') ||
			    strchr(tspecial_ok, c) != NULL;
		int vok = c == '\t' || (c >= 0x20 && c != 0x7f);

		CHECK_INT(keel_http_set_header(&rs, name, "v"), ==,
			  tchar ? 0 : -EINVAL);
		CHECK_INT(keel_http_set_header(&rs, "X-Value", value), ==,
			  vok ? 0 : -EINVAL);
		if (vok)
			CHECK_STR(keel_http_resp_header(&rs, "x-value"), value);
		name[1] = '\0'; /* "X" then the byte alone */
		name[0] = (char)c;
		CHECK_INT(keel_http_set_header(&rs, name, "v"), ==,
			  tchar ? 0 : -EINVAL);
		keel_http_reset(&rs);
	}
	keel__http_resp_release(&rs);
}

TEST(write_and_printf_growth)
{
	struct keel_http_resp rs;
	static char big[100000];
	size_t i, want = 0;

	resp_new(&rs);
	CHECK_INT(keel_http_write(&rs, NULL, 0), ==, 0);
	CHECK_INT(keel_http_write(&rs, NULL, 1), ==, -EINVAL);
	CHECK_INT(keel_http_write(NULL, "a", 1), ==, -EINVAL);
	CHECK_INT(keel_http_printf(NULL, "x"), ==, -EINVAL);
	CHECK_INT(keel_http_resp_size(&rs), ==, 0);
	/* printf output longer than the room there is, many times over */
	for (i = 0; i < 2000; i++) {
		CHECK_INT(keel_http_printf(&rs, "%zu:%s;", i, "abcdefghij"), ==,
			  0);
		want += (size_t)snprintf(NULL, 0, "%zu:%s;", i, "abcdefghij");
	}
	CHECK_INT(keel_http_resp_size(&rs), ==, want);
	CHECK(strncmp(rs.body, "0:abcdefghij;1:abcdefghij;", 26) == 0);
	CHECK(strstr(rs.body, "1999:abcdefghij;") != NULL);
	CHECK_INT(strlen(rs.body), ==, want); /* NUL-terminated */
	/* one printf far bigger than the buffer */
	memset(big, 'z', sizeof(big) - 1);
	CHECK_INT(keel_http_printf(&rs, "[%s]", big), ==, 0);
	CHECK_INT(keel_http_resp_size(&rs), ==, want + sizeof(big) + 1);
	CHECK(rs.body[want] == '[' && rs.body[want + sizeof(big)] == ']');
	/* binary data with NULs */
	CHECK_INT(keel_http_write(&rs, "a\0b", 3), ==, 0);
	CHECK_INT(keel_http_resp_size(&rs), ==, want + sizeof(big) + 4);
	CHECK(memcmp(rs.body + want + sizeof(big) + 1, "a\0b", 3) == 0);
	keel__http_resp_release(&rs);
	keel_test_leak_check();
}

TEST(reset)
{
	struct keel_http_resp rs;

	resp_new(&rs);
	keel_http_status(&rs, 418);
	keel_http_set_header(&rs, "X-A", "1");
	keel_http_printf(&rs, "body");
	keel_http_reset(&rs);
	CHECK_INT(keel_http_resp_status(&rs), ==, 200);
	CHECK_INT(keel_http_resp_size(&rs), ==, 0);
	CHECK(keel_http_resp_header(&rs, "X-A") == NULL);
	CHECK_INT(rs.nheaders, ==, 0);
	/* usable again */
	keel_http_printf(&rs, "again");
	CHECK_STR(rs.body, "again");
	keel__http_resp_release(&rs);
	keel_test_leak_check();
}

TEST(reason_phrases)
{
	static const struct {
		int code;
		const char *text;
	} t[] = {
	    {200, "OK"},
	    {201, "Created"},
	    {204, "No Content"},
	    {301, "Moved Permanently"},
	    {304, "Not Modified"},
	    {400, "Bad Request"},
	    {401, "Unauthorized"},
	    {403, "Forbidden"},
	    {404, "Not Found"},
	    {405, "Method Not Allowed"},
	    {408, "Request Timeout"},
	    {409, "Conflict"},
	    {413, "Content Too Large"},
	    {415, "Unsupported Media Type"},
	    {422, "Unprocessable Content"},
	    {429, "Too Many Requests"},
	    {431, "Request Header Fields Too Large"},
	    {500, "Internal Server Error"},
	    {501, "Not Implemented"},
	    {502, "Bad Gateway"},
	    {503, "Service Unavailable"},
	    {504, "Gateway Timeout"},
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		CHECK_STR(keel_http_reason(t[i].code), t[i].text);
	CHECK_STR(keel_http_reason(299), "Unknown");
	CHECK_STR(keel_http_reason(0), "Unknown");
	CHECK_STR(keel_http_reason(-404), "Unknown");
}

static json_t *body_json(const struct keel_http_resp *rs)
{
	json_error_t e;
	json_t *o = json_loadb(rs->body, rs->len, 0, &e);

	if (o == NULL)
		KEEL_TEST_FAIL("not JSON: %.*s (%s)", (int)rs->len, rs->body,
			       e.text);
	return o;
}

/* 2026-11-26T10:00:00.123Z, and within a few seconds of now. */
static void check_timestamp(const char *ts)
{
	struct tm tm;
	const char *end;
	time_t t;

	CHECK(ts != NULL);
	CHECK_INT(strlen(ts), ==, 24);
	memset(&tm, 0, sizeof(tm));
	end = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm);
	CHECK(end != NULL);
	CHECK(end[0] == '.' && end[1] >= '0' && end[1] <= '9' &&
	      end[2] >= '0' && end[2] <= '9' && end[3] >= '0' &&
	      end[3] <= '9' && end[4] == 'Z' && end[5] == '\0');
	t = timegm(&tm);
	CHECK(llabs((long long)(t - time(NULL))) < 5);
}

TEST(error_body)
{
	struct keel_http_resp rs;
	struct keel_trace tr;
	char tid[33];
	json_t *o;

	resp_new(&rs);
	keel_http_set_header(&rs, "X-Gone", "1");
	keel_http_printf(&rs, "half a body");
	CHECK_INT(keel_http_error(&rs, 404, NULL), ==, 0);
	CHECK_INT(keel_http_resp_status(&rs), ==, 404);
	CHECK_STR(keel_http_resp_header(&rs, "Content-Type"),
		  "application/json");
	CHECK(keel_http_resp_header(&rs, "X-Gone") == NULL); /* replaced */
	o = body_json(&rs);
	CHECK_INT(json_object_size(o), ==, 4);
	CHECK_INT(json_integer_value(json_object_get(o, "code")), ==, 404);
	CHECK_STR(json_string_value(json_object_get(o, "message")),
		  "Not Found");
	check_timestamp(json_string_value(json_object_get(o, "timestamp")));
	CHECK(json_is_null(json_object_get(o, "trace_id")));
	json_decref(o);

	/* with a trace context and a reason */
	keel_trace_new(&tr);
	keel_trace_set(&tr, NULL);
	keel_trace_id_hex(&tr, tid);
	CHECK_INT(keel_http_errorf(&rs, 422, "field \"%s\" is missing", "name"),
		  ==, 0);
	o = body_json(&rs);
	CHECK_INT(json_object_size(o), ==, 5);
	CHECK_INT(json_integer_value(json_object_get(o, "code")), ==, 422);
	CHECK_STR(json_string_value(json_object_get(o, "message")),
		  "Unprocessable Content");
	CHECK_STR(json_string_value(json_object_get(o, "trace_id")), tid);
	CHECK_STR(json_string_value(json_object_get(o, "reason")),
		  "field \"name\" is missing");
	json_decref(o);
	keel_trace_set(NULL, NULL);

	/* an unknown status keeps its code; a reason that is not UTF-8
	 * does not lose the answer */
	CHECK_INT(keel_http_error(&rs, 599, "bad \xff byte"), ==, 0);
	o = body_json(&rs);
	CHECK_INT(json_integer_value(json_object_get(o, "code")), ==, 599);
	CHECK_STR(json_string_value(json_object_get(o, "message")), "Unknown");
	CHECK(json_is_string(json_object_get(o, "reason")));
	json_decref(o);

	/* bad input changes nothing */
	CHECK_INT(keel_http_error(&rs, 42, NULL), ==, -EINVAL);
	CHECK_INT(keel_http_error(NULL, 500, NULL), ==, -EINVAL);
	CHECK_INT(keel_http_resp_status(&rs), ==, 599);
	keel__http_resp_release(&rs);
	keel_test_leak_check();
}

TEST(json_body)
{
	struct keel_http_resp rs;
	json_t *v = json_pack("{s:i, s:[s, b, n], s:f}", "n", 7, "a", "x\"y", 1,
			      "f", 1.5);

	resp_new(&rs);
	CHECK_INT(keel_http_json(&rs, 201, v), ==, 0);
	CHECK_INT(keel_http_resp_status(&rs), ==, 201);
	CHECK_STR(keel_http_resp_header(&rs, "Content-Type"),
		  "application/json");
	CHECK_STR(rs.body, "{\"n\":7,\"a\":[\"x\\\"y\",true,null],\"f\":1.5}");
	CHECK_INT(keel_http_resp_size(&rs), ==, strlen(rs.body));
	/* v is not stolen */
	CHECK_INT(v->refcount, ==, 1);
	/* a second call replaces the body; a scalar is fine */
	json_decref(v);
	v = json_string("only");
	CHECK_INT(keel_http_json(&rs, 200, v), ==, 0);
	CHECK_STR(rs.body, "\"only\"");
	CHECK_INT(keel_http_json(&rs, 200, NULL), ==, -EINVAL);
	CHECK_INT(keel_http_json(NULL, 200, v), ==, -EINVAL);
	CHECK_STR(rs.body, "\"only\"");
	keel_http_write_header(&rs, 200);
	CHECK_INT(keel_http_json(&rs, 200, v), ==, -EBUSY);
	json_decref(v);
	keel__http_resp_release(&rs);
	keel_test_leak_check();
}

TEST(read_json_unit)
{
	struct keel_http_req rq;
	json_t *v = (json_t *)&rq;
	json_t *o;

	memset(&rq, 0, sizeof(rq));
	keel__http_resp_init(&rq.resp);
	rq.body = strdup("{\"a\": [1, 2,]}");
	rq.body_len = strlen(rq.body);
	CHECK_INT(keel_http_read_json(&rq, &rq.resp, 1, &v), ==, -EINVAL);
	CHECK(v == NULL);
	CHECK_INT(keel_http_resp_status(&rq.resp), ==, 400);
	o = body_json(&rq.resp);
	CHECK_CONTAINS(json_string_value(json_object_get(o, "reason")),
		       "invalid JSON at line 1, column 13: ");
	json_decref(o);
	free(rq.body);
	rq.body = strdup("  42 ");
	rq.body_len = strlen(rq.body);
	keel_http_reset(&rq.resp);
	CHECK_INT(keel_http_read_json(&rq, &rq.resp, 0, &v), ==, 0);
	CHECK(json_is_integer(v) && json_integer_value(v) == 42);
	CHECK_INT(keel_http_resp_status(&rq.resp), ==, 200); /* untouched */
	CHECK_INT(keel_http_resp_size(&rq.resp), ==, 0);
	json_decref(v);
	CHECK_INT(keel_http_read_json(&rq, &rq.resp, 1, &v), ==, -EINVAL);
	CHECK_INT(keel_http_resp_status(&rq.resp), ==, 400);
	CHECK_INT(keel_http_read_json(NULL, &rq.resp, 0, &v), ==, -EINVAL);
	CHECK_INT(keel_http_read_json(&rq, &rq.resp, 0, NULL), ==, -EINVAL);
	free(rq.body);
	keel__http_resp_release(&rq.resp);
	keel_test_leak_check();
}

TEST(request_values)
{
	static int keys[KEEL__HTTP_MAX_VALUES + 1];
	struct keel_http_req rq;
	int i;

	memset(&rq, 0, sizeof(rq));
	CHECK(keel_http_value(&rq, &keys[0]) == NULL);
	for (i = 0; i < KEEL__HTTP_MAX_VALUES; i++)
		CHECK_INT(keel_http_set_value(&rq, &keys[i], &keys[i]), ==, 0);
	CHECK_INT(keel_http_set_value(&rq, &keys[i], &keys[i]), ==, -ENOSPC);
	CHECK(keel_http_value(&rq, &keys[i]) == NULL);
	/* replacing an existing key is not a new slot */
	CHECK_INT(keel_http_set_value(&rq, &keys[3], NULL), ==, 0);
	CHECK(keel_http_value(&rq, &keys[3]) == NULL);
	CHECK(keel_http_value(&rq, &keys[4]) == &keys[4]);
	CHECK_INT(keel_http_set_value(&rq, NULL, &keys[0]), ==, -EINVAL);
	CHECK_INT(keel_http_set_value(NULL, &keys[0], NULL), ==, -EINVAL);
	CHECK(keel_http_value(NULL, &keys[0]) == NULL);
	/* the accessors take NULL */
	CHECK(keel_http_method(NULL) == NULL && keel_http_path(NULL) == NULL);
	CHECK(keel_http_param(NULL, "x") == NULL &&
	      keel_http_query(NULL, "x") == NULL);
	CHECK(keel_http_header(NULL, "x") == NULL &&
	      keel_http_body(NULL, NULL) == NULL);
	CHECK(keel_http_route_pattern(&rq) == NULL);
	CHECK_INT(keel_http_offloaded(NULL), ==, 0);
}

/* ------------------------------------------------------------------------
 * Through a server
 * ------------------------------------------------------------------------ */

static void h_plain(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_printf(rs, "no type");
}

static void h_custom(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_status(rs, 299);
	keel_http_set_header(rs, "X-Custom", "yes");
	keel_http_set_header(rs, "Content-Type", "text/csv; charset=utf-8");
	keel_http_set_header(rs, "Content-Length", "999"); /* MHD's to write */
	keel_http_write(rs, "a,b\n", 4);
}

static void h_err(struct keel_http_req *rq, struct keel_http_resp *rs, void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_errorf(rs, 409, "job %s exists", "nightly");
}

static void h_empty(struct keel_http_req *rq, struct keel_http_resp *rs,
		    void *ud)
{
	(void)rq;
	(void)ud;
	keel_http_status(rs, 204);
}

TEST(what_the_client_receives)
{
	struct keel_http_router *rt;
	struct keel_http_server *s;
	struct hres r;
	char v[128];
	json_t *o;

	CHECK_INT(keel_http_router_new(&rt), ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/plain", h_plain, NULL, 0), ==,
		  0);
	CHECK_INT(keel_http_route(rt, "GET", "/custom", h_custom, NULL, 0), ==,
		  0);
	CHECK_INT(
	    keel_http_route(rt, "GET", "/err", h_err, NULL, KEEL_HTTP_BLOCKING),
	    ==, 0);
	CHECK_INT(keel_http_route(rt, "GET", "/empty", h_empty, NULL, 0), ==,
		  0);
	s = srv_start(rt, NULL);

	http_get(keel_http_server_port(s), "/plain", &r);
	CHECK_INT(r.status, ==, 200);
	CHECK_STR(r.body, "no type");
	CHECK(hres_header_get(&r, "Content-Type", v, sizeof(v)) == NULL);
	hres_free(&r);

	http_get(keel_http_server_port(s), "/custom", &r);
	CHECK_INT(r.status, ==, 299);
	CHECK_STR(r.body, "a,b\n");
	CHECK_STR(hres_header_get(&r, "X-Custom", v, sizeof(v)), "yes");
	CHECK_STR(hres_header_get(&r, "Content-Type", v, sizeof(v)),
		  "text/csv; charset=utf-8");
	CHECK_STR(hres_header_get(&r, "Content-Length", v, sizeof(v)), "4");
	hres_free(&r);

	http_get(keel_http_server_port(s), "/err", &r);
	o = check_error_body(&r, 409);
	CHECK_STR(json_string_value(json_object_get(o, "reason")),
		  "job nightly exists");
	json_decref(o);
	hres_free(&r);

	http_get(keel_http_server_port(s), "/empty", &r);
	CHECK_INT(r.status, ==, 204);
	CHECK_INT(r.len, ==, 0);
	hres_free(&r);

	keel_http_server_free(s);
	keel_http_router_free(rt);
	keel_test_leak_check();
}
