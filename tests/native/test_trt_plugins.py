"""libparekit_trt_plugins.so: what it links and exports, its device code, and its creators in the
TensorRT 11.4 lean runtime's plugin registry (no GPU needed). Shapes, dtypes, formats and enqueue (host
emulation of the CUDA kernels) are the ctest harness's (plugins_trt/tests/plugin_tests.cpp)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from parekit.ops import all_ops


def _readelf(*args: str) -> str:
    return subprocess.run(["readelf", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)")
def test_exports_only_the_two_entry_points(trt_plugin_library):
    exported = set()
    for line in _readelf("--dyn-syms", "-W", str(trt_plugin_library)).splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[3] in ("FUNC", "OBJECT") and parts[6] != "UND" and parts[4] != "LOCAL":
            exported.add(parts[7].split("@")[0])
    assert exported == {"getCreators", "setLoggerFinder"}


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)")
def test_no_link_to_tensorrt_or_cuda_runtime(trt_plugin_library):
    """No NEEDED libnvinfer (the registry hands us what we need) and the CUDA runtime linked statically,
    so the one file loads into any TensorRT 10/11 process with a driver."""
    needed = [line for line in _readelf("-d", str(trt_plugin_library)).splitlines() if "(NEEDED)" in line]
    assert needed
    assert not any("nvinfer" in line or "cudart" in line for line in needed), needed


def _cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for candidate in Path(root).glob("cu*/bin/cuobjdump"):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


@pytest.mark.skipif(_cuobjdump() is None, reason="needs cuobjdump (pip install nvidia-cuda-cuobjdump)")
def test_device_code_for_every_architecture(trt_plugin_library):
    """Every architecture the build lists has cubins (sm_80 A100, sm_90 H100/H200, sm_100 B200)."""
    from parekit.native.status import _cache_value

    archs = (_cache_value(trt_plugin_library.parent.parent / "CMakeCache.txt", "PAREKIT_CUDA_ARCHITECTURES") or "")
    listed = subprocess.run([_cuobjdump(), "--list-elf", str(trt_plugin_library)], capture_output=True, text=True,
                            check=True).stdout
    wanted = [a.split("-")[0] for a in archs.split(";") if a]
    assert wanted, archs
    for arch in wanted:
        assert f"sm_{arch}" in listed, f"no sm_{arch} cubin in {trt_plugin_library}"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_lean") is None, reason="needs tensorrt-lean-cu13")
def test_every_op_has_a_creator_that_matches_its_opdef(trt_plugin_library):
    """Creator found by (name, version, namespace), fields == OpDef.plugin.fields, plugins created from
    defaults and from every attribute's declared minimum and maximum, refusals of bad fields."""
    from parekit.backends.trt_plugins import probe_library

    report = probe_library(trt_plugin_library)
    problems = {op["op"]: op["problems"] for op in report["ops"] if op["problems"]}
    assert not problems
    assert {op["op"] for op in report["ops"]} == {op.op_type for op in all_ops()}
    assert report["creators"] == len(all_ops())
    assert all(op["created"] >= 1 and op["refused"] >= 1 for op in report["ops"])


def _gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return sum(line.startswith("GPU ") for line in done.stdout.splitlines()) if done.returncode == 0 else 0


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_count() == 0, reason="needs a CUDA GPU (nvidia-smi -L lists none)")
def test_plugins_on_the_gpu(trt_plugin_library, native_library):
    """Every plugin's enqueue on cudaMalloc'd buffers against the reference vectors (GPU machines)."""
    harness = trt_plugin_library.parent / "parekit_plugin_tests"
    vectors = native_library.parent / "vectors"
    if not harness.is_file() or not vectors.is_dir():
        pytest.fail("build with tests and run ctest once (it exports the vectors)")
    done = subprocess.run([str(harness), "--device", "--require-all", str(vectors)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:]
