#!/usr/bin/env bash
# tests/cmd/test_keelctl.sh - keelctl against the real keeld.
#
#   bash tests/cmd/test_keelctl.sh KEELCTL KEELD     (ctest: cmd/keelctl)
#
# Starts keeld on 127.0.0.1 with a port the kernel picks and a data
# directory under $TMPDIR, and runs every keelctl command in both output
# modes, the errors with their exit status (unknown job and run: 1, bad
# jobs file: 1 with the server's reason, bad usage: 2, server down: 3),
# token auth, and watch until SIGINT/SIGTERM. Everything it starts is
# stopped, and the directory removed, on any exit.
#
# Each check prints "ok" or "FAIL" with what was expected; a failure shows
# the command's output. The last line counts them; the exit status is 0
# only when every check passed.
set -u -o pipefail

KEELCTL=${1:?usage: test_keelctl.sh KEELCTL KEELD}
KEELD=${2:?usage: test_keelctl.sh KEELCTL KEELD}
for bin in "$KEELCTL" "$KEELD"; do
	if [[ ! -x $bin ]]; then
		echo "test_keelctl: $bin is not an executable (build it first)" >&2
		exit 1
	fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keelctl-test.XXXXXX") || exit 1
KEELD_PID=
BG_PIDS=()
cleanup() {
	for p in "${BG_PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	if [[ -n $KEELD_PID ]]; then
		kill -KILL "$KEELD_PID" 2>/dev/null
		wait "$KEELD_PID" 2>/dev/null
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP # so that cleanup runs

# Neither keelctl nor keeld may take anything from the caller's environment
# (a developer's KEELD_TOKEN or KEELD_JOBS would change the test).
unset KEELCTL_SERVER KEELCTL_TOKEN NO_COLOR
while read -r var; do
	unset "$var"
done < <(compgen -e | grep '^KEELD_')
# keel owns SIGSEGV (docs/panic.md); an ASan build must let it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-allow_user_segv_handler=1}

PASSED=0
FAILED=0
OUT=$TMP/out
ERR=$TMP/err
RC=0

pass() {
	PASSED=$((PASSED + 1))
	echo "ok    $*"
}

fail() {
	FAILED=$((FAILED + 1))
	echo "FAIL  $*"
	echo "      command: ${LAST_CMD:-}"
	echo "      exit status: $RC"
	sed 's/^/      stdout: /' "$OUT" | head -40
	sed 's/^/      stderr: /' "$ERR" | head -40
}

# kc ARGS... : runs keelctl, stdout in $OUT, stderr in $ERR, status in $RC.
kc() {
	LAST_CMD="keelctl $*"
	"$KEELCTL" "$@" >"$OUT" 2>"$ERR" </dev/null
	RC=$?
}

# kc_in FILE ARGS... : the same with FILE on stdin.
kc_in() {
	local in=$1
	shift
	LAST_CMD="keelctl $* < $(basename "$in")"
	"$KEELCTL" "$@" >"$OUT" 2>"$ERR" <"$in"
	RC=$?
}

expect_rc() {
	if [[ $RC -eq $1 ]]; then pass "$LAST_CMD: exit $1"; else fail "$LAST_CMD: exit $1 expected"; fi
}

# expect_out REGEX [what] : a line of stdout matches (grep -E).
expect_out() {
	if grep -Eq -- "$1" "$OUT"; then pass "$LAST_CMD: stdout has /$1/"; else fail "$LAST_CMD: stdout should match /$1/"; fi
}

expect_no_out() {
	if grep -Eq -- "$1" "$OUT"; then fail "$LAST_CMD: stdout should not match /$1/"; else pass "$LAST_CMD: stdout lacks /$1/"; fi
}

expect_err() {
	if grep -Eq -- "$1" "$ERR"; then pass "$LAST_CMD: stderr has /$1/"; else fail "$LAST_CMD: stderr should match /$1/"; fi
}

expect_empty_out() {
	if [[ ! -s $OUT ]]; then pass "$LAST_CMD: no stdout"; else fail "$LAST_CMD: stdout should be empty"; fi
}

expect_lines() {
	local n
	n=$(wc -l <"$OUT")
	if [[ $n -eq $1 ]]; then pass "$LAST_CMD: $1 lines"; else fail "$LAST_CMD: $1 lines expected, got $n"; fi
}

# The columns of a table line up: every row has a non-blank character
# where the header's column name starts, and a blank before it.
expect_aligned() {
	local col=$1
	if awk -v col="$col" '
		NR == 1 { pos = index($0, col); if (pos == 0) exit 1; next }
		/^\(/ { next }
		{ if (substr($0, pos, 1) == " " || (pos > 1 && substr($0, pos - 1, 1) != " ")) exit 1 }
	' "$OUT"; then
		pass "$LAST_CMD: column $col aligned"
	else
		fail "$LAST_CMD: column $col not aligned"
	fi
}

# The value of "key": "value" (or "key": number) in $OUT, first match.
json_field() {
	sed -nE "s/^ *\"$1\": \"?([^\",]*)\"?,?$/\\1/p" "$OUT" | head -1
}

# wait_for SECONDS COMMAND... : polls until COMMAND succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	while ((SECONDS < deadline)); do
		"$@" && return 0
		sleep 0.2
	done
	return 1
}

start_keeld() {
	local data=$TMP/data-$RANDOM
	: >"$TMP/keeld.err"
	"$KEELD" --listen 127.0.0.1:0 --data-dir "$data" --log-format console \
		"$@" >"$TMP/keeld.log" 2>"$TMP/keeld.err" &
	KEELD_PID=$!
	# keeld prints where it listens once it does.
	if ! wait_for 60 grep -q 'listening on http://' "$TMP/keeld.err"; then
		echo "test_keelctl: keeld did not start:" >&2
		cat "$TMP/keeld.err" "$TMP/keeld.log" >&2
		exit 1
	fi
	PORT=$(sed -nE 's|.*listening on http://127\.0\.0\.1:([0-9]+)/.*|\1|p' "$TMP/keeld.err" | head -1)
	if [[ -z $PORT ]]; then
		echo "test_keelctl: no port in keeld's output:" >&2
		cat "$TMP/keeld.err" >&2
		exit 1
	fi
	URL=http://127.0.0.1:$PORT
}

stop_keeld() {
	kill -TERM "$KEELD_PID"
	local i
	for ((i = 0; i < 300; i++)); do
		kill -0 "$KEELD_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$KEELD_PID" 2>/dev/null
	wait "$KEELD_PID" 2>/dev/null
	KEELD_PID=
}

# ---- usage: exit 2 with the usage on stderr, before any request ----------

echo "# usage"
kc
expect_rc 2
expect_err 'no command given'
expect_err '^Usage: keelctl'
kc frobnicate
expect_rc 2
expect_err "unknown command 'frobnicate'"
kc --bogus list
expect_rc 2
expect_err 'unknown option --bogus'
kc list extra
expect_rc 2
expect_err 'list takes no arguments'
kc get
expect_rc 2
expect_err 'usage: keelctl get NAME'
kc list --wait
expect_rc 2
expect_err '--wait is not an option of list'
kc runs --limit 0
expect_rc 2
expect_err '--limit'
kc runs --limit 1001
expect_rc 2
kc runs --state bogus
expect_rc 2
expect_err "'bogus' is not a run state"
kc show abc
expect_rc 2
expect_err "'abc' is not a run id"
kc cancel 12x
expect_rc 2
kc --timeout 1d list
expect_rc 2
expect_err '--timeout: unknown unit'
kc --server ftp://example.org list
expect_rc 2
kc --server
expect_rc 2
expect_err '--server needs a value'
kc help
expect_rc 0
expect_out '^Usage: keelctl'
kc --help
expect_rc 0
expect_out '^Usage: keelctl'
kc --version
expect_rc 0
expect_out '^keelctl [0-9]+\.[0-9]+\.[0-9]+$'

# ---- a keeld without a token --------------------------------------------

echo "# keeld at work"
start_keeld
export KEELCTL_SERVER=$URL

kc list
expect_rc 0
expect_out '^No jobs yet'
kc list --json
expect_rc 0
expect_out '"jobs": \[\]'

cat >"$TMP/jobs.json" <<'EOF'
[
  {"name": "ok", "schedule": "@manual",
   "executor": {"type": "shell", "shell": true,
                "command": ["echo hello-from-ok; echo second-line; printf '\\033]0;pwned\\007\\033[31mred\\n'"]}},
  {"name": "flaky", "schedule": "@manual",
   "executor": {"type": "shell", "command": ["/bin/false"]},
   "retry": {"max_attempts": 2, "initial": "100ms", "max": "100ms", "jitter": false}},
  {"name": "slow", "schedule": "@manual",
   "executor": {"type": "shell", "command": ["sleep", "60"]}},
  {"name": "nightly", "schedule": "30 2 * * *", "timezone": "Europe/Berlin",
   "executor": {"type": "http", "url": "http://127.0.0.1:9/", "method": "POST"},
   "tags": ["team:ops", "prod"]}
]
EOF

kc add "$TMP/jobs.json"
expect_rc 0
expect_out '^job ok created$'
expect_out '^job flaky created$'
expect_out '^job slow created$'
expect_out '^job nightly created$'
kc add "$TMP/jobs.json"
expect_rc 0
expect_out '^job ok unchanged$'
expect_out '^job nightly unchanged$'
kc add "$TMP/jobs.json" --json
expect_rc 0
expect_out '"result": "unchanged"'
expect_out '"name": "nightly"'

# One job object, and {"jobs": [...]} (what `list --json` prints), on stdin.
echo '{"name": "single", "schedule": "@manual", "executor": {"type": "shell", "command": ["true"]}}' >"$TMP/one.json"
kc_in "$TMP/one.json" add -
expect_rc 0
expect_out '^job single created$'
echo '{"jobs": [{"name": "single", "schedule": "@at 2099-01-01T00:00:00Z", "executor": {"type": "shell", "command": ["true"]}}]}' >"$TMP/wrapped.json"
kc add "$TMP/wrapped.json"
expect_rc 0
expect_out '^job single replaced$'

# A refused job: the server's reason with the job's name, exit 1, and the
# jobs after it are not sent.
cat >"$TMP/bad.json" <<'EOF'
[
  {"name": "before-bad", "schedule": "@manual", "executor": {"type": "shell", "command": ["true"]}},
  {"name": "bad", "schedule": "0 0 32 * *", "executor": {"type": "shell", "command": ["true"]}},
  {"name": "after-bad", "schedule": "@manual", "executor": {"type": "shell", "command": ["true"]}}
]
EOF
kc add "$TMP/bad.json"
expect_rc 1
expect_out '^job before-bad created$'
expect_err 'keelctl: job bad: schedule: field 3 \(day of month\): 32 is out of range 1-31 \(HTTP 400\)'
expect_err 'stopped at the first error: 1 of 3 jobs applied before it, 1 not sent'
kc get bad
expect_rc 1
kc get after-bad
expect_rc 1
kc get before-bad
expect_rc 0

echo '[{"name": "typo", "schedule": "@manual", "executor": {"type": "shell", "comand": ["true"]}}]' >"$TMP/typo.json"
kc add "$TMP/typo.json"
expect_rc 1
expect_err 'job typo: executor.comand: unknown field \(HTTP 400\)'
printf '[{"name": "x",\n  "schedule": }]\n' >"$TMP/broken.json"
kc add "$TMP/broken.json"
expect_rc 1
expect_err 'broken.json: line 2, column'
echo '{"name": "dup", "name": "dup2"}' >"$TMP/dup.json"
kc add "$TMP/dup.json"
expect_rc 1
expect_err 'duplicate object key'
echo '[1, 2]' >"$TMP/notobj.json"
kc add "$TMP/notobj.json"
expect_rc 1
expect_err 'job 1 of 2 is not a JSON object'
kc add "$TMP/does-not-exist.json"
expect_rc 1
expect_err 'does-not-exist.json'

kc list
expect_rc 0
expect_out '^NAME +SCHEDULE +STATE +RUNNING +NEXT RUN +LAST RUN$'
expect_out '^nightly +30 2 \* \* \* \(Europe/Berlin\) +active +0 +20[0-9]{2}-[0-9]{2}-[0-9]{2} (00|01):30:00Z +-$'
expect_out '^ok +@manual +active +0 +- +-$'
expect_aligned SCHEDULE
expect_aligned STATE
expect_aligned 'NEXT RUN'
expect_aligned 'LAST RUN'
kc list --json
expect_rc 0
expect_out '^  "jobs": \[$'
expect_out '"name": "slow"'
expect_out '"next_run_at": null'

kc get nightly
expect_rc 0
expect_out '^name: +nightly$'
expect_out '^schedule: +30 2 \* \* \* \(Europe/Berlin\)$'
expect_out '^executor: +http: POST http://127\.0\.0\.1:9/$'
expect_out '^next run: +20[0-9-]+ [0-9:]+Z \(in [0-9]'
expect_out '^tags: +team:ops, prod$'
kc get ok
expect_out "^executor: +shell: /bin/sh -c 'echo hello-from-ok"
kc get ok --json
expect_rc 0
expect_out '^  "name": "ok",$'
expect_out '"paused": false'
kc get nope
expect_rc 1
expect_err '^keelctl: .*not found \(HTTP 404\)$'
kc get nope --json
expect_rc 1
expect_empty_out

# ---- runs -------------------------------------------------------------------

echo "# runs"
kc runs
expect_rc 0
expect_out '^No runs\.$'
kc runs ok
expect_out '^No runs of ok\.$'

kc run ok
expect_rc 0
expect_out '^run [0-9]+ of ok queued \(manual\)$'
kc run ok --json
expect_rc 0
expect_out '"state": "queued"'
expect_out '"trigger": "manual"'

kc run ok --wait
expect_rc 0
expect_out '^run [0-9]+ of ok succeeded after [0-9.]+m?s: exit 0$'
expect_out '^hello-from-ok$'
# The job's escape sequences reach the terminal as '?', not as controls.
expect_out '^\?\]0;pwned\?\?\[31mred$'
OK_RUN=$(sed -nE 's/^run ([0-9]+) of ok succeeded.*/\1/p' "$OUT" | head -1)
kc run ok --wait --json
expect_rc 0
expect_out '"state": "succeeded"'
expect_out '"output": "hello-from-ok'

kc run flaky --wait
expect_rc 1
expect_out '^run [0-9]+ of flaky failed after .*exit status 1'
expect_out '^retrying as run [0-9]+$'
expect_out '^run [0-9]+ of flaky failed after [0-9.]+m?s \(attempt 2\): '
kc run flaky --wait --json
expect_rc 1
expect_out '"attempt": 2'
expect_out '"state": "failed"'
kc run nope
expect_rc 1
expect_err 'not found \(HTTP 404\)'

kc runs
expect_rc 0
expect_out '^ID +JOB +STATE +TRIGGER +ATTEMPT +STARTED +DURATION +RESULT$'
expect_out '^[0-9]+ +ok +succeeded +manual +1 +20[0-9-]+ [0-9:]+Z +[0-9.]+m?s +exit 0$'
expect_out '^[0-9]+ +flaky +failed +retry +2 '
expect_aligned JOB
expect_aligned STATE
expect_aligned RESULT
kc runs ok --limit 1
expect_rc 0
expect_lines 3
expect_out '^\(older runs: add --before [0-9]+\)$'
BEFORE=$(sed -nE 's/^\(older runs: add --before ([0-9]+)\)$/\1/p' "$OUT")
FIRST=$(awk 'NR == 2 { print $1 }' "$OUT")
kc runs ok --limit 1 --before "$BEFORE"
expect_rc 0
SECOND=$(awk 'NR == 2 { print $1 }' "$OUT")
if [[ -n $SECOND && -n $FIRST && $SECOND -lt $FIRST ]]; then pass "runs --before pages back ($FIRST, then $SECOND)"; else fail "runs --before should page back ($FIRST, then $SECOND)"; fi
kc runs --state failed
expect_rc 0
expect_no_out ' (succeeded|queued|running) '
expect_out ' flaky +failed '
kc runs --state canceled
expect_out '^No canceled runs\.$'
kc runs flaky --json
expect_rc 0
expect_out '^  "runs": \[$'
expect_out '"job": "flaky"'
kc runs nope
expect_rc 1
expect_err 'not found \(HTTP 404\)'

kc show "$OK_RUN"
expect_rc 0
expect_out "^run: +$OK_RUN$"
expect_out '^state: +succeeded$'
expect_out '^exit code: +0$'
expect_out '^output:$'
expect_out '^second-line$'
kc show "$OK_RUN" --json
expect_rc 0
expect_out "\"id\": \"$OK_RUN\""
expect_out '"output": "hello-from-ok\\nsecond-line'
kc show 999999999
expect_rc 1
expect_err 'not found \(HTTP 404\)'

# cancel: a running run is killed and ends canceled; a final one is 409.
kc run slow --json
SLOW=$(json_field id)
slow_running() {
	kc show "$SLOW" --json
	grep -q '"state": "running"' "$OUT"
}
if wait_for 60 slow_running; then pass "run $SLOW of slow started"; else fail "run $SLOW of slow should start"; fi
kc cancel "$SLOW"
expect_rc 0
expect_out "run $SLOW of slow (running|canceled)"
slow_canceled() {
	kc show "$SLOW" --json
	grep -q '"state": "canceled"' "$OUT"
}
if wait_for 60 slow_canceled; then pass "run $SLOW of slow canceled"; else fail "run $SLOW of slow should end canceled"; fi
kc cancel "$SLOW"
expect_rc 1
expect_err '\(HTTP 409\)$'
kc cancel "$SLOW" --json
expect_rc 1
kc cancel 999999999
expect_rc 1
expect_err '\(HTTP 404\)$'

# ---- pause, resume ----------------------------------------------------------

echo "# pause, resume"
kc pause nightly
expect_rc 0
expect_out '^job nightly paused$'
kc list
expect_out '^nightly +.* paused +0 +- +-$'
kc get nightly
expect_out '^state: +paused$'
expect_out '^next run: +-$'
kc resume nightly
expect_rc 0
expect_out '^job nightly resumed; next run 20[0-9-]+ [0-9:]+Z \(in '
kc pause nightly --json
expect_rc 0
expect_out '"paused": true'
kc resume nightly --json
expect_rc 0
expect_out '"paused": false'
kc pause nope
expect_rc 1
expect_err '\(HTTP 404\)$'

# ---- events, status ---------------------------------------------------------

echo "# events, status"
kc events
expect_rc 0
expect_out '^ID +TIME +LEVEL +KIND +JOB +RUN +MESSAGE$'
expect_out ' job\.created +nightly '
expect_aligned KIND
expect_aligned MESSAGE
kc events --limit 2
expect_rc 0
expect_lines 4
expect_out '^\(older events: add --before [0-9]+\)$'
kc events --json
expect_rc 0
expect_out '^  "events": \[$'
expect_out '"kind": "job.paused"'
kc events --state failed
expect_rc 2

kc status
expect_rc 0
expect_out "^server: +$URL$"
expect_out '^version: +[0-9]+\.[0-9]+'
expect_out '^store: +sqlite:'
expect_out '^jobs: +6$'
expect_out '^runs: +.*succeeded [1-9]'
kc status --json
expect_rc 0
expect_out '"version": "'
expect_out '"jobs": 6'

# The server's address without a scheme, and from --server over the
# environment.
kc --server "127.0.0.1:$PORT/" status
expect_rc 0
KEELCTL_SERVER=http://127.0.0.1:1 kc --server "$URL" list
expect_rc 0

# ---- watch ------------------------------------------------------------------

echo "# watch"
"$KEELCTL" watch >"$TMP/watch.out" 2>"$TMP/watch.err" &
WATCH=$!
BG_PIDS+=("$WATCH")
"$KEELCTL" watch ok --json >"$TMP/watchj.out" 2>"$TMP/watchj.err" &
WATCHJ=$!
BG_PIDS+=("$WATCHJ")
if wait_for 30 grep -q 'watching runs of all jobs' "$TMP/watch.err"; then pass "watch started"; else fail "watch should start"; fi
sleep 1.5 # the --json watcher says nothing when it starts
kc run ok --json
WRUN=$(json_field id)
kc run flaky --json
FRUN=$(json_field id)
if wait_for 60 grep -Eq "^20[0-9-]+ [0-9:]+Z  run $WRUN of ok succeeded" "$TMP/watch.out"; then
	pass "watch: run $WRUN of ok succeeded"
else
	fail "watch should print run $WRUN of ok succeeded"
	cat "$TMP/watch.out" "$TMP/watch.err"
fi
if wait_for 60 grep -Eq "run [0-9]+ of flaky failed .*\(attempt 2\)" "$TMP/watch.out"; then
	pass "watch: the retry of run $FRUN of flaky"
else
	fail "watch should print the retry of run $FRUN of flaky"
	cat "$TMP/watch.out" "$TMP/watch.err"
fi
if wait_for 60 grep -Eq "\"id\":\"$WRUN\".*\"state\":\"succeeded\"" "$TMP/watchj.out"; then
	pass "watch --json: run $WRUN succeeded"
else
	fail "watch --json should print run $WRUN succeeded"
	cat "$TMP/watchj.out" "$TMP/watchj.err"
fi
if grep -q flaky "$TMP/watchj.out"; then
	fail "watch ok --json should show ok's runs only"
else
	pass "watch ok --json: only ok's runs"
fi
if awk '!/^\{.*\}$/ { exit 1 }' "$TMP/watchj.out"; then pass "watch --json: one object a line"; else fail "watch --json: one object a line"; fi
kill -INT "$WATCH"
wait "$WATCH"
RC=$?
LAST_CMD="watch (SIGINT)"
expect_rc 0
kill -TERM "$WATCHJ"
wait "$WATCHJ"
RC=$?
LAST_CMD="watch --json (SIGTERM)"
expect_rc 0
BG_PIDS=()
kc watch nope
expect_rc 1
expect_err '\(HTTP 404\)$'

# ---- remove -------------------------------------------------------------------

echo "# remove"
kc remove single
expect_rc 0
expect_out '^job single removed$'
kc remove single
expect_rc 1
expect_err '\(HTTP 404\)$'
kc remove before-bad --json
expect_rc 0
expect_empty_out
kc get before-bad
expect_rc 1

stop_keeld

# ---- token auth -------------------------------------------------------------

echo "# token"
start_keeld --token s3cret-token
export KEELCTL_SERVER=$URL
kc list
expect_rc 1
expect_err '\(HTTP 401\); the server needs a token'
kc --token wrong list
expect_rc 1
expect_err '\(HTTP 401\); check --token'
kc --token s3cret-token list
expect_rc 0
KEELCTL_TOKEN=s3cret-token kc list
expect_rc 0
KEELD_TOKEN=s3cret-token kc status
expect_rc 0
KEELD_TOKEN=wrong KEELCTL_TOKEN=s3cret-token kc list
expect_rc 0
kc watch
expect_rc 1
expect_err '\(HTTP 401\)'
kc --token $'a\nb' list
expect_rc 2
stop_keeld

# ---- server down: exit 3 ----------------------------------------------------

echo "# server down"
# The port keeld had is closed now.
kc list
expect_rc 3
expect_err "^keelctl: cannot connect to http://127\.0\.0\.1:$PORT: "
kc status --json
expect_rc 3
expect_empty_out
kc run ok --wait
expect_rc 3
kc watch
expect_rc 3
kc_in "$TMP/jobs.json" add -
expect_rc 3

echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
