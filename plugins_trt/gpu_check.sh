#!/usr/bin/env bash
# GPU check of the CUDA kernels and TensorRT plugins, for a CUDA machine without TensorRT (< 5 minutes):
# builds native/ with the plugins for this GPU's architecture, then runs every plugin's enqueue on
# cudaMalloc'd buffers (parekit_plugin_tests --device) against the NumPy reference vectors, once plainly
# and once under compute-sanitizer (memcheck) where it exists.
#
#   bash plugins_trt/gpu_check.sh [VECTORS_DIR]
#
# VECTORS_DIR: vectors exported elsewhere (python -m tests.native.export_vectors DIR) for machines where
# parekit's Python dependencies are missing; default: build/native/vectors, exported here when parekit
# imports. TensorRT headers: PAREKIT_TRT_INCLUDE_DIR, else kernel-lens (pip install --no-deps kernel-lens).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${PAREKIT_GPU_BUILD:-build/gpu-check}
start=$SECONDS
command -v nvcc >/dev/null || { echo "gpu_check: no nvcc" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader || true
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
arch=${arch:-90}
vectors=${1:-}
args=()
if [[ -n "$vectors" ]]; then args+=(-DPAREKIT_VECTORS_DIR="$(realpath "$vectors")"); fi
if [[ -n "${PAREKIT_TRT_INCLUDE_DIR:-}" ]]; then args+=(-DPAREKIT_TRT_INCLUDE_DIR="$PAREKIT_TRT_INCLUDE_DIR"); fi
gen=(); command -v ninja >/dev/null && [[ ! -f "$out/CMakeCache.txt" ]] && gen=(-G Ninja)
cmake -S native -B "$out" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DPAREKIT_WERROR=ON -DPAREKIT_BUILD_ORT=OFF \
  -DPAREKIT_CUDA_ARCHITECTURES="$arch" "${args[@]}" >"$out.configure.log" 2>&1 || { cat "$out.configure.log"; exit 1; }
cmake --build "$out" --parallel
[[ -x "$out/plugins_trt/parekit_plugin_tests" ]] || { echo "gpu_check: the plugin harness was not built (TensorRT headers?)" >&2; exit 1; }
if [[ -z "$vectors" ]]; then
  vectors="$out/vectors"
  python3 -m tests.native.export_vectors "$vectors"
fi
echo "::: CPU twins (host)"; "$out/tests/parekit_kernel_tests" --require-all "$vectors" | tail -1
echo "::: plugins, host emulation"; "$out/plugins_trt/parekit_plugin_tests" --require-all "$vectors" | tail -1
echo "::: plugins on the GPU (sm_$arch)"; "$out/plugins_trt/parekit_plugin_tests" --device --require-all "$vectors"
if command -v compute-sanitizer >/dev/null; then
  echo "::: compute-sanitizer memcheck"
  compute-sanitizer --tool memcheck --error-exitcode 9 "$out/plugins_trt/parekit_plugin_tests" --device "$vectors" | tail -3
fi
echo "::: gpu_check passed in $((SECONDS - start)) s"
