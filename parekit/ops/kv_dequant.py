"""``parekit::KvDequantKey`` / ``KvDequantValue``: rebuild a float cache from a KIVI-style quantized one.

    codes [B,H,Nq,D/p], scale, min ─► dequantize ─┐
                                                  ├─► Concat ─► cache [B, H, Nq + R, D] (float32)
    residual [B,H,R,D] ───────────────────────────┘

The inverse of :mod:`parekit.ops.kv_quant` (format: :mod:`parekit.ops.kv_quant_format`): unpack
``p = 8 // bits`` codes per byte, then ``x = code * scale + min`` per group (keys: groups of ``group`` tokens per channel; values: groups of
``group`` channels per token), then append the float residual window. The kv-quant pass feeds the
result to every reader of the layer's former ``past`` input, so attention and the exported shape
computations see an ordinary float cache of ``Nq + R`` tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import int_attr_value
from parekit.ops.dtypes import F16, F32, I8
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
from parekit.ops.schema import AttrValue, ParamSpec

__all__ = ["KV_DEQUANT_KEY", "KV_DEQUANT_VALUE", "KvDequantKey", "KvDequantValue", "dequantize_reference"]


def _dequant_last(codes: np.ndarray, scale: np.ndarray, mn: np.ndarray, group: int) -> np.ndarray:
    *lead, length = codes.shape
    cg = codes.astype(np.float32).reshape(*lead, length // group, group)
    x = cg * scale.astype(np.float32)[..., None] + mn.astype(np.float32)[..., None]
    return x.reshape(codes.shape)


def dequantize_reference(
    packed: np.ndarray, scale: np.ndarray, mn: np.ndarray, bits: int, group: int, per_channel: bool
) -> np.ndarray:
    """Float32 ``[B, H, Nq, D]`` from packed codes and float16 scale/min."""
    codes = unpack_reference(packed, bits)
    if per_channel:
        return np.swapaxes(
            _dequant_last(np.swapaxes(codes, 2, 3), np.swapaxes(scale, 2, 3), np.swapaxes(mn, 2, 3), group),
            2,
            3,
        )
    return _dequant_last(codes, scale, mn, group)


class KvDequantOp(OpDef):
    """Shared body/reference/shape rule of :class:`KvDequantKey` and :class:`KvDequantValue`."""

    _PER_CHANNEL: bool = True
    attributes = (BITS_ATTR, GROUP_ATTR)
    min_opset = 18

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """Unpack, scale and shift per group, append the residual."""
        packed, scale, mn, residual = inputs
        p, base, _, _ = bit_constants(tape)
        codes = build_unpack(tape, packed, p, base)
        x = build_dequant(tape, codes, scale, mn, self._PER_CHANNEL)
        return [tape.op("Concat", [x, residual], {"axis": 2})]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy twin of the body."""
        packed, scale, mn, residual = inputs
        x = dequantize_reference(
            packed, scale, mn, int_attr_value(attrs, "bits"), int_attr_value(attrs, "group"), self._PER_CHANNEL
        )
        return [np.concatenate([x, residual.astype(np.float32)], axis=2)]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Float32 ``[B, H, ?, D]`` (batch, heads and channels from the residual)."""
        residual = inputs[3]
        shape = None
        if residual is not None and residual.shape is not None and residual.shape.rank() == 4:
            dims: list[int | ir.SymbolicDim | None] = list(residual.shape.dims)
            dims[2] = None
            shape = ir.Shape(dims)
        return [(ir.DataType.FLOAT, shape)]

    def example_inputs(self) -> list[np.ndarray]:
        """Inputs for the default attributes: two stored groups plus a 3-token residual."""
        rng = np.random.default_rng(1)
        g = int(GROUP_ATTR.default)  # type: ignore[arg-type]
        stored = rng.standard_normal((2, 2, 2 * g, g)).astype(np.float32)
        codes, scale, mn = quantize_reference(stored, 8, g, self._PER_CHANNEL)
        return [codes, scale, mn, rng.standard_normal((2, 2, 3, g)).astype(np.float32)]


def _specs(per_channel: bool) -> tuple[tuple[ParamSpec, ...], tuple[ParamSpec, ...]]:
    groups = "[B, H, Nq/group, D]" if per_channel else "[B, H, Nq, D/group]"
    ins = (
        ParamSpec("codes", I8, "[B, H, Nq, D/p]", rank=4, doc="packed codes (p = 8 // bits per byte)"),
        ParamSpec("scale", F16, groups, rank=4, doc="per-group scale"),
        ParamSpec("min", F16, groups, rank=4, doc="per-group minimum (zero point)"),
        ParamSpec("residual", F32, "[B, H, R, D]", rank=4, doc="float window of the most recent tokens"),
    )
    outs = (ParamSpec("cache", F32, "[B, H, Nq + R, D]", rank=4, doc="dequantized store ++ residual"),)
    return ins, outs


class KvDequantKey(KvDequantOp):
    """Dequantize a per-channel (key) store and append the float window."""

    op_type = "KvDequantKey"
    plugin_version = "1"
    inputs, outputs = _specs(per_channel=True)
    doc = (
        "Rebuilds a float32 key cache: unpacks `bits`-bit codes, applies the float16 scale/min of each "
        "per-channel group of `group` tokens, and appends the float residual window."
    )
    _PER_CHANNEL = True


class KvDequantValue(KvDequantOp):
    """Dequantize a per-token (value) store and append the float window."""

    op_type = "KvDequantValue"
    plugin_version = "1"
    inputs, outputs = _specs(per_channel=False)
    doc = (
        "Rebuilds a float32 value cache: unpacks `bits`-bit codes, applies the float16 scale/min of each "
        "per-token group of `group` channels, and appends the float residual window."
    )
    _PER_CHANNEL = False


KV_DEQUANT_KEY: KvDequantKey = register_op(KvDequantKey())
KV_DEQUANT_VALUE: KvDequantValue = register_op(KvDequantValue())
