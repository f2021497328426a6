#!/usr/bin/env bash
# cuda-pack.sh DIR -- what `make cuda-check` needs on a GPU machine that
# cannot build smolbot (no Debian packages there, no network): build here
# with CUDA and put into DIR
#   smolbot, smolbot-bench (with the kernel probes), test_gpu, test_gpu_san
#               the CUDA build (cudart is static)
#   lib/        every shared library they load except the C library's own
#               (libc, libm, ld-linux, ...): libmicrohttpd, jansson, curl
#               and its TLS stack, sqlite, md4c, the sanitizer runtimes
#   shared/     the reference files the GPU tests read, from ../shared
#               (SMOLBOT_SHARED): the tiny Q4_K_M model and refdata/model;
#               the 151 MB f32 model only with CUDA_PACK_F32=1
#   BUILD       the commit and nvcc version it was built from
# To move it where transfers are limited: tar -cJf DIR.tar.xz DIR (about
# 45 MB). Then, on the GPU machine, in a checkout of the same commit:
#   SMOLBOT_PREBUILT=DIR make cuda-check
# The build machine and the GPU machine must both be x86-64 Linux with a
# glibc at least as new on the GPU side. Prints DIR's size at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: cuda-pack.sh DIR}
ARCH=${CUDA_ARCH:-sm_90}
SHARED=${SMOLBOT_SHARED:-../shared}
make -j"$(nproc)" CUDA=1 CUDA_ARCH="$ARCH" build/smolbot build/smolbot-bench build/rel/test_gpu build/san/test_gpu >/dev/null
rm -rf "$DIR"
mkdir -p "$DIR/lib" "$DIR/shared/models" "$DIR/shared/refdata"
cp build/smolbot "$DIR/smolbot"
cp build/smolbot-bench "$DIR/smolbot-bench"
cp build/rel/test_gpu "$DIR/test_gpu"
cp build/san/test_gpu "$DIR/test_gpu_san"
strip --strip-debug "$DIR/smolbot" "$DIR/smolbot-bench" "$DIR/test_gpu"
# the libraries ldd resolves, less glibc's (the GPU machine has its own)
for b in "$DIR/smolbot" "$DIR/test_gpu" "$DIR/test_gpu_san"; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*|libresolv.so.*) ;;
    *) cp -L "$lib" "$DIR/lib/" ;;
  esac
done
if [ -d "$SHARED/models" ]; then
  cp "$SHARED/models/smollm3-tiny-q4_k_m.gguf" "$DIR/shared/models/"
  [ "${CUDA_PACK_F32:-0}" = 1 ] && cp "$SHARED/models/smollm3-tiny-f32.gguf" "$DIR/shared/models/"
  cp -r "$SHARED/refdata/model" "$DIR/shared/refdata/"
else
  echo "cuda-pack: $SHARED absent: the golden tests will skip" >&2
fi
echo "$(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), $("${NVCC:-${CUDA_HOME:-/usr/local/cuda}/bin/nvcc}" --version | tail -1), $ARCH" >"$DIR/BUILD"
du -sh "$DIR"
