/*
 * examples/keeld_embed.c - keeld with your own in-process handlers.
 *
 * The seed's scheduler runs Go functions; keeld runs C functions that a
 * program registers before the daemon starts. This program is keeld (same
 * options: --help) plus two handlers:
 *
 *   invoice.send   sends the day's invoices (here: counts them), fails when
 *                  the count is odd, to show retries;
 *   cache.rebuild  has a bug: a NULL dereference on every third run. The
 *                  fault fails that run only; keeld logs the panic with its
 *                  stack, counts it, and goes on.
 *
 *   ./build/examples/keeld_embed --data-dir /tmp/embed --jobs jobs.json
 *
 * with jobs such as
 *   {"name": "invoices", "schedule": "@every 10s",
 *    "executor": {"type": "handler", "name": "invoice.send"},
 *    "retry": {"max_attempts": 3, "initial": "1s"}}
 */
#include <stdio.h>

#include <keel.h>
#include <keel/exec.h>

#include "keeld.h"

static int invoice_send(struct keel_exec_call *call, void *ud)
{
	int *sent = ud;
	int n = __atomic_add_fetch(sent, 1, __ATOMIC_RELAXED);

	if (n % 2 == 1) {
		snprintf(call->error, call->errlen,
			 "mail server refused invoice batch %d", n);
		return 1;
	}
	return 0;
}

struct cache {
	int builds;
	int *index;
};

static int cache_rebuild(struct keel_exec_call *call, void *ud)
{
	struct cache *c = ud;
	int *volatile index = c->index;

	(void)call;
	if (++c->builds % 3 == 0)
		index = NULL; /* the bug */
	return index[0];
}

static int setup(struct keel_executor *ex, void *ud)
{
	static int sent;
	static int slots[1];
	static struct cache cache = { 0, slots };

	(void)ud;
	if (keel_exec_handler_register(ex, "invoice.send", invoice_send, &sent) != 0)
		return -1;
	return keel_exec_handler_register(ex, "cache.rebuild", cache_rebuild,
					  &cache);
}

int main(int argc, char **argv)
{
	return keeld_main(argc, argv, setup, NULL);
}
