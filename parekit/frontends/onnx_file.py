"""Load an ``.onnx`` file (with its external data) into an :class:`onnx_ir.Model`.

The file is never modified. External data is resolved relative to the file's folder and is
memory-mapped lazily by onnx-ir, so models larger than 2 GB load without copying their weights;
the external data files are checked for existence and size up front so that a missing or short
``.data`` file is reported here rather than at first use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from parekit.errors import ModelLoadError, one_line

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

logger = logging.getLogger(__name__)

__all__ = ["ensure_node_names", "load_model"]


def load_model(path: str | os.PathLike[str]) -> ir.Model:
    """Load an ONNX model file, including its external data, and name every node.

    Args:
        path: The ``.onnx`` file. External data files are looked up relative to its folder.

    Returns:
        The model. Unnamed nodes get unique names (see :func:`ensure_node_names`).

    Raises:
        ModelLoadError: The file is missing, is a directory, is empty, truncated or not an ONNX
            protobuf, or refers to an external data file that is missing or too short.
    """
    import onnx_ir as ir

    file = Path(path)
    if not file.exists():
        raise ModelLoadError(f"{file}: no such file")
    if file.is_dir():
        raise ModelLoadError(
            f"{file}: is a directory, not an ONNX file", note="pass the path of the .onnx file inside it"
        )
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise ModelLoadError(f"{file}: cannot be read ({exc.strerror or exc})") from exc
    if size == 0:
        raise ModelLoadError(f"{file}: not a valid ONNX model (empty file)")

    proto = _read_proto(file)
    model = ir.serde.deserialize_model(proto)
    ir.external_data.set_base_dir(model.graph, str(file.parent))
    _check_external_data(model, file)
    renamed = ensure_node_names(model)
    if renamed:
        logger.debug("%s: named %d unnamed nodes", file, renamed)
    return model


def ensure_node_names(model: ir.Model) -> int:
    """Give every unnamed node in the model's graphs (and subgraphs) a unique name, in place.

    Analysis and reports refer to nodes by name, so names must exist and be unique. Existing
    names are kept; new names are ``"<op_type>_<n>"`` with the smallest ``n`` not already taken
    anywhere in the model.

    Args:
        model: The model to edit.

    Returns:
        How many nodes were named.
    """
    taken: set[str] = set()
    unnamed = []
    for graph in model.graphs():
        for node in graph:
            if node.name:
                taken.add(node.name)
            else:
                unnamed.append(node)
    counters: dict[str, int] = {}
    for node in unnamed:
        base = node.op_type or "node"
        n = counters.get(base, 0)
        while f"{base}_{n}" in taken:
            n += 1
        node.name = f"{base}_{n}"
        taken.add(node.name)
        counters[base] = n + 1
    return len(unnamed)


def _read_proto(file: Path) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(file), load_external_data=False)
    except DecodeError as exc:
        raise ModelLoadError(
            f"{file}: not a valid ONNX model (truncated or malformed protobuf: {one_line(exc)})"
        ) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{file}: cannot be read as an ONNX model ({one_line(exc)})") from exc
    # A protobuf parser accepts many byte strings (e.g. text, or a file cut at a field boundary):
    # require the fields every ONNX model has.
    missing = [
        what
        for what, present in (
            ("ir_version", proto.ir_version > 0),
            ("graph", proto.HasField("graph")),
            ("opset_import", len(proto.opset_import) > 0),
        )
        if not present
    ]
    if missing:
        raise ModelLoadError(
            f"{file}: not a valid ONNX model (truncated or malformed protobuf: no {', '.join(missing)})"
        )
    return proto


def _check_external_data(model: ir.Model, file: Path) -> None:
    import onnx_ir as ir

    sizes: dict[str, int | None] = {}
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if not isinstance(tensor, ir.ExternalTensor):
                continue
            data_path = tensor.path
            if data_path not in sizes:
                try:
                    sizes[data_path] = os.stat(data_path).st_size
                except OSError:
                    sizes[data_path] = None
            available = sizes[data_path]
            if available is None:
                raise ModelLoadError(
                    f"{file}: external data file '{tensor.location}' of initializer '{value.name}' "
                    f"not found in {file.parent}",
                    note="keep the .data file next to the .onnx file, under the name the model records",
                )
            end = (tensor.offset or 0) + (tensor.length if tensor.length is not None else tensor.nbytes)
            if end > available:
                raise ModelLoadError(
                    f"{file}: external data file '{tensor.location}' is truncated "
                    f"(initializer '{value.name}' ends at byte {end}, file has {available})"
                )


