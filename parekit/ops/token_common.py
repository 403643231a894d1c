"""Body and reference helpers shared by the token-reduction ops (TokenPrune, TokenMerge, TokenRestore).

Every token-reduction op speaks the same three tensors, so that passes can chain them and restore full
length at the end:

* ``tokens``  ``[B, N, C]``  the residual stream;
* ``sizes``   ``[B, N]``     how many input tokens each token stands for (0 = padding, 1 = one token,
  ``k`` = a merge of ``k`` tokens); the attention mask and the output pooling are derived from it;
* ``assign``  ``[B, N, M]``  one-hot rows: input token ``n`` went into output token ``m``
  (a row of zeros: the token was dropped).

Reducing is a dense, size-weighted ``MatMul`` with the assignment matrix, which keeps the bodies free of
scatters and data-dependent shapes other than the output count ``M`` (TensorRT- and CPU-friendly).

This module is not an op: it holds the pieces the op modules build their bodies and references from.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.body import const_ints, dim, scalar_int
from parekit.ops.dtypes import FLOAT_DTYPES
from parekit.ops.schema import ParamSpec

__all__ = [
    "BIG",
    "arange",
    "rank_below",
    "rank_reference",
    "WEIGHT_FLOOR",
    "assign_from_target",
    "packed_index",
    "assign_reference",
    "example_token_inputs",
    "float_const",
    "reduce_reference",
    "reduce_tokens",
    "sizes_spec",
    "tokens_spec",
]

BIG = 1.0e30
"""Finite stand-in for infinity in selection scores (keeps TopK/ArgMax free of inf arithmetic)."""

WEIGHT_FLOOR = 1.0e-7
"""Lower bound of a group's total weight (an empty group divides 0 by it, not by 0); representable in float16."""


def tokens_spec(name: str = "tokens", doc: str = "token embeddings") -> ParamSpec:
    """``[B, N, C]`` float spec."""
    return ParamSpec(name, FLOAT_DTYPES, "[B, N, C]", rank=3, doc=doc)


def sizes_spec(name: str = "sizes", shape: str = "[B, N]", doc: str | None = None) -> ParamSpec:
    """``[B, N]`` float token-size spec (0 = padding)."""
    return ParamSpec(
        name, FLOAT_DTYPES, shape, rank=2, doc=doc or "tokens each token stands for; 0 marks padding"
    )


# -- body pieces ------------------------------------------------------------------------------------


def float_const(tape: Tape, value: float, like: ir.Value) -> ir.Value:
    """A scalar constant of ``like``'s element type (``CastLike`` of a float32 constant)."""
    c = tape.op("Constant", [], {"value_float": float(value)})
    return tape.op("CastLike", [c, like])


def arange(tape: Tape, n: ir.Value) -> ir.Value:
    """``Range(0, n)`` for a 1-D ``[1]`` int64 ``n``; returns a 1-D int64 tensor."""
    zero = tape.op("Constant", [], {"value_int": 0})
    one = tape.op("Constant", [], {"value_int": 1})
    limit = tape.op("Squeeze", [n, const_ints(tape, [0])])
    return tape.op("Range", [zero, limit, one])


def packed_index(tape: Tape, chosen: ir.Value) -> ir.Value:
    """``[B, N]`` int64: for each token, how many ``chosen`` tokens come before or at it, minus 1.

    ``CumSum(Cast(chosen), axis=1) - 1`` (the ``axis`` input is the 0-D tensor the spec requires): the
    output index of every chosen token when the chosen ones are packed in order.

    Args:
        tape: Body tape.
        chosen: ``[B, N]`` bool or int64 (1 = chosen).
    """
    counts = tape.op("CumSum", [tape.op("Cast", [chosen], {"to": ir.DataType.INT64}), scalar_int(tape, 1)])
    return tape.op("Sub", [counts, const_ints(tape, [1])])


def assign_from_target(tape: Tape, target: ir.Value, m: ir.Value, keep: ir.Value, like: ir.Value) -> ir.Value:
    """One-hot assignment ``[B, N, M]``: row ``n`` has a 1 at ``target[b, n]`` when ``keep[b, n]``.

    Args:
        tape: Body tape.
        target: ``[B, N]`` int64 output index of each input token.
        m: ``[1]`` int64 number of output tokens.
        keep: ``[B, N]`` bool, whether the token goes anywhere.
        like: a value of the float type the matrix should have.
    """
    cols = tape.op("Reshape", [arange(tape, m), const_ints(tape, [1, 1, -1])])
    hit = tape.op("Equal", [tape.op("Unsqueeze", [target, const_ints(tape, [2])]), cols])
    hit = tape.op("And", [hit, tape.op("Unsqueeze", [keep, const_ints(tape, [2])])])
    return tape.op("CastLike", [hit, like])


def reduce_tokens(
    tape: Tape, tokens: ir.Value, sizes: ir.Value, assign: ir.Value, weights: ir.Value
) -> tuple[ir.Value, ir.Value]:
    """Weighted means of ``tokens`` over the groups of ``assign``, and the summed sizes.

    ``out[m] = Σ_n assign[n, m]·w[n]·x[n] / Σ_n assign[n, m]·w[n]``; a group whose weights are all 0
    (e.g. only padding) takes the plain mean instead, and an empty group gives 0. A singleton group
    returns its token exactly. ``sizes'[m] = Σ_n assign[n, m]·s[n]``.
    """
    two = const_ints(tape, [2])
    zero = float_const(tape, 0.0, tokens)
    at = tape.op("Transpose", [assign], {"perm": [0, 2, 1]})  # [B, M, N]
    w = tape.op("Unsqueeze", [weights, two])  # [B, N, 1]
    unweighted = tape.op(
        "CastLike", [tape.op("Equal", [tape.op("MatMul", [at, w]), zero]), tokens]
    )  # [B, M, 1]
    w = tape.op("Add", [w, tape.op("MatMul", [assign, unweighted])])  # 1 for members of weightless groups
    num = tape.op("MatMul", [at, tape.op("Mul", [tokens, w])])
    den = tape.op("Max", [tape.op("MatMul", [at, w]), float_const(tape, WEIGHT_FLOOR, tokens)])
    out = tape.op("Div", [num, den])
    new_sizes = tape.op("Squeeze", [tape.op("MatMul", [at, tape.op("Unsqueeze", [sizes, two])]), two])
    return out, new_sizes


def rank_below(tape: Tape, scores: ir.Value, count: ir.Value) -> ir.Value:
    """``[B, N]`` bool: the ``count`` highest ``scores`` of each row (ties: lower index first).

    Rank by pairwise comparison, ``rank[i] = #{j : s_j > s_i or (s_j == s_i and j < i)}``, a ``[B, N, N]``
    compare and a sum: no TopK (no K limit, and ``count = 0`` needs no empty tensors).

    Args:
        tape: Body tape.
        scores: ``[B, N]`` float scores.
        count: ``[1]`` int64 number of tokens to select.
    """
    n = dim(tape, scores, 1)
    idx = arange(tape, n)
    s_i = tape.op("Unsqueeze", [scores, const_ints(tape, [2])])  # [B, N, 1]
    s_j = tape.op("Unsqueeze", [scores, const_ints(tape, [1])])  # [B, 1, N]
    beats = tape.op("Greater", [s_j, s_i])
    lower = tape.op(
        "Less",
        [
            tape.op("Unsqueeze", [idx, const_ints(tape, [0])]),
            tape.op("Unsqueeze", [idx, const_ints(tape, [1])]),
        ],
    )  # [N(i), N(j)]: j < i
    beats = tape.op("Or", [beats, tape.op("And", [tape.op("Equal", [s_j, s_i]), lower])])
    rank = tape.op(
        "ReduceSum",
        [tape.op("Cast", [beats], {"to": ir.DataType.FLOAT}), const_ints(tape, [2])],
        {"keepdims": 0},
    )
    return tape.op("Less", [rank, tape.op("Cast", [count], {"to": ir.DataType.FLOAT})])


def example_token_inputs(second: np.ndarray) -> list[np.ndarray]:
    """Contract-test inputs: tokens ``[2, 9, 4]``, ``second`` (scores or metric), sizes with two padding tokens."""
    sizes = np.ones((2, 9), dtype=np.float32)
    sizes[0, -2:] = 0
    return [np.random.default_rng(0).standard_normal((2, 9, 4)).astype(np.float32), second, sizes]


# -- NumPy pieces -----------------------------------------------------------------------------------


def assign_reference(target: np.ndarray, keep: np.ndarray, m: int, dtype: np.dtype) -> np.ndarray:
    """NumPy twin of :func:`assign_from_target`, written with explicit loops over the batch."""
    b, n = target.shape
    out = np.zeros((b, n, m), dtype=dtype)
    for bi in range(b):
        for ni in range(n):
            if keep[bi, ni]:
                out[bi, ni, target[bi, ni]] = 1
    return out


def reduce_reference(
    tokens: np.ndarray, sizes: np.ndarray, assign: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`reduce_tokens` (group by group, in float64, cast back)."""
    b, _, c = tokens.shape
    m = assign.shape[2]
    out = np.zeros((b, m, c), dtype=np.float64)
    new_sizes = np.zeros((b, m), dtype=np.float64)
    for bi in range(b):
        for mi in range(m):
            members = np.nonzero(assign[bi, :, mi])[0]
            if members.size == 0:
                continue
            wm = weights[bi, members].astype(np.float64)
            if wm.sum() == 0:
                wm = np.ones_like(wm)
            out[bi, mi] = (wm[:, None] * tokens[bi, members].astype(np.float64)).sum(0) / wm.sum()
            new_sizes[bi, mi] = sizes[bi, members].astype(np.float64).sum()
    return out.astype(tokens.dtype), new_sizes.astype(sizes.dtype)


def rank_reference(scores: np.ndarray, count: int) -> np.ndarray:
    """NumPy twin of :func:`rank_below`: a stable descending sort per row, first ``count`` marked."""
    out = np.zeros(scores.shape, dtype=bool)
    for bi in range(scores.shape[0]):
        order = np.argsort(-scores[bi].astype(np.float64), kind="stable")
        out[bi, order[:count]] = True
    return out
