/*
 * examples/db_fallback.c - the design notes' database call (chapter 3.3):
 * retry, then a circuit breaker, then a cache, then a default value, with an
 * alert when even the cache misses.
 *
 * The "database" is a real SQLite file. To make it fail the way a busy or
 * overloaded database does, a second connection holds an exclusive lock on
 * it, so every query gets SQLITE_BUSY. The cache is an in-memory SQLite
 * database filled from earlier successful reads.
 *
 *   fallback (cache, then default + alert)
 *     > retry (3 attempts, 20 ms apart)
 *       > breaker (opens after 3 failures in a row, for 300 ms)
 *         > the query
 *
 * Exits 0 when every step behaved as the narration says.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include <keel.h>
#include <keel/breaker.h>
#include <keel/fallback.h>
#include <keel/pipeline.h>
#include <keel/retry.h>

static sqlite3 *primary, *cache;
static int queries; /* attempts that reached the database */

/* A deferred finalize: a statement is released on every path. */
static void finalize(void *st)
{
	sqlite3_finalize(st);
}

struct lookup {
	int id;
	char name[64];
	const char *source;
};

/* One attempt at the primary database. */
static int query_primary(struct keel_exec *x, void *arg)
{
	struct lookup *l = arg;
	sqlite3_stmt *st;
	int rc;

	queries++;
	rc = sqlite3_prepare_v2(primary, "SELECT name FROM users WHERE id = ?",
				-1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc == SQLITE_BUSY ? -EBUSY : -EIO;
	keel_defer(finalize, st);
	sqlite3_bind_int(st, 1, l->id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_BUSY)
		return -EBUSY;
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -ENOENT : -EIO;
	snprintf(l->name, sizeof(l->name), "%s", sqlite3_column_text(st, 0));
	l->source = "database";
	x->result = l;
	/* Remember it for the bad days. */
	{
		sqlite3_stmt *put;

		sqlite3_prepare_v2(cache,
				   "INSERT OR REPLACE INTO users VALUES (?, ?)",
				   -1, &put, NULL);
		sqlite3_bind_int(put, 1, l->id);
		sqlite3_bind_text(put, 2, l->name, -1, SQLITE_TRANSIENT);
		sqlite3_step(put);
		sqlite3_finalize(put);
	}
	return 0;
}

/* Fallback step 1: the cache. */
static int from_cache(const struct keel_outcome *failed, struct keel_exec *x,
		      void *ud)
{
	struct lookup *l = ud == NULL ? NULL : *(struct lookup **)ud;
	sqlite3_stmt *st;
	int rc;

	(void)failed;
	sqlite3_prepare_v2(cache, "SELECT name FROM users WHERE id = ?", -1,
			   &st, NULL);
	keel_defer(finalize, st);
	sqlite3_bind_int(st, 1, l->id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
		return -ENOENT;
	snprintf(l->name, sizeof(l->name), "%s", sqlite3_column_text(st, 0));
	l->source = "cache";
	x->result = l;
	return 0;
}

/* Fallback step 2: a default value, and an alert: we are serving blind. */
static int default_user(const struct keel_outcome *failed, struct keel_exec *x,
			void *ud)
{
	struct lookup *l = *(struct lookup **)ud;

	printf("    ALERT {\"level\":\"error\",\"module\":\"users\","
	       "\"message\":\"database and cache both failed, serving the "
	       "default\",\"id\":%d,\"error\":\"%s\"}\n",
	       l->id, keel_strerror(failed->code));
	snprintf(l->name, sizeof(l->name), "guest");
	l->source = "default";
	x->result = l;
	return 0;
}

static struct lookup *current; /* what the fallback steps fill in */

static int lookup(struct keel_pipeline *pl, int id, struct keel_outcome *o)
{
	static struct lookup l;

	memset(&l, 0, sizeof(l));
	l.id = id;
	current = &l;
	queries = 0;
	keel_pipeline_execute(pl, query_primary, &l, NULL, o);
	printf("    user %d -> \"%s\" from the %s (%d database attempt%s, %s)\n",
	       id, l.name, l.source ? l.source : "nowhere", queries,
	       queries == 1 ? "" : "s",
	       keel_policy_kind_name(o->decided_by));
	return o->code;
}

static int exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

static struct keel_pipeline *build(struct keel_policy **breaker)
{
	struct keel_retry_config rc;
	struct keel_breaker_config bc;
	struct keel_fallback_config fc;
	struct keel_pipeline_config pc;
	struct keel_policy *retry, *fallback;
	struct keel_pipeline *pl;

	keel_retry_config_init(&rc);
	rc.max_attempts = 3;
	rc.backoff.kind = KEEL_BACKOFF_CONSTANT;
	rc.backoff.initial = 20 * KEEL_MSEC;
	rc.backoff.jitter = KEEL_JITTER_NONE;
	keel_breaker_config_init(&bc);
	bc.consecutive_failures = 3;
	bc.failure_rate_threshold = 0;
	bc.window_size = 0;
	bc.open_duration = 300 * KEEL_MSEC;
	bc.half_open_calls = 1;
	keel_fallback_config_init(&fc);
	keel_fallback_config_fn(&fc, from_cache, &current);
	keel_fallback_config_fn(&fc, default_user, &current);
	keel_pipeline_config_init(&pc);
	pc.owns_policies = 1;
	if (keel_retry_new(&rc, &retry) || keel_breaker_new(&bc, breaker) ||
	    keel_fallback_new(&fc, &fallback))
		return NULL;
	keel_pipeline_config_add(&pc, fallback);
	keel_pipeline_config_add(&pc, *breaker);
	keel_pipeline_config_add(&pc, retry);
	if (keel_pipeline_new(&pc, &pl) != 0)
		return NULL;
	return pl;
}

int main(void)
{
	char dir[] = "/tmp/keel-db-fallback-XXXXXX", path[128];
	struct keel_policy *breaker;
	struct keel_pipeline *pl;
	struct keel_outcome o;
	sqlite3 *locker;
	int ok = 1;

	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(path, sizeof(path), "%s/users.db", dir);
	if (sqlite3_open(path, &primary) != SQLITE_OK ||
	    sqlite3_open(path, &locker) != SQLITE_OK ||
	    sqlite3_open(":memory:", &cache) != SQLITE_OK)
		return 1;
	exec(primary, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
		      "INSERT INTO users VALUES (1, 'ada'), (2, 'grace');");
	exec(cache, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);");
	pl = build(&breaker);
	if (pl == NULL)
		return 1;

	puts("1. the database is healthy");
	ok &= lookup(pl, 1, &o) == 0 && strcmp(current->source, "database") == 0;

	puts("2. another connection locks the database: every query is busy");
	exec(locker, "BEGIN EXCLUSIVE");
	ok &= lookup(pl, 1, &o) == 0 && strcmp(current->source, "cache") == 0 &&
	      queries == 3;
	printf("    breaker: %s\n", keel_breaker_state_name(keel_breaker_state(breaker)));
	ok &= keel_breaker_state(breaker) == KEEL_BREAKER_OPEN;

	puts("3. the breaker is open: no query reaches the database");
	ok &= lookup(pl, 2, &o) == 0 && strcmp(current->source, "default") == 0 &&
	      queries == 0;

	puts("4. the lock is released; after the open duration a probe closes it");
	exec(locker, "COMMIT");
	usleep(350 * 1000);
	ok &= lookup(pl, 2, &o) == 0 && strcmp(current->source, "database") == 0;
	printf("    breaker: %s\n", keel_breaker_state_name(keel_breaker_state(breaker)));
	ok &= keel_breaker_state(breaker) == KEEL_BREAKER_CLOSED;

	keel_pipeline_free(pl);
	sqlite3_close(locker);
	sqlite3_close(primary);
	sqlite3_close(cache);
	unlink(path);
	rmdir(dir);
	puts(ok ? "every step behaved as described" : "a step did not behave as described");
	return ok ? 0 : 1;
}
