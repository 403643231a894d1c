"""``parekit::KvWindowMask``: apply :mod:`parekit.ops.kv_window`'s keep rule to a 2-D attention mask.

    attention_mask [B, T]  ─►  KvWindowMask{sink, window}  ─►  mask' [B, min(T, sink + window)]

Keeps mask columns ``[0, sink)`` and ``[T - window, T)``; the identity when ``T <= sink + window``.
Used beside :class:`~parekit.ops.kv_window.KvWindow` so that a mask over cached positions stays aligned
with the windowed cache. Same attributes, same body helper, same NumPy helper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.base import FLOAT_DTYPES, AttrValue, OpDef, TensorSpec, register_op
from parekit.ops.kv_window import (
    SINK_ATTR,
    WINDOW_ATTR,
    build_keep_window,
    keep_window_attributes,
    keep_window_reference,
    keep_window_shape,
)

__all__ = ["KV_WINDOW_MASK", "KvWindowMask"]

_MASK_DTYPES = FLOAT_DTYPES | {ir.DataType.BOOL, ir.DataType.INT32, ir.DataType.INT64}


class KvWindowMask(OpDef):
    """``KvWindowMask(attention_mask) -> mask'``: the KvWindow keep rule along axis 1 of a ``[B, T]`` mask."""

    op_type = "KvWindowMask"
    plugin_version = "1"
    inputs = (
        TensorSpec(
            "attention_mask", _MASK_DTYPES, "[B, T]", rank=2, doc="mask over T positions (bool, int or float)"
        ),
    )
    outputs = (
        TensorSpec(
            "mask_out",
            _MASK_DTYPES,
            "[B, min(T, sink + window)]",
            rank=2,
            doc="columns [0, sink) and [T - window, T) of the mask; the mask itself if T <= sink + window",
        ),
    )
    attributes = keep_window_attributes()
    min_opset = 13
    doc = (
        "Keeps columns [0, sink) and [T - window, T) of a [B, T] attention mask (the KvWindow keep rule "
        "along axis 1); the identity when T <= sink + window."
    )

    _AXIS = 1

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """Records the keep rule along axis 1."""
        return [build_keep_window(tape, inputs[0], self._AXIS)]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy keep rule along axis 1."""
        (mask,) = inputs
        if mask.ndim != 2:
            raise ValueError(f"KvWindowMask expects a [B, T] mask, got shape {mask.shape}")
        sink, window = attrs[SINK_ATTR.name], attrs[WINDOW_ATTR.name]
        assert isinstance(sink, int) and isinstance(window, int)
        return [keep_window_reference(mask, self._AXIS, sink, window)]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Same dtype; dim 1 becomes ``min(T, sink + window)`` (unknown if ``T`` is symbolic)."""
        value = inputs[0]
        assert value is not None, "input 0 is required"
        return keep_window_shape(value, self._AXIS, attrs)


KV_WINDOW_MASK: KvWindowMask = register_op(KvWindowMask())
"""The registered :class:`KvWindowMask` op."""
