"""Control inputs a candidate takes and its reference does not, fed by the rule of the KV I/O contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from parekit.backends.kv_contract import START_INPUT, start_feeds

__all__ = ["with_start"]


def with_start(runner: Any, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The feed plus the ``start`` control when only the candidate takes it (a ``state-reset`` model checked
    against its original), by the contract's rule: true when every ``past*`` feed is the empty past."""
    specs = {s.name: s for s in getattr(runner, "input_specs", ())}
    spec = specs.get(START_INPUT)
    if spec is None or START_INPUT in feed or spec.dtype != np.dtype(np.bool_):
        return feed
    pasts = [s for name, s in specs.items() if name.startswith("past")]
    batch = next((a.shape[0] for a in feed.values() if getattr(a, "ndim", 0)), 1)
    return {**feed, **start_feeds(pasts, feed, batch)}
