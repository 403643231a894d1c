"""TokenPrune / TokenMerge / TokenRestore: body == NumPy reference, identities, padding, TensorRT-safe bodies."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.ops.token_merge import TOKEN_MERGE, merge_limit, merged_count
from parekit.ops.token_prune import TOKEN_PRUNE, pruned_count
from parekit.ops.token_restore import TOKEN_RESTORE

from .harness import assert_body_matches_reference, run_op

RNG = np.random.default_rng(7)
TOL = {"rtol": 1e-5, "atol": 1e-6}

# Ops TensorRT's ONNX parser handles without plugins; the token ops must stay inside this set (no TopK,
# no Scatter*, no NonZero: static-rank, gather-free dense math).
TRT_SAFE = {
    "Add", "And", "ArgMax", "Cast", "CastLike", "Ceil", "Concat", "Constant", "CumSum", "Div", "Equal",
    "Gather", "GatherElements", "Greater", "Less", "MatMul", "Max", "Min", "Mod", "Mul", "Not", "Or",
    "Range", "ReduceL2", "ReduceMax", "ReduceSum", "Reshape", "Shape", "Slice", "Squeeze", "Sub",
    "Transpose", "Unsqueeze", "Where",
}  # fmt: skip


def _inputs(b, n, c, pad=0, dtype=np.float32, d=5):
    tokens = RNG.standard_normal((b, n, c)).astype(dtype)
    metric = RNG.standard_normal((b, n, d)).astype(dtype)
    scores = RNG.random((b, n)).astype(dtype)
    sizes = np.ones((b, n), dtype=dtype)
    if pad:
        sizes[0, n - pad :] = 0  # right padding in the first row only
    return tokens, metric, scores, sizes


# (B, N, C, padding in row 0)
SHAPES = [(1, 1, 4, 0), (1, 2, 3, 0), (2, 9, 4, 3), (3, 17, 8, 0), (2, 32, 16, 11), (1, 197, 8, 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("b", "n", "c", "pad"), SHAPES)
@pytest.mark.parametrize(
    ("keep", "fuse", "protect"), [(0.5, 0, 1), (0.3, 1, 1), (0.7, 0, 0), (1.0, 1, 1), (0.05, 0, 2)]
)
def test_prune_body_matches_reference(b, n, c, pad, dtype, keep, fuse, protect):
    tokens, _, scores, sizes = _inputs(b, n, c, pad, dtype)
    out, new_sizes, assign = assert_body_matches_reference(
        TOKEN_PRUNE, [tokens, scores, sizes], {"keep": keep, "fuse": fuse, "protect": protect}, **TOL
    )
    assert out.shape[1] == pruned_count(n, keep, protect, fuse)
    if fuse:  # every token goes somewhere, and no size is lost
        np.testing.assert_allclose(assign.sum(2), 1.0)
        np.testing.assert_allclose(new_sizes.sum(1), sizes.sum(1), rtol=1e-6)
    else:  # kept tokens only
        assert np.all(assign.sum(2) <= 1.0) and np.all(new_sizes.sum(1) <= sizes.sum(1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("b", "n", "c", "pad"), SHAPES)
@pytest.mark.parametrize(("r", "protect"), [(0, 1), (3, 1), (16, 1), (100, 1), (4, 0), (2, 3)])
def test_merge_body_matches_reference(b, n, c, pad, dtype, r, protect):
    tokens, metric, _, sizes = _inputs(b, n, c, pad, dtype)
    out, new_sizes, assign = assert_body_matches_reference(
        TOKEN_MERGE, [tokens, metric, sizes], {"r": r, "protect": protect}, **TOL
    )
    assert out.shape[1] == merged_count(n, r, protect) == n - merge_limit(n, r, protect)
    np.testing.assert_allclose(assign.sum(2), 1.0)  # every token goes somewhere
    np.testing.assert_allclose(new_sizes.sum(1), sizes.sum(1), rtol=1e-6)  # sizes are conserved
    # protected tokens stay alone and first
    for p in range(min(protect, n)):
        assert assign[:, p, p].min() == 1 and assign[:, :, p].sum(1).max() == 1


@pytest.mark.parametrize(("b", "n", "c"), [(2, 9, 4), (3, 17, 8)])
def test_restore_body_matches_reference(b, n, c):
    tokens, metric, scores, sizes = _inputs(b, n, c, pad=2)
    red, _, assign = run_op(TOKEN_PRUNE, [tokens, scores, sizes], {"keep": 0.5})
    (full,) = assert_body_matches_reference(TOKEN_RESTORE, [red, assign, tokens], **TOL)
    np.testing.assert_array_equal(full, tokens)  # kept tokens come back, dropped ones keep their base value
    red, _, assign = run_op(TOKEN_MERGE, [tokens, metric, sizes], {"r": 3})
    (full,) = assert_body_matches_reference(TOKEN_RESTORE, [red, assign, tokens], **TOL)
    np.testing.assert_allclose(full, assign @ red, rtol=1e-6)


def test_identity_configurations_return_the_tokens():
    tokens, metric, scores, sizes = _inputs(2, 13, 6, pad=4)
    out, new_sizes, assign = run_op(TOKEN_MERGE, [tokens, metric, sizes], {"r": 0})
    np.testing.assert_allclose(out, tokens, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(assign[0], np.eye(13, dtype=np.float32))
    out, new_sizes, _ = run_op(TOKEN_PRUNE, [tokens, scores, sizes], {"keep": 1.0})
    np.testing.assert_array_equal(out, tokens)
    np.testing.assert_array_equal(new_sizes, sizes)


def test_prune_keeps_protected_and_top_scores_in_order():
    tokens, _, _, sizes = _inputs(1, 8, 2)
    scores = np.array([[0.0, 0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6]], dtype=np.float32)
    out, _, assign = run_op(TOKEN_PRUNE, [tokens, scores, sizes], {"keep": 3 / 7, "protect": 1})
    kept = np.nonzero(assign[0].sum(1))[0].tolist()
    assert kept == [0, 1, 3, 5]  # CLS (lowest score) plus the top 3 of 7, in original order
    np.testing.assert_array_equal(out[0], tokens[0, kept])


def test_prune_drops_padding_first_and_fuses_by_score():
    tokens, _, _, _ = _inputs(1, 6, 3)
    sizes = np.array([[1, 1, 1, 1, 0, 0]], dtype=np.float32)
    scores = np.array([[0.0, 0.1, 0.2, 0.3, 0.9, 0.9]], dtype=np.float32)  # padding scores high: ignored
    out, new_sizes, assign = run_op(TOKEN_PRUNE, [tokens, scores, sizes], {"keep": 0.6, "fuse": 1})
    kept = np.nonzero(assign[0, :, :-1].sum(1))[0].tolist()
    assert kept == [0, 1, 2, 3]  # CLS + the 3 real tokens (keep 0.6 of 5 free); padding is dropped
    assert new_sizes[0, -1] == 0  # the fused token holds only padding: size 0, masked downstream


def test_merge_pairs_the_most_similar_tokens():
    # A tokens 2 and 4; B tokens 1, 3, 5. Token 4 is a copy of token 5, token 2 is far from all.
    metric = np.array(
        [[[1, 0, 0], [0, 1, 0], [-1, -1, 1], [0, 0, 1], [1, 1, 0], [1, 1, 0]]], dtype=np.float32
    )
    tokens = np.arange(18, dtype=np.float32).reshape(1, 6, 3)
    sizes = np.ones((1, 6), dtype=np.float32)
    out, new_sizes, assign = run_op(TOKEN_MERGE, [tokens, metric, sizes], {"r": 1})
    assert out.shape == (1, 5, 3)
    np.testing.assert_array_equal(new_sizes, [[1, 1, 1, 1, 2]])
    np.testing.assert_allclose(out[0, 4], (tokens[0, 4] + tokens[0, 5]) / 2)


def test_padding_merges_first_without_diluting_real_tokens():
    tokens, metric, _, _ = _inputs(1, 8, 4)
    sizes = np.array([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=np.float32)
    out, new_sizes, assign = run_op(TOKEN_MERGE, [tokens, metric, sizes], {"r": 1})
    (src,) = [i for i in range(8) if assign[0, i].argmax() != i - (i > 6)]  # the one merged token
    assert src == 6  # the padding A token goes first
    assert new_sizes.sum() == 6


@pytest.mark.parametrize("op", [TOKEN_PRUNE, TOKEN_MERGE, TOKEN_RESTORE], ids=lambda o: o.op_type)
def test_bodies_use_only_tensorrt_parser_ops(op):
    fn = op.function(18, op.validate_attributes({}))
    used = {node.op_type for node in fn}
    assert used <= TRT_SAFE, f"{op.op_type} body uses {sorted(used - TRT_SAFE)}"
