#!/usr/bin/env bash
# cli_chat.sh -- `smolbot generate`, `smolbot chat` and `smolbot template`
# end to end with the sanitized binary (SMOLBOT overrides).
#
# generate --ids on the tiny f32 model must print llama.cpp's greedy ids
# (refdata/model/greedy.jsonl, up to the first near-tie); a scripted chat
# session must run to the end with its slash commands; template must render
# every reference case byte for byte. JSON is read with node (CI has it).
# Last line: "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
BIN=${SMOLBOT:-build/san/smolbot}
SHARED=${SMOLBOT_SHARED:-../shared}
P=0 F=0 S=0
ok() { P=$((P+1)); echo "ok   $1"; }
ko() { F=$((F+1)); echo "FAIL $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }
finish() { echo "$P passed, $F failed, $S skipped"; [ $F = 0 ]; exit $?; }

if [ ! -x "$BIN" ]; then echo "FAIL $BIN not built"; echo "0 passed, 1 failed, 0 skipped"; exit 1; fi
if [ ! -r "$SHARED/models/smollm3-tiny-f32.gguf" ] || ! command -v node >/dev/null; then
  echo "  SKIP shared models or node absent"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
TMP=$(mktemp -d /tmp/smolbot-cli-chat-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
F32=$SHARED/models/smollm3-tiny-f32.gguf
Q4=$SHARED/models/smollm3-tiny-q4_k_m.gguf

# ---- generate: greedy ids equal llama.cpp's up to the first near-tie ----
node -e '
const fs = require("fs");
for (const l of fs.readFileSync(process.argv[1], "utf8").split("\n")) {
  if (!l) continue;
  const o = JSON.parse(l);
  if (o.model_file !== "smollm3-tiny-f32.gguf" || o.llama_cpp_config !== "default") continue;
  let k = 0; while (k < o.greedy_32.length && o.top1_minus_top2[k] >= 0.01) k++;
  console.log(o.prompt_name, o.prompt_ids.join(","), k, o.greedy_32.join(","));
}' "$SHARED/refdata/model/greedy.jsonl" > "$TMP/cases"
while read -r name ids k want; do
  got=$("$BIN" generate -m "$F32" --prompt-ids "$ids" --greedy -n 32 --ids --ignore-eos 2>"$TMP/gen.err" | tr -d '[] ')
  g=$(echo "$got" | cut -d, -f1-"$k"); w=$(echo "$want" | cut -d, -f1-"$k")
  if [ "$k" = 0 ]; then g=x; w=x; fi
  check "generate --ids $name: llama.cpp's first $k greedy ids" [ "$g" = "$w" ]
done < "$TMP/cases"
check "generate prints a stats line" grep -q 'decode .* tok/s' "$TMP/gen.err"
"$BIN" generate -m "$Q4" --prompt "Hello, world" -n 8 --seed 7 > "$TMP/a.txt" 2>/dev/null
"$BIN" generate -m "$Q4" --prompt "Hello, world" -n 8 --seed 7 > "$TMP/b.txt" 2>/dev/null
check "generate: same seed, same text" cmp -s "$TMP/a.txt" "$TMP/b.txt"
"$BIN" generate -m "$Q4" --prompt-ids 9906 --dump-logits "$TMP/l.bin" -n 1 >/dev/null 2>&1
check "generate --dump-logits writes 128256 floats" [ "$(stat -c %s "$TMP/l.bin" 2>/dev/null)" = 513024 ]
"$BIN" generate -m "$Q4" --prompt-ids 9906,999999 -n 1 >/dev/null 2>"$TMP/e"
check "an out-of-range id is an error" [ $? = 1 ]
check "the error names the id" grep -q '999999' "$TMP/e"
"$BIN" generate -m /nonexistent.gguf --prompt-ids 1 2>"$TMP/e" >/dev/null
check "a missing model is an error naming it" grep -q '/nonexistent.gguf' "$TMP/e"
"$BIN" bench --kernels --gpu on --quick >"$TMP/bg.out" 2>"$TMP/bg.err"
rc=$?
# the product binary has no kernel probes: a clear error; the bench build
# without a GPU: a clear error; with one, the table
check "bench --kernels --gpu on: an error without a GPU, the table with one" \
  sh -c "{ [ $rc = 1 ] && grep -q 'no kernel probes\|no CUDA backend\|no usable GPU' '$TMP/bg.err'; } || { [ $rc = 0 ] && grep -q '^GPU kernels:' '$TMP/bg.out'; }"
"$BIN" generate -m "$Q4" 2>/dev/null >/dev/null; check "no prompt is a usage error" [ $? = 2 ]
# the 8-bit KV cache: generate runs with it; an unknown type is refused
"$BIN" generate -m "$F32" --kv q8 --prompt-ids 504,3090,315 --greedy -n 4 --ids --ignore-eos >"$TMP/q8.txt" 2>/dev/null
check "generate --kv q8 prints 4 ids" [ "$(tr -d '[] ' <"$TMP/q8.txt" | tr ',' '\n' | grep -c .)" = 4 ]
"$BIN" generate -m "$Q4" --kv q4 --prompt-ids 1 2>/dev/null >/dev/null; check "--kv q4 is a usage error" [ $? = 2 ]

# ---- chat: a scripted session ----
printf 'Hello there\n/status\n/thinking off\nSecond question?\n/temp 0.3\n/export %s\n/reset\n/model\n/quit\n' "$TMP/c.md" |
  "$BIN" chat -m "$Q4" -n 12 --seed 1 > "$TMP/chat.out" 2>"$TMP/chat.err"
check "chat session exits 0" [ $? = 0 ]
check "chat answers each turn" [ "$(grep -c 'cut at the token limit' "$TMP/chat.out")" = 2 ]
check "/status reports the context" grep -q 'context [0-9]* of 4096 used' "$TMP/chat.out"
check "/thinking switches mode" grep -q 'thinking off (/no_think)' "$TMP/chat.out"
check "/temp sets the temperature" grep -q 'temperature 0.30' "$TMP/chat.out"
check "/export writes the turns" [ "$(grep -c '^## ' "$TMP/c.md")" = 4 ]
check "/reset forgets" grep -q 'conversation forgotten' "$TMP/chat.out"
check "/model shows the shape" grep -q 'smollm3: 4 layers' "$TMP/chat.out"

# ---- template: every reference case byte for byte (tools included) ----
for cases in chat_template_cases chat_tool_cases; do
n=0; bad=0
while IFS= read -r line; do
  [ -n "$line" ] || continue
  n=$((n+1))
  printf '%s' "$line" > "$TMP/case.json"
  node -e 'const o=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); process.stdout.write(o.expected)' "$TMP/case.json" > "$TMP/want"
  date=$(node -e 'const o=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); process.stdout.write(o.today||"")' "$TMP/case.json")
  "$BIN" template --date "$date" < "$TMP/case.json" > "$TMP/got" 2>/dev/null
  cmp -s "$TMP/got" "$TMP/want" || { bad=$((bad+1)); echo "  $cases case $n differs"; }
done < "$SHARED/refdata/template/$cases.jsonl"
min=13; [ $cases = chat_tool_cases ] && min=4
check "template $cases: $((n-bad)) of $n cases byte for byte" [ $bad = 0 ] && [ $n -ge $min ]
done
finish
