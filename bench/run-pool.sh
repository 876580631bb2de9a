#!/usr/bin/env bash
# bench/run-pool.sh - builds keel's pool benchmark and its Go twin, runs both
# and prints one table: tasks/s and ns/task of empty tasks through keel's
# worker pool, a plain pthread pool, a Go worker pool and Go's
# goroutine-per-task, with the ratios and the targets:
#   keel's pool >= 0.9x the plain pool's tasks/s;
#   keel's pool ahead of Go (more tasks/s), for each of Go's two forms.
#
#   bench/run-pool.sh               (part of `make bench`)
#
# Environment:
#   KEEL_BENCH_RUN_MS   length of one timed run of a case (default 150)
#   KEEL_BENCH_ROUNDS   rounds of all cases (default 1); with more, each case's
#                       figure is the median of its rounds (see bench/README.md)
#   KEEL_BENCH_BUILD    build folder (default build-bench)
#   GO                  the go command (default /usr/lib/go-1.19/bin/go)
#   CC                  the C compiler, as for any CMake build
#
# The table also goes to bench/results/pool-<date>.txt. Targets are
# reported, never enforced: the exit status is 0 whenever both benchmarks
# ran, whatever the numbers.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- build and machine ---------------------------------------------------------
build_both bench_pool poolbench "$build/bench-pool-build.log"
describe_machine

# --- run ---------------------------------------------------------------------
# Case by case, keel, the plain pool, then Go's two forms, so that both
# sides of a ratio see the machine in the same state.
rounds=${KEEL_BENCH_ROUNDS:-1}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
	echo "bench: KEEL_BENCH_ROUNDS must be a positive number" >&2
	exit 2
fi
echo "bench: running each case with bench_pool (keel, plain), then poolbench (Go), $rounds round(s)"
out_all=
for ((r = 0; r < rounds; r++)); do
for p in 1p 2p; do
	for c in "keel_pool_$p" "plain_pool_$p"; do
		if ! line=$("$build/bench/bench_pool" "$c") || [[ -z $line ]]; then
			echo "bench: bench_pool $c failed" >&2
			exit 1
		fi
		out_all+=$line$'\n'
	done
	for c in "go_pool_$p" "go_spawn_$p"; do
		if ! line=$("$gobuild/poolbench" "$c") || [[ -z $line ]]; then
			echo "bench: poolbench $c (Go) failed" >&2
			exit 1
		fi
		out_all+=$line$'\n'
	done
done
done

table() {
	echo "keel pool benchmark, $stamp"
	echo "machine:  $(nproc) CPUs, ${cpu:-$(uname -m)}, Linux $(uname -r)"
	echo "C:        $cc_version (CMAKE_BUILD_TYPE=Release), ${libc:-libc unknown}"
	echo "Go:       $go_version"
	echo "method:   empty tasks, 2 workers, queue 1024, blocking submit; tasks/s of the"
	echo "          best of 5 timed runs after a calibration run; 1p/2p: submitted"
	echo "          from 1 or 2 threads (goroutines); each case keel, plain, Go"
	if ((rounds > 1)); then
		echo "          $rounds rounds: each figure is the median of the rounds"
	fi
	echo
	awk -v all="$out_all" '
	function ratio(a, b) {
		return (a in v && b in v && v[b] > 0) ? sprintf("%.2fx", v[a] / v[b]) : "-"
	}
	BEGIN {
		# The rounds of each case, kept sorted (insertion), then the median.
		n = split(all, lines, "\n")
		for (i = 1; i <= n; i++) {
			split(lines[i], f, " ")
			if (f[1] == "")
				continue
			if (!(f[1] in cnt))
				order[++cases] = f[1]
			k = ++cnt[f[1]]
			for (j = k; j > 1 && rr[f[1], j - 1] > f[2] + 0; j--)
				rr[f[1], j] = rr[f[1], j - 1]
			rr[f[1], j] = f[2] + 0
		}
		for (i = 1; i <= cases; i++) {
			c = order[i]
			k = cnt[c]
			v[c] = k % 2 ? rr[c, (k + 1) / 2] : (rr[c, k / 2] + rr[c, k / 2 + 1]) / 2
		}
		fmt = "%-14s %12s %9s %9s %10s %11s\n"
		printf fmt, "case", "tasks/s", "ns/task", "vs plain", "vs Go pool", "vs Go spawn"
		for (i = 1; i <= cases; i++) {
			c = order[i]
			p = substr(c, length(c) - 1)
			printf fmt, c, sprintf("%.0f", v[c]),
				sprintf("%.1f", v[c] > 0 ? 1e9 / v[c] : 0),
				ratio(c, "plain_pool_" p), ratio(c, "go_pool_" p),
				ratio(c, "go_spawn_" p)
		}
		print ""
		fmt = "%-44s %8s  %s\n"
		printf fmt, "target", "measured", "result"
		for (k = 1; k <= 2; k++) {
			p = k "p"
			keel = "keel_pool_" p
			if (!(keel in v))
				continue
			split("plain_pool_ go_pool_ go_spawn_", others, " ")
			for (j = 1; j <= 3; j++) {
				o = others[j] p
				if (!(o in v))
					continue
				r = v[keel] / v[o]
				if (j == 1) {
					t = sprintf("%s >= 0.9x %s", keel, o)
					res = r >= 0.9 ? "met" : "missed"
				} else {
					t = sprintf("%s ahead of Go (%s)", keel, o)
					res = r > 1.0 ? "met" : "missed"
				}
				printf fmt, t, sprintf("%.2fx", r), res
			}
		}
	}'
	echo
	echo "Ratios are tasks/s over tasks/s: above 1.00x the first is faster."
	echo "keel_pool: keel_pool_submit (KEEL_POOL_BLOCK), each task in a keel scope."
	echo "plain_pool: ring + mutex + 2 condvars, no recovery, same workers and queue."
	echo "go_pool: 2 goroutines ranging over a chan func() of capacity 1024, each task"
	echo "behind defer func() { recover() }(); go_spawn: go func() { defer wg.Done();"
	echo "defer func() { recover() }(); task() }() per task, waited with a WaitGroup."
}

mkdir -p "$root/bench/results"
out=$root/bench/results/pool-$(date '+%Y-%m-%d-%H%M%S').txt
echo
table | tee "$out"
echo
echo "bench: table written to ${out#"$root"/}"
