"""The KV I/O contract's optional reset control, shared by every loop that feeds a decoder.

A model the ``state-reset`` pass adapted takes a BOOL ``start [batch, 1]``: true on the step whose past
is the empty past (the prefill), false after. The decoder runtime, parity checks (a state-reset model
against its original) and serving all feed it by this one rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from parekit.backends.specs import TensorSpec

__all__ = ["START_INPUT", "is_empty_state", "start_feeds"]

START_INPUT = "start"
"""The control input's name (the ``state-reset`` pass's default; a test keeps the two equal)."""


def is_empty_state(specs: Sequence[TensorSpec], state: Mapping[str, np.ndarray]) -> bool:
    """Whether ``state`` is the prefill's empty state: every symbolic non-batch dim of every ``past*``
    spec is 0 in its array (arrays missing from ``state`` or of another rank do not count)."""
    for spec in specs:
        array = state.get(spec.name)
        if spec.shape is None or array is None or array.ndim != len(spec.shape):
            continue
        if any(not isinstance(d, int) and array.shape[ax] for ax, d in enumerate(spec.shape) if ax):
            return False
    return True


def start_feeds(specs: Sequence[TensorSpec], state: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The :data:`START_INPUT` feed for a step from ``state``: ``[batch, 1]`` true when the state is empty.

    Loops that build their feeds themselves add this to them when the model takes the input.
    """
    return {START_INPUT: np.full((batch, 1), is_empty_state(specs, state), dtype=np.bool_)}
