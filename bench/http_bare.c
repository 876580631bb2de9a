/*
 * bench/http_bare.c - the baseline of the HTTP benchmark: libmicrohttpd
 * alone, no keel, answering the same two routes as bench/http_keel.c.
 *
 *   GET /hello   200 "hello\n" (text/plain)
 *   GET /sleep   sleeps 10 ms, then the same answer
 *   anything else: 404 (other paths) or 405 (other methods), empty body
 *
 *   bench_http_bare epoll [port]   one internal epoll thread with
 *                                  MHD_USE_TURBO: the flags keel's server
 *                                  uses by default. /sleep sleeps on that
 *                                  thread, as a bare MHD program without an
 *                                  offload does: the point of comparison
 *   bench_http_bare tpc [port]     MHD_USE_THREAD_PER_CONNECTION (poll):
 *                                  MHD's own answer to blocking handlers,
 *                                  so the /sleep comparison is fair to MHD
 *
 * port: 0 (the default) lets the kernel pick. It listens on 127.0.0.1,
 * prints "ready <port>" on stdout once it accepts connections, and serves
 * until SIGTERM or SIGINT; then it prints "served <n>" (the requests it
 * answered 200) on stderr and exits 0. bench/run-http.sh drives it.
 *
 * The handler is the minimal correct MHD program: it answers when MHD says
 * the request is complete (the second call; answering on the first, as
 * MHD's "hellobrowser" does, makes MHD close every connection, which would
 * measure TCP handshakes), builds a response from a static buffer, adds
 * Content-Type, queues and releases it, as every request in a real server
 * needs its own response. The limits
 * are keel's defaults (1024 connections, 30 s idle timeout), so only the
 * layer on top differs.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

static const char hello[] = "hello\n";
static atomic_ulong served;

static void sleep_10ms(void)
{
	struct timespec ts = {0, 10 * 1000 * 1000};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status,
			      const char *body, size_t len)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, (void *)body,
					    MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		return MHD_NO;
	if (len > 0 && MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
					       "text/plain") != MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	int is_sleep;

	static int marker;

	(void)cls;
	(void)version;
	(void)upload_data;
	/* The first call comes with the headers: answering then would make
	 * MHD close the connection (it has not read the body yet), so wait
	 * for the call that says the request is complete, as keel does. */
	if (*con_cls == NULL) {
		*con_cls = &marker;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		*upload_data_size = 0; /* a body: ignored */
		return MHD_YES;
	}
	is_sleep = strcmp(url, "/sleep") == 0;
	if (!is_sleep && strcmp(url, "/hello") != 0)
		return answer(conn, MHD_HTTP_NOT_FOUND, "", 0);
	if (strcmp(method, "GET") != 0)
		return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "", 0);
	if (is_sleep)
		sleep_10ms();
	atomic_fetch_add_explicit(&served, 1, memory_order_relaxed);
	return answer(conn, MHD_HTTP_OK, hello, sizeof(hello) - 1);
}

static int usage(void)
{
	fprintf(stderr, "usage: bench_http_bare epoll|tpc [port]\n");
	return 2;
}

int main(int argc, char **argv)
{
	unsigned flags;
	long port = 0;
	struct sockaddr_in addr = {.sin_family = AF_INET};
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	sigset_t stop;
	int sig;

	if (argc < 2 || argc > 3)
		return usage();
	if (strcmp(argv[1], "epoll") == 0)
		flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
			MHD_USE_TURBO;
	else if (strcmp(argv[1], "tpc") == 0)
		flags = MHD_USE_THREAD_PER_CONNECTION |
			MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
	else
		return usage();
	if (argc == 3) {
		char *end;

		errno = 0;
		port = strtol(argv[2], &end, 10);
		if (errno != 0 || *end != '\0' || end == argv[2] || port < 0 ||
		    port > 65535)
			return usage();
	}

	/* Block the stop signals before MHD starts its threads (they inherit
	 * the mask), so that only sigwait below sees them. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	addr.sin_port = htons((uint16_t)port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	d = MHD_start_daemon(
	    flags | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL, on_request,
	    NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
	if (d == NULL) {
		fprintf(stderr, "bench_http_bare: MHD_start_daemon failed\n");
		return 1;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	if (info == NULL || info->port == 0) {
		fprintf(stderr, "bench_http_bare: no port\n");
		MHD_stop_daemon(d);
		return 1;
	}
	printf("ready %u\n", (unsigned)info->port);
	fflush(stdout);

	while (sigwait(&stop, &sig) != 0)
		;
	MHD_stop_daemon(d);
	fprintf(stderr, "served %lu\n",
		atomic_load_explicit(&served, memory_order_relaxed));
	return 0;
}
