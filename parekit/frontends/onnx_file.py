"""Load an ``.onnx`` file (with its external data) into an :class:`onnx_ir.Model`.

The file is never modified. External data is resolved relative to the file's folder and is
memory-mapped lazily by onnx-ir, so models larger than 2 GB load without copying their weights.
Up front, before any external file is opened, every external-data location must name a file inside
the model's folder (:mod:`parekit.frontends.external_data`); then the external data files are
checked for existence and size so that a missing or short ``.data`` file is reported here rather
than at first use. Whatever onnx-ir rejects while deserializing becomes a :class:`ModelLoadError`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from parekit.errors import ModelLoadError, echo, one_line
from parekit.frontends.external_data import check_external_locations
from parekit.progress import third_party_logs

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

logger = logging.getLogger(__name__)

__all__ = ["check_external_data", "ensure_node_names", "load_model", "read_proto"]


def load_model(path: str | os.PathLike[str]) -> ir.Model:
    """Load an ONNX model file, including its external data, and name every node.

    Args:
        path: The ``.onnx`` file. External data files are looked up relative to its folder.

    Returns:
        The model. Unnamed nodes get unique names (see :func:`ensure_node_names`).

    Raises:
        ModelLoadError: The file is missing, is a directory, is empty, truncated or not an ONNX
            protobuf, is not a valid model (duplicate value names, unknown data types, bad
            external-data fields), keeps external data outside its folder, or refers to an external
            data file that is missing or too short.
    """
    import onnx_ir as ir

    file = Path(path)
    proto = read_proto(file)
    check_external_locations(proto, file)
    try:
        # onnx-ir warns about invalid graphs in its own words, echoing raw names: keep that at DEBUG.
        with third_party_logs():
            model = ir.serde.deserialize_model(proto)
            ir.external_data.set_base_dir(model.graph, str(file.parent))
    except Exception as exc:  # onnx-ir raises SerdeError/ValueError/TypeError on invalid models
        raise ModelLoadError(f"{file}: not a valid ONNX model ({_reason(exc)})") from exc
    _check_external_data(model, file)
    renamed = ensure_node_names(model)
    if renamed:
        logger.debug("%s: named %d unnamed nodes", file, renamed)
    return model


def check_external_data(path: str | os.PathLike[str]) -> None:
    """Path-only check that a model file keeps its external data inside its own folder.

    For code that hands a model *path* to another reader (an ONNX Runtime session loads the path
    itself): call this first, so such a model is refused with the message :func:`load_model` gives.

    Args:
        path: The ``.onnx`` file.

    Raises:
        ModelLoadError: The file cannot be read as an ONNX protobuf, or a tensor's external-data
            location is not a file inside its folder.
    """
    file = Path(path)
    check_external_locations(read_proto(file), file)


def read_proto(file: Path) -> onnx.ModelProto:
    """Read an ONNX file's protobuf without its external data, checking it looks like a model.

    Args:
        file: The ``.onnx`` file.

    Returns:
        The model proto (external tensors still point to their files).

    Raises:
        ModelLoadError: The file is missing, a directory, empty, unreadable, or not an ONNX model.
    """
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
    return _parse_proto(file)


def _reason(exc: BaseException) -> str:
    """The innermost message of an exception chain (onnx-ir wraps the real cause), capped."""
    seen: set[int] = set()
    inner: BaseException = exc
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    return echo(one_line(inner), 300)


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


def _parse_proto(file: Path) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(file), load_external_data=False)
    except DecodeError as exc:
        raise ModelLoadError(
            f"{file}: not a valid ONNX model (truncated or malformed protobuf: {echo(one_line(exc))})"
        ) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{file}: cannot be read as an ONNX model ({echo(one_line(exc))})") from exc
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
    """Every external initializer's file exists, is a regular file, and holds its bytes."""
    import stat

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
                    info = os.stat(data_path)
                    sizes[data_path] = info.st_size if stat.S_ISREG(info.st_mode) else None
                except (OSError, ValueError):
                    sizes[data_path] = None
            available = sizes[data_path]
            offset = tensor.offset or 0
            end = offset + (tensor.length if tensor.length is not None else tensor.nbytes)
            if available is None or end > available:
                # One message for missing and short files (and non-files).
                raise ModelLoadError(
                    f"{file}: external data file '{echo(tensor.location)}' of initializer "
                    f"'{echo(value.name)}' is missing or too short (the initializer needs bytes "
                    f"{offset}..{end} of it)",
                    note="keep the .data file next to the .onnx file, under the name the model records, "
                    "and complete",
                )
