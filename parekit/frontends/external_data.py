"""External-data checks for ONNX files: locations must stay inside the model's folder.

An ONNX tensor may keep its bytes in another file, named by a ``location`` string in the model. A
model from elsewhere could name ``../../etc/passwd``, an absolute path, or a symlink in its folder
that leads out of it, and so make a tool read (and echo, or time the reading of) any file. parekit
refuses every such location before anything is read, with one message that does not depend on
whether the named path exists or on its size.

:func:`~parekit.frontends.onnx_file.load_model` runs this check on every load, and
:func:`~parekit.frontends.onnx_file.check_external_data` is the path-only check for code that hands a
model file to another reader (ONNX Runtime loads a path itself).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from parekit.errors import ModelLoadError, echo

if TYPE_CHECKING:
    import onnx

__all__ = ["check_external_locations", "external_tensors", "location_inside"]

_DRIVE_RE = re.compile(r"\A[A-Za-z]:")
_SEPARATORS_RE = re.compile(r"[\\/]")


def location_inside(folder: str | os.PathLike[str], location: str) -> bool:
    """Whether an external-data ``location`` names a file inside ``folder``.

    Refused: an empty location, one with a NUL byte, an absolute path (``/x``, ``\\\\x``, ``C:x``), one
    with a ``..`` component, and one that resolves (following symlinks) to a path outside the
    folder or to the folder itself. The answer does not depend on whether the file exists.

    Args:
        folder: The folder of the ``.onnx`` file.
        location: The location string recorded in the model.

    Returns:
        True when the location is a relative path that stays inside the folder.
    """
    if not location or "\0" in location:
        return False
    if location.startswith(("/", "\\")) or _DRIVE_RE.match(location) or os.path.isabs(location):
        return False
    if ".." in _SEPARATORS_RE.split(location):
        return False
    base = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(base, location))
    return target != base and os.path.commonpath([base, target]) == base


def external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of a model proto whose data lives in an external file.

    Walks the main graph, subgraphs of control-flow nodes, functions, node attributes (``Constant``
    values and tensor lists) and sparse initializers.
    """
    import onnx

    def tensors_of_graph(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        yield from tensors_of_nodes(list(graph.node))

    def tensors_of_nodes(nodes: list[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
        # An explicit stack: subgraph nesting depth comes from the file, so no recursion.
        stack: list[onnx.NodeProto] = list(reversed(nodes))
        while stack:
            node = stack.pop()
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                for sparse in attr.sparse_tensors:
                    yield sparse.values
                    yield sparse.indices
                graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                for graph in graphs:
                    yield from graph.initializer
                    for sparse in graph.sparse_initializer:
                        yield sparse.values
                        yield sparse.indices
                    stack.extend(reversed(graph.node))

    all_tensors = tensors_of_graph(model.graph)
    for tensor in all_tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor
    for function in model.functions:
        for tensor in tensors_of_nodes(list(function.node)):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                yield tensor


def _location(tensor: onnx.TensorProto) -> str:
    for entry in tensor.external_data:
        if entry.key == "location":
            return entry.value
    return ""


def check_external_locations(model: onnx.ModelProto, file: str | os.PathLike[str]) -> None:
    """Refuse a model proto whose external data lies outside the folder of ``file``.

    Args:
        model: The model, loaded without its external data.
        file: The ``.onnx`` file it came from (locations are relative to its folder).

    Raises:
        ModelLoadError: A tensor's external-data location is not a file inside the model's folder
            (absolute, with ``..``, through a symlink leading out, empty, or with a NUL byte). The
            message is the same for all of these and does not disclose whether the path exists.
    """
    path = Path(file)
    folder = path.parent
    checked: dict[str, bool] = {}
    for tensor in external_tensors(model):
        location = _location(tensor)
        inside = checked.get(location)
        if inside is None:
            inside = checked[location] = location_inside(folder, location)
        if not inside:
            raise ModelLoadError(
                f"{path}: tensor '{echo(tensor.name)}' keeps its data at '{echo(location)}', "
                "which is not a file inside the model's folder",
                note="external data must be named by a relative path to a file next to the .onnx file "
                "(no absolute paths, no '..', no symlinks leading out of the folder)",
            )

