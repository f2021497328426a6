#!/usr/bin/env bash
# model.sh PATH [ARCH PRESET] -- make sure a benchmark model exists at PATH.
#
# It is what `smolbot gen-model --arch ARCH --preset PRESET --quant q4_k_m`
# writes (default: smollm3 3b): the shapes and quant types of the real
# Q4_K_M file with random weights, the tokenizer copied from a donor of the
# same family (../shared's tiny model; for SmolLM3 also the model the lookup
# rule finds). Generated once, kept outside git.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1 ARCH=${2:-smollm3} PRESET=${3:-3b}
BIN=${SMOLBOT_BIN:-build/smolbot}
[ -s "$MODEL" ] && exit 0
shared=${SMOLBOT_SHARED:-../shared}/models
case $ARCH in
  smollm3) donor=$shared/smollm3-tiny-q4_k_m.gguf
           [ -r "$donor" ] || donor=$("$BIN" pull --which 2>/dev/null || true) ;;
  llama)   donor=$shared/llama-tiny.gguf ;;
  qwen2|qwen3) donor=$shared/qwen3-tiny.gguf ;;
  *) echo "bench: unknown architecture $ARCH" >&2; exit 2 ;;
esac
if [ -z "$donor" ] || [ ! -r "$donor" ]; then
  echo "bench: need a $ARCH GGUF to copy the tokenizer from (../shared/models)" >&2
  exit 1
fi
mkdir -p "$(dirname "$MODEL")"
echo "generating the $PRESET-shaped $ARCH model (once): $MODEL"
"$BIN" gen-model --arch "$ARCH" --preset "$PRESET" --quant q4_k_m --seed 1 --vocab-from "$donor" -o "$MODEL"
