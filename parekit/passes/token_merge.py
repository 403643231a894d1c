"""Merge similar tokens inside encoder blocks (ToMe bipartite soft matching; ToMe-SD unmerge).

    progressive (default):  attention ─► m ─► parekit::TokenMerge{r} ─► MLP ─► … (every later layer runs on N − r)
    unmerge=true:           x ─► TokenMerge ─► block ─► y_M;  y = x + TokenRestore(y_M − x_M)  (full length after)

Progressive merging follows ToMe: in each chosen layer, after attention, the ``r`` most similar token
pairs (cosine of the layer's keys averaged over heads) merge by size-weighted mean; later layers add
``log(size)`` to their attention logits (proportional attention) and mean pooling weighs tokens by size.
Outputs with a token axis are unmerged to full length (``outputs=restore``) or left short.
``unmerge=true`` follows ToMe for Stable Diffusion: each chosen block runs on merged tokens (similarity on
the block input) and its update is unmerged before the residual, so every block sees all tokens.
Identity configuration: ``r=0`` (the rewired graph merges nothing; matches the original within 1e-5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import onnx_ir as ir

from parekit.analysis.modelmap import LayerMap, ModelMap
from parekit.ops.token_merge import TOKEN_MERGE, merge_limit, merged_count
from parekit.ops.token_restore import TOKEN_RESTORE
from parekit.passes.base import Pass
from parekit.passes.registry import register
from parekit.passes.token_rewire import (
    Reduction,
    TokenDim,
    TokenRewriter,
    annotate_reduction,
    encoder_layers,
    finish_outputs,
    reduce_progressively,
    refuse_reduced,
)

__all__ = ["TokenMergeOptions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenMergeOptions:
    r: int = field(
        default=8, metadata={"help": "token pairs merged in each chosen layer (ToMe's r)", "min": 0}
    )
    layers: tuple[int, ...] | None = field(
        default=None, metadata={"help": "layers that merge (0-based); default: every layer", "min": 0}
    )
    unmerge: bool = field(
        default=False,
        metadata={"help": "merge before each chosen block and restore full length after it (ToMe for SD)"},
    )
    prop_attn: bool = field(
        default=True, metadata={"help": "proportional attention: add log(size) to the attention logits"}
    )
    protect: int = field(default=1, metadata={"help": "leading tokens never merged (1 = CLS)", "min": 0})
    outputs: Literal["restore", "short"] = field(
        default="restore",
        metadata={"help": "outputs with a token axis: unmerge to full length, or keep the merged length"},
    )


@register("token-merge", options=TokenMergeOptions)
class TokenMergePass(Pass[TokenMergeOptions]):
    """Merge the r most similar token pairs per layer (ToMe), with size tracking and proportional attention."""

    def precheck(self, model: ir.Model) -> None:
        refuse_reduced(model, self.name)

    def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
        opts = self.options
        layers = encoder_layers(self.name, opts.layers, mm, "merging")
        tg = TokenRewriter(model, mm, self.name)
        if opts.r == 0:
            self.report.extra["identity"] = "r=0: merge ops are inserted but merge nothing"
        if opts.unmerge:
            self._per_block(tg, layers)
        else:
            chain, token_outputs = reduce_progressively(tg, layers, self._merge(tg), prop=opts.prop_attn)
            restored = finish_outputs(tg, chain, token_outputs, opts.outputs, residual_only=False)
            self.report.extra["outputs"] = {name: opts.outputs for name in restored}
        self.report.extra["token_dim"] = str(tg.token_dim)
        ir.passes.common.TopologicalSortPass()(model)
        return ir.passes.PassResult(model, modified=True)

    def _merge(self, tg: TokenRewriter):  # type: ignore[no-untyped-def]
        opts = self.options

        def make(lm: LayerMap, point: ir.Value, sizes: ir.Value, dim: TokenDim) -> Reduction:
            metric = tg.keys_metric(lm)
            node = tg.insert_op(
                TOKEN_MERGE,
                [point, metric, sizes],
                {"r": opts.r, "protect": opts.protect},
                f"merge_l{lm.index}",
            )
            new_dim: TokenDim = (
                merged_count(dim, opts.r, opts.protect) if isinstance(dim, int) else f"{dim} - {opts.r}"
            )
            merges = merge_limit(dim, opts.r, opts.protect) if isinstance(dim, int) else opts.r
            self.report.note_site(
                layer=lm.index, scope=lm.scope, tokens_in=str(dim), tokens_out=str(new_dim), merged=merges
            )
            return Reduction(point, node.outputs[0], node.outputs[1], node.outputs[2], new_dim)

        return make

    def _per_block(self, tg: TokenRewriter, layers: list[LayerMap]) -> None:
        opts = self.options
        blocks = []
        for lm in layers:
            x, y = tg.value(lm.input), tg.value(lm.output)
            blocks.append((lm, x, y, tg.downstream(x) & tg.upstream(y), y.shape))
        sizes = tg.initial_sizes(blocks[0][1])
        dim = tg.token_dim
        restored: dict[ir.Value, ir.Value] = {}  # a block's output → its full-length replacement
        for lm, x, y, segment, y_shape in blocks:
            x = restored.get(x, x)
            node = tg.insert_op(
                TOKEN_MERGE, [x, x, sizes], {"r": opts.r, "protect": opts.protect}, f"merge_l{lm.index}"
            )
            new_dim: TokenDim = (
                merged_count(dim, opts.r, opts.protect) if isinstance(dim, int) else f"{dim} - {opts.r}"
            )
            red = Reduction(x, node.outputs[0], node.outputs[1], node.outputs[2], new_dim)
            annotate_reduction(red, x, dim)
            outside = [(u.node, u.idx) for u in y.uses()]
            is_output = any(o is y for o in tg.graph.outputs)
            tg.rewire_segment(segment, red, opts.prop_attn)
            delta = tg.op("Sub", [y, red.tokens])
            spread = tg.insert_op(TOKEN_RESTORE, [delta, red.assign, x], {}, f"unmerge_l{lm.index}").outputs[
                0
            ]
            y_full = tg.op("Add", [x, spread])
            y_full.shape = y_shape
            if y.dtype is not None:
                y_full.dtype = y.dtype
            for user, idx in outside:
                user.replace_input_with(idx, y_full)
            if is_output:
                tg.replace_output(y, y_full)
            restored[y] = y_full
            self.report.note_site(
                layer=lm.index, scope=lm.scope, tokens_in=str(dim), tokens_out=str(new_dim), mode="unmerge"
            )
