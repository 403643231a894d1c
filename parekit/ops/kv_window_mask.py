"""``parekit::KvWindowMask``: apply :mod:`parekit.ops.kv_window`'s keep rule to a 2-D attention mask.

    attention_mask [B, T]  ─►  KvWindowMask{sink, window}  ─►  mask' [B, min(T, sink + window)]

Keeps mask columns ``[0, sink)`` and ``[T - window, T)``; the identity when ``T <= sink + window``.
Used beside :class:`~parekit.ops.kv_window.KvWindow` so that a mask over cached positions stays aligned
with the windowed cache. Same attributes, same body helper, same NumPy helper.
"""

from __future__ import annotations

import onnx_ir as ir

from parekit.ops.base import FLOAT_DTYPES, TensorSpec, register_op
from parekit.ops.kv_window import KeepWindowOp, keep_window_attributes

__all__ = ["KV_WINDOW_MASK", "KvWindowMask"]

_MASK_DTYPES = FLOAT_DTYPES | {ir.DataType.BOOL, ir.DataType.INT32, ir.DataType.INT64}


class KvWindowMask(KeepWindowOp):
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


KV_WINDOW_MASK: KvWindowMask = register_op(KvWindowMask())
"""The registered :class:`KvWindowMask` op."""
