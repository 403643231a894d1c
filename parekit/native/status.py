"""What native support this machine has: built libraries, ONNX Runtime, TensorRT, compilers."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from typing import Any

from parekit.native.build import build_dir, source_dir
from parekit.native.paths import LIBRARY_FILES, NativeError, describe_library, library_path

__all__ = ["status"]


def _version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version(command: list[str], pattern: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


def status() -> dict[str, Any]:
    """A JSON-ready summary: ``libraries`` (per kind: path, built, ops, C API version), ``runtimes``
    (onnxruntime, TensorRT packages), ``tools`` (cmake, c++, nvcc), ``source`` and ``build_dir``."""
    libraries: dict[str, Any] = {}
    for kind, filename in LIBRARY_FILES.items():
        entry: dict[str, Any] = {"file": filename, "built": False, "path": None}
        try:
            path = library_path(kind)
        except NativeError as exc:
            entry["error"] = str(exc)
            path = None
        if path is not None:
            entry.update(built=True, path=str(path))
            try:
                described = describe_library(path)
                entry["ops"] = sorted({op["name"] for op in described.get("ops", [])})
                entry["ort_api_version"] = described.get("ort_api_version")
            except NativeError as exc:
                entry["error"] = str(exc)
        libraries[kind] = entry
    runtimes = {
        name: _version_of(name)
        for name in ("onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-rtx", "tensorrt-lean-cu13")
    }
    tools = {
        "cmake": _tool_version(["cmake", "--version"], r"version (\S+)"),
        "c++": _tool_version(["c++", "--version"], r"(\d+\.\d+(?:\.\d+)?)"),
        "nvcc": _tool_version(["nvcc", "--version"], r"release (\S+?),"),
        "ninja": _tool_version(["ninja", "--version"], r"(\S+)"),
    }
    src = source_dir()
    return {
        "libraries": libraries,
        "runtimes": runtimes,
        "tools": tools,
        "source": str(src) if src else None,
        "build_dir": str(build_dir()),
    }
