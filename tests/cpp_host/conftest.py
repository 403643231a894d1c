"""The C++ host (samples/cpp), built once per session, and a runner for it.

The build goes to ``build/cpp_host`` at the repository root (incremental: seconds when up to date) with
``-j1``; the tests skip with one reason where CMake or a C++ compiler is missing. The host dlopens the
ONNX Runtime library of the ``onnxruntime`` wheel this Python imports, so both sides run the same
ONNX Runtime release.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "samples" / "cpp"
BUILD = ROOT / "build" / "cpp_host"


def ort_wheel_library() -> Path:
    """``onnxruntime/capi/libonnxruntime.so.<version>`` of the imported wheel."""
    import onnxruntime

    found = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*")))
    if not found:
        pytest.skip("the onnxruntime wheel holds no capi/libonnxruntime.so.<version> to dlopen")
    return Path(found[-1])


def build_host() -> Path:
    """Configure and build samples/cpp; returns the ``parekit-host`` binary (a failed build fails)."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            pytest.skip(f"no '{tool}' on PATH: the C++ host cannot be built here")
    generator = ["-G", "Ninja"] if shutil.which("ninja") and not (BUILD / "Makefile").exists() else []
    steps = [
        ["cmake", "-S", str(SOURCE), "-B", str(BUILD), *generator, f"-DPAREKIT_HOST_ORT_LIBRARY={ort_wheel_library()}"],
        ["cmake", "--build", str(BUILD), "-j1"],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return BUILD / "parekit-host"


@pytest.fixture(scope="session")
def host_binary() -> Path:
    return build_host()


HostRun = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def run_host(host_binary: Path) -> HostRun:
    """``run_host(command, model, prompts, *, max_new_tokens=8, custom_ops=None, extra=()) -> dict``: the
    host's ``--json`` answer (``generate``: tokens and rates; ``encode``: output files)."""
    library = ort_wheel_library()

    def run(
        command: str,
        model: Path,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 8,
        custom_ops: Path | None = None,
        extra: Sequence[str] = (),
    ) -> dict[str, Any]:
        cmd = [str(host_binary), command, str(model), "--json", "--ort", str(library), *extra]
        if command == "generate":
            cmd += ["--max-new-tokens", str(max_new_tokens)]
        for prompt in prompts:
            cmd += ["--ids", ",".join(str(t) for t in prompt)]
        if custom_ops is not None:
            cmd += ["--custom-ops", str(custom_ops)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}"
        return dict(json.loads(done.stdout))

    return run


@pytest.fixture(scope="session")
def ort_custom_ops() -> Path:
    """``libparekit_ort.so`` as Python sessions find it (``$PAREKIT_ORT_LIBRARY`` or the native build)."""
    from parekit.native import NativeError
    from parekit.native.paths import library_path

    try:
        path = library_path("ort")
    except NativeError as exc:
        pytest.skip(exc.message)
    if path is None:
        pytest.skip("libparekit_ort.so is not built (parekit native build, or set PAREKIT_ORT_LIBRARY)")
    return path


@pytest.fixture(scope="session")
def optimized(sample_path, tmp_path_factory) -> Callable[[str, int, str], Path]:
    """``optimized(sample, opset, pipeline) -> Path`` of the rewritten model ('' = the export), cached."""
    from parekit.backends.save import save_model
    from parekit.frontends.onnx_file import load_model
    from parekit.passes import PassContext, run_pipeline

    cache: dict[tuple[str, int, str], Path] = {}

    def get(name: str, opset: int, pipeline: str) -> Path:
        key = (name, opset, pipeline)
        if key not in cache:
            path = sample_path(name, opset)
            if pipeline:
                model = run_pipeline(load_model(path), pipeline, PassContext()).model
                path = save_model(model, tmp_path_factory.mktemp("cpp_host") / "model.onnx")
            cache[key] = path
        return cache[key]

    return get
