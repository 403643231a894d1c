"""Finding the native libraries and asking them what they hold."""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any, Final

from parekit.errors import ParekitError

__all__ = [
    "BUILD_HINT",
    "TRT_BUILD_HINT",
    "LIBRARY_FILES",
    "NativeError",
    "build_dir",
    "describe_library",
    "is_sanitized",
    "library_path",
    "require_library",
    "resolve_library",
    "sanitizer_build_dir",
    "source_dir",
]

LIBRARY_FILES: Final = {"ort": "libparekit_ort.so", "trt": "plugins_trt/libparekit_trt_plugins.so"}
"""Library kind -> file in the build folder (``trt``: the TensorRT plugins, built where nvcc and TensorRT
headers are found)."""

_ENV: Final = {"ort": "PAREKIT_ORT_LIBRARY", "trt": "PAREKIT_TRT_PLUGINS"}
"""Library kind -> environment variable that names the file explicitly."""

BUILD_HINT: Final = "build it with `parekit native build` (needs CMake and a C++17 compiler)"
TRT_BUILD_HINT: Final = ("build it with `parekit native build` (needs CMake, nvcc and TensorRT headers: "
                         "--trt-include DIR or `pip install --no-deps kernel-lens==2.0.1`)")


class NativeError(ParekitError):
    """A native library is missing, unloadable, or could not be built."""


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


def sanitizer_build_dir() -> Path:
    """The default folder of a sanitizer build: :func:`build_dir` with ``-asan`` appended.

    A sanitized library cannot be loaded into an unsanitized Python, so it never replaces the one
    sessions register; its use is the ctest suite.
    """
    default = build_dir()
    return default.with_name(default.name + "-asan")


def _check_kind(kind: str) -> None:
    if kind not in LIBRARY_FILES:
        raise NativeError(f"unknown native library '{kind}'", note=f"known: {', '.join(LIBRARY_FILES)}")


def library_path(kind: str = "ort") -> Path | None:
    """The library's path when it exists: ``$PAREKIT_ORT_LIBRARY`` if set, else the build folder's copy.

    Raises:
        NativeError: The environment variable names a file that does not exist, or the library is a
            sanitizer build (AddressSanitizer/ThreadSanitizer code aborts a process it is loaded into).
    """
    _check_kind(kind)
    explicit = os.environ.get(_ENV[kind])
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise NativeError(f"{_ENV[kind]} names '{explicit}', which is not a file")
        path = path.resolve()
    else:
        path = build_dir() / LIBRARY_FILES[kind]
        if not path.is_file():
            return None
    if is_sanitized(path):
        raise NativeError(
            f"{path} is a sanitizer build, which cannot be loaded into Python",
            note="sanitizer builds are for ctest; build the library for sessions into its own folder: "
            "parekit native build",
        )
    return path


_SANITIZER_MARKERS: Final = (b"__asan_init", b"__tsan_init")
_sanitized_cache: dict[tuple[str, int, int], bool] = {}


def is_sanitized(path: Path) -> bool:
    """Whether a shared library holds AddressSanitizer or ThreadSanitizer code (read from its bytes)."""
    try:
        info = path.stat()
        key = (str(path), info.st_mtime_ns, info.st_size)
        if key not in _sanitized_cache:
            data = path.read_bytes()
            _sanitized_cache[key] = any(marker in data for marker in _SANITIZER_MARKERS)
        return _sanitized_cache[key]
    except OSError:
        return False


def require_library(kind: str = "ort") -> Path:
    """The library's path; a :class:`NativeError` that says how to build it when it is not built."""
    path = library_path(kind)
    if path is None:
        raise NativeError(f"{LIBRARY_FILES[kind]} is not built", note=TRT_BUILD_HINT if kind == "trt" else BUILD_HINT)
    return path


def resolve_library(native: bool | None, kind: str = "ort") -> Path | None:
    """The library a session should register: ``True`` requires it, ``False`` never, ``None`` when built."""
    if native is False:
        return None
    if native is True:
        return require_library(kind)
    return library_path(kind)


def describe_library(path: Path) -> dict[str, Any]:
    """What a built ``libparekit_ort.so`` holds: ``{"ops": [...], "ort_api_version": N}``.

    The library is loaded with ctypes (it has no link-time dependency on ONNX Runtime).

    Raises:
        NativeError: The file is a sanitizer build, cannot be loaded, or does not answer like a parekit
            library.
    """
    if is_sanitized(path):
        raise NativeError(f"{path} is a sanitizer build; it is not loaded into this process")
    try:
        lib = ctypes.CDLL(str(path))
        lib.ParekitDescribeOps.restype = ctypes.c_char_p
        lib.ParekitOrtApiVersion.restype = ctypes.c_int
        raw = lib.ParekitDescribeOps()
        api = int(lib.ParekitOrtApiVersion())
    except (OSError, AttributeError) as exc:
        raise NativeError(f"cannot load native library {path}: {' '.join(str(exc).split())}") from exc
    try:
        described = json.loads(raw.decode("utf-8"))
    except (ValueError, AttributeError) as exc:
        raise NativeError(f"native library {path} returned an unreadable op description") from exc
    described["ort_api_version"] = api
    return dict(described)
