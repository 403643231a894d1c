"""Native test cases: KvEvictH2O, KvEvictSnap, KvSlotMask, KvMaskRemap, AttentionProbs.

Tolerances, per op:

* ``KvEvictSnap``, ``KvSlotMask``, ``KvMaskRemap``: bit-exact (data movement; SnapKV's votes are summed
  in the reference's order, so even near-ties select the same slots).
* ``KvEvictH2O``: the kernel sums the attention in the reference's order (NumPy's, pairwise where it
  reduces a contiguous axis), so kernel == reference bit for bit; each case is also written as a
  ``.exact`` twin that runs in the C++ runner only with tolerance 0. The ONNX Runtime copy carries
  ``(1e-6, 1e-6)`` because the function body's ``ReduceSum`` rounds the accumulated score differently
  (by a few ulp); kept keys and values are N(0, 1) draws, so a different selection is far outside it.
* ``AttentionProbs``: float32 scores and softmax against a float64 reference: ``(1e-5, 1e-6)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np

from parekit.ops.attention_probs import ATTENTION_PROBS
from parekit.ops.kv_evict import KV_EVICT_H2O, KV_EVICT_SNAP
from parekit.ops.kv_slot_mask import KV_MASK_REMAP, KV_SLOT_MASK

from .cases import Case

H2O_TOL = (1e-6, 1e-6)
PROBS_TOL = (1e-5, 1e-6)
MASK_DTYPES = (np.int64, np.int32, np.bool_, np.float32, np.float16, np.float64)

# (name, B, Hkv, group, P, S, D, budget, sink, recent)
EVICT_SHAPES = [
    ("example", 2, 2, 2, 6, 2, 4, 5, 1, 2),
    ("identity_lt", 2, 2, 2, 6, 2, 4, 12, 4, 32),
    ("identity_eq", 1, 3, 3, 7, 1, 4, 8, 4, 32),
    ("decode_bench", 1, 3, 3, 512, 1, 64, 512, 4, 32),  # SmolLM2: T = budget + 1
    ("decode_b3", 3, 2, 4, 40, 1, 8, 32, 4, 8),
    ("multi_new", 2, 3, 3, 30, 5, 8, 20, 2, 4),
    ("prefill", 1, 3, 3, 0, 300, 8, 64, 4, 32),
    ("prefill_b2", 2, 2, 2, 0, 257, 4, 100, 0, 0),
    ("prefill_odd", 3, 1, 5, 0, 33, 3, 9, 1, 7),
    ("mha", 2, 4, 1, 10, 3, 4, 6, 1, 1),
    ("sink_large", 1, 2, 2, 20, 2, 4, 8, 15, 2),
    ("recent_large", 1, 2, 2, 20, 2, 4, 8, 0, 50),
    ("forced_compete", 2, 2, 3, 16, 4, 4, 6, 4, 5),
    ("budget1", 2, 2, 2, 9, 1, 4, 1, 0, 0),
    ("budget1_forced", 2, 2, 2, 9, 1, 4, 1, 3, 3),
    ("t1_pairwise", 2, 1, 16, 0, 1, 4, 1, 4, 32),  # one slot, 16 summed heads: NumPy sums pairwise
    ("t1_pairwise_wide", 1, 1, 150, 0, 1, 4, 1, 0, 0),  # 150 > 128 values: NumPy's pairwise split
    ("t1_past", 1, 2, 9, 1, 0, 4, 1, 0, 0),  # no new token (S = 0)
    ("no_new", 2, 2, 2, 12, 0, 4, 5, 1, 2),
]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _evict_inputs(
    rng: np.random.Generator, b: int, hkv: int, group: int, p: int, s: int, d: int
) -> list[np.ndarray]:
    """Key, value, score (with padding slots), probs (causal over the new tokens), int64 mask (padding)."""
    t = p + s
    hq = hkv * group
    score = (rng.random((b, hkv, p)) * 3).astype(np.float32)
    if p:
        score[:, :, rng.random(p) < 0.15] = -1.0  # padding slots shared by the heads of a row...
        score[0, 0, p // 2] = -1.0  # ... and one of a single head
    logits = rng.standard_normal((b, hq, s, t)).astype(np.float32) * 2
    causal = np.tril(np.ones((s, t), bool), k=p)
    probs = _softmax(np.where(causal, logits, -np.inf))
    if t == 1:  # a softmax over one slot is all ones (exact sums in any order): use arbitrary weights
        probs = rng.random(probs.shape).astype(np.float32)
    mask = np.ones((b, t), np.int64)
    if s > 1:
        mask[-1, p : p + min(3, s - 1)] = 0  # left padding among the new tokens of the last row
    return [
        rng.standard_normal((b, hkv, t, d)).astype(np.float32),
        rng.standard_normal((b, hkv, t, d)).astype(np.float32),
        score,
        probs,
        mask,
    ]


def _h2o(
    name: str,
    inputs: list[np.ndarray],
    attrs: dict[str, Any],
    bf16: tuple[int, ...] = (),
    ort: bool | None = None,
) -> Iterator[Case]:
    yield Case(KV_EVICT_H2O, name, inputs, attrs, tol=H2O_TOL, bf16=bf16, ort=ort)
    yield Case(KV_EVICT_H2O, name + ".exact", inputs, attrs, bf16=bf16, ort=False)


def _evict_cases(rng: np.random.Generator) -> Iterator[Case]:
    for name, b, hkv, group, p, s, d, budget, sink, recent in EVICT_SHAPES:
        inputs = _evict_inputs(rng, b, hkv, group, p, s, d)
        attrs: dict[str, Any] = {"budget": budget, "sink": sink, "recent": recent}
        # S = 0: the function body cannot run it (its Reshape to [B, Hkv, group, S, T] has no allowzero,
        # so the 0 copies the input dim); the reference and the kernel can: C++ runner only
        ort = None if s else False
        yield from _h2o(f"{name}", inputs, attrs, ort=ort)
        yield from _h2o(f"{name}.decay0.5", inputs, {**attrs, "decay": 0.5}, ort=ort)
        yield Case(KV_EVICT_SNAP, name, inputs, attrs, ort=ort)
    # defaults (budget 512, sink 4, recent 32) on a prefill longer than the budget, and decay 0 (TOVA)
    inputs = _evict_inputs(rng, 1, 2, 3, 0, 600, 4)
    yield from _h2o("defaults_prefill", inputs, {})
    yield Case(KV_EVICT_SNAP, "defaults_prefill", inputs, {})
    inputs = _evict_inputs(rng, 2, 2, 2, 14, 2, 4)
    yield from _h2o("decay0", inputs, {"budget": 10, "sink": 1, "recent": 2, "decay": 0.0})
    # every mask dtype; the float masks mark padding with 0 and with a negative value (not > 0)
    for dtype in MASK_DTYPES:
        inputs = _evict_inputs(rng, 2, 2, 2, 0, 24, 4)
        mask = (rng.random((2, 24)) > 0.25).astype(dtype)
        if np.issubdtype(dtype, np.floating):
            mask[0, 1] = -1.0
        inputs[4] = mask
        attrs = {"budget": 12, "sink": 2, "recent": 4}
        tag = np.dtype(dtype).name
        yield from _h2o(f"mask.{tag}", inputs, attrs)
        yield Case(KV_EVICT_SNAP, f"mask.{tag}", inputs, attrs)
    inputs = _evict_inputs(rng, 2, 2, 2, 0, 24, 4)
    inputs[4] = np.where(rng.random((2, 24)) > 0.25, 1.0, 0.0).astype(ml_dtypes.bfloat16)
    inputs[4][1, 0] = -2.0
    attrs = {"budget": 12, "sink": 2, "recent": 4}
    yield from _h2o("mask.bfloat16", inputs, attrs, bf16=(4,))
    yield Case(KV_EVICT_SNAP, "mask.bfloat16", inputs, attrs, bf16=(4,))
    # ties: dyadic probabilities (exact sums in any order) and equal scores; ties go to the lower slot
    b, hkv, group, p, s, d = 2, 2, 2, 12, 2, 4
    inputs = _evict_inputs(rng, b, hkv, group, p, s, d)
    inputs[2] = np.full((b, hkv, p), 0.5, np.float32)
    inputs[2][:, :, 3] = -1.0
    inputs[3] = np.full((b, hkv * group, s, p + s), 0.125, np.float32)
    attrs = {"budget": 7, "sink": 1, "recent": 2}
    yield from _h2o("ties", inputs, attrs)
    yield Case(KV_EVICT_SNAP, "ties_decode", inputs, attrs)
    prefill = _evict_inputs(rng, 2, 2, 2, 0, 16, 4)
    prefill[3] = np.full((2, 4, 16, 16), 0.0625, np.float32)
    yield from _h2o("ties_prefill", prefill, attrs)
    yield Case(KV_EVICT_SNAP, "ties_prefill", prefill, attrs)
    # a negative carried score other than -1 also marks padding (state < 0), and stays as it is
    inputs = _evict_inputs(rng, 1, 2, 2, 10, 1, 4)
    inputs[2][0, 1, 2] = -2.5
    yield from _h2o("score_negative", inputs, {"budget": 6, "sink": 1, "recent": 1})
    yield from _evict_errors()


def _evict_errors() -> Iterator[Case]:
    b, hkv, hq, p, s, d = 2, 2, 4, 6, 2, 4
    t = p + s
    f = np.float32

    def good() -> list[np.ndarray]:
        return [
            np.zeros((b, hkv, t, d), f),
            np.zeros((b, hkv, t, d), f),
            np.zeros((b, hkv, p), f),
            np.zeros((b, hq, s, t), f),
            np.ones((b, t), np.int64),
        ]

    bad: list[tuple[str, int, np.ndarray, str]] = [
        ("key_rank3", 0, np.zeros((b, hkv, t), f), "input 'key' must have rank 4"),
        ("value_rank5", 1, np.zeros((b, hkv, t, d, 1), f), "input 'value' must have rank 4"),
        ("value_shape", 1, np.zeros((b, hkv, t, d + 1), f), "must have the shape of 'key'"),
        ("score_rank2", 2, np.zeros((b, p), f), "input 'score' must have rank 3"),
        ("score_heads", 2, np.zeros((b, hkv + 1, p), f), "must be [B, Hkv, P]"),
        ("score_p_gt_t", 2, np.zeros((b, hkv, t + 1), f), "must be [B, Hkv, P] with P <= T"),
        ("probs_rank3", 3, np.zeros((b, hq, t), f), "input 'probs' must have rank 4"),
        ("probs_s", 3, np.zeros((b, hq, s + 1, t), f), "with T = P + S"),
        ("probs_t", 3, np.zeros((b, hq, s, t - 1), f), "with T = P + S"),
        ("probs_batch", 3, np.zeros((b + 1, hq, s, t), f), "must be [B, Hq, S, T]"),
        ("hq_not_multiple", 3, np.zeros((b, 3, s, t), f), "must be a multiple of the KV heads"),
        ("mask_rank1", 4, np.ones((t,), np.int64), "input 'mask' must have rank 2"),
        ("mask_t", 4, np.ones((b, t + 1), np.int64), "must be [B, T]"),
    ]
    for name, index, array, text in bad:
        inputs = good()
        inputs[index] = array
        for op in (KV_EVICT_H2O, KV_EVICT_SNAP):
            yield Case(op, f"{name}.error", inputs, {"budget": 4}, error=text)


def _slot_mask_cases(rng: np.random.Generator) -> Iterator[Case]:
    # (B, Hkv, group, P, S, mask heads: 1 or Hq)
    for b, hkv, group, p, s, full in [
        (2, 2, 2, 5, 2, False),
        (2, 2, 2, 5, 2, True),
        (1, 3, 3, 512, 1, False),  # decode, SmolLM2-like
        (3, 3, 3, 0, 17, True),  # prefill: no past slot
        (2, 4, 1, 9, 0, False),  # no new token: P = T
        (1, 2, 5, 33, 7, True),
    ]:
        t = p + s
        hq = hkv * group
        causal = np.tril(np.ones((s, t), bool), k=p)
        mask = np.broadcast_to(causal, (b, hq if full else 1, s, t)).copy()
        mask &= rng.random(mask.shape) > 0.1
        score = rng.random((b, hkv, p)).astype(np.float32)
        score[rng.random(score.shape) < 0.2] = -1.0
        if p:
            score[0, 0, 0] = 0.0  # a zero score is a real slot
        name = f"b{b}kv{hkv}g{group}p{p}s{s}" + (".full" if full else "")
        yield Case(KV_SLOT_MASK, name, [mask, score], {"group": group})
    f = np.float32
    mask, score = np.ones((2, 1, 2, 7), bool), np.zeros((2, 2, 5), f)
    yield Case(
        KV_SLOT_MASK,
        "mask_rank3.error",
        [np.ones((2, 2, 7), bool), score],
        {"group": 2},
        error="input 'attn_mask' must have rank 4",
    )
    yield Case(
        KV_SLOT_MASK,
        "score_rank2.error",
        [mask, np.zeros((2, 5), f)],
        {"group": 2},
        error="input 'score' must have rank 3",
    )
    yield Case(
        KV_SLOT_MASK,
        "mask_heads.error",
        [np.ones((2, 3, 2, 7), bool), score],
        {"group": 2},
        error="must be [B, 1 or Hkv*group = 4",
    )
    yield Case(
        KV_SLOT_MASK,
        "batch.error",
        [np.ones((3, 1, 2, 7), bool), score],
        {"group": 2},
        error="must be [B, 1 or Hkv*group",
    )
    yield Case(
        KV_SLOT_MASK,
        "p_gt_t.error",
        [mask, np.zeros((2, 2, 8), f)],
        {"group": 2},
        error="more than the T = 7 slots",
    )


def _mask_remap_cases(rng: np.random.Generator) -> Iterator[Case]:
    # (B, N, P, S)
    shapes = [(2, 11, 5, 2), (1, 600, 512, 1), (3, 40, 0, 40), (2, 9, 4, 0), (3, 17, 17, 3)]
    for b, n, p, s in shapes:
        for dtype in MASK_DTYPES:
            mask = (rng.random((b, n)) > 0.3).astype(dtype)
            for ids_dtype in (np.int64, np.int32) if dtype == np.int64 else (np.int64,):
                inputs = [mask, np.zeros((b, 2, p, 4), np.float32), np.zeros((b, s), ids_dtype)]
                name = f"b{b}n{n}p{p}s{s}.{np.dtype(dtype).name}.ids_{np.dtype(ids_dtype).name}"
                yield Case(KV_MASK_REMAP, name, inputs)
        bfm = np.where(rng.random((b, n)) > 0.3, 1.0, 0.0).astype(ml_dtypes.bfloat16)
        inputs = [bfm, np.zeros((b, 2, p, 4), np.float32), np.zeros((b, s), np.int32)]
        yield Case(KV_MASK_REMAP, f"b{b}n{n}p{p}s{s}.bfloat16", inputs, bf16=(0,))
    mask, past, ids = (
        np.ones((2, 9), np.int64),
        np.zeros((2, 2, 4, 4), np.float32),
        np.zeros((2, 2), np.int64),
    )
    yield Case(
        KV_MASK_REMAP,
        "mask_rank3.error",
        [np.ones((2, 9, 1), np.int64), past, ids],
        error="input 'attention_mask' must have rank 2",
    )
    yield Case(
        KV_MASK_REMAP,
        "past_rank3.error",
        [mask, np.zeros((2, 4, 4), np.float32), ids],
        error="input 'past' must have rank 4",
    )
    yield Case(
        KV_MASK_REMAP,
        "ids_rank1.error",
        [mask, past, np.zeros((2,), np.int64)],
        error="input 'input_ids' must have rank 2",
    )
    yield Case(
        KV_MASK_REMAP,
        "s_gt_n.error",
        [mask, past, np.zeros((2, 10), np.int64)],
        error="more than the N = 9 columns",
    )
    yield Case(
        KV_MASK_REMAP,
        "batch.error",
        [mask, np.zeros((3, 2, 4, 4), np.float32), ids],
        error="batch sizes differ",
    )


def _probs_cases(rng: np.random.Generator) -> Iterator[Case]:
    # (name, B, H, S, T, D, mask kind, mask heads: 1 or H, scale)
    for name, b, h, s, t, d, kind, full, scale in [
        ("example", 2, 3, 2, 5, 4, "causal", False, 0.0),
        ("decode_bench", 1, 9, 1, 513, 64, "padded", False, 0.0),  # SmolLM2 decode step over the budget
        ("prefill", 1, 3, 64, 64, 64, "causal", False, 0.0),
        ("prefill_padded", 2, 2, 37, 37, 16, "padded_causal", True, 0.0),
        ("chunk", 2, 3, 5, 23, 8, "causal", True, 0.25),
        ("random_mask", 3, 2, 7, 19, 5, "random", True, 0.0),
        ("one_key", 2, 2, 3, 1, 4, "random", True, 0.0),
        ("d1", 1, 2, 4, 9, 1, "causal", False, 1.5),
        ("large_scores", 1, 2, 6, 30, 16, "causal", False, 8.0),  # exp would overflow without the shift
        ("empty_rows", 2, 2, 6, 10, 4, "empty_rows", True, 0.0),
        ("no_query", 1, 2, 0, 5, 4, "random", False, 0.0),
    ]:
        q = rng.standard_normal((b, h, s, d)).astype(np.float32)
        k = rng.standard_normal((b, h, t, d)).astype(np.float32)
        heads = h if full else 1
        causal = np.tril(np.ones((s, t), bool), k=t - s)
        if kind == "causal":
            mask = np.broadcast_to(causal, (b, heads, s, t)).copy()
        elif kind == "padded":
            mask = np.ones((b, heads, s, t), bool)
            mask[..., rng.random(t) < 0.1] = False
        elif kind == "padded_causal":
            mask = np.broadcast_to(causal, (b, heads, s, t)).copy()
            mask[-1, :, :, :5] = False  # left padding: those query rows see nothing
        elif kind == "random":
            mask = rng.random((b, heads, s, t)) > 0.4
        else:  # empty_rows
            mask = rng.random((b, heads, s, t)) > 0.3
            mask[0, :, 1, :] = False
            mask[1, 1, 4, :] = False
        yield Case(ATTENTION_PROBS, name, [q, k, mask], {"scale": scale}, tol=PROBS_TOL)
    q, k, mask = (
        np.zeros((2, 3, 2, 4), np.float32),
        np.zeros((2, 3, 5, 4), np.float32),
        np.ones((2, 1, 2, 5), bool),
    )
    yield Case(
        ATTENTION_PROBS,
        "q_rank3.error",
        [np.zeros((2, 3, 4), np.float32), k, mask],
        error="input 'q' must have rank 4",
    )
    yield Case(
        ATTENTION_PROBS,
        "k_rank5.error",
        [q, np.zeros((2, 3, 5, 4, 1), np.float32), mask],
        error="input 'k' must have rank 4",
    )
    yield Case(
        ATTENTION_PROBS,
        "mask_rank3.error",
        [q, k, np.ones((2, 2, 5), bool)],
        error="input 'mask' must have rank 4",
    )
    yield Case(
        ATTENTION_PROBS,
        "k_heads.error",
        [q, np.zeros((2, 2, 5, 4), np.float32), mask],
        error="input 'k' [2, 2, 5, 4] must be [B, H, T, D]",
    )
    yield Case(
        ATTENTION_PROBS,
        "k_dim.error",
        [q, np.zeros((2, 3, 5, 3), np.float32), mask],
        error="must be [B, H, T, D]",
    )
    yield Case(
        ATTENTION_PROBS,
        "mask_t.error",
        [q, k, np.ones((2, 1, 2, 6), bool)],
        error="input 'mask' [2, 1, 2, 6] must be [B, 1 or H, S, T]",
    )
    yield Case(
        ATTENTION_PROBS,
        "mask_heads.error",
        [q, k, np.ones((2, 2, 2, 5), bool)],
        error="must be [B, 1 or H, S, T]",
    )


def cases() -> Iterator[Case]:
    rng = np.random.default_rng(11)
    yield from _evict_cases(rng)
    yield from _slot_mask_cases(rng)
    yield from _mask_remap_cases(rng)
    yield from _probs_cases(rng)
