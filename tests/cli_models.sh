#!/usr/bin/env bash
# cli_models.sh -- model files on the command line: what serve, inspect and
# chat say when a file is missing or broken (one message, before anything
# else, naming the file and why), the order of serve's lines when its port
# is taken, and serve's several-models options (--models-dir, --alias,
# --keep-alive, --mem-budget) and banner, and where the history goes
# without --db.
# Last line: "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${SMOLBOT:-build/san/smolbot}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
SHARED=${SMOLBOT_SHARED:-../shared}
MODEL=$SHARED/models/smollm3-tiny-q4_k_m.gguf
P=0 F=0 S=0
ok() { P=$((P+1)); echo "ok   $1"; }
ko() { F=$((F+1)); echo "FAIL $1"; }
skip() { S=$((S+1)); echo "  SKIP $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }
finish() { echo "$P passed, $F failed, $S skipped"; [ "$F" = 0 ]; exit $?; }

if [ ! -x "$BIN" ]; then echo "FAIL $BIN not built"; echo "0 passed, 1 failed, 0 skipped"; exit 1; fi
TMP=$(mktemp -d /tmp/smolbot-cli-models-XXXXXX)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; rm -rf "$TMP"; }
trap cleanup EXIT
unset MODEL_PATH SMOLBOT_MODELS
export HOME=$TMP/home ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
mkdir -p "$HOME"
printf 'not a model at all' > "$TMP/junk.gguf"
lines() { grep -c . "$1"; }

# ---- a missing file: one line, saying the file cannot be opened and why
"$BIN" serve -m "$TMP/nope.gguf" --port 0 --no-db > "$TMP/o" 2> "$TMP/e"; rc=$?
check "serve -m missing: exit 1" [ $rc = 1 ]
check "... no 'listening on' first" [ ! -s "$TMP/o" ]
check "... one line naming the file and why" grep -qx "serve: cannot open $TMP/nope.gguf: No such file or directory" "$TMP/e"
check "... and only that" [ "$(lines "$TMP/e")" = 1 ]
"$BIN" inspect "$TMP/nope.gguf" > "$TMP/o" 2> "$TMP/e"; rc=$?
check "inspect missing: exit 1, 'cannot open FILE: why'" [ $rc = 1 ]
check "... not 'offset 0'" grep -qx "smolbot inspect: cannot open $TMP/nope.gguf: No such file or directory" "$TMP/e"
"$BIN" chat -m "$TMP/nope.gguf" < /dev/null > "$TMP/o" 2> "$TMP/e"; rc=$?
check "chat missing: exit 1, the error once" [ $rc = 1 ] && [ "$(lines "$TMP/e")" = 1 ]
check "... naming the file" grep -q "chat: cannot open $TMP/nope.gguf" "$TMP/e"
"$BIN" chat -m "$TMP/junk.gguf" < /dev/null > "$TMP/o" 2> "$TMP/e"; rc=$?
check "chat on a file that is not a GGUF: exit 1, the error once" [ $rc = 1 ] && [ "$(lines "$TMP/e")" = 1 ]
check "... saying why" grep -q "cannot load $TMP/junk.gguf: .*not a GGUF" "$TMP/e"
"$BIN" serve -m "$TMP/junk.gguf" --port 0 --no-db > "$TMP/o" 2> "$TMP/e"; rc=$?
check "serve on a file that is not a GGUF: exit 1 before listening" [ $rc = 1 ] && [ ! -s "$TMP/o" ]

if [ ! -r "$MODEL" ]; then
  skip "the rest needs $MODEL"
  finish
fi

# ---- the port taken: the fatal error is the last line
node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{require("fs").writeFileSync(process.argv[1],String(s.address().port))})' "$TMP/port" &
PIDS="$PIDS $!"
for _ in $(seq 50); do [ -s "$TMP/port" ] && break; sleep 0.1; done
PORT=$(cat "$TMP/port" 2>/dev/null)
if [ -n "$PORT" ]; then
  "$BIN" serve -m "$MODEL" --port "$PORT" --no-db > "$TMP/o" 2> "$TMP/e"; rc=$?
  check "port taken: exit 1" [ $rc = 1 ]
  check "... the reason is the last line" sh -c "tail -n 1 '$TMP/e' | grep -q 'cannot listen'"
  check "... no banner" [ ! -s "$TMP/o" ]
else
  skip "port taken: no port holder"
fi

# ---- chat: /model NAME switches and the next answer names its model
F32=$SHARED/models/smollm3-tiny-f32.gguf
mkdir -p "$TMP/cm"
ln -s "$(cd "$(dirname "$F32")" && pwd)/$(basename "$F32")" "$TMP/cm/other.gguf"
printf 'hi\n/model nope\n/model other\nhello again\n/model\n/quit\n' |
  SMOLBOT_MODELS=$TMP/cm "$BIN" chat -m "$MODEL" -n 4 --ctx 512 > "$TMP/o" 2> "$TMP/e"; rc=$?
check "chat /model: exit 0" [ $rc = 0 ]
check "... an unknown name is said, the chat goes on" grep -q "chat: cannot open nope" "$TMP/e"
check "... the switch is said" grep -q "model other (smollm3, 4 layers, context 512); the conversation goes on" "$TMP/o"
check "... the next answer names its model" grep -q "^\[other\] " "$TMP/o"
check "... /model shows the new file" grep -q "^$TMP/cm/other.gguf$" "$TMP/o"

# ---- several models
D=$TMP/models
mkdir -p "$D"
ln -s "$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")" "$D/small.gguf"
cp "$TMP/junk.gguf" "$D/junk.gguf"
printf 'big = small   # a comment\n' > "$TMP/aliases"
"$BIN" serve --models-dir "$TMP/empty-nope" --port 0 --no-db > "$TMP/o" 2> "$TMP/e"; rc=$?
check "--models-dir without .gguf files: exit 1" [ $rc = 1 ] && grep -q "no .gguf files" "$TMP/e"
"$BIN" serve --models-dir "$D" --keep-alive 5 minutes --port 0 > /dev/null 2>&1; rc=$?
check "--keep-alive wants a duration: usage error" [ $rc = 2 ]
"$BIN" serve --models-dir "$D" --alias nonsense --port 0 > /dev/null 2>&1; rc=$?
check "--alias wants NAME=MODEL: usage error" [ $rc = 2 ]
"$BIN" serve --models-dir "$D" --alias x=missing --port 0 --no-db > /dev/null 2> "$TMP/e"; rc=$?
check "--alias of an unknown model: exit 1, said" [ $rc = 1 ] && grep -q "no model named 'missing'" "$TMP/e"
"$BIN" serve --models-dir "$D" --aliases "$TMP/aliases" --alias tiny="$D/small.gguf" --keep-alive 30s --mem-budget 512 \
  --port 0 --no-db > "$TMP/o" 2> "$TMP/e" &
SP=$!; PIDS="$PIDS $SP"
for _ in $(seq 200); do grep -q "database" "$TMP/o" 2>/dev/null && break; sleep 0.1; done
check "banner: every model" grep -q "smolbot ready (4 models, loaded on demand)" "$TMP/o"
check "... the junk file with its reason" grep -Eq "junk +unsupported: .*not a GGUF" "$TMP/o"
check "... the aliases" grep -Eq "big += small" "$TMP/o"
check "... budget and keep-alive" grep -q "budget 512 MiB, keep-alive 30s" "$TMP/o"
URL=$(grep -o 'http://[0-9.:]*' "$TMP/o" | head -1)
check "the junk file did not stop the server" sh -c "curl -sf '$URL/health' | grep -q ok"
check "/v1/models lists the four" sh -c "curl -sf '$URL/v1/models' | grep -o '\"id\"' | wc -l | grep -qx 4"
kill -TERM $SP; wait $SP; rc=$?
check "SIGTERM: exit 0" [ $rc = 0 ]
check "no sanitizer report" sh -c "! grep -q 'Sanitizer\|runtime error' '$TMP/e'"

# ---- no --db: the history goes to the default file under $HOME (what
# `make run` does), its reserve beside it, nothing in the working directory
mkdir -p "$TMP/cwd"
(cd "$TMP/cwd" && exec "$BIN" serve --port 0 > "$TMP/o" 2> "$TMP/e") &
SP=$!; PIDS="$PIDS $SP"
for _ in $(seq 200); do grep -q "database" "$TMP/o" 2>/dev/null && break; sleep 0.1; done
DB=$HOME/.local/share/smolbot/smolbot.db
check "no --db: the banner names the default database" grep -Eq "database +$DB\$" "$TMP/o"
check "... which is there, its reserve beside it" [ -s "$DB" ] && [ -s "$DB-reserve" ]
check "... and nothing in the working directory" [ -z "$(ls -A "$TMP/cwd")" ]
kill -TERM $SP; wait $SP; rc=$?
check "SIGTERM: exit 0" [ $rc = 0 ]
check "no sanitizer report" sh -c "! grep -q 'Sanitizer\|runtime error' '$TMP/e'"
finish
