#!/usr/bin/env bash
# cuda-profile.sh -- where a decode step's time goes, kernel by kernel, on
# a machine with an NVIDIA GPU and Nsight Compute (ncu).
#
#   bash scripts/cuda-profile.sh [DEPTH]
#
# Runs `smolbot bench --gpu on` on the 3B-shaped file (cuda-check makes it)
# under ncu, takes the kernels of two decode steps after the first two (the
# graph is captured there), and prints the first launches one by one (a
# layer's worth) and each kernel's mean: its duration, the bytes it read
# from device memory and the bandwidth that makes. ncu runs
# each kernel alone with cold caches (its default), so the figures are each
# kernel's own: what a graph with early launches overlaps is not in them,
# and their sum is above the step's time. The raw CSV goes to
# $PROFILE_OUT (default: a temporary folder) as decode.csv.
#
# `make cuda-profile [DEPTH=N]` runs it. SMOLBOT_BIN (default
# build/smolbot), SMOLBOT_PREBUILT and BENCH_MODEL as in cuda-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DEPTH=${1:-0}
SB=${SMOLBOT_BIN:-$PWD/build/smolbot}
if [ -n "${SMOLBOT_PREBUILT:-}" ]; then # as in cuda-check.sh: cuda-pack.sh's folder
  PRE=$(cd "$SMOLBOT_PREBUILT" && pwd)
  SB=$PRE/smolbot
  export LD_LIBRARY_PATH=$PRE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
MODEL=${BENCH_MODEL:-$HOME/.cache/smolbot/bench/smollm3-3b-q4_k_m-random.gguf}
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)
[ -n "$NCU" ] || { echo "cuda-profile: no ncu (Nsight Compute) on this machine"; exit 2; }
[ -f "$MODEL" ] || { echo "cuda-profile: no model at $MODEL (make cuda-check generates it)"; exit 2; }
OUTD=${PROFILE_OUT:-$(mktemp -d)}
mkdir -p "$OUTD"
# -p 1: the prompt is a decode step too, so every kernel launched is a
# decode kernel; skip the first two steps (the graph's capture among them:
# 36 layers x 6 kernels, + 3), take the next two
SKIP=440 COUNT=440
echo "== ncu: $NCU, depth $DEPTH"
"$NCU" --clock-control none --graph-profiling node --launch-skip "$SKIP" --launch-count "$COUNT" --print-units base \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size,launch__registers_per_thread \
  --csv --page raw "$SB" bench -m "$MODEL" --gpu on -p 1 -n 16 -d "$DEPTH" -r 1 >"$OUTD/decode.raw" 2>"$OUTD/ncu.log" ||
  { tail -20 "$OUTD/ncu.log"; echo "cuda-profile: ncu failed"; exit 1; }
# the CSV starts at its header line ("ID","Process ID",...); row 2 is units
l=$(grep -n '^"ID"' "$OUTD/decode.raw" | head -1 | cut -d: -f1)
[ -n "$l" ] || { tail -20 "$OUTD/decode.raw"; echo "cuda-profile: no CSV from ncu"; exit 1; }
tail -n +"$l" "$OUTD/decode.raw" >"$OUTD/decode.csv"
awk -F'","' '
  # ncu writes thousands separators ("25,285")
  function num(v) { gsub(/,/, "", v); return v + 0 }
  NR == 1 { for (i = 1; i <= NF; i++) { gsub(/"/, "", $i); col[$i] = i } next }
  NR == 2 { next }
  {
    for (i = 1; i <= NF; i++) gsub(/"/, "", $i)
    name = $col["Kernel Name"]; sub(/\(.*/, "", name); sub(/^void /, "", name)
    n++; nm[n] = name; ns[n] = num($col["gpu__time_duration.sum"]); by[n] = num($col["dram__bytes_read.sum"])
    gr[n] = num($col["launch__grid_size"]); rg[n] = num($col["launch__registers_per_thread"])
  }
  END {
    printf "%-4s %-18s %7s %5s %10s %12s %9s\n", "#", "kernel", "grid", "regs", "time us", "DRAM MB", "GB/s"
    for (i = 1; i <= n && i <= 16; i++)
      printf "%-4d %-18s %7s %5s %10.2f %12.3f %9.0f\n", i, nm[i], gr[i], rg[i], ns[i] / 1e3, by[i] / 1e6, (ns[i] > 0 ? by[i] / ns[i] : 0)
    for (i = 1; i <= n; i++) { t[nm[i]] += ns[i]; b[nm[i]] += by[i]; c[nm[i]]++; T += ns[i]; B += by[i] }
    printf "\nper kernel, over %d launches (about two decode steps):\n%-18s %6s %12s %12s %9s\n", n, "kernel", "count", "us each", "MB each", "GB/s"
    for (k in t) printf "%-18s %6d %12.2f %12.3f %9.0f\n", k, c[k], t[k] / c[k] / 1e3, b[k] / c[k] / 1e6, (t[k] > 0 ? b[k] / t[k] : 0)
    printf "all: %.3f ms and %.1f MB per step, alone (%.0f GB/s)\n", T / 2e6, B / 2e6, (T > 0 ? B / T : 0)
  }' "$OUTD/decode.csv"
echo "raw: $OUTD/decode.csv"
