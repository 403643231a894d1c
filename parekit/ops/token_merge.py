"""``parekit::TokenMerge``: ToMe bipartite soft matching, size-weighted merging of the ``r`` closest pairs.

    tokens [B, N, C], metric [B, N, D], sizes [B, N]
        ─► TokenMerge{r, protect} ─►
    tokens' [B, N − r', C], sizes' [B, N − r'], assign [B, N, N − r']

Tokens alternate between set A (even positions) and set B (odd positions). Each free A token is matched
to its most similar free B token (cosine of ``metric``, e.g. the attention keys averaged over heads);
the ``r' = min(r, #free A, #free B)`` A tokens with the best matches merge into their partners: the
merged token is the ``sizes``-weighted mean, its size the sum. The first ``protect`` tokens (e.g. CLS)
never merge or receive. Padding (size 0) A tokens merge first, and real A tokens only pick a padding B
token when no real one is free, so padding never dilutes a real token. Surviving tokens keep their
original order. ``r = 0`` is the identity.

The body is dense: an ``[N, N]`` cosine matrix with a parity mask (instead of strided A/B slices), ranks by
pairwise comparison (no TopK), and merges with a one-hot ``MatMul``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import int_attr_value
from parekit.ops.body import const_ints, dim, int_attr_ref
from parekit.ops.dtypes import FLOAT_DTYPES
from parekit.ops.opdef import OpDef
from parekit.ops.registry import register_op
from parekit.ops.schema import AttrSpec, AttrValue, ParamSpec
from parekit.ops.token_common import (
    BIG,
    arange,
    assign_from_target,
    assign_reference,
    example_token_inputs,
    float_const,
    packed_index,
    rank_below,
    reduce_reference,
    reduce_tokens,
    sizes_spec,
    tokens_spec,
)

__all__ = ["TOKEN_MERGE", "TokenMerge", "merged_count"]

_PAD_PENALTY = 1.0e4
"""Similarity of a real token to a padding partner: below any cosine, above a forbidden pair."""


def merge_limit(n: int, r: int, protect: int) -> int:
    """``r'``: merges that fit in ``n`` tokens with ``protect`` protected ones."""
    p = min(protect, n)
    free_a = (n + 1) // 2 - (p + 1) // 2
    free_b = n // 2 - p // 2
    return max(0, min(r, free_a, free_b))


def merged_count(n: int, r: int, protect: int) -> int:
    """Output token count ``N − r'``."""
    return n - merge_limit(n, r, protect)


class TokenMerge(OpDef):
    """``TokenMerge(tokens, metric, sizes) -> (tokens', sizes', assign)``: ToMe bipartite merging."""

    op_type = "TokenMerge"
    plugin_version = "1"
    inputs = (
        tokens_spec(),
        ParamSpec(
            "metric", FLOAT_DTYPES, "[B, N, D]", rank=3, doc="features compared by cosine (e.g. keys)"
        ),
        sizes_spec(),
    )
    outputs = (
        tokens_spec("tokens_out", "surviving tokens in order, merged ones size-weighted"),
        sizes_spec("sizes_out", "[B, M]"),
        ParamSpec(
            "assign", FLOAT_DTYPES, "[B, N, M]", rank=3, doc="one-hot rows: input token → output token"
        ),
    )
    attributes = (
        AttrSpec("r", "int", default=8, minimum=0, doc="token pairs merged"),
        AttrSpec("protect", "int", default=1, minimum=0, doc="leading tokens never merged (1 = CLS)"),
    )
    min_opset = 14
    doc = (
        "ToMe bipartite soft matching: alternate tokens into A/B, match each free A token to its most "
        "cosine-similar free B token, merge the r best pairs by size-weighted mean. Returns the tokens, "
        "their sizes and the one-hot assignment [B, N, M]."
    )

    example_tolerance = (1e-5, 1e-6)  # size-weighted means: float sums, not bit-exact

    def example_inputs(self) -> list[np.ndarray]:
        """Tokens [2, 9, 4], metric [2, 9, 3], sizes with two padding tokens (contract test)."""
        return example_token_inputs(np.random.default_rng(1).standard_normal((2, 9, 3)).astype(np.float32))

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        tokens, metric, sizes = inputs
        n = dim(tape, tokens, 1)
        one, two = const_ints(tape, [1]), const_ints(tape, [2])
        p = tape.op("Min", [int_attr_ref(tape, "protect"), n])
        free_a = tape.op(
            "Sub",
            [
                tape.op("Div", [tape.op("Add", [n, one]), two]),
                tape.op("Div", [tape.op("Add", [p, one]), two]),
            ],
        )
        free_b = tape.op("Sub", [tape.op("Div", [n, two]), tape.op("Div", [p, two])])
        r = tape.op("Min", [int_attr_ref(tape, "r"), free_a, free_b])
        r = tape.op("Max", [r, const_ints(tape, [0])])
        m = tape.op("Sub", [n, r])

        idx = arange(tape, n)
        free = tape.op("Not", [tape.op("Less", [idx, p])])
        is_a = tape.op("Equal", [tape.op("Mod", [idx, const_ints(tape, [2])]), const_ints(tape, [0])])
        src = tape.op("And", [is_a, free])  # [N] free A tokens
        dst = tape.op("And", [tape.op("Not", [is_a]), free])  # [N] free B tokens
        pair = tape.op(
            "And", [tape.op("Unsqueeze", [src, one]), tape.op("Unsqueeze", [dst, const_ints(tape, [0])])]
        )

        zero = float_const(tape, 0.0, tokens)
        real = tape.op("Greater", [sizes, zero])  # [B, N]
        norm = tape.op("ReduceL2", [metric, two], {"keepdims": 1})
        unit = tape.op("Div", [metric, tape.op("Max", [norm, float_const(tape, 1e-12, metric)])])
        sim = tape.op("MatMul", [unit, tape.op("Transpose", [unit], {"perm": [0, 2, 1]})])  # [B, N, N]
        sim = tape.op("CastLike", [sim, tokens])
        pad_dst = tape.op("Not", [tape.op("Unsqueeze", [real, one])])  # [B, 1, N]
        real_src = tape.op("Unsqueeze", [real, two])  # [B, N, 1]
        sim = tape.op(
            "Where", [tape.op("And", [pad_dst, real_src]), float_const(tape, -_PAD_PENALTY, tokens), sim]
        )
        sim = tape.op("Where", [pair, sim, float_const(tape, -BIG, tokens)])
        best = tape.op("ReduceMax", [sim, two], {"keepdims": 0})  # [B, N]
        partner = tape.op("ArgMax", [sim], {"axis": 2, "keepdims": 0})  # [B, N] int64
        score = tape.op("Where", [real, best, float_const(tape, BIG, tokens)])
        score = tape.op("Where", [src, score, float_const(tape, -BIG, tokens)])
        merged = rank_below(tape, score, r)  # [B, N] bool

        pos = packed_index(tape, tape.op("Not", [merged]))  # output index of each survivor
        target = tape.op("Where", [merged, tape.op("GatherElements", [pos, partner], {"axis": 1}), pos])
        everyone = tape.op("Equal", [target, target])
        assign = assign_from_target(tape, target, m, everyone, tokens)
        out, new_sizes = reduce_tokens(tape, tokens, sizes, assign, sizes)
        return [out, new_sizes, assign]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        tokens, metric, sizes = inputs
        r, protect = int_attr_value(attrs, "r"), int_attr_value(attrs, "protect")
        b, n, _ = tokens.shape
        r_eff = merge_limit(n, r, protect)
        m = n - r_eff
        unit = metric.astype(np.float64)
        unit = unit / np.maximum(np.linalg.norm(unit, axis=2, keepdims=True), 1e-12)
        a_set = [i for i in range(n) if i % 2 == 0 and i >= protect]
        b_set = [j for j in range(n) if j % 2 == 1 and j >= protect]
        target = np.zeros((b, n), dtype=np.int64)
        for bi in range(b):
            real = sizes[bi] > 0
            partner, score = {}, {}
            for i in a_set if b_set else []:
                sims = [
                    (unit[bi, i] @ unit[bi, j]) if (real[j] or not real[i]) else -_PAD_PENALTY for j in b_set
                ]
                sims32 = np.asarray(sims, dtype=tokens.dtype)
                k = int(np.argmax(sims32))
                partner[i] = b_set[k]
                score[i] = float(sims32[k]) if real[i] else BIG
            order = sorted(score, key=lambda i: (-score[i], i))
            merged = set(order[:r_eff])
            survivors = [i for i in range(n) if i not in merged]
            where = {i: k for k, i in enumerate(survivors)}
            for i in range(n):
                target[bi, i] = where[partner[i]] if i in merged else where[i]
        assign = assign_reference(target, np.ones((b, n), dtype=bool), m, tokens.dtype)
        out, new_sizes = reduce_reference(tokens, sizes, assign, sizes)
        return [out, new_sizes, assign]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        tokens = inputs[0]
        assert tokens is not None
        dtype = tokens.dtype
        if tokens.shape is None:
            return [(dtype, None)] * 3
        bdim, ndim, cdim = tokens.shape.dims
        r, protect = int_attr_value(attrs, "r"), int_attr_value(attrs, "protect")
        m = merged_count(ndim, r, protect) if isinstance(ndim, int) else None
        return [
            (dtype, ir.Shape([bdim, m, cdim])),
            (dtype, ir.Shape([bdim, m])),
            (dtype, ir.Shape([bdim, ndim, m])),
        ]


TOKEN_MERGE: TokenMerge = register_op(TokenMerge())
"""The registered :class:`TokenMerge` op."""
