#!/usr/bin/env bash
# run.sh -- what `make run` does after deps and the build: find or pull the
# model, then serve in the foreground and print the URL.
#
#   1. The model is whatever `smolbot pull --which` selects: the one lookup
#      rule of the binary (-m / MODEL_PATH / SMOLBOT_MODELS or
#      ~/.cache/smolbot/models / ./models), so this script never guesses a path.
#   2. None found: `smolbot pull` downloads SmolLM3-3B Q4_K_M (progress bar on
#      a terminal, resumable) unless OFFLINE=1 or SMOLBOT_NO_PULL=1, or
#      MODEL_PATH names a file that is not there (then that is the error).
#   3. The pull failed: the server still starts, in no-model mode, and we say
#      why and what to run. It never fakes answers.
#   4. exec `smolbot serve` with HOST (default 127.0.0.1), PORT (default 3000)
#      and, when set, SMOLBOT_DB; SERVE_ARGS adds any other serve flags.
#
# SMOLBOT overrides the binary (tests use the sanitized build). The working
# directory is left as is (make runs us from the repository root), since
# ./models is part of the lookup rule.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SMOLBOT:-$ROOT/build/smolbot}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-3000}

if [ ! -x "$BIN" ]; then
  echo "run: $BIN is not built: run 'make' first" >&2
  exit 1
fi

why=""
if model=$("$BIN" pull --which 2>/dev/null); then
  echo "run: model $model"
elif [ -n "${MODEL_PATH:-}" ]; then
  why="MODEL_PATH=$MODEL_PATH is not a readable file"
elif [ "${OFFLINE:-0}" = 1 ] || [ "${SMOLBOT_NO_PULL:-0}" = 1 ]; then
  why="no model file found and downloading is off (OFFLINE=1 / SMOLBOT_NO_PULL=1)"
else
  echo "run: no model found; downloading SmolLM3-3B Q4_K_M (about 1.9 GB; Ctrl-C keeps the partial file)"
  if "$BIN" pull >/dev/null && model=$("$BIN" pull --which 2>/dev/null); then
    echo "run: model $model"
  else
    why="the download failed (see the message above)"
  fi
fi

if [ -n "$why" ]; then
  dir=${SMOLBOT_MODELS:-${HOME:-.}/.cache/smolbot/models}
  cat >&2 <<MSG

run: starting WITHOUT a model: $why.
run: the page and /health work; chat answers with an error until a model is there.
run: to get the model:   ${BIN#"$ROOT"/} pull          (saves to $dir)
run:   or use your own:  MODEL_PATH=/path/to/SmolLM3-3B-Q4_K_M.gguf make run
run: then restart:       make run

MSG
fi

args=(serve --host "$HOST" --port "$PORT")
[ -n "${SMOLBOT_DB:-}" ] && args+=(--db "$SMOLBOT_DB")
# shellcheck disable=SC2206
[ -n "${SERVE_ARGS:-}" ] && args+=(${SERVE_ARGS})
echo "run: http://$HOST:$PORT/   (Ctrl-C stops the server)"
exec "$BIN" "${args[@]}"
