/*
 * tests/sched/pg_test.h - the PostgreSQL server of a test program, and the
 * libpq calls its cases make (one header, for test programs only; include
 * it after keel_test.h and pg_server.h).
 *
 * The server is started before main, so before keel_test.h forks a child
 * per case, and is shared by the cases; it is stopped when main returns
 * (only the process that started it can stop it). server_state: 0 up, 1
 * cannot run here (need_server() then skips the case), -1 failed.
 */
#ifndef KEEL_TEST_PG_TEST_H
#define KEEL_TEST_PG_TEST_H

static struct pg_server server;
static char server_why[2048];
static int server_state = -1;

static void server_stop(void)
{
	pg_server_destroy(&server); /* the main process only */
}

__attribute__((constructor)) static void server_start(void)
{
	server_state =
		pg_server_start(&server, NULL, server_why, sizeof(server_why));
	if (server_state == 0)
		printf("PostgreSQL %d on %s\n", server.version, server.dir);
	atexit(server_stop);
}

static inline void need_server(void)
{
	if (server_state == 1)
		KEEL_TEST_SKIP(server_why);
	if (server_state != 0)
		KEEL_TEST_FAIL("the test server did not start: %s", server_why);
}

/* A connection to database db of pg; fails the case when it cannot. */
static inline PGconn *pg_test_connect(const struct pg_server *pg,
				      const char *db)
{
	char info[512];
	PGconn *c;

	pg_server_conninfo(pg, db, info, sizeof(info));
	c = PQconnectdb(info);
	if (PQstatus(c) != CONNECTION_OK)
		KEEL_TEST_FAIL("connect to %s: %s", db, PQerrorMessage(c));
	return c;
}

/* Runs sql; fails the case when it fails. */
static inline void pg_test_exec(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);

	if (PQresultStatus(r) != PGRES_COMMAND_OK &&
	    PQresultStatus(r) != PGRES_TUPLES_OK)
		KEEL_TEST_FAIL("%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
}

#endif /* KEEL_TEST_PG_TEST_H */
