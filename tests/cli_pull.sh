#!/usr/bin/env bash
# cli_pull.sh -- `smolbot pull`, the model lookup rule, and `make run` with no model.
#
# Pulls go to tests/pull_server.mjs, a Hugging Face look-alike on 127.0.0.1
# (node) serving the shared tiny model: a full download checked against
# sha256sum, a resume after the server drops the connection halfway (one run
# with --retries 0 fails and keeps the .part, the next sends a Range request
# and completes; the default retries do it in one run), 404, 401 without and
# success with HF_TOKEN, owner/repo:QUANT names, a corrupt file and a GGUF of
# another architecture (validation fails, no final file), checksum mismatches
# (--sha256 and the server's X-Linked-Etag), offline, a file size limit
# (write fails like a full disk), Ctrl-C (the .part is kept). The lookup order is tested through
# `smolbot pull --which`. The no-model `make run` check runs scripts/run.sh
# with an empty models dir and downloads off, then asks /health and /; it is
# skipped while `smolbot serve` does not exist.
# Last line: "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${SMOLBOT:-build/san/smolbot}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
SHARED=${SMOLBOT_SHARED:-../shared}
P=0 F=0 S=0
ok() { P=$((P+1)); echo "ok   $1"; }
ko() { F=$((F+1)); echo "FAIL $1"; }
skip() { S=$((S+1)); echo "  SKIP $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }
finish() { echo "$P passed, $F failed, $S skipped"; [ "$F" = 0 ]; exit $?; }

if [ ! -x "$BIN" ]; then echo "FAIL $BIN not built"; echo "0 passed, 1 failed, 0 skipped"; exit 1; fi
TMP=$(mktemp -d /tmp/smolbot-cli-pull-XXXXXX)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; rm -rf "$TMP"; }
trap cleanup EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
# nothing from the caller's setup may leak into the lookups
unset MODEL_PATH HF_TOKEN HF_ENDPOINT OFFLINE SMOLBOT_NO_PULL
export HOME=$TMP/home SMOLBOT_MODELS=$TMP/models
mkdir -p "$HOME"

# ---- the lookup rule (pull --which) ----
W=$TMP/w; mkdir -p "$W/cwd"
which_is() { # expected, then env assignments / args
  local want=$1; shift
  local got; got=$(cd "$W/cwd" && env "$@" "$BIN" pull --which 2>/dev/null)
  [ "$got" = "$want" ]
}
(cd "$W/cwd" && "$BIN" pull --which >/dev/null 2>"$TMP/which.err"); rc=$?
check "--which with nothing anywhere exits 1" [ $rc = 1 ]
check "--which says what to run" grep -q "smolbot pull" "$TMP/which.err"
mkdir -p "$W/cwd/models" && : > "$W/cwd/models/b.gguf" && : > "$W/cwd/models/a.gguf"
check "./models: first .gguf by name" which_is models/a.gguf
mkdir -p "$W/md" && : > "$W/md/zz.gguf" && : > "$W/md/yy.gguf" && : > "$W/md/yy.gguf.part"
check "models dir beats ./models (first by name)" which_is "$W/md/yy.gguf" SMOLBOT_MODELS="$W/md"
: > "$W/md/SmolLM3-3B-Q4_K_M.gguf"
check "models dir: the default file name first" which_is "$W/md/SmolLM3-3B-Q4_K_M.gguf" SMOLBOT_MODELS="$W/md"
mkdir -p "$W/home/.cache/smolbot/models" && : > "$W/home/.cache/smolbot/models/h.gguf"
check "default models dir is ~/.cache/smolbot/models" which_is "$W/home/.cache/smolbot/models/h.gguf" -u SMOLBOT_MODELS HOME="$W/home"
: > "$W/mp.gguf"
check "MODEL_PATH beats the models dir" which_is "$W/mp.gguf" SMOLBOT_MODELS="$W/md" MODEL_PATH="$W/mp.gguf"
got=$(cd "$W/cwd" && SMOLBOT_MODELS="$W/md" MODEL_PATH="$W/mp.gguf" "$BIN" pull --which -m "$W/md/zz.gguf" 2>/dev/null)
check "-m beats MODEL_PATH" [ "$got" = "$W/md/zz.gguf" ]
(cd "$W/cwd" && MODEL_PATH=$W/nope.gguf "$BIN" pull --which >/dev/null 2>"$TMP/which2.err"); rc=$?
check "a MODEL_PATH that does not exist is an error, not a fallback" [ $rc = 1 ]
check "... naming the path" grep -q "nope.gguf" "$TMP/which2.err"

# ---- pulls from a local server ----
TINY=$SHARED/models/smollm3-tiny-q4_k_m.gguf
OTHER=$SHARED/models/quant-types.gguf
if [ ! -r "$TINY" ]; then skip "pull tests: shared tiny model not found in $SHARED/models"; finish; fi
if ! command -v node >/dev/null 2>&1; then skip "pull tests: node not installed (the test server is node)"; finish; fi
LOG=$TMP/server.log; : > "$LOG"
node tests/pull_server.mjs "$TINY" "$LOG" "$OTHER" > "$TMP/port" 2> "$TMP/server.err" &
PIDS="$PIDS $!"
for _ in $(seq 50); do [ -s "$TMP/port" ] && break; sleep 0.1; done
PORT=$(head -n 1 "$TMP/port")
if [ -z "$PORT" ]; then ko "test server did not start: $(cat "$TMP/server.err")"; finish; fi
export HF_ENDPOINT=http://127.0.0.1:$PORT
SUM=$(sha256sum "$TINY" | cut -d' ' -f1)
pull() { "$BIN" pull "$@" > "$TMP/out" 2> "$TMP/err"; }
nothing_left() { [ ! -e "$1" ] && [ ! -e "$1.part" ]; }

t0=$(date +%s.%N)
pull test/tiny/tiny.gguf; rc=$?
t1=$(date +%s.%N)
check "full download exits 0" [ $rc = 0 ]
check "saved under the models dir with the file's name" cmp -s "$TINY" "$SMOLBOT_MODELS/tiny.gguf"
check "prints sha256sum's line" [ "$(cat "$TMP/out")" = "$SUM  $SMOLBOT_MODELS/tiny.gguf" ]
check "no .part left" [ ! -e "$SMOLBOT_MODELS/tiny.gguf.part" ]
check "progress lines off a terminal" grep -qE '^pull: 100%  36\.6/36\.6 MB  [0-9.]+ MB/s' "$TMP/err"
echo "     (36.6 MB over loopback, sanitized build: $(echo "$t1 - $t0" | bc) s)"
check "the new file is what --which finds" [ "$(cd "$W/cwd" && "$BIN" pull --which)" = "$SMOLBOT_MODELS/tiny.gguf" ]
pull test/tiny/tiny.gguf; rc=$?
check "pulling again is a no-op" [ $rc = 0 ] && grep -q "already there" "$TMP/err"

: > "$LOG"
pull test/tiny/drop-a.gguf -o "$TMP/d.gguf" --retries 0; rc=$?
check "dropped connection, no retries: exits 1" [ $rc = 1 ]
check "... keeps a partial .part" [ -s "$TMP/d.gguf.part" ] && [ "$(stat -c %s "$TMP/d.gguf.part")" -lt "$(stat -c %s "$TINY")" ]
check "... and says how to resume" grep -q "run the same command again to resume" "$TMP/err"
check "... no final file" [ ! -e "$TMP/d.gguf" ]
half=$(stat -c %s "$TMP/d.gguf.part")
pull test/tiny/drop-a.gguf -o "$TMP/d.gguf" --retries 0; rc=$?
check "second run resumes and completes" [ $rc = 0 ] && cmp -s "$TINY" "$TMP/d.gguf"
check "... with a Range request from where it stopped" grep -q "drop-a.gguf range=bytes=$half-" "$LOG"
check "... and the sha256 covers the whole file" [ "$(cut -d' ' -f1 "$TMP/out")" = "$SUM" ]
pull test/tiny/drop-b.gguf -o "$TMP/d2.gguf"; rc=$?
check "with retries one run resumes by itself" [ $rc = 0 ] && cmp -s "$TINY" "$TMP/d2.gguf" && grep -q "resuming in" "$TMP/err"

"$BIN" pull test/tiny/slow-a.gguf -o "$TMP/slow.gguf" > /dev/null 2> "$TMP/err" &
spid=$!
for _ in $(seq 100); do [ -s "$TMP/slow.gguf.part" ] && break; sleep 0.1; done
sleep 0.5; kill -INT $spid; wait $spid; rc=$?
check "Ctrl-C stops the download: exit 1, .part kept" [ $rc = 1 ] && [ -s "$TMP/slow.gguf.part" ] && [ ! -e "$TMP/slow.gguf" ]
check "... and says how to resume" grep -q "interrupted; .* kept in .*slow.gguf.part" "$TMP/err"

head -c 1000 "$TINY" > "$TMP/long.gguf.part"; cat "$TINY" >> "$TMP/long.gguf.part"
pull test/tiny/long.gguf -o "$TMP/long.gguf"; rc=$?
check "a .part longer than the file (416) starts over" [ $rc = 0 ] && cmp -s "$TINY" "$TMP/long.gguf"
cp "$TINY" "$TMP/full.gguf.part"
pull test/tiny/full.gguf -o "$TMP/full.gguf"; rc=$?
check "a complete .part (416 with the same total) is just checked and kept" [ $rc = 0 ] && cmp -s "$TINY" "$TMP/full.gguf"

pull test/tiny/missing-x.gguf -o "$TMP/m.gguf"; rc=$?
check "404 exits 1" [ $rc = 1 ]
check "404 says so" grep -q "HTTP 404" "$TMP/err"
check "404 leaves nothing" nothing_left "$TMP/m.gguf"

pull "http://127.0.0.1:$PORT/private/tiny/resolve/main/p.gguf" -o "$TMP/p.gguf"; rc=$?
check "401 exits 1 and mentions HF_TOKEN" [ $rc = 1 ] && grep -q "HF_TOKEN" "$TMP/err" && grep -q "HTTP 401" "$TMP/err"
: > "$LOG"
HF_TOKEN=sekret pull "http://localhost:$PORT/private/tiny/resolve/main/p.gguf" -o "$TMP/p.gguf"; rc=$?
check "HF_TOKEN is not sent to a host other than the endpoint" [ $rc = 1 ] && grep -q "auth=-" "$LOG"
HF_TOKEN=sekret HF_ENDPOINT=http://127.0.0.1:$PORT/ pull private/tiny/p.gguf -o "$TMP/p.gguf"; rc=$?
check "with HF_TOKEN the private file downloads" [ $rc = 0 ] && cmp -s "$TINY" "$TMP/p.gguf"

pull test/tiny:q4_k_m -o "$TMP/q"; rc=$?
check "owner/repo:QUANT picks the file from the list" [ $rc = 0 ] && [ -f "$TMP/q" ] && grep -q "tiny-Q4_K_M.gguf" "$TMP/err"
pull test/tiny:Q3_K_S -o "$TMP/q2"; rc=$?
check "an unknown quant lists the files there" [ $rc = 1 ] && grep -q "tiny-Q8_0.gguf" "$TMP/err"
pull "bad name"; rc=$?
check "a name that is neither repo nor URL exits 1" [ $rc = 1 ] && grep -q "cannot make sense" "$TMP/err"
pull ftp://x/y.gguf; check "other URL schemes are refused" [ $? = 1 ]

pull test/tiny/corrupt-c.gguf -o "$TMP/c.gguf"; rc=$?
check "corrupt file fails validation" [ $rc = 1 ] && grep -q "not a usable SmolLM3 model" "$TMP/err"
check "... and leaves no file" nothing_left "$TMP/c.gguf"
if [ -r "$OTHER" ]; then
  pull test/tiny/other-o.gguf -o "$TMP/o.gguf"; rc=$?
  check "a GGUF of another architecture is refused" [ $rc = 1 ] && grep -q "not smollm3" "$TMP/err"
  check "... and leaves no file" nothing_left "$TMP/o.gguf"
fi

pull test/tiny/s.gguf -o "$TMP/s.gguf" --sha256 "$(printf '%064d' 1)"; rc=$?
check "--sha256 mismatch exits 1" [ $rc = 1 ] && grep -q "sha256 mismatch" "$TMP/err"
check "... and leaves no file" nothing_left "$TMP/s.gguf"
pull test/tiny/s.gguf -o "$TMP/s.gguf" --sha256 "$(echo "$SUM" | tr a-f A-F)"; rc=$?
check "--sha256 match (any case) keeps it" [ $rc = 0 ] && [ -f "$TMP/s.gguf" ] && grep -q "sha256 verified" "$TMP/err"
pull test/tiny/x.gguf --sha256 abc; check "--sha256 that is not 64 hex digits is a usage error" [ $? = 2 ]
pull test/tiny/badetag-e.gguf -o "$TMP/e.gguf"; rc=$?
check "the server's X-Linked-Etag is checked" [ $rc = 1 ] && grep -q "published by the server" "$TMP/err" && nothing_left "$TMP/e.gguf"
pull test/tiny/etag-e.gguf -o "$TMP/e.gguf"; rc=$?
check "... and a matching one verifies" [ $rc = 0 ] && grep -q "sha256 verified" "$TMP/err"

pull http://127.0.0.1:9/x.gguf -o "$TMP/off.gguf"; rc=$?
check "offline: a clear error" [ $rc = 1 ] && grep -q "cannot connect to 127.0.0.1:9: are you offline" "$TMP/err" && nothing_left "$TMP/off.gguf"
(ulimit -f 2048; "$BIN" pull test/tiny/big.gguf -o "$TMP/big.gguf" > /dev/null 2> "$TMP/err"); rc=$?
check "a failed write (file size limit, like a full disk) is reported" [ $rc = 1 ] && grep -q "file size limit reached" "$TMP/err" && grep -q "resume" "$TMP/err"

# ---- make run with no model ----
if ! "$BIN" serve --help > /dev/null 2>&1; then
  skip "make run (no-model mode): 'smolbot serve' is not there yet"
  finish
fi
RP=$(node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
mkdir -p "$TMP/empty" "$TMP/run"
t0=$(date +%s.%N)
(cd "$TMP/run" && SMOLBOT=$BIN HOME=$TMP/home2 SMOLBOT_MODELS=$TMP/empty SMOLBOT_NO_PULL=1 PORT=$RP \
   SMOLBOT_DB=$TMP/run/db.sqlite exec bash "$ROOT/scripts/run.sh" > "$TMP/run.out" 2>&1) &
RUNPID=$!; PIDS="$PIDS $RUNPID"
up=0
for _ in $(seq 300); do
  if curl -sf "http://127.0.0.1:$RP/health" > "$TMP/health" 2>/dev/null; then up=1; break; fi
  kill -0 $RUNPID 2>/dev/null || break
  sleep 0.1
done
t1=$(date +%s.%N)
check "make run with no model: the server answers /health" [ $up = 1 ]
[ $up = 1 ] && echo "     (no-model start to /health, sanitized build: $(echo "$t1 - $t0" | bc) s)"
check "... the page is served" sh -c "curl -sf http://127.0.0.1:$RP/ | grep -qi '<html'"
check "... it says why there is no model" grep -q "WITHOUT a model" "$TMP/run.out"
check "... and what to run" grep -q "smolbot pull" "$TMP/run.out"
check "... and prints the URL" grep -q "http://127.0.0.1:$RP/" "$TMP/run.out"
kill $RUNPID 2>/dev/null; wait $RUNPID 2>/dev/null
finish
