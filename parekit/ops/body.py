"""Helpers for recording op bodies: small constants, dims, and reads of the calling node's attributes.

Every helper emits standard ONNX ops onto an ``onnx_ir`` :class:`~onnx_ir.tape.Tape` and returns the
value it made. Scalars that the spec requires to be 0-D (``CumSum``'s ``axis``, ``Range``'s inputs)
come from :func:`scalar_int` / :func:`scalar_float`; 1-D ``[1]`` values (dims, ``Slice`` bounds,
``TopK``'s ``K``) from :func:`const_ints`, :func:`dim` and :func:`int_attr_ref`.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir
from onnx_ir.tape import Tape

__all__ = [
    "const_ints",
    "dim",
    "dims",
    "float_attr_ref",
    "int_attr_ref",
    "scalar_float",
    "scalar_int",
]


def const_ints(tape: Tape, values: Sequence[int]) -> ir.Value:
    """Emits a 1-D int64 ``Constant`` into a function body.

    Args:
        tape: The tape recording the body.
        values: The integers.

    Returns:
        The constant's value.
    """
    return tape.op("Constant", [], {"value_ints": [int(v) for v in values]})


def scalar_float(tape: Tape, value: float) -> ir.Value:
    """A 0-D float32 ``Constant``."""
    return tape.op("Constant", [], {"value_float": float(value)})


def scalar_int(tape: Tape, value: int) -> ir.Value:
    """A 0-D int64 ``Constant``."""
    return tape.op("Constant", [], {"value_int": int(value)})


def dim(tape: Tape, x: ir.Value, axis: int) -> ir.Value:
    """``Shape(x)[axis]`` as a 1-D int64 tensor ``[1]``."""
    return tape.op("Gather", [tape.op("Shape", [x]), const_ints(tape, [axis])], {"axis": 0})


def dims(tape: Tape, x: ir.Value, rank: int) -> list[ir.Value]:
    """The first ``rank`` dims of ``x``, each a 1-D int64 tensor ``[1]`` (one ``Shape``)."""
    shape = tape.op("Shape", [x])
    return [tape.op("Gather", [shape, const_ints(tape, [i])], {"axis": 0}) for i in range(rank)]


def int_attr_ref(tape: Tape, attr_name: str) -> ir.Value:
    """Emits a 1-D int64 tensor ``[attr]`` holding an ``int`` function attribute of the calling node.

    Built as ``Reshape(Constant(value_int=@attr_name), [1])``: the ``Constant`` takes its value from the
    node through ``ref_attr_name``, which ONNX Runtime and TensorRT's parser both resolve.

    Args:
        tape: The tape recording the body.
        attr_name: Name of an ``int`` attribute of the op.

    Returns:
        A value of shape ``[1]`` and type int64.
    """
    scalar = tape.op("Constant", [], {"value_int": ir.RefAttr("value_int", attr_name, ir.AttributeType.INT)})
    return tape.op("Reshape", [scalar, const_ints(tape, [1])])


def float_attr_ref(tape: Tape, attr_name: str) -> ir.Value:
    """Emits a 0-D float32 tensor holding a ``float`` function attribute of the calling node.

    Built as ``Constant(value_float=@attr_name)`` (``ref_attr_name``), like :func:`int_attr_ref`.

    Args:
        tape: The tape recording the body.
        attr_name: Name of a ``float`` attribute of the op.

    Returns:
        A scalar float32 value.
    """
    return tape.op(
        "Constant", [], {"value_float": ir.RefAttr("value_float", attr_name, ir.AttributeType.FLOAT)}
    )
