/*
 * bench/bench_obs.c - what a log record and a metric update cost, next to a
 * bare fprintf of the same line measured in the same run.
 *
 * Prints one line per case: "<case> <ns/op>" (best of 5 timed runs after a
 * calibration run). bench/run-obs.sh turns this into the table.
 *
 * The record is the seed's example: level ERROR, module "payment-service",
 * message "Payment validation failed", details.error_code "PAY_4001", and
 * an integer field. The fprintf baseline writes the same JSON text with the
 * same timestamp (the date part formatted once per second, as keel does),
 * but escapes nothing: it is the floor of writing that line, not a logger.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <keel/log.h>
#include <keel/metrics.h>

#include "bench_util.h"

static char tmpdir[] = "/tmp/keel-bench-obs-XXXXXX";

/* ------------------------------------------------------------------------
 * The cases
 * ------------------------------------------------------------------------ */

static struct keel_logger *lg;
static FILE *fp;
static int flush_each;

static void op_log(long i)
{
	keel_log_error(lg, "payment-service", "Payment validation failed",
		       KEEL_OBJ("details"), KEEL_STR("error_code", "PAY_4001"),
		       KEEL_OBJ_END(), KEEL_INT("attempt", i));
}

static void op_log_disabled(long i)
{
	keel_log_debug(lg, "payment-service", "Payment validation failed",
		       KEEL_OBJ("details"), KEEL_STR("error_code", "PAY_4001"),
		       KEEL_OBJ_END(), KEEL_INT("attempt", i));
}

static time_t fp_sec = -1;
static char fp_date[20];

static void op_fprintf(long i)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != fp_sec) {
		struct tm tm;

		gmtime_r(&ts.tv_sec, &tm);
		strftime(fp_date, sizeof(fp_date), "%Y-%m-%dT%H:%M:%S", &tm);
		fp_sec = ts.tv_sec;
	}
	fprintf(fp,
		"{\"timestamp\":\"%s.%03dZ\",\"level\":\"ERROR\",\"module\":\"%s\","
		"\"message\":\"%s\",\"details\":{\"error_code\":\"%s\"},\"attempt\":%ld}\n",
		fp_date, (int)(ts.tv_nsec / 1000000), "payment-service",
		"Payment validation failed", "PAY_4001", i);
	if (flush_each)
		fflush(fp);
}

/*
 * What a server's event thread pays to hand an access record to an
 * asynchronous logger, while the logger's writer thread runs on another
 * CPU: the record of keel's access_log middleware (eight fields), queued
 * raw (keel_log_write_deferred: the writer makes the JSON) or formatted by
 * the caller (keel_log_write), each between two stretches of other work
 * (about a microsecond, as a request's own work would be). The clock stops
 * before the flush: this is the caller's time. req_alone is the other work
 * alone, taken off both in the table.
 */
struct access_rec {
	double ms;
	uint64_t bytes;
	int32_t status;
	char text[64]; /* method, path, remote address, request id */
};

static struct access_rec arec = {
	.ms = 0.25, .bytes = 6, .status = 200,
	.text = "GET/hello127.0.0.1ef3882ffbc3acf773074c381ddd5ddf8",
};

static size_t access_fields(const void *data, size_t len, struct keel_field *f,
			    size_t max)
{
	const struct access_rec *a = data;

	(void)len;
	if (max < 8)
		return 0;
	f[0] = KEEL_STRN("method", a->text, 3);
	f[1] = KEEL_STRN("path", a->text + 3, 6);
	f[2] = KEEL_STRN("route", a->text + 3, 6);
	f[3] = KEEL_INT("status", a->status);
	f[4] = KEEL_UINT("bytes", a->bytes);
	f[5] = KEEL_FLOAT("duration_ms", a->ms);
	f[6] = KEEL_STRN("remote", a->text + 9, 9);
	f[7] = KEEL_STRN("request_id", a->text + 18, 32);
	return 8;
}

static void other_work(void)
{
	for (volatile int k = 0; k < 1500; k++)
		;
}

static void op_req_alone(long i)
{
	(void)i;
	other_work();
}

static void op_req_deferred(long i)
{
	arec.bytes = (uint64_t)i;
	keel_log_write_deferred(lg, KEEL_LOG_INFO, "http", "request",
				access_fields, &arec, sizeof(arec));
	other_work();
}

static void op_req_formatted(long i)
{
	struct keel_field f[8];

	arec.bytes = (uint64_t)i;
	keel_log_write(lg, KEEL_LOG_INFO, "http", "request", f,
		       access_fields(&arec, sizeof(arec), f, 8));
	other_work();
}

static struct keel_counter *counter;
static struct keel_histogram *histogram;
static unsigned long plain_counter;

static void op_counter(long i)
{
	(void)i;
	keel_counter_inc(counter);
}

static void op_histogram(long i)
{
	keel_histogram_observe(histogram, (double)(i & 1023) * 1e-4);
}

static void op_plain_increment(long i)
{
	(void)i;
	__atomic_add_fetch(&plain_counter, 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------------
 * Set-up per case
 * ------------------------------------------------------------------------ */

enum sink { DEVNULL, FILE_SINK };

static int open_sink(enum sink s)
{
	char path[128];

	if (s == DEVNULL)
		return open("/dev/null", O_WRONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/bench.log", tmpdir);
	return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
}

static int fd;

static void setup_logger(enum sink s, int async, enum keel_log_format f)
{
	struct keel_log_config cfg;

	fd = open_sink(s);
	keel_log_config_init(&cfg);
	cfg.fd = fd;
	cfg.format = f;
	cfg.color = 0;
	cfg.async = async;
	cfg.async_buffer = 64 << 20;
	if (keel_log_new(&cfg, &lg) != 0) {
		fprintf(stderr, "bench_obs: keel_log_new failed\n");
		exit(1);
	}
}

static void teardown_logger(void)
{
	struct keel_log_stats st;

	keel_log_flush(lg);
	keel_log_stats(lg, &st);
	keel_log_free(lg);
	close(fd);
	if (st.dropped != 0 || st.write_errors != 0) {
		/* A dropped record costs less than a written one: a run that
		 * dropped any measured something else. */
		fprintf(stderr, "bench_obs: %llu records dropped, %llu write errors\n",
			(unsigned long long)st.dropped,
			(unsigned long long)st.write_errors);
		exit(1);
	}
}

static void setup_fprintf(enum sink s, int flush)
{
	fd = open_sink(s);
	fp = fdopen(fd, "a");
	flush_each = flush;
}

static void teardown_fprintf(void)
{
	fclose(fp);
}

static struct keel_metrics *reg;

static void setup_metrics(void)
{
	static const char *const labels[] = { "route", "status" };
	static const char *const values[] = { "/v1/pay", "200" };
	struct keel_family *cf, *hf;

	/* Labelled, as a request counter is: the handle is looked up once. */
	if (keel_metrics_new(NULL, &reg) != 0 ||
	    keel_metrics_counter(reg, "bench_requests_total", "bench", labels, 2,
				 &cf) != 0 ||
	    keel_counter_get(cf, values, 2, &counter) != 0 ||
	    keel_metrics_histogram(reg, "bench_request_seconds", "bench", labels,
				   2, NULL, 0, &hf) != 0 ||
	    keel_histogram_get(hf, values, 2, &histogram) != 0) {
		fprintf(stderr, "bench_obs: metrics set-up failed\n");
		exit(1);
	}
}

static void teardown_metrics(void)
{
	keel_metrics_free(reg);
}

/* ------------------------------------------------------------------------
 * Timing
 * ------------------------------------------------------------------------ */

struct bench_case {
	const char *name;
	void (*op)(long i);
	void (*setup)(const struct bench_case *c);
	void (*teardown)(void);
	enum sink sink;
	int async, flush;
	enum keel_log_format format;
};

static void setup_log_case(const struct bench_case *c)
{
	setup_logger(c->sink, c->async, c->format);
}

static void setup_fprintf_case(const struct bench_case *c)
{
	setup_fprintf(c->sink, c->flush);
}

static void setup_metrics_case(const struct bench_case *c)
{
	(void)c;
	setup_metrics();
}

/* n ops, then (for a logger) everything written: the time per op. */
static double timed(const struct bench_case *c, long n)
{
	double t0, t1;
	long i;

	c->setup(c);
	t0 = bench_now_ns();
	for (i = 0; i < n; i++)
		c->op(i);
	if (c->op == op_log || c->op == op_log_disabled)
		keel_log_flush(lg); /* async: count the writing too */
	/* op_req_*: the caller's time only (flushed in the teardown) */
	else if (c->op == op_fprintf)
		fflush(fp);
	t1 = bench_now_ns();
	c->teardown();
	return (t1 - t0) / (double)n;
}

static double bench(const struct bench_case *c, double run_ns)
{
	long n = 1000;
	double per, best = 1e30;
	int r;

	/* Calibrate (and warm up) to about run_ns a run. */
	for (;;) {
		per = timed(c, n);
		if (per * (double)n >= run_ns / 4 || n >= 1L << 30)
			break;
		n *= 4;
	}
	n = (long)(run_ns / (per > 0 ? per : 1));
	if (n < 1000)
		n = 1000;
	for (r = 0; r < 5; r++) {
		per = timed(c, n);
		if (per < best)
			best = per;
	}
	return best;
}

static const struct bench_case cases[] = {
	{ "log_disabled", op_log_disabled, setup_log_case, teardown_logger,
	  DEVNULL, 0, 0, KEEL_LOG_FORMAT_JSON },
	{ "log_json_devnull", op_log, setup_log_case, teardown_logger,
	  DEVNULL, 0, 0, KEEL_LOG_FORMAT_JSON },
	{ "log_console_devnull", op_log, setup_log_case, teardown_logger,
	  DEVNULL, 0, 0, KEEL_LOG_FORMAT_CONSOLE },
	{ "fprintf_devnull", op_fprintf, setup_fprintf_case, teardown_fprintf,
	  DEVNULL, 0, 0, 0 },
	{ "fprintf_flush_devnull", op_fprintf, setup_fprintf_case, teardown_fprintf,
	  DEVNULL, 0, 1, 0 },
	{ "log_json_file", op_log, setup_log_case, teardown_logger,
	  FILE_SINK, 0, 0, KEEL_LOG_FORMAT_JSON },
	{ "log_async_file", op_log, setup_log_case, teardown_logger,
	  FILE_SINK, 1, 0, KEEL_LOG_FORMAT_JSON },
	{ "fprintf_file", op_fprintf, setup_fprintf_case, teardown_fprintf,
	  FILE_SINK, 0, 0, 0 },
	{ "fprintf_flush_file", op_fprintf, setup_fprintf_case, teardown_fprintf,
	  FILE_SINK, 0, 1, 0 },
	{ "req_alone", op_req_alone, setup_log_case, teardown_logger,
	  DEVNULL, 1, 0, KEEL_LOG_FORMAT_JSON },
	{ "req_access_deferred", op_req_deferred, setup_log_case, teardown_logger,
	  DEVNULL, 1, 0, KEEL_LOG_FORMAT_JSON },
	{ "req_access_formatted", op_req_formatted, setup_log_case,
	  teardown_logger, DEVNULL, 1, 0, KEEL_LOG_FORMAT_JSON },
	{ "counter_inc", op_counter, setup_metrics_case, teardown_metrics,
	  DEVNULL, 0, 0, 0 },
	{ "histogram_observe", op_histogram, setup_metrics_case, teardown_metrics,
	  DEVNULL, 0, 0, 0 },
	{ "atomic_increment", op_plain_increment, setup_metrics_case,
	  teardown_metrics, DEVNULL, 0, 0, 0 },
};

int main(int argc, char **argv)
{
	double run_ns = bench_run_ms() * 1e6;
	size_t i;
	int any = 0;
	char path[128];

	if (mkdtemp(tmpdir) == NULL) {
		perror("bench_obs: mkdtemp");
		return 1;
	}
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (!bench_selected(argc, argv, cases[i].name))
			continue;
		printf("%s %.2f\n", cases[i].name, bench(&cases[i], run_ns));
		fflush(stdout);
		any = 1;
	}
	snprintf(path, sizeof(path), "%s/bench.log", tmpdir);
	unlink(path);
	rmdir(tmpdir);
	if (!any) {
		fprintf(stderr, "bench_obs: no such case\n");
		return 2;
	}
	return 0;
}
