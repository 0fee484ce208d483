#!/bin/sh
# Runs one fuzzer for a bounded time and prints one JSON line: executions,
# speed, coverage, corpus size and findings (crash/leak/timeout/oom files).
#
#   tests/fuzz/run.sh FUZZER SECONDS WORKDIR [SEEDDIR]
#
# SEEDDIR holds the committed corpus/ and regressions/ (default tests/fuzz,
# the image fuzzer's; tests/fuzz/pickle and tests/fuzz/safetensors for the
# weight-file readers); they are read, never written. New inputs go to
# WORKDIR/corpus;
# findings to WORKDIR/artifacts/. Exit status 1 when there are findings:
# copy each into tests/fuzz/regressions/ once fixed.
#
# Limits: 2 GB RSS, and any single allocation over 128 MB is a finding (the
# fuzzer's ImageLimits allow 1 MP images, which need a few MB), 10 s per input.
set -eu
fuzzer=$1 seconds=$2 work=$3
here=$(cd "$(dirname "$0")" && pwd)
seeds=${4:-$here}
name=$(basename "$fuzzer")
mkdir -p "$work/corpus" "$work/artifacts"
rm -f "$work"/artifacts/*
log="$work/fuzz.log"
set +e
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  "$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=128 -timeout=10 \
  -max_len=32768 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
  "$work/corpus" "$seeds/corpus" "$seeds/regressions" >"$log" 2>&1
rc=$?
set -e
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | sed 's/cov: //')
units=$(ls "$work/corpus" | wc -l)
findings=$(ls "$work/artifacts" | wc -l)
names=$(ls "$work/artifacts" | sed 's/.*/"&"/' | paste -sd, -)
echo "{\"fuzzer\": \"$name\", \"seconds\": $seconds, \"executions\": ${execs:-0}, \"exec_per_s\": ${speed:-0}, \"coverage_edges\": ${cov:-0}, \"new_corpus_units\": $units, \"findings\": $findings, \"artifacts\": [${names}], \"fuzzer_exit\": $rc, \"log\": \"$log\"}"
if [ "$findings" -gt 0 ] || [ "$rc" -ne 0 ]; then
  grep -m3 -E 'ERROR|SUMMARY|$name:|exceeds malloc limit|==[0-9]+==' "$log" >&2 || true
  exit 1
fi
