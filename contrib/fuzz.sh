#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs every fuzz target (tests/fuzz-*.c) under libFuzzer with
# AddressSanitizer + UndefinedBehaviorSanitizer, SECONDS seconds each
# (default 30), FUZZ_JOBS at a time, and prints per target the executions,
# the corpus size and whether it found anything.  Needs clang and
# Debian's libclang-rt-14-dev (contrib/deps.sh --fuzz installs them).
#
#   contrib/fuzz.sh [SECONDS] [TARGET...]
#
# The working corpus grows in build-fuzz/corpus/NAME, seeded from
# tests/corpus/NAME; crashes land in build-fuzz/crash/NAME/.  A crash is
# a failure: minimize it (libFuzzer -minimize_crash=1), add it to
# tests/corpus/NAME so the fuzz suite replays it forever, and fix it.
# tests/corpus/NAME holds named seeds and regressions, plus the files
# (named by their SHA-1) of a -merge=1 of long local runs, so that a short
# run starts where those ended rather than from a handful of seeds.
# Ends with one "N passed, N failed" line; exits 1 when a target failed.
set -eu
cd "$(dirname "$0")/.."

secs=${1:-30}
[ $# -gt 0 ] && shift
all="frame msg safetensors model config torchbin spm tokenizer extractopts"
all="$all cmdline http record"
targets=${*:-$all}

if [ ! -d build-fuzz ]; then
	CC=clang meson setup build-fuzz --wrap-mode=nodownload -Dfuzzer=true \
	    -Db_sanitize=address,undefined -Db_lundef=false \
	    -Dbuildtype=debugoptimized >/dev/null
fi
# A build that fails says why, where a log that keeps only the tail sees.
# Only the fuzz targets: the rest of this build is never run (43 s of
# CI's time on 2 cores).
fuzz_targets=""
for t in $targets; do
	fuzz_targets="$fuzz_targets tests/fuzz-$t"
done
# shellcheck disable=SC2086
if ! ninja -C build-fuzz $fuzz_targets >build-fuzz/ninja.log 2>&1; then
	tail -n 40 build-fuzz/ninja.log
	echo "0 passed, 1 failed"
	exit 1
fi

# fuzz_one TARGET: one target's run; prints its summary line, and the
# tail of its log when it failed (a log that keeps only the tail sees it).
fuzz_one() {
	t=$1
	corpus=build-fuzz/corpus/$t
	crash=build-fuzz/crash/$t
	log=build-fuzz/fuzz-$t.log
	mkdir -p "$corpus" "$crash"
	cp -n tests/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
	# -rss_limit_mb: the targets are small; a leak or a blowup shows.
	# -timeout: a single input running past 10 s is a hang.
	if ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1" \
	    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
	    build-fuzz/tests/fuzz-"$t" "$corpus" -max_total_time="$secs" \
	    -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
	    -artifact_prefix="$crash/" -print_final_stats=1 >"$log" 2>&1
	then
		result=ok
	else
		result="FAILED (see $log, $crash/)"
		tail -n 40 "$log"
	fi
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	printf "fuzz-%-12s %6ss %10s execs %6s inputs  %s\n" "$t" "$secs" \
	    "${execs:-?}" "$(find "$corpus" -type f | wc -l)" "$result"
}

# Each target is single-threaded: run FUZZ_JOBS of them at once (default
# the number of CPUs), so that every target still gets its SECONDS but
# the whole run takes a fraction of the time.
jobs=${FUZZ_JOBS:-$(nproc)}
out=build-fuzz/fuzz-results
rm -rf "$out"
mkdir -p "$out"
running=0
for t in $targets; do
	fuzz_one "$t" >"$out/$t" 2>&1 &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait
		running=0
	fi
done
wait
passed=0
failed=0
for t in $targets; do
	cat "$out/$t"
	if tail -n 1 "$out/$t" | grep -q "  ok$"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
