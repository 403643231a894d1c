"""KvQuantKey/Value and KvDequantKey/Value: body == reference, packing, error bounds, identity."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.ops.kv_dequant import KV_DEQUANT_KEY, KV_DEQUANT_VALUE, dequantize_reference
from parekit.ops.kv_quant import KV_QUANT_KEY, KV_QUANT_VALUE, quant_split
from parekit.ops.kv_quant_format import pack_reference, quantize_reference, unpack_reference

from .harness import assert_body_matches_reference, build_model, run_model

RNG = np.random.default_rng(0)
OPS = {"key": (KV_QUANT_KEY, KV_DEQUANT_KEY, True), "value": (KV_QUANT_VALUE, KV_DEQUANT_VALUE, False)}


def _state(b, h, nq, d, bits, group, per_channel):
    stored = RNG.standard_normal((b, h, nq, d)).astype(np.float32)
    return quantize_reference(stored, bits, group, per_channel)


# (B, H, D, group, Nq stored, R residual tokens, S new, residual option)
CASES = [
    (1, 1, 8, 4, 0, 0, 13, 3),  # prefill: 13 tokens, 8 move (2 groups), 5 stay
    (2, 3, 8, 4, 8, 5, 1, 4),  # decode: 6 float tokens, residual 4 → nothing moves (6 - 4 < 4)
    (2, 3, 8, 4, 8, 7, 1, 4),  # decode: 8 float tokens → one group moves, 4 stay
    (2, 2, 16, 8, 16, 3, 9, 0),  # residual 0: 12 tokens, one group of 8 moves
    (3, 2, 8, 8, 0, 0, 5, 32),  # residual >= context: nothing quantized
    (1, 2, 32, 32, 32, 40, 30, 32),  # group = D for values
    (2, 1, 4, 2, 4, 0, 1, 0),  # tiny groups
]


@pytest.mark.parametrize("bits", [8, 5, 4])
@pytest.mark.parametrize("role", ["key", "value"])
@pytest.mark.parametrize(("b", "h", "d", "group", "nq", "r", "s", "residual"), CASES)
def test_quant_append_body_matches_reference(b, h, d, group, nq, r, s, residual, role, bits):
    quant, _, per_channel = OPS[role]
    codes, scale, mn = _state(b, h, nq, d, bits, group, per_channel)
    res = RNG.standard_normal((b, h, r, d)).astype(np.float32)
    new = RNG.standard_normal((b, h, s, d)).astype(np.float32)
    attrs = {"bits": bits, "group": group, "residual": residual}
    out = assert_body_matches_reference(quant, [codes, scale, mn, res, new], attrs)
    moved = quant_split(r + s, residual, group)
    assert out[0].shape == (b, h, nq + moved, d // (8 // bits))
    assert out[0].dtype == np.int8 and out[1].dtype == np.float16
    assert out[3].shape == (b, h, r + s - moved, d)
    np.testing.assert_array_equal(
        out[3], np.concatenate([res, new], axis=2)[:, :, moved:]
    )  # float window exact
    np.testing.assert_array_equal(out[0][:, :, :nq], codes)  # old codes untouched: each token quantized once


@pytest.mark.parametrize("bits", [8, 5, 4])
@pytest.mark.parametrize("role", ["key", "value"])
@pytest.mark.parametrize(
    ("b", "h", "d", "group", "nq", "r"), [(1, 1, 8, 4, 0, 3), (2, 3, 8, 4, 12, 5), (2, 2, 16, 8, 16, 0)]
)
def test_dequant_body_matches_reference(b, h, d, group, nq, r, role, bits):
    _, dequant, per_channel = OPS[role]
    codes, scale, mn = _state(b, h, nq, d, bits, group, per_channel)
    res = RNG.standard_normal((b, h, r, d)).astype(np.float32)
    (out,) = assert_body_matches_reference(dequant, [codes, scale, mn, res], {"bits": bits, "group": group})
    assert out.shape == (b, h, nq + r, d)
    np.testing.assert_array_equal(out[:, :, nq:], res)


@pytest.mark.parametrize("bits", [8, 6, 5, 4])
def test_pack_round_trip(bits):
    p = 8 // bits
    codes = RNG.integers(0, 2**bits, size=(2, 3, 5, 4 * p))
    packed = pack_reference(codes, bits)
    assert packed.dtype == np.int8 and packed.shape == (2, 3, 5, 4)
    np.testing.assert_array_equal(unpack_reference(packed, bits), codes)


def test_int4_packing_by_hand():
    # two 4-bit codes per byte: channels [0, L/2) in the low nibbles, [L/2, L) in the high nibbles
    # (stored as int8: byte - 128, TensorRT has no uint8 intermediates)
    assert pack_reference(np.array([[[[3, 10, 15, 0]]]]), 4).tolist() == [[[[3 + 16 * 15 - 128, 10 - 128]]]]
    assert unpack_reference(np.array([[[[0xA3 - 128, 0x0F - 128]]]], np.int8), 4).tolist() == [[[[3, 15, 10, 0]]]]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("role", ["key", "value"])
def test_quantize_then_dequantize_in_ort_within_half_a_step(role, bits):
    """The two bodies compose (int4: pack in one op, unpack in the other) with error <= scale / 2."""
    quant, dequant, per_channel = OPS[role]
    b, h, d, group = 2, 3, 16, 8
    x = RNG.standard_normal((b, h, 24, d)).astype(np.float32)
    empty = _state(b, h, 0, d, bits, group, per_channel)
    nothing = np.zeros((b, h, 0, d), np.float32)
    q_model = build_model(quant, [*empty, nothing, x], {"bits": bits, "group": group, "residual": 0})
    codes, scale, mn, rest = run_model(q_model, [*empty, nothing, x])
    assert rest.shape[2] == 0 and codes.shape == (b, h, 24, d // (8 // bits))
    d_model = build_model(dequant, [codes, scale, mn, rest], {"bits": bits, "group": group})
    (back,) = run_model(d_model, [codes, scale, mn, rest])
    step = scale.astype(np.float32)
    step = np.repeat(step, group, axis=2) if per_channel else np.repeat(step, group, axis=3)
    assert np.all(np.abs(back - x) <= step / 2 + 1e-3 * np.abs(x) + 1e-6)
    cos = (back * x).sum() / np.linalg.norm(back) / np.linalg.norm(x)
    assert cos > (0.9999 if bits == 8 else 0.99)
    np.testing.assert_allclose(
        back, dequantize_reference(codes, scale, mn, bits, group, per_channel), rtol=1e-6
    )


def test_constant_group_dequantizes_exactly():
    x = np.full((1, 1, 4, 4), 0.75, np.float32)
    codes, scale, mn = quantize_reference(x, 4, 4, per_channel=True)
    assert not scale.any()
    np.testing.assert_array_equal(dequantize_reference(codes, scale, mn, 4, 4, True), x)


def test_split_rule():
    assert quant_split(13, 3, 4) == 8
    assert quant_split(6, 4, 4) == 0
    assert quant_split(8, 4, 4) == 4
    assert quant_split(5, 32, 4) == 0
