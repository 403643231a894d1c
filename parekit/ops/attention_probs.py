"""``parekit::AttentionProbs``: the softmax attention probabilities an ONNX ``Attention`` op does not expose.

    q [B, H, S, D] ──┐
    k [B, H, T, D] ──┼─► AttentionProbs{scale} ─► probs [B, H, S, T]
    mask bool ───────┘   [B, 1|H, S, T]

``probs = softmax(where(mask, scale * q kᵀ, lowest))`` along ``T``, and rows with no visible key are
zero (not uniform). ``scale = 0`` means ``1 / sqrt(D)``, the ``Attention`` op's default. The kv-evict
pass recomputes probabilities with it at opset 23, where attention is one ``Attention`` node (its
``qk_matmul_output`` with mode 3 would expose them in ONNX Runtime CPU only, not portably); it reads the
same ``q``, ``k`` and mask the ``Attention`` node reads, so the scores are the node's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import float_attr_value
from parekit.ops.body import const_ints, float_attr_ref, scalar_float
from parekit.ops.dtypes import BOOL, F32
from parekit.ops.opdef import OpDef
from parekit.ops.registry import register_op
from parekit.ops.schema import AttrSpec, AttrValue, ParamSpec

__all__ = ["ATTENTION_PROBS", "AttentionProbs"]

_LOWEST = float(np.finfo(np.float32).min)


class AttentionProbs(OpDef):
    """``AttentionProbs(q, k, mask) -> probs``: masked, scaled softmax of ``q kᵀ``; empty rows are zero."""

    op_type = "AttentionProbs"
    plugin_version = "1"
    inputs = (
        ParamSpec("q", F32, "[B, H, S, D]", rank=4, doc="queries (after rotary embedding)"),
        ParamSpec("k", F32, "[B, H, T, D]", rank=4, doc="keys, one per query head (grouped heads expanded)"),
        ParamSpec("mask", BOOL, "[B, 1|H, S, T]", rank=4, doc="True = visible"),
    )
    outputs = (ParamSpec("probs", F32, "[B, H, S, T]", rank=4, doc="attention probabilities"),)
    attributes = (AttrSpec("scale", "float", default=0.0, minimum=0.0, doc="score scale; 0 means 1/sqrt(D)"),)
    min_opset = 18
    example_tolerance = (1e-5, 1e-6)
    doc = (
        "Softmax over T of scale * q k^T where mask is True (rows with no visible key give zeros); "
        "scale 0 means 1/sqrt(D)."
    )

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """MatMul, scale, Where(mask), Softmax, times row visibility."""
        q, k, mask = inputs
        d = tape.op(
            "Cast",
            [tape.op("Gather", [tape.op("Shape", [q]), const_ints(tape, [3])], {"axis": 0})],
            {"to": ir.DataType.FLOAT},
        )
        default = tape.op("Reciprocal", [tape.op("Sqrt", [d])])
        given = float_attr_ref(tape, "scale")
        scale = tape.op("Where", [tape.op("Equal", [given, scalar_float(tape, 0.0)]), default, given])
        scores = tape.op(
            "Mul", [tape.op("MatMul", [q, tape.op("Transpose", [k], {"perm": [0, 1, 3, 2]})]), scale]
        )
        masked = tape.op("Where", [mask, scores, scalar_float(tape, _LOWEST)])
        probs = tape.op("Softmax", [masked], {"axis": -1})
        rows = tape.op(
            "ReduceMax",
            [tape.op("Cast", [mask], {"to": ir.DataType.FLOAT}), const_ints(tape, [3])],
            {"keepdims": 1},
        )
        return [tape.op("Mul", [probs, rows])]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy twin (float64 softmax, cast to float32)."""
        q, k, mask = inputs
        scale = float_attr_value(attrs, "scale") or 1.0 / np.sqrt(q.shape[-1])
        scores = np.where(
            mask, (q.astype(np.float64) @ np.swapaxes(k, 2, 3).astype(np.float64)) * scale, -np.inf
        )
        top = np.max(scores, axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.where(mask, np.exp(scores - top), 0.0)
        total = e.sum(-1, keepdims=True)
        return [np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Float32 ``[B, H, S, T]``."""
        q, k = inputs[0], inputs[1]
        shape = None
        if q is not None and k is not None and q.shape is not None and k.shape is not None:
            shape = ir.Shape([q.shape[0], q.shape[1], q.shape[2], k.shape[2]])
        return [(ir.DataType.FLOAT, shape)]

    def example_inputs(self) -> list[np.ndarray]:
        """Two new queries over 5 keys, causal, one fully masked row."""
        rng = np.random.default_rng(4)
        q = rng.standard_normal((2, 3, 2, 4)).astype(np.float32)
        k = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
        mask = np.tril(np.ones((2, 5), bool), k=3)[None, None].repeat(2, axis=0)
        mask[1, :, 0, :] = False
        return [q, k, mask]


ATTENTION_PROBS: AttentionProbs = register_op(AttentionProbs())
