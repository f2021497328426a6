#!/usr/bin/env bash
# cuda-check.sh -- `make cuda-check`: the whole CUDA backend in one run on
# a machine with an NVIDIA GPU.
#
#   1. build with CUDA (make CUDA=1; CUDA_ARCH, default sm_90; CUDA_HOME)
#   2. the GPU tests, unsanitized, then under ASan/UBSan: on a GPU machine a
#      skipped test counts as a failure (it means the GPU was not used)
#   3. the 3B-shaped Q4_K_M model (bench/model.sh: generated once, cached)
#   4. smolbot bench --gpu on: prefill 512 and 2048, decode at depth 0,
#      2048, 8192; a table with the bandwidth each decode figure implies and
#      the goals / llama.cpp's H200 figures beside it (docs/performance.md).
#   5. smolbot bench --kernels --gpu on in the bench build (each kernel
#      alone on the 3B shapes).
# (`make cuda-profile`, scripts/cuda-profile.sh, then shows each decode
# kernel's own time and bandwidth under Nsight Compute.)
# Designed to finish in under 8 minutes on a 16-core H100/H200 machine (the
# model generation is the long step, once). Exit status: nonzero on any
# build or test failure.
#
# A GPU machine that cannot build (no Debian packages, no network): run
# `bash scripts/cuda-pack.sh DIR` on a Debian machine, copy the repo with
# DIR to the GPU machine, and there `SMOLBOT_PREBUILT=DIR make cuda-check`
# runs the same steps with DIR's binaries, libraries and reference files.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${CUDA_ARCH:-sm_90}
MODEL=${BENCH_MODEL:-$HOME/.cache/smolbot/bench/smollm3-3b-q4_k_m-random.gguf}
JOBS=$(nproc)
# reference files: ../shared next to the repo, or shared/ inside it
if [ -z "${SMOLBOT_SHARED:-}" ] && [ ! -d ../shared ] && [ -d shared ]; then export SMOLBOT_SHARED=$PWD/shared; fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

stamp "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"

PRE=${SMOLBOT_PREBUILT:-}
if [ -n "$PRE" ]; then
  PRE=$(cd "$PRE" && pwd)
  stamp "== prebuilt: $PRE ($(cat "$PRE/BUILD" 2>/dev/null || echo '?'))"
  export SMOLBOT_BIN=$PRE/smolbot LD_LIBRARY_PATH=$PRE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  [ -d "$PRE/shared" ] && [ ! -d ../shared ] && export SMOLBOT_SHARED=$PRE/shared
  TEST_GPU=$PRE/test_gpu TEST_GPU_SAN=$PRE/test_gpu_san SB_BENCH=$PRE/smolbot-bench
else
  stamp "== build: make CUDA=1 CUDA_ARCH=$ARCH"
  # `make deps` first, as `make` does: the Debian libraries of the binary
  # (installed as root, else the apt-get line is printed and we stop)
  make deps
  make -j"$JOBS" CUDA=1 CUDA_ARCH="$ARCH" build/smolbot build/smolbot-bench build/rel/test_gpu build/san/test_gpu \
    >"$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; echo "cuda-check: build failed"; exit 1; }
  export SMOLBOT_BIN=$PWD/build/smolbot
  TEST_GPU=build/rel/test_gpu TEST_GPU_SAN=build/san/test_gpu SB_BENCH=$PWD/build/smolbot-bench
fi
SB=$SMOLBOT_BIN

fail=0
run_tests() { # name, command...
  local name=$1; shift
  stamp "== $name"
  set +e
  "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  set -e
  local summary
  summary=$(tail -1 "$OUT/$name.log")
  if [ "$rc" != 0 ]; then echo "cuda-check: $name failed (exit $rc)"; fail=1; fi
  # a skip means the GPU was not used -- a failure here -- unless it names
  # a reference file that is absent (it says so above, and is reported)
  if grep 'SKIP' "$OUT/$name.log" | grep -vq 'absent'; then
    echo "cuda-check: $name skipped tests on a GPU machine: $summary"; fail=1
  elif grep -q 'SKIP' "$OUT/$name.log"; then
    echo "cuda-check: note: $name skipped tests whose reference files are absent"
  fi
}
run_tests test_gpu "$TEST_GPU"
# ASan reserves the address range CUDA maps (protect_shadow_gap=0 lets the
# driver in); the driver's own allocations are not ours to leak-check.
ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=0:${ASAN_OPTIONS:-} run_tests test_gpu_san "$TEST_GPU_SAN"

stamp "== model: $MODEL"
bash bench/model.sh "$MODEL"

stamp "== bench: prefill 512, decode 128 at depths 0, 2048, 8192; prefill 2048"
"$SB" bench -m "$MODEL" --gpu on -p 512 -n 128 -d 0,2048,8192 -r 3 | tee "$OUT/default.txt"
"$SB" bench -m "$MODEL" --gpu on -p 512 -n 128 -d 0,2048,8192 -r 3 --json >"$OUT/default.json"
"$SB" bench -m "$MODEL" --gpu on -p 2048 -n 16 -d 0 -r 2 --json >"$OUT/default.2048.json"
stamp "== kernels: smolbot-bench bench --kernels --gpu on"
"$SB_BENCH" bench --kernels --gpu on || { echo "cuda-check: the kernel bench failed"; fail=1; }

# A few numbers out of the JSON without jq/python (one object per file).
num() { grep -o "\"$2\": *[0-9.]*" "$1" | head -1 | sed 's/.*: *//'; }
dep() { grep -o "\"$2\": *[0-9.]*" <(grep -o '"decode_tok_s": {[^}]*}' "$1") | sed 's/.*: *//'; }
W=$(num "$OUT/default.json" weight_gb)
DEV=$(grep -o '"device": *"[^"]*"' "$OUT/default.json" | sed 's/.*: *"//; s/"$//')
# KV bytes read per token at depth d for the 3B shape: K and V, f16, 36 layers, 4 KV heads x 128
kvgb() { echo "$1" | awk '{printf "%.3f", 2*2*36*512*$1/1e9}'; }
echo
echo "device: $DEV   weights read per token: $W GB"
printf '%-14s %10s %13s %12s %15s\n' "" "tok/s" "implied GB/s" "goal (H200)" "llama.cpp H200"
implied() { awk -v v="$1" -v w="$W" -v k="$(kvgb "$2")" 'BEGIN{printf "%.0f", v*(w+k)}'; }
row() { printf '%-14s %10.1f %13s %12s %15s\n' "$@"; } # label, value, implied, goal, llama.cpp
for d in 0 2048 8192; do
  v=$(dep "$OUT/default.json" "$d")
  goal=-; [ "$d" = 0 ] && goal=600; [ "$d" = 8192 ] && goal=550
  ref=408; [ "$d" = 2048 ] && ref=390; [ "$d" = 8192 ] && ref=359
  row "decode @$d" "$v" "$(implied "$v" "$d")" "$goal" "$ref"
done
row "prefill 512" "$(num "$OUT/default.json" prefill_tok_s)" "-" 15300 15300
row "prefill 2048" "$(num "$OUT/default.2048.json" prefill_tok_s)" "-" - 16700
stamp "== done"
if [ "$fail" != 0 ]; then echo "cuda-check: FAILED (see above)"; exit 1; fi
echo "cuda-check: ok"
