"""Control inputs a candidate takes and its reference does not, fed by the rule of the KV I/O contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["with_start"]


def with_start(runner: Any, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The feed plus the KV I/O contract's ``start`` control when only the candidate takes it (a
    ``state-reset`` model checked against its original): true when every ``past*`` feed is the empty
    past (all symbolic non-batch dims 0), as the decoder runtime feeds it."""
    specs = {s.name: s for s in getattr(runner, "input_specs", ())}
    spec = specs.get("start")
    if spec is None or "start" in feed or spec.dtype != np.dtype(np.bool_):
        return feed
    empty = all(not any(n for ax, (n, d) in enumerate(zip(feed[k].shape, s.shape or ())) if ax and not isinstance(d, int))
                for k, s in specs.items() if k.startswith("past") and k in feed)
    batch = next((a.shape[0] for a in feed.values() if getattr(a, "ndim", 0)), 1)
    return {**feed, "start": np.full((batch, 1), empty, dtype=np.bool_)}
