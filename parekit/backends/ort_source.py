"""What an ONNX Runtime session is made from: a model path, bytes, or an in-memory ``onnx_ir.Model``.

In-memory models are serialized to bytes when they fit in a protobuf, else saved with external
data to a temporary folder that lives as long as the session is being created.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from parekit.backends.specs import TensorSpec, specs_from_ir_values, specs_from_proto_values
from parekit.errors import BackendError, one_line

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir
    import onnxruntime

    ModelSource = str | os.PathLike[str] | bytes | ir.Model

logger = logging.getLogger(__name__)

__all__ = ["PROTO_LIMIT_BYTES", "describe", "model_name", "ort_source", "serialized"]

PROTO_LIMIT_BYTES = int(1.8 * 2**30)
"""In-memory models with more initializer bytes than this are saved to a temporary folder first."""


@contextlib.contextmanager
def ort_source(
    model: ModelSource, options: onnxruntime.SessionOptions
) -> Iterator[tuple[str | bytes, list[TensorSpec]]]:
    """Yield what ``InferenceSession`` takes (a path or bytes) and the graph's input specs."""
    import onnx

    if isinstance(model, bytes):
        try:
            proto = onnx.load_model_from_string(model)
        except Exception as exc:
            raise BackendError(f"the model bytes are not a valid ONNX model: {one_line(exc)}") from exc
        yield model, specs_from_proto_values(proto.graph.input)
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise BackendError(f"{path}: no such model file")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise BackendError(f"{path}: not a valid ONNX model: {one_line(exc)}") from exc
        yield str(path), specs_from_proto_values(proto.graph.input)
    else:
        specs = specs_from_ir_values(model.graph.inputs)
        with serialized(model, options) as (source, _proto):
            yield source, specs


@contextlib.contextmanager
def serialized(
    model: ir.Model, options: onnxruntime.SessionOptions
) -> Iterator[tuple[str | bytes, onnx.ModelProto | None]]:
    """Yield the model as bytes (with its proto), or as a path in a temporary folder if too large.

    Bytes are used when the inline weights fit in a protobuf and external tensors (if any) all
    live in one folder (``options`` then tells ORT that folder); otherwise the model is saved
    with external data to a temporary folder that is removed afterwards.
    """
    import onnx_ir as ir

    from parekit.backends.save import loadable_ir_version, save_model

    folders = _external_folders(model)
    if _inline_bytes(model) <= PROTO_LIMIT_BYTES and len(folders) <= 1:
        if folders:
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", next(iter(folders))
            )
        with loadable_ir_version(model):
            proto = ir.to_proto(model)
        yield proto.SerializeToString(), proto
        return
    with tempfile.TemporaryDirectory(prefix="parekit-", ignore_cleanup_errors=True) as tmp:
        path = save_model(model, Path(tmp) / "model.onnx", external_data=True)
        logger.debug("serialized %s to %s for ONNX Runtime", model_name(model), path)
        yield str(path), None


def _external_folders(model: ir.Model) -> set[str]:
    import onnx_ir as ir

    return {
        os.fspath(v.const_value.base_dir)
        for g in model.graphs()
        for v in g.initializers.values()
        if isinstance(v.const_value, ir.ExternalTensor)
    }


def _inline_bytes(model: ir.Model) -> int:
    import onnx_ir as ir

    return sum(
        v.const_value.nbytes
        for g in model.graphs()
        for v in g.initializers.values()
        if v.const_value is not None and not isinstance(v.const_value, ir.ExternalTensor)
    )


def describe(model: ModelSource) -> str:
    """How messages name a model source: its path, ``<model bytes>``, or ``model '<graph name>'``."""
    if isinstance(model, bytes):
        return "<model bytes>"
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return f"model '{model_name(model)}'"


def model_name(model: ir.Model) -> str:
    """The graph name of an in-memory model (``main_graph`` when it has none)."""
    return model.graph.name or "main_graph"
