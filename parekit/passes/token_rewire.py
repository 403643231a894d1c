"""Rewiring a graph around token-axis reductions (shared by ``token-prune`` and ``token-merge``; not a pass).

Reducing tokens mid-graph changes the length of the token axis for everything downstream. Exported
graphs do not derive that length from the tensor they reshape: they read it from the *graph input*
(``Shape(attention_mask)``), bake it as a constant (ViT: ``[-1, 197, 12, 64]``), share shape subgraphs
between layers, and build the attention mask and the output pooling from the full-length mask. This
module makes a reduced region consistent again::

    layer k ─► m_k ──► TokenOp ──► x_k ─► (nodes downstream of m_k: segment k)
                          │ sizes_k, assign_k
    segment-k node inputs that come from outside the segment are rewired:
      m_k                               → x_k (the reduced tokens)
      Reshape target (constant/computed)→ a constant copying batch/token dims from the data (0)
      attention mask (Add before Softmax,
      or Attention's attn_mask)         → Where(sizes_k > 0, log sizes_k | 0, -inf)  [B, 1, 1, M]
      anything derived from a graph input
      with a token axis (pooling mask,
      shape subgraphs)                  → a clone of its subgraph with attention_mask := sizes_k
                                          (so mean pooling weighs each token by its size) and other
                                          token inputs replaced by a same-shape stand-in (Shape-only)
      anything else with a token axis   → refused, naming the node

Segments are computed on the original graph: segment ``k`` is the set of nodes that depend on the
``k``-th reduction point (points are nested: later layers depend on earlier ones). The per-block form
(``unmerge``) uses one disjoint segment per block instead, restored to full length at the block's end.

Value shapes in a segment get the reduced token count (an int when the model's token count is static,
else an expression of the original symbol, so FLOP estimates stay meaningful).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx_ir as ir

from parekit.analysis.modelmap import LayerMap, ModelMap
from parekit.errors import OptionError, PassNotApplicableError
from parekit.ops.token_restore import TOKEN_RESTORE
from parekit.passes.token_graph import Reduction, TokenDim, TokenGraph, refuse_reduced, same_dim

__all__ = [
    "Reduction",
    "TokenDim",
    "TokenRewriter",
    "annotate_reduction",
    "encoder_layers",
    "finish_outputs",
    "reduce_progressively",
    "refuse_reduced",
]

logger = logging.getLogger(__name__)

_SHAPE_OPS = frozenset({"Shape", "Size"})


class TokenRewriter(TokenGraph):
    """A :class:`TokenGraph` that also rewires the segments downstream of reductions."""

    def rewire_segment(
        self, nodes: Iterable[ir.Node], red: Reduction, prop: bool, sizes_for_mask: ir.Value | None = None
    ) -> None:
        """Makes the original ``nodes`` (one segment) consume ``red``'s tokens and token-dependent side values.

        Args:
            nodes: the segment's original nodes (all consuming the reduced resolution).
            red: the reduction feeding the segment.
            prop: proportional attention (``log size`` added to attention logits).
            sizes_for_mask: sizes the attention mask is built from (defaults to ``red.sizes``).
        """
        segment = set(nodes)
        sizes = red.sizes if sizes_for_mask is None else sizes_for_mask
        squares: set[ir.Node] = set()
        mask_slots = self._mask_slots(segment, squares)
        clones: dict[ir.Value, ir.Value] = {}
        reshapes: list[tuple[ir.Node, ir.Value]] = []
        for node in list(segment):
            for i, v in enumerate(node.inputs):
                if v is None:
                    continue
                if v is red.point:
                    node.replace_input_with(i, red.tokens)
                    continue
                producer = v.producer()
                if producer is not None and producer in segment:
                    continue
                if (node, i) in mask_slots:
                    mask = self.additive_mask(sizes, prop, like=mask_slots[(node, i)], square=node in squares)
                    node.replace_input_with(i, mask)
                elif node.op_type == "Reshape" and i == 1:
                    reshapes.append((node, self._reshape_target(node)))
                elif v.const_value is not None or (producer is not None and producer.op_type == "Constant"):
                    continue
                elif self._token_inputs_in_cone(v):
                    node.replace_input_with(i, self._clone_cone(v, red, clones))
                elif v.shape is not None and any(same_dim(d, self.token_dim) for d in v.shape):
                    raise self.refuse(
                        f"node {node.name!r} ({node.op_type}) reads {v.name!r}, a full-length value from "
                        "before the reduction point; only the residual stream may cross it"
                    )
        for node, target in reshapes:
            node.replace_input_with(1, target)
        for node in segment:
            for out in node.outputs:
                _retarget_shape(out, self.token_dim, red.dim)

    def restore(self, value: ir.Value, chain: Sequence[Reduction]) -> ir.Value:
        """Full-length version of a reduced residual ``value``, through every reduction in ``chain`` (last first)."""
        full = value
        for red in reversed(chain):
            node = self.insert_op(
                TOKEN_RESTORE, [full, red.assign, red.point], {}, tag=f"restore_{red.point.name}"
            )
            full = node.outputs[0]
        return full

    def replace_output(self, old: ir.Value, new: ir.Value) -> None:
        """Makes ``new`` the graph output that ``old`` was, under ``old``'s name and shape."""
        name, shape = old.name, old.shape
        old.name = f"{name}.reduced"
        new.name = name
        new.shape = shape
        for i, out in enumerate(self.graph.outputs):
            if out is old:
                self.graph.outputs[i] = new

    def _mask_slots(
        self, segment: set[ir.Node], squares: set[ir.Node]
    ) -> dict[tuple[ir.Node, int], ir.Value]:
        """Attention-mask input slots of the segment's attentions → a value of the logits' type.

        ``Attention`` nodes (which need a ``[B, 1, M, M]`` mask) are added to ``squares``.
        """
        slots: dict[tuple[ir.Node, int], ir.Value] = {}
        for lm in self.mm.layers:
            att = lm.attention
            if att.form == "attention-op":
                node = self._node(att.nodes[0])
                if node not in segment:
                    continue
                if len(node.inputs) < 4 or node.inputs[3] is None:
                    inputs = list(node.inputs) + [None] * (4 - len(node.inputs))
                    raise self.refuse(
                        f"layer {lm.index}: Attention node {node.name!r} has no mask input ({len(inputs)})"
                    )
                slots[(node, 3)] = node.inputs[0]  # type: ignore[assignment]
                squares.add(node)
                continue
            if att.probs is None:
                continue
            softmax = self.value(att.probs).producer()
            if softmax is None or softmax not in segment:
                continue
            logits = softmax.inputs[0]
            add = logits.producer() if logits is not None else None
            if add is None or add.op_type != "Add":
                raise self.refuse(f"layer {lm.index}: no mask Add before Softmax {softmax.name!r}")
            for i, v in enumerate(add.inputs):
                p = v.producer() if v is not None else None
                other = add.inputs[1 - i]
                if v is not None and other is not None and (p is None or p not in segment):
                    slots[(add, i)] = other
        return slots

    def _reshape_target(self, node: ir.Node) -> ir.Value:
        data, out = node.inputs[0], node.outputs[0]
        if data is None or data.shape is None or out.shape is None:
            raise self.refuse(
                f"Reshape {node.name!r} in the reduced region has no known shapes to rewrite its target"
            )
        # Copy batch/token dims from the data's runtime shape; a literal 0 ("copy") would be right for
        # Reshape but ONNX Runtime's shape propagation reads it as a 0-sized dim further down.
        shape = None
        parts: list[ir.Value] = []
        inferred = 0
        for i, d in enumerate(out.shape):
            if isinstance(d, int) and not same_dim(d, self.token_dim):
                parts.append(self.const(np.array([d], dtype=np.int64), name="dim"))
            elif i < len(data.shape) and d is not None and str(d) != "None" and same_dim(data.shape[i], d):
                shape = shape or self.op("Shape", [data])
                parts.append(self.op("Gather", [shape, self.const(np.array([i], dtype=np.int64))], axis=0))
            else:
                inferred += 1
                parts.append(self.const(np.array([-1], dtype=np.int64), name="dim"))
        if inferred > 1:
            raise self.refuse(
                f"Reshape {node.name!r}: cannot express target {list(out.shape)} from input {list(data.shape)}"
            )
        return self.op("Concat", parts, axis=0)

    def _token_inputs(self) -> dict[ir.Value, str]:
        out: dict[ir.Value, str] = {}
        for v in self.graph.inputs:
            if (
                v.shape is not None
                and len(v.shape) >= 2
                and same_dim(v.shape[1], self.token_dim)
                and not isinstance(self.token_dim, int)
            ):
                out[v] = "mask" if v.name == self.mm.inputs.get("attention_mask") else "other"
        return out

    def _token_inputs_in_cone(self, v: ir.Value) -> bool:
        inputs = self._token_inputs()
        if not inputs:
            return False
        return any(i in inputs for node in self.upstream(v) for i in node.inputs if i is not None)

    def _clone_cone(self, v: ir.Value, red: Reduction, clones: dict[ir.Value, ir.Value]) -> ir.Value:
        if v in clones:
            return clones[v]
        inputs = self._token_inputs()
        if v in inputs:
            stand_in = self.op("Cast", [red.sizes], to=v.dtype or ir.DataType.INT64)
            if inputs[v] == "other":
                users = [u.node.op_type for u in v.uses()]
                if any(t not in _SHAPE_OPS for t in users):
                    raise self.refuse(
                        f"graph input {v.name!r} is read for its values after the reduction point ({users})"
                    )
            clones[v] = stand_in
            return stand_in
        producer = v.producer()
        if producer is None or not self._token_inputs_in_cone(v):
            return v
        new_inputs = [None if i is None else self._clone_cone(i, red, clones) for i in producer.inputs]
        attrs = {a.name: a.value for a in producer.attributes.values()}
        clone = self.node(producer.op_type, new_inputs, len(producer.outputs), producer.domain, **attrs)
        for old, new in zip(producer.outputs, clone.outputs, strict=True):
            if old.dtype is not None:
                new.dtype = old.dtype
            clones[old] = new
        return clones[v]


def _retarget_shape(value: ir.Value, old: TokenDim, new: TokenDim) -> None:
    if value.shape is None:
        return
    dims = [new if same_dim(d, old) else d for d in value.shape]
    value.shape = ir.Shape(dims)


def encoder_layers(
    pass_name: str, requested: tuple[int, ...] | None, mm: ModelMap, verb: str
) -> list[LayerMap]:
    """The layers named by a ``layers`` option (default: all), validated, ascending; refuses decoders.

    Args:
        pass_name: the pass, for messages.
        requested: the ``layers`` option.
        mm: the model's structure map.
        verb: what the pass does to tokens (``pruning``, ``merging``), for the refusal.
    """
    if mm.kind != "encoder":
        raise PassNotApplicableError(
            f"{pass_name}: the model is a {mm.kind}: {verb} tokens would change the token axis its KV cache "
            "and causal mask index",
            note=f"{pass_name} applies to encoders (BERT, ViT); for decoders see kv-window/kv-evict",
        )
    if requested is None:
        return list(mm.layers)
    if not requested:
        raise OptionError(f"{pass_name}: option 'layers' is empty; omit it to use every layer")
    return list(mm.select_layers(requested, pass_name))


def reduce_progressively(
    tg: TokenRewriter,
    layers: Sequence[LayerMap],
    make: Callable[[LayerMap, ir.Value, ir.Value, TokenDim], Reduction],
    prop: bool,
) -> tuple[list[Reduction], list[ir.Value]]:
    """Reduces tokens between attention and MLP of each of ``layers`` (in order), for the rest of the model.

    Args:
        tg: the model's :class:`TokenGraph`.
        layers: the reducing layers, ascending.
        make: ``(layer, point, sizes, dim) -> Reduction``: inserts the token op at ``point``.
        prop: proportional attention in the reduced segments.

    Returns:
        The reductions in order, and the graph outputs that carry the token axis (to restore or shorten).
    """
    points = [tg.mid_point(lm) for lm in layers]
    downs = [tg.downstream(p) for p in points]
    for k in range(1, len(points)):
        producer = points[k].producer()
        if producer is None or producer not in downs[k - 1]:
            raise tg.refuse(f"reduction point {points[k].name!r} does not follow {points[k - 1].name!r}")
    token_outputs = _token_outputs(tg, downs[0])
    segments = [downs[k] - (downs[k + 1] if k + 1 < len(downs) else set()) for k in range(len(downs))]
    sizes = tg.initial_sizes(points[0])
    dim = tg.token_dim
    chain: list[Reduction] = []
    for lm, point in zip(layers, points, strict=True):
        red = make(lm, point, sizes, dim)
        annotate_reduction(red, point, dim)
        chain.append(red)
        sizes, dim = red.sizes, red.dim
    for segment, red in zip(segments, chain, strict=True):
        tg.rewire_segment(segment, red, prop)
    return chain, token_outputs


def _token_outputs(tg: TokenRewriter, region: set[ir.Node]) -> list[ir.Value]:
    return [
        o
        for o in tg.graph.outputs
        if o.producer() in region and o.shape is not None and any(same_dim(d, tg.token_dim) for d in o.shape)
    ]


def annotate_reduction(red: Reduction, point: ir.Value, prev: TokenDim) -> None:
    if point.shape is not None:
        batch, _, hidden = point.shape
        red.tokens.shape = ir.Shape([batch, red.dim, hidden])
        red.sizes.shape = ir.Shape([batch, red.dim])
        red.assign.shape = ir.Shape([batch, prev, red.dim])
    for v in (red.tokens, red.sizes, red.assign):
        if point.dtype is not None:
            v.dtype = point.dtype


def finish_outputs(
    tg: TokenRewriter,
    chain: Sequence[Reduction],
    token_outputs: Sequence[ir.Value],
    mode: str,
    residual_only: bool,
) -> list[str]:
    """Restores (``mode="restore"``) or leaves short (``"short"``) the outputs that carry the token axis.

    Args:
        tg: the model's :class:`TokenGraph`.
        chain: the reductions, in order.
        token_outputs: graph outputs with a token axis downstream of the first reduction.
        mode: ``restore`` or ``short``.
        residual_only: only residual-stream outputs can be restored (pruning: dropped tokens keep the
            residual value they had when pruned).

    Returns:
        Names of the outputs handled.
    """
    done = []
    residual = {lm.output for lm in tg.mm.layers} | {tg.mm.final_output}
    for out in token_outputs:
        if mode == "short":
            done.append(out.name or "")
            continue
        if (
            out.shape is None
            or len(out.shape) != 3
            or chain[0].point.shape is None
            or out.shape[2] != chain[0].point.shape[2]
        ):
            raise tg.refuse(
                f"output {out.name!r} carries the token axis but is not [batch, tokens, hidden]; use outputs=short"
            )
        if residual_only and out.name not in residual:
            raise tg.refuse(
                f"output {out.name!r} carries the token axis but is not the residual stream, so pruned tokens "
                "have no value there; use outputs=short to accept a shorter output"
            )
        name = out.name or ""
        tg.replace_output(out, tg.restore(out, chain))
        done.append(name)
    return done
