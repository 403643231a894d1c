"""Native test cases: KvWindow and KvWindowMask (StreamingLLM keep rule; data movement, bit-exact)."""

from __future__ import annotations

from collections.abc import Iterator

import ml_dtypes
import numpy as np

from parekit.ops.kv_window import KV_WINDOW
from parekit.ops.kv_window_mask import KV_WINDOW_MASK

from .cases import Case

# (B, H, T, D, sink, window): below, at, just above and far above sink + window; sink = 0; T < sink;
# one-token cache; odd sizes.
SHAPES = [
    (1, 1, 5, 4, 2, 4),
    (1, 1, 6, 4, 2, 4),
    (1, 1, 7, 4, 2, 4),
    (2, 3, 32, 8, 4, 8),
    (2, 4, 17, 16, 0, 5),
    (1, 2, 9, 4, 0, 1),
    (1, 2, 3, 4, 8, 2),
    (3, 2, 1, 4, 4, 16),
    (1, 1, 40, 2, 39, 1),
    (3, 3, 515, 64, 4, 508),  # bench-like: decode step over a full 512 window
    (2, 2, 0, 4, 4, 8),  # empty cache
]


def cases() -> Iterator[Case]:
    rng = np.random.default_rng(10)
    for b, h, t, d, sink, window in SHAPES:
        attrs = {"sink": sink, "window": window}
        for dtype in (np.float32, np.float16, np.float64):
            cache = rng.standard_normal((b, h, t, d)).astype(dtype)
            yield Case(KV_WINDOW, f"b{b}h{h}t{t}d{d}s{sink}w{window}.{np.dtype(dtype).name}", [cache], attrs)
        bf = rng.standard_normal((b, h, t, d)).astype(ml_dtypes.bfloat16)
        yield Case(KV_WINDOW, f"b{b}h{h}t{t}d{d}s{sink}w{window}.bfloat16", [bf], attrs, bf16=(0,))
        for dtype in (np.int64, np.int32, np.bool_, np.float32, np.float16, np.float64):
            mask = (rng.random((b, t)) > 0.3).astype(dtype)
            yield Case(KV_WINDOW_MASK, f"b{b}t{t}s{sink}w{window}.{np.dtype(dtype).name}", [mask], attrs)
        bfm = (rng.random((b, t)) > 0.3).astype(ml_dtypes.bfloat16)
        yield Case(KV_WINDOW_MASK, f"b{b}t{t}s{sink}w{window}.bfloat16", [bfm], attrs, bf16=(0,))
    # refused at the API edge: wrong rank
    yield Case(KV_WINDOW, "rank3.error", [np.zeros((2, 3, 4), np.float32)], {}, error="must have rank 4")
    yield Case(KV_WINDOW_MASK, "rank3.error", [np.zeros((2, 3, 4), np.int64)], {}, error="must have rank 2")
