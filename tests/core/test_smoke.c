/* KEEL_TEST_LABELS: threads */
#include <keel.h>
#include "keel_test.h"

static int cleaned;
static void cleanup(void *arg) { (void)arg; cleaned++; }
static void body(void *arg) { (void)arg; keel_defer(cleanup, NULL); keel_panic("boom"); }
static void rec(void *arg) { const struct keel_panic *p = keel_recover(); CHECK(p); CHECK_STR(keel_panic_message(p), "boom"); *(int*)arg = 1; }
static void outer(void *arg) { keel_defer(rec, arg); body(NULL); }

TEST(smoke)
{
	int got = 0;
	CHECK_INT(keel_call(outer, &got), ==, 1);
	CHECK_INT(got, ==, 1);
	CHECK_INT(cleaned, ==, 1);
}
