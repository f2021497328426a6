#!/usr/bin/env bash
# run.sh TESTBIN... -- run every test and add up their summary lines.
#
# Each C test binary prints "N passed, N failed, N skipped" last. Then the
# shell tests (tests/cli_*.sh, same summary convention), a short bounded run
# of each fuzz target, and the node e2e suites when present. The very last
# line is the total, "N passed, N failed, N skipped", which is what CI reads.
set -u
cd "$(dirname "$0")/.."
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
P=0 F=0 S=0
log=$(mktemp -d /tmp/smolbot-run-XXXXXX)
# A failing node test's TAP block without its stack: which assertion, where,
# expected and actual, so a failure seen once in CI can be understood.
tap_failures() {
  awk '/not ok/ { on = 1 } on && /^ *stack:/ { skip = 1 } on && /^ *\.\.\.$/ { on = skip = 0 }
       on && !skip { print } /Sanitizer|runtime error|TIMEOUT/ { print }' "$1"
}

# Seconds since the suite started (its own t0), for the summary lines:
# where CI's time goes.
t0=0
start() { t0=$(date +%s.%N); }
took() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

add() { # name, output file, exit status
  local line p f s
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$2" | tail -n 1)
  if [ -z "$line" ]; then
    echo "FAIL $1 (exit $3, no summary line)"; tail -n 30 "$2" | sed 's/^/    /'
    F=$((F+1)); return
  fi
  p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  s=$(echo "$line" | sed -nE 's/.* ([0-9]+) skipped.*/\1/p'); s=${s:-0}
  if [ "$3" != 0 ] && [ "$f" = 0 ]; then f=1; fi
  P=$((P+p)) F=$((F+f)) S=$((S+s))
  printf '%-28s %-36s %6s s\n' "$1" "$line" "$(took)"
  if [ "$f" != 0 ]; then
    case "$1" in
      e2e/*) tap_failures "$2" ;;
      *) grep -E 'FAIL|not ok|ERROR|Sanitizer|runtime error|TIMEOUT' "$2" ;;
    esac | head -n 60 | sed 's/^/    /'
  fi
  grep -E '^  SKIP' "$2" | head -n 5 | sed 's/^/   /'
}

# A hung test must fail, not eat CI's time: every suite runs under a timeout.
LIMIT=${TEST_TIMEOUT:-900}
for t in "$@"; do
  name=$(basename "$t"); start
  timeout -k 10 "$LIMIT" "$t" > "$log/$name.out" 2>&1; rc=$?
  [ $rc = 124 ] && echo "TIMEOUT after ${LIMIT}s" >> "$log/$name.out"
  add "$name" "$log/$name.out" $rc
done

for t in tests/cli_*.sh; do
  [ -e "$t" ] || continue
  name=$(basename "$t" .sh); start
  timeout -k 10 "$LIMIT" bash "$t" > "$log/$name.out" 2>&1; rc=$?
  add "$name" "$log/$name.out" $rc
done

# Short bounded fuzz runs: each target over its seed corpus plus 10 s of new inputs.
for fz in build/fuzz/fuzz_*; do
  [ -x "$fz" ] || continue
  name=$(basename "$fz"); start; corp=tests/fuzz/corpus/${name#fuzz_}
  work=$(mktemp -d /tmp/smolbot-fuzz-XXXXXX)
  [ -d "$corp" ] && cp -r "$corp/." "$work/" 2>/dev/null
  "$fz" "$work" -max_total_time=10 -rss_limit_mb=2048 -timeout=10 > "$log/$name.out" 2>&1; rc=$?
  execs=$(grep -oE '^Done [0-9]+ runs' "$log/$name.out" | grep -oE '[0-9]+')
  execs="${execs:-?} runs"
  if [ $rc = 0 ]; then echo "1 passed, 0 failed" >> "$log/$name.out"; else echo "0 passed, 1 failed" >> "$log/$name.out"; fi
  add "$name ($execs)" "$log/$name.out" $rc
  rm -rf "$work"
done

for suite in tests/e2e/*.test.mjs; do
  [ -e "$suite" ] || continue
  name=$(basename "$suite" .test.mjs); start
  timeout -k 10 "$LIMIT" node --test --test-reporter=tap "$suite" > "$log/$name.out" 2>&1; rc=$?
  p=$(grep -E '^# pass ' "$log/$name.out" | awk '{print $3}'); f=$(grep -E '^# fail ' "$log/$name.out" | awk '{print $3}')
  s=$(grep -E '^# skipped ' "$log/$name.out" | awk '{print $3}')
  echo "${p:-0} passed, ${f:-1} failed, ${s:-0} skipped" >> "$log/$name.out"
  add "e2e/$name" "$log/$name.out" $rc
done

rm -rf "$log"
echo "$P passed, $F failed, $S skipped"
[ "$F" = 0 ]
