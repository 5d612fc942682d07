#!/bin/sh
# SPDX-License-Identifier: MIT
# Quick start, part 2: install what is missing, build, and run the whole
# test suite in a normal build and under AddressSanitizer +
# UndefinedBehaviorSanitizer, and the daemon and executor (integration)
# tests under ThreadSanitizer.  Ends with one "N passed, N failed" line.
set -eu
cd "$(dirname "$0")/.."

contrib/deps.sh

# run_suite DIR "MESON TEST ARGS" [MESON SETUP ARGS...]
run_suite() {
	dir=$1
	targs=$2
	shift 2
	[ -d "$dir" ] || meson setup "$dir" --wrap-mode=nodownload "$@" \
	    >/dev/null
	ninja -C "$dir"
	# shellcheck disable=SC2086
	meson test -C "$dir" --print-errorlogs --num-processes 2 $targs || true
}

run_suite build ""
run_suite build-asan "" -Db_sanitize=address,undefined -Dbuildtype=debug \
    -Doptimization=1
TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" \
    run_suite build-tsan "--suite integration" -Db_sanitize=thread \
    -Dbuildtype=debug -Doptimization=1

# One line any reader of the log can find: counts from both runs.
passed=0
failed=0
for log in build/meson-logs/testlog.json build-asan/meson-logs/testlog.json \
    build-tsan/meson-logs/testlog.json
do
	p=$(grep -c '"result": "OK"' "$log" || true)
	s=$(grep -c '"result": "SKIP"' "$log" || true)
	t=$(grep -c '"result"' "$log" || true)
	passed=$((passed + p + s))
	failed=$((failed + t - p - s))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
