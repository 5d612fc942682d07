#!/bin/sh
# SPDX-License-Identifier: MIT
# Quick start, part 2: install what is missing, build, and run the whole
# test matrix (docs/reliability.md says what each part covers):
#   1. normal build, every suite;
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build, every suite;
#   3. ThreadSanitizer build, the daemon and executor tests (suite
#      'threads' in tests/meson.build);
#   4. valgrind memcheck over the unit and fuzz-replay suites;
#   5. every fuzz target under libFuzzer for FUZZ_SECONDS (default 8) s.
# Ends with one "N passed, N failed" line; exits 1 if anything failed.
set -eu
cd "$(dirname "$0")/.."

contrib/deps.sh --test

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
# ASan makes the merge test 2-3x slower than the normal build's timeouts
# allow for on a busy machine.
run_suite build-asan "--timeout-multiplier 3" \
    -Db_sanitize=address,undefined -Dbuildtype=debug -Doptimization=1
# tests/tsan.supp says why each suppression is there.
# test-slurm's batch jobs run the normal build's engine there: TSan
# watches the daemon; test-merge, test-exec and test-resume the engine.
TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp \
${TSAN_OPTIONS:-}" TEST_SLURM_ENGINE=$PWD/build/client/mergectl \
    run_suite build-tsan "--suite threads" -Db_sanitize=thread \
    -Dbuildtype=debug -Doptimization=1
# Memcheck sees what the sanitizers' own allocators can hide (reads of
# uninitialised heap memory).  Its results go to a log of their own.
meson test -C build --print-errorlogs --num-processes 2 --suite unit \
    --suite fuzz --logbase memcheck --timeout-multiplier 4 \
    --wrapper "valgrind -q --error-exitcode=1 --leak-check=full \
--errors-for-leak-kinds=definite,indirect --track-origins=yes" || true
contrib/fuzz.sh "${FUZZ_SECONDS:-8}" | tee build/fuzz-summary.txt || true

# CI keeps only the tail of this output, so the failures are repeated
# here, each with the end of its own log, right above the count line.
python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json \
    build-tsan/meson-logs/testlog.json build/meson-logs/memcheck*.json <<'PY'
import json, os, sys
for path in sys.argv[1:]:
    if not os.path.exists(path):
        continue
    for line in open(path, encoding="utf-8", errors="replace"):
        t = json.loads(line)
        if t["result"] in ("OK", "SKIP"):
            continue
        print(f"=== FAILED {t['name']} ({path}): {t['result']},"
              f" exit {t['returncode']}, {t['duration']:.1f} s")
        out = (t.get("stdout") or "").splitlines()
        bad = [l for l in out if l.startswith("not ok")]
        for l in bad[:20]:
            print("  " + l)
        for l in out[-40:]:
            print("  | " + l)
PY

# One line any reader of the log can find: counts from every run.
passed=0
failed=0
for log in build/meson-logs/testlog.json build-asan/meson-logs/testlog.json \
    build-tsan/meson-logs/testlog.json build/meson-logs/memcheck*.json
do
	# A run that left no log did not run: a failure, not zero tests.
	if [ ! -f "$log" ]; then
		echo "no test log $log" >&2
		failed=$((failed + 1))
		continue
	fi
	p=$(grep -c '"result": "OK"' "$log" || true)
	s=$(grep -c '"result": "SKIP"' "$log" || true)
	t=$(grep -c '"result"' "$log" || true)
	passed=$((passed + p + s))
	failed=$((failed + t - p - s))
done
# fuzz.sh ends with its own "N passed, N failed"; no line is a failure.
fuzz=$(tail -n 1 build/fuzz-summary.txt)
case $fuzz in
*" passed, "*" failed")
	passed=$((passed + ${fuzz%% passed*}))
	f=${fuzz#*passed, }
	failed=$((failed + ${f%% failed}))
	;;
*)	failed=$((failed + 1)) ;;
esac
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
