#!/usr/bin/env bash
# model.sh PATH -- make sure the 3B-shaped benchmark model exists at PATH.
#
# It is what `smolbot gen-model --preset 3b --quant q4_k_m` writes: the
# shapes and quant types of SmolLM3-3B Q4_K_M with random weights, the
# tokenizer copied from a donor (../shared's tiny model, or the model the
# lookup rule finds). Generated once, kept outside git.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1
BIN=${SMOLBOT_BIN:-build/smolbot}
[ -s "$MODEL" ] && exit 0
donor=${SMOLBOT_SHARED:-../shared}/models/smollm3-tiny-q4_k_m.gguf
[ -r "$donor" ] || donor=$("$BIN" pull --which 2>/dev/null || true)
if [ -z "$donor" ] || [ ! -r "$donor" ]; then
  echo "bench: need a SmolLM3 GGUF to copy the tokenizer from (../shared or 'smolbot pull')" >&2
  exit 1
fi
mkdir -p "$(dirname "$MODEL")"
echo "generating the 3B-shaped model (once): $MODEL"
"$BIN" gen-model --preset 3b --quant q4_k_m --seed 1 --vocab-from "$donor" -o "$MODEL"
