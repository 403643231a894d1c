"""``parekit::KvWindowMask``: apply the KvWindow keep rule (:mod:`parekit.ops.keep_window`) to a 2-D attention mask.

    attention_mask [B, T]  ─►  KvWindowMask{sink, window}  ─►  mask' [B, min(T, sink + window)]

Keeps mask columns ``[0, sink)`` and ``[T - window, T)``; the identity when ``T <= sink + window``.
Used beside :class:`~parekit.ops.kv_window.KvWindow` so that a mask over cached positions stays aligned
with the windowed cache. Same attributes, same body helper, same NumPy helper.
"""

from __future__ import annotations

from parekit.ops.dtypes import MASK_DTYPES
from parekit.ops.keep_window import KeepWindowOp, keep_window_attributes
from parekit.ops.registry import register_op
from parekit.ops.schema import ParamSpec

__all__ = ["KV_WINDOW_MASK", "KvWindowMask"]


class KvWindowMask(KeepWindowOp):
    """``KvWindowMask(attention_mask) -> mask'``: the KvWindow keep rule along axis 1 of a ``[B, T]`` mask."""

    op_type = "KvWindowMask"
    plugin_version = "1"
    inputs = (
        ParamSpec(
            "attention_mask", MASK_DTYPES, "[B, T]", rank=2, doc="mask over T positions (bool, int or float)"
        ),
    )
    outputs = (
        ParamSpec(
            "mask_out",
            MASK_DTYPES,
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
