#!/usr/bin/env bash
# bench/run-store.sh - builds bench_store (Release) and prints how many runs
# per second keeld's SQLite store carries through their three transactions
# (materialise, start, finish), next to SQLite alone running the minimum
# and the very statements of the store, all measured in the same run.
#
#   bench/run-store.sh             (part of `make bench`)
#
# Environment: KEEL_BENCH_RUN_MS (length of one timed run, default 150),
# KEEL_BENCH_BUILD (build folder, default build-bench), CC. The databases
# live in a temporary directory under /tmp, removed at the end.
# No targets: the issue asks for the figures beside their baselines.
# Writes bench/results/store-<date>.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KEEL_BENCH_BUILD:-$root/build-bench}
case "$build" in /*) ;; *) build=$root/$build ;; esac

echo "bench: building in $build" >&2
mkdir -p "$build"
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release &&
       cmake --build "$build" --target bench_store -j "$(nproc)"; } >"$build/bench-store-build.log" 2>&1; then
	tail -n 30 "$build/bench-store-build.log" >&2
	echo "bench: building bench_store failed" >&2
	exit 1
fi
raw=$("$build/bench/bench_store")

report() {
	echo "keel store benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "machine:  $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "C:        $(${CC:-cc} --version | head -1), CMAKE_BUILD_TYPE=Release"
	echo "SQLite:   $(pkg-config --modversion sqlite3 2>/dev/null || echo '?'), WAL; /tmp on $(df -T /tmp | awk 'NR == 2 { print $2 }')"
	echo "method:   runs/s, one thread, a run = 3 transactions; best of 5 timed"
	echo "          runs of each case, the cases taking turns"
	echo
	awk '
	{ name[NR] = $1; v[$1] = $2 }
	function ratio(a, b) { return (a in v && b in v && v[b] > 0) ? sprintf("%.2fx", v[a] / v[b]) : "-" }
	END {
		fmt = "%-14s %10s %10s  %-14s %s\n"
		printf fmt, "case", "runs/s", "us/run", "baseline", "ratio"
		base["sqlite_same"] = "sqlite_bare"
		base["keel"] = "sqlite_same"
		base["keel_full"] = "keel"
		for (i = 1; i <= NR; i++) {
			c = name[i]
			b = (c in base) ? base[c] : ""
			us = (v[c] > 0) ? sprintf("%.1f", 1e6 / v[c]) : "-"
			printf fmt, c, v[c], us, b, (b != "") ? ratio(c, b) : ""
		}
		if (("keel" in v) && ("sqlite_bare" in v))
			printf "\nkeel / sqlite_bare: %s\n", ratio("keel", "sqlite_bare")
	}' <<<"$raw"
	echo
	echo "ratio: the case's runs/s over the baseline's; below 1.00x it is slower."
	echo "sqlite_bare: SQLite alone, the minimum: INSERT queued; UPDATE running;"
	echo "             UPDATE succeeded, each its own (autocommit) transaction."
	echo "sqlite_same: SQLite alone, the store's statements: BEGIN IMMEDIATE,"
	echo "             UPDATE jobs.last_tick, INSERT, COMMIT; UPDATE running;"
	echo "             BEGIN IMMEDIATE, UPDATE succeeded, COMMIT."
	echo "keel:        keel_store_ticks, keel_store_run_start, keel_store_run_finish"
	echo "             (synchronous=NORMAL, keeld's default)."
	echo "keel_full:   the same with sync_full: an fsync at every commit."
}

mkdir -p "$root/bench/results"
out=$root/bench/results/store-$(date '+%Y-%m-%d-%H%M%S').txt
report | tee "$out"
echo
echo "bench: table written to ${out#"$root"/}"
