"""``parekit::KvQuantKey`` / ``KvQuantValue``: append new tokens to a KIVI-style quantized KV cache.

    codes [B,H,Nq,D/p] ─┐
    scale, min          ├─► KvQuantKey{bits, group, residual} ─► codes', scale', min', residual'
    residual [B,H,R,D] ─┤        (KvQuantValue: same I/O, other group layout)
    new [B,H,S,D] ──────┘

The cache is split in two parts that both cross the graph boundary:

* a quantized store of ``Nq`` tokens (``Nq`` a multiple of ``group``): unsigned ``bits``-bit codes,
  ``p = 8 // bits`` codes packed per byte along the channel axis (``bits=4``: two per byte; the axis is cut
  into ``p`` contiguous blocks and byte ``j`` holds code ``j`` of every block), stored as
  int8 ``byte - 128`` (TensorRT has no uint8 intermediate tensors; int8 casts parse and build), with an
  asymmetric float16 ``scale`` and ``min`` per group. **Keys** are quantized per channel over groups of
  ``group`` consecutive tokens (``scale``/``min`` ``[B, H, Nq/group, D]``); **values** per token over
  groups of ``group`` consecutive channels (``[B, H, Nq, D/group]``), as in KIVI;
* a float residual window of the most recent tokens.

Each step ``full = residual ++ new`` (``L`` tokens); its oldest ``n = max(0, L - residual) // group * group``
tokens are quantized and appended to the store, the rest becomes ``residual'``. The window therefore
holds between ``residual`` and ``residual + group - 1`` tokens once it has filled, and every token is
quantized exactly once (no re-quantization error). ``residual >= context`` quantizes nothing: exact.

Quantization of one group ``x``: ``mn = min x``, ``scale = (max x - mn) / (2^bits - 1)``, both rounded to
float16 first; ``code = clip(round((x - mn) / scale), 0, 2^bits - 1)`` (``scale == 0`` divides by 1).
Dequantization (:mod:`parekit.ops.kv_dequant`): ``x = code * scale + mn``. The format both ops share is
defined in :mod:`parekit.ops.kv_quant_format`. Packing: byte =
``sum_k code[k * L/p + j] * (2^bits)^k`` (block ``k`` in digit ``k``); done in float32 arithmetic on exact
small integers (Mul/ReduceSum/Div/Floor), then Cast: no bitwise ops, TensorRT-friendly. Blocks rather than
neighbouring channels so that unpacking is whole-tensor arithmetic plus one Concat along the channel axis
(ONNX Runtime's CPU kernels crawl over a size-2 innermost axis).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import int_attr_value
from parekit.ops.body import const_ints, int_attr_ref, scalar_float
from parekit.ops.dtypes import F16, F32, I8
from parekit.ops.kv_quant_format import (
    BITS_ATTR,
    GROUP_ATTR,
    bit_constants,
    build_pack,
    codes_per_byte,
    group_view,
    quantize_reference,
)
from parekit.ops.opdef import OpDef
from parekit.ops.registry import register_op
from parekit.ops.schema import AttrSpec, AttrValue, ParamSpec

# codes_per_byte: the packing rule, also reachable from here for the kv-quant pass.
__all__ = [
    "KV_QUANT_KEY",
    "KV_QUANT_VALUE",
    "RESIDUAL_ATTR",
    "KvQuantKey",
    "KvQuantValue",
    "codes_per_byte",
    "quant_split",
]

RESIDUAL_ATTR = AttrSpec("residual", "int", default=32, minimum=0, doc="most recent tokens kept in float32")


def quant_split(length: int, residual: int, group: int) -> int:
    """How many of ``length`` float tokens move to the quantized store: a multiple of ``group``."""
    return max(0, length - residual) // group * group


def _build_quantize(
    tape: Tape, x: ir.Value, levels: ir.Value, per_channel: bool
) -> tuple[ir.Value, ir.Value, ir.Value]:
    xg, full, small, group_axis = group_view(tape, x, per_channel)
    axis = const_ints(tape, [group_axis])
    mn = tape.op("ReduceMin", [xg, axis], {"keepdims": 1})
    mx = tape.op("ReduceMax", [xg, axis], {"keepdims": 1})
    scale16 = tape.op(
        "Cast", [tape.op("Div", [tape.op("Sub", [mx, mn]), levels])], {"to": ir.DataType.FLOAT16}
    )
    mn16 = tape.op("Cast", [mn], {"to": ir.DataType.FLOAT16})
    scale_r = tape.op("Cast", [scale16], {"to": ir.DataType.FLOAT})
    mn_r = tape.op("Cast", [mn16], {"to": ir.DataType.FLOAT})
    zero = scalar_float(tape, 0.0)
    safe = tape.op("Where", [tape.op("Greater", [scale_r, zero]), scale_r, scalar_float(tape, 1.0)])
    q = tape.op("Round", [tape.op("Div", [tape.op("Sub", [xg, mn_r]), safe])])
    q = tape.op("Min", [tape.op("Max", [q, zero]), levels])
    codes = tape.op("Reshape", [q, full])
    return codes, tape.op("Reshape", [scale16, small]), tape.op("Reshape", [mn16, small])


class KvQuantAppendOp(OpDef):
    """Shared body/reference/shape rule of :class:`KvQuantKey` and :class:`KvQuantValue`."""

    _PER_CHANNEL: bool = True
    attributes = (BITS_ATTR, GROUP_ATTR, RESIDUAL_ATTR)
    min_opset = 18

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """Split ``residual ++ new``, quantize the oldest whole groups, append them to the store."""
        codes, scale, mn, residual, new = inputs
        p, _, levels, weights = bit_constants(tape)
        axis2 = const_ints(tape, [2])
        full = tape.op("Concat", [residual, new], {"axis": 2})
        length = tape.op("Gather", [tape.op("Shape", [full]), axis2], {"axis": 0})
        g = int_attr_ref(tape, GROUP_ATTR.name)
        over = tape.op(
            "Max", [tape.op("Sub", [length, int_attr_ref(tape, RESIDUAL_ATTR.name)]), const_ints(tape, [0])]
        )
        n = tape.op("Mul", [tape.op("Div", [over, g]), g])
        old = tape.op("Slice", [full, const_ints(tape, [0]), n, axis2])
        recent = tape.op("Slice", [full, n, length, axis2])
        q, s, m = _build_quantize(tape, old, levels, self._PER_CHANNEL)
        packed = build_pack(tape, q, p, weights)
        return [
            tape.op("Concat", [codes, packed], {"axis": 2}),
            tape.op("Concat", [scale, s], {"axis": 2}),
            tape.op("Concat", [mn, m], {"axis": 2}),
            recent,
        ]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy twin of the body."""
        codes, scale, mn, residual, new = inputs
        bits, group, keep = int_attr_value(attrs, "bits"), int_attr_value(attrs, "group"), int_attr_value(attrs, "residual")
        full = np.concatenate([residual, new], axis=2)
        n = quant_split(full.shape[2], keep, group)
        q, s, m = quantize_reference(full[:, :, :n], bits, group, self._PER_CHANNEL)
        return [
            np.concatenate([codes, q], axis=2),
            np.concatenate([scale, s], axis=2),
            np.concatenate([mn, m], axis=2),
            full[:, :, n:].copy(),
        ]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Codes int8, scale/min float16, residual float32; the growing axis is left unknown."""

        def like(v: ir.Value | None) -> ir.Shape | None:
            if v is None or v.shape is None:
                return None
            dims: list[int | ir.SymbolicDim | None] = list(v.shape.dims)
            dims[2] = None
            return ir.Shape(dims)

        return [
            (ir.DataType.INT8, like(inputs[0])),
            (ir.DataType.FLOAT16, like(inputs[1])),
            (ir.DataType.FLOAT16, like(inputs[2])),
            (ir.DataType.FLOAT, like(inputs[3])),
        ]

    def example_inputs(self) -> list[np.ndarray]:
        """Inputs for the default attributes: one stored group, 40 + 30 float tokens (one group moves)."""
        rng = np.random.default_rng(0)
        b, h, d, g = 2, 2, 32, int(GROUP_ATTR.default)  # type: ignore[arg-type]
        stored = rng.standard_normal((b, h, g, d)).astype(np.float32)
        codes, scale, mn = quantize_reference(stored, 8, g, self._PER_CHANNEL)
        residual = rng.standard_normal((b, h, 40, d)).astype(np.float32)
        new = rng.standard_normal((b, h, 30, d)).astype(np.float32)
        return [codes, scale, mn, residual, new]


def _specs(per_channel: bool) -> tuple[tuple[ParamSpec, ...], tuple[ParamSpec, ...]]:
    groups = "[B, H, Nq/group, D]" if per_channel else "[B, H, Nq, D/group]"
    ins = (
        ParamSpec("codes", I8, "[B, H, Nq, D/p]", rank=4, doc="packed codes of the quantized store"),
        ParamSpec("scale", F16, groups, rank=4, doc="per-group scale of the store"),
        ParamSpec("min", F16, groups, rank=4, doc="per-group minimum (zero point) of the store"),
        ParamSpec("residual", F32, "[B, H, R, D]", rank=4, doc="float window of the most recent tokens"),
        ParamSpec("new", F32, "[B, H, S, D]", rank=4, doc="this step's new keys or values"),
    )
    outs = (
        ParamSpec(
            "codes_out", I8, "[B, H, Nq + n, D/p]", rank=4, doc="store with the n aged tokens appended"
        ),
        ParamSpec("scale_out", F16, groups, rank=4, doc="scales, appended"),
        ParamSpec("min_out", F16, groups, rank=4, doc="minimums, appended"),
        ParamSpec("residual_out", F32, "[B, H, R + S - n, D]", rank=4, doc="float window after the move"),
    )
    return ins, outs


class KvQuantKey(KvQuantAppendOp):
    """Append new keys: per-channel quantization over groups of ``group`` tokens."""

    op_type = "KvQuantKey"
    plugin_version = "1"
    inputs, outputs = _specs(per_channel=True)
    doc = (
        "Appends new keys to a KIVI-style key cache: residual ++ new is split, its oldest whole groups of "
        "`group` tokens are quantized per channel (asymmetric, `bits` bits, float16 scale/min) and appended "
        "to the packed store; at least `residual` tokens stay in float32."
    )
    _PER_CHANNEL = True


class KvQuantValue(KvQuantAppendOp):
    """Append new values: per-token quantization over groups of ``group`` channels."""

    op_type = "KvQuantValue"
    plugin_version = "1"
    inputs, outputs = _specs(per_channel=False)
    doc = (
        "Appends new values to a KIVI-style value cache: residual ++ new is split, its oldest whole groups "
        "of `group` tokens are quantized per token over groups of `group` channels (asymmetric, `bits` bits, "
        "float16 scale/min) and appended to the packed store; at least `residual` tokens stay in float32."
    )
    _PER_CHANNEL = False


KV_QUANT_KEY: KvQuantKey = register_op(KvQuantKey())
KV_QUANT_VALUE: KvQuantValue = register_op(KvQuantValue())
