"""Registering parekit's native custom-op library (``libparekit_ort.so``) in ONNX Runtime session options.

A session that registers the library runs the C++ kernels of the parekit ops it holds; a parekit node
no kernel claims (an op without a kernel yet) is inlined from its model-local function in the same
session, and a session without the library runs every op's function body. The same ``.onnx`` file
serves all three.

``native``, as :class:`~parekit.backends.ort.OrtRunner` and :func:`~parekit.backends.ort.check_loads`
take it: ``None`` = the library when it is built, else the bodies; ``True`` = the library (a one-line
:class:`~parekit.native.NativeError` saying how to build it when it is not); ``False`` = the bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from parekit.errors import one_line
from parekit.native import NativeError, resolve_library

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["library_loads", "register_native"]


def register_native(options: onnxruntime.SessionOptions, native: bool | None) -> Path | None:
    """Register the library in ``options`` as ``native`` asks; returns its path, or ``None`` (bodies).

    Raises:
        NativeError: ``native=True`` and the library is not built, ``$PAREKIT_ORT_LIBRARY`` names a
            missing file, or ONNX Runtime cannot load the file (the message names it).
    """
    path = resolve_library(native)
    if path is None:
        return None
    _register(options, path)
    return path


def library_loads(path: Path) -> str | None:
    """Whether this process's ONNX Runtime registers the library: ``None`` when it does, else why not."""
    import onnxruntime as ort

    try:
        _register(ort.SessionOptions(), path)
    except NativeError as exc:
        return exc.message
    return None


def _register(options: onnxruntime.SessionOptions, path: Path) -> None:
    try:
        options.register_custom_ops_library(str(path))
    except Exception as exc:
        import onnxruntime as ort

        raise NativeError(
            f"ONNX Runtime {ort.__version__} cannot load the native library {path}: {_reason(exc)}",
            note="rebuild it with `parekit native build`, or run with --no-native (function bodies)",
        ) from exc


def _reason(exc: Exception) -> str:
    text = one_line(exc)
    for prefix in ("[ONNXRuntimeError] : 1 : FAIL : ", "[ONNXRuntimeError] :"):
        if text.startswith(prefix):
            return text[len(prefix):].strip()
    return text
