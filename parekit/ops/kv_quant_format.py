"""The packed KIVI-style cache format shared by :mod:`parekit.ops.kv_quant` and :mod:`parekit.ops.kv_dequant`.

This module is not an op: it holds what the quantizing and the dequantizing ops must agree on.

* ``bits``-bit unsigned codes, ``p = 8 // bits`` packed per byte along the channel axis: the axis is cut
  into ``p`` contiguous blocks and byte ``j`` holds code ``j`` of block ``k`` in digit ``k`` (block 0
  lowest); bytes are stored as int8 ``byte - CODE_OFFSET`` (TensorRT has no uint8 intermediates);
* groups: keys per channel over ``group`` consecutive tokens, values per token over ``group``
  consecutive channels, each with a float16 ``scale`` and ``min``;
* quantization of a group ``x``: ``mn = min x``, ``scale = (max x - mn) / (2^bits - 1)``, both rounded to
  float16 first; ``code = clip(round((x - mn) / scale), 0, 2^bits - 1)`` (``scale == 0`` divides by 1).

Packing and unpacking are float32 arithmetic on exact small integers (Mul/ReduceSum/Div/Floor, then
Cast): no bitwise ops, TensorRT-friendly.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.body import const_ints, dims, int_attr_ref, scalar_float, scalar_int
from parekit.ops.schema import AttrSpec

__all__ = [
    "BITS_ATTR",
    "CODE_OFFSET",
    "GROUP_ATTR",
    "bit_constants",
    "build_dequant",
    "build_pack",
    "build_unpack",
    "codes_per_byte",
    "group_view",
    "pack_reference",
    "quantize_reference",
    "unpack_reference",
]

CODE_OFFSET: Final = 128
"""Packed bytes (0…255) are stored as int8 ``byte - CODE_OFFSET``."""

BITS_ATTR = AttrSpec(
    "bits", "int", default=8, minimum=4, maximum=8, doc="code width; 8 // bits codes (1 or 2) are packed per byte"
)
GROUP_ATTR = AttrSpec(
    "group",
    "int",
    default=32,
    minimum=1,
    doc="quantization group size (tokens for keys, channels for values)",
)

def codes_per_byte(bits: int) -> int:
    """Codes packed per byte: ``8 // bits``."""
    return 8 // bits


# -- NumPy reference -----------------------------------------------------------------------------


def _quantize_last(x: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize along the last axis in groups: codes (float, same shape), scale/min float16 [..., L/G]."""
    *lead, length = x.shape
    xg = x.astype(np.float32).reshape(*lead, length // group, group)
    levels = np.float32(2**bits - 1)
    mn = xg.min(axis=-1, keepdims=True)
    mx = xg.max(axis=-1, keepdims=True)
    scale16 = ((mx - mn) / levels).astype(np.float16)
    mn16 = mn.astype(np.float16)
    scale_r, mn_r = scale16.astype(np.float32), mn16.astype(np.float32)
    safe = np.where(scale_r > 0, scale_r, np.float32(1.0))
    q = np.minimum(np.maximum(np.round((xg - mn_r) / safe), 0), levels)
    return q.reshape(x.shape).astype(np.float32), scale16[..., 0], mn16[..., 0]


def quantize_reference(
    x: np.ndarray, bits: int, group: int, per_channel: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize a ``[B, H, N, D]`` cache; returns packed int8 codes, float16 scale and min."""
    if per_channel:  # keys: groups of `group` tokens, one scale per channel
        q, s, m = _quantize_last(np.swapaxes(x, 2, 3), bits, group)
        q, s, m = np.swapaxes(q, 2, 3), np.swapaxes(s, 2, 3), np.swapaxes(m, 2, 3)
    else:  # values: groups of `group` channels, one scale per token
        q, s, m = _quantize_last(x, bits, group)
    return pack_reference(q.astype(np.int64), bits), np.ascontiguousarray(s), np.ascontiguousarray(m)


def pack_reference(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``p = 8 // bits`` codes per byte, as int8 ``byte - 128``: the last axis (length ``L``) is cut into
    ``p`` contiguous blocks and byte ``j`` holds code ``j`` of block ``k`` in digit ``k`` (block 0 lowest)."""
    p = codes_per_byte(bits)
    *lead, d = codes.shape
    blocks = codes.reshape(*lead, p, d // p)
    weights = ((2**bits) ** np.arange(p))[:, None]
    return ((blocks * weights).sum(axis=-2) - CODE_OFFSET).astype(np.int8)


def unpack_reference(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_reference`: int64 codes, last axis ``p`` times longer."""
    p = codes_per_byte(bits)
    base = 2**bits
    byte = packed.astype(np.int64) + CODE_OFFSET
    return np.concatenate([(byte // base**k) % base for k in range(p)], axis=-1)


# -- body helpers --------------------------------------------------------------------------------


def bit_constants(tape: Tape) -> tuple[ir.Value, ir.Value, ir.Value, ir.Value]:
    """``(p [1] int64, base f32 0-D, levels f32 0-D, weights f32 [p])`` from the ``bits`` attribute."""
    bits = int_attr_ref(tape, BITS_ATTR.name)
    p = tape.op("Div", [const_ints(tape, [8]), bits])
    bits_f = tape.op("Cast", [tape.op("Squeeze", [bits])], {"to": ir.DataType.FLOAT})
    base = tape.op("Pow", [scalar_float(tape, 2.0), bits_f])
    levels = tape.op("Sub", [base, scalar_float(tape, 1.0)])
    k = tape.op(
        "Range",
        [
            tape.op("Constant", [], {"value_int": 0}),
            tape.op("Squeeze", [p]),
            tape.op("Constant", [], {"value_int": 1}),
        ],
    )
    weights = tape.op("Pow", [base, tape.op("Cast", [k], {"to": ir.DataType.FLOAT})])
    return p, base, levels, weights


def build_pack(tape: Tape, codes: ir.Value, p: ir.Value, weights: ir.Value) -> ir.Value:
    """Float codes ``[B,H,N,L]`` → packed int8 ``[B,H,N,L/p]`` (byte - 128), blocks as in :func:`pack_reference`."""
    b, h, n, length = dims(tape, codes, 4)
    lp = tape.op("Div", [length, p])
    blocks = tape.op("Reshape", [codes, tape.op("Concat", [b, h, n, p, lp], {"axis": 0})])
    column = tape.op("Unsqueeze", [weights, const_ints(tape, [1])])
    summed = tape.op(
        "ReduceSum", [tape.op("Mul", [blocks, column]), const_ints(tape, [3])], {"keepdims": 0}
    )
    shifted = tape.op("Sub", [summed, scalar_float(tape, float(CODE_OFFSET))])
    return tape.op("Cast", [shifted], {"to": ir.DataType.INT8})


def build_unpack(tape: Tape, packed: ir.Value, p: ir.Value, base: ir.Value) -> ir.Value:
    """Packed int8 ``[B,H,N,L/p]`` (byte - 128) → float codes ``[B,H,N,L]``.

    With ``bits >= 4`` a byte holds at most two digits: ``high = floor(byte / base)`` (0 when ``bits == 8``)
    and ``low = byte - high * base``. Both are whole ``[B,H,N,L/p]`` tensors, concatenated block after block
    along the last axis and cut to ``L``: every op runs on long contiguous rows.
    """
    byte = tape.op(
        "Add", [tape.op("Cast", [packed], {"to": ir.DataType.FLOAT}), scalar_float(tape, float(CODE_OFFSET))]
    )
    high = tape.op("Floor", [tape.op("Div", [byte, base])])
    low = tape.op("Sub", [byte, tape.op("Mul", [high, base])])
    length = tape.op("Mul", [dims(tape, packed, 4)[3], p])
    both = tape.op("Concat", [low, high], {"axis": 3})
    return tape.op("Slice", [both, const_ints(tape, [0]), length, const_ints(tape, [3])])


def group_view(tape: Tape, x: ir.Value, per_channel: bool) -> tuple[ir.Value, ir.Value, ir.Value, int]:
    """Views ``x [B,H,N,D]`` by quantization group without moving data.

    Keys (``per_channel``): ``[B, H, N/G, G, D]``, groups along axis 3, one scale per ``(token group,
    channel)``; values: ``[B, H, N, D/G, G]``, groups along axis 4, one scale per ``(token, channel group)``.

    Returns:
        ``(grouped, full_shape [B,H,N,D], scale_shape, group_axis)``.
    """
    b, h, n, d = dims(tape, x, 4)
    g = int_attr_ref(tape, GROUP_ATTR.name)
    if per_channel:
        ng = tape.op("Div", [n, g])
        five, small, axis = [b, h, ng, g, d], [b, h, ng, d], 3
    else:
        dg = tape.op("Div", [d, g])
        five, small, axis = [b, h, n, dg, g], [b, h, n, dg], 4
    grouped = tape.op("Reshape", [x, tape.op("Concat", five, {"axis": 0})])
    return (
        grouped,
        tape.op("Concat", [b, h, n, d], {"axis": 0}),
        tape.op("Concat", small, {"axis": 0}),
        axis,
    )


def _per_token(tape: Tape, x: ir.Value, like: ir.Value, per_channel: bool) -> ir.Value:
    """Float32 ``x`` (per-group scale or min) gathered at the tokens of ``like``.

    Keys: row ``t`` of the result is row ``t // G`` of ``x [B,H,Nq/G,D]``, so it is ``[B,H,Nq,D]``.
    Values: rows ``0 … Nq-1`` of ``x [B,H,Nq,D/G]``, with a unit axis for the channels of a group
    (``[B,H,Nq,D/G,1]``). Either way the token dim derives from ``like``'s shape, never from the count of
    groups stored in ``x``: TensorRT then has no pair of independent dynamic dims to prove equal at each
    optimization-profile point (a ``Mul`` of ``Nq/G`` by the scale's own group count is rejected wherever
    a profile point breaks ``q_groups * group == q_tokens``), and a token count that is not a multiple of
    ``G`` needs no reshape into token groups.
    """
    g = int_attr_ref(tape, GROUP_ATTR.name)
    xf = tape.op("Cast", [x], {"to": ir.DataType.FLOAT})
    n = tape.op("Squeeze", [dims(tape, like, 3)[2]])
    tokens = tape.op("Range", [scalar_int(tape, 0), n, scalar_int(tape, 1)])
    if per_channel:
        return tape.op("Gather", [xf, tape.op("Div", [tokens, g])], {"axis": 2})
    return tape.op("Unsqueeze", [tape.op("Gather", [xf, tokens], {"axis": 2}), const_ints(tape, [4])])


def build_dequant(tape: Tape, codes: ir.Value, scale: ir.Value, mn: ir.Value, per_channel: bool) -> ir.Value:
    """Float codes ``[B,H,Nq,D]`` → ``code * scale + min`` float32 ``[B,H,Nq,D]``.

    The codes' shape drives (:func:`_per_token`): the store's token count is the dim the cache's length,
    and so the attention mask, is checked against. Keys multiply ``[B,H,Nq,D]`` tensors; values view the
    codes by channel group ``[B,H,Nq,D/G,G]`` (``D`` is static in the exports) and broadcast the scale.
    """
    s = _per_token(tape, scale, codes, per_channel)
    m = _per_token(tape, mn, codes, per_channel)
    if per_channel:
        return tape.op("Add", [tape.op("Mul", [codes, s]), m])
    grouped, full, _, _ = group_view(tape, codes, per_channel)
    return tape.op("Reshape", [tape.op("Add", [tape.op("Mul", [grouped, s]), m]), full])
