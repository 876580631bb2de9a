#!/usr/bin/env bash
# bench/run-http.sh - requests per second that wrk gets from keel's HTTP
# server, next to bare libmicrohttpd and Go's net/http, all in the same run,
# with each server's own CPU time per request, and the ratios with the
# issue's target in req/s and in requests per CPU-second of the server:
#   keel_full (the whole middleware chain) >= 0.9x bare libmicrohttpd, hello.
#
#   bench/run-http.sh               (part of `make bench`)
#
# The servers (each on 127.0.0.1, on a port the kernel picks):
#   bare_mhd      bench_http_bare epoll: MHD, one epoll thread + TURBO (keel's
#                 default flags); /sleep sleeps on that thread
#   bare_mhd_tpc  bench_http_bare tpc: MHD, a thread per connection
#   keel_bare     bench_http_keel bare: keel's server, no middleware
#   keel_full     bench_http_keel full: recover, trace, access_log (JSON to
#                 /dev/null, asynchronous), metrics
#   keel_full_synclog  the same with a synchronous access log (one write(2)
#                 per request on the event thread)
#   go            go/httpbench: net/http + a deferred-recover middleware
# Each is started in turn, loaded on GET /hello (the handler answers at once;
# the server held to KEEL_BENCH_HTTP_CPU % of one CPU, so that it and not
# wrk is what runs out) and GET /sleep (it sleeps 10 ms; keel runs it on its pool), then, unless
# KEEL_BENCH_HTTP_MIXED=0, on both at once: one connection asking /hello
# while the others keep /sleep busy, to show whether a slow handler stalls
# the rest. Then the server is stopped (SIGTERM) and must exit 0.
#
# Environment:
#   KEEL_BENCH_HTTP_THREADS   wrk threads (default 1)
#   KEEL_BENCH_HTTP_CONNS     connections for /hello (default 64)
#   KEEL_BENCH_HTTP_SLEEP_CONNS  connections for /sleep (default 64)
#   KEEL_BENCH_HTTP_DURATION  one measurement (default 5s)
#   KEEL_BENCH_HTTP_WARMUP    wrk run before each measurement (default 1s)
#   KEEL_BENCH_HTTP_TIMEOUT   wrk's request timeout (default 5s)
#   KEEL_BENCH_HTTP_MIXED     1 (default): also the mixed load; 0: not
#   KEEL_BENCH_HTTP_CASES     servers to run (default: all five, in order)
#   KEEL_BENCH_HTTP_POOL      keel's pool workers for /sleep (default 64)
#   KEEL_BENCH_HTTP_CPU       the CPU a server may use on /hello, in percent
#                             of one CPU (default 50; 0: no limit), set with
#                             a cgroup: the server, not wrk, then runs out,
#                             and req/s compare the servers (needs root and
#                             the cgroup cpu controller; without, the rows
#                             run unlimited and the table says so)
#   KEEL_BENCH_HTTP_QUIET     the share of the CPUs (percent) the rest of the
#                             machine may use during a /hello row (default
#                             15); a row over it is measured again
#   KEEL_BENCH_HTTP_RETRIES   how many more times (default 3; the quietest
#                             try is kept); 0: each row once
#   KEEL_BENCH_ROUNDS         rounds of everything (default 1); with more,
#                             each figure is the median of its rounds
#   KEEL_BENCH_HTTP_PAIRS     rounds of the paired /hello runs (default 10,
#                             an odd number is rounded up; 0: none), see below
#   KEEL_BENCH_HTTP_PAIR_CPU  each paired server's budget, percent of one CPU
#                             (default 20)
#   KEEL_BENCH_HTTP_PAIR_DURATION  one paired measurement (default 3s)
#   KEEL_BENCH_BUILD          build folder (default build-bench)
#   GO, CC                    as for bench/run.sh
#
# Then the paired runs, which the /hello ratios are best read from: the
# rows above run one server after the other, and on a shared host the CPU a
# request costs drifts by several per cent within minutes, more than the
# differences measured. A pair runs two servers at once, both on the last
# CPU, each in a cgroup of its own with the same budget, each loaded by its
# own wrk on CPU 0; whatever the host does then, it does to both. Each
# round starts both afresh and swaps which goes first (start order, port,
# cgroup: worth a few per cent on their own), and the ratio is the
# geometric mean of the rounds, from which that advantage cancels out. Pairs: keel_full / bare_mhd (the target), keel_bare /
# bare_mhd, keel_full / keel_bare and keel_full / go, of the cases run. They
# need 2 CPUs, taskset and the cgroup budget; without, they are left out.
#
# The table also goes to bench/results/http-<date>.txt. Targets are
# reported, never enforced: the exit status is 0 whenever every server
# started, answered 200 to every request wrk counted, and stopped cleanly.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v wrk >/dev/null; then
	echo "bench: wrk is not installed; the HTTP benchmark loads the servers with it." >&2
	echo "bench: install it with: scripts/deps.sh bench   (Debian package wrk)" >&2
	exit 2
fi

# One wrk thread: on 2 CPUs that leaves one for the server's event thread,
# which is what all three servers are measured on (more wrk threads steal it).
threads=${KEEL_BENCH_HTTP_THREADS:-1}
conns=${KEEL_BENCH_HTTP_CONNS:-64}
sleep_conns=${KEEL_BENCH_HTTP_SLEEP_CONNS:-64}
duration=${KEEL_BENCH_HTTP_DURATION:-5s}
warmup=${KEEL_BENCH_HTTP_WARMUP:-1s}
timeout=${KEEL_BENCH_HTTP_TIMEOUT:-5s}
mixed=${KEEL_BENCH_HTTP_MIXED:-1}
quiet=${KEEL_BENCH_HTTP_QUIET:-15}
retries=${KEEL_BENCH_HTTP_RETRIES:-3}
rounds=${KEEL_BENCH_ROUNDS:-1}
cpu_budget=${KEEL_BENCH_HTTP_CPU:-50}
pairs=${KEEL_BENCH_HTTP_PAIRS:-10}
pair_budget=${KEEL_BENCH_HTTP_PAIR_CPU:-20}
pair_duration=${KEEL_BENCH_HTTP_PAIR_DURATION:-3s}
read -r -a cases <<<"${KEEL_BENCH_HTTP_CASES:-bare_mhd bare_mhd_tpc keel_bare keel_full keel_full_synclog go}"

for v in threads conns sleep_conns rounds; do
	if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
		echo "bench: $v (${!v}) must be a positive number" >&2
		exit 2
	fi
done
if ! [[ $pairs =~ ^[0-9]+$ ]]; then
	echo "bench: pairs ($pairs) must be a number" >&2
	exit 2
fi
# Each server goes first in half the rounds.
pairs=$((pairs + pairs % 2))
if ! [[ $pair_budget =~ ^[1-9][0-9]*$ ]] || ((pair_budget > 50)); then
	echo "bench: pair_budget ($pair_budget) must be a number from 1 to 50" >&2
	exit 2
fi
for v in quiet retries cpu_budget; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} > 100)); then
		echo "bench: $v (${!v}) must be a number from 0 to 100" >&2
		exit 2
	fi
done
for v in duration warmup timeout pair_duration; do
	# wrk takes whole seconds, minutes or hours ("500ms" is refused)
	if ! [[ ${!v} =~ ^[1-9][0-9]*(s|m|h)?$ ]]; then
		echo "bench: $v (${!v}) must be a wrk duration such as 5s, 2m or 1h" >&2
		exit 2
	fi
done
for c in "${cases[@]}"; do
	case $c in
	bare_mhd | bare_mhd_tpc | keel_bare | keel_full | keel_full_synclog | go) ;;
	*) echo "bench: unknown case '$c' (known: bare_mhd bare_mhd_tpc keel_bare keel_full keel_full_synclog go)" >&2; exit 2 ;;
	esac
done

# --- build and machine ---------------------------------------------------------
# Only what the chosen cases need.
targets=()
[[ " ${cases[*]} " == *" bare_mhd"* ]] && targets+=(bench_http_bare)
[[ " ${cases[*]} " == *" keel_"* ]] && targets+=(bench_http_keel)
log=$build/bench-http-build.log
echo "bench: building in $build (log: $log)"
: >"$log"
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release &&
       { ((${#targets[@]} == 0)) ||
         cmake --build "$build" --target "${targets[@]}" -j "$(nproc)"; }; } >>"$log" 2>&1; then
	tail -n 30 "$log" >&2
	echo "bench: building ${targets[*]} failed (see $log)" >&2
	exit 1
fi
if [[ " ${cases[*]} " == *" go "* ]] &&
   ! (cd "$root/bench/go" && gorun build -o "$gobuild/httpbench" ./httpbench) >>"$log" 2>&1; then
	tail -n 30 "$log" >&2
	echo "bench: building the Go benchmark failed (see $log)" >&2
	exit 1
fi
describe_machine
mhd_version=$(pkg-config --modversion libmicrohttpd 2>/dev/null || echo unknown)
wrk_version=$({ wrk -v 2>&1 || true; } | awk 'NR == 1 {print $1, $2}')

# --- servers -----------------------------------------------------------------
# Every server started is recorded in $server_pid until it has been stopped;
# the trap stops whatever is left, whatever went wrong.
work=$(mktemp -d "${TMPDIR:-/tmp}/keel-bench-http-XXXXXX")
server_pid=
loader_pid=
pair_pids=

cleanup() {
	local p
	for p in $loader_pid $server_pid $pair_pids; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in $loader_pid $server_pid $pair_pids; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$work"
	cgroup_remove
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

server_cmd() {
	case $1 in
	bare_mhd) echo "$build/bench/bench_http_bare epoll" ;;
	bare_mhd_tpc) echo "$build/bench/bench_http_bare tpc" ;;
	keel_bare) echo "$build/bench/bench_http_keel bare" ;;
	keel_full) echo "$build/bench/bench_http_keel full" ;;
	keel_full_synclog) echo "$build/bench/bench_http_keel full_synclog" ;;
	go) echo "$gobuild/httpbench" ;;
	esac
}

# --- the CPU budget of the /hello rows ---------------------------------------
# On 2 CPUs, wrk (two epoll_ctl, a write and a read per request) needs about
# as much CPU per request as the servers, so unlimited hello rows run wrk
# out of CPU first and their req/s say little about the server. With a
# budget smaller than what wrk can drive, every server is what runs out, on
# the same budget: req/s is then the server's throughput on that much CPU.
# The budget is a cgroup's CPU bandwidth (cgroup v1 cpu controller, or v2
# cpu.max), 10 ms periods; it is lifted for /sleep and the mixed load.
cg_dir='' cg_kind='' pair_cg=()
# cg_make NAME: a cgroup with the cpu controller, its path in $cg_made
# (empty when there is none to be had).
cg_make() {
	local d
	cg_made=
	if [[ -w /sys/fs/cgroup/cpu/cgroup.procs ]]; then
		d=/sys/fs/cgroup/cpu/$1
		mkdir -p "$d" 2>/dev/null && echo 10000 >"$d/cpu.cfs_period_us" 2>/dev/null &&
			cg_made=$d cg_kind=v1
	elif [[ -w /sys/fs/cgroup/cgroup.subtree_control ]] &&
	     grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
		d=/sys/fs/cgroup/$1
		{ grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
		  echo +cpu >/sys/fs/cgroup/cgroup.subtree_control; } 2>/dev/null &&
			mkdir -p "$d" 2>/dev/null && cg_made=$d cg_kind=v2
	fi
	return 0
}

# The hello rows' cgroup, and the two of the paired runs.
cgroup_setup() {
	if ((cpu_budget > 0)); then
		cg_make "keel-bench-http-$$"
		cg_dir=$cg_made
		if [[ -z $cg_dir ]]; then
			echo "bench: no CPU budget for the hello rows (it needs root and the cgroup cpu controller);" \
				"they run unlimited, and wrk may be what runs out" >&2
			cpu_budget=0
		fi
	fi
	((pairs > 0)) || return 0
	if ((ncpu < 2)) || ! command -v taskset >/dev/null; then
		echo "bench: no paired runs: they need 2 CPUs and taskset (util-linux)" >&2
		pairs=0
		return 0
	fi
	cg_make "keel-bench-http-$$-a" && pair_cg[0]=$cg_made
	cg_make "keel-bench-http-$$-b" && pair_cg[1]=$cg_made
	if [[ -z ${pair_cg[0]} || -z ${pair_cg[1]} ]]; then
		echo "bench: no paired runs: they need root and the cgroup cpu controller" >&2
		pairs=0
		return 0
	fi
	cg_limit "${pair_cg[0]}" "$pair_budget"
	cg_limit "${pair_cg[1]}" "$pair_budget"
}

# cg_limit DIR PERCENT: the budget of the processes in DIR (0: none).
cg_limit() {
	[[ -n $1 ]] || return 0
	if [[ $cg_kind == v1 ]]; then
		echo $(($2 > 0 ? $2 * 100 : -1)) >"$1/cpu.cfs_quota_us"
	else
		if (($2 > 0)); then echo "$(($2 * 100)) 10000" >"$1/cpu.max"
		else echo "max 10000" >"$1/cpu.max"; fi
	fi
}

# cgroup_limit PERCENT: the budget of the hello rows' server.
cgroup_limit() {
	cg_limit "$cg_dir" "$1"
}

# cg_join DIR PID: the process, with all its threads (those it starts
# later too), into DIR.
cg_join() {
	[[ -n $1 ]] && echo "$2" >"$1/cgroup.procs"
	return 0
}

cgroup_remove() {
	local d
	for d in "$cg_dir" "${pair_cg[@]}"; do
		[[ -n $d ]] && rmdir "$d" 2>/dev/null
	done
	return 0
}

# start_server CASE [CGROUP CPUS]: starts it (in the hello rows' cgroup,
# or CGROUP, on CPUS when given), waits (up to 10 s) for "ready <port>" and
# sets $server_pid and $port.
start_server() {
	local c=$1 cg=${2-$cg_dir} i word p
	local -a cmd
	read -r -a cmd <<<"$(server_cmd "$c")"
	[[ -n ${3-} ]] && cmd=(taskset -c "$3" "${cmd[@]}")
	# The previous round's files go first: the redirection below empties
	# them only once the child runs, and the loop must not read the old
	# "ready <port>" before that.
	rm -f "$work/$c.out" "$work/$c.err"
	"${cmd[@]}" >"$work/$c.out" 2>"$work/$c.err" &
	server_pid=$!
	cg_join "$cg" "$server_pid"
	port=
	for ((i = 0; i < 200; i++)); do
		if [[ -s $work/$c.out ]] && read -r word p <"$work/$c.out" && [[ $word == ready ]]; then
			port=$p
			return 0
		fi
		if ! kill -0 "$server_pid" 2>/dev/null; then
			break
		fi
		sleep 0.05
	done
	echo "bench: $c did not start:" >&2
	cat "$work/$c.err" >&2
	exit 1
}

# stop_server CASE COUNTED: SIGTERM, then it must exit 0 within 15 s (keel
# and Go wait up to 5 s for requests in flight) and say it served at least
# the COUNTED requests wrk counted as done (wrk's totals leave out the
# warm-ups and the requests cut at the end), so that no figure can come
# from a server that did nothing.
stop_server() {
	local c=$1 i st=0 served
	kill -TERM "$server_pid"
	for ((i = 0; i < 300; i++)); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$server_pid" 2>/dev/null; then
		kill -KILL "$server_pid" 2>/dev/null || true
		echo "bench: $c did not stop on SIGTERM" >&2
		wait "$server_pid" 2>/dev/null || true
		server_pid=
		exit 1
	fi
	wait "$server_pid" || st=$?
	server_pid=
	if ((st != 0)); then
		echo "bench: $c exited with status $st:" >&2
		cat "$work/$c.err" >&2
		exit 1
	fi
	served=$(awk '$1 == "served" { print $2 }' "$work/$c.err")
	if ! [[ $served =~ ^[0-9]+$ ]] || ((served < $2)); then
		echo "bench: $c served ${served:-?} requests, wrk counted $2" >&2
		exit 1
	fi
}

# wrk_run OUT CONNS PATH DURATION [THREADS]: one wrk run, its output in OUT.
# With $wrk_cpu set, wrk runs on that CPU only (the paired runs).
wrk_run() {
	local -a pin=()
	[[ -n ${wrk_cpu-} ]] && pin=(taskset -c "$wrk_cpu")
	if ! "${pin[@]}" wrk -t"${5:-$threads}" -c"$2" -d"$4" --timeout "$timeout" --latency \
		"http://127.0.0.1:$port$3" >"$1" 2>&1; then
		echo "bench: wrk failed:" >&2
		cat "$1" >&2
		return 1
	fi
}

# parse OUT: "<req/s> <p50 ms> <p99 ms> <errors> <requests>", or fails
# (saying why) when wrk failed or a response was not 2xx: the servers
# answer 200 to every request wrk makes, so anything else is a broken run.
parse() {
	awk '
	function ms(s) {
		if (s ~ /us$/) return substr(s, 1, length(s) - 2) / 1000
		if (s ~ /ms$/) return substr(s, 1, length(s) - 2) + 0
		if (s ~ /m$/) return substr(s, 1, length(s) - 1) * 60000
		if (s ~ /s$/) return substr(s, 1, length(s) - 1) * 1000
		return -1
	}
	/^Requests\/sec:/ { rps = $2 }
	/^ +50%/ { p50 = ms($2) }
	/^ +99%/ { p99 = ms($2) }
	/requests in/ { n = $1 }
	/Socket errors:/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
	/Non-2xx or 3xx responses:/ { bad = $NF }
	END {
		if (rps == "" || p50 == "" || p99 == "" || n == "") {
			print "no results from wrk" > "/dev/stderr"; exit 1
		}
		if (bad > 0) {
			print bad " responses were not 2xx" > "/dev/stderr"; exit 1
		}
		if (n == 0) {
			print "no request completed" > "/dev/stderr"; exit 1
		}
		printf "%s %.3f %.3f %d %d\n", rps, p50, p99, err + 0, n
	}' "$1"
}

# --- the rest of the machine ----------------------------------------------
# The CPU time everything but the server and wrk used during a run: all
# busy time (/proc/stat) minus the server's (/proc/<pid>/stat, its threads
# included) minus wrk's (the shell's children, from `times`), in clock
# ticks. On a machine shared with builds and tests a run that lost the
# CPUs to them measures them, not the server.
hz=$(getconf CLK_TCK)
ncpu=$(nproc)

busy_ticks() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# server_ticks [PID]: the CPU time of the server (or of PID) so far.
server_ticks() {
	awk '{ print $14 + $15 }' "/proc/${1:-$server_pid}/stat"
}

# cpu_share PID TICKS0 DURATION: PID's CPU time since TICKS0 over DURATION
# (wrk's form), in percent of one CPU.
cpu_share() {
	awk -v t0="$2" -v hz="$hz" -v d="$(seconds "$3")" \
		'{ printf "%.0f\n", ($14 + $15 - t0) / (hz * d) * 100 }' "/proc/$1/stat"
}

# The user + system time of this shell's waited-for children (wrk), in
# ticks, into the variable named $1. `times` runs in this shell, not in a
# $(...) subshell, whose children would be its own.
children_ticks() {
	times >"$work/times"
	printf -v "$1" '%s' "$(awk -v hz="$hz" 'NR == 2 {
		for (i = 1; i <= 2; i++) {
			split($i, ms, /[ms]/)
			s += ms[1] * 60 + ms[2]
		}
		printf "%d\n", s * hz + 0.5
	}' "$work/times")"
}

# wrk's duration ("5s", "2m", "1h", "5") in seconds.
seconds() {
	awk -v d="$1" 'BEGIN {
		if (d ~ /h$/) print substr(d, 1, length(d) - 1) * 3600
		else if (d ~ /m$/) print substr(d, 1, length(d) - 1) * 60
		else { sub(/s$/, "", d); print d + 0 }
	}'
}

# measure CASE ROUTE CONNS PATH TRIES: warm-up, then the measured run,
# again (up to TRIES times in all) while the rest of the machine used more
# than $quiet % of the CPUs during it; the quietest try counts. Appends
# "<case> <route> <req/s> <p50> <p99> <errors> <others %>" to $results.
measure() {
	local c=$1 route=$2 n=$3 path=$4 tries=$5 f line try b0 b1 s0 s1 w0 w1
	local others best='' best_others=101
	f=$work/$c-$route.wrk
	for ((try = 1; try <= tries; try++)); do
		wrk_run "$f" "$n" "$path" "$warmup"
		children_ticks w0
		b0=$(busy_ticks) s0=$(server_ticks)
		wrk_run "$f" "$n" "$path" "$duration"
		b1=$(busy_ticks) s1=$(server_ticks)
		children_ticks w1
		others=$((b1 - b0 - (s1 - s0) - (w1 - w0)))
		others=$(awk -v o="$others" -v hz="$hz" -v n="$ncpu" -v d="$(seconds "$duration")" \
			'BEGIN { x = o / (hz * n * d) * 100; printf "%d\n", x < 0 ? 0 : x + 0.5 }')
		if ! line=$(parse "$f"); then
			echo "bench: $c $route: bad wrk run:" >&2
			cat "$f" >&2
			exit 1
		fi
		# The server's own CPU time in the row: its share of one CPU,
		# and per request (all its threads, the log writer's included).
		# When wrk is what runs out of CPU, req/s hardly tell the servers
		# apart; the CPU a request costs still does.
		line="${line% *} $(awk -v t="$((s1 - s0))" -v hz="$hz" -v d="$(seconds "$duration")" \
			-v n="${line##* }" 'BEGIN { printf "%.1f %.2f", t / (hz * d) * 100, t / hz * 1e6 / n }') ${line##* }"
		total=$((total + ${line##* }))
		if ((others < best_others)); then
			best=$line best_others=$others
		fi
		if ((others <= quiet || try == tries)); then
			break
		fi
		echo "bench: $c $route: the rest of the machine used $others % of the CPUs; again" >&2
	done
	results+="$c $route ${best% *} $best_others"$'\n'
}

# measure_mixed CASE: /sleep loaded by SLEEP_CONNS - 1 connections while one
# more connection asks /hello, both for DURATION; records mixed_hello and
# mixed_sleep.
measure_mixed() {
	local c=$1 ls lh
	local fs=$work/$c-mixed-sleep.wrk fh=$work/$c-mixed-hello.wrk
	local n=$((sleep_conns > 1 ? sleep_conns - 1 : 1))
	wrk_run "$fs" "$n" /sleep "$warmup"
	wrk_run "$fs" "$n" /sleep "$duration" &
	loader_pid=$!
	wrk_run "$fh" 1 /hello "$duration" 1
	wait "$loader_pid"
	loader_pid=
	if ! lh=$(parse "$fh") || ! ls=$(parse "$fs"); then
		echo "bench: $c mixed: bad wrk run:" >&2
		cat "$fh" "$fs" >&2
		exit 1
	fi
	results+="$c mixed_hello ${lh% *} -1 -1 -1"$'\n'"$c mixed_sleep ${ls% *} -1 -1 -1"$'\n'
	total=$((total + ${lh##* } + ${ls##* }))
}

# --- paired runs -------------------------------------------------------------
# pair_wrk OUT PORT DURATION: one wrk thread on /hello of PORT, on CPU 0.
pair_wrk() {
	port=$2 wrk_cpu=0 wrk_run "$1" "$conns" /hello "$3" 1
}

# pair_round X Y SWAP: X and Y at once (Y started first when SWAP is 1),
# each on the last CPU in a cgroup of its own at $pair_budget %, each
# loaded by its own wrk on CPU 0; appends "X Y <req/s of X> <CPU % of X>
# <req/s of Y> <CPU % of Y>" to $pair_results.
pair_round() {
	local x=$1 y=$2 first=$1 second=$2 srv_cpu=$((ncpu - 1))
	local p1 p2 port1 port2 w1 w2 l1 l2 rx ry d bad t1 t2
	if (($3)); then first=$2 second=$1; fi
	start_server "$first" "${pair_cg[0]}" "$srv_cpu"
	p1=$server_pid port1=$port
	pair_pids=$p1 server_pid=
	start_server "$second" "${pair_cg[1]}" "$srv_cpu"
	p2=$server_pid port2=$port
	pair_pids="$p1 $p2" server_pid=
	for d in "$warmup" "$pair_duration"; do
		t1=$(server_ticks "$p1") t2=$(server_ticks "$p2")
		pair_wrk "$work/pair1.wrk" "$port1" "$d" & w1=$!
		pair_wrk "$work/pair2.wrk" "$port2" "$d" & w2=$!
		bad=0
		wait "$w1" || bad=1
		wait "$w2" || bad=1
		((bad == 0)) || exit 1
	done
	# Each server's CPU over the measured run, percent of one CPU: at its
	# budget when the server, not its wrk, is what ran out.
	t1=$(cpu_share "$p1" "$t1" "$pair_duration")
	t2=$(cpu_share "$p2" "$t2" "$pair_duration")
	if ! l1=$(parse "$work/pair1.wrk") || ! l2=$(parse "$work/pair2.wrk"); then
		echo "bench: pair $x / $y: bad wrk run:" >&2
		cat "$work/pair1.wrk" "$work/pair2.wrk" >&2
		exit 1
	fi
	server_pid=$p1 pair_pids=$p2
	stop_server "$first" "${l1##* }"
	server_pid=$p2 pair_pids=
	stop_server "$second" "${l2##* }"
	rx="${l1%% *} $t1" ry="${l2%% *} $t2"
	if (($3)); then rx="${l2%% *} $t2" ry="${l1%% *} $t1"; fi
	pair_results+="$x $y $rx $ry"$'\n'
}

# The pairs of the cases run, the target's first.
pair_list() {
	local -a want=("keel_full bare_mhd" "keel_bare bare_mhd" "keel_full keel_bare" "keel_full go")
	local w
	for w in "${want[@]}"; do
		if [[ " ${cases[*]} " == *" ${w% *} "* && " ${cases[*]} " == *" ${w#* } "* ]]; then
			echo "$w"
		fi
	done
}

# --- run ---------------------------------------------------------------------
cgroup_setup
# Server by server, each loaded the same way, so that both sides of a ratio
# see the machine in about the same state.
echo "bench: wrk -t$threads -d$duration (warm-up $warmup): /hello -c$conns, /sleep -c$sleep_conns," \
	"servers: ${cases[*]}, $rounds round(s)"
results=
for ((r = 0; r < rounds; r++)); do
	for c in "${cases[@]}"; do
		echo "bench: $c" >&2
		total=0
		start_server "$c"
		# Only /hello is measured again when the machine was busy: the
		# sleeping requests leave the CPUs mostly idle.
		cgroup_limit "$cpu_budget"
		measure "$c" hello "$conns" /hello $((retries + 1))
		cgroup_limit 0
		measure "$c" sleep "$sleep_conns" /sleep 1
		if [[ $mixed != 0 ]]; then
			measure_mixed "$c"
		fi
		stop_server "$c" "$total"
	done
done

pair_results=
if ((pairs > 0)); then
	while read -r x y; do
		[[ -n $x ]] || continue
		for ((r = 0; r < pairs; r++)); do
			echo "bench: pair $x / $y, round $((r + 1)) of $pairs" >&2
			pair_round "$x" "$y" $((r % 2))
		done
	done < <(pair_list)
fi

table() {
	echo "keel HTTP benchmark, $stamp"
	echo "machine:  $(nproc) CPUs, ${cpu:-$(uname -m)}, Linux $(uname -r)"
	echo "C:        $cc_version (CMAKE_BUILD_TYPE=Release), ${libc:-libc unknown}"
	echo "          libmicrohttpd $mhd_version"
	echo "Go:       $go_version"
	echo "load:     $wrk_version -t$threads --latency, ${duration} per row after a ${warmup} warm-up;"
	echo "          /hello with $conns connections, /sleep (10 ms) with $sleep_conns; wrk runs on"
	echo "          the same CPUs as the server"
	if ((rounds > 1)); then
		echo "          $rounds rounds: each figure is the median of the rounds"
	fi
	if ((cpu_budget > 0)); then
		echo "budget:   each server may use ${cpu_budget}% of one CPU on /hello (cgroup $cg_kind cpu"
		echo "          bandwidth, 10 ms periods), none on /sleep and the mixed load"
	else
		echo "budget:   none: the servers may use all CPUs on /hello too"
	fi
	if ((pairs > 0)); then
		echo "paired:   two servers at once on CPU $((ncpu - 1)), ${pair_budget}% of one CPU each, each"
		echo "          loaded by its own wrk on CPU 0 for ${pair_duration} after a ${warmup} warm-up;"
		echo "          $pairs rounds, which goes first swapped every round; the geometric mean"
	fi
	echo
	awk -v all="$results" -v mixed="$mixed" -v pairs_all="$pair_results" '
	function ratio(a, b, r) {
		return ((a, r) in v && (b, r) in v && v[b, r] > 0) ? v[a, r] / v[b, r] : -1
	}
	function fx(x) { return x < 0 ? "-" : sprintf("%.2fx", x) }
	# hello requests per CPU-second of a over those of b: the inverse
	# ratio of their CPU time per request
	function eff(a, b) {
		if (!((a, "hello") in uspr) || !((b, "hello") in uspr) || uspr[a, "hello"] <= 0)
			return -1
		return uspr[b, "hello"] / uspr[a, "hello"]
	}
	# " (rounds 0.88-0.95)": the lowest and highest ratio a / b of the
	# hello rows of each round (column k; inv: b / a, for CPU per request),
	# or "" with fewer than two rounds of both
	function rounds_range(a, b, k, inv,    m, i, lo, hi, x) {
		m = cnt[a, "hello"] < cnt[b, "hello"] ? cnt[a, "hello"] : cnt[b, "hello"]
		if (m < 2)
			return ""
		for (i = 1; i <= m; i++) {
			if (col[a, "hello", i, k] <= 0 || col[b, "hello", i, k] <= 0)
				return ""
			x = inv ? col[b, "hello", i, k] / col[a, "hello", i, k] \
				: col[a, "hello", i, k] / col[b, "hello", i, k]
			if (i == 1 || x < lo) lo = x
			if (i == 1 || x > hi) hi = x
		}
		return sprintf(" (rounds %.2f-%.2f)", lo, hi)
	}
	# median of the rounds of (case, route), column k
	function median(key, k,    m, i, j, t, a) {
		m = cnt[key]
		for (i = 1; i <= m; i++) {
			t = col[key, i, k]
			for (j = i; j > 1 && a[j - 1] > t; j--)
				a[j] = a[j - 1]
			a[j] = t
		}
		return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
	}
	BEGIN {
		n = split(all, lines, "\n")
		for (i = 1; i <= n; i++) {
			if (split(lines[i], f, " ") < 9)
				continue
			key = f[1] SUBSEP f[2]
			if (!(f[1] in seen)) {
				seen[f[1]] = 1
				order[++ncases] = f[1]
			}
			k = ++cnt[key]
			for (j = 3; j <= 9; j++)
				col[key, k, j] = f[j] + 0
		}
		for (key in cnt) {
			v[key] = median(key, 3)
			p50[key] = median(key, 4)
			p99[key] = median(key, 5)
			errs[key] = median(key, 6)
			srv[key] = median(key, 7)
			uspr[key] = median(key, 8)
			busy[key] = median(key, 9)
		}
		fmt = "%-18s %-6s %9s %8s %8s %6s %8s %8s %6s\n"
		printf fmt, "case", "route", "req/s", "p50 ms", "p99 ms", "errors", "srv cpu", "us/req", "others"
		split("hello sleep", routes, " ")
		for (ri = 1; ri <= 2; ri++)
			for (i = 1; i <= ncases; i++) {
				c = order[i]; r = routes[ri]
				if (!((c, r) in v))
					continue
				printf fmt, c, r, sprintf("%.0f", v[c, r]),
					sprintf("%.2f", p50[c, r]), sprintf("%.2f", p99[c, r]),
					errs[c, r], sprintf("%.0f%%", srv[c, r]),
					sprintf("%.2f", uspr[c, r]),
					busy[c, r] < 0 ? "-" : busy[c, r] "%"
			}
		print ""
		fmt = "%-38s %8s  %-10s %s\n"
		printf fmt, "ratio (req/s over req/s)", "measured", "target", "result"
		x = ratio("keel_full", "bare_mhd", "hello")
		printf fmt, "keel_full / bare_mhd, hello", fx(x), ">= 0.9x",
			(x < 0 ? "-" : (x >= 0.9 ? "met" : "missed")) rounds_range("keel_full", "bare_mhd", 3, 0)
		printf fmt, "keel_full_synclog / bare_mhd, hello", fx(ratio("keel_full_synclog", "bare_mhd", "hello")), "", ""
		printf fmt, "keel_bare / bare_mhd, hello", fx(ratio("keel_bare", "bare_mhd", "hello")), "", ""
		printf fmt, "keel_full / keel_bare, hello", fx(ratio("keel_full", "keel_bare", "hello")), "", ""
		printf fmt, "keel_full / go, hello", fx(ratio("keel_full", "go", "hello")), "", ""
		printf fmt, "bare_mhd / go, hello", fx(ratio("bare_mhd", "go", "hello")), "", ""
		printf fmt, "keel_full / bare_mhd, sleep", fx(ratio("keel_full", "bare_mhd", "sleep")), "", ""
		printf fmt, "keel_full / bare_mhd_tpc, sleep", fx(ratio("keel_full", "bare_mhd_tpc", "sleep")), "", ""
		printf fmt, "keel_full / go, sleep", fx(ratio("keel_full", "go", "sleep")), "", ""
		printf fmt, "bare_mhd_tpc / go, sleep", fx(ratio("bare_mhd_tpc", "go", "sleep")), "", ""
		print ""
		printf fmt, "requests per CPU-second of the server", "measured", "target", "result"
		x = eff("keel_full", "bare_mhd")
		printf fmt, "keel_full / bare_mhd, hello", fx(x), ">= 0.9x",
			(x < 0 ? "-" : (x >= 0.9 ? "met" : "missed")) rounds_range("keel_full", "bare_mhd", 8, 1)
		printf fmt, "keel_bare / bare_mhd, hello", fx(eff("keel_bare", "bare_mhd")), "", ""
		printf fmt, "keel_full / keel_bare, hello", fx(eff("keel_full", "keel_bare")), "", ""
		printf fmt, "keel_full / go, hello", fx(eff("keel_full", "go")), "", ""
		printf fmt, "bare_mhd / go, hello", fx(eff("bare_mhd", "go")), "", ""
		np = split(pairs_all, plines, "\n")
		for (i = 1; i <= np; i++) {
			if (split(plines[i], f, " ") < 6 || f[5] <= 0)
				continue
			key = f[1] " / " f[2]
			if (!(key in pn))
				porder[++npairs] = key
			k = ++pn[key]
			pr[key, k] = f[3] / f[5]
			pcpu[key, k] = f[4] "/" f[6]
		}
		if (npairs > 0) {
			print ""
			printf fmt, "paired, hello (req/s over req/s)", "measured", "target", "result"
			for (i = 1; i <= npairs; i++) {
				key = porder[i]; m = pn[key]
				# The geometric mean: with each server first in
				# half the rounds, the advantage of going first
				# (or second) cancels out of it exactly.
				lsum = 0
				for (j = 1; j <= m; j++) {
					t = pr[key, j]
					lsum += log(t)
					if (j == 1 || t < lo) lo = t
					if (j == 1 || t > hi) hi = t
				}
				x = exp(lsum / m)
				range = sprintf("(rounds %.2f-%.2f)", lo, hi)
				if (key == "keel_full / bare_mhd")
					printf fmt, key, fx(x), ">= 0.9x", (x >= 0.9 ? "met " : "missed ") range
				else
					printf fmt, key, fx(x), "", range
			}
			# Each round: the ratio and the CPU of both servers, for the
			# reader who wants to see the spread and the budgets used.
			print ""
			print "paired rounds: req/s ratio [CPU % of the first / the second]"
			for (i = 1; i <= npairs; i++) {
				key = porder[i]
				line = sprintf("%-22s", key)
				for (j = 1; j <= pn[key]; j++)
					line = line sprintf(" %.2f[%s]", pr[key, j], pcpu[key, j])
				print line
			}
		}
		if (mixed == "0")
			exit
		print ""
		print "mixed: 1 connection on /hello while the others load /sleep"
		fmt = "%-18s %11s %9s %9s %13s\n"
		printf fmt, "case", "hello req/s", "p50 ms", "p99 ms", "sleep req/s"
		for (i = 1; i <= ncases; i++) {
			c = order[i]
			if (!((c, "mixed_hello") in v))
				continue
			printf fmt, c, sprintf("%.0f", v[c, "mixed_hello"]),
				sprintf("%.2f", p50[c, "mixed_hello"]),
				sprintf("%.2f", p99[c, "mixed_hello"]),
				sprintf("%.0f", v[c, "mixed_sleep"])
		}
	}'
	echo
	echo "Ratios are req/s over req/s: above 1.00x the first serves more."
	echo "errors: wrk's socket errors (connect, read, write, timeout) in the run."
	echo "srv cpu: the server's CPU time (all its threads) over the row's time, as a"
	echo "share of one CPU; us/req: that CPU time per request wrk counted. A hello row"
	echo "whose server stays under its budget (100% without one) was not served as fast"
	echo "as the server could: wrk shares the CPUs and ran out first; requests per"
	echo "CPU-second then compare the servers' costs where req/s cannot."
	echo "others: the share of the CPUs the rest of the machine used during the row"
	echo "(a hello row over ${quiet}% was measured again, up to $retries times; the quietest counts)."
	echo "bare_mhd: MHD alone, one epoll thread + MHD_USE_TURBO (keel's default); its"
	echo "/sleep blocks that thread. bare_mhd_tpc: MHD, a thread per connection."
	echo "keel_bare: keel's server, no middleware; keel_full: recover, trace,"
	echo "access_log (asynchronous JSON to /dev/null; keel_full_synclog: synchronous),"
	echo "metrics; /sleep on a pool of ${KEEL_BENCH_HTTP_POOL:-64} workers (KEEL_HTTP_BLOCKING)."
	echo "go: net/http, ServeMux behind defer func() { if recover() != nil { 500 } }()."
}

mkdir -p "$root/bench/results"
out=$root/bench/results/http-$(date '+%Y-%m-%d-%H%M%S').txt
echo
table | tee "$out"
echo
echo "bench: table written to ${out#"$root"/}"
