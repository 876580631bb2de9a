/*
 * fuzz/fuzz_tzif.c - libFuzzer harness for the TZif reader (src/sched/tz.c).
 *
 * Whatever the bytes, keel__tz_parse must return 0 or -EBADMSG and never
 * read outside them (ASan); a zone it accepts must then convert without
 * faults or overflow (UBSan) at instants from far past to far future, and
 * from_local must agree with to_local: every instant it returns shows the
 * civil time asked for, and a gap's end shows a later civil time.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *       fuzz/fuzz_tzif.c src/sched/tz.c -o fuzz_tzif
 *   ./fuzz_tzif -max_total_time=60 fuzz/corpus/tzif
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <keel/tz.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int64_t local_secs(const struct keel_civil *c)
{
	return keel_civil_days(c->year, c->month, c->day) * 86400 +
	       c->hour * 3600 + c->min * 60 + c->sec;
}

static void check_instant(const struct keel_tz *tz, int64_t t)
{
	struct keel_civil c, back;
	int64_t a, b;
	int32_t off;
	int n;

	keel_tz_to_local(tz, t, &c, &off);
	if (off < -89999 || off > 93599)
		abort();
	if (c.year < -100000 || c.year > 100000)
		return;
	n = keel_tz_from_local(tz, &c, &a, &b);
	/* c is shown at t, so it exists; with more than two answers (only
	 * odd files have them) t may lie between the two reported. */
	if (n < 1 || n > 2 || a > t || b < t)
		abort();
	keel_tz_to_local(tz, a, &back, NULL);
	if (local_secs(&back) != local_secs(&c))
		abort();
	keel_tz_to_local(tz, b, &back, NULL);
	if (local_secs(&back) != local_secs(&c))
		abort();
	/* An hour after that civil time: either shown, or skipped. */
	c.hour = (c.hour + 1) % 24;
	n = keel_tz_from_local(tz, &c, &a, &b);
	if (n < 0 || n > 2)
		abort();
	keel_tz_to_local(tz, a, &back, NULL);
	if (n == 0 && local_secs(&back) <= local_secs(&c))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int64_t probes[] = {
		INT64_MIN, -10000000000000LL, -2208988800LL, -1, 0,
		1700000000LL, 2147483647LL, 4102444800LL, 100000000000LL,
		INT64_MAX,
	};
	struct keel_tz *tz = NULL;
	size_t i;
	int rc;

	rc = keel__tz_parse("fuzz", data, size, &tz);
	if (rc != 0) {
		if (rc != -EBADMSG || tz != NULL)
			abort();
		return 0;
	}
	for (i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		struct keel_civil c;

		keel_tz_to_local(tz, probes[i], &c, NULL);
		if (c.year >= -100000 && c.year <= 100000)
			check_instant(tz, probes[i]);
	}
	/* Instants taken from the input, to land near its transitions. */
	for (i = 0; i + 8 <= size && i < 64 * 8; i += 8) {
		int64_t t;

		memcpy(&t, data + i, 8);
		check_instant(tz, t % 20000000000LL);
	}
	keel_tz_free(tz);
	return 0;
}
