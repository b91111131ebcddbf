#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU (prepared for the H200 device machine; NOT run
# yet: no GPU was lent when it was written). Measures umad with every layer on the GPU
# against llama-bench built from the same llama.cpp source on the same GPU, and writes
# $OUT/gpu_check.md (the BENCHMARKS.md section) and $OUT/gpu_check.log.
#
#   bash scripts/gpu_check.sh --prepare   # HERE, before: packs the llama.cpp source (8 MB)
#                                         # into .gpu_check/ (git-ignored) for the device
#   bash scripts/gpu_check.sh             # ON THE GPU MACHINE (about 5-9 minutes)
#
# Run tool: carry ["node_modules", ".gpu_check"] (the device has no network: deno's npm
# packages and the source travel with the tree; deno itself must be on the device).
# CUDA libraries, first found: $UMAD_CUDA_LIB; the cached package (umad llama add cuda);
# "umad llama add cuda" (needs the npm registry); else a native CUDA build from the source
# (umad llama build --gpu cuda: needs nvcc and cmake on the device, ~5 min on 16 cores).
set -uo pipefail
cd "$(dirname "$0")/.."
SRC_TGZ=.gpu_check/llama-src.tgz

if [[ "${1:-}" == "--prepare" ]]; then
  src=$(deno eval 'import { ensureLlamaSource } from "./src/llm/llama_source.ts"; console.log(await ensureLlamaSource())')
  mkdir -p .gpu_check
  tar -C "$(dirname "$src")" --exclude=.git --exclude=models --exclude=docs --exclude=media \
    --exclude=examples --exclude=tests --exclude=tools/ui -czf "$SRC_TGZ" "$(basename "$src")"
  ls -la "$SRC_TGZ"
  exit 0
fi

OUT=${OUT:-/tmp/umad-gpu-check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
step() { echo "== $(date +%T) $*"; }
fail() { echo "gpu check: $*"; exit 1; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || fail "nvidia-smi failed: no NVIDIA driver?"
command -v deno >/dev/null || fail "deno is not on PATH (npm i -g deno@2.9.6, or carry it)"
deno --version | head -1
nproc
JOBS=$(nproc)
umad() { deno run -A main.ts "$@"; }
cache=$(deno eval 'import { cacheDir } from "./src/llm/synthetic_model.ts"; console.log(cacheDir())')

step "CUDA libraries"
lib="${UMAD_CUDA_LIB:-}"
bench="" bench_cwd="" ld_path=""
if [[ -z "$lib" && -f "$cache/llama/prebuilt/linux-x64-cuda-3.21.1/.complete" ]]; then
  lib="$cache/llama/prebuilt/linux-x64-cuda-3.21.1"
fi
if [[ -z "$lib" ]] && timeout 300 deno run -A main.ts llama add cuda; then
  lib="$cache/llama/prebuilt/linux-x64-cuda-3.21.1"
fi
if [[ -z "$lib" ]]; then
  echo "no CUDA package: building from the bundled source"
  if [[ -f "$SRC_TGZ" ]]; then
    mkdir -p "$cache/llama.cpp" && tar -C "$cache/llama.cpp" -xzf "$SRC_TGZ"
  fi
  command -v nvcc >/dev/null || export PATH="$PATH:/usr/local/cuda/bin"
  umad llama build --gpu cuda --jobs "$JOBS" || fail "umad llama build --gpu cuda failed (see above)"
  lib=$(ls -d "$cache"/llama/native/v0.4.0-cuda-*/lib | head -1)
  tree="$(dirname "$lib")/build"
  step "llama-bench in the same build tree (same source, same CUDA build)"
  cmake "$tree" -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON >/dev/null &&
    cmake --build "$tree" --target llama-bench -j "$JOBS" >"$OUT/llama-bench-build.log" 2>&1 ||
    fail "building llama-bench failed: $OUT/llama-bench-build.log"
  bench="$tree/bin/llama-bench"
fi
echo "CUDA libraries: $lib"
umad devices --llama-lib "$lib" || fail "umad devices failed on $lib"

if [[ -z "$bench" ]]; then
  step "llama-bench from the same source, run on the package's libraries"
  src="$cache/llama.cpp/src-node-llama-cpp-3.21.1"
  [[ -d "$src" ]] || { mkdir -p "$cache/llama.cpp" && tar -C "$cache/llama.cpp" -xzf "$SRC_TGZ"; } ||
    fail "no llama.cpp source: run scripts/gpu_check.sh --prepare and carry .gpu_check"
  tree="$OUT/llama-bench-build"
  cmake -S "$src" -B "$tree" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON \
    -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF >/dev/null &&
    cmake --build "$tree" --target llama-bench -j "$JOBS" >"$OUT/llama-bench-build.log" 2>&1 ||
    fail "building llama-bench failed: $OUT/llama-bench-build.log"
  bench="$tree/bin/llama-bench"
  # Its libllama/libggml are swapped for the package's (cmake's names as links), and it runs
  # in the package's folder, where ggml_backend_load_all finds the CUDA and CPU backends.
  ld_path="$OUT/llama-bench-libs"
  mkdir -p "$ld_path"
  ln -sf "$lib/libllama.cuda.v0.4.0.so" "$ld_path/libllama.so.0"
  ln -sf "$lib/libggml.cuda.v0.4.0.so" "$ld_path/libggml.so.0"
  ln -sf "$lib/libggml-base.so" "$ld_path/libggml-base.so.0"
  bench_cwd="$lib"
fi

step "umad vs llama-bench"
args=("$lib" "$bench")
[[ -n "$bench_cwd" ]] && args+=(--cwd "$bench_cwd")
[[ -n "$ld_path" ]] && args+=(--ld-path "$ld_path")
deno run -A scripts/gpu_check.ts "${args[@]}" >"$OUT/gpu_check.md" || fail "gpu_check.ts failed"
cat "$OUT/gpu_check.md"
step "done: $OUT/gpu_check.md"
