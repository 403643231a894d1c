"""The structure map: where the transformer is in a graph.

Every pass needs the same facts (residual stream between layers, each layer's attention, KV cache
values, norms, MLP, head counts, the symbolic batch/sequence dims). :func:`parekit.analysis.discover`
computes them once from the graph's own patterns and exporter metadata; passes read them from here.

Everything refers to graph objects by *name* (value names, node names): the map is a snapshot of a
model at one point of the pipeline and is recomputed after every pass that changes the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal

from parekit.errors import OptionError

_INTERNAL = {"inspect": False}
"""Field metadata: a fact passes read that ``parekit inspect`` does not print (its output stays stable)."""

ModelKind = Literal["encoder", "decoder"]
AttentionForm = Literal["decomposed", "attention-op"]


@dataclass(frozen=True)
class AttentionSite:
    """One layer's self-attention.

    Attributes:
        form: ``decomposed`` (MatMul → [Add mask] → Softmax → MatMul) or ``attention-op`` (ONNX
            ``Attention``, opset 23).
        nodes: names of the nodes that compute scores/probabilities/context (Softmax and the two
            MatMuls, or the one ``Attention`` node).
        query, key, value: per-head tensors entering the score computation, ``[B, H, S, D]`` (for
            decoders ``key``/``value`` are the full cache after concatenation with the past).
        scores: attention logits before Softmax (mask included) where the graph has them.
        probs: Softmax output where the graph has it (``None`` for an ``Attention`` op).
        context: attention output before the output projection.
        past_key, past_value: graph inputs carrying this layer's KV cache (decoders with a cache).
        present_key, present_value: graph outputs returning the updated cache.
        key_concat, value_concat: the ``Concat`` nodes that append new K/V to the past.
        mask_select: the ``Where(bool mask, 0, -inf)`` node whose output the scores ``Add`` adds
            (decomposed form; ``None`` when the mask is built otherwise). Not shown by ``inspect``.
    """

    form: AttentionForm
    nodes: tuple[str, ...]
    query: str | None = None
    key: str | None = None
    value: str | None = None
    scores: str | None = None
    probs: str | None = None
    context: str | None = None
    past_key: str | None = None
    past_value: str | None = None
    present_key: str | None = None
    present_value: str | None = None
    key_concat: str | None = None
    value_concat: str | None = None
    mask_select: str | None = field(default=None, metadata=_INTERNAL)


@dataclass(frozen=True)
class MlpSite:
    """One layer's feed-forward block: projection MatMul node names (``gate`` for gated MLPs)."""

    up: tuple[str, ...]
    down: str | None
    gate: str | None = None
    activation: str | None = None


@dataclass(frozen=True)
class LayerMap:
    """One transformer block.

    Attributes:
        index: 0-based layer index in execution order.
        scope: module path of the block (e.g. ``encoder.layer.3``) or a synthesized name.
        input: residual-stream value entering the block (``[B, S, hidden]``).
        output: residual-stream value leaving the block.
        nodes: names of all nodes belonging to the block.
        attention: the block's self-attention.
        norms: names of the normalization nodes of the block, in order.
        mlp: the feed-forward block, where found.
        mid: the residual-stream value between attention and MLP (the other operand of the residual
            ``Add`` after the MLP), where found. Not shown by ``inspect``.
    """

    index: int
    scope: str
    input: str
    output: str
    nodes: tuple[str, ...]
    attention: AttentionSite
    norms: tuple[str, ...] = ()
    mlp: MlpSite | None = None
    mid: str | None = field(default=None, metadata=_INTERNAL)


@dataclass(frozen=True)
class ModelMap:
    """Transformer structure of one model.

    Attributes:
        kind: ``encoder`` (bidirectional, e.g. BERT, ViT) or ``decoder`` (causal, e.g. GPT-2, Llama).
        family: best guess at the architecture family (``bert``, ``vit``, ``gpt2``, ``llama``,
            ``unknown``), for display only; passes must not branch on it.
        opset: default-domain opset of the model.
        hidden_size, num_heads, num_kv_heads, head_dim: attention geometry.
        layers: the blocks, in execution order.
        embedding_output: residual-stream value entering the first block.
        final_output: residual-stream value leaving the last block.
        head_nodes: nodes after the last block (final norm, pooler, LM head).
        batch_dim, seq_dim: symbolic names of the batch and sequence dimensions (``None`` if static).
        inputs: roles of graph inputs: ``input_ids``, ``attention_mask``, ``position_ids``,
            ``pixel_values`` → input name.
        has_kv_cache: the model takes past KV as inputs and returns present KV as outputs.
    """

    kind: ModelKind
    family: str
    opset: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    layers: tuple[LayerMap, ...]
    embedding_output: str
    final_output: str
    head_nodes: tuple[str, ...] = ()
    batch_dim: str | None = None
    seq_dim: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    has_kv_cache: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def select_layers(self, requested: Sequence[int], owner: str, option: str = "layers") -> tuple[LayerMap, ...]:
        """The layers at ``requested`` indices, ascending; the one check of a layer-list option.

        Args:
            requested: 0-based layer indices (an option's value).
            owner: the pass (or command) whose option it is, for the message.
            option: the option's name, for the message.

        Raises:
            OptionError: an index is out of range or repeated.
        """
        n = self.num_layers
        bad = [i for i in requested if not 0 <= i < n]
        if bad:
            raise OptionError(f"{owner}: layer(s) {bad} out of range: the model has {n} layers (0..{n - 1})")
        if len(set(requested)) != len(requested):
            raise OptionError(f"{owner}: option '{option}' repeats a layer: {list(requested)}")
        return tuple(self.layers[i] for i in sorted(requested))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``parekit inspect --json`` prints; internal facts left out)."""
        d = _shown(self)
        d["num_layers"] = self.num_layers
        return d


def _shown(obj: Any) -> Any:
    """``dataclasses.asdict`` without the fields marked internal."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _shown(getattr(obj, f.name)) for f in fields(obj) if f.metadata.get("inspect", True)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_shown(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _shown(v) for k, v in obj.items()}
    return obj
