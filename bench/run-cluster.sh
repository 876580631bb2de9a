#!/usr/bin/env bash
# bench/run-cluster.sh - keeld's cluster throughput on one PostgreSQL, as a
# ratio of what that PostgreSQL allows, measured in the same run:
#   - pgbench's TPS (its default TPC-B-like write transaction, 8 clients)
#     on a database of the server;
#   - runs per second that 1 and then 3 keeld nodes carry from queued to
#     stored final, through claims (FOR UPDATE SKIP LOCKED) and
#     claim-fenced result writes: K runs of a job with an in-process
#     handler (demo.ok) are queued in one INSERT, the clock runs from then
#     until the last of them is final (polled every 50 ms). The INSERT is
#     followed by an ANALYZE of runs, as autovacuum does on a live table:
#     a burst on a fresh database is planned from the empty table's
#     statistics until autovacuum's first pass (up to a minute), and the
#     claim then sorts every queued run (docs/cluster.md, performance).
# Every keeld is a real process on 127.0.0.1 with the default cluster
# timings, 16 workers and --log-level warn; the server is a throwaway one
# (initdb in a temp dir, unix socket only, the distribution's defaults:
# fsync and synchronous_commit on).
#
#   bench/run-cluster.sh             (part of `make bench`)
#
# Environment: KEEL_BENCH_BUILD (default build-bench), KEEL_BENCH_CLUSTER_RUNS
# (K, default 20000), KEEL_BENCH_PGBENCH_S (pgbench seconds, default 10).
# Writes bench/results/cluster-<date>.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KEEL_BENCH_BUILD:-$root/build-bench}
case "$build" in /*) ;; *) build=$root/$build ;; esac
runs=${KEEL_BENCH_CLUSTER_RUNS:-20000}
pgsecs=${KEEL_BENCH_PGBENCH_S:-10}

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/pgbench" ]; then
	echo "bench: no PostgreSQL server binaries (scripts/deps.sh installs them)" >&2
	exit 1
fi

echo "bench: building keeld in $build" >&2
mkdir -p "$build"
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release &&
       cmake --build "$build" --target keeld -j "$(nproc)"; } >"$build/bench-cluster-build.log" 2>&1; then
	tail -n 30 "$build/bench-cluster-build.log" >&2
	echo "bench: building keeld failed" >&2
	exit 1
fi
keeld=$build/cmd/keeld/keeld

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-bench-cluster.XXXXXX")
chmod 755 "$tmp"
pids=()
# PostgreSQL refuses to run as root: as root, the server runs as Debian's
# "postgres" user, which owns the temp dir.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
	else
		"$@"
	fi
}
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	as_pg "$pgbin/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown postgres "$tmp"

echo "bench: starting PostgreSQL ($pgbin)" >&2
as_pg "$pgbin/initdb" -D "$tmp/data" -U keel -A trust -E UTF8 >"$tmp/initdb.log" 2>&1
as_pg "$pgbin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w \
	-o "-k $tmp -c listen_addresses= -c max_connections=100" start >/dev/null
psql() { "$pgbin/psql" -h "$tmp" -U keel -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "bench: pgbench, 8 clients, ${pgsecs}s" >&2
psql -d postgres -c "CREATE DATABASE pgb"
"$pgbin/pgbench" -h "$tmp" -U keel -i -s 10 -q pgb >"$tmp/pgbench-init.log" 2>&1
tps=$("$pgbin/pgbench" -h "$tmp" -U keel -c 8 -j 2 -T "$pgsecs" -n pgb 2>/dev/null |
	sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)

# wait_port LOG: the port a keeld printed once it listens.
wait_port() {
	for _ in $(seq 1 200); do
		p=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$1" | head -n 1)
		[ -n "$p" ] && { echo "$p"; return 0; }
		sleep 0.05
	done
	echo "bench: keeld did not start:" >&2
	cat "$1" >&2
	return 1
}

# cluster N: runs/s of N nodes over K queued runs.
cluster() {
	local n=$1 db=kc$1 store port
	psql -d postgres -c "CREATE DATABASE $db"
	store="postgresql:///$db?host=$tmp&user=keel"
	pids=()
	for i in $(seq 1 "$n"); do
		"$keeld" --store "$store" --node-id "bench-$i" --listen 127.0.0.1:0 \
			--workers 16 --demo --log-level warn >"$tmp/node-$n-$i.log" 2>&1 &
		pids+=($!)
	done
	port=$(wait_port "$tmp/node-$n-1.log")
	for i in $(seq 2 "$n"); do wait_port "$tmp/node-$n-$i.log" >/dev/null; done
	curl -sf -o /dev/null -X POST "http://127.0.0.1:$port/v1/jobs" \
		-H 'Content-Type: application/json' \
		-d '{"name":"bench","schedule":"@manual","concurrency":"allow","executor":{"type":"handler","name":"demo.ok"}}'
	# Every node has the job (it reloads jobs at each heartbeat).
	sleep 1.5
	local t0 t1 left
	t0=$(date +%s.%N)
	psql -d "$db" -c "INSERT INTO runs(job, state, trigger, origin, attempt, scheduled_at, created_at)
		SELECT 'bench', 'queued', 'manual', 'manual', 1, g, g
		FROM generate_series(1, $runs) AS g;
		ANALYZE runs"
	while :; do
		left=$(psql -d "$db" -At -c "SELECT count(*) FROM runs WHERE state IN ('queued', 'running')")
		[ "$left" = 0 ] && break
		sleep 0.05
	done
	t1=$(date +%s.%N)
	local bad
	bad=$(psql -d "$db" -At -c "SELECT count(*) FROM runs WHERE state <> 'succeeded'")
	if [ "$bad" != 0 ]; then
		echo "bench: $bad runs did not succeed" >&2
		exit 1
	fi
	psql -d "$db" -At -F ' ' -c "SELECT node, count(*) FROM runs GROUP BY node ORDER BY node" \
		>"$tmp/spread-$n"
	for p in "${pids[@]}"; do kill -TERM "$p"; done
	for p in "${pids[@]}"; do wait "$p" || true; done
	pids=()
	awk -v k="$runs" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", k / (b - a) }'
}

echo "bench: 1 keeld node, $runs runs" >&2
one=$(cluster 1)
echo "bench: 3 keeld nodes, $runs runs" >&2
three=$(cluster 3)

mkdir -p "$root/bench/results"
out="$root/bench/results/cluster-$(date +%Y%m%d-%H%M%S).txt"
{
	echo "keeld cluster throughput on one PostgreSQL ($("$pgbin/postgres" --version)), $(nproc) CPUs, same run"
	printf '%-44s %10s %8s\n' "case" "per s" "ratio"
	printf '%-44s %10.0f %8s\n' "pgbench TPC-B-like, 8 clients (baseline)" "$tps" "1.00x"
	printf '%-44s %10s %7.2fx\n' "keeld, 1 node, $runs runs queued->succeeded" "$one" \
		"$(awk -v a="$one" -v b="$tps" 'BEGIN { print a / b }')"
	printf '%-44s %10s %7.2fx\n' "keeld, 3 nodes, $runs runs queued->succeeded" "$three" \
		"$(awk -v a="$three" -v b="$tps" 'BEGIN { print a / b }')"
	echo "runs per node with 3 nodes: $(tr '\n' ' ' <"$tmp/spread-3")"
	echo "(a run is a claim and a claim-fenced finish, each batched over up to 16 runs; a pgbench"
	echo " transaction is 5 statements. Three nodes share the same 2 CPUs and the one server.)"
} | tee "$out"
