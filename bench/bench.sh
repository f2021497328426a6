#!/usr/bin/env bash
# bench.sh MODEL -- `make bench`: the 3B-shaped model benchmark (one
# conversation, then batched steps), the Llama 3.2 3B and Qwen3 4B shapes,
# then the micro-benchmarks.
#
# The model is the file `smolbot gen-model --preset 3b --quant q4_k_m`
# writes (same shapes and quant types as SmolLM3-3B Q4_K_M, random weights),
# generated once into the cache path given (outside git). The tokenizer is
# copied from a donor: ../shared's tiny model, or any SmolLM3 GGUF in the
# models directory. Threads: THREADS (default: all cores), also 1 thread.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1
BIN=build/smolbot
THREADS=${THREADS:-$(nproc)}
bash bench/model.sh "$MODEL"
echo "== model: prefill 512, decode 64 at depths 0, 2048, 4096; $THREADS threads"
"$BIN" bench -m "$MODEL" -p 512 -n 64 -d 0,2048,4096 -t "$THREADS" -r 2
echo "== model: the same depths with the 8-bit KV cache (--kv q8: half the cache bytes per token)"
"$BIN" bench -m "$MODEL" -p 64 -n 64 -d 0,2048,4096 -t "$THREADS" -r 2 --kv q8
echo "== model: batched steps (several conversations decoding, a prompt chunk beside them)"
build/bench-batch "$MODEL" "$THREADS"
if [ "$THREADS" != 1 ]; then
  echo "== model: 1 thread"
  "$BIN" bench -m "$MODEL" -p 128 -n 32 -d 0 -t 1 -r 1
fi
# The other families through the same forward pass: Llama 3.2 3B and
# Qwen3 4B shapes, generated next to the SmolLM3 file.
echo "== families: prefill 512, decode 64 at depth 0; $THREADS threads"
for fam in llama:3b qwen3:4b; do
  arch=${fam%%:*} preset=${fam#*:}
  fm="$(dirname "$MODEL")/$arch-$preset-q4_k_m-random.gguf"
  if bash bench/model.sh "$fm" "$arch" "$preset"; then
    "$BIN" bench -m "$fm" -p 512 -n 64 -d 0 -t "$THREADS" -r 2
  else
    echo "(no $arch tokenizer to copy: skipped)"
  fi
done
echo "== kernels"
"$BIN" bench --kernels -t "$THREADS" --quick
echo "== tokenizer"
"$BIN" bench --tokenizer -m "$MODEL"
