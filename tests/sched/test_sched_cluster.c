/*
 * tests/sched/test_sched_cluster.c - every case of test_sched.c again, on
 * the scheduler's cluster code path (cfg.cluster: lease, node and run
 * beats, claims with tokens, rescue) alone on SQLite, plus the cases only
 * a cluster has.
 */
/* KEEL_TEST_LABELS: threads */
#define TEST_SCHED_CLUSTER 1
#include "test_sched.c"
