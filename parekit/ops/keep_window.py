"""The keep-window rule shared by :mod:`parekit.ops.kv_window` and :mod:`parekit.ops.kv_window_mask`.

Along one axis of length ``T`` keep positions ``[0, sink)`` and ``[T - window, T)``; when
``T <= sink + window`` the rule is the identity (bit-exact). This module is not an op: it holds the
attribute specs, the body, the NumPy twin, the shape rule and the :class:`KeepWindowOp` base that the two
ops share.

The body reads ``sink``/``window`` through ``ref_attr_name`` (one function serves every attribute set)
and uses only Shape, Gather, Constant, Reshape, Sub, Max, Slice and Concat, all int64 shape arithmetic:
no casts, no data-dependent ops; ``T`` stays a runtime dimension.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import int_attr_value
from parekit.ops.body import const_ints, int_attr_ref
from parekit.ops.opdef import OpDef
from parekit.ops.schema import AttrSpec, AttrValue

__all__ = [
    "SINK_ATTR",
    "WINDOW_ATTR",
    "KeepWindowOp",
    "build_keep_window",
    "keep_window_attributes",
    "keep_window_reference",
    "keep_window_shape",
    "kept_length",
]

SINK_ATTR = AttrSpec(
    "sink", "int", default=4, minimum=0, doc="number of leading tokens always kept (attention sinks)"
)
WINDOW_ATTR = AttrSpec("window", "int", default=1024, minimum=1, doc="number of most recent tokens kept")


def keep_window_attributes() -> tuple[AttrSpec, AttrSpec]:
    """The ``sink``/``window`` attribute specs shared by every op that applies the keep rule."""
    return (SINK_ATTR, WINDOW_ATTR)


def kept_length(t: int, sink: int, window: int) -> int:
    """Length of the kept sequence: ``min(t, sink + window)``."""
    return min(t, sink + window)


def keep_window_reference(x: np.ndarray, axis: int, sink: int, window: int) -> np.ndarray:
    """NumPy keep rule: positions ``[0, sink)`` and ``[T - window, T)`` of ``x`` along ``axis``.

    Written with an explicit index list (not slices) so that it is an independent oracle of the body.

    Args:
        x: Input array.
        axis: The sequence axis.
        sink: Leading positions always kept.
        window: Trailing positions kept.

    Returns:
        A new array; a copy of ``x`` when ``T <= sink + window``.
    """
    t = x.shape[axis]
    if t <= sink + window:
        return x.copy()
    index = np.concatenate([np.arange(sink), np.arange(t - window, t)])
    return np.take(x, index, axis=axis)


def build_keep_window(tape: Tape, x: ir.Value, axis: int) -> ir.Value:
    """Records the keep rule along ``axis`` of ``x`` into a function body.

    ``head = x[0:sink]``, ``tail = x[max(T - window, sink):T]``, ``Concat(head, tail)``. Slice clamps,
    so ``T <= sink + window`` yields ``head = x[0:min(sink, T)]`` and ``tail = x[sink:T]``: exactly ``x``.
    ``sink`` and ``window`` come from the calling node's attributes (``ref_attr_name``).

    Args:
        tape: The tape recording the body.
        x: The tensor to window.
        axis: Non-negative sequence axis.

    Returns:
        The windowed tensor.
    """
    axes = const_ints(tape, [axis])
    zero = const_ints(tape, [0])
    sink = int_attr_ref(tape, SINK_ATTR.name)
    window = int_attr_ref(tape, WINDOW_ATTR.name)
    t = tape.op("Gather", [tape.op("Shape", [x]), axes], {"axis": 0})
    head = tape.op("Slice", [x, zero, sink, axes])
    start = tape.op("Max", [tape.op("Sub", [t, window]), sink])
    tail = tape.op("Slice", [x, start, t, axes])
    return tape.op("Concat", [head, tail], {"axis": axis})


def keep_window_shape(
    value: ir.Value, axis: int, attrs: Mapping[str, AttrValue]
) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
    """Type/shape rule of the keep rule: same dtype; dim ``axis`` becomes ``min(T, sink + window)``.

    A symbolic or unknown ``T`` gives an unknown output dim.
    """
    shape = None
    if value.shape is not None:
        dims: list[int | None | ir.SymbolicDim] = list(value.shape.dims)
        t = dims[axis]
        sink, window = int_attr_value(attrs, SINK_ATTR.name), int_attr_value(attrs, WINDOW_ATTR.name)
        dims[axis] = kept_length(t, sink, window) if isinstance(t, int) else None
        shape = ir.Shape(dims)
    return [(value.dtype, shape)]


class KeepWindowOp(OpDef):
    """Base of the ops that apply the keep rule along one axis (:class:`KvWindow`, ``KvWindowMask``).

    Subclasses declare the schema and ``_AXIS``; body, reference and shape rule are shared.
    """

    _AXIS: int = 2

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """Records the keep rule along ``_AXIS``."""
        return [build_keep_window(tape, inputs[0], self._AXIS)]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy keep rule along ``_AXIS``."""
        (x,) = inputs
        spec = self.inputs[0]
        if x.ndim != spec.rank:
            raise ValueError(f"{self.op_type} expects a {spec.shape} input, got shape {x.shape}")
        sink, window = int_attr_value(attrs, SINK_ATTR.name), int_attr_value(attrs, WINDOW_ATTR.name)
        return [keep_window_reference(x, self._AXIS, sink, window)]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Same dtype; dim ``_AXIS`` becomes ``min(T, sink + window)`` (unknown if ``T`` is symbolic)."""
        value = inputs[0]
        assert value is not None, "input 0 is required"
        return keep_window_shape(value, self._AXIS, attrs)
