#!/usr/bin/env bash
# bench/run-obs.sh - builds bench_obs (Release) and prints what a structured
# log record and a metric update cost, next to a bare fprintf of the same
# line and a bare atomic increment, all measured in the same run.
#
#   bench/run-obs.sh               (part of `make bench`)
#
# Environment: KEEL_BENCH_RUN_MS (length of one timed run, default 150),
# KEEL_BENCH_BUILD (build folder, default build-bench), CC.
# No targets: the issue asks for the figures beside their baselines.
# Writes bench/results/obs-<date>.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KEEL_BENCH_BUILD:-$root/build-bench}
case "$build" in /*) ;; *) build=$root/$build ;; esac

echo "bench: building in $build" >&2
mkdir -p "$build"
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release &&
       cmake --build "$build" --target bench_obs -j "$(nproc)"; } >"$build/bench-obs-build.log" 2>&1; then
	tail -n 30 "$build/bench-obs-build.log" >&2
	echo "bench: building bench_obs failed" >&2
	exit 1
fi
raw=$("$build/bench/bench_obs")

report() {
	echo "keel observability benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "machine:  $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "C:        $(${CC:-cc} --version | head -1), CMAKE_BUILD_TYPE=Release"
	echo "method:   ns per call, one thread, best of 5 timed runs; a logger's time"
	echo "          includes writing out what it queued (async: until flushed)"
	echo
	awk '
	{ name[NR] = $1; v[$1] = $2 }
	function ratio(a, b) { return (a in v && b in v && v[b] > 0) ? sprintf("%.2fx", v[a] / v[b]) : "-" }
	END {
		fmt = "%-22s %10s  %-24s %s\n"
		printf fmt, "case", "ns/op", "baseline", "ratio"
		base["log_disabled"] = "fprintf_devnull"
		base["log_json_devnull"] = "fprintf_flush_devnull"
		base["log_console_devnull"] = "fprintf_flush_devnull"
		base["log_json_file"] = "fprintf_flush_file"
		base["log_async_file"] = "fprintf_file"
		base["counter_inc"] = "atomic_increment"
		base["histogram_observe"] = "atomic_increment"
		for (i = 1; i <= NR; i++) {
			c = name[i]
			if (c ~ /^req_/)
				continue
			b = (c in base) ? base[c] : ""
			printf fmt, c, sprintf("%.1f", v[c]), b, b != "" ? ratio(c, b) : ""
		}
		# the caller'"'"'s share of a request: the other work taken off
		if ("req_alone" in v && "req_access_deferred" in v && "req_access_formatted" in v) {
			d = v["req_access_deferred"] - v["req_alone"]
			f = v["req_access_formatted"] - v["req_alone"]
			print ""
			printf fmt, "access record, caller", "ns/op", "baseline", "ratio"
			printf fmt, "deferred", sprintf("%.1f", d), "formatted", (f > 0 ? sprintf("%.2fx", d / f) : "-")
			printf fmt, "formatted", sprintf("%.1f", f), "", ""
		}
	}' <<<"$raw"
	echo
	echo "ratio: keel's ns/op over the baseline's; below 1.00x keel is cheaper."
	echo "log_*: the seed's record (ERROR, module, message, details.error_code, an int)."
	echo "fprintf_*: the same JSON text by fprintf (same timestamp, nothing escaped);"
	echo "_flush: fflush after each line (one write(2) per line, as a synchronous"
	echo "logger does); without it stdio writes 4 KiB at a time."
	echo "log_disabled: a DEBUG record at level INFO (nothing evaluated)."
	echo "counter_inc, histogram_observe: a labelled child's handle, one thread;"
	echo "atomic_increment: a bare relaxed atomic add on one shared word."
	echo "access record, caller: what queuing the access log's record (8 fields)"
	echo "costs the calling thread of an async logger whose writer runs on the"
	echo "other CPU, between stretches of other work (req_alone, $(awk '$1 == "req_alone" {printf "%.0f", $2}' <<<"$raw") ns, taken"
	echo "off): deferred = keel_log_write_deferred (the writer makes the JSON),"
	echo "formatted = keel_log_write (the caller makes it)."
}

mkdir -p "$root/bench/results"
out=$root/bench/results/obs-$(date '+%Y-%m-%d-%H%M%S').txt
report | tee "$out"
echo
echo "bench: table written to ${out#"$root"/}"
