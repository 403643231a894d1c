"""``parekit::KvWindow``: bound a KV cache to its first ``sink`` and last ``window`` tokens (StreamingLLM).

    cache [B, H, T, D]  ─►  KvWindow{sink, window}  ─►  cache' [B, H, min(T, sink + window), D]

Keep rule (:mod:`parekit.ops.keep_window`, shared with :mod:`parekit.ops.kv_window_mask`): along the
sequence axis keep positions ``[0, sink)`` and ``[T - window, T)``; when ``T <= sink + window`` the op is
the identity (bit-exact). ``T`` stays a runtime dimension; the body is int64 shape arithmetic plus
Slice and Concat.
"""

from __future__ import annotations

from parekit.ops.dtypes import FLOAT_DTYPES
from parekit.ops.keep_window import KeepWindowOp, keep_window_attributes, keep_window_reference, kept_length
from parekit.ops.registry import register_op
from parekit.ops.schema import ParamSpec

# keep_window_reference / kept_length: the keep rule, also reachable from here for callers that think of
# it as KvWindow's (e.g. the kv-window pass tests).
__all__ = ["KV_WINDOW", "KvWindow", "keep_window_reference", "kept_length"]


class KvWindow(KeepWindowOp):
    """``KvWindow(cache) -> cache'``: keep the first ``sink`` and last ``window`` tokens of a KV cache."""

    op_type = "KvWindow"
    plugin_version = "1"
    inputs = (
        ParamSpec(
            "cache", FLOAT_DTYPES, "[B, H, T, D]", rank=4, doc="key or value cache, T = cached tokens"
        ),
    )
    outputs = (
        ParamSpec(
            "cache_out",
            FLOAT_DTYPES,
            "[B, H, min(T, sink + window), D]",
            rank=4,
            doc="tokens [0, sink) and [T - window, T) of the cache, in order; the cache itself if T <= sink + window",
        ),
    )
    attributes = keep_window_attributes()
    min_opset = 13
    doc = (
        "Keeps the first `sink` and the last `window` tokens of a KV cache [B, H, T, D] along axis 2 "
        "(StreamingLLM); the identity when T <= sink + window."
    )

    _AXIS = 2


KV_WINDOW: KvWindow = register_op(KvWindow())
"""The registered :class:`KvWindow` op; passes insert it with ``KV_WINDOW.make_node(...)``."""
