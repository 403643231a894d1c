"""Triton's ``ModelConfig`` schema: the protobuf module ``tritonclient`` ships, parsing and printing.

Every ``config.pbtxt`` parekit writes is built as a ``inference.ModelConfig`` message and printed with
protobuf's text format, then parsed back (unknown fields and bad enum names are rejected there), so a
config that reaches the disk is one Triton's own parser accepts. The schema comes from the installed
``tritonclient`` (``parekit[serving]``); its ``model_config_pb2`` is loaded by file so that the gRPC
client (and ``grpcio``) need not be installed: it needs only ``protobuf``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from parekit.errors import MissingExtraError, ParekitError, one_line

__all__ = ["TRITON_DTYPES", "data_type_name", "format_config", "load_schema", "parse_config", "triton_dtype"]

_MODULE = "parekit._triton_model_config_pb2"

TRITON_DTYPES: dict[np.dtype, str] = {
    np.dtype(np.bool_): "TYPE_BOOL",
    np.dtype(np.uint8): "TYPE_UINT8",
    np.dtype(np.uint16): "TYPE_UINT16",
    np.dtype(np.uint32): "TYPE_UINT32",
    np.dtype(np.uint64): "TYPE_UINT64",
    np.dtype(np.int8): "TYPE_INT8",
    np.dtype(np.int16): "TYPE_INT16",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float64): "TYPE_FP64",
}
"""NumPy element type → Triton ``DataType`` name (bfloat16 is ``TYPE_BF16``, see :func:`triton_dtype`)."""


def triton_dtype(dtype: np.dtype, where: str) -> str:
    """The Triton ``DataType`` name of a NumPy element type.

    Raises:
        ParekitError: Triton has no such type (``where`` names the tensor).
    """
    if dtype.name == "bfloat16":
        return "TYPE_BF16"
    try:
        return TRITON_DTYPES[np.dtype(dtype)]
    except KeyError:
        raise ParekitError(f"{where}: element type {dtype} has no Triton data type") from None


def load_schema() -> ModuleType:
    """The ``model_config_pb2`` module of the installed ``tritonclient`` (loaded once, by file).

    Raises:
        MissingExtraError: ``tritonclient`` is not installed.
        ParekitError: it is installed but its schema module is missing or does not load with the
            installed ``protobuf``.
    """
    if _MODULE in sys.modules:
        return sys.modules[_MODULE]
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("tritonclient", "serving", "validating Triton model configurations")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        raise ParekitError(f"tritonclient is installed but has no {path.name} (looked in {path.parent})",
                           note="pip install 'parekit[serving]' (tritonclient >= 2.51)")
    file_spec = importlib.util.spec_from_file_location(_MODULE, path)
    assert file_spec is not None and file_spec.loader is not None
    module = importlib.util.module_from_spec(file_spec)
    try:
        file_spec.loader.exec_module(module)
    except Exception as exc:  # a protobuf runtime older than the generated code, most often
        raise ParekitError(f"cannot load Triton's model config schema {path}: {one_line(exc)}",
                           note="install a protobuf that tritonclient supports: pip install 'parekit[serving]'") from exc
    sys.modules[_MODULE] = module
    return module


def parse_config(text: str, where: str) -> Any:
    """Parse ``config.pbtxt`` text into a ``ModelConfig`` message, as Triton does.

    Args:
        text: The text.
        where: What to name in errors (the file's path).

    Raises:
        ParekitError: The text does not parse (unknown field, bad enum name, syntax); the message
            names ``where`` and protobuf's line:column.
    """
    from google.protobuf import text_format

    schema = load_schema()
    message = schema.ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ParekitError(f"{where}: not a valid Triton model config: {one_line(exc)}") from None
    return message


def format_config(message: Any) -> str:
    """Print a ``ModelConfig`` message as ``config.pbtxt`` text (protobuf text format)."""
    from google.protobuf import text_format

    return str(text_format.MessageToString(message))


def data_type_name(value: int) -> str:
    """The ``DataType`` enum name of ``value`` (e.g. ``TYPE_FP32``)."""
    return str(load_schema().DataType.Name(value))
