/*
 * src/obs/metrics.c - the metrics registry: families, children sharded by
 * thread slot, collectors, and the Prometheus text format 0.0.4.
 *
 * Locks, in the order they may be taken:
 *   reg->cmu   the collectors; held while they run (one render collects at
 *              a time), so removing a collector waits for it;
 *   reg->mu    the sorted family array;
 *   fam->mu    a family's children (hash chains and the render list).
 * Updates through handles take none of them.
 *
 * Memory: a child and its shared row are one 64-byte aligned allocation;
 * rows[s] is allocated by the thread owning slot s at its first update and
 * written only by that thread (the slot is that thread's until it exits,
 * then the next owner carries on with the same row). Children leave their
 * family on keel_metrics_remove but are freed only with the registry, so a
 * handle never dangles.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <keel/metrics.h>
#include <keel/panic.h>

#define LINE 64

enum mtype { M_COUNTER, M_GAUGE, M_HISTOGRAM };

static const char *const type_names[] = { "counter", "gauge", "histogram" };

struct child {
	struct keel_family *fam;
	struct child *next;   /* hash chain, then the retired list */
	uint64_t hash;
	size_t index;         /* position in fam->list */
	char **values;        /* fam->nlabels strings, after the shared row */
	uint64_t *rows[KEEL__SLOTS];
	/* The shared row (counters, histograms) or the gauge's word. */
	_Alignas(LINE) uint64_t shared[];
};

struct keel_family {
	struct keel_metrics *reg;
	enum mtype type;
	char *name;
	char *help;           /* "" for none */
	char **labels;
	size_t nlabels;
	double *bounds;       /* histograms: sorted, finite */
	size_t nb;
	size_t rowlen;        /* uint64_t words in a row */
	size_t rowsize;       /* bytes, a multiple of LINE */
	size_t max_series;
	pthread_mutex_t mu;
	struct child **chains;
	size_t nchains;       /* a power of two */
	struct child **list;
	size_t n, cap;
	struct child *retired;
};

struct collector {
	keel_metrics_collect_fn fn;
	void *ud;
	void (*release)(void *ud);
};

struct keel_metrics {
	pthread_mutex_t mu;
	struct keel_family **fams; /* sorted by name */
	size_t nfams, capfams;
	size_t max_series;
	pthread_mutex_t cmu;
	struct collector *cols;
	size_t ncols, capcols;
};

/* The registry whose collectors the calling thread is running, if any. */
static __thread struct keel_metrics *collecting;

/* The calling thread's slot, cached (-2: not asked yet). */
static __thread int my_slot __attribute__((tls_model("initial-exec"))) = -2;

const double keel_metrics_default_buckets[KEEL_METRICS_DEFAULT_BUCKETS_N] = {
	.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10
};

/* ------------------------------------------------------------------------
 * Validation
 * ------------------------------------------------------------------------ */

static int valid_metric_name(const char *s)
{
	size_t i;

	if (s == NULL || s[0] == '\0' || strlen(s) > KEEL_METRICS_MAX_NAME)
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(isalpha(c) || c == '_' || c == ':' ||
		      (i > 0 && isdigit(c))) || c >= 0x80)
			return 0;
	}
	return 1;
}

static int valid_label_name(const char *s)
{
	size_t i;

	if (s == NULL || s[0] == '\0' || (s[0] == '_' && s[1] == '_'))
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x80 || !(isalpha(c) || c == '_' ||
				   (i > 0 && isdigit(c))))
			return 0;
	}
	return 1;
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
static int valid_utf8(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	while (*s != '\0') {
		unsigned c = *s, n, cp, i;

		if (c < 0x80) {
			s++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		for (i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i] & 0x3f);
		}
		if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return 0;
		s += n + 1;
	}
	return 1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/*
 * The bounds as the family keeps them: sorted, a final +Inf dropped.
 * NULL/0: the default buckets. Returns the count or -EINVAL; *out is
 * malloc'd (NULL for zero bounds).
 */
static int bounds_prepare(const double *in, size_t n, double **out)
{
	double *b;
	size_t i;

	*out = NULL;
	if (in == NULL && n == 0) {
		in = keel_metrics_default_buckets;
		n = KEEL_METRICS_DEFAULT_BUCKETS_N;
	}
	if (in == NULL || n > KEEL_METRICS_MAX_BUCKETS + 1)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (isnan(in[i]) || in[i] == -INFINITY)
			return -EINVAL;
	if (n == 0)
		return 0;
	b = malloc(n * sizeof(*b));
	if (b == NULL)
		return -ENOMEM;
	memcpy(b, in, n * sizeof(*b));
	qsort(b, n, sizeof(*b), cmp_double);
	for (i = 1; i < n; i++)
		if (b[i] == b[i - 1]) {
			free(b);
			return -EINVAL;
		}
	if (b[n - 1] == INFINITY)
		n--;
	if (n > KEEL_METRICS_MAX_BUCKETS) {
		free(b);
		return -EINVAL;
	}
	if (n == 0) {
		free(b);
		b = NULL;
	}
	*out = b;
	return (int)n;
}

int keel_metrics_buckets_exponential(double start, double factor, size_t count,
				     double *out)
{
	double v = start;
	size_t i;

	if (out == NULL || count < 1 || count > KEEL_METRICS_MAX_BUCKETS ||
	    !(start > 0) || !(factor > 1) || !isfinite(start) ||
	    !isfinite(factor))
		return -EINVAL;
	for (i = 1; i < count; i++) {
		v *= factor;
		if (!isfinite(v))
			return -EINVAL;
	}
	for (i = 0, v = start; i < count; i++, v *= factor)
		out[i] = v;
	return 0;
}

int keel_metrics_buckets_linear(double start, double width, size_t count,
				double *out)
{
	size_t i;

	if (out == NULL || count < 1 || count > KEEL_METRICS_MAX_BUCKETS ||
	    !isfinite(start) || !(width > 0) || !isfinite(width) ||
	    !isfinite(start + width * (double)(count - 1)))
		return -EINVAL;
	for (i = 0; i < count; i++)
		out[i] = start + width * (double)i;
	/* Rounding can make two neighbours equal for a width tiny next to
	 * start: such a list would be refused at registration anyway. */
	for (i = 1; i < count; i++)
		if (!(out[i] > out[i - 1]))
			return -EINVAL;
	return 0;
}

/* ------------------------------------------------------------------------
 * The registry
 * ------------------------------------------------------------------------ */

void keel_metrics_config_init(struct keel_metrics_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_series = 10000;
}

int keel_metrics_new(const struct keel_metrics_config *cfg,
		     struct keel_metrics **out)
{
	struct keel_metrics_config def;
	struct keel_metrics *reg;

	if (out == NULL)
		return -EINVAL;
	if (cfg == NULL) {
		keel_metrics_config_init(&def);
		cfg = &def;
	}
	if (cfg->max_series == 0)
		return -EINVAL;
	reg = calloc(1, sizeof(*reg));
	if (reg == NULL)
		return -ENOMEM;
	pthread_mutex_init(&reg->mu, NULL);
	pthread_mutex_init(&reg->cmu, NULL);
	reg->max_series = cfg->max_series;
	*out = reg;
	return 0;
}

static void child_free(struct child *c)
{
	size_t s;

	for (s = 0; s < KEEL__SLOTS; s++)
		free(c->rows[s]);
	free(c);
}

static void family_free(struct keel_family *f)
{
	struct child *c;
	size_t i;

	if (f == NULL)
		return;
	for (i = 0; i < f->n; i++)
		child_free(f->list[i]);
	while ((c = f->retired) != NULL) {
		f->retired = c->next;
		child_free(c);
	}
	pthread_mutex_destroy(&f->mu);
	free(f->chains);
	free(f->list);
	free(f->bounds);
	free(f);
}

void keel_metrics_free(struct keel_metrics *reg)
{
	size_t i;

	if (reg == NULL)
		return;
	for (i = reg->ncols; i-- > 0;)
		if (reg->cols[i].release != NULL)
			reg->cols[i].release(reg->cols[i].ud);
	for (i = 0; i < reg->nfams; i++)
		family_free(reg->fams[i]);
	free(reg->fams);
	free(reg->cols);
	pthread_mutex_destroy(&reg->mu);
	pthread_mutex_destroy(&reg->cmu);
	free(reg);
}

/* ------------------------------------------------------------------------
 * Children: lookup and creation
 * ------------------------------------------------------------------------ */

static uint64_t values_hash(const char *const *v, size_t n)
{
	uint64_t h = 14695981039346656037ull;
	size_t i;

	for (i = 0; i < n; i++) {
		const unsigned char *p = (const unsigned char *)v[i];

		do {
			h ^= *p;
			h *= 1099511628211ull;
		} while (*p++ != '\0');
	}
	return h;
}

static int values_equal(char *const *a, const char *const *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(a[i], b[i]) != 0)
			return 0;
	return 1;
}

static int check_values(const struct keel_family *f, const char *const *v,
			size_t n)
{
	size_t i;

	if (n != f->nlabels || (n > 0 && v == NULL))
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (v[i] == NULL || !valid_utf8(v[i]))
			return -EINVAL;
	return 0;
}

static struct child *child_alloc(struct keel_family *f, const char *const *v,
				 uint64_t hash)
{
	size_t head = offsetof(struct child, shared) + f->rowsize;
	size_t size = head + f->nlabels * sizeof(char *), i;
	struct child *c;
	char *p;

	for (i = 0; i < f->nlabels; i++)
		size += strlen(v[i]) + 1;
	size = (size + LINE - 1) / LINE * LINE;
	c = aligned_alloc(LINE, size);
	if (c == NULL)
		return NULL;
	memset(c, 0, size);
	c->fam = f;
	c->hash = hash;
	c->values = (char **)(void *)((char *)c + head);
	p = (char *)(c->values + f->nlabels);
	for (i = 0; i < f->nlabels; i++) {
		size_t len = strlen(v[i]) + 1;

		memcpy(p, v[i], len);
		c->values[i] = p;
		p += len;
	}
	return c;
}

static int chains_grow(struct keel_family *f)
{
	size_t n = f->nchains ? f->nchains * 2 : 16, i;
	struct child **ch = calloc(n, sizeof(*ch));

	if (ch == NULL)
		return -ENOMEM;
	for (i = 0; i < f->nchains; i++) {
		struct child *c = f->chains[i], *next;

		for (; c != NULL; c = next) {
			next = c->next;
			c->next = ch[c->hash & (n - 1)];
			ch[c->hash & (n - 1)] = c;
		}
	}
	free(f->chains);
	f->chains = ch;
	f->nchains = n;
	return 0;
}

/* With f->mu held: the child for v, created if needed. */
static int child_find_locked(struct keel_family *f, const char *const *v,
			     uint64_t hash, int create, struct child **out)
{
	struct child *c;

	if (f->nchains > 0)
		for (c = f->chains[hash & (f->nchains - 1)]; c; c = c->next)
			if (c->hash == hash && values_equal(c->values, v, f->nlabels)) {
				*out = c;
				return 0;
			}
	if (!create)
		return -ENOENT;
	if (f->n >= f->max_series)
		return -ENOSPC;
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 8;
		struct child **l = realloc(f->list, cap * sizeof(*l));

		if (l == NULL)
			return -ENOMEM;
		f->list = l;
		f->cap = cap;
	}
	if (f->n >= f->nchains && chains_grow(f) != 0)
		return -ENOMEM;
	c = child_alloc(f, v, hash);
	if (c == NULL)
		return -ENOMEM;
	c->index = f->n;
	f->list[f->n++] = c;
	c->next = f->chains[hash & (f->nchains - 1)];
	f->chains[hash & (f->nchains - 1)] = c;
	*out = c;
	return 0;
}

static int child_get(struct keel_family *f, enum mtype type,
		     const char *const *v, size_t n, struct child **out)
{
	uint64_t hash;
	int rc;

	if (f == NULL || out == NULL || f->type != type)
		return -EINVAL;
	rc = check_values(f, v, n);
	if (rc != 0)
		return rc;
	hash = values_hash(v, n);
	pthread_mutex_lock(&f->mu);
	rc = child_find_locked(f, v, hash, 1, out);
	pthread_mutex_unlock(&f->mu);
	return rc;
}

int keel_counter_get(struct keel_family *fam, const char *const *values,
		     size_t n, struct keel_counter **out)
{
	struct child *c;
	int rc = out != NULL ? child_get(fam, M_COUNTER, values, n, &c) : -EINVAL;

	if (rc == 0)
		*out = (struct keel_counter *)(void *)c;
	return rc;
}

int keel_gauge_get(struct keel_family *fam, const char *const *values, size_t n,
		   struct keel_gauge **out)
{
	struct child *c;
	int rc = out != NULL ? child_get(fam, M_GAUGE, values, n, &c) : -EINVAL;

	if (rc == 0)
		*out = (struct keel_gauge *)(void *)c;
	return rc;
}

int keel_histogram_get(struct keel_family *fam, const char *const *values,
		       size_t n, struct keel_histogram **out)
{
	struct child *c;
	int rc = out != NULL ? child_get(fam, M_HISTOGRAM, values, n, &c) : -EINVAL;

	if (rc == 0)
		*out = (struct keel_histogram *)(void *)c;
	return rc;
}

static void *child_with(struct keel_family *f, enum mtype type,
			const char *const *v, size_t n)
{
	struct child *c;
	int rc = child_get(f, type, v, n, &c);

	if (rc != 0) {
		errno = -rc;
		return NULL;
	}
	return c;
}

struct keel_counter *keel__counter_with(struct keel_family *fam,
					const char *const *values, size_t n)
{
	return child_with(fam, M_COUNTER, values, n);
}

struct keel_gauge *keel__gauge_with(struct keel_family *fam,
				    const char *const *values, size_t n)
{
	return child_with(fam, M_GAUGE, values, n);
}

struct keel_histogram *keel__histogram_with(struct keel_family *fam,
					    const char *const *values, size_t n)
{
	return child_with(fam, M_HISTOGRAM, values, n);
}

int keel_metrics_remove(struct keel_family *f, const char *const *values,
			size_t n)
{
	struct child *c, **pp;
	uint64_t hash;
	int rc;

	if (f == NULL || f->nlabels == 0)
		return -EINVAL;
	rc = check_values(f, values, n);
	if (rc != 0)
		return rc;
	hash = values_hash(values, n);
	pthread_mutex_lock(&f->mu);
	rc = child_find_locked(f, values, hash, 0, &c);
	if (rc == 0) {
		for (pp = &f->chains[hash & (f->nchains - 1)]; *pp != c;
		     pp = &(*pp)->next)
			;
		*pp = c->next;
		f->list[c->index] = f->list[--f->n];
		f->list[c->index]->index = c->index;
		c->next = f->retired;
		f->retired = c;
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

/* ------------------------------------------------------------------------
 * Families
 * ------------------------------------------------------------------------ */

/* Index of name in reg->fams, or where it would go (with *found 0). */
static size_t family_pos(const struct keel_metrics *reg, const char *name,
			 int *found)
{
	size_t lo = 0, hi = reg->nfams;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(reg->fams[mid]->name, name);

		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = 0;
	return lo;
}

static struct keel_family *family_find(const struct keel_metrics *reg,
				       const char *name)
{
	int found;
	size_t i = family_pos(reg, name, &found);

	return found ? reg->fams[i] : NULL;
}

/* A histogram "x" owns x_bucket, x_sum and x_count: does name clash with
 * an existing family's series (or an existing family with its series)?
 * Names are at most KEEL_METRICS_MAX_NAME bytes, so buf always fits. */
static int name_clash(const struct keel_metrics *reg, const char *name,
		      enum mtype type)
{
	static const char *const sfx[] = { "_bucket", "_sum", "_count" };
	size_t len = strlen(name), i;
	char buf[KEEL_METRICS_MAX_NAME + 16];

	for (i = 0; i < 3; i++) {
		size_t sl = strlen(sfx[i]);
		struct keel_family *f;

		if (len > sl && strcmp(name + len - sl, sfx[i]) == 0) {
			memcpy(buf, name, len - sl);
			buf[len - sl] = '\0';
			f = family_find(reg, buf);
			if (f != NULL && f->type == M_HISTOGRAM)
				return 1;
		}
		if (type == M_HISTOGRAM) {
			memcpy(buf, name, len);
			memcpy(buf + len, sfx[i], sl + 1);
			if (family_find(reg, buf) != NULL)
				return 1;
		}
	}
	return 0;
}

static int same_definition(const struct keel_family *f, enum mtype type,
			   const char *help, const char *const *labels,
			   size_t nlabels, const double *bounds, size_t nb)
{
	size_t i;

	if (f->type != type || strcmp(f->help, help) != 0 ||
	    f->nlabels != nlabels || f->nb != nb)
		return 0;
	for (i = 0; i < nlabels; i++)
		if (strcmp(f->labels[i], labels[i]) != 0)
			return 0;
	for (i = 0; i < nb; i++)
		if (f->bounds[i] != bounds[i])
			return 0;
	return 1;
}

/* Copies s and its NUL to p (sized by the caller); returns the byte after. */
static char *copy_str(char *p, const char *s)
{
	size_t n = strlen(s) + 1;

	memcpy(p, s, n);
	return p + n;
}

static struct keel_family *family_alloc(struct keel_metrics *reg,
					enum mtype type, const char *name,
					const char *help,
					const char *const *labels,
					size_t nlabels, double *bounds,
					size_t nb)
{
	size_t size = sizeof(struct keel_family) + nlabels * sizeof(char *);
	struct keel_family *f;
	char *p;
	size_t i;

	size += strlen(name) + 1 + strlen(help) + 1;
	for (i = 0; i < nlabels; i++)
		size += strlen(labels[i]) + 1;
	f = calloc(1, size);
	if (f == NULL)
		return NULL;
	f->reg = reg;
	f->type = type;
	f->labels = (char **)(void *)(f + 1);
	p = (char *)(f->labels + nlabels);
	f->name = p;
	p = copy_str(p, name);
	f->help = p;
	p = copy_str(p, help);
	for (i = 0; i < nlabels; i++) {
		f->labels[i] = p;
		p = copy_str(p, labels[i]);
	}
	f->nlabels = nlabels;
	f->bounds = bounds;
	f->nb = nb;
	switch (type) {
	case M_COUNTER:
		f->rowlen = 2; /* integer count, double part */
		break;
	case M_GAUGE:
		f->rowlen = 1;
		break;
	case M_HISTOGRAM:
		f->rowlen = nb + 2; /* buckets, +Inf, sum */
		break;
	}
	f->rowsize = (f->rowlen * sizeof(uint64_t) + LINE - 1) / LINE * LINE;
	f->max_series = reg->max_series;
	pthread_mutex_init(&f->mu, NULL);
	return f;
}

/* Checks a definition and prepares its bounds (*bounds malloc'd). */
static int spec_check(const struct keel__family_spec *sp, double **bounds,
		      int *nb)
{
	size_t i, j;

	*bounds = NULL;
	*nb = 0;
	if ((unsigned)sp->type > M_HISTOGRAM || !valid_metric_name(sp->name) ||
	    sp->nlabels > KEEL_METRICS_MAX_LABELS ||
	    (sp->nlabels > 0 && sp->labels == NULL) ||
	    (sp->help != NULL && !valid_utf8(sp->help)))
		return -EINVAL;
	for (i = 0; i < sp->nlabels; i++) {
		if (!valid_label_name(sp->labels[i]))
			return -EINVAL;
		if (sp->type == M_HISTOGRAM && strcmp(sp->labels[i], "le") == 0)
			return -EINVAL;
		for (j = 0; j < i; j++)
			if (strcmp(sp->labels[i], sp->labels[j]) == 0)
				return -EINVAL;
	}
	if (sp->type == M_HISTOGRAM) {
		*nb = bounds_prepare(sp->bounds, sp->nbounds, bounds);
		if (*nb < 0)
			return *nb;
	}
	return 0;
}

/* With reg->mu held: finds or adds one family; owns bounds. */
static int register_locked(struct keel_metrics *reg,
			   const struct keel__family_spec *sp, double *bounds,
			   int nb, struct keel_family **out, int *created)
{
	const char *help = sp->help != NULL ? sp->help : "";
	enum mtype type = (enum mtype)sp->type;
	struct keel_family *f;
	size_t pos;
	int found;

	*created = 0;
	pos = family_pos(reg, sp->name, &found);
	if (found) {
		int same;

		f = reg->fams[pos];
		same = same_definition(f, type, help, sp->labels, sp->nlabels,
				       bounds, (size_t)nb);
		free(bounds);
		if (!same)
			return -EEXIST;
		*out = f;
		return 0;
	}
	if (name_clash(reg, sp->name, type)) {
		free(bounds);
		return -EEXIST;
	}
	if (reg->nfams == reg->capfams) {
		size_t cap = reg->capfams ? reg->capfams * 2 : 16;
		struct keel_family **a = realloc(reg->fams, cap * sizeof(*a));

		if (a == NULL) {
			free(bounds);
			return -ENOMEM;
		}
		reg->fams = a;
		reg->capfams = cap;
	}
	f = family_alloc(reg, type, sp->name, help, sp->labels, sp->nlabels,
			 bounds, (size_t)nb);
	if (f == NULL) {
		free(bounds);
		return -ENOMEM;
	}
	if (sp->nlabels == 0) {
		struct child *c;

		if (child_find_locked(f, NULL, values_hash(NULL, 0), 1, &c) != 0) {
			family_free(f);
			return -ENOMEM;
		}
	}
	memmove(reg->fams + pos + 1, reg->fams + pos,
		(reg->nfams - pos) * sizeof(*reg->fams));
	reg->fams[pos] = f;
	reg->nfams++;
	*out = f;
	*created = 1;
	return 0;
}

/* With reg->mu held: takes out a family nobody has seen yet. */
static void unregister_locked(struct keel_metrics *reg, struct keel_family *f)
{
	int found;
	size_t pos = family_pos(reg, f->name, &found);

	memmove(reg->fams + pos, reg->fams + pos + 1,
		(reg->nfams - pos - 1) * sizeof(*reg->fams));
	reg->nfams--;
	family_free(f);
}

int keel__metrics_register_all(struct keel_metrics *reg,
			       const struct keel__family_spec *specs, size_t n,
			       struct keel_family **out)
{
	struct keel_family **got;
	double **bounds;
	int *nb, *created, rc = 0;
	size_t i, done = 0;

	if (reg == NULL || out == NULL || specs == NULL || n == 0)
		return -EINVAL;
	got = calloc(n, sizeof(*got));
	bounds = calloc(n, sizeof(*bounds));
	nb = calloc(n, sizeof(*nb));
	created = calloc(n, sizeof(*created));
	if (got == NULL || bounds == NULL || nb == NULL || created == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n && rc == 0; i++)
		rc = spec_check(&specs[i], &bounds[i], &nb[i]);
	if (rc != 0)
		goto out;
	pthread_mutex_lock(&reg->mu);
	for (done = 0; done < n && rc == 0; done++) {
		rc = register_locked(reg, &specs[done], bounds[done], nb[done],
				     &got[done], &created[done]);
		bounds[done] = NULL;
	}
	if (rc != 0) {
		/* All or nothing: nobody could see the new ones yet. */
		for (i = done; i-- > 0;)
			if (created[i])
				unregister_locked(reg, got[i]);
	}
	pthread_mutex_unlock(&reg->mu);
	if (rc == 0)
		memcpy(out, got, n * sizeof(*out));
out:
	if (bounds != NULL)
		for (i = 0; i < n; i++)
			free(bounds[i]);
	free(got);
	free(bounds);
	free(nb);
	free(created);
	return rc;
}

static int family_register(struct keel_metrics *reg, enum mtype type,
			   const char *name, const char *help,
			   const char *const *labels, size_t nlabels,
			   const double *bounds, size_t nbounds,
			   struct keel_family **out)
{
	struct keel__family_spec sp = { (int)type, name,   help,   labels,
					nlabels,   bounds, nbounds };

	return keel__metrics_register_all(reg, &sp, 1, out);
}

int keel_metrics_counter(struct keel_metrics *reg, const char *name,
			 const char *help, const char *const *labels,
			 size_t nlabels, struct keel_family **out)
{
	return family_register(reg, M_COUNTER, name, help, labels, nlabels,
			       NULL, 0, out);
}

int keel_metrics_gauge(struct keel_metrics *reg, const char *name,
		       const char *help, const char *const *labels,
		       size_t nlabels, struct keel_family **out)
{
	return family_register(reg, M_GAUGE, name, help, labels, nlabels, NULL,
			       0, out);
}

int keel_metrics_histogram(struct keel_metrics *reg, const char *name,
			   const char *help, const char *const *labels,
			   size_t nlabels, const double *bounds, size_t nbounds,
			   struct keel_family **out)
{
	return family_register(reg, M_HISTOGRAM, name, help, labels, nlabels,
			       bounds, nbounds, out);
}

/* ------------------------------------------------------------------------
 * Updates
 * ------------------------------------------------------------------------ */

static inline double bits_double(uint64_t b)
{
	double d;

	memcpy(&d, &b, sizeof(d));
	return d;
}

static inline uint64_t double_bits(double d)
{
	uint64_t b;

	memcpy(&b, &d, sizeof(b));
	return b;
}

static KEEL_COLD uint64_t *row_attach(struct child *c, int s)
{
	uint64_t *r = aligned_alloc(LINE, c->fam->rowsize);

	if (r == NULL)
		return NULL;
	memset(r, 0, c->fam->rowsize);
	__atomic_store_n(&c->rows[s], r, __ATOMIC_RELEASE);
	return r;
}

/* The calling thread's own row of c, or NULL: use the shared row. */
static inline uint64_t *own_row(struct child *c)
{
	int s = my_slot;
	uint64_t *r;

	if (KEEL_UNLIKELY(s == -2))
		s = my_slot = keel__thread_slot();
	if (KEEL_UNLIKELY(s < 0))
		return NULL;
	r = __atomic_load_n(&c->rows[s], __ATOMIC_ACQUIRE);
	if (KEEL_LIKELY(r != NULL))
		return r;
	return row_attach(c, s);
}

/* Only the owning thread writes its row: a relaxed load and store. */
static inline void own_add(uint64_t *w, uint64_t n)
{
	__atomic_store_n(w, __atomic_load_n(w, __ATOMIC_RELAXED) + n,
			 __ATOMIC_RELAXED);
}

static inline void own_add_double(uint64_t *w, double v)
{
	__atomic_store_n(w,
			 double_bits(bits_double(__atomic_load_n(w, __ATOMIC_RELAXED)) + v),
			 __ATOMIC_RELAXED);
}

static void shared_add_double(uint64_t *w, double v)
{
	uint64_t old = __atomic_load_n(w, __ATOMIC_RELAXED);

	while (!__atomic_compare_exchange_n(w, &old,
					    double_bits(bits_double(old) + v),
					    1, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
}

static inline void counter_add(struct child *c, uint64_t n)
{
	uint64_t *r = own_row(c);

	if (KEEL_LIKELY(r != NULL))
		own_add(&r[0], n);
	else
		__atomic_fetch_add(&c->shared[0], n, __ATOMIC_RELAXED);
}

void keel_counter_inc(struct keel_counter *c)
{
	if (KEEL_LIKELY(c != NULL))
		counter_add((struct child *)(void *)c, 1);
}

int keel_counter_add(struct keel_counter *c, int64_t n)
{
	if (KEEL_UNLIKELY(c == NULL || n < 0))
		return -EINVAL;
	counter_add((struct child *)(void *)c, (uint64_t)n);
	return 0;
}

int keel_counter_add_double(struct keel_counter *cnt, double v)
{
	struct child *c = (struct child *)(void *)cnt;
	uint64_t *r;

	if (c == NULL || !(v >= 0))
		return -EINVAL;
	r = own_row(c);
	if (r != NULL)
		own_add_double(&r[1], v);
	else
		shared_add_double(&c->shared[1], v);
	return 0;
}

/* Zeroes every row but the shared one, which gets (n, f). */
static void counter_store(struct child *c, uint64_t n, double f)
{
	size_t s;

	for (s = 0; s < KEEL__SLOTS; s++) {
		uint64_t *r = __atomic_load_n(&c->rows[s], __ATOMIC_ACQUIRE);

		if (r != NULL) {
			__atomic_store_n(&r[0], 0, __ATOMIC_RELAXED);
			__atomic_store_n(&r[1], 0, __ATOMIC_RELAXED);
		}
	}
	__atomic_store_n(&c->shared[0], n, __ATOMIC_RELAXED);
	__atomic_store_n(&c->shared[1], double_bits(f), __ATOMIC_RELAXED);
}

void keel_counter_set(struct keel_counter *c, uint64_t v)
{
	if (c != NULL)
		counter_store((struct child *)(void *)c, v, 0);
}

int keel_counter_set_double(struct keel_counter *c, double v)
{
	if (c == NULL || !(v >= 0))
		return -EINVAL;
	counter_store((struct child *)(void *)c, 0, v);
	return 0;
}

/* Adds up word i of every row of c. */
static uint64_t sum_u64(const struct child *c, size_t i)
{
	uint64_t n = __atomic_load_n(&c->shared[i], __ATOMIC_RELAXED);
	size_t s;

	for (s = 0; s < KEEL__SLOTS; s++) {
		uint64_t *r = __atomic_load_n(&c->rows[s], __ATOMIC_ACQUIRE);

		if (r != NULL)
			n += __atomic_load_n(&r[i], __ATOMIC_RELAXED);
	}
	return n;
}

static double sum_double(const struct child *c, size_t i)
{
	double d = bits_double(__atomic_load_n(&c->shared[i], __ATOMIC_RELAXED));
	size_t s;

	for (s = 0; s < KEEL__SLOTS; s++) {
		uint64_t *r = __atomic_load_n(&c->rows[s], __ATOMIC_ACQUIRE);

		if (r != NULL)
			d += bits_double(__atomic_load_n(&r[i], __ATOMIC_RELAXED));
	}
	return d;
}

double keel_counter_value(const struct keel_counter *cnt)
{
	const struct child *c = (const struct child *)(const void *)cnt;

	if (c == NULL)
		return 0;
	return (double)sum_u64(c, 0) + sum_double(c, 1);
}

void keel_gauge_set(struct keel_gauge *g, double v)
{
	if (g != NULL)
		__atomic_store_n(&((struct child *)(void *)g)->shared[0],
				 double_bits(v), __ATOMIC_RELAXED);
}

void keel_gauge_add(struct keel_gauge *g, double v)
{
	if (g != NULL)
		shared_add_double(&((struct child *)(void *)g)->shared[0], v);
}

void keel_gauge_sub(struct keel_gauge *g, double v)
{
	keel_gauge_add(g, -v);
}

void keel_gauge_inc(struct keel_gauge *g)
{
	keel_gauge_add(g, 1);
}

void keel_gauge_dec(struct keel_gauge *g)
{
	keel_gauge_add(g, -1);
}

double keel_gauge_value(const struct keel_gauge *g)
{
	if (g == NULL)
		return 0;
	return bits_double(__atomic_load_n(
		&((const struct child *)(const void *)g)->shared[0],
		__ATOMIC_RELAXED));
}

/* The first bucket whose bound is >= v; nb (the +Inf bucket) if none. */
static inline size_t bucket_of(const double *b, size_t nb, double v)
{
	size_t lo = 0, hi = nb;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (b[mid] >= v)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

int keel_histogram_observe(struct keel_histogram *h, double v)
{
	struct child *c = (struct child *)(void *)h;
	const struct keel_family *f;
	uint64_t *r;
	size_t i;

	if (KEEL_UNLIKELY(c == NULL || isnan(v)))
		return -EINVAL;
	f = c->fam;
	i = bucket_of(f->bounds, f->nb, v);
	r = own_row(c);
	if (KEEL_LIKELY(r != NULL)) {
		own_add(&r[i], 1);
		own_add_double(&r[f->nb + 1], v);
	} else {
		__atomic_fetch_add(&c->shared[i], 1, __ATOMIC_RELAXED);
		shared_add_double(&c->shared[f->nb + 1], v);
	}
	return 0;
}

/*
 * One read of a histogram child: per-bucket counts into cnt[0..nb], the sum
 * into *sum; returns the count, which is by construction the sum of the
 * buckets this same read saw.
 */
static uint64_t histogram_snapshot(const struct child *c, uint64_t *cnt,
				   double *sum)
{
	size_t nb = c->fam->nb, i;
	uint64_t total = 0;

	for (i = 0; i <= nb; i++) {
		cnt[i] = sum_u64(c, i);
		total += cnt[i];
	}
	*sum = sum_double(c, nb + 1);
	return total;
}

void keel_histogram_read(const struct keel_histogram *h, uint64_t *count,
			 double *sum)
{
	const struct child *c = (const struct child *)(const void *)h;
	uint64_t cnt[KEEL_METRICS_MAX_BUCKETS + 1], n = 0;
	double s = 0;

	if (c != NULL)
		n = histogram_snapshot(c, cnt, &s);
	if (count != NULL)
		*count = n;
	if (sum != NULL)
		*sum = s;
}

/* ------------------------------------------------------------------------
 * Collectors
 * ------------------------------------------------------------------------ */

int keel__metrics_collectors_lock(struct keel_metrics *reg)
{
	if (reg == NULL)
		return -EINVAL;
	if (collecting == reg)
		return -EDEADLK;
	pthread_mutex_lock(&reg->cmu);
	return 0;
}

void keel__metrics_collectors_unlock(struct keel_metrics *reg)
{
	pthread_mutex_unlock(&reg->cmu);
}

static ssize_t collector_index(const struct keel_metrics *reg,
			       keel_metrics_collect_fn fn, const void *ud)
{
	size_t i;

	for (i = 0; i < reg->ncols; i++)
		if (reg->cols[i].fn == fn && reg->cols[i].ud == ud)
			return (ssize_t)i;
	return -1;
}

int keel__metrics_collector_insert(struct keel_metrics *reg,
				   keel_metrics_collect_fn fn, void *ud,
				   void (*release)(void *ud))
{
	if (fn == NULL)
		return -EINVAL;
	if (collector_index(reg, fn, ud) >= 0)
		return -EEXIST;
	if (reg->ncols == reg->capcols) {
		size_t cap = reg->capcols ? reg->capcols * 2 : 8;
		struct collector *a = realloc(reg->cols, cap * sizeof(*a));

		if (a == NULL)
			return -ENOMEM;
		reg->cols = a;
		reg->capcols = cap;
	}
	reg->cols[reg->ncols].fn = fn;
	reg->cols[reg->ncols].ud = ud;
	reg->cols[reg->ncols].release = release;
	reg->ncols++;
	return 0;
}

int keel__metrics_collector_erase(struct keel_metrics *reg,
				  keel_metrics_collect_fn fn, void *ud)
{
	ssize_t i = collector_index(reg, fn, ud);

	if (i < 0)
		return -ENOENT;
	memmove(reg->cols + i, reg->cols + i + 1,
		(reg->ncols - (size_t)i - 1) * sizeof(*reg->cols));
	reg->ncols--;
	return 0;
}

void *keel__metrics_collector_find(struct keel_metrics *reg,
				   keel_metrics_collect_fn fn,
				   int (*match)(void *ud, const void *arg),
				   const void *arg)
{
	size_t i;

	for (i = 0; i < reg->ncols; i++)
		if (reg->cols[i].fn == fn &&
		    (match == NULL || match(reg->cols[i].ud, arg)))
			return reg->cols[i].ud;
	return NULL;
}

int keel_metrics_add_collector(struct keel_metrics *reg,
			       keel_metrics_collect_fn fn, void *ud)
{
	int rc;

	if (fn == NULL)
		return -EINVAL;
	rc = keel__metrics_collectors_lock(reg);
	if (rc != 0)
		return rc;
	rc = keel__metrics_collector_insert(reg, fn, ud, NULL);
	keel__metrics_collectors_unlock(reg);
	return rc;
}

int keel_metrics_remove_collector(struct keel_metrics *reg,
				  keel_metrics_collect_fn fn, void *ud)
{
	int rc;

	if (fn == NULL)
		return -EINVAL;
	rc = keel__metrics_collectors_lock(reg);
	if (rc != 0)
		return rc;
	rc = keel__metrics_collector_erase(reg, fn, ud);
	keel__metrics_collectors_unlock(reg);
	return rc;
}

struct collect_run {
	struct keel_metrics *reg;
	struct keel_metrics *prev;
};

static void collect_done(void *arg)
{
	struct collect_run *run = arg;

	collecting = run->prev;
	pthread_mutex_unlock(&run->reg->cmu);
}

/* In a scope of its own, so that a collector that panics does not leave
 * the collector lock held: the panic goes on to the caller of render. */
static void collect_all(void *arg)
{
	struct collect_run *run = arg;
	struct keel_metrics *reg = run->reg;
	size_t i;

	pthread_mutex_lock(&reg->cmu);
	run->prev = collecting;
	collecting = reg;
	keel_defer(collect_done, run);
	for (i = 0; i < reg->ncols; i++)
		reg->cols[i].fn(reg, reg->cols[i].ud);
}

/* ------------------------------------------------------------------------
 * The text format
 * ------------------------------------------------------------------------ */

struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
};

static void sb_put(struct sbuf *s, const char *str, size_t n)
{
	if (s->oom)
		return;
	if (s->len + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		char *p;

		while (s->len + n + 1 > cap)
			cap *= 2;
		p = realloc(s->p, cap);
		if (p == NULL) {
			s->oom = 1;
			return;
		}
		s->p = p;
		s->cap = cap;
	}
	memcpy(s->p + s->len, str, n);
	s->len += n;
	s->p[s->len] = '\0';
}

static void sb_str(struct sbuf *s, const char *str)
{
	sb_put(s, str, strlen(str));
}

/* Escapes backslash and newline, and the double quote when quote is set. */
static void sb_escaped(struct sbuf *s, const char *str, int quote)
{
	const char *run = str;

	for (; *str != '\0'; str++) {
		const char *esc = NULL;

		if (*str == '\\')
			esc = "\\\\";
		else if (*str == '\n')
			esc = "\\n";
		else if (*str == '"' && quote)
			esc = "\\\"";
		if (esc == NULL)
			continue;
		sb_put(s, run, (size_t)(str - run));
		sb_str(s, esc);
		run = str + 1;
	}
	sb_put(s, run, (size_t)(str - run));
}

static void sb_u64(struct sbuf *s, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);

	sb_put(s, tmp, (size_t)n);
}

/* How Prometheus reads numbers back: +Inf, -Inf, NaN; integers plainly;
 * otherwise the shortest %g text that parses to the same double. Writes a
 * NUL-terminated text into tmp and returns its length. */
#define NUMBUF 48 /* "%.17g" of any double, and room to spare */
static size_t fmt_double(char tmp[NUMBUF], double v)
{
	int lo, hi, prec;

	if (isnan(v))
		return (size_t)snprintf(tmp, NUMBUF, "NaN");
	if (isinf(v))
		return (size_t)snprintf(tmp, NUMBUF, "%s", v > 0 ? "+Inf" : "-Inf");
	if (v == 0)
		return (size_t)snprintf(tmp, NUMBUF, "0");
	/* (libkeel does not link libm: no trunc or fabs here) */
	if (v > -9.2e18 && v < 9.2e18 && (double)(int64_t)v == v)
		return (size_t)snprintf(tmp, NUMBUF, "%" PRId64, (int64_t)v);
	/* Fewest significant digits that read back exactly: reading back is
	 * monotonic in the digits, and 17 always do. */
	for (lo = 1, hi = 17; lo < hi;) {
		prec = (lo + hi) / 2;
		snprintf(tmp, NUMBUF, "%.*g", prec, v);
		if (strtod(tmp, NULL) == v)
			hi = prec;
		else
			lo = prec + 1;
	}
	return (size_t)snprintf(tmp, NUMBUF, "%.*g", lo, v);
}

static void sb_double(struct sbuf *s, double v)
{
	char tmp[NUMBUF];
	size_t n = fmt_double(tmp, v);

	sb_put(s, tmp, n);
}

/* {l1="v1",...[,le="x"]} or nothing at all. */
static void sb_labels(struct sbuf *s, const struct keel_family *f,
		      const struct child *c, const char *le)
{
	size_t i;

	if (f->nlabels == 0 && le == NULL)
		return;
	sb_put(s, "{", 1);
	for (i = 0; i < f->nlabels; i++) {
		if (i > 0)
			sb_put(s, ",", 1);
		sb_str(s, f->labels[i]);
		sb_put(s, "=\"", 2);
		sb_escaped(s, c->values[i], 1);
		sb_put(s, "\"", 1);
	}
	if (le != NULL) {
		if (f->nlabels > 0)
			sb_put(s, ",", 1);
		sb_put(s, "le=\"", 4);
		sb_str(s, le);
		sb_put(s, "\"", 1);
	}
	sb_put(s, "}", 1);
}

static void sb_sample(struct sbuf *s, const struct keel_family *f,
		      const char *suffix, const struct child *c, const char *le)
{
	sb_str(s, f->name);
	if (suffix != NULL)
		sb_str(s, suffix);
	sb_labels(s, f, c, le);
	sb_put(s, " ", 1);
}

static void render_histogram(struct sbuf *s, const struct keel_family *f,
			     const struct child *c)
{
	uint64_t cnt[KEEL_METRICS_MAX_BUCKETS + 1], cum = 0, total;
	double sum;
	size_t i;

	total = histogram_snapshot(c, cnt, &sum);
	for (i = 0; i < f->nb; i++) {
		char le[NUMBUF];

		fmt_double(le, f->bounds[i]);
		cum += cnt[i];
		sb_sample(s, f, "_bucket", c, le);
		sb_u64(s, cum);
		sb_put(s, "\n", 1);
	}
	sb_sample(s, f, "_bucket", c, "+Inf");
	sb_u64(s, total);
	sb_put(s, "\n", 1);
	sb_sample(s, f, "_sum", c, NULL);
	sb_double(s, sum);
	sb_put(s, "\n", 1);
	sb_sample(s, f, "_count", c, NULL);
	sb_u64(s, total);
	sb_put(s, "\n", 1);
}

static void render_child(struct sbuf *s, const struct keel_family *f,
			 const struct child *c)
{
	uint64_t n;
	double d;

	switch (f->type) {
	case M_COUNTER:
		n = sum_u64(c, 0);
		d = sum_double(c, 1);
		sb_sample(s, f, NULL, c, NULL);
		if (d == 0)
			sb_u64(s, n);
		else
			sb_double(s, (double)n + d);
		break;
	case M_GAUGE:
		sb_sample(s, f, NULL, c, NULL);
		sb_double(s, keel_gauge_value((const struct keel_gauge *)(const void *)c));
		break;
	case M_HISTOGRAM:
		render_histogram(s, f, c);
		return;
	}
	sb_put(s, "\n", 1);
}

static int cmp_child(const void *a, const void *b)
{
	const struct child *x = *(const struct child *const *)a;
	const struct child *y = *(const struct child *const *)b;
	size_t i;

	for (i = 0; i < x->fam->nlabels; i++) {
		int c = strcmp(x->values[i], y->values[i]);

		if (c != 0)
			return c;
	}
	return 0;
}

static int render_family(struct sbuf *s, struct keel_family *f)
{
	struct child **list;
	size_t n, i;

	pthread_mutex_lock(&f->mu);
	n = f->n;
	list = n > 0 ? malloc(n * sizeof(*list)) : NULL;
	if (list != NULL)
		memcpy(list, f->list, n * sizeof(*list));
	pthread_mutex_unlock(&f->mu);
	if (n == 0)
		return 0;
	if (list == NULL)
		return -ENOMEM;
	qsort(list, n, sizeof(*list), cmp_child);
	if (f->help[0] != '\0') {
		sb_str(s, "# HELP ");
		sb_str(s, f->name);
		sb_put(s, " ", 1);
		sb_escaped(s, f->help, 0);
		sb_put(s, "\n", 1);
	}
	sb_str(s, "# TYPE ");
	sb_str(s, f->name);
	sb_put(s, " ", 1);
	sb_str(s, type_names[f->type]);
	sb_put(s, "\n", 1);
	for (i = 0; i < n; i++)
		render_child(s, f, list[i]);
	free(list);
	return 0;
}

int keel_metrics_render(struct keel_metrics *reg, char **buf, size_t *len)
{
	struct collect_run run;
	struct keel_family **fams;
	struct sbuf s = { 0 };
	size_t n, i;
	int rc = 0;

	if (reg == NULL || buf == NULL)
		return -EINVAL;
	if (collecting == reg)
		return -EDEADLK;
	run.reg = reg;
	run.prev = NULL;
	keel_call(collect_all, &run);

	/* Families are never freed before the registry: a copy of the
	 * array is enough to walk them without the lock. */
	pthread_mutex_lock(&reg->mu);
	n = reg->nfams;
	fams = malloc((n ? n : 1) * sizeof(*fams));
	if (fams != NULL && n > 0)
		memcpy(fams, reg->fams, n * sizeof(*fams));
	pthread_mutex_unlock(&reg->mu);
	if (fams == NULL)
		return -ENOMEM;
	sb_put(&s, "", 0);
	for (i = 0; i < n && rc == 0; i++)
		rc = render_family(&s, fams[i]);
	free(fams);
	if (rc == 0 && s.oom)
		rc = -ENOMEM;
	if (rc != 0) {
		free(s.p);
		*buf = NULL;
		return rc;
	}
	*buf = s.p;
	if (len != NULL)
		*len = s.len;
	return 0;
}

/* ------------------------------------------------------------------------
 * Process metrics
 * ------------------------------------------------------------------------ */

struct process {
	struct keel_counter *cpu;
	struct keel_gauge *rss, *vsize, *fds, *max_fds, *start;
};

static long read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (f == NULL)
		return -1;
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	return (long)n;
}

static double boot_time(void)
{
	char buf[8192];
	const char *p;

	if (read_file("/proc/stat", buf, sizeof(buf)) < 0)
		return 0;
	p = strstr(buf, "\nbtime ");
	return p != NULL ? strtod(p + 7, NULL) : 0;
}

static double open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	double n = 0;

	if (d == NULL)
		return NAN;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

static void process_collect(struct keel_metrics *reg, void *ud)
{
	struct process *pr = ud;
	double tick = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
	char buf[4096], *p, *tok[24];
	struct rlimit rl;
	size_t n = 0;

	(void)reg;
	if (read_file("/proc/self/stat", buf, sizeof(buf)) > 0 &&
	    (p = strrchr(buf, ')')) != NULL) {
		char *save = NULL;

		for (p = strtok_r(p + 1, " ", &save); p != NULL && n < 24;
		     p = strtok_r(NULL, " ", &save))
			tok[n++] = p;
	}
	/* Fields after the command: state is field 3 (tok[0]); utime 14,
	 * stime 15, starttime 22, vsize 23, rss 24. */
	if (n >= 22 && tick > 0) {
		keel_counter_set_double(pr->cpu, (strtod(tok[11], NULL) +
						  strtod(tok[12], NULL)) / tick);
		keel_gauge_set(pr->start, boot_time() + strtod(tok[19], NULL) / tick);
		keel_gauge_set(pr->vsize, strtod(tok[20], NULL));
		keel_gauge_set(pr->rss, strtod(tok[21], NULL) * page);
	}
	keel_gauge_set(pr->fds, open_fds());
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		keel_gauge_set(pr->max_fds, rl.rlim_cur == RLIM_INFINITY ?
				INFINITY : (double)rl.rlim_cur);
}

static const struct keel__family_spec process_specs[6] = {
	{ M_COUNTER, "process_cpu_seconds_total",
	  "Total user and system CPU time spent in seconds.", KEEL_NO_LABELS,
	  NULL, 0 },
	{ M_GAUGE, "process_resident_memory_bytes",
	  "Resident memory size in bytes.", KEEL_NO_LABELS, NULL, 0 },
	{ M_GAUGE, "process_virtual_memory_bytes",
	  "Virtual memory size in bytes.", KEEL_NO_LABELS, NULL, 0 },
	{ M_GAUGE, "process_open_fds", "Number of open file descriptors.",
	  KEEL_NO_LABELS, NULL, 0 },
	{ M_GAUGE, "process_max_fds",
	  "Maximum number of open file descriptors.", KEEL_NO_LABELS, NULL, 0 },
	{ M_GAUGE, "process_start_time_seconds",
	  "Start time of the process since unix epoch in seconds.",
	  KEEL_NO_LABELS, NULL, 0 },
};

int keel_metrics_add_process(struct keel_metrics *reg)
{
	struct keel_family *f[6] = { NULL }; /* set by register_all; GCC -O3 cannot tell */
	struct process *pr;
	int rc;

	rc = keel__metrics_collectors_lock(reg);
	if (rc != 0)
		return rc;
	rc = -EEXIST;
	if (keel__metrics_collector_find(reg, process_collect, NULL, NULL))
		goto out;
	rc = keel__metrics_register_all(reg, process_specs, 6, f);
	if (rc != 0)
		goto out;
	rc = -ENOMEM;
	pr = calloc(1, sizeof(*pr));
	if (pr == NULL)
		goto out;
	pr->cpu = keel_counter_with(f[0]);
	pr->rss = keel_gauge_with(f[1]);
	pr->vsize = keel_gauge_with(f[2]);
	pr->fds = keel_gauge_with(f[3]);
	pr->max_fds = keel_gauge_with(f[4]);
	pr->start = keel_gauge_with(f[5]);
	rc = keel__metrics_collector_insert(reg, process_collect, pr, free);
	if (rc != 0)
		free(pr);
out:
	keel__metrics_collectors_unlock(reg);
	return rc;
}
