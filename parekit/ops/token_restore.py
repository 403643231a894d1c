"""``parekit::TokenRestore``: bring reduced tokens back to full length (ToMe unmerge, pruned tokens kept).

    reduced [B, M, C], assign [B, N, M], base [B, N, C]  ─►  TokenRestore  ─►  out [B, N, C]

``out[n] = Σ_m assign[n, m]·reduced[m] + (1 − Σ_m assign[n, m])·base[n]``: a token that went into output
token ``m`` (merged or kept) gets ``reduced[m]``; a token that was dropped (an all-zero row) keeps its
``base`` value, i.e. its representation at the moment it was pruned. With the one-hot rows of
:mod:`parekit.ops.token_merge` every row sums to 1 and ``base`` only fixes the shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.body import const_ints
from parekit.ops.dtypes import FLOAT_DTYPES
from parekit.ops.opdef import OpDef
from parekit.ops.registry import register_op
from parekit.ops.schema import AttrValue, ParamSpec
from parekit.ops.token_common import float_const, tokens_spec

__all__ = ["TOKEN_RESTORE", "TokenRestore"]


class TokenRestore(OpDef):
    """``TokenRestore(reduced, assign, base) -> out``: scatter reduced tokens back through ``assign``."""

    op_type = "TokenRestore"
    plugin_version = "1"
    inputs = (
        ParamSpec("reduced", FLOAT_DTYPES, "[B, M, C]", rank=3, doc="reduced tokens"),
        ParamSpec(
            "assign", FLOAT_DTYPES, "[B, N, M]", rank=3, doc="one-hot (or zero) rows from a reducing op"
        ),
        tokens_spec("base", "full-length tokens used where a row of assign is zero"),
    )
    outputs = (tokens_spec("tokens_out", "full-length tokens [B, N, C]"),)
    min_opset = 13
    doc = (
        "Restores full token length: row n of the output is reduced[m] where assign[n] is one-hot at m, "
        "base[n] where assign[n] is zero (body: assign @ reduced + (1 - rowsum(assign)) * base), so merged "
        "tokens are unmerged and dropped tokens keep their base value. assign rows must be one-hot or zero, "
        "as TokenPrune and TokenMerge write them."
    )

    example_tolerance = (1e-5, 1e-6)  # MatMul sums

    def example_inputs(self) -> list[np.ndarray]:
        """Reduced [2, 4, 3], a one-hot assignment [2, 6, 4] with one dropped row, base [2, 6, 3]."""
        rng = np.random.default_rng(0)
        assign = np.zeros((2, 6, 4), dtype=np.float32)
        for n, m in enumerate([0, 1, 1, 2, 3, -1]):
            if m >= 0:
                assign[:, n, m] = 1
        return [
            rng.standard_normal((2, 4, 3)).astype(np.float32),
            assign,
            rng.standard_normal((2, 6, 3)).astype(np.float32),
        ]

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        reduced, assign, base = inputs
        spread = tape.op("MatMul", [assign, reduced])
        covered = tape.op("ReduceSum", [assign, const_ints(tape, [2])], {"keepdims": 1})
        rest = tape.op("Sub", [float_const(tape, 1.0, assign), covered])
        return [tape.op("Add", [spread, tape.op("Mul", [rest, base])])]

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        reduced, assign, base = inputs
        out = base.astype(np.float64).copy()
        for bi in range(assign.shape[0]):
            for ni in range(assign.shape[1]):
                hits = np.nonzero(assign[bi, ni])[0]
                if hits.size:
                    out[bi, ni] = reduced[bi, hits[0]]
        return [out.astype(base.dtype)]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        base = inputs[2]
        assert base is not None
        return [(base.dtype, base.shape)]


TOKEN_RESTORE: TokenRestore = register_op(TokenRestore())
"""The registered :class:`TokenRestore` op."""
