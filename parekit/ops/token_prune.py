"""``parekit::TokenPrune``: keep the highest-scoring tokens (ATS/EViT-style top-k pruning).

    tokens [B, N, C], scores [B, N], sizes [B, N]
        ─► TokenPrune{keep, protect, fuse} ─►
    tokens' [B, M, C], sizes' [B, M], assign [B, N, M]

``K = protect + ceil(keep·(N − protect) − 0.01)`` tokens are kept (at least one free token while any
exists): the first ``protect`` tokens always (e.g. CLS), then the free tokens with the highest ``scores``
(typically the attention the CLS token pays them), padding (``sizes == 0``) last; ties go to the lower
index. Kept tokens stay in their original order. With ``fuse=1`` one more token is appended: the
``scores``-weighted mean of the pruned tokens (EViT's fused token), whose size is the pruned tokens'
total size, so ``M = K + fuse``. ``keep=1`` keeps everything (the fused token, if any, is empty: size 0).

The body computes ``K`` from the runtime ``N`` (a constant when ``N`` is static, as TensorRT wants),
ranks tokens by pairwise comparison (no TopK) and reduces with a one-hot ``MatMul``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import float_attr_value, int_attr_value
from parekit.ops.body import const_ints, dim, float_attr_ref, int_attr_ref
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
    rank_reference,
    reduce_reference,
    reduce_tokens,
    sizes_spec,
    tokens_spec,
)

__all__ = ["TOKEN_PRUNE", "TokenPrune", "pruned_count"]

_SLACK = np.float32(0.01)


def pruned_count(n: int, keep: float, protect: int, fuse: int = 0) -> int:
    """Output token count ``M`` for ``n`` input tokens (float32 arithmetic, exactly as the body)."""
    p = min(protect, n)
    free = n - p
    k = int(np.ceil(np.float32(free) * np.float32(keep) - _SLACK))
    k = min(max(k, min(1, free)), free)
    return p + k + fuse


class TokenPrune(OpDef):
    """``TokenPrune(tokens, scores, sizes) -> (tokens', sizes', assign)``: top-k token pruning."""

    op_type = "TokenPrune"
    plugin_version = "1"
    inputs = (
        tokens_spec(),
        ParamSpec("scores", FLOAT_DTYPES, "[B, N]", rank=2, doc="importance of each token (higher is kept)"),
        sizes_spec(),
    )
    outputs = (
        tokens_spec("tokens_out", "kept tokens in order, then the fused token if fuse=1"),
        sizes_spec("sizes_out", "[B, M]"),
        ParamSpec(
            "assign", FLOAT_DTYPES, "[B, N, M]", rank=3, doc="one-hot rows: input token → output token"
        ),
    )
    attributes = (
        AttrSpec("keep", "float", default=0.5, minimum=0.0, maximum=1.0, doc="fraction of free tokens kept"),
        AttrSpec("protect", "int", default=1, minimum=0, doc="leading tokens always kept (1 = CLS)"),
        AttrSpec(
            "fuse",
            "int",
            default=0,
            minimum=0,
            maximum=1,
            doc="append the scores-weighted mean of the pruned tokens",
        ),
    )
    min_opset = 14
    doc = (
        "Keeps `protect` leading tokens plus the top ceil(keep·(N−protect)) tokens by score, in order; "
        "fuse=1 appends the score-weighted mean of the pruned ones. Returns the tokens, their sizes and "
        "the one-hot assignment [B, N, M]."
    )

    example_tolerance = (1e-5, 1e-6)  # size-weighted means: float sums, not bit-exact

    def example_inputs(self) -> list[np.ndarray]:
        """Tokens [2, 9, 4], scores, sizes with two padding tokens (contract test)."""
        return example_token_inputs(np.random.default_rng(1).random((2, 9)).astype(np.float32))

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        tokens, scores, sizes = inputs
        n = dim(tape, tokens, 1)
        p = tape.op("Min", [int_attr_ref(tape, "protect"), n])
        free = tape.op("Sub", [n, p])
        wanted = tape.op(
            "Sub",
            [
                tape.op(
                    "Mul", [tape.op("Cast", [free], {"to": ir.DataType.FLOAT}), float_attr_ref(tape, "keep")]
                ),
                tape.op("Constant", [], {"value_float": float(_SLACK)}),
            ],
        )
        k = tape.op("Cast", [tape.op("Ceil", [wanted])], {"to": ir.DataType.INT64})
        k = tape.op("Min", [tape.op("Max", [k, tape.op("Min", [free, const_ints(tape, [1])])]), free])
        count = tape.op("Add", [p, k])

        idx = arange(tape, n)
        zero = float_const(tape, 0.0, scores)
        s = tape.op("Where", [tape.op("Greater", [sizes, zero]), scores, float_const(tape, -BIG, scores)])
        s = tape.op("Where", [tape.op("Less", [idx, p]), float_const(tape, BIG, scores), s])
        kept = rank_below(tape, s, count)  # [B, N] bool
        target = packed_index(tape, kept)  # output index of each kept token
        assign = assign_from_target(tape, target, count, kept, tokens)
        pruned = tape.op("CastLike", [tape.op("Not", [kept]), tokens])
        full = tape.op("Concat", [assign, tape.op("Unsqueeze", [pruned, const_ints(tape, [2])])], {"axis": 2})
        m = tape.op("Add", [count, int_attr_ref(tape, "fuse")])
        assign = tape.op("Slice", [full, const_ints(tape, [0]), m, const_ints(tape, [2])])
        one = float_const(tape, 1.0, tokens)
        weights = tape.op("Where", [kept, one, tape.op("Max", [scores, zero])])
        out, new_sizes = reduce_tokens(tape, tokens, sizes, assign, weights)
        return [out, new_sizes, assign]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        tokens, scores, sizes = inputs
        keep, protect = float_attr_value(attrs, "keep"), int_attr_value(attrs, "protect")
        fuse = int_attr_value(attrs, "fuse")
        b, n, _ = tokens.shape
        count = pruned_count(n, keep, protect)
        s = np.where(sizes > 0, scores, -BIG).astype(np.float64)
        s[:, : min(protect, n)] = BIG
        kept = rank_reference(s, count)
        target = np.cumsum(kept, axis=1) - 1
        assign = assign_reference(target, kept, count, tokens.dtype)
        if fuse:
            assign = np.concatenate([assign, (~kept)[:, :, None].astype(tokens.dtype)], axis=2)
        weights = np.where(kept, 1.0, np.maximum(scores, 0.0))
        out, new_sizes = reduce_reference(tokens, sizes, assign, weights)
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
        m: int | None = None
        if isinstance(ndim, int):
            keep, protect = float_attr_value(attrs, "keep"), int_attr_value(attrs, "protect")
            m = pruned_count(ndim, keep, protect, int_attr_value(attrs, "fuse"))
        return [
            (dtype, ir.Shape([bdim, m, cdim])),
            (dtype, ir.Shape([bdim, m])),
            (dtype, ir.Shape([bdim, ndim, m])),
        ]


TOKEN_PRUNE: TokenPrune = register_op(TokenPrune())
"""The registered :class:`TokenPrune` op."""
