/* KEEL_TEST_LABELS: threads */
/*
 * tests/obs/test_metrics.c - the metrics registry: every bad input refused
 * with nothing changed, values of counters, gauges and histograms, exact
 * totals under concurrent updates, renders taken while other threads update,
 * and an independent checker of the text exposition format 0.0.4 that
 * every rendering in these tests goes through.
 *
 * The checker (expo_parse, in expo_check.h) is written from the format's
 * rules, not from keel's renderer. A case here proves it rejects each kind
 * of bad text, so it can fail.
 */
#include "obs/expo_check.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static struct keel_metrics *new_reg(void)
{
	struct keel_metrics *reg = NULL;

	CHECK_INT(keel_metrics_new(NULL, &reg), ==, 0);
	CHECK(reg != NULL);
	return reg;
}

static int count_lines_with(const char *text, const char *needle)
{
	int n = 0;

	for (; (text = strstr(text, needle)) != NULL; text++)
		n++;
	return n;
}

/* The registry renders exactly want. */
static void check_render(struct keel_metrics *reg, const char *want)
{
	struct expo e;
	char *text = render_checked(reg, &e);

	CHECK_STR(text, want);
	expo_free(&e);
	free(text);
}

/* ------------------------------------------------------------------------
 * The checker itself
 * ------------------------------------------------------------------------ */

static void expo_rejects(const char *text, const char *why)
{
	struct expo e;

	if (expo_parse(text, &e) == 0)
		KEEL_TEST_FAIL("checker accepted bad text (%s):\n%s", why, text);
	CHECK(e.err[0] != '\0');
	expo_free(&e);
}

TEST(checker_rejects_bad_text)
{
	struct expo e;
	const char *good = "# HELP a_total x\\ny\n# TYPE a_total counter\n"
			   "a_total{k=\"v\\\"\\\\\\n\"} 1\n"
			   "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
			   "h_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";

	CHECK_INT(expo_parse(good, &e), ==, 0);
	CHECK_STR(e.f[0].help, "x\ny");
	CHECK_STR(expo_find(&e, "a_total", "k", "v\"\\\n", NULL)->l[0].value,
		  "v\"\\\n");
	CHECK(EXPO_VALUE(&e, "h_sum", NULL) == 3.5);
	expo_free(&e);

	expo_rejects("# TYPE a gauge\na 1", "no final newline");
	expo_rejects("a 1\n", "sample without TYPE");
	expo_rejects("# TYPE a gauge\n# TYPE a gauge\na 1\n", "TYPE twice");
	expo_rejects("# TYPE a gauge\na 1\n# HELP a x\n", "HELP after samples");
	expo_rejects("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n",
		     "family split");
	expo_rejects("# TYPE a gauge\nb 1\n", "sample of another family");
	expo_rejects("# TYPE 1a gauge\n", "bad metric name");
	expo_rejects("# TYPE a gauge\na{1x=\"v\"} 1\n", "bad label name");
	expo_rejects("# TYPE a gauge\na{k=\"v\",k=\"w\"} 1\n", "label twice");
	expo_rejects("# TYPE a gauge\na{k=\"v\\t\"} 1\n", "bad escape");
	expo_rejects("# TYPE a gauge\na{k=\"v} 1\n", "unterminated value");
	expo_rejects("# TYPE a gauge\na{k=v} 1\n", "unquoted value");
	expo_rejects("# TYPE a gauge\na 1x\n", "bad value");
	expo_rejects("# TYPE a gauge\na inf\n", "inf spelled wrong");
	expo_rejects("# TYPE a gauge\na  1\n", "two spaces");
	expo_rejects("# TYPE a gauge\na{k=\"1\"} 1\na{k=\"1\"} 2\n", "series twice");
	expo_rejects("# TYPE a counter\na -1\n", "negative counter");
	expo_rejects("# TYPE a wibble\na 1\n", "unknown type");
	expo_rejects("# HELP a x\\q\n", "bad HELP escape");
	expo_rejects("# TYPE a gauge\r\na 1\n", "carriage return");
	expo_rejects("# TYPE h histogram\nh_bucket{le=\"2\"} 1\n"
		     "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		     "le not ascending");
	expo_rejects("# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
		     "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		     "buckets decrease");
	expo_rejects("# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
		     "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
		     "+Inf != count");
	expo_rejects("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
		     "no +Inf bucket");
	expo_rejects("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
		     "no _sum");
	expo_rejects("# TYPE h histogram\nh_sum 1\nh_count 1\n", "no buckets");
	expo_rejects("# TYPE h histogram\nh 1\n", "histogram sample without suffix");
}

/* ------------------------------------------------------------------------
 * Registry set-up and bad input
 * ------------------------------------------------------------------------ */

TEST(config_and_new)
{
	struct keel_metrics_config cfg;
	struct keel_metrics *reg = (struct keel_metrics *)&cfg;

	keel_metrics_config_init(&cfg);
	CHECK_INT(cfg.max_series, ==, 10000);
	CHECK_INT(keel_metrics_new(&cfg, NULL), ==, -EINVAL);
	cfg.max_series = 0;
	CHECK_INT(keel_metrics_new(&cfg, &reg), ==, -EINVAL);
	CHECK(reg == (struct keel_metrics *)&cfg); /* untouched */
	cfg.max_series = 1;
	CHECK_INT(keel_metrics_new(&cfg, &reg), ==, 0);
	check_render(reg, "");
	keel_metrics_free(reg);
	keel_metrics_free(NULL);
	CHECK_STR(KEEL_METRICS_CONTENT_TYPE,
		  "text/plain; version=0.0.4; charset=utf-8");
	keel_test_leak_check();
}

/* Registers one counter so that a registry has something to keep. */
static struct keel_metrics *reg_with_one(void)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *f;

	CHECK_INT(keel_metrics_counter(reg, "kept_total", "Kept.",
				       KEEL_LABELS("a"), &f), ==, 0);
	keel_counter_inc(keel_counter_with(f, "x"));
	return reg;
}

static const char kept[] = "# HELP kept_total Kept.\n# TYPE kept_total counter\n"
			   "kept_total{a=\"x\"} 1\n";

TEST(bad_metric_names)
{
	static const char *const bad[] = { "", "1abc", "a-b", "a b", "a.b",
					   "caf\xc3\xa9", "a\n", "{a}" };
	struct keel_metrics *reg = reg_with_one();
	struct keel_family *f = (struct keel_family *)&f, *g;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_INT(keel_metrics_counter(reg, bad[i], "h", KEEL_NO_LABELS, &f),
			  ==, -EINVAL);
		CHECK_INT(keel_metrics_gauge(reg, bad[i], "h", KEEL_NO_LABELS, &f),
			  ==, -EINVAL);
		CHECK_INT(keel_metrics_histogram(reg, bad[i], "h", KEEL_NO_LABELS,
						 NULL, 0, &f), ==, -EINVAL);
	}
	CHECK_INT(keel_metrics_counter(reg, NULL, "h", KEEL_NO_LABELS, &f), ==,
		  -EINVAL);
	{
		char longname[KEEL_METRICS_MAX_NAME + 2];

		memset(longname, 'n', sizeof(longname) - 1);
		longname[sizeof(longname) - 1] = '\0';
		CHECK_INT(keel_metrics_gauge(reg, longname, "h", KEEL_NO_LABELS, &f),
			  ==, -EINVAL);
		longname[KEEL_METRICS_MAX_NAME] = '\0'; /* the limit itself */
		CHECK_INT(keel_metrics_gauge(reg, longname, "h", KEEL_NO_LABELS, &g),
			  ==, 0);
		/* Its histogram-suffix clash check still works at the limit. */
		longname[KEEL_METRICS_MAX_NAME - 4] = '\0';
		CHECK_INT(keel_metrics_histogram(reg, longname, "h", KEEL_NO_LABELS,
						 NULL, 0, &g), ==, 0);
		memcpy(longname + KEEL_METRICS_MAX_NAME - 4, "_sum", 5);
		CHECK_INT(keel_metrics_gauge(reg, longname, "h", KEEL_NO_LABELS, &g),
			  ==, -EEXIST);
		keel_metrics_free(reg);
		reg = reg_with_one();
	}
	CHECK_INT(keel_metrics_counter(NULL, "a", "h", KEEL_NO_LABELS, &f), ==,
		  -EINVAL);
	CHECK_INT(keel_metrics_counter(reg, "a", "h", KEEL_NO_LABELS, NULL), ==,
		  -EINVAL);
	/* Help must be UTF-8. */
	CHECK_INT(keel_metrics_counter(reg, "a", "\xff", KEEL_NO_LABELS, &f), ==,
		  -EINVAL);
	CHECK(f == (struct keel_family *)&f);
	check_render(reg, kept);
	/* Good names. */
	CHECK_INT(keel_metrics_gauge(reg, "a", NULL, KEEL_NO_LABELS, &g), ==, 0);
	CHECK_INT(keel_metrics_gauge(reg, "_b:c9", "", KEEL_NO_LABELS, &g), ==, 0);
	CHECK_INT(keel_metrics_gauge(reg, ":x", "h", KEEL_NO_LABELS, &g), ==, 0);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(bad_label_names)
{
	static const char *const bad[] = { "", "__x", "1a", "a-b", "a:b",
					   "a b", "\xc3\xa9" };
	const char *many[KEEL_METRICS_MAX_LABELS + 1];
	char names[KEEL_METRICS_MAX_LABELS + 1][8];
	struct keel_metrics *reg = reg_with_one();
	struct keel_family *f = (struct keel_family *)&f;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *l[2] = { "ok", bad[i] };

		CHECK_INT(keel_metrics_counter(reg, "c_total", "h", l, 2, &f), ==,
			  -EINVAL);
		CHECK_INT(keel_metrics_histogram(reg, "h", "h", l, 2, NULL, 0, &f),
			  ==, -EINVAL);
	}
	CHECK_INT(keel_metrics_counter(reg, "c_total", "h",
				       KEEL_LABELS("a", NULL), &f), ==, -EINVAL);
	CHECK_INT(keel_metrics_counter(reg, "c_total", "h", NULL, 1, &f), ==,
		  -EINVAL);
	CHECK_INT(keel_metrics_counter(reg, "c_total", "h",
				       KEEL_LABELS("a", "b", "a"), &f), ==,
		  -EINVAL);
	CHECK_INT(keel_metrics_histogram(reg, "h", "h", KEEL_LABELS("le"), NULL,
					 0, &f), ==, -EINVAL);
	for (i = 0; i <= KEEL_METRICS_MAX_LABELS; i++) {
		snprintf(names[i], sizeof(names[i]), "l%zu", i);
		many[i] = names[i];
	}
	CHECK_INT(keel_metrics_gauge(reg, "g", "h", many,
				     KEEL_METRICS_MAX_LABELS + 1, &f), ==,
		  -EINVAL);
	CHECK(f == (struct keel_family *)&f);
	check_render(reg, kept);
	/* The limit itself, "le" outside histograms, "_x" are fine. */
	CHECK_INT(keel_metrics_gauge(reg, "g", "h", many,
				     KEEL_METRICS_MAX_LABELS, &f), ==, 0);
	CHECK_INT(keel_metrics_gauge(reg, "g2", "h", KEEL_LABELS("le", "_x"), &f),
		  ==, 0);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(bad_buckets)
{
	double many[KEEL_METRICS_MAX_BUCKETS + 1];
	struct keel_metrics *reg = reg_with_one();
	struct keel_family *f = (struct keel_family *)&f;
	size_t i;

	CHECK_INT(keel_metrics_histogram(reg, "h", "h", KEEL_NO_LABELS,
					 (double[]){ 1, NAN }, 2, &f), ==, -EINVAL);
	CHECK_INT(keel_metrics_histogram(reg, "h", "h", KEEL_NO_LABELS,
					 (double[]){ -INFINITY, 1 }, 2, &f), ==,
		  -EINVAL);
	CHECK_INT(keel_metrics_histogram(reg, "h", "h", KEEL_NO_LABELS,
					 (double[]){ 1, 2, 1 }, 3, &f), ==, -EINVAL);
	CHECK_INT(keel_metrics_histogram(reg, "h", "h", KEEL_NO_LABELS, NULL, 3,
					 &f), ==, -EINVAL);
	for (i = 0; i <= KEEL_METRICS_MAX_BUCKETS; i++)
		many[i] = (double)i;
	CHECK_INT(keel_metrics_histogram(reg, "h", "h", KEEL_NO_LABELS, many,
					 KEEL_METRICS_MAX_BUCKETS + 1, &f), ==,
		  -EINVAL);
	CHECK(f == (struct keel_family *)&f);
	check_render(reg, kept);
	/* At the limit; unsorted input is sorted; a final +Inf is dropped. */
	CHECK_INT(keel_metrics_histogram(reg, "big", "h", KEEL_NO_LABELS, many,
					 KEEL_METRICS_MAX_BUCKETS, &f), ==, 0);
	CHECK_INT(keel_metrics_histogram(reg, "h", NULL, KEEL_NO_LABELS,
					 (double[]){ INFINITY, 2, -1, 0.5 }, 4, &f),
		  ==, 0);
	keel_histogram_observe(keel_histogram_with(f), 1);
	CHECK_INT(keel_metrics_histogram(reg, "only_inf", NULL, KEEL_NO_LABELS,
					 (double[]){ INFINITY }, 1, &f), ==, 0);
	keel_histogram_observe(keel_histogram_with(f), 7);
	{
		struct expo e;
		char *text = render_checked(reg, &e);

		CHECK_CONTAINS(text, "# TYPE h histogram\n"
				     "h_bucket{le=\"-1\"} 0\n"
				     "h_bucket{le=\"0.5\"} 0\n"
				     "h_bucket{le=\"2\"} 1\n"
				     "h_bucket{le=\"+Inf\"} 1\n"
				     "h_sum 1\nh_count 1\n");
		CHECK_CONTAINS(text, "# TYPE only_inf histogram\n"
				     "only_inf_bucket{le=\"+Inf\"} 1\n"
				     "only_inf_sum 7\nonly_inf_count 1\n");
		CHECK_INT(count_lines_with(text, "big_bucket{"), ==,
			  KEEL_METRICS_MAX_BUCKETS + 1);
		expo_free(&e);
		free(text);
	}
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(bucket_helpers)
{
	double b[KEEL_METRICS_MAX_BUCKETS + 1] = { 42 };

	CHECK_INT(keel_metrics_buckets_exponential(1, 2, 4, b), ==, 0);
	CHECK(b[0] == 1 && b[1] == 2 && b[2] == 4 && b[3] == 8);
	CHECK_INT(keel_metrics_buckets_linear(0, 5, 3, b), ==, 0);
	CHECK(b[0] == 0 && b[1] == 5 && b[2] == 10);
	CHECK_INT(keel_metrics_buckets_linear(-1, 0.5, 2, b), ==, 0);
	CHECK(b[0] == -1 && b[1] == -0.5);
	b[0] = 42;
	CHECK_INT(keel_metrics_buckets_exponential(0, 2, 4, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_exponential(-1, 2, 4, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_exponential(1, 1, 4, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_exponential(1, NAN, 4, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_exponential(1, 2, 0, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_exponential(1, 2, KEEL_METRICS_MAX_BUCKETS + 1, b),
		  ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_exponential(1e300, 1e10, 3, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_exponential(1, 2, 4, NULL), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_linear(0, 0, 4, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_linear(0, -1, 4, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_linear(INFINITY, 1, 4, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_linear(0, 1, 0, b), ==, -EINVAL);
	CHECK_INT(keel_metrics_buckets_linear(1e308, 1e308, 4, b), ==, -EINVAL);
	CHECK(b[0] == 42);
	/* The defaults are Prometheus'. */
	CHECK_INT(KEEL_METRICS_DEFAULT_BUCKETS_N, ==, 11);
	CHECK(keel_metrics_default_buckets[0] == .005 &&
	      keel_metrics_default_buckets[10] == 10);
}

TEST(duplicate_registration)
{
	struct keel_metrics *reg = reg_with_one();
	struct keel_family *a, *b, *h, *x = (struct keel_family *)&x;
	char *before;

	CHECK_INT(keel_metrics_counter(reg, "req_total", "Requests.",
				       KEEL_LABELS("m", "c"), &a), ==, 0);
	CHECK_INT(keel_metrics_counter(reg, "req_total", "Requests.",
				       KEEL_LABELS("m", "c"), &b), ==, 0);
	CHECK(a == b);
	CHECK_INT(keel_metrics_histogram(reg, "lat", "L.", KEEL_NO_LABELS,
					 (double[]){ 1, 2 }, 2, &h), ==, 0);
	CHECK_INT(keel_metrics_histogram(reg, "lat", "L.", KEEL_NO_LABELS,
					 (double[]){ 2, 1, INFINITY }, 3, &b), ==, 0);
	CHECK(h == b);
	before = render(reg);
	CHECK_INT(keel_metrics_gauge(reg, "req_total", "Requests.",
				     KEEL_LABELS("m", "c"), &x), ==, -EEXIST);
	CHECK_INT(keel_metrics_counter(reg, "req_total", "Requests.",
				       KEEL_LABELS("c", "m"), &x), ==, -EEXIST);
	CHECK_INT(keel_metrics_counter(reg, "req_total", "Requests.",
				       KEEL_LABELS("m"), &x), ==, -EEXIST);
	CHECK_INT(keel_metrics_counter(reg, "req_total", "Other.",
				       KEEL_LABELS("m", "c"), &x), ==, -EEXIST);
	CHECK_INT(keel_metrics_histogram(reg, "lat", "L.", KEEL_NO_LABELS,
					 (double[]){ 1, 3 }, 2, &x), ==, -EEXIST);
	CHECK_INT(keel_metrics_histogram(reg, "lat", "L.", KEEL_NO_LABELS, NULL,
					 0, &x), ==, -EEXIST);
	/* A histogram owns its _bucket, _sum and _count names... */
	CHECK_INT(keel_metrics_counter(reg, "lat_count", "h", KEEL_NO_LABELS, &x),
		  ==, -EEXIST);
	CHECK_INT(keel_metrics_gauge(reg, "lat_sum", "h", KEEL_NO_LABELS, &x), ==,
		  -EEXIST);
	CHECK_INT(keel_metrics_gauge(reg, "lat_bucket", "h", KEEL_NO_LABELS, &x),
		  ==, -EEXIST);
	/* ... and cannot take a name whose series exist already. */
	CHECK_INT(keel_metrics_histogram(reg, "kept", "h", KEEL_NO_LABELS, NULL, 0,
					 &x), ==, 0);
	CHECK_INT(keel_metrics_gauge(reg, "q_sum", "h", KEEL_NO_LABELS, &b), ==, 0);
	CHECK_INT(keel_metrics_histogram(reg, "q", "h", KEEL_NO_LABELS, NULL, 0,
					 &x), ==, -EEXIST);
	{
		char *after = render(reg);

		/* Only the two new families appeared. */
		CHECK_CONTAINS(after, "# TYPE kept histogram\n");
		CHECK_CONTAINS(after, "# TYPE q_sum gauge\n");
		CHECK(strstr(after, "# TYPE q histogram") == NULL);
		CHECK(strstr(after, "lat_count 0\n") != NULL);
		free(after);
	}
	free(before);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(bad_label_values)
{
	struct keel_metrics *reg = reg_with_one();
	struct keel_family *f, *g;
	struct keel_counter *c = (struct keel_counter *)&c;
	struct keel_gauge *gg;
	struct keel_histogram *hh;

	CHECK_INT(keel_metrics_counter(reg, "c_total", "h", KEEL_LABELS("a", "b"),
				       &f), ==, 0);
	CHECK_INT(keel_metrics_gauge(reg, "g", "h", KEEL_NO_LABELS, &g), ==, 0);
	CHECK_INT(keel_counter_get(f, KEEL_LABELS("x"), &c), ==, -EINVAL);
	CHECK_INT(keel_counter_get(f, KEEL_LABELS("x", "y", "z"), &c), ==, -EINVAL);
	CHECK_INT(keel_counter_get(f, KEEL_LABELS("x", NULL), &c), ==, -EINVAL);
	CHECK_INT(keel_counter_get(f, NULL, 2, &c), ==, -EINVAL);
	CHECK_INT(keel_counter_get(f, KEEL_LABELS("x", "\xff"), &c), ==, -EINVAL);
	CHECK_INT(keel_counter_get(f, KEEL_LABELS("x", "\xc0\xaf"), &c), ==,
		  -EINVAL); /* overlong "/" */
	CHECK_INT(keel_counter_get(f, KEEL_LABELS("x", "\xed\xa0\x80"), &c), ==,
		  -EINVAL); /* a surrogate */
	CHECK_INT(keel_counter_get(f, KEEL_LABELS("x", "\xe6\x97"), &c), ==,
		  -EINVAL); /* cut short */
	CHECK_INT(keel_counter_get(NULL, KEEL_LABELS("x", "y"), &c), ==, -EINVAL);
	CHECK_INT(keel_counter_get(f, KEEL_LABELS("x", "y"), NULL), ==, -EINVAL);
	CHECK_INT(keel_gauge_get(f, KEEL_LABELS("x", "y"), &gg), ==, -EINVAL);
	CHECK_INT(keel_histogram_get(f, KEEL_LABELS("x", "y"), &hh), ==, -EINVAL);
	CHECK_INT(keel_counter_get(g, KEEL_NO_LABELS, &c), ==, -EINVAL);
	CHECK(c == (struct keel_counter *)&c);
	errno = 0;
	CHECK(keel_counter_with(f, "x") == NULL);
	CHECK_INT(errno, ==, EINVAL);
	errno = 0;
	CHECK(keel_gauge_with(f, "x", "y") == NULL);
	CHECK_INT(errno, ==, EINVAL);
	CHECK(keel_histogram_with(g) == NULL);
	/* Nothing was created: c_total has no child to render. */
	check_render(reg, "# HELP g h\n# TYPE g gauge\ng 0\n"
			  "# HELP kept_total Kept.\n# TYPE kept_total counter\n"
			  "kept_total{a=\"x\"} 1\n");
	/* Same values, same child; an empty value is a value. */
	CHECK(keel_counter_with(f, "x", "y") == keel_counter_with(f, "x", "y"));
	CHECK(keel_counter_with(f, "x", "") != NULL);
	CHECK(keel_counter_with(f, "", "x") != keel_counter_with(f, "x", ""));
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(max_series)
{
	struct keel_metrics_config cfg;
	struct keel_metrics *reg;
	struct keel_family *f;
	struct keel_counter *c = NULL;

	keel_metrics_config_init(&cfg);
	cfg.max_series = 3;
	CHECK_INT(keel_metrics_new(&cfg, &reg), ==, 0);
	CHECK_INT(keel_metrics_counter(reg, "c_total", "h", KEEL_LABELS("u"), &f),
		  ==, 0);
	CHECK(keel_counter_with(f, "1") && keel_counter_with(f, "2") &&
	      keel_counter_with(f, "3"));
	CHECK_INT(keel_counter_get(f, KEEL_LABELS("4"), &c), ==, -ENOSPC);
	CHECK(c == NULL);
	CHECK(keel_counter_with(f, "2") != NULL); /* existing ones still found */
	CHECK_INT(keel_metrics_remove(f, KEEL_LABELS("2")), ==, 0);
	CHECK(keel_counter_with(f, "4") != NULL); /* room again */
	keel_metrics_free(reg);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Values
 * ------------------------------------------------------------------------ */

TEST(counter_values)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *f, *s;
	struct keel_counter *c, *d, *one;

	CHECK_INT(keel_metrics_counter(reg, "req_total", "Requests.",
				       KEEL_LABELS("method", "code"), &f), ==, 0);
	CHECK_INT(keel_metrics_counter(reg, "single_total", "S.", KEEL_NO_LABELS,
				       &s), ==, 0);
	c = keel_counter_with(f, "GET", "200");
	d = keel_counter_with(f, "POST", "500");
	one = keel_counter_with(s);
	CHECK(c && d && one);
	CHECK(keel_counter_with(s) == one);
	keel_counter_inc(c);
	keel_counter_inc(c);
	CHECK_INT(keel_counter_add(c, 40), ==, 0);
	CHECK_INT(keel_counter_add(c, 0), ==, 0);
	CHECK_INT(keel_counter_add(c, -1), ==, -EINVAL);
	CHECK_INT(keel_counter_add(c, INT64_MIN), ==, -EINVAL);
	CHECK_INT(keel_counter_add_double(d, 0.25), ==, 0);
	CHECK_INT(keel_counter_add_double(d, 2), ==, 0);
	CHECK_INT(keel_counter_add_double(d, -0.5), ==, -EINVAL);
	CHECK_INT(keel_counter_add_double(d, NAN), ==, -EINVAL);
	CHECK_INT(keel_counter_add(d, 1), ==, 0);
	CHECK(keel_counter_value(c) == 42);
	CHECK(keel_counter_value(d) == 3.25);
	check_render(reg,
		     "# HELP req_total Requests.\n# TYPE req_total counter\n"
		     "req_total{method=\"GET\",code=\"200\"} 42\n"
		     "req_total{method=\"POST\",code=\"500\"} 3.25\n"
		     "# HELP single_total S.\n# TYPE single_total counter\n"
		     "single_total 0\n");
	/* set: what collectors use. */
	keel_counter_set(c, UINT64_MAX);
	CHECK_INT(keel_counter_set_double(one, -1), ==, -EINVAL);
	CHECK_INT(keel_counter_set_double(one, NAN), ==, -EINVAL);
	CHECK_INT(keel_counter_set_double(one, 1.5), ==, 0);
	keel_counter_set(d, 7);
	CHECK(keel_counter_value(d) == 7);
	check_render(reg,
		     "# HELP req_total Requests.\n# TYPE req_total counter\n"
		     "req_total{method=\"GET\",code=\"200\"} 18446744073709551615\n"
		     "req_total{method=\"POST\",code=\"500\"} 7\n"
		     "# HELP single_total S.\n# TYPE single_total counter\n"
		     "single_total 1.5\n");
	/* NULL handles. */
	keel_counter_inc(NULL);
	keel_counter_set(NULL, 1);
	CHECK_INT(keel_counter_add(NULL, 1), ==, -EINVAL);
	CHECK_INT(keel_counter_add_double(NULL, 1), ==, -EINVAL);
	CHECK_INT(keel_counter_set_double(NULL, 1), ==, -EINVAL);
	CHECK(keel_counter_value(NULL) == 0);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(gauge_values)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *f;
	struct keel_gauge *g, *h;

	CHECK_INT(keel_metrics_gauge(reg, "temp", "T.", KEEL_LABELS("room"), &f),
		  ==, 0);
	g = keel_gauge_with(f, "a");
	h = keel_gauge_with(f, "b");
	keel_gauge_set(g, 10);
	keel_gauge_add(g, 2.5);
	keel_gauge_sub(g, 5);
	keel_gauge_inc(g);
	keel_gauge_dec(g);
	keel_gauge_dec(g);
	CHECK(keel_gauge_value(g) == 6.5);
	keel_gauge_set(h, -3);
	check_render(reg, "# HELP temp T.\n# TYPE temp gauge\n"
			  "temp{room=\"a\"} 6.5\ntemp{room=\"b\"} -3\n");
	keel_gauge_set(g, NAN);
	keel_gauge_set(h, -INFINITY);
	check_render(reg, "# HELP temp T.\n# TYPE temp gauge\n"
			  "temp{room=\"a\"} NaN\ntemp{room=\"b\"} -Inf\n");
	keel_gauge_set(NULL, 1);
	keel_gauge_add(NULL, 1);
	keel_gauge_inc(NULL);
	CHECK(keel_gauge_value(NULL) == 0);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(number_formatting)
{
	static const struct {
		double v;
		const char *text;
	} cases[] = {
		{ 0, "0" }, { -0.0, "0" }, { 1, "1" }, { -1, "-1" },
		{ 1e6, "1000000" }, { 0.1, "0.1" }, { 2.5, "2.5" },
		{ 1e-5, "1e-05" }, { 1.0 / 3, "0.3333333333333333" },
		{ 9007199254740992.0, "9007199254740992" },
		{ 123456789012.5, "123456789012.5" }, { 1e20, "1e+20" },
		{ 0.30000000000000004, "0.30000000000000004" },
		{ INFINITY, "+Inf" }, { -INFINITY, "-Inf" }, { NAN, "NaN" },
		{ 5e-324, "5e-324" }, { 1e-7, "1e-07" }, { 0.005, "0.005" },
		{ 1.7976931348623157e308, "1.7976931348623157e+308" },
	};
	struct keel_metrics *reg = new_reg();
	struct keel_family *f;
	struct keel_gauge *g;
	size_t i;

	CHECK_INT(keel_metrics_gauge(reg, "g", NULL, KEEL_NO_LABELS, &f), ==, 0);
	g = keel_gauge_with(f);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char want[128];
		struct expo e;
		char *text;

		keel_gauge_set(g, cases[i].v);
		snprintf(want, sizeof(want), "# TYPE g gauge\ng %s\n", cases[i].text);
		text = render_checked(reg, &e);
		CHECK_STR(text, want);
		/* And it reads back as the same double. */
		if (!isnan(cases[i].v))
			CHECK(EXPO_VALUE(&e, "g", NULL) == cases[i].v);
		expo_free(&e);
		free(text);
	}
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(histogram_values)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *f, *d;
	struct keel_histogram *h, *dh;
	uint64_t count = 99;
	double sum = 99;
	struct expo e;
	char *text;

	CHECK_INT(keel_metrics_histogram(reg, "lat_seconds", "Latency.",
					 KEEL_LABELS("op"), (double[]){ 0.1, 1, 10 },
					 3, &f), ==, 0);
	CHECK_INT(keel_metrics_histogram(reg, "d", NULL, KEEL_NO_LABELS, NULL, 0,
					 &d), ==, 0);
	h = keel_histogram_with(f, "read");
	dh = keel_histogram_with(d);
	CHECK_INT(keel_histogram_observe(h, 0.05), ==, 0);
	CHECK_INT(keel_histogram_observe(h, 0.1), ==, 0); /* le: <= bound */
	CHECK_INT(keel_histogram_observe(h, 0.5), ==, 0);
	CHECK_INT(keel_histogram_observe(h, 10), ==, 0);
	CHECK_INT(keel_histogram_observe(h, 11), ==, 0);
	CHECK_INT(keel_histogram_observe(h, -2), ==, 0);
	CHECK_INT(keel_histogram_observe(h, NAN), ==, -EINVAL);
	CHECK_INT(keel_histogram_observe(NULL, 1), ==, -EINVAL);
	keel_histogram_read(h, &count, &sum);
	CHECK_INT(count, ==, 6);
	CHECK(fabs(sum - 19.65) < 1e-9);
	text = render_checked(reg, &e);
	CHECK_CONTAINS(text,
		       "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
		       "lat_seconds_bucket{op=\"read\",le=\"0.1\"} 3\n"
		       "lat_seconds_bucket{op=\"read\",le=\"1\"} 4\n"
		       "lat_seconds_bucket{op=\"read\",le=\"10\"} 5\n"
		       "lat_seconds_bucket{op=\"read\",le=\"+Inf\"} 6\n"
		       "lat_seconds_sum{op=\"read\"} 19.65\n"
		       "lat_seconds_count{op=\"read\"} 6\n");
	/* The default buckets, empty. */
	CHECK_CONTAINS(text, "# TYPE d histogram\nd_bucket{le=\"0.005\"} 0\n"
			     "d_bucket{le=\"0.01\"} 0\nd_bucket{le=\"0.025\"} 0\n");
	CHECK_CONTAINS(text, "d_bucket{le=\"10\"} 0\nd_bucket{le=\"+Inf\"} 0\n"
			     "d_sum 0\nd_count 0\n");
	expo_free(&e);
	free(text);
	CHECK_INT(keel_histogram_observe(dh, INFINITY), ==, 0);
	CHECK_INT(keel_histogram_observe(dh, -INFINITY), ==, 0);
	text = render_checked(reg, &e);
	CHECK_CONTAINS(text, "d_bucket{le=\"0.005\"} 1\n");
	CHECK_CONTAINS(text, "d_bucket{le=\"+Inf\"} 2\nd_sum NaN\nd_count 2\n");
	expo_free(&e);
	free(text);
	keel_histogram_read(NULL, &count, NULL);
	CHECK_INT(count, ==, 0);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Escaping, order, removal
 * ------------------------------------------------------------------------ */

TEST(escaping_round_trips)
{
	static const char *const values[] = {
		"say \"hi\"", "back\\slash", "two\nlines", "\\\"\n\\n",
		"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "emoji \xf0\x9f\x9a\x80",
		"}{,=", "trailing\\", "",
	};
	struct keel_metrics *reg = new_reg();
	struct keel_family *f;
	struct expo e;
	char *text;
	size_t i;

	CHECK_INT(keel_metrics_counter(reg, "esc_total",
				       "Help with \\ backslash,\nnewline and \"quotes\".",
				       KEEL_LABELS("v", "w"), &f), ==, 0);
	for (i = 0; i < sizeof(values) / sizeof(values[0]); i++)
		CHECK_INT(keel_counter_add(keel_counter_with(f, values[i], "x"),
					   (int64_t)i + 1), ==, 0);
	text = render_checked(reg, &e);
	CHECK_CONTAINS(text, "# HELP esc_total Help with \\\\ backslash,\\nnewline "
			     "and \"quotes\".\n");
	CHECK_CONTAINS(text, "esc_total{v=\"say \\\"hi\\\"\",w=\"x\"} 1\n");
	CHECK_CONTAINS(text, "esc_total{v=\"\\\\\\\"\\n\\\\n\",w=\"x\"} 4\n");
	CHECK_STR(expo_family(&e, "esc_total")->help,
		  "Help with \\ backslash,\nnewline and \"quotes\".");
	for (i = 0; i < sizeof(values) / sizeof(values[0]); i++)
		CHECK(EXPO_VALUE(&e, "esc_total", "v", values[i], "w", "x", NULL) ==
		      (double)(i + 1));
	CHECK_INT(e.n, ==, (int)(sizeof(values) / sizeof(values[0])));
	expo_free(&e);
	free(text);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(render_is_sorted_and_stable)
{
	static const char *const names[] = { "zeta", "alpha", "mid:dle", "beta",
					     "Alpha", "_under" };
	struct keel_metrics *reg = new_reg();
	struct keel_family *f, *empty;
	char *a, *b;
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		CHECK_INT(keel_metrics_gauge(reg, names[i], names[i],
					     KEEL_LABELS("k"), &f), ==, 0);
		keel_gauge_set(keel_gauge_with(f, "z"), 1);
		keel_gauge_set(keel_gauge_with(f, "a"), 2);
		keel_gauge_set(keel_gauge_with(f, "m"), 3);
	}
	/* A family with labels and no children is not rendered. */
	CHECK_INT(keel_metrics_counter(reg, "empty_total", "E.", KEEL_LABELS("k"),
				       &empty), ==, 0);
	a = render(reg);
	b = render(reg);
	CHECK_STR(a, b);
	CHECK(strstr(a, "empty_total") == NULL);
	/* Byte order of names: "Alpha" < "_under" < "alpha" < "beta" ... */
	CHECK(strstr(a, "# TYPE Alpha") < strstr(a, "# TYPE _under"));
	CHECK(strstr(a, "# TYPE _under") < strstr(a, "# TYPE alpha"));
	CHECK(strstr(a, "# TYPE alpha") < strstr(a, "# TYPE beta"));
	CHECK(strstr(a, "# TYPE beta") < strstr(a, "# TYPE mid:dle"));
	CHECK(strstr(a, "# TYPE mid:dle") < strstr(a, "# TYPE zeta"));
	CHECK_CONTAINS(a, "# TYPE zeta gauge\nzeta{k=\"a\"} 2\nzeta{k=\"m\"} 3\n"
			  "zeta{k=\"z\"} 1\n");
	free(a);
	free(b);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(remove_child)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *f, *one;
	struct keel_counter *c, *fresh;

	CHECK_INT(keel_metrics_counter(reg, "c_total", NULL, KEEL_LABELS("k"), &f),
		  ==, 0);
	CHECK_INT(keel_metrics_counter(reg, "one_total", NULL, KEEL_NO_LABELS,
				       &one), ==, 0);
	c = keel_counter_with(f, "a");
	keel_counter_add(c, 5);
	keel_counter_inc(keel_counter_with(f, "b"));
	CHECK_INT(keel_metrics_remove(f, KEEL_LABELS("a")), ==, 0);
	CHECK_INT(keel_metrics_remove(f, KEEL_LABELS("a")), ==, -ENOENT);
	CHECK_INT(keel_metrics_remove(f, KEEL_LABELS("zz")), ==, -ENOENT);
	CHECK_INT(keel_metrics_remove(f, KEEL_LABELS("a", "b")), ==, -EINVAL);
	CHECK_INT(keel_metrics_remove(one, KEEL_NO_LABELS), ==, -EINVAL);
	CHECK_INT(keel_metrics_remove(NULL, KEEL_LABELS("a")), ==, -EINVAL);
	/* The old handle still works, and is not shown. */
	keel_counter_inc(c);
	CHECK(keel_counter_value(c) == 6);
	check_render(reg, "# TYPE c_total counter\nc_total{k=\"b\"} 1\n"
			  "# TYPE one_total counter\none_total 0\n");
	fresh = keel_counter_with(f, "a");
	CHECK(fresh != NULL && fresh != c);
	CHECK(keel_counter_value(fresh) == 0);
	/* Remove all: the family disappears from the text. */
	CHECK_INT(keel_metrics_remove(f, KEEL_LABELS("a")), ==, 0);
	CHECK_INT(keel_metrics_remove(f, KEEL_LABELS("b")), ==, 0);
	check_render(reg, "# TYPE one_total counter\none_total 0\n");
	keel_metrics_free(reg);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Collectors
 * ------------------------------------------------------------------------ */

struct coll {
	struct keel_gauge *g;
	int runs;
	int nested_render, nested_add, nested_remove;
	struct keel_family *late;
};

static void collect_fn(struct keel_metrics *reg, void *ud)
{
	struct coll *c = ud;
	char *text = (char *)&text;

	c->runs++;
	keel_gauge_set(c->g, c->runs);
	c->nested_render = keel_metrics_render(reg, &text, NULL);
	c->nested_add = keel_metrics_add_collector(reg, collect_fn, NULL);
	c->nested_remove = keel_metrics_remove_collector(reg, collect_fn, ud);
	/* Registering and looking up are fine from a collector. */
	if (keel_metrics_gauge(reg, "late", "L.", KEEL_NO_LABELS, &c->late) == 0)
		keel_gauge_set(keel_gauge_with(c->late), 7);
}

TEST(collectors)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *f;
	struct coll c = { 0 };

	CHECK_INT(keel_metrics_gauge(reg, "runs", NULL, KEEL_NO_LABELS, &f), ==, 0);
	c.g = keel_gauge_with(f);
	CHECK_INT(keel_metrics_add_collector(reg, collect_fn, &c), ==, 0);
	CHECK_INT(keel_metrics_add_collector(reg, collect_fn, &c), ==, -EEXIST);
	CHECK_INT(keel_metrics_add_collector(reg, NULL, &c), ==, -EINVAL);
	CHECK_INT(keel_metrics_add_collector(NULL, collect_fn, &c), ==, -EINVAL);
	check_render(reg, "# HELP late L.\n# TYPE late gauge\nlate 7\n"
			  "# TYPE runs gauge\nruns 1\n");
	CHECK_INT(c.nested_render, ==, -EDEADLK);
	CHECK_INT(c.nested_add, ==, -EDEADLK);
	CHECK_INT(c.nested_remove, ==, -EDEADLK);
	check_render(reg, "# HELP late L.\n# TYPE late gauge\nlate 7\n"
			  "# TYPE runs gauge\nruns 2\n");
	CHECK_INT(keel_metrics_remove_collector(reg, collect_fn, &c), ==, 0);
	CHECK_INT(keel_metrics_remove_collector(reg, collect_fn, &c), ==, -ENOENT);
	CHECK_INT(keel_metrics_remove_collector(reg, NULL, &c), ==, -EINVAL);
	check_render(reg, "# HELP late L.\n# TYPE late gauge\nlate 7\n"
			  "# TYPE runs gauge\nruns 2\n");
	CHECK_INT(c.runs, ==, 2);
	CHECK_INT(keel_metrics_render(NULL, (char **)&f, NULL), ==, -EINVAL);
	CHECK_INT(keel_metrics_render(reg, NULL, NULL), ==, -EINVAL);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

static void panicking_collector(struct keel_metrics *reg, void *ud)
{
	int *armed = ud;

	if (*armed)
		keel_panic("collector bug");
}

struct render_arg {
	struct keel_metrics *reg;
	char *text;
};

static struct keel_error *render_err;

static void render_in_scope(void *arg)
{
	struct render_arg *a = arg;

	keel_defer(keel_recover_error, &render_err);
	keel_metrics_render(a->reg, &a->text, NULL);
}

TEST(collector_panic_leaves_no_lock)
{
	struct keel_metrics *reg = new_reg();
	struct render_arg a = { reg, NULL };
	int armed = 1;

	CHECK_INT(keel_metrics_add_collector(reg, panicking_collector, &armed), ==,
		  0);
	/* The panic reaches the caller of render ... */
	CHECK_INT(keel_call(render_in_scope, &a), ==, 1);
	CHECK(a.text == NULL);
	CHECK(render_err != NULL);
	CHECK_STR(keel_error_message(render_err), "collector bug");
	keel_error_free(render_err);
	/* ... and the collector lock was let go on the way. */
	armed = 0;
	CHECK_INT(keel_metrics_remove_collector(reg, panicking_collector, &armed),
		  ==, 0);
	check_render(reg, "");
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(process_metrics)
{
	struct keel_metrics *reg = new_reg();
	double fds, start, now = (double)time(NULL);
	struct expo e;
	char *text;
	int fd[3], i;

	CHECK_INT(keel_metrics_add_process(reg), ==, 0);
	CHECK_INT(keel_metrics_add_process(reg), ==, -EEXIST);
	CHECK_INT(keel_metrics_add_process(NULL), ==, -EINVAL);
	text = render_checked(reg, &e);
	CHECK(EXPO_VALUE(&e, "process_cpu_seconds_total", NULL) >= 0);
	CHECK(EXPO_VALUE(&e, "process_resident_memory_bytes", NULL) > 4096);
	CHECK(EXPO_VALUE(&e, "process_virtual_memory_bytes", NULL) >=
	      EXPO_VALUE(&e, "process_resident_memory_bytes", NULL));
	CHECK(EXPO_VALUE(&e, "process_max_fds", NULL) >= 3);
	start = EXPO_VALUE(&e, "process_start_time_seconds", NULL);
	CHECK(start > now - 600 && start <= now + 1);
	fds = EXPO_VALUE(&e, "process_open_fds", NULL);
	CHECK(fds >= 3);
	expo_free(&e);
	free(text);
	for (i = 0; i < 3; i++)
		fd[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	text = render_checked(reg, &e);
	CHECK(EXPO_VALUE(&e, "process_open_fds", NULL) == fds + 3);
	expo_free(&e);
	free(text);
	for (i = 0; i < 3; i++)
		close(fd[i]);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

TEST(process_metrics_all_or_nothing)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *f;

	/* A user took one of the names with another type. */
	CHECK_INT(keel_metrics_counter(reg, "process_open_fds", "Mine.",
				       KEEL_NO_LABELS, &f), ==, 0);
	CHECK_INT(keel_metrics_add_process(reg), ==, -EEXIST);
	check_render(reg, "# HELP process_open_fds Mine.\n"
			  "# TYPE process_open_fds counter\nprocess_open_fds 0\n");
	keel_metrics_free(reg);
	keel_test_leak_check();
}

/* ------------------------------------------------------------------------
 * Threads
 * ------------------------------------------------------------------------ */

#define NTHREADS 4
#define PER_THREAD 1000000

struct hammer {
	struct keel_counter *c;
	struct keel_counter *cd;
	struct keel_histogram *h;
	struct keel_gauge *g;
	long n;
	pthread_barrier_t *start;
};

static void *hammer_fn(void *arg)
{
	struct hammer *hm = arg;
	long i;

	pthread_barrier_wait(hm->start);
	for (i = 0; i < hm->n; i++) {
		keel_counter_inc(hm->c);
		if ((i & 7) == 0) {
			keel_counter_add_double(hm->cd, 0.5);
			keel_histogram_observe(hm->h, (double)(i % 4));
			keel_gauge_add(hm->g, 1);
		}
	}
	return NULL;
}

TEST(concurrent_updates_sum_exactly)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *fc, *fd, *fh, *fg;
	struct hammer hm;
	pthread_barrier_t start;
	pthread_t t[NTHREADS];
	uint64_t count;
	double sum;
	long per8 = (PER_THREAD + 7) / 8;
	int i;

	CHECK_INT(keel_metrics_counter(reg, "c_total", NULL, KEEL_NO_LABELS, &fc), ==, 0);
	CHECK_INT(keel_metrics_counter(reg, "d_total", NULL, KEEL_NO_LABELS, &fd), ==, 0);
	CHECK_INT(keel_metrics_histogram(reg, "h", NULL, KEEL_NO_LABELS,
					 (double[]){ 0, 1, 2 }, 3, &fh), ==, 0);
	CHECK_INT(keel_metrics_gauge(reg, "g", NULL, KEEL_NO_LABELS, &fg), ==, 0);
	hm.c = keel_counter_with(fc);
	hm.cd = keel_counter_with(fd);
	hm.h = keel_histogram_with(fh);
	hm.g = keel_gauge_with(fg);
	hm.n = PER_THREAD;
	hm.start = &start;
	pthread_barrier_init(&start, NULL, NTHREADS);
	for (i = 0; i < NTHREADS; i++)
		CHECK_INT(pthread_create(&t[i], NULL, hammer_fn, &hm), ==, 0);
	for (i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	CHECK(keel_counter_value(hm.c) == (double)NTHREADS * PER_THREAD);
	CHECK(keel_counter_value(hm.cd) == NTHREADS * per8 * 0.5);
	CHECK(keel_gauge_value(hm.g) == (double)NTHREADS * per8);
	keel_histogram_read(hm.h, &count, &sum);
	CHECK_INT(count, ==, NTHREADS * per8);
	{
		struct expo e;
		char *text = render_checked(reg, &e);

		CHECK(EXPO_VALUE(&e, "c_total", NULL) == (double)NTHREADS * PER_THREAD);
		CHECK(EXPO_VALUE(&e, "h_count", NULL) == (double)NTHREADS * per8);
		/* i % 4 over i = 0, 8, 16...: always 0. */
		CHECK(EXPO_VALUE(&e, "h_bucket", "le", "0", NULL) ==
		      (double)NTHREADS * per8);
		expo_free(&e);
		free(text);
	}
	pthread_barrier_destroy(&start);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

/* More threads than keel has slots: the ones without a slot share a row. */
#define MANY 40
#define MANY_EACH 20000

TEST(threads_beyond_the_slots)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *fc, *fh, *fd, *fg;
	struct hammer hm;
	pthread_barrier_t start;
	pthread_t t[MANY];
	uint64_t count;
	long per8 = MANY_EACH / 8;
	int i;

	CHECK_INT(keel_metrics_counter(reg, "c_total", NULL, KEEL_NO_LABELS, &fc), ==, 0);
	CHECK_INT(keel_metrics_counter(reg, "d_total", NULL, KEEL_NO_LABELS, &fd), ==, 0);
	CHECK_INT(keel_metrics_histogram(reg, "h", NULL, KEEL_NO_LABELS, NULL, 0,
					 &fh), ==, 0);
	CHECK_INT(keel_metrics_gauge(reg, "g", NULL, KEEL_NO_LABELS, &fg), ==, 0);
	hm.c = keel_counter_with(fc);
	hm.cd = keel_counter_with(fd);
	hm.h = keel_histogram_with(fh);
	hm.g = keel_gauge_with(fg);
	hm.n = MANY_EACH;
	hm.start = &start;
	/* All alive at once, so that more than KEEL__SLOTS want a slot. */
	pthread_barrier_init(&start, NULL, MANY);
	for (i = 0; i < MANY; i++)
		CHECK_INT(pthread_create(&t[i], NULL, hammer_fn, &hm), ==, 0);
	for (i = 0; i < MANY; i++)
		pthread_join(t[i], NULL);
	CHECK(keel_counter_value(hm.c) == (double)MANY * MANY_EACH);
	CHECK(keel_counter_value(hm.cd) == MANY * per8 * 0.5);
	keel_histogram_read(hm.h, &count, NULL);
	CHECK_INT(count, ==, MANY * per8);
	pthread_barrier_destroy(&start);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

struct writer {
	struct keel_histogram *h[2];
	struct keel_counter *c;
	int stop;
	long done;
};

static void *writer_fn(void *arg)
{
	struct writer *w = arg;
	long i = 0;

	while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
		keel_histogram_observe(w->h[i & 1], (double)(i % 13) * 0.1);
		keel_counter_inc(w->c);
		i++;
	}
	__atomic_fetch_add(&w->done, i, __ATOMIC_RELAXED);
	return NULL;
}

TEST(render_while_updating)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *fh, *fc;
	struct writer w = { .stop = 0 };
	pthread_t t[2];
	double last_c = 0, last_n[2] = { 0, 0 };
	int i, k;

	CHECK_INT(keel_metrics_histogram(reg, "lat", "L.", KEEL_LABELS("op"),
					 (double[]){ 0.1, 0.2, 0.5, 1 }, 4, &fh),
		  ==, 0);
	CHECK_INT(keel_metrics_counter(reg, "ops_total", "O.", KEEL_NO_LABELS,
				       &fc), ==, 0);
	w.h[0] = keel_histogram_with(fh, "read");
	w.h[1] = keel_histogram_with(fh, "write \"x\"");
	w.c = keel_counter_with(fc);
	for (i = 0; i < 2; i++)
		CHECK_INT(pthread_create(&t[i], NULL, writer_fn, &w), ==, 0);
	for (i = 0; i < 300; i++) {
		struct expo e;
		char *text = render_checked(reg, &e); /* +Inf == count, buckets
						       * non-decreasing */
		double c = EXPO_VALUE(&e, "ops_total", NULL);
		const char *ops[2] = { "read", "write \"x\"" };

		CHECK(c >= last_c);
		last_c = c;
		for (k = 0; k < 2; k++) {
			double n = EXPO_VALUE(&e, "lat_count", "op", ops[k], NULL);

			CHECK(n >= last_n[k]);
			last_n[k] = n;
		}
		expo_free(&e);
		free(text);
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	{
		struct expo e;
		char *text = render_checked(reg, &e);

		CHECK(EXPO_VALUE(&e, "ops_total", NULL) == (double)w.done);
		CHECK(EXPO_VALUE(&e, "lat_count", "op", "read", NULL) +
			      EXPO_VALUE(&e, "lat_count", "op", "write \"x\"", NULL) ==
		      (double)w.done);
		expo_free(&e);
		free(text);
	}
	CHECK(last_c > 0);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

/* Lookups and removals race with updates and renders; handles stay valid. */
static void *lookup_fn(void *arg)
{
	struct keel_family *f = arg;
	char v[16];
	int i;

	for (i = 0; i < 20000; i++) {
		snprintf(v, sizeof(v), "%d", i % 50);
		keel_counter_inc(keel_counter_with(f, v));
		if (i % 7 == 0)
			keel_metrics_remove(f, KEEL_LABELS(v));
	}
	return NULL;
}

TEST(lookups_race_with_renders)
{
	struct keel_metrics *reg = new_reg();
	struct keel_family *f;
	pthread_t t[2];
	int i;

	CHECK_INT(keel_metrics_counter(reg, "c_total", NULL, KEEL_LABELS("k"), &f),
		  ==, 0);
	for (i = 0; i < 2; i++)
		CHECK_INT(pthread_create(&t[i], NULL, lookup_fn, f), ==, 0);
	for (i = 0; i < 50; i++) {
		struct expo e;

		free(render_checked(reg, &e));
		CHECK(e.n <= 50);
		expo_free(&e);
	}
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	keel_metrics_free(reg);
	keel_test_leak_check();
}

