#!/usr/bin/env bash
# reliability.sh -- `make reliability`: the long runs: fuzzing, load, faults.
#
#   1. each fuzz target in build/fuzz/ for $FUZZ_SECONDS (default 60) over a
#      copy of its seed corpus: executions, coverage, findings;
#   2. the store's search latency property on 10,000 messages;
#   3. tests/load/load.mjs on the release binary: 50 concurrent streams
#      ($STREAMS), 2,000 sequential chats ($SOAK), SIGKILL mid-stream and
#      disk full, a short session under valgrind memcheck;
#   4. tests/load/slow.mjs: 2,000 slow clients ($SLOW) from eight loopback
#      addresses for $SLOW_SECONDS (60) while /health must answer within 1 s;
# then one table (requests, failures, p50/p99, RSS and fds before/after,
# fuzz executions). Exit status 1 when anything failed. Loopback only.
set -u
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
out=$(mktemp -d /tmp/smolbot-rel-XXXXXX)
fuzzjson="["
fail=0
for fz in build/fuzz/fuzz_*; do
  [ -x "$fz" ] || continue
  name=$(basename "$fz" | sed 's/^fuzz_//')
  work=$out/corpus_$name; mkdir -p "$work"
  [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$work/"
  echo "fuzz $name: ${FUZZ_SECONDS} s"
  "$fz" "$work" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/crash-$name-" > "$out/fuzz_$name.log" 2>&1; rc=$?
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$out/fuzz_$name.log" | grep -oE '[0-9]+$')
  cov=$(grep -oE 'cov: [0-9]+' "$out/fuzz_$name.log" | tail -n 1 | grep -oE '[0-9]+')
  [ "$rc" = 0 ] || { fail=1; grep -E 'ERROR|SUMMARY' "$out/fuzz_$name.log" | head -5; }
  fuzzjson="$fuzzjson{\"name\":\"$name\",\"secs\":$FUZZ_SECONDS,\"execs\":${execs:-0},\"cov\":${cov:-0},\"rc\":$rc},"
done
fuzzjson="${fuzzjson%,}]"
[ "$fuzzjson" = "]" ] && fuzzjson="[]"
[ "$fuzzjson" = "[]" ] && echo "no fuzz targets in build/fuzz/ (make fuzz): fuzz rows skipped"

# search latency against 10,000 messages of generated worst-case text
# (test_store's property test; make test runs it on 1,000)
echo "search property: 10,000 messages"
if make --no-print-directory -j2 build/rel/test_store > "$out/make_test_store.log" 2>&1; then
  SMOLBOT_SEARCH_HISTORY=10000 build/rel/test_store > "$out/test_store.log" 2>&1 || fail=1
  grep -E 'search (cost|deadline|property)|FAIL|passed' "$out/test_store.log"
else
  tail -5 "$out/make_test_store.log"; fail=1
fi

node tests/load/slow.mjs || fail=1
node tests/load/load.mjs --streams "${STREAMS:-50}" --soak "${SOAK:-2000}" --json "$out/rows.json" || fail=1
node --input-type=module -e "
import { readFileSync } from 'node:fs';
import { printTable } from './tests/load/load.mjs';
const rows = JSON.parse(readFileSync('$out/rows.json', 'utf8'));
console.log(printTable(rows, $fuzzjson));
" || fail=1
rm -rf "$out"
if [ $fail = 0 ]; then echo "reliability: all passed"; else echo "reliability: FAILED"; fi
exit $fail
