/* KEEL_TEST_LABELS: threads */
/*
 * tests/obs/test_spool.c - the crash spool: a child process that installs
 * the crash hook and really crashes (a NULL dereference outside any scope,
 * an unrecovered panic) leaves exactly one complete record; the next
 * reporter on that directory sends it to a real HTTP receiver (webhook and
 * Sentry) and deletes it; a record that cannot be delivered stays; a
 * corrupt one is renamed *.bad.
 *
 * The receiver and the JSON helpers are in report_receiver.h.
 */
#include "obs/report_receiver.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#define CRASH_TRACE "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static char spool[256];

static void make_spool(void)
{
	snprintf(spool, sizeof(spool), "/tmp/keel-spool-%d", (int)getpid());
	/* A missing directory is created by keel_reporter_new. */
}

static int count_files(const char *prefix, const char *suffix, char *first,
		       size_t cap)
{
	DIR *d = opendir(spool);
	struct dirent *de;
	int n = 0;

	CHECK(d != NULL);
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name), sl = strlen(suffix);

		if (strncmp(de->d_name, prefix, strlen(prefix)) != 0 ||
		    len < sl || strcmp(de->d_name + len - sl, suffix) != 0)
			continue;
		if (n++ == 0 && first != NULL)
			snprintf(first, cap, "%s/%s", spool, de->d_name);
	}
	closedir(d);
	return n;
}

static int count_all(void)
{
	DIR *d = opendir(spool);
	struct dirent *de;
	int n = 0;

	CHECK(d != NULL);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void remove_spool(void)
{
	DIR *d = opendir(spool);
	struct dirent *de;
	char path[600];

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", spool, de->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(spool);
}

static json_t *load_file(const char *path)
{
	static char buf[1 << 16];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	CHECK(fd >= 0);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	CHECK(n > 0);
	CHECK_INT(buf[n - 1], ==, '\n');
	return parse(buf, (size_t)n);
}

/* ------------------------------------------------------------------------
 * Children that crash
 * ------------------------------------------------------------------------ */

static int *volatile spool_nil;
static volatile int spool_sink;

void spool_nil_site(void);
void spool_panic_site(void);

KEEL_TEST_NO_SANITIZE void spool_nil_site(void)
{
	spool_sink = *spool_nil;
}

__attribute__((noinline)) void spool_panic_site(void)
{
	keel_panic("the ledger does not balance");
}

static void crash_child(void *arg)
{
	void (*site)(void) = (void (*)(void))arg;
	struct keel_reporter_config cfg;
	struct keel_reporter *r;
	struct keel_trace t;

	base_config(&cfg);
	cfg.spool_dir = spool;
	snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d/", dead_port());
	cfg.webhook_url = url_buf;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_crash_hook(r), ==, 0);
	CHECK_INT(keel_traceparent_parse(CRASH_TRACE, strlen(CRASH_TRACE), &t), ==, 0);
	keel_trace_set(&t, NULL);
	if (site == spool_panic_site) {
		KEEL_SCOPE {
			site(); /* no deferred call recovers it */
		}
	} else {
		site(); /* outside any scope */
	}
	_exit(9); /* not reached */
}

/* Runs a crashing child and returns the path of its one record. */
static void crash_once(void (*site)(void), char *record, size_t cap)
{
	struct keel_child c;

	keel_test_run_child(crash_child, (void *)site, &c);
	if (c.code != 2)
		KEEL_TEST_FAIL("child exit %d signal %d:\n%s", c.code, c.signo, c.out);
	CHECK_CONTAINS(c.out, "keel: crash record written to ");
	CHECK_INT(count_files("crash-", ".json", record, cap), ==, 1);
	CHECK_CONTAINS(c.out, record);
	CHECK_INT(count_files(".crash-", ".tmp", NULL, 0), ==, 0);
}

/* ------------------------------------------------------------------------
 * Cases
 * ------------------------------------------------------------------------ */

TEST(crash_record_written)
{
	char rec[600];
	json_t *v, *sig, *frames;

	make_spool();
	crash_once(spool_nil_site, rec, sizeof(rec));
	v = load_file(rec);
	CHECK_INT(jint(v, "v"), ==, 1);
	CHECK(is_hex(jstr(v, "event_id"), 32));
	CHECK_INT(jint(v, "time_ns"), >, 1600000000LL * 1000000000LL);
	CHECK_INT(jint(v, "pid"), >, 0);
	CHECK_STR(jstr(v, "message"), NIL_MSG);
	CHECK_STR(jstr(v, "kind"), "nil-dereference");
	CHECK(json_is_true(json_object_get(v, "runtime")));
	sig = json_object_get(v, "signal");
	CHECK_INT(jint(sig, "signo"), ==, SIGSEGV);
	CHECK_INT(jint(sig, "code"), ==, SEGV_MAPERR);
	CHECK_STR(jstr(sig, "addr"), "0x0");
	frames = json_object_get(v, "frames");
	CHECK_INT(frame_index(frames, "spool_nil_site"), >=, 0);
	CHECK_INT(frame_index(frames, "crash_child"), >,
		  frame_index(frames, "spool_nil_site"));
	CHECK_STR(jstr(v, "trace_id"), "0af7651916cd43dd8448eb211c80319c");
	CHECK_STR(jstr(v, "span_id"), "b7ad6b7169203331");
	CHECK_STR(jstr(v, "service"), "svc");
	CHECK_STR(jstr(v, "release"), "svc@1.2.3");
	CHECK_STR(jstr(v, "environment"), "test");
	CHECK_STR(jstr(v, "server_name"), "host-1");
	/* The file name carries the time and the pid. */
	{
		char want[64];

		snprintf(want, sizeof(want), "/crash-%lld-%lld.json",
			 jint(v, "time_ns"), jint(v, "pid"));
		CHECK_CONTAINS(rec, want);
	}
	json_decref(v);
	remove_spool();
}

TEST(crash_sent_by_next_start)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_reporter *r;
	struct rx *rx;
	char rec[600];
	json_t *b, *p, *rv;

	make_spool();
	crash_once(spool_nil_site, rec, sizeof(rec));
	rv = load_file(rec);
	rx = rx_start(NULL, 0);
	rx_run(rx);
	base_config(&cfg);
	cfg.release = "svc@2.0.0"; /* the new start runs a newer build */
	cfg.webhook_url = webhook(rx, "/crash");
	cfg.spool_dir = spool;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.spooled, ==, 1);
	CHECK_INT(st.sent, ==, 1);
	CHECK_INT(rx_count(rx), ==, 1);
	CHECK_INT(count_all(), ==, 0); /* delivered, so deleted */
	b = parse(rx->req[0].body, rx->req[0].len);
	CHECK_STR(jstr(b, "level"), "fatal");
	CHECK_STR(jstr(b, "message"), NIL_MSG);
	CHECK_STR(jstr(b, "event_id"), jstr(rv, "event_id"));
	CHECK_STR(jstr(b, "release"), "svc@1.2.3"); /* the crashed build's */
	CHECK_STR(jstr(b, "trace_id"), "0af7651916cd43dd8448eb211c80319c");
	CHECK_INT(jint(json_object_get(b, "extra"), "pid"), ==, jint(rv, "pid"));
	p = json_object_get(b, "panic");
	CHECK_STR(jstr(p, "kind"), "nil-dereference");
	CHECK(json_is_false(json_object_get(p, "handled")));
	CHECK_STR(jstr(json_object_get(p, "signal"), "name"), "SIGSEGV");
	CHECK_INT(frame_index(json_object_get(p, "stack"), "spool_nil_site"), >=, 0);
	{
		/* The record's time, to the millisecond. */
		char want[32];

		keel__report_rfc3339(jint(rv, "time_ns"), want);
		CHECK_STR(jstr(b, "timestamp"), want);
	}
	json_decref(b);
	json_decref(rv);
	keel_reporter_free(r);
	rx_stop(rx);
	remove_spool();
	keel_test_leak_check();
}

TEST(crash_sent_to_sentry)
{
	struct keel_reporter_config cfg;
	struct keel_reporter *r;
	struct rx *rx;
	char rec[600];
	json_t *rv, *h, *ih, *e, *x, *frames;
	size_t elen;
	int site, caller;

	make_spool();
	crash_once(spool_panic_site, rec, sizeof(rec));
	rv = load_file(rec);
	CHECK_STR(jstr(rv, "message"), "the ledger does not balance");
	CHECK_STR(jstr(rv, "kind"), "message");
	CHECK(json_is_false(json_object_get(rv, "runtime")));
	CHECK(json_object_get(rv, "signal") == NULL);
	rx = rx_start(NULL, 0);
	rx_run(rx);
	base_config(&cfg);
	snprintf(dsn_buf, sizeof(dsn_buf), "http://key1@127.0.0.1:%d/9", rx->port);
	cfg.sentry_dsn = dsn_buf;
	cfg.spool_dir = spool;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	CHECK_INT(rx_count(rx), ==, 1);
	CHECK_INT(count_all(), ==, 0);
	split_envelope(&rx->req[0], &h, &ih, &e, &elen);
	CHECK_INT(jint(ih, "length"), ==, elen);
	CHECK_STR(jstr(h, "event_id"), jstr(rv, "event_id"));
	CHECK_STR(jstr(e, "event_id"), jstr(rv, "event_id"));
	CHECK_STR(jstr(e, "level"), "fatal");
	x = json_array_get(json_object_get(json_object_get(e, "exception"), "values"), 0);
	CHECK_STR(jstr(x, "type"), "message");
	CHECK_STR(jstr(x, "value"), "the ledger does not balance");
	CHECK(json_is_false(json_object_get(json_object_get(x, "mechanism"), "handled")));
	frames = json_object_get(json_object_get(x, "stacktrace"), "frames");
	site = frame_index(frames, "spool_panic_site");
	caller = frame_index(frames, "crash_child");
	CHECK_INT(site, >=, 0);
	CHECK_INT(caller, >=, 0);
	CHECK_INT(caller, <, site); /* oldest first */
	CHECK_STR(jstr(json_object_get(json_object_get(e, "contexts"), "trace"), "trace_id"),
		  "0af7651916cd43dd8448eb211c80319c");
	json_decref(rv);
	json_decref(h);
	json_decref(ih);
	json_decref(e);
	keel_reporter_free(r);
	rx_stop(rx);
	remove_spool();
	keel_test_leak_check();
}

/* The receiver is down: the record stays, and goes at a later start. */
TEST(record_stays_until_delivered)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_reporter *r;
	struct rx *rx;
	char rec[600], again[600];

	make_spool();
	crash_once(spool_nil_site, rec, sizeof(rec));
	base_config(&cfg);
	snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d/", dead_port());
	cfg.webhook_url = url_buf;
	cfg.max_attempts = 2;
	cfg.spool_dir = spool;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.spooled, ==, 1);
	CHECK_INT(st.failed, ==, 1);
	CHECK_INT(st.retried, ==, 1);
	keel_reporter_free(r);
	CHECK_INT(count_files("crash-", ".json", again, sizeof(again)), ==, 1);
	CHECK_STR(again, rec);

	rx = rx_start(NULL, 0);
	rx_run(rx);
	cfg.webhook_url = webhook(rx, "/");
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	CHECK_INT(rx_count(rx), ==, 1);
	CHECK_INT(count_all(), ==, 0);
	keel_reporter_free(r);
	rx_stop(rx);
	remove_spool();
	keel_test_leak_check();
}

static void write_file(const char *name, const char *text)
{
	char path[600];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", spool, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK_INT(write(fd, text, strlen(text)), ==, strlen(text));
	close(fd);
}

static int exists(const char *name)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s", spool, name);
	return access(path, F_OK) == 0;
}

#define GOOD_RECORD                                                           \
	"{\"v\":1,\"event_id\":\"0123456789abcdef0123456789abcdef\","        \
	"\"time_ns\":1700000000123456789,\"pid\":77,\"message\":\"boom\","     \
	"\"kind\":\"message\",\"runtime\":false,\"frames\":[{\"pc\":\"0x1\"," \
	"\"function\":\"f\",\"file\":\"f.c\",\"line\":3}]}\n"

TEST(corrupt_records_set_aside)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_reporter *r;
	struct rx *rx = rx_start(NULL, 0);
	char errpath[300], errtext[4096];
	int efd, saved;
	ssize_t n;
	json_t *b;

	make_spool();
	CHECK_INT(mkdir(spool, 0700), ==, 0);
	write_file("crash-1-1.json", "{\"v\":1,\"event_id\":\"0123456789abcdef0123");
	write_file("crash-2-2.json", "not json at all");
	write_file("crash-3-3.json", "{\"v\":2,\"message\":\"from the future\","
				     "\"time_ns\":1,\"runtime\":false}");
	write_file("crash-4-4.json", "{\"v\":1,\"time_ns\":1,\"runtime\":true}");
	write_file("crash-5-5.json", "{\"v\":1,\"message\":\"m\",\"time_ns\":1,"
				     "\"runtime\":true,\"frames\":[{\"pc\":7}]}");
	write_file("crash-6-6.json", GOOD_RECORD);
	write_file(".crash-7-7.tmp", "{\"v\":1,\"mess"); /* being written */
	write_file("notes.txt", "not a record");
	snprintf(errpath, sizeof(errpath), "%s.stderr", spool);
	efd = open(errpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(efd >= 0);
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	dup2(efd, STDERR_FILENO);

	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/");
	cfg.spool_dir = spool;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_flush(r, 20 * KEEL_SEC), ==, 0);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.spool_bad, ==, 5);
	CHECK_INT(st.spooled, ==, 1);
	CHECK_INT(st.sent, ==, 1);
	CHECK_INT(rx_count(rx), ==, 1);
	b = parse(rx->req[0].body, rx->req[0].len);
	CHECK_STR(jstr(b, "message"), "boom");
	CHECK_STR(jstr(b, "event_id"), "0123456789abcdef0123456789abcdef");
	CHECK_STR(jstr(b, "timestamp"), "2023-11-14T22:13:20.123Z");
	json_decref(b);
	CHECK(exists("crash-1-1.json.bad") && !exists("crash-1-1.json"));
	CHECK(exists("crash-2-2.json.bad") && !exists("crash-2-2.json"));
	CHECK(exists("crash-3-3.json.bad") && !exists("crash-3-3.json"));
	CHECK(exists("crash-4-4.json.bad") && !exists("crash-4-4.json"));
	CHECK(exists("crash-5-5.json.bad") && !exists("crash-5-5.json"));
	CHECK(!exists("crash-6-6.json")); /* sent */
	CHECK(exists(".crash-7-7.tmp") && exists("notes.txt"));
	n = pread(efd, errtext, sizeof(errtext) - 1, 0);
	CHECK(n > 0);
	errtext[n] = '\0';
	CHECK_CONTAINS(errtext, "crash-1-1.json (Invalid argument), moved to ");
	CHECK_CONTAINS(errtext, "crash-5-5.json.bad");
	close(efd);
	unlink(errpath);
	/* A .bad file is not read again. */
	CHECK_INT(keel_reporter_send_spool(r), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.spool_bad, ==, 5);
	keel_reporter_free(r);
	rx_stop(rx);
	remove_spool();
	keel_test_leak_check();
}

/* A record waiting in the queue is not queued twice. */
TEST(spool_not_queued_twice)
{
	struct keel_reporter_config cfg;
	struct keel_reporter_stats st;
	struct keel_reporter *r;
	struct rx *rx = rx_start(NULL, 0);

	make_spool();
	CHECK_INT(mkdir(spool, 0700), ==, 0);
	write_file("crash-6-6.json", GOOD_RECORD);
	rx->stall = 1;
	rx_run(rx);
	base_config(&cfg);
	cfg.webhook_url = webhook(rx, "/");
	cfg.spool_dir = spool;
	cfg.timeout = 60 * KEEL_SEC;
	cfg.shutdown_timeout = 0;
	r = new_reporter(&cfg);
	CHECK_INT(rx_wait(rx, 1), ==, 1); /* in flight now */
	CHECK_INT(keel_reporter_send_spool(r), ==, 0);
	keel_reporter_stats(r, &st);
	CHECK_INT(st.spooled, ==, 1);
	CHECK_INT(st.queued, ==, 1);
	keel_reporter_free(r); /* abandons it: it stays */
	CHECK(exists("crash-6-6.json"));
	rx_stop(rx);
	remove_spool();
	keel_test_leak_check();
}

TEST(spool_refused)
{
	struct keel_reporter_config cfg;
	struct keel_reporter *r;

	CHECK_INT(keel_reporter_crash_hook(NULL), ==, -EINVAL);
	CHECK_INT(keel_reporter_send_spool(NULL), ==, -EINVAL);
	base_config(&cfg);
	snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d/", dead_port());
	cfg.webhook_url = url_buf;
	r = new_reporter(&cfg);
	CHECK_INT(keel_reporter_crash_hook(r), ==, -EINVAL); /* no spool_dir */
	CHECK_INT(keel_reporter_send_spool(r), ==, -EINVAL);
	keel_reporter_free(r);
	/* A spool_dir whose parent is missing. */
	cfg.spool_dir = "/nonexistent-keel/dir";
	r = (struct keel_reporter *)&cfg;
	CHECK_INT(keel_reporter_new(&cfg, &r), ==, -ENOENT);
	CHECK(r == NULL);
	keel_test_leak_check();
}
