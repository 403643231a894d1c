"""``parekit::KvQuantAttention``: decode attention straight over a KIVI-style quantized KV cache.

    query [B, Hq, S, D] ───────────────────────────┐
    k_codes, k_scale, k_min (store), k_tail ───────┤
    v_codes, v_scale, v_min (store), v_tail ───────┼─► KvQuantAttention{bits, group, scale} ─► [B, Hq, S, D]
    mask bool [B|1, 1|Hq, S|1, T] ─────────────────┘

The keys (values) attention reads are ``dequantize(store) ++ tail``: ``Nq`` stored tokens in the packed
format of :mod:`parekit.ops.kv_quant_format` (keys per channel over groups of ``group`` tokens, values per
token over groups of ``group`` channels) followed by ``Tf`` float tokens (the kv-quant pass's residual
window ++ this step's new keys/values), ``T = Nq + Tf`` in all. Grouped-query attention: ``Hq`` is a
multiple of the KV heads ``Hkv`` and query head ``h`` reads KV head ``h // (Hq / Hkv)`` (the exporters'
``repeat_kv``). ``out = softmax(where(mask, scale · q kᵀ, -inf)) v`` along ``T``; rows with no visible
key give zeros (ONNX ``Attention`` would give NaN there). ``scale = 0`` means ``1 / sqrt(D)``.

The body is dequantize + attention from standard ops (it materializes the float cache); a native kernel
reads the codes directly (a quarter of the float cache's bytes at ``bits=8``, an eighth at ``bits=4``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import float_attr_value, int_attr_value
from parekit.ops.body import const_ints, dims, float_attr_ref, scalar_float
from parekit.ops.dtypes import BOOL, F16, F32, I8
from parekit.ops.kv_quant_format import (
    BITS_ATTR,
    GROUP_ATTR,
    bit_constants,
    build_dequant,
    build_unpack,
    quantize_reference,
    unpack_reference,
)
from parekit.ops.opdef import OpDef
from parekit.ops.registry import register_op
from parekit.ops.schema import AttrSpec, AttrValue, ParamSpec

__all__ = ["KV_QUANT_ATTENTION", "KvQuantAttention"]

_LOWEST = float(np.finfo(np.float32).min)


def _build_dequant(
    tape: Tape, packed: ir.Value, scale: ir.Value, mn: ir.Value, per_channel: bool
) -> ir.Value:
    p, base, _, _ = bit_constants(tape)
    return build_dequant(tape, build_unpack(tape, packed, p, base), scale, mn, per_channel)


def _dequant_reference(
    packed: np.ndarray, scale: np.ndarray, mn: np.ndarray, bits: int, group: int, keys: bool
):
    """Float32 ``[B, H, Nq, D]``: ``code * scale + min`` with the group's scale repeated over its members."""
    codes = unpack_reference(packed, bits).astype(np.float32)
    axis = 2 if keys else 3
    s = np.repeat(scale.astype(np.float32), group, axis=axis)
    m = np.repeat(mn.astype(np.float32), group, axis=axis)
    return codes * s + m


class KvQuantAttention(OpDef):
    """Attention of ``query`` over ``dequantize(store) ++ tail`` keys and values (grouped KV heads)."""

    op_type = "KvQuantAttention"
    plugin_version = "1"
    inputs = (
        ParamSpec("query", F32, "[B, Hq, S, D]", rank=4, doc="queries (after rotary embedding)"),
        ParamSpec("k_codes", I8, "[B, Hkv, Nq, D/p]", rank=4, doc="packed key codes of the store"),
        ParamSpec("k_scale", F16, "[B, Hkv, Nq/group, D]", rank=4, doc="key scales (per channel)"),
        ParamSpec("k_min", F16, "[B, Hkv, Nq/group, D]", rank=4, doc="key minimums"),
        ParamSpec("k_tail", F32, "[B, Hkv, Tf, D]", rank=4, doc="float keys after the store"),
        ParamSpec("v_codes", I8, "[B, Hkv, Nq, D/p]", rank=4, doc="packed value codes of the store"),
        ParamSpec("v_scale", F16, "[B, Hkv, Nq, D/group]", rank=4, doc="value scales (per token)"),
        ParamSpec("v_min", F16, "[B, Hkv, Nq, D/group]", rank=4, doc="value minimums"),
        ParamSpec("v_tail", F32, "[B, Hkv, Tf, D]", rank=4, doc="float values after the store"),
        ParamSpec("mask", BOOL, "[B|1, 1|Hq, S|1, Nq + Tf]", rank=4, doc="True = visible"),
    )
    outputs = (ParamSpec("context", F32, "[B, Hq, S, D]", rank=4, doc="attention output per query head"),)
    attributes = (
        BITS_ATTR,
        GROUP_ATTR,
        AttrSpec("scale", "float", default=0.0, minimum=0.0, doc="score scale; 0 means 1/sqrt(D)"),
    )
    min_opset = 18
    example_tolerance = (1e-5, 1e-5)
    doc = (
        "Attention of query over keys/values dequantize(store) ++ tail (KIVI packed store, float tail), "
        "grouped KV heads, boolean mask; rows with no visible key give zeros; scale 0 means 1/sqrt(D)."
    )

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """Dequantize both stores, append the tails, then grouped attention with MatMul/Softmax."""
        q, kc, ks, km, kt, vc, vs, vm, vt, mask = inputs
        axis2 = {"axis": 2}
        k = tape.op("Concat", [_build_dequant(tape, kc, ks, km, True), kt], axis2)
        v = tape.op("Concat", [_build_dequant(tape, vc, vs, vm, False), vt], axis2)
        b, hq, s, d = dims(tape, q, 4)
        hkv = dims(tape, k, 4)[1]
        t = dims(tape, k, 4)[2]
        rep = tape.op("Div", [hq, hkv])
        q5 = tape.op("Reshape", [q, tape.op("Concat", [b, hkv, rep, s, d], {"axis": 0})])
        at2 = const_ints(tape, [2])
        k5 = tape.op("Transpose", [tape.op("Unsqueeze", [k, at2])], {"perm": [0, 1, 2, 4, 3]})
        default = tape.op("Reciprocal", [tape.op("Sqrt", [tape.op("Cast", [d], {"to": ir.DataType.FLOAT})])])
        given = float_attr_ref(tape, "scale")
        scale = tape.op("Where", [tape.op("Equal", [given, scalar_float(tape, 0.0)]), default, given])
        scores = tape.op(
            "Reshape",
            [tape.op("MatMul", [q5, k5]), tape.op("Concat", [b, hq, s, t], {"axis": 0})],
        )
        masked = tape.op("Where", [mask, tape.op("Mul", [scores, scale]), scalar_float(tape, _LOWEST)])
        probs = tape.op("Softmax", [masked], {"axis": -1})
        probs5 = tape.op("Reshape", [probs, tape.op("Concat", [b, hkv, rep, s, t], {"axis": 0})])
        ctx = tape.op("MatMul", [probs5, tape.op("Unsqueeze", [v, at2])])
        out = tape.op("Reshape", [ctx, tape.op("Concat", [b, hq, s, d], {"axis": 0})])
        rows = tape.op(
            "ReduceMax",
            [tape.op("Cast", [mask], {"to": ir.DataType.FLOAT}), const_ints(tape, [3])],
            {"keepdims": 1},
        )
        return [tape.op("Mul", [out, rows])]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy twin: float32 dequantization (as KvDequant*), float64 attention, cast to float32."""
        q, kc, ks, km, kt, vc, vs, vm, vt, mask = inputs
        bits, group = int_attr_value(attrs, "bits"), int_attr_value(attrs, "group")
        k = np.concatenate([_dequant_reference(kc, ks, km, bits, group, True), kt], axis=2)
        v = np.concatenate([_dequant_reference(vc, vs, vm, bits, group, False), vt], axis=2)
        rep = q.shape[1] // k.shape[1]
        k = np.repeat(k, rep, axis=1).astype(np.float64)
        v = np.repeat(v, rep, axis=1).astype(np.float64)
        scale = float_attr_value(attrs, "scale") or 1.0 / np.sqrt(q.shape[-1])
        visible = np.broadcast_to(mask, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]))
        scores = np.where(visible, (q.astype(np.float64) @ np.swapaxes(k, 2, 3)) * scale, -np.inf)
        top = (
            np.max(scores, axis=-1, keepdims=True) if scores.shape[-1] else np.zeros((*scores.shape[:-1], 1))
        )
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.where(visible, np.exp(scores - top), 0.0)
        total = e.sum(-1, keepdims=True)
        probs = e / np.where(total > 0, total, 1.0)
        return [(probs @ v).astype(np.float32)]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Float32, the query's shape."""
        q = inputs[0]
        return [(ir.DataType.FLOAT, None if q is None or q.shape is None else ir.Shape(list(q.shape.dims)))]

    def example_inputs(self) -> list[np.ndarray]:
        """Two KV heads, four query heads, 64 stored + 5 float tokens, one decode step, one batch row padded."""
        rng = np.random.default_rng(5)
        b, hkv, hq, nq, tf, d, g = 2, 2, 4, 64, 5, 32, int(GROUP_ATTR.default)  # type: ignore[arg-type]
        kc, ks, km = quantize_reference(rng.standard_normal((b, hkv, nq, d)).astype(np.float32), 8, g, True)
        vc, vs, vm = quantize_reference(rng.standard_normal((b, hkv, nq, d)).astype(np.float32), 8, g, False)
        kt = rng.standard_normal((b, hkv, tf, d)).astype(np.float32)
        vt = rng.standard_normal((b, hkv, tf, d)).astype(np.float32)
        q = rng.standard_normal((b, hq, 1, d)).astype(np.float32)
        mask = np.ones((b, 1, 1, nq + tf), bool)
        mask[1, :, :, :7] = False
        return [q, kc, ks, km, kt, vc, vs, vm, vt, mask]


KV_QUANT_ATTENTION: KvQuantAttention = register_op(KvQuantAttention())
