"""Configuring and building the native libraries with CMake (``native/CMakeLists.txt``)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from parekit.native.paths import LIBRARY_FILES, NativeError

__all__ = ["build", "build_dir", "source_dir"]

logger = logging.getLogger(__name__)


def source_dir() -> Path | None:
    """The ``native/`` source folder of the checkout parekit runs from, or ``None`` (installed wheel)."""
    candidate = Path(__file__).resolve().parents[2] / "native"
    return candidate if (candidate / "CMakeLists.txt").is_file() else None


def build_dir() -> Path:
    """Where the libraries are built: ``$PAREKIT_NATIVE_BUILD_DIR``, else ``build/native`` of the checkout,
    else ``~/.cache/parekit/native/build``."""
    explicit = os.environ.get("PAREKIT_NATIVE_BUILD_DIR")
    if explicit:
        return Path(explicit).resolve()
    src = source_dir()
    if src is not None:
        return src.parent / "build" / "native"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "parekit" / "native" / "build"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise NativeError(f"building the native libraries needs '{name}', which is not on PATH")
    return found


def build(
    *,
    directory: Path | None = None,
    sanitize: str | None = None,
    ort_include: Path | None = None,
    werror: bool = False,
    tests: bool = True,
    jobs: int | None = None,
    extra_args: Sequence[str] = (),
    quiet: bool = True,
) -> Path:
    """Configures (first time) and builds the native libraries; incremental afterwards.

    Args:
        directory: Build folder (default :func:`build_dir`).
        sanitize: e.g. ``"address,undefined"`` (a sanitizer build should use its own folder).
        ort_include: Folder holding ``onnxruntime_c_api.h``; default: CMake searches, then fetches them.
        werror: Treat compiler warnings as errors.
        tests: Also build the ctest suite.
        jobs: Parallel build jobs (default: CMake's).
        extra_args: More ``-D`` options for the configure step.
        quiet: Capture the tools' output (shown in the error when a step fails).

    Returns:
        The path of ``libparekit_ort.so``.

    Raises:
        NativeError: No sources (installed package), a tool is missing, or a step failed.
    """
    src = source_dir()
    if src is None:
        raise NativeError(
            "the native sources are not available (parekit was installed without its native/ folder)",
            note="build from a source checkout: pip install -e . && parekit native build",
        )
    out = (directory or build_dir()).resolve()
    cmake = _tool("cmake")
    configure = [cmake, "-S", str(src), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"]
    if shutil.which("ninja") and not (out / "CMakeCache.txt").exists():
        configure += ["-G", "Ninja"]
    configure.append(f"-DPAREKIT_SANITIZE={sanitize or ''}")
    configure.append(f"-DPAREKIT_WERROR={'ON' if werror else 'OFF'}")
    configure.append(f"-DPAREKIT_BUILD_TESTS={'ON' if tests else 'OFF'}")
    if ort_include is not None:
        configure.append(f"-DPAREKIT_ORT_INCLUDE_DIR={Path(ort_include).resolve()}")
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


def _run(command: list[str], step: str, quiet: bool) -> None:
    logger.info("native %s: %s", step, " ".join(command))
    try:
        done = subprocess.run(command, capture_output=quiet, text=True, check=False)
    except OSError as exc:
        raise NativeError(f"native {step} could not start: {exc}") from exc
    if done.returncode != 0:
        tail = ""
        if quiet:
            lines = (done.stdout + done.stderr).strip().splitlines()
            errors = [ln for ln in lines if "error" in ln.lower()] or lines
            tail = errors[-1] if errors else ""
        raise NativeError(
            f"native {step} failed (exit {done.returncode})" + (f": {tail}" if tail else ""),
            note="rerun with `parekit -v native build` to see the tools' output",
        )
