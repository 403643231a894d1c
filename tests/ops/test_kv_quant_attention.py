"""KvQuantAttention: body == reference over grouped heads, bit widths, decode and prefill steps, masks; the
reference == plain attention over the KvDequant* caches."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.ops.kv_dequant import KV_DEQUANT_KEY, KV_DEQUANT_VALUE
from parekit.ops.kv_quant_attention import KV_QUANT_ATTENTION
from parekit.ops.kv_quant_format import quantize_reference

from .harness import assert_body_matches_reference

RNG = np.random.default_rng(7)


def make_inputs(b, hkv, rep, s, nq, tf, d, bits, group, *, causal=True, pad=0):
    """Inputs of one step: ``nq`` stored tokens, ``tf`` float tokens (the last ``s`` are this step's)."""
    t = nq + tf
    kc, ks, km = quantize_reference(
        RNG.standard_normal((b, hkv, nq, d)).astype(np.float32), bits, group, True
    )
    vc, vs, vm = quantize_reference(
        RNG.standard_normal((b, hkv, nq, d)).astype(np.float32), bits, group, False
    )
    kt = RNG.standard_normal((b, hkv, tf, d)).astype(np.float32)
    vt = RNG.standard_normal((b, hkv, tf, d)).astype(np.float32)
    q = (RNG.standard_normal((b, hkv * rep, s, d)) * 2).astype(np.float32)
    pos = np.arange(t)[None, :]
    rows = np.arange(t - s, t)[:, None]
    mask = np.broadcast_to(pos <= rows if causal else np.ones((s, t), bool), (b, 1, s, t)).copy()
    if pad:
        mask[-1, :, :, :pad] = False  # left padding of the last batch row
    return [q, kc, ks, km, kt, vc, vs, vm, vt, mask]


# (B, Hkv, rep, S, Nq, Tf, D, bits, group)
CASES = [
    (1, 3, 3, 1, 64, 33, 64, 8, 32),  # SmolLM2 geometry, decode
    (1, 3, 3, 1, 64, 33, 64, 4, 32),
    (2, 2, 1, 1, 32, 1, 16, 5, 16),  # no grouping (rep 1)
    (2, 1, 4, 5, 16, 9, 8, 8, 8),  # several new tokens, causal
    (1, 2, 2, 7, 0, 7, 8, 4, 4),  # prefill: empty store
    (1, 2, 2, 1, 24, 0, 8, 8, 4),  # no float tail
]


@pytest.mark.parametrize(("b", "hkv", "rep", "s", "nq", "tf", "d", "bits", "group"), CASES)
def test_body_matches_reference(b, hkv, rep, s, nq, tf, d, bits, group):
    inputs = make_inputs(b, hkv, rep, s, nq, tf, d, bits, group, pad=3 if b > 1 else 0)
    out = assert_body_matches_reference(
        KV_QUANT_ATTENTION, inputs, {"bits": bits, "group": group}, 1e-5, 1e-5
    )
    assert out[0].shape == (b, hkv * rep, s, d)


def test_scale_attribute_and_fully_masked_rows():
    inputs = make_inputs(2, 2, 2, 3, 16, 4, 8, 8, 8)
    inputs[-1][0, :, 1, :] = False  # one query row sees nothing: zeros
    out = assert_body_matches_reference(KV_QUANT_ATTENTION, inputs, {"group": 8, "scale": 0.3}, 1e-5, 1e-5)
    np.testing.assert_array_equal(out[0][0, :, 1], 0.0)
    assert np.abs(out[0][0, :, 0]).max() > 0


def test_reference_is_attention_over_the_dequantized_cache():
    q, kc, ks, km, kt, vc, vs, vm, vt, mask = make_inputs(2, 2, 3, 2, 32, 6, 16, 4, 8, pad=5)
    attrs = {"bits": 4, "group": 8}
    k = KV_DEQUANT_KEY.run_reference([kc, ks, km, kt], attrs)[0]
    v = KV_DEQUANT_VALUE.run_reference([vc, vs, vm, vt], attrs)[0]
    k, v = np.repeat(k, 3, axis=1), np.repeat(v, 3, axis=1)
    scores = np.where(mask, q @ np.swapaxes(k, 2, 3) / np.sqrt(16), -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    want = (probs / probs.sum(-1, keepdims=True)) @ v
    got = KV_QUANT_ATTENTION.run_reference([q, kc, ks, km, kt, vc, vs, vm, vt, mask], attrs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
