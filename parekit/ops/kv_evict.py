"""``parekit::KvEvictH2O`` / ``KvEvictSnap``: keep a fixed budget of cached tokens per KV head, by attention.

    key, value [B,Hkv,T,D] ─┐                                    ┌─► key', value' [B,Hkv,K,D]
    score [B,Hkv,P] ────────┼─► KvEvict*{budget, sink, recent} ──┤
    probs [B,Hq,S,T] ───────┤                                    └─► score' [B,Hkv,K]
    mask [B,T] ─────────────┘            K = min(T, budget), T = P + S

``key``/``value`` are this step's full cache (``P`` kept past slots ++ ``S`` new tokens), ``probs`` the
softmax attention of the ``S`` new queries over it (``Hq = group * Hkv`` query heads; query head
``h`` reads KV head ``h // group``), ``mask`` the step's attention mask over the ``T`` slots (its last
``S`` columns say which new tokens are real, not padding). ``score`` is per-slot state carried across
steps: ``-1`` marks a padding slot (never visible, see :mod:`parekit.ops.kv_slot_mask`), values ``>= 0``
a real token.

Selection, per batch row and KV head: the first ``sink`` and last ``recent`` slots are always kept, the
other slots by a rank score (highest first, lower slot on ties, padding last), ``K`` slots in all, kept in
slot (= position) order. New slots always come last, so the causal structure of the cache is preserved.

* ``KvEvictH2O`` (heavy hitters): the score accumulates, for every real slot, the attention it receives
  (summed over the group's query heads and the new query positions); rank score = accumulated score.
  ``decay`` (default 1: H2O's plain sum) multiplies the carried score before each step's attention is
  added, weighting recent attention more (``0``: this step's attention only, as in TOVA).
* ``KvEvictSnap`` (SnapKV): at prefill (``P == 0``) the rank score is the attention the last ``recent``
  prompt queries (the observation window) give each slot, summed over the group and max-pooled over 7
  neighbouring slots; afterwards (``P > 0``) it is the slot index, i.e. a window of ``sink`` first plus
  most recent slots. The state only carries validity (``0`` / ``-1``).

``T <= budget`` keeps every slot in order: the cache is the identity. The body uses TopK (``K = min(T,
budget) <= 3839``, TensorRT's limit), GatherND/GatherElements, Pad + MaxPool and shape arithmetic; no
scatter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import int_attr_value
from parekit.ops.body import const_ints, dims, float_attr_ref, int_attr_ref, scalar_float, scalar_int
from parekit.ops.dtypes import F32, MASK_DTYPES
from parekit.ops.opdef import OpDef
from parekit.ops.registry import register_op
from parekit.ops.schema import AttrSpec, AttrValue, ParamSpec

__all__ = [
    "BUDGET_MAX",
    "KV_EVICT_H2O",
    "KV_EVICT_SNAP",
    "POOL_KERNEL",
    "KvEvictH2O",
    "KvEvictSnap",
    "evict_reference",
]

BUDGET_MAX = 3839
"""Largest budget: TensorRT's TopK needs K < 3840."""
POOL_KERNEL = 7
"""Width of SnapKV's max-pool over slots (odd)."""
FORCED_BONUS = 1e9
"""Added to the rank score of sink and recent slots so that TopK always keeps them."""
_LOWEST = float(np.finfo(np.float32).min)
"""Neutral element of the max-pool (padding of the slot axis)."""

_ATTRS = (
    AttrSpec(
        "budget", "int", default=512, minimum=1, maximum=BUDGET_MAX, doc="cached tokens kept per KV head"
    ),
    AttrSpec("sink", "int", default=4, minimum=0, doc="first slots always kept"),
    AttrSpec(
        "recent",
        "int",
        default=32,
        minimum=0,
        doc="last slots always kept (SnapKV: also the observation window)",
    ),
)


def evict_reference(
    key: np.ndarray,
    value: np.ndarray,
    score: np.ndarray,
    probs: np.ndarray,
    mask: np.ndarray,
    attrs: Mapping[str, AttrValue],
    policy: str,
) -> list[np.ndarray]:
    """NumPy twin of both ops (``policy`` ``"h2o"`` or ``"snapkv"``)."""
    budget, sink, recent = int_attr_value(attrs, "budget"), int_attr_value(attrs, "sink"), int_attr_value(attrs, "recent")
    b, hkv, t, _ = key.shape
    p = score.shape[2]
    s = t - p
    hq = probs.shape[1]
    new_valid = np.asarray(mask)[:, p:].astype(np.float32) > 0
    state = np.concatenate(
        [score, np.broadcast_to(np.where(new_valid, 0.0, -1.0).astype(np.float32)[:, None, :], (b, hkv, s))],
        axis=2,
    )
    valid = state >= 0
    grouped = probs.astype(np.float32).reshape(b, hkv, hq // hkv, probs.shape[2], t)
    slots = np.arange(t, dtype=np.float32)
    if policy == "h2o":
        given = attrs.get("decay", 1.0)
        assert isinstance(given, float)
        decay = np.float32(given)
        state = np.where(valid, state * decay + grouped.sum(axis=(2, 3), dtype=np.float32), state)
        rank = state
    else:
        votes = grouped[:, :, :, max(s - recent, 0) :, :].sum(axis=(2, 3), dtype=np.float32)
        half = POOL_KERNEL // 2
        padded = np.pad(votes, ((0, 0), (0, 0), (half, half)), constant_values=-np.inf)
        pooled = np.max(np.stack([padded[..., i : i + t] for i in range(POOL_KERNEL)]), axis=0)
        rank = np.where(valid, pooled if p == 0 else np.broadcast_to(slots, votes.shape), -1.0).astype(
            np.float32
        )
    forced = (slots < sink) | (slots >= t - recent)
    adjusted = (rank + np.where(forced, np.float32(FORCED_BONUS), np.float32(0))).astype(np.float32)
    k = min(t, budget)
    order = np.argsort(-adjusted, axis=-1, kind="stable")[..., :k]
    keep = np.sort(order, axis=-1)
    return [
        np.take_along_axis(key, keep[..., None], axis=2),
        np.take_along_axis(value, keep[..., None], axis=2),
        np.take_along_axis(state.astype(np.float32), keep, axis=2),
    ]


class KvEvictOp(OpDef):
    """Shared schema, body skeleton and shape rule of the two eviction policies."""

    _POLICY = "h2o"
    attributes: ClassVar[tuple[AttrSpec, ...]] = _ATTRS
    min_opset = 18
    inputs = (
        ParamSpec(
            "key", F32, "[B, Hkv, T, D]", rank=4, doc="full key cache of this step (past slots ++ new)"
        ),
        ParamSpec("value", F32, "[B, Hkv, T, D]", rank=4, doc="full value cache of this step"),
        ParamSpec("score", F32, "[B, Hkv, P]", rank=3, doc="per-slot state of the past slots (-1: padding)"),
        ParamSpec("probs", F32, "[B, Hq, S, T]", rank=4, doc="attention probabilities of the new queries"),
        ParamSpec(
            "mask", MASK_DTYPES, "[B, T]", rank=2, doc="attention mask over the T slots (last S: new tokens)"
        ),
    )
    outputs = (
        ParamSpec("key_out", F32, "[B, Hkv, min(T, budget), D]", rank=4, doc="kept keys, in slot order"),
        ParamSpec("value_out", F32, "[B, Hkv, min(T, budget), D]", rank=4, doc="kept values, in slot order"),
        ParamSpec("score_out", F32, "[B, Hkv, min(T, budget)]", rank=3, doc="state of the kept slots"),
    )

    def _rank(
        self,
        tape: Tape,
        state: ir.Value,
        valid: ir.Value,
        grouped: ir.Value,
        p: ir.Value,
        s: ir.Value,
        t: ir.Value,
    ) -> tuple[ir.Value, ir.Value]:
        """Returns ``(rank score, new state)``, both ``[B, Hkv, T]``."""
        raise NotImplementedError

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """State update, rank score, forced slots, TopK, sort, GatherElements."""
        key, value, score, probs, mask = inputs
        b, hkv, t, d = dims(tape, key, 4)
        p = tape.op("Gather", [tape.op("Shape", [score]), const_ints(tape, [2])], {"axis": 0})
        s = tape.op("Sub", [t, p])
        hq = tape.op("Gather", [tape.op("Shape", [probs]), const_ints(tape, [1])], {"axis": 0})
        new_mask = tape.op("Slice", [mask, p, t, const_ints(tape, [1])])
        new_valid = tape.op(
            "Greater", [tape.op("Cast", [new_mask], {"to": ir.DataType.FLOAT}), scalar_float(tape, 0.0)]
        )
        init = tape.op("Where", [new_valid, scalar_float(tape, 0.0), scalar_float(tape, -1.0)])
        init = tape.op(
            "Expand",
            [
                tape.op("Unsqueeze", [init, const_ints(tape, [1])]),
                tape.op("Concat", [b, hkv, s], {"axis": 0}),
            ],
        )
        state = tape.op("Concat", [score, init], {"axis": 2})
        valid = tape.op("GreaterOrEqual", [state, scalar_float(tape, 0.0)])
        shape5 = tape.op("Concat", [b, hkv, tape.op("Div", [hq, hkv]), s, t], {"axis": 0})
        grouped = tape.op("Reshape", [probs, shape5])
        rank, new_state = self._rank(tape, state, valid, grouped, p, s, t)
        slots = tape.op(
            "Cast",
            [tape.op("Range", [scalar_int(tape, 0), tape.op("Squeeze", [t]), scalar_int(tape, 1)])],
            {"to": ir.DataType.FLOAT},
        )
        sink_f = tape.op("Cast", [int_attr_ref(tape, "sink")], {"to": ir.DataType.FLOAT})
        first_recent = tape.op(
            "Cast", [tape.op("Sub", [t, int_attr_ref(tape, "recent")])], {"to": ir.DataType.FLOAT}
        )
        forced = tape.op(
            "Or", [tape.op("Less", [slots, sink_f]), tape.op("GreaterOrEqual", [slots, first_recent])]
        )
        bonus = tape.op("Where", [forced, scalar_float(tape, FORCED_BONUS), scalar_float(tape, 0.0)])
        adjusted = tape.op("Add", [rank, bonus])
        k = tape.op("Min", [t, int_attr_ref(tape, "budget")])
        _, chosen = tape.op_multi_out(  # which slots; their order is restored below
            "TopK", [adjusted, k], {"axis": -1, "largest": 1, "sorted": 0}, num_outputs=2
        )
        ascending, _ = tape.op_multi_out(
            "TopK",
            [tape.op("Cast", [chosen], {"to": ir.DataType.FLOAT}), k],
            {"axis": -1, "largest": 0, "sorted": 1},
            num_outputs=2,
        )
        keep = tape.op("Cast", [ascending], {"to": ir.DataType.INT64})
        # whole rows of D per (batch, head): GatherND over the two leading axes, ≈4x faster in ONNX Runtime
        # than GatherElements with an index expanded to [B, Hkv, K, D]
        rows = tape.op("Unsqueeze", [keep, const_ints(tape, [3])])
        return [
            tape.op("GatherND", [key, rows], {"batch_dims": 2}),
            tape.op("GatherND", [value, rows], {"batch_dims": 2}),
            tape.op("GatherElements", [new_state, keep], {"axis": 2}),
        ]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy twin of the body."""
        key, value, score, probs, mask = inputs
        return evict_reference(key, value, score, probs, mask, attrs=attrs, policy=self._POLICY)

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Same dtypes; the slot axis becomes ``min(T, budget)`` (unknown when ``T`` is symbolic)."""
        out: list[tuple[ir.DataType | None, ir.Shape | None]] = []
        key = inputs[0]
        budget = int_attr_value(attrs, "budget")
        for rank in (4, 4, 3):
            shape = None
            if key is not None and key.shape is not None:
                dims: list[int | None | ir.SymbolicDim] = [*key.shape.dims[:rank]]
                t = dims[2]
                dims[2] = min(t, budget) if isinstance(t, int) else None
                shape = ir.Shape(dims)
            out.append((ir.DataType.FLOAT, shape))
        return out

    def example_inputs(self) -> list[np.ndarray]:
        """A decode-like step: 6 past slots (one padding), 2 new tokens, 4 query heads on 2 KV heads."""
        rng = np.random.default_rng(2)
        b, hkv, hq, p, s, d = 2, 2, 4, 6, 2, 4
        t = p + s
        score = rng.random((b, hkv, p)).astype(np.float32)
        score[:, :, 0] = -1.0
        logits = rng.standard_normal((b, hq, s, t)).astype(np.float32)
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        return [
            rng.standard_normal((b, hkv, t, d)).astype(np.float32),
            rng.standard_normal((b, hkv, t, d)).astype(np.float32),
            score,
            probs.astype(np.float32),
            np.ones((b, t), np.int64),
        ]


class KvEvictH2O(KvEvictOp):
    """Heavy-hitter eviction: keep the slots that accumulated the most attention."""

    op_type = "KvEvictH2O"
    plugin_version = "1"
    doc = (
        "H2O: accumulates the attention each cached slot receives (per KV head, summed over its query heads "
        "and the new queries) and keeps `budget` slots: `sink` first, `recent` last, the rest by accumulated "
        "score; the identity when T <= budget."
    )
    _POLICY = "h2o"
    attributes = (
        *_ATTRS,
        AttrSpec(
            "decay",
            "float",
            default=1.0,
            minimum=0.0,
            maximum=1.0,
            doc="factor on the accumulated score per step (1: H2O's plain sum; 0: this step's attention only)",
        ),
    )

    def _rank(self, tape, state, valid, grouped, p, s, t):  # type: ignore[no-untyped-def]
        attn = tape.op("ReduceSum", [grouped, const_ints(tape, [2, 3])], {"keepdims": 0})
        decayed = tape.op("Mul", [state, float_attr_ref(tape, "decay")])
        acc = tape.op("Where", [valid, tape.op("Add", [decayed, attn]), state])
        return acc, acc


class KvEvictSnap(KvEvictOp):
    """SnapKV: select at prefill by the observation window's pooled attention, then keep a window."""

    op_type = "KvEvictSnap"
    plugin_version = "1"
    doc = (
        "SnapKV: at prefill keeps `sink` first and `recent` last slots plus the slots the last `recent` "
        "queries attend to most (summed over the KV head's query heads, max-pooled over 7 slots); "
        "afterwards keeps `sink` first and the most recent slots; the identity when T <= budget."
    )
    _POLICY = "snapkv"

    def _rank(self, tape, state, valid, grouped, p, s, t):  # type: ignore[no-untyped-def]
        start = tape.op("Max", [tape.op("Sub", [s, int_attr_ref(tape, "recent")]), const_ints(tape, [0])])
        window = tape.op("Slice", [grouped, start, s, const_ints(tape, [3])])
        votes = tape.op("ReduceSum", [window, const_ints(tape, [2, 3])], {"keepdims": 0})
        flat = tape.op("Reshape", [votes, tape.op("Concat", [const_ints(tape, [-1, 1, 1]), t], {"axis": 0})])
        # "Same" max-pool over slots: pad the slot axis with POOL_KERNEL // 2 neutral elements (the lowest
        # float) on each side, then pool without MaxPool's own pads, so every window holds real slots and
        # no runtime has to interpret a pads layout (onnx.reference reads 2-D pads as top/bottom/left/right).
        half = POOL_KERNEL // 2
        padded = tape.op(
            "Pad", [flat, const_ints(tape, [0, 0, 0, half, 0, 0, 0, half]), scalar_float(tape, _LOWEST)]
        )
        pooled = tape.op("MaxPool", [padded], {"kernel_shape": [1, POOL_KERNEL], "strides": [1, 1]})
        pooled = tape.op("Reshape", [pooled, tape.op("Shape", [votes])])
        slots = tape.op(
            "Cast",
            [tape.op("Range", [scalar_int(tape, 0), tape.op("Squeeze", [t]), scalar_int(tape, 1)])],
            {"to": ir.DataType.FLOAT},
        )
        is_prefill = tape.op("Equal", [p, const_ints(tape, [0])])
        chosen = tape.op("Where", [is_prefill, pooled, slots])
        rank = tape.op("Where", [valid, chosen, scalar_float(tape, -1.0)])
        return rank, state


KV_EVICT_H2O: KvEvictH2O = register_op(KvEvictH2O())
KV_EVICT_SNAP: KvEvictSnap = register_op(KvEvictSnap())
