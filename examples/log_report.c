/*
 * examples/log_report.c - the design notes' chapter 4.3: one structured log
 * format, errors reported with their context, and the trace id that ties a
 * log line to its report.
 *
 * A request arrives with a W3C traceparent. Its handler logs the seed's
 * "Payment validation failed" record, then hits a NULL dereference that
 * keel recovers. Both become one JSON line each on stdout, and both are
 * reported to a webhook (here a tiny receiver on 127.0.0.1 that the example
 * starts; in production, Sentry's DSN or your alerting relay) by the
 * reporter's background thread. The example checks that the two reports
 * arrived with the request's trace id and the crashing function's name.
 *
 * Run: ./build/examples/example_log_report
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <keel.h>

/* ------------------------------------------------------------------------
 * A webhook receiver: accepts POSTs, keeps their bodies, answers 200
 * ------------------------------------------------------------------------ */

struct receiver {
	int fd;
	int port;
	pthread_t thread;
	pthread_mutex_t mu;
	char bodies[2][16384];
	int count;
};

static void *receiver_main(void *arg)
{
	struct receiver *rv = arg;
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
				 "Connection: close\r\n\r\n";

	for (;;) {
		char req[32768];
		size_t n = 0;
		long want = -1;
		char *body = NULL;
		int c = accept(rv->fd, NULL, NULL);

		if (c < 0)
			return NULL; /* closed: the example is over */
		/* Read the head, then Content-Length bytes of body. */
		while (n < sizeof(req) - 1) {
			ssize_t r = read(c, req + n, sizeof(req) - 1 - n);

			if (r <= 0)
				break;
			n += (size_t)r;
			req[n] = '\0';
			if (body == NULL && (body = strstr(req, "\r\n\r\n")) != NULL) {
				char *cl = strcasestr(req, "content-length:");

				body += 4;
				want = cl != NULL ? strtol(cl + 15, NULL, 10) : 0;
			}
			if (body != NULL && (long)(n - (size_t)(body - req)) >= want)
				break;
		}
		if (body != NULL) {
			pthread_mutex_lock(&rv->mu);
			if (rv->count < 2)
				snprintf(rv->bodies[rv->count], sizeof(rv->bodies[0]),
					 "%s", body);
			rv->count++;
			pthread_mutex_unlock(&rv->mu);
		}
		(void)!write(c, ok, sizeof(ok) - 1);
		close(c);
	}
}

static int receiver_start(struct receiver *rv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);

	memset(rv, 0, sizeof(*rv));
	pthread_mutex_init(&rv->mu, NULL);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	rv->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (rv->fd < 0 || bind(rv->fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(rv->fd, 8) != 0 ||
	    getsockname(rv->fd, (struct sockaddr *)&a, &len) != 0)
		return -1;
	rv->port = ntohs(a.sin_port);
	return pthread_create(&rv->thread, NULL, receiver_main, rv) == 0 ? 0 : -1;
}

static void receiver_stop(struct receiver *rv)
{
	shutdown(rv->fd, SHUT_RDWR);
	close(rv->fd);
	pthread_join(rv->thread, NULL);
}

/* ------------------------------------------------------------------------
 * The service
 * ------------------------------------------------------------------------ */

struct payment {
	const char *card; /* NULL: the bug below */
	long cents;
};

/* no_sanitize: under UBSan (make asan) the NULL load is the point here. */
static __attribute__((noinline, no_sanitize("undefined"))) size_t
card_digits(const struct payment *p)
{
	const char *s;
	size_t n = 0;

	for (s = p->card; *s != '\0'; s++) /* a NULL card: NULL dereference */
		n += *s >= '0' && *s <= '9';
	return n;
}

static struct keel_logger *logger;

static void log_recovered(void *arg)
{
	const struct keel_panic *p = keel_recover();

	(void)arg;
	if (p != NULL)
		keel_log_panic(logger, KEEL_LOG_ERROR, "payment-service",
			       "payment handler crashed", p,
			       (struct keel_field[]){ KEEL_STR("route", "/v1/pay") }, 1);
}

static void handle_payment(void *arg)
{
	const struct payment *p = arg;

	keel_defer(log_recovered, NULL);
	if (p->cents <= 0)
		keel_log_error(logger, "payment-service", "Payment validation failed",
			       KEEL_OBJ("details"), KEEL_STR("error_code", "PAY_4001"),
			       KEEL_INT("cents", p->cents), KEEL_OBJ_END());
	keel_log_info(logger, "payment-service", "card checked",
		      KEEL_UINT("digits", card_digits(p)));
}

int main(void)
{
	static const char incoming[] =
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	struct keel_reporter_config rc;
	struct keel_reporter *rep;
	struct keel_log_config lc;
	struct keel_trace parent, mine;
	struct keel_reporter_stats st;
	struct receiver rv;
	struct payment bad = { NULL, -5 };
	char url[64], tid[33];
	int ok = 1, i;

	if (receiver_start(&rv) != 0) {
		perror("receiver");
		return 1;
	}
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hooks/errors", rv.port);

	/* The reporter: where errors go. */
	keel_reporter_config_init(&rc);
	rc.webhook_url = url;
	rc.service = "payment-service";
	rc.release = "payment-service@1.0.0";
	if (keel_reporter_new(&rc, &rep) != 0)
		return 1;

	/* The logger: JSON lines on stdout, ERROR and above also reported. */
	keel_log_config_init(&lc);
	lc.fd = STDOUT_FILENO;
	lc.format = KEEL_LOG_FORMAT_JSON;
	lc.service = "payment-service";
	lc.reporter = rep;
	if (keel_log_new(&lc, &logger) != 0)
		return 1;

	/* The request's trace: a child span of the caller's. */
	if (keel_traceparent_parse(incoming, strlen(incoming), &parent) != 0)
		return 1;
	keel_trace_child(&parent, &mine);
	keel_trace_set(&mine, NULL);

	keel_panic_capture_stacks(1); /* so the report has the stack */
	if (keel_call(handle_payment, &bad) != 1) {
		fprintf(stderr, "the handler did not crash as planned\n");
		ok = 0;
	}
	keel_log_info(logger, "payment-service", "still serving");

	keel_reporter_flush(rep, 10 * KEEL_SEC);
	keel_reporter_stats(rep, &st);
	keel_log_free(logger);
	keel_reporter_free(rep);
	receiver_stop(&rv);

	/* What the receiver got: two reports, both with the request's trace. */
	keel_trace_id_hex(&parent, tid);
	printf("\nreports received: %d (sent %llu, failed %llu)\n", rv.count,
	       (unsigned long long)st.sent, (unsigned long long)st.failed);
	if (rv.count != 2)
		ok = 0;
	for (i = 0; i < rv.count && i < 2; i++) {
		printf("report %d: %.160s...\n", i + 1, rv.bodies[i]);
		if (strstr(rv.bodies[i], tid) == NULL) {
			fprintf(stderr, "report %d lacks trace id %s\n", i + 1, tid);
			ok = 0;
		}
	}
	if (rv.count >= 2 && (strstr(rv.bodies[0], "PAY_4001") == NULL ||
			      strstr(rv.bodies[1], "nil-dereference") == NULL ||
			      strstr(rv.bodies[1], "card_digits") == NULL)) {
		fprintf(stderr, "the reports do not say what happened\n");
		ok = 0;
	}
	printf("%s\n", ok ? "ok: both errors logged and reported with trace id "
			    "4bf92f3577b34da6a3ce929d0e0e4736"
			  : "FAILED");
	return ok ? 0 : 1;
}
