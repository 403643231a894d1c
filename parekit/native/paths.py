"""Finding the native libraries and asking them what they hold."""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any, Final

from parekit.errors import ParekitError

__all__ = ["LIBRARY_FILES", "NativeError", "describe_library", "library_path", "require_library", "resolve_library"]

LIBRARY_FILES: Final = {"ort": "libparekit_ort.so"}
"""Library kind -> file name in the build folder."""

_ENV: Final = {"ort": "PAREKIT_ORT_LIBRARY"}
"""Library kind -> environment variable that names the file explicitly."""

BUILD_HINT: Final = "build it with `parekit native build` (needs CMake and a C++17 compiler)"


class NativeError(ParekitError):
    """A native library is missing, unloadable, or could not be built."""


def _check_kind(kind: str) -> None:
    if kind not in LIBRARY_FILES:
        raise NativeError(f"unknown native library '{kind}'", note=f"known: {', '.join(LIBRARY_FILES)}")


def library_path(kind: str = "ort") -> Path | None:
    """The library's path when it exists: ``$PAREKIT_ORT_LIBRARY`` if set, else the build folder's copy.

    Raises:
        NativeError: The environment variable names a file that does not exist.
    """
    _check_kind(kind)
    explicit = os.environ.get(_ENV[kind])
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise NativeError(f"{_ENV[kind]} names '{explicit}', which is not a file")
        return path.resolve()
    from parekit.native.build import build_dir

    path = build_dir() / LIBRARY_FILES[kind]
    return path if path.is_file() else None


def require_library(kind: str = "ort") -> Path:
    """The library's path; a :class:`NativeError` that says how to build it when it is not built."""
    path = library_path(kind)
    if path is None:
        raise NativeError(f"{LIBRARY_FILES[kind]} is not built", note=BUILD_HINT)
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
        NativeError: The file cannot be loaded or does not answer like a parekit library.
    """
    try:
        lib = ctypes.CDLL(str(path))
        lib.ParekitDescribeOps.restype = ctypes.c_char_p
        lib.ParekitOrtApiVersion.restype = ctypes.c_int
        raw = lib.ParekitDescribeOps()
        api = int(lib.ParekitOrtApiVersion())
    except (OSError, AttributeError) as exc:
        raise NativeError(f"cannot load native library {path.name}: {exc}") from exc
    try:
        described = json.loads(raw.decode("utf-8"))
    except (ValueError, AttributeError) as exc:
        raise NativeError(f"native library {path.name} returned an unreadable op description") from exc
    described["ort_api_version"] = api
    return dict(described)
