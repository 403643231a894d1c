"""Taking back part of a multi-token step: what each kind of decoder state allows.

A verify step feeds ``n`` tokens at once from a state that covers ``c`` tokens; only the first ``keep``
of them are accepted. The state must then cover exactly ``c + keep`` tokens, as if only those had been
fed. The runtime sees nothing but ``past*`` → ``present*`` arrays, so it decides per step by observation:

* **crop** — every state tensor either is unchanged (``present == past``, e.g. a quantized store that no
  token reached this step) or grew by exactly ``n`` along one axis with its old contents left in place
  (the full KV cache; kv-quant's float residual while it fills; kv-window / kv-evict caches below their
  bound). Such a step is exactly ``n`` one-token steps, and cutting each grown tensor back to
  ``old + keep`` along that axis is exactly ``keep`` one-token steps.
* **replay** — anything else: a bounded cache dropped slots (kv-window, kv-evict at their bound), kv-quant
  moved a group into its codes, H2O's scores took attention from the drafts' queries. Such a step is not
  a sequence of one-token steps (token ``i`` of the step saw slots a one-token loop would have evicted,
  float values it would have quantized), so neither its logits nor its state are used: the caller goes
  back to the state from before the step (nothing is copied: arrays are never written in place) and
  feeds the accepted tokens one at a time, which is plain decoding.

"Old contents left in place" is checked on the first and last old slot along the grown axis (cheap:
``B·H·D`` elements per tensor); a bounded cache that evicts shifts its contents and an accumulated
score changes its values, so both show there.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["crop_state", "grown_axis"]

_UNCHANGED = -1


def grown_axis(past: np.ndarray, present: np.ndarray, fed: int) -> int | None:
    """How ``present`` relates to ``past`` after a step that fed ``fed`` tokens.

    Returns:
        The axis along which ``present`` is ``past`` with ``fed`` slots appended (old slots intact),
        ``-1`` when ``present`` equals ``past``, or ``None`` for any other change.
    """
    if present.dtype != past.dtype or present.ndim != past.ndim:
        return None
    diff = [ax for ax in range(past.ndim) if present.shape[ax] != past.shape[ax]]
    if not diff:
        return _UNCHANGED if np.array_equal(present, past) else None
    if len(diff) != 1:
        return None
    ax = diff[0]
    old = past.shape[ax]
    if present.shape[ax] != old + fed:
        return None
    if old:
        for slot in {0, old - 1}:
            if not np.array_equal(np.take(present, slot, axis=ax), np.take(past, slot, axis=ax)):
                return None
    return ax


def crop_state(
    past: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray], fed: int, keep: int
) -> dict[str, np.ndarray] | None:
    """The state after feeding only the first ``keep`` of the ``fed`` tokens, or ``None`` (replay needed).

    Args:
        past: The state the step started from (``past*`` names).
        present: What the step returned, under the same names.
        fed: Tokens the step fed (≥ 1).
        keep: Tokens accepted (``0 ≤ keep ≤ fed``).
    """
    if not 0 <= keep <= fed:
        raise ValueError(f"keep must be in [0, {fed}], got {keep}")
    out: dict[str, np.ndarray] = {}
    for name, new in present.items():
        ax = grown_axis(past[name], new, fed)
        if ax is None:
            return None
        if ax == _UNCHANGED or keep == fed:
            out[name] = new
            continue
        index = [slice(None)] * new.ndim
        index[ax] = slice(0, past[name].shape[ax] + keep)
        out[name] = np.ascontiguousarray(new[tuple(index)])
    return out
