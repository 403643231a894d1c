"""Index bounds of integer graph inputs, read from how the graph uses them.

An integer input that reaches the indices of a ``Gather`` (possibly through Cast, Reshape,
Unsqueeze and similar ops) whose data is a constant (an initializer or ``Constant``) can only take
values below that constant's size along the gather axis: ``input_ids`` gets the vocabulary size,
``token_type_ids`` the number of token types. Random feeds use these bounds to stay in range.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

__all__ = ["int_input_bounds"]

# Standard ops through which an integer input keeps its meaning as indices.
_INDEX_PASSTHROUGH = frozenset(
    {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Transpose", "Slice"}
)
_STANDARD_DOMAINS = ("", "ai.onnx")


def int_input_bounds(model: ir.Model) -> dict[str, int]:
    """Index bounds of integer graph inputs that are used as ``Gather`` indices into a constant.

    The smallest bound wins when an input reaches several such gathers.

    Args:
        model: The model.

    Returns:
        Bounds by input name; inputs with no such use are absent.
    """
    bounds: dict[str, int] = {}
    for value in model.graph.inputs:
        if value.dtype is None or not np.issubdtype(np.dtype(value.dtype.numpy()), np.integer):
            continue
        found = [b for b in _gather_bounds(value) if b > 0]
        if found and value.name:
            bounds[value.name] = min(found)
    return bounds


def _gather_bounds(start: ir.Value) -> Iterable[int]:
    seen: set[int] = set()
    stack = [start]
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        for node, index in value.uses():
            if node.domain not in _STANDARD_DOMAINS:
                continue
            if node.op_type == "Gather" and index == 1:
                bound = _constant_dim(node.inputs[0], _axis(node))
                if bound is not None:
                    yield bound
            elif node.op_type in _INDEX_PASSTHROUGH and index == 0:
                stack.extend(node.outputs)


def _axis(node: ir.Node) -> int:
    attr = node.attributes.get("axis")
    return int(attr.value) if attr is not None else 0


def _constant_dim(value: ir.Value | None, axis: int) -> int | None:
    if value is None:
        return None
    tensor = value.const_value
    if tensor is None:
        producer = value.producer()
        if producer is not None and producer.op_type == "Constant":
            attr = producer.attributes.get("value")
            tensor = attr.value if attr is not None else None
    if tensor is None:
        return None
    shape = tuple(tensor.shape)
    if not shape or not -len(shape) <= axis < len(shape):
        return None
    dim = shape[axis]
    return dim if isinstance(dim, int) else None
