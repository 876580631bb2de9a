/*
 * bench/http_keel.c - keel's HTTP server for the benchmark: the same two
 * routes as bench/http_bare.c, served by keel_http_server.
 *
 *   GET /hello   200 "hello\n" (text/plain), run on the event thread
 *   GET /sleep   sleeps 10 ms, then the same answer; KEEL_HTTP_BLOCKING,
 *                so it runs on the server's worker pool and the event
 *                thread goes on serving
 *
 *   bench_http_keel full [port]   the whole chain a service would use:
 *                                 recover, trace, access_log, metrics;
 *                                 the access log asynchronous, as a busy
 *                                 server would run it
 *   bench_http_keel full_synclog [port]
 *                                 the same with a synchronous access log:
 *                                 one write(2) per request on the event
 *                                 thread
 *   bench_http_keel bare [port]   no middleware at all: the cost of the
 *                                 server itself, to tell it from the chain's
 *
 * The server is keel's default configuration (one epoll event thread,
 * 1024 connections, 30 s idle timeout) on 127.0.0.1; port 0 (the default)
 * lets the kernel pick. It prints "ready <port>" on stdout once it listens
 * and serves until SIGTERM or SIGINT; then it stops the server, prints
 * "served <n> offloaded <m> panics <p>" on stderr and exits 0.
 *
 * The access log is a real JSON logger (level INFO) writing to /dev/null:
 * every record is formatted whole and written, as it would be to a file or
 * a pipe, minus the disk. Asynchronous (full), a request only copies the
 * record's values into the logger's queue, and the writer thread formats
 * the records (keel_log_write_deferred) and writes them in batches; a run
 * in which the queue dropped a record fails (exit 1), since dropping is
 * cheaper than writing. Synchronous (full_synclog), each record is
 * formatted and written (one write(2)) before the response goes out. The metrics go to a
 * registry of their own, never scraped. The trace middleware starts a trace
 * for every request (wrk sends no traceparent) and answers traceparent and
 * X-Request-Id headers.
 *
 * KEEL_BENCH_HTTP_CHAIN="trace,metrics" runs only the middleware named;
 * KEEL_BENCH_HTTP_LOG_OFF=1 sets the access logger's level to OFF (the
 * middleware runs, no record is made): both tell what each piece costs.
 *
 * The pool for /sleep has KEEL_BENCH_HTTP_POOL workers (default 64). A
 * handler that sleeps holds its worker, so a pool of w workers serves at
 * most w / 10 ms requests a second: with the benchmark's 64 connections,
 * 64 workers let every connection's request sleep at once, which is what
 * the baselines get (a thread per connection for MHD's tpc mode, a
 * goroutine per connection for Go). Fewer workers measure the pool's
 * width, not the server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <keel/clock.h>
#include <keel/http.h>
#include <keel/log.h>
#include <keel/metrics.h>

static const char hello[] = "hello\n";

static void answer_hello(struct keel_http_resp *rs)
{
	if (keel_http_set_header(rs, "Content-Type", "text/plain") != 0 ||
	    keel_http_write(rs, hello, sizeof(hello) - 1) != 0)
		keel_http_error(rs, 500, "out of memory");
}

static void on_hello(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	(void)rq;
	(void)ud;
	answer_hello(rs);
}

static void on_sleep(struct keel_http_req *rq, struct keel_http_resp *rs,
		     void *ud)
{
	struct timespec ts = {0, 10 * 1000 * 1000};

	(void)rq;
	(void)ud;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	answer_hello(rs);
}

static int parse_port(const char *s, uint16_t *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s || v < 0 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

static int pool_width(void)
{
	const char *env = getenv("KEEL_BENCH_HTTP_POOL");
	long v = env != NULL ? strtol(env, NULL, 10) : 64;

	return v >= 1 && v <= 4096 ? (int)v : 64;
}

static int usage(void)
{
	fprintf(stderr, "usage: bench_http_keel full|full_synclog|bare [port]\n");
	return 2;
}

/* What the program owns, freed in one place whatever failed. */
static struct {
	struct keel_http_router *rt;
	struct keel_http_server *srv;
	struct keel_logger *access;
	struct keel_metrics *reg;
	struct keel_http_metrics *hm;
	int devnull;
} b = {.devnull = -1};

static void release(void)
{
	keel_http_server_free(b.srv);
	keel_http_router_free(b.rt);
	keel_http_metrics_free(b.hm);
	keel_metrics_free(b.reg);
	keel_log_free(b.access);
	if (b.devnull >= 0)
		close(b.devnull);
}

/* KEEL_BENCH_HTTP_CHAIN="recover,trace" runs only those middleware (in
 * the full chain's order), to tell what each one costs; unset: all four. */
static int use_chain(const char *only)
{
	/* ud: recover and access_log take the logger, trace its defaults,
	 * metrics its collector. */
	const struct {
		const char *name;
		keel_http_middleware_fn fn;
		void *ud;
	} mws[] = {
		{ "recover", keel_http_mw_recover, b.access },
		{ "trace", keel_http_mw_trace, NULL },
		{ "access_log", keel_http_mw_access_log, b.access },
		{ "metrics", keel_http_mw_metrics, b.hm },
	};
	size_t i;
	int err;

	for (i = 0; i < sizeof(mws) / sizeof(mws[0]); i++) {
		if (only != NULL && strstr(only, mws[i].name) == NULL)
			continue;
		if ((err = keel_http_use(b.srv, mws[i].fn, mws[i].ud)) != 0)
			return err;
	}
	return 0;
}

/* The chain of a service: recover outermost, then trace (so the access
 * log and any panic record carry the trace), the access log, the metrics. */
static int use_full_chain(int async_log)
{
	struct keel_log_config lc;
	int err;

	b.devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (b.devnull < 0)
		return -errno;
	keel_log_config_init(&lc);
	lc.fd = b.devnull;
	lc.format = KEEL_LOG_FORMAT_JSON;
	lc.level = getenv("KEEL_BENCH_HTTP_LOG_OFF") ? KEEL_LOG_OFF : KEEL_LOG_INFO;
	lc.async = async_log;
	lc.async_buffer = 8 << 20;
	if ((err = keel_log_new(&lc, &b.access)) != 0 ||
	    (err = keel_metrics_new(NULL, &b.reg)) != 0 ||
	    (err = keel_http_metrics_new(b.reg, &b.hm)) != 0)
		return err;
	return use_chain(getenv("KEEL_BENCH_HTTP_CHAIN"));
}

static int setup(int full, int async_log, uint16_t port)
{
	struct keel_http_config cfg;
	int err;

	if ((err = keel_http_router_new(&b.rt)) != 0 ||
	    (err = keel_http_route(b.rt, "GET", "/hello", on_hello, NULL, 0)) !=
		0 ||
	    (err = keel_http_route(b.rt, "GET", "/sleep", on_sleep, NULL,
				   KEEL_HTTP_BLOCKING)) != 0)
		return err;
	keel_http_config_init(&cfg);
	cfg.address = "127.0.0.1";
	cfg.port = port;
	cfg.router = b.rt;
	cfg.pool_threads = pool_width();
	if ((err = keel_http_server_new(&cfg, &b.srv)) != 0)
		return err;
	if (full && (err = use_full_chain(async_log)) != 0)
		return err;
	return keel_http_server_start(b.srv);
}

int main(int argc, char **argv)
{
	uint16_t port = 0;
	int full, async_log = 0, err, sig;
	sigset_t stop;
	struct keel_http_stats st;
	struct keel_log_stats ls = { 0 };

	if (argc < 2 || argc > 3)
		return usage();
	if (strcmp(argv[1], "full") == 0)
		full = 1, async_log = 1;
	else if (strcmp(argv[1], "full_synclog") == 0)
		full = 1;
	else if (strcmp(argv[1], "bare") == 0)
		full = 0;
	else
		return usage();
	if (argc == 3 && parse_port(argv[2], &port) != 0)
		return usage();

	/* Block the stop signals before any thread starts (threads inherit
	 * the mask), so that only sigwait below sees them. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((err = setup(full, async_log, port)) != 0) {
		fprintf(stderr, "bench_http_keel: %s\n", strerror(-err));
		release();
		return 1;
	}
	printf("ready %u\n", (unsigned)keel_http_server_port(b.srv));
	fflush(stdout);

	while (sigwait(&stop, &sig) != 0)
		;
	err = keel_http_server_stop(b.srv, 5 * KEEL_SEC);
	keel_http_server_stats(b.srv, &st);
	if (b.access != NULL) {
		keel_log_flush(b.access);
		keel_log_stats(b.access, &ls);
	}
	fprintf(stderr, "served %llu offloaded %llu panics %llu logged %llu dropped %llu\n",
		(unsigned long long)st.requests,
		(unsigned long long)st.offloaded,
		(unsigned long long)st.panics,
		(unsigned long long)ls.written,
		(unsigned long long)ls.dropped);
	release();
	return err == 0 && ls.dropped == 0 ? 0 : 1;
}
