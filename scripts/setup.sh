#!/usr/bin/env bash
# Installs parekit with everything its samples and tests need, from this repository's files only, then
# builds the native kernel library (libparekit_ort.so) into build/native with CMake; where nvcc exists
# also the CUDA kernels and the TensorRT plugin library (build/native/plugins_trt/libparekit_trt_plugins.so,
# against kernel-lens's TensorRT 10.14 headers unless CMAKE_ARGS gives -DPAREKIT_TRT_INCLUDE_DIR).
# torch is pinned (parekit[samples]) to the CPU build 2.13.0; an unpinned torch pulls a CUDA build.
#
#   bash scripts/setup.sh [--werror]     --werror: compiler warnings are errors (CI)
#
# The library needs CMake >= 3.18 and a C++17 compiler; the ONNX Runtime C API headers are found
# (CMAKE_ARGS="-DPAREKIT_ORT_INCLUDE_DIR=DIR" for your own SDK) or fetched from Debian's
# libonnxruntime-dev into the build folder (nothing installed system-wide). A failed build fails the set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
werror=OFF
for arg in "$@"; do
  case "$arg" in
    --werror) werror=ON ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
"$PY" -m pip install -q --disable-pip-version-check -e ".[dev]"
"$PY" -m pip install -q --disable-pip-version-check --no-deps -r requirements/samples-no-deps.txt
"$PY" -m pip install -q --disable-pip-version-check --no-deps -r requirements/build-no-deps.txt

for tool in cmake c++; do
  command -v "$tool" >/dev/null || { echo "setup.sh: '$tool' not found: the native library needs CMake and a C++17 compiler" >&2; exit 1; }
done
mkdir -p build
generator=()
if [[ ! -f build/native/CMakeCache.txt ]] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of -D options
cmake -S native -B build/native "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DPAREKIT_WERROR="$werror" \
  -DPython3_EXECUTABLE="$(command -v "$PY")" ${CMAKE_ARGS:-} >build/native-configure.log 2>&1 \
  || { cat build/native-configure.log >&2; echo "setup.sh: configuring the native library failed (log above)" >&2; exit 1; }
cmake --build build/native || { echo "setup.sh: building the native library failed (compiler output above)" >&2; exit 1; }
echo "setup.sh: built $(pwd)/build/native/libparekit_ort.so"
if [[ -f build/native/plugins_trt/libparekit_trt_plugins.so ]]; then
  echo "setup.sh: built $(pwd)/build/native/plugins_trt/libparekit_trt_plugins.so"
fi
# The C++ host (samples/cpp): runs optimized models through a dlopen'd ONNX Runtime (the wheel's library);
# its TensorRT program is compiled where nvcc and the TensorRT headers are found.
host_generator=()
if [[ ! -f build/cpp_host/CMakeCache.txt ]] && command -v ninja >/dev/null; then host_generator=(-G Ninja); fi
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of -D options
cmake -S samples/cpp -B build/cpp_host "${host_generator[@]}" -DCMAKE_BUILD_TYPE=Release -DPAREKIT_HOST_WERROR="$werror" \
  -DPython3_EXECUTABLE="$(command -v "$PY")" ${CMAKE_ARGS:-} >build/cpp_host-configure.log 2>&1 \
  || { cat build/cpp_host-configure.log >&2; echo "setup.sh: configuring the C++ host failed (log above)" >&2; exit 1; }
cmake --build build/cpp_host || { echo "setup.sh: building the C++ host failed (compiler output above)" >&2; exit 1; }
echo "setup.sh: built $(pwd)/build/cpp_host/parekit-host"
# The local Triton server of the serving tests (nvidia-pytriton pins numpy<2: a venv of its own,
# build/triton-venv, from requirements/triton-venv.txt). PAREKIT_NO_TRITON=1 skips it (those tests then skip).
if [[ "${PAREKIT_NO_TRITON:-0}" != 1 ]]; then
  PYTHON="$PY" bash scripts/triton_venv.sh build/triton-venv
fi
