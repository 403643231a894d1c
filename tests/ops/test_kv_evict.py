"""KvEvictH2O/Snap, KvSlotMask, KvMaskRemap, AttentionProbs: body == reference, selection rules, identity."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from parekit.ops import OpAttributeError
from parekit.ops.attention_probs import ATTENTION_PROBS
from parekit.ops.dtypes import MASK_DTYPES
from parekit.ops.kv_evict import BUDGET_MAX, KV_EVICT_H2O, KV_EVICT_SNAP, evict_reference
from parekit.ops.kv_slot_mask import KV_MASK_REMAP, KV_SLOT_MASK

from .harness import assert_body_matches_reference

RNG = np.random.default_rng(0)


def _softmax(logits: np.ndarray, visible: np.ndarray) -> np.ndarray:
    e = np.where(visible, np.exp(logits - logits.max(-1, keepdims=True)), 0.0)
    return (e / np.maximum(e.sum(-1, keepdims=True), 1e-30)).astype(np.float32)


def _step(b, hkv, group, p, s, d, pad_rows=0):
    """Inputs of one step: P past slots + S new tokens; the first `pad_rows` batch rows have padded slots."""
    t = p + s
    score = RNG.random((b, hkv, p)).astype(np.float32) * 3
    mask = np.ones((b, t), np.int64)
    for row in range(pad_rows):
        if p:
            score[row, :, : min(2, p)] = -1.0  # two padding slots in the past (all KV heads)
        else:
            mask[row, :2] = 0  # prefill: two left-padding tokens
    causal = np.tril(np.ones((s, t), bool), k=p)
    visible = causal[None, None] & (mask[:, None, None, :] > 0)
    slot_valid = np.concatenate([score >= 0, np.ones((b, hkv, s), bool)], axis=2)
    visible = visible & np.repeat(slot_valid, group, axis=1)[:, :, None, :]
    logits = RNG.standard_normal((b, hkv * group, s, t)).astype(np.float32) * 2
    probs = _softmax(logits, visible)
    key = RNG.standard_normal((b, hkv, t, d)).astype(np.float32)
    value = RNG.standard_normal((b, hkv, t, d)).astype(np.float32)
    return [key, value, score, probs, mask]


# (B, Hkv, group, P, S, D, budget, sink, recent, padded rows)
CASES = [
    (1, 1, 1, 0, 12, 4, 6, 1, 2, 0),  # prefill, plain MHA
    (2, 3, 3, 0, 20, 8, 8, 2, 3, 1),  # prefill, SmolLM2-like grouping (9 q heads on 3 KV heads), padding
    (2, 2, 2, 8, 1, 4, 8, 2, 2, 1),  # decode: one token evicted per step
    (2, 2, 2, 8, 3, 4, 8, 0, 0, 0),  # decode of 3 tokens, no sink/recent
    (1, 2, 2, 5, 1, 4, 16, 4, 4, 1),  # T <= budget: identity
    (3, 1, 4, 10, 2, 2, 4, 1, 3, 2),  # budget == sink + recent
]


@pytest.mark.parametrize("op", [KV_EVICT_H2O, KV_EVICT_SNAP], ids=lambda o: o.op_type)
@pytest.mark.parametrize(("b", "hkv", "group", "p", "s", "d", "budget", "sink", "recent", "pads"), CASES)
def test_evict_body_matches_reference(op, b, hkv, group, p, s, d, budget, sink, recent, pads):
    inputs = _step(b, hkv, group, p, s, d, pads)
    attrs = {"budget": budget, "sink": sink, "recent": recent}
    key_out, value_out, score_out = assert_body_matches_reference(op, inputs, attrs, rtol=1e-6, atol=1e-6)
    k = min(p + s, budget)
    assert key_out.shape == (b, hkv, k, d) and score_out.shape == (b, hkv, k)
    if p + s <= budget:  # identity: every slot, in order
        np.testing.assert_array_equal(key_out, inputs[0])
        np.testing.assert_array_equal(value_out, inputs[1])
    else:  # sinks and the most recent slots are always kept, in place
        np.testing.assert_array_equal(key_out[:, :, :sink], inputs[0][:, :, :sink])
        if recent:
            np.testing.assert_array_equal(key_out[:, :, k - recent :], inputs[0][:, :, p + s - recent :])


def test_h2o_keeps_heavy_hitters_per_kv_head():
    b, hkv, group, t = 1, 2, 2, 10
    key = np.arange(t, dtype=np.float32)[None, None, :, None].repeat(hkv, axis=1)
    probs = np.full((b, hkv * group, 1, t), 0.01, np.float32)
    probs[0, 0:2, 0, 3] = 0.9  # KV head 0's query heads look at slot 3
    probs[0, 2:4, 0, 6] = 0.9  # KV head 1's at slot 6
    score = np.zeros((b, hkv, t - 1), np.float32)
    outs = KV_EVICT_H2O.run_reference(
        [key, key, score, probs, np.ones((b, t), np.int64)], {"budget": 4, "sink": 1, "recent": 2}
    )
    assert outs[0][0, 0, :, 0].tolist() == [0, 3, 8, 9]
    assert outs[0][0, 1, :, 0].tolist() == [0, 6, 8, 9]
    assert outs[2][0, 0, 1] == pytest.approx(0.9 * 2)  # accumulated over the group's two query heads


def test_h2o_never_keeps_padding_while_real_tokens_compete():
    inputs = _step(1, 1, 1, 0, 10, 2, pad_rows=1)  # tokens 0, 1 are padding
    key, _, score, *_ = evict_reference(*inputs, attrs={"budget": 6, "sink": 0, "recent": 1}, policy="h2o")
    assert (score >= 0).all()
    assert not set(key[0, 0, :, 0].tolist()) & set(inputs[0][0, 0, :2, 0].tolist())


def test_snapkv_decode_is_a_window_over_slots():
    inputs = _step(2, 2, 2, 8, 1, 3)
    out = assert_body_matches_reference(
        KV_EVICT_SNAP, inputs, {"budget": 6, "sink": 2, "recent": 1}, rtol=1e-6
    )
    kept = [0, 1, 5, 6, 7, 8]
    np.testing.assert_array_equal(out[0], inputs[0][:, :, kept])
    np.testing.assert_array_equal(
        out[2], np.concatenate([inputs[2], np.zeros((2, 2, 1), np.float32)], axis=2)[:, :, kept]
    )


def test_snapkv_prefill_uses_the_observation_window():
    t = 16
    key = np.arange(t, dtype=np.float32)[None, None, :, None]
    probs = np.full((1, 1, t, t), 0.001, np.float32)
    probs[0, 0, :-2, 9] = 1.0  # earlier queries like slot 9: outside the window, ignored
    probs[0, 0, -2:, 4] = 1.0  # the last two queries (the observation window) look at slot 4
    out = KV_EVICT_SNAP.run_reference(
        [key, key, np.zeros((1, 1, 0), np.float32), probs, np.ones((1, t), np.int64)],
        {"budget": 10, "sink": 1, "recent": 2},
    )
    # max-pooling over 7 slots keeps slot 4's neighbourhood (1..7), not the popular-but-stale slot 9
    assert out[0][0, 0, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 14, 15]


def test_budget_is_capped_for_tensorrt_topk():
    with pytest.raises(OpAttributeError, match="budget"):
        KV_EVICT_H2O.validate_attributes({"budget": BUDGET_MAX + 1})


@pytest.mark.parametrize(
    ("b", "hkv", "group", "p", "s", "mask_heads"),
    [(2, 3, 3, 5, 1, 1), (1, 2, 2, 0, 4, 1), (2, 2, 2, 3, 2, 4)],
)
def test_slot_mask_body_matches_reference(b, hkv, group, p, s, mask_heads):
    t = p + s
    causal = np.tril(np.ones((s, t), bool), k=p)[None, None]
    attn_mask = np.broadcast_to(causal, (b, mask_heads, s, t)).copy()
    score = RNG.random((b, hkv, p)).astype(np.float32)
    if p:
        score[0, -1, 0] = -1.0
    (out,) = assert_body_matches_reference(KV_SLOT_MASK, [attn_mask, score], {"group": group})
    assert out.shape == (b, hkv * group, s, t)
    if p:
        assert not out[0, -group:, :, 0].any() and out[0, :group, :, 0].all()  # hidden only for that KV head


# every numpy-representable member of the one mask dtype set (bfloat16 has no numpy dtype)
MASK_NP_DTYPES = [np.int64, np.int32, np.bool_, np.float32, np.float16, np.float64]


def test_mask_sweep_covers_the_mask_dtype_set():
    covered = {ir.DataType.from_numpy(np.dtype(d)) for d in MASK_NP_DTYPES}
    assert covered == MASK_DTYPES - {ir.DataType.BFLOAT16}


@pytest.mark.parametrize("op", [KV_EVICT_H2O, KV_EVICT_SNAP], ids=lambda o: o.op_type)
@pytest.mark.parametrize("dtype", MASK_NP_DTYPES)
def test_evict_reads_every_mask_dtype(op, dtype):
    key, value, score, probs, mask = _step(2, 2, 2, 0, 9, 4, pad_rows=1)  # prefill: the mask marks padding
    attrs = {"budget": 6, "sink": 1, "recent": 2}
    assert_body_matches_reference(op, [key, value, score, probs, mask.astype(dtype)], attrs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", MASK_NP_DTYPES)
@pytest.mark.parametrize(("n", "p", "s"), [(11, 5, 2), (4, 0, 4), (700, 512, 1)])
def test_mask_remap_body_matches_reference(dtype, n, p, s):
    mask = (RNG.random((2, n)) > 0.2).astype(dtype)
    past = np.zeros((2, 1, p, 2), np.float32)
    ids = np.zeros((2, s), np.int64)
    (out,) = assert_body_matches_reference(KV_MASK_REMAP, [mask, past, ids])
    assert out.shape == (2, p + s) and out[:, :p].all()
    np.testing.assert_array_equal(out[:, p:], mask[:, n - s :])


@pytest.mark.parametrize("scale", [0.0, 0.3])
@pytest.mark.parametrize(
    ("b", "h", "s", "t", "d", "mask_heads"), [(1, 1, 1, 1, 4, 1), (2, 4, 3, 9, 8, 1), (2, 3, 5, 5, 16, 3)]
)
def test_attention_probs_body_matches_reference(b, h, s, t, d, mask_heads, scale):
    q = RNG.standard_normal((b, h, s, d)).astype(np.float32)
    k = RNG.standard_normal((b, h, t, d)).astype(np.float32)
    mask = np.broadcast_to(np.tril(np.ones((s, t), bool), k=t - s)[None, None], (b, mask_heads, s, t)).copy()
    mask[0, :, 0, :] = False  # a row with no visible key gives zeros
    (probs,) = assert_body_matches_reference(
        ATTENTION_PROBS, [q, k, mask], {"scale": scale}, rtol=1e-5, atol=1e-6
    )
    assert not probs[0, :, 0].any()
    if b > 1:
        np.testing.assert_allclose(probs[1].sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0])
def test_h2o_decay_body_matches_reference(decay):
    inputs = _step(2, 3, 3, 9, 2, 4, pad_rows=1)
    attrs = {"budget": 7, "sink": 1, "recent": 2, "decay": decay}
    out = assert_body_matches_reference(KV_EVICT_H2O, inputs, attrs, rtol=1e-6, atol=1e-6)
    new_attention = inputs[3].reshape(2, 3, 3, 2, 11).sum(axis=(2, 3))[:, :, :9]
    carried = np.where(inputs[2] >= 0, inputs[2] * decay + new_attention, inputs[2])
    kept = out[2][:, :, :1]  # slot 0 is a sink: always kept, its score is the decayed sum
    np.testing.assert_allclose(kept, carried[:, :, :1], rtol=1e-5)
