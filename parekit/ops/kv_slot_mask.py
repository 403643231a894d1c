"""Masks over an evicted cache: ``parekit::KvMaskRemap`` (per batch) and ``KvSlotMask`` (per KV head).

    attention_mask [B, N] ──┐
    past [B, H, P, D] ──────┼─► KvMaskRemap ─► mask' [B, P + S] = ones(P) ++ attention_mask[:, N-S:]
    input_ids [B, S] ───────┘

    attn_mask bool [B, 1|Hq, S, T] ─┐
    score [B, Hkv, P] ──────────────┴─► KvSlotMask{group} ─► attn_mask' bool [B, Hkv*group, S, T]

The runtime passes the mask over *all* ``N`` tokens seen plus the ``S`` new ones; an evicting cache
holds ``P`` slots whose tokens differ per KV head, so a per-batch mask cannot say which slots are
padding. ``KvMaskRemap`` therefore marks every past slot visible (the exported graph indexes the mask by
cache slot and builds the causal part from slot indices, which stays right because new tokens are
appended last), and ``KvSlotMask`` hides, per KV head, the slots whose carried score is ``-1``
(padding; see :mod:`parekit.ops.kv_evict`) in the boolean mask attention reads, expanding it to the
``group`` query heads of each KV head (query head ``h`` reads KV head ``h // group``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import int_attr_value
from parekit.ops.body import const_ints, dim, int_attr_ref, scalar_float
from parekit.ops.dtypes import BOOL, F32, IDS_DTYPES, MASK_DTYPES
from parekit.ops.opdef import OpDef
from parekit.ops.registry import register_op
from parekit.ops.schema import AttrSpec, AttrValue, ParamSpec

__all__ = ["KV_MASK_REMAP", "KV_SLOT_MASK", "KvMaskRemap", "KvSlotMask"]


class KvMaskRemap(OpDef):
    """``KvMaskRemap(attention_mask, past, input_ids) -> mask'``: every past slot visible, new columns kept."""

    op_type = "KvMaskRemap"
    plugin_version = "1"
    inputs = (
        ParamSpec(
            "attention_mask",
            MASK_DTYPES,
            "[B, N]",
            rank=2,
            doc="mask over all tokens seen plus the new ones",
        ),
        ParamSpec("past", F32, "[B, H, P, D]", rank=4, doc="a past cache input (only its length P is read)"),
        ParamSpec("input_ids", IDS_DTYPES, "[B, S]", rank=2, doc="the new tokens (only S is read)"),
    )
    outputs = (
        ParamSpec("mask_out", MASK_DTYPES, "[B, P + S]", rank=2, doc="ones(P) ++ the last S columns"),
    )
    min_opset = 18
    doc = (
        "Maps the runtime's mask over all N seen + new tokens onto an evicted cache of P slots: P ones "
        "(per-head padding is applied by KvSlotMask) followed by the mask's last S columns."
    )

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """``Concat(CastLike(Expand(1, [B, P])), Slice(mask, N - S, N))``."""
        mask, past, ids = inputs
        b, n = dim(tape, mask, 0), dim(tape, mask, 1)
        p, s = dim(tape, past, 2), dim(tape, ids, 1)
        ones = tape.op(
            "Expand", [tape.op("CastLike", [scalar_float(tape, 1.0), mask]), tape.op("Concat", [b, p], {"axis": 0})]
        )
        tail = tape.op("Slice", [mask, tape.op("Sub", [n, s]), n, const_ints(tape, [1])])
        return [tape.op("Concat", [ones, tail], {"axis": 1})]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy twin."""
        mask, past, ids = inputs
        s = ids.shape[1]
        tail = mask[:, mask.shape[1] - s :]
        return [np.concatenate([np.ones((mask.shape[0], past.shape[2]), mask.dtype), tail], axis=1)]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Mask dtype; ``[B, ?]``."""
        mask = inputs[0]
        assert mask is not None
        shape = ir.Shape([mask.shape[0], None]) if mask.shape is not None else None
        return [(mask.dtype, shape)]

    def example_inputs(self) -> list[np.ndarray]:
        """9 tokens seen + 2 new, 5 kept slots, left padding in row 1."""
        mask = np.ones((2, 11), np.int64)
        mask[1, :3] = 0
        return [mask, np.zeros((2, 2, 5, 4), np.float32), np.zeros((2, 2), np.int64)]


class KvSlotMask(OpDef):
    """``KvSlotMask(attn_mask, score) -> attn_mask'``: hide padding slots per KV head."""

    op_type = "KvSlotMask"
    plugin_version = "1"
    inputs = (
        ParamSpec(
            "attn_mask", BOOL, "[B, 1|Hq, S, T]", rank=4, doc="boolean mask attention reads (True = visible)"
        ),
        ParamSpec("score", F32, "[B, Hkv, P]", rank=3, doc="per-slot state of the past slots (-1: padding)"),
    )
    outputs = (
        ParamSpec("mask_out", BOOL, "[B, Hkv*group, S, T]", rank=4, doc="mask with padding slots hidden"),
    )
    attributes = (AttrSpec("group", "int", default=1, minimum=1, doc="query heads per KV head"),)
    min_opset = 18
    doc = (
        "ANDs a boolean attention mask [B, 1|Hq, S, T] with each KV head's slot validity (score >= 0 for the "
        "P past slots, True for the T - P new ones), expanded to its `group` query heads."
    )

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """Validity ``[B, Hkv, T]`` → ``[B, Hkv*group, 1, T]`` → And."""
        attn_mask, score = inputs
        b, hkv, p = (dim(tape, score, i) for i in range(3))
        t = dim(tape, attn_mask, 3)
        past_valid = tape.op("GreaterOrEqual", [score, scalar_float(tape, 0.0)])
        true = tape.op("Cast", [const_ints(tape, [1])], {"to": ir.DataType.BOOL})
        new_valid = tape.op(
            "Expand", [true, tape.op("Concat", [b, hkv, tape.op("Sub", [t, p])], {"axis": 0})]
        )
        valid = tape.op("Concat", [past_valid, new_valid], {"axis": 2})
        group = int_attr_ref(tape, "group")
        five = tape.op("Unsqueeze", [valid, const_ints(tape, [2, 3])])
        five = tape.op(
            "Expand", [five, tape.op("Concat", [b, hkv, group, const_ints(tape, [1]), t], {"axis": 0})]
        )
        heads = tape.op(
            "Reshape",
            [
                five,
                tape.op("Concat", [b, tape.op("Mul", [hkv, group]), const_ints(tape, [1]), t], {"axis": 0}),
            ],
        )
        return [tape.op("And", [attn_mask, heads])]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy twin."""
        attn_mask, score = inputs
        group = int_attr_value(attrs, "group")
        b, hkv, p = score.shape
        t = attn_mask.shape[3]
        valid = np.concatenate([score >= 0, np.ones((b, hkv, t - p), bool)], axis=2)
        heads = np.repeat(valid, group, axis=1)[:, :, None, :]
        return [np.logical_and(attn_mask, heads)]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Bool ``[B, Hkv*group, S, T]`` (head count from the score's static dim when known)."""
        attn_mask, score = inputs
        shape = None
        if (
            attn_mask is not None
            and attn_mask.shape is not None
            and score is not None
            and score.shape is not None
        ):
            dims: list[int | None | ir.SymbolicDim] = list(attn_mask.shape.dims)
            hkv = score.shape[1]
            group = attrs["group"]
            assert isinstance(group, int)
            dims[1] = hkv * group if isinstance(hkv, int) else None
            shape = ir.Shape(dims)
        return [(ir.DataType.BOOL, shape)]

    def example_inputs(self) -> list[np.ndarray]:
        """Causal mask of 2 new tokens over 5 past + 2 slots; one padding slot per KV head."""
        t, s = 7, 2
        causal = np.tril(np.ones((s, t), bool), k=t - s)[None, None].repeat(2, axis=0)
        score = np.random.default_rng(3).random((2, 2, 5)).astype(np.float32)
        score[0, 0, 1] = score[1, 1, 3] = -1.0
        return [causal, score]


KV_MASK_REMAP: KvMaskRemap = register_op(KvMaskRemap())
KV_SLOT_MASK: KvSlotMask = register_op(KvSlotMask())
