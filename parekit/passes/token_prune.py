"""Prune the least-attended tokens inside encoder blocks (ATS/EViT-style top-k, optional fused token).

    attention ─► probs ─► scores (CLS row, or mean attention received)
        m ─► parekit::TokenPrune{keep, fuse} ─► MLP ─► …   (every later layer runs on the kept tokens)

In each chosen layer, after attention, the first ``protect`` tokens (CLS) and the ``keep`` fraction of the
other tokens with the highest scores are kept, in order; padding goes first. ``fuse=true`` appends one
token, the score-weighted mean of the pruned ones (EViT). Later layers mask by token size and mean pooling
weighs the fused token by the number of tokens it stands for. Outputs with a token axis are restored to
full length (``outputs=restore``: pruned tokens keep the residual value they had when pruned) or left
short. Identity configuration: ``keep=1`` (the rewired graph keeps every token; matches within 1e-5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import onnx_ir as ir

from parekit.analysis.modelmap import LayerMap, ModelMap
from parekit.errors import OptionError
from parekit.ops.token_prune import TOKEN_PRUNE, pruned_count
from parekit.passes.base import Pass
from parekit.passes.registry import register
from parekit.passes.token_rewire import (
    Reduction,
    TokenDim,
    TokenRewriter,
    encoder_layers,
    finish_outputs,
    reduce_progressively,
    refuse_reduced,
)

__all__ = ["TokenPruneOptions"]

logger = logging.getLogger(__name__)

_Q = 100000  # fixed-point scale for symbolic token counts (shape expressions take integers only)


@dataclass(frozen=True)
class TokenPruneOptions:
    keep: float = field(
        default=0.5,
        metadata={
            "help": "fraction of the non-protected tokens kept at each chosen layer",
            "min": 0.0,
            "max": 1.0,
        },
    )
    layers: tuple[int, ...] | None = field(
        default=None, metadata={"help": "layers that prune (0-based); default: every layer", "min": 0}
    )
    score: Literal["cls", "mean"] = field(
        default="cls",
        metadata={"help": "token importance: attention from the CLS token, or mean attention received"},
    )
    fuse: bool = field(
        default=False, metadata={"help": "append the score-weighted mean of the pruned tokens (EViT)"}
    )
    protect: int = field(default=1, metadata={"help": "leading tokens always kept (1 = CLS)", "min": 0})
    outputs: Literal["restore", "short"] = field(
        default="restore",
        metadata={
            "help": "outputs with a token axis: restore full length (pruned tokens keep their last value) or keep them short"
        },
    )

    def validate(self) -> None:
        if self.keep <= 0.0:
            raise OptionError("token-prune: option 'keep' must be above 0 (keep=1 keeps every token)")
        if self.score == "cls" and self.protect < 1:
            raise OptionError("token-prune: score=cls needs the CLS token kept (protect ≥ 1); use score=mean")


@register("token-prune", options=TokenPruneOptions)
class TokenPrunePass(Pass[TokenPruneOptions]):
    """Keep the top `keep` fraction of tokens by attention score in chosen layers (EViT/ATS top-k)."""

    def precheck(self, model: ir.Model) -> None:
        refuse_reduced(model, self.name)

    def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
        opts = self.options
        layers = encoder_layers(self.name, opts.layers, mm, "pruning")
        tg = TokenRewriter(model, mm, self.name)
        if opts.keep >= 1.0:
            self.report.extra["identity"] = "keep=1: prune ops are inserted but keep every token"
        chain, token_outputs = reduce_progressively(tg, layers, self._prune(tg), prop=False)
        restored = finish_outputs(tg, chain, token_outputs, opts.outputs, residual_only=True)
        self.report.extra["outputs"] = {name: opts.outputs for name in restored}
        self.report.extra["token_dim"] = str(tg.token_dim)
        ir.passes.common.TopologicalSortPass()(model)
        return ir.passes.PassResult(model, modified=True)

    def _prune(self, tg: TokenRewriter):  # type: ignore[no-untyped-def]
        opts = self.options
        fuse = int(opts.fuse)
        labels: dict[str, str] = {}  # shape expression → readable formula, for the report

        def make(lm: LayerMap, point: ir.Value, sizes: ir.Value, dim: TokenDim) -> Reduction:
            scores = tg.attention_scores(lm, sizes, opts.score)
            attrs = {"keep": opts.keep, "protect": opts.protect, "fuse": fuse}
            node = tg.insert_op(TOKEN_PRUNE, [point, scores, sizes], attrs, f"prune_l{lm.index}")
            if isinstance(dim, int):
                new_dim: TokenDim = pruned_count(dim, opts.keep, opts.protect, fuse)
            else:
                kq, p = round(opts.keep * _Q), opts.protect
                new_dim = f"{p + fuse} - floor(({_Q // 100} - {kq}*(({dim}) - {p}))/{_Q})"
                labels[new_dim] = f"{p + fuse} + ceil({opts.keep:g}·({labels.get(dim, dim)} - {p}))"
            self.report.note_site(
                layer=lm.index,
                scope=lm.scope,
                tokens_in=labels.get(str(dim), str(dim)),
                tokens_out=labels.get(str(new_dim), str(new_dim)),
                score=opts.score,
            )
            return Reduction(point, node.outputs[0], node.outputs[1], node.outputs[2], new_dim)

        return make
