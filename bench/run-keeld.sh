#!/usr/bin/env bash
# bench/run-keeld.sh - keeld's scheduler end to end (bench_keeld) beside
# SQLite's own ceiling for the same transactions (bench_store's bare loop),
# measured in the same run:
#   - runs per second from due to finished, for an in-process handler and
#     for /bin/true, as a ratio of the runs/s SQLite alone carries through
#     the same three transactions per run;
#   - the scheduling latency (tick to start) p50/p99/max of 1,000 jobs
#     firing every second, next to the time SQLite alone needs for one
#     such second's transactions (1,000 runs).
#
#   bench/run-keeld.sh             (part of `make bench`)
#
# Environment: KEEL_BENCH_BUILD (default build-bench), KEEL_BENCH_RUNS
# (handler runs, default 20000), KEEL_BENCH_LATENCY_S (default 10), CC.
# Writes bench/results/keeld-<date>.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KEEL_BENCH_BUILD:-$root/build-bench}
case "$build" in /*) ;; *) build=$root/$build ;; esac
runs=${KEEL_BENCH_RUNS:-20000}
secs=${KEEL_BENCH_LATENCY_S:-10}

echo "bench: building in $build" >&2
mkdir -p "$build"
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release &&
       cmake --build "$build" --target bench_store bench_keeld -j "$(nproc)"; } >"$build/bench-keeld-build.log" 2>&1; then
	tail -n 30 "$build/bench-keeld-build.log" >&2
	echo "bench: building bench_keeld failed" >&2
	exit 1
fi
echo "bench: SQLite ceiling (bench_store)" >&2
store=$("$build/bench/bench_store")
echo "bench: keeld, $runs handler runs" >&2
handler=$("$build/bench/bench_keeld" throughput handler "$runs")
echo "bench: keeld, $((runs / 10)) /bin/true runs" >&2
shell=$("$build/bench/bench_keeld" throughput shell "$((runs / 10))")
echo "bench: bare fork+exec+wait of /bin/true" >&2
spawn=$("$build/bench/bench_keeld" spawn "$((runs / 10))")
echo "bench: keeld, 1000 jobs every second for ${secs}s" >&2
latency=$("$build/bench/bench_keeld" latency 1000 "$secs")

report() {
	echo "keeld scheduler benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "machine:  $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "C:        $(${CC:-cc} --version | head -1), CMAKE_BUILD_TYPE=Release"
	echo "SQLite:   $(pkg-config --modversion sqlite3 2>/dev/null || echo '?'), WAL, synchronous=NORMAL"
	echo
	awk '
	{ v[$1] = $2 }
	function r(a, b) { return (v[b] > 0) ? sprintf("%.2fx", v[a] / v[b]) : "-" }
	END {
		printf "%-36s %12s  %s\n", "case", "value", "ratio"
		printf "%-36s %12d\n", "SQLite bare loop, runs/s", v["sqlite_bare"]
		printf "%-36s %12d  %s of bare\n", "SQLite, the store'"'"'s statements, runs/s", v["sqlite_same"], r("sqlite_same", "sqlite_bare")
		printf "%-36s %12d  %s of the store'"'"'s statements\n", "keeld, handler runs/s", v["handler_runs_per_s"], r("handler_runs_per_s", "sqlite_same")
		printf "%-36s %12d\n", "bare fork+exec+wait /bin/true, /s", v["spawn_runs_per_s"]
		printf "%-36s %12d  %s of bare fork+exec\n", "keeld, /bin/true runs/s", v["shell_runs_per_s"], r("shell_runs_per_s", "spawn_runs_per_s")
		floor = (v["sqlite_same"] > 0) ? 1000 * 1000 / v["sqlite_same"] : 0
		printf "%-36s %12.1f\n", "SQLite, 1000 runs'"'"' transactions, ms", floor
		printf "%-36s %12d\n", "keeld latency p50, ms", v["latency_p50_ms"]
		printf "%-36s %12d  %s\n", "keeld latency p99, ms", v["latency_p99_ms"], (floor > 0) ? sprintf("%.2fx of SQLite'"'"'s 1000-run time", v["latency_p99_ms"] / floor) : ""
		printf "%-36s %12d\n", "keeld latency max, ms", v["latency_max_ms"]
		printf "%-36s %12d\n", "runs measured for latency", v["latency_runs"]
	}' <<<"$store
$handler
$shell
$spawn
$latency"
	echo
	echo "runs/s: from due (every run due when the scheduler starts) to stored final;"
	echo "        a run is three transactions (materialised in its tick's batch,"
	echo "        started, finished). keeld commits the ticks of a pass, the"
	echo "        starts of a dispatch and the finishes of a pass in one transaction"
	echo "        each (group commit), so it can pass SQLite's one-run-at-a-time loop."
	echo "bare fork+exec: fork, execve /bin/true, waitpid, from one thread per CPU."
	echo "latency: a run's start minus its tick, over every run of 1000 jobs"
	echo "        firing each second (\"* * * * * *\"), handler runs."
}

mkdir -p "$root/bench/results"
out=$root/bench/results/keeld-$(date '+%Y-%m-%d-%H%M%S').txt
report | tee "$out"
echo
echo "bench: table written to ${out#"$root"/}"
