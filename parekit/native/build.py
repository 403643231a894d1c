"""Configuring and building the native libraries with CMake (``native/CMakeLists.txt``)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from parekit.native.paths import LIBRARY_FILES, NativeError, build_dir, sanitizer_build_dir, source_dir

__all__ = ["build", "build_dir", "run_tests", "sanitizer_build_dir", "source_dir"]

logger = logging.getLogger(__name__)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise NativeError(f"building the native libraries needs '{name}', which is not on PATH")
    return found


def _on(flag: bool) -> str:
    return "ON" if flag else "OFF"


def build(
    *,
    directory: Path | None = None,
    sanitize: str | None = None,
    ort_include: Path | None = None,
    trt_include: Path | None = None,
    werror: bool | None = None,
    tests: bool | None = None,
    jobs: int | None = None,
    clean: bool = False,
    extra_args: Sequence[str] = (),
    quiet: bool = True,
) -> Path:
    """Configures (first time) and builds the native libraries; incremental afterwards.

    Options left ``None`` keep what the build folder was configured with (CMake's defaults the first
    time), so a plain rebuild never flips a CI build's ``-Werror`` or sanitizers.

    Args:
        directory: Build folder (default :func:`build_dir`, or :func:`sanitizer_build_dir` with
            ``sanitize``).
        sanitize: e.g. ``"address,undefined"``; ``""`` turns sanitizers off in that folder.
        ort_include: Folder holding ``onnxruntime_c_api.h``; default: CMake searches, then fetches them.
        trt_include: Folder holding ``NvInferRuntime.h`` (your TensorRT SDK) for the plugin library
            (built where nvcc exists); default: CMake searches, then kernel-lens's TensorRT 10.14 headers.
        werror: Treat compiler warnings as errors.
        tests: Also build the ctest suite (CMake's default: yes).
        jobs: Parallel build jobs (default: CMake's).
        clean: Remove the build folder first (only a CMake build folder: one holding ``CMakeCache.txt``).
        extra_args: More ``-D`` options for the configure step.
        quiet: Capture the tools' output (its last error line goes into the error when a step fails);
            ``False`` streams it to stderr.

    Returns:
        The path of ``libparekit_ort.so``.

    Raises:
        NativeError: No sources (installed package), a tool is missing, the folder to clean is not a
            build folder, or a step failed.
    """
    src = source_dir()
    if src is None:
        raise NativeError(
            "the native sources are not available (parekit was installed without its native/ folder)",
            note="build from a source checkout: pip install -e . && parekit native build",
        )
    default = sanitizer_build_dir() if sanitize else build_dir()
    out = (Path(directory) if directory is not None else default).resolve()
    cmake = _tool("cmake")
    if clean:
        _clean(out)
    if out.exists() and not out.is_dir():
        raise NativeError(f"build folder {out} is not a folder")
    fresh = not (out / "CMakeCache.txt").exists()
    configure = [cmake, "-S", str(src), "-B", str(out), "-DPAREKIT_BUILD_ORT=ON"]
    if fresh:
        configure.append("-DCMAKE_BUILD_TYPE=Release")
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        configure.append(f"-DPython3_EXECUTABLE={sys.executable}")  # the vectors come from this parekit
    if sanitize is not None:
        configure.append(f"-DPAREKIT_SANITIZE={sanitize}")
    if werror is not None:
        configure.append(f"-DPAREKIT_WERROR={_on(werror)}")
    if tests is not None:
        configure.append(f"-DPAREKIT_BUILD_TESTS={_on(tests)}")
    if ort_include is not None:
        include = Path(ort_include).resolve()
        if not (include / "onnxruntime_c_api.h").is_file():
            raise NativeError(f"--ort-include {include} holds no onnxruntime_c_api.h",
                              note="give the include folder of an ONNX Runtime SDK")
        configure.append(f"-DPAREKIT_ORT_INCLUDE_DIR={include}")
    if trt_include is not None:
        include = Path(trt_include).resolve()
        if not (include / "NvInferRuntime.h").is_file():
            raise NativeError(f"--trt-include {include} holds no NvInferRuntime.h",
                              note="give the include folder of a TensorRT SDK")
        configure.append(f"-DPAREKIT_TRT_INCLUDE_DIR={include}")
    configure += list(extra_args)
    _run(configure, "configure", quiet)
    command = [cmake, "--build", str(out)]
    if jobs:
        command += ["--parallel", str(jobs)]
    _run(command, "build", quiet)
    library = out / LIBRARY_FILES["ort"]
    if not library.is_file():
        raise NativeError(f"the build finished but {library} is missing")
    return library


def run_tests(directory: Path | None = None, *, quiet: bool = True) -> None:
    """Runs the ctest suite of a build folder (kernels against the NumPy reference's vectors).

    Raises:
        NativeError: ``ctest`` is missing, the folder was not configured with tests, or a test failed.
    """
    out = (Path(directory) if directory is not None else build_dir()).resolve()
    if not (out / "CTestTestfile.cmake").is_file():
        raise NativeError(f"{out} holds no ctest suite", note="build it first: parekit native build")
    _run([_tool("ctest"), "--test-dir", str(out), "--output-on-failure"], "ctest", quiet)


def _clean(out: Path) -> None:
    if not out.exists():
        return
    if not (out / "CMakeCache.txt").is_file():
        raise NativeError(f"refusing to clean {out}: it is not a CMake build folder (no CMakeCache.txt)",
                          note="give --build-dir a folder that CMake made, or remove it yourself")
    logger.info("native: removing the build folder %s", out)
    shutil.rmtree(out)


def _run(command: list[str], step: str, quiet: bool) -> None:
    logger.info("native %s: %s", step, " ".join(command))
    try:
        if quiet:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        else:  # the tools' output goes to stderr: stdout stays parekit's
            done = subprocess.run(command, stdout=_stderr_fd(), stderr=None, text=True, check=False)
    except OSError as exc:
        raise NativeError(f"native {step} could not start: {exc}") from exc
    if done.returncode != 0:
        tail = ""
        if quiet:
            lines = ((done.stdout or "") + (done.stderr or "")).strip().splitlines()
            errors = [ln for ln in lines if "error" in ln.lower()] or lines
            tail = errors[0] if errors else ""
        raise NativeError(
            f"native {step} failed (exit {done.returncode})" + (f": {tail}" if tail else ""),
            note="rerun with `parekit -v native build` to see the tools' output" if quiet else None,
        )


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stderr (tests): the tools keep fd 2
        return 2
