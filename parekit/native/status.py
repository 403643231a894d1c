"""What native support this machine has: built libraries, ONNX Runtime, TensorRT, compilers, headers."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from parekit.native.paths import (
    LIBRARY_FILES,
    NativeError,
    build_dir,
    describe_library,
    library_path,
    source_dir,
)

__all__ = ["header_info", "runtimes", "status", "tools"]

_RUNTIME_PREFIXES = ("onnxruntime", "tensorrt")
_TOOLS = {  # name -> (command, version pattern)
    "cmake": (["cmake", "--version"], r"version (\S+)"),
    "ninja": (["ninja", "--version"], r"(\S+)"),
    "c++": (["c++", "--version"], r"(\d+\.\d+(?:\.\d+)?)"),
    "nvcc": (["nvcc", "--version"], r"release (\S+?),"),
}


def runtimes() -> dict[str, str]:
    """Installed ONNX Runtime and TensorRT distributions (``onnxruntime``, ``onnxruntime-gpu``,
    ``tensorrt*``) by name, with their versions."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith(_RUNTIME_PREFIXES) and not name.endswith(("-libs", "-bindings")):
            found[name] = dist.version
    return dict(sorted(found.items()))


def _tool(command: list[str], pattern: str) -> dict[str, str] | None:
    path = shutil.which(command[0])
    if path is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
        match = re.search(pattern, done.stdout + done.stderr)
        version = match.group(1) if match else "unknown"
        first = (done.stdout + done.stderr).strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        version, first = "unknown", []
    entry = {"path": str(Path(path).resolve()), "version": version}
    if command[0] == "c++" and first:
        entry["id"] = first[0][:120]  # e.g. "c++ (Debian 12.2.0-14) 12.2.0"
    return entry


def tools() -> dict[str, dict[str, str] | None]:
    """The build tools on ``PATH`` (cmake, ninja, c++, nvcc): path and version, or ``None``."""
    return {name: _tool(command, pattern) for name, (command, pattern) in _TOOLS.items()}


def _cache_value(cache: Path, key: str) -> str | None:
    try:
        text = cache.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(rf"^{re.escape(key)}:[A-Z]+=(.*)$", text, flags=re.M)
    return match.group(1).strip() if match else None


def header_info(directory: Path | None = None) -> dict[str, Any] | None:
    """The ONNX Runtime C API headers a build folder uses: ``{"path", "api_version", "source"}``
    (``source``: ``option`` for ``PAREKIT_ORT_INCLUDE_DIR``, ``found`` for a system or
    ``ONNXRUNTIME_ROOT`` copy, ``debian`` for the fetched package), or ``None`` when not configured."""
    out = directory or build_dir()
    cache = out / "CMakeCache.txt"
    if not cache.is_file():
        return None
    explicit = _cache_value(cache, "PAREKIT_ORT_INCLUDE_DIR") or ""
    found = _cache_value(cache, "PAREKIT_ORT_FOUND_HEADERS") or ""
    if explicit:
        path, source = Path(explicit), "option"
    elif found and not found.endswith("NOTFOUND"):
        path, source = Path(found), "found"
    else:
        path, source = out / "_deps" / "onnxruntime-headers", "debian"
    header = path / "onnxruntime_c_api.h"
    api = None
    try:
        match = re.search(r"^#define ORT_API_VERSION (\d+)", header.read_text(encoding="utf-8", errors="replace"),
                          flags=re.M)
        api = int(match.group(1)) if match else None
    except OSError:
        return {"path": str(path), "api_version": None, "source": source, "error": "no onnxruntime_c_api.h"}
    return {"path": str(path), "api_version": api, "source": source}


def status() -> dict[str, Any]:
    """A JSON-ready summary: ``libraries`` (per kind: file, built, path, ops, C API version, or an
    ``error``), ``runtimes`` (installed ONNX Runtime / TensorRT packages), ``tools`` (cmake, ninja, c++,
    nvcc), ``headers`` (the ORT headers of the build folder), ``source`` and ``build_dir``."""
    libraries: dict[str, Any] = {}
    for kind, filename in LIBRARY_FILES.items():
        entry: dict[str, Any] = {"file": filename, "built": False, "path": None, "ops": []}
        try:
            path = library_path(kind)
        except NativeError as exc:
            entry["error"] = exc.message
            path = None
        if path is not None and kind == "trt":  # its creators: parekit.backends.trt_plugins.probe_library
            entry.update(built=True, path=str(path))
        elif path is not None:
            entry.update(built=True, path=str(path))
            try:
                described = describe_library(path)
                entry["ops"] = sorted({op["name"] for op in described.get("ops", [])})
                entry["ort_api_version"] = described.get("ort_api_version")
            except NativeError as exc:
                entry["error"] = exc.message
        libraries[kind] = entry
    src = source_dir()
    return {
        "libraries": libraries,
        "runtimes": runtimes(),
        "tools": tools(),
        "headers": header_info(),
        "source": str(src) if src else None,
        "build_dir": str(build_dir()),
    }
