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
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from parekit.analysis.modelmap import LayerMap, ModelMap
from parekit.errors import PassNotApplicableError
from parekit.ops.token_merge import TOKEN_MERGE
from parekit.ops.token_prune import TOKEN_PRUNE
from parekit.ops.token_restore import TOKEN_RESTORE

__all__ = [
    "Reduction",
    "TokenDim",
    "TokenGraph",
    "annotate_reduction",
    "finish_outputs",
    "reduce_progressively",
    "refuse_reduced",
]

logger = logging.getLogger(__name__)

TokenDim = int | str
"""A token count: an int, or a symbolic expression of the model's own sequence symbol."""

_SHAPE_OPS = frozenset({"Shape", "Size"})


@dataclass
class Reduction:
    """One reduction point and what the token op produced there.

    Attributes:
        point: residual value (previous resolution) that was reduced.
        tokens: reduced residual ``[B, M, C]``.
        sizes: token sizes ``[B, M]``.
        assign: assignment ``[B, N_prev, M]``.
        dim: ``M`` (int or expression).
    """

    point: ir.Value
    tokens: ir.Value
    sizes: ir.Value
    assign: ir.Value
    dim: TokenDim


class TokenGraph:
    """Helpers over one model for inserting token reductions and rewiring what they change.

    Args:
        model: the model (edited in place).
        mm: its structure map.
        pass_name: name used in refusals.
    """

    def __init__(self, model: ir.Model, mm: ModelMap, pass_name: str) -> None:
        self.model, self.mm, self.pass_name = model, mm, pass_name
        self.graph = model.graph
        self.values = {v.name: v for v in _all_values(model.graph)}
        emb = self.value(mm.embedding_output)
        if emb.shape is None or len(emb.shape) != 3:
            raise self.refuse(f"the residual stream {emb.name!r} has no [batch, tokens, hidden] shape")
        tok = emb.shape[1]
        self.token_dim: TokenDim = tok if isinstance(tok, int) else str(tok.value)
        self.dtype = emb.dtype or ir.DataType.FLOAT
        self._masks: dict[tuple[int, bool, bool], ir.Value] = {}
        self._counter = 0

    # -- small builders ----------------------------------------------------------------------------

    def refuse(self, reason: str) -> PassNotApplicableError:
        return PassNotApplicableError(f"{self.pass_name} cannot apply: {reason}")

    def value(self, name: str | None) -> ir.Value:
        if name is None or name not in self.values:
            raise self.refuse(f"value {name!r} from the structure map is not in the graph")
        return self.values[name]

    def node(
        self,
        op_type: str,
        inputs: Sequence[ir.Value | None],
        num_outputs: int = 1,
        domain: str = "",
        **attrs: object,
    ) -> ir.Node:
        self._counter += 1
        node = ir.node(
            op_type,
            list(inputs),
            attributes=attrs,
            domain=domain,
            num_outputs=num_outputs,
            name=f"{self.pass_name}/{op_type}_{self._counter}",
        )
        for i, out in enumerate(node.outputs):
            out.name = f"{self.pass_name}/{op_type}_{self._counter}_{i}"
        self.graph.append(node)
        return node

    def op(self, op_type: str, inputs: Sequence[ir.Value | None], **attrs: object) -> ir.Value:
        return self.node(op_type, inputs, **attrs).outputs[0]

    def const(self, array: np.ndarray | Sequence[int] | float, name: str = "const") -> ir.Value:
        self._counter += 1
        tensor = ir.tensor(np.asarray(array), name=f"{self.pass_name}/{name}_{self._counter}")
        value = ir.Value(
            name=tensor.name,
            const_value=tensor,
            shape=ir.Shape(tensor.shape),
            type=ir.TensorType(tensor.dtype),
        )
        self.graph.register_initializer(value)
        return value

    def insert_op(
        self, opdef: object, inputs: Sequence[ir.Value], attributes: dict[str, object], tag: str
    ) -> ir.Node:
        """Inserts a parekit op node (``opdef.make_node``) and names its outputs."""
        self._counter += 1
        node = opdef.make_node(self.model, inputs, attributes=attributes, name=f"{self.pass_name}/{tag}")  # type: ignore[attr-defined]
        for i, out in enumerate(node.outputs):
            out.name = f"{self.pass_name}/{tag}_{i}"
        self.graph.append(node)
        return node

    # -- facts about the model ---------------------------------------------------------------------

    def initial_sizes(self, tokens: ir.Value) -> ir.Value:
        """``[B, N]`` sizes of the full-length tokens: the attention mask (as float), or ones."""
        mask_name = self.mm.inputs.get("attention_mask")
        if mask_name is not None:
            mask = self.value(mask_name)
            if mask.shape is not None and len(mask.shape) == 2 and _same_dim(mask.shape[1], self.token_dim):
                return self.op("Cast", [mask], to=self.dtype)
        bn = self.op("Slice", [self.op("Shape", [tokens]), self.const([0]), self.const([2])])
        ones = self.op("ConstantOfShape", [bn], value=ir.tensor(np.ones(1, dtype=np.float32)))
        return self.op("CastLike", [ones, tokens])

    def mid_point(self, lm: LayerMap) -> ir.Value:
        """The residual value between the block's attention and its MLP (consumed by MLP and residual Add)."""
        if lm.mlp is None or lm.mlp.down is None:
            raise self.refuse(f"layer {lm.index} has no MLP to reduce tokens before")
        out = self._node(lm.mlp.down).outputs[0]
        for _ in range(4):  # MatMul → [Add bias] → residual Add
            adds = [u for u in out.uses() if u.node.op_type == "Add"]
            if len(adds) != 1:
                break
            add = adds[0].node
            other = add.inputs[1 - adds[0].idx]
            if other is None:
                break
            producer = other.producer()
            if other.const_value is not None or (producer is not None and producer.op_type == "Constant"):
                out = add.outputs[0]  # the bias
                continue
            return other
        raise self.refuse(f"layer {lm.index}: no residual Add found after the MLP output {lm.mlp.down!r}")

    def keys_metric(self, lm: LayerMap) -> ir.Value:
        """The layer's attention keys averaged over heads, ``[B, N, D]`` (ToMe's similarity metric)."""
        att = lm.attention
        node = self._node(att.nodes[0])  # the Q·Kᵀ MatMul, or the Attention node
        if att.form == "decomposed":
            key_t = node.inputs[1]  # Kᵀ: [B, H, D, N]
            if key_t is None:
                raise self.refuse(f"layer {lm.index}: the score MatMul {node.name!r} has no key input")
            key = self.op("Transpose", [key_t], perm=[0, 1, 3, 2])
            return self.op("ReduceMean", [key, self.const([1])], keepdims=0)
        key = node.inputs[1]
        if key is None or key.shape is None or len(key.shape) not in (3, 4):
            raise self.refuse(f"layer {lm.index}: the Attention keys are not [B, H, N, D] or [B, N, H·D]")
        if len(key.shape) == 4:
            return self.op("ReduceMean", [key, self.const([1])], keepdims=0)
        return key

    def attention_scores(self, lm: LayerMap, sizes: ir.Value, source: str) -> ir.Value:
        """``[B, N]`` token importance from the layer's attention: ``cls`` (row 0) or ``mean`` (over real queries)."""
        att = lm.attention
        if att.form == "decomposed" and att.probs is not None:
            probs = self.value(att.probs)
        else:
            probs = self._recompute_probs(lm, sizes, cls_only=source == "cls")
        if source == "cls":
            row = self.op("Gather", [probs, self.const(np.array(0, dtype=np.int64))], axis=2)  # [B, H, N]
            return self.op("ReduceMean", [row, self.const([1])], keepdims=0)
        real = self.op(
            "Cast",
            [self.op("Greater", [sizes, self.op("CastLike", [self.const(np.float32(0)), sizes])])],
            to=self.dtype,
        )
        weighted = self.op("Mul", [probs, self.op("Unsqueeze", [real, self.const([1, 3])])])
        return self.op("ReduceSum", [weighted, self.const([1, 2])], keepdims=0)

    def _recompute_probs(self, lm: LayerMap, sizes: ir.Value, cls_only: bool) -> ir.Value:
        node = self._node(lm.attention.nodes[0])
        q, k = node.inputs[0], node.inputs[1]
        if (
            q is None
            or k is None
            or q.shape is None
            or len(q.shape) != 4
            or k.shape is None
            or len(k.shape) != 4
        ):
            raise self.refuse(f"layer {lm.index}: Attention inputs are not [B, H, S, D]")
        head_dim = k.shape[3]
        scale_attr = node.attributes.get("scale")
        if scale_attr is not None:
            scale = float(scale_attr.as_float())
        elif isinstance(head_dim, int):
            scale = 1.0 / float(np.sqrt(head_dim))
        else:
            raise self.refuse(f"layer {lm.index}: unknown head size for the attention scale")
        if cls_only:
            q = self.op("Slice", [q, self.const([0]), self.const([1]), self.const([2])])
        logits = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])])
        logits = self.op("Mul", [logits, self.op("CastLike", [self.const(np.float32(scale)), logits])])
        logits = self.op("Add", [logits, self.additive_mask(sizes, prop=False, like=logits)])
        return self.op("Softmax", [logits], axis=-1)

    def additive_mask(
        self, sizes: ir.Value, prop: bool, like: ir.Value | None = None, square: bool = False
    ) -> ir.Value:
        """``[B, 1, 1, M]``: 0 (or ``log size`` with proportional attention) for real tokens, -inf for padding.

        ``square=True`` expands it to ``[B, 1, M, M]`` (ONNX Runtime's ``Attention`` wants the query dim).
        """
        key = (id(sizes), prop, square)
        cached = self._masks.get(key)
        if cached is not None:
            return cached
        if square:
            flat = self.additive_mask(sizes, prop, like)
            bm = self.op("Shape", [sizes])
            one = self.const(np.array([1], dtype=np.int64))
            m = self.op("Slice", [bm, one, self.const(np.array([2], dtype=np.int64))])
            full = self.op(
                "Concat",
                [self.op("Slice", [bm, self.const(np.array([0], dtype=np.int64)), one]), one, m, m],
                axis=0,
            )
            mask = self.op("Expand", [flat, full])
            self._masks[key] = mask
            return mask
        zero = self.op("CastLike", [self.const(np.float32(0)), sizes])
        real = self.op("Greater", [sizes, zero])
        inner = (
            self.op("Log", [self.op("Max", [sizes, self.op("CastLike", [self.const(np.float32(1)), sizes])])])
            if prop
            else zero
        )
        neg = self.op("CastLike", [self.const(np.float32(-np.inf)), sizes])
        mask = self.op("Unsqueeze", [self.op("Where", [real, inner, neg]), self.const([1, 2])])
        if like is not None and like.dtype is not None and like.dtype != sizes.dtype:
            mask = self.op("Cast", [mask], to=like.dtype)  # dtype only: never a data edge to `like`
        self._masks[key] = mask
        return mask

    # -- segments ----------------------------------------------------------------------------------

    def downstream(self, start: ir.Value) -> set[ir.Node]:
        """Nodes that depend on ``start`` (in the current graph)."""
        seen: set[ir.Node] = set()
        stack = [use.node for use in start.uses()]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            for out in node.outputs:
                stack.extend(use.node for use in out.uses())
        return seen

    def upstream(self, end: ir.Value) -> set[ir.Node]:
        """Nodes ``end`` depends on."""
        seen: set[ir.Node] = set()
        stack = [end.producer()]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            stack.extend(v.producer() for v in node.inputs if v is not None)
        return seen

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
                elif v.shape is not None and any(_same_dim(d, self.token_dim) for d in v.shape):
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

    # -- internals ---------------------------------------------------------------------------------

    def _node(self, name: str) -> ir.Node:
        for node in self.graph:
            if node.name == name:
                return node
        raise self.refuse(f"node {name!r} from the structure map is not in the graph")

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
            if isinstance(d, int) and not _same_dim(d, self.token_dim):
                parts.append(self.const(np.array([d], dtype=np.int64), name="dim"))
            elif i < len(data.shape) and d is not None and str(d) != "None" and _same_dim(data.shape[i], d):
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
                and _same_dim(v.shape[1], self.token_dim)
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
            new.dtype = old.dtype
            clones[old] = new
        return clones[v]


def _all_values(graph: ir.Graph) -> Iterable[ir.Value]:
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs


def _same_dim(d: object, token: TokenDim) -> bool:
    if isinstance(token, int):
        return isinstance(d, int) and d == token
    return isinstance(d, ir.SymbolicDim) and d.value == token or d == token


def _retarget_shape(value: ir.Value, old: TokenDim, new: TokenDim) -> None:
    if value.shape is None:
        return
    dims = [new if _same_dim(d, old) else d for d in value.shape]
    value.shape = ir.Shape(dims)


def expression_dim(prev: TokenDim, formula: Callable[[int], int], text: Callable[[str], str]) -> TokenDim:
    """The reduced count: ``formula(prev)`` when ``prev`` is an int, else the expression ``text(prev)``."""
    return formula(prev) if isinstance(prev, int) else text(prev)


def refuse_reduced(model: ir.Model, pass_name: str) -> None:
    """Raises if the model's tokens are already reduced (token passes do not stack)."""
    reduced = [n.name for n in model.graph if TOKEN_PRUNE.matches(n) or TOKEN_MERGE.matches(n)]
    if reduced:
        raise PassNotApplicableError(
            f"{pass_name}: the model's tokens are already reduced by {reduced[0]!r}; token passes do not stack",
            note="use one token-prune or token-merge with several layers",
        )


def reduce_progressively(
    tg: TokenGraph,
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


def _token_outputs(tg: TokenGraph, region: set[ir.Node]) -> list[ir.Value]:
    return [
        o
        for o in tg.graph.outputs
        if o.producer() in region and o.shape is not None and any(_same_dim(d, tg.token_dim) for d in o.shape)
    ]


def annotate_reduction(red: Reduction, point: ir.Value, prev: TokenDim) -> None:
    if point.shape is not None:
        batch, _, hidden = point.shape
        red.tokens.shape = ir.Shape([batch, red.dim, hidden])
        red.sizes.shape = ir.Shape([batch, red.dim])
        red.assign.shape = ir.Shape([batch, prev, red.dim])
    for v in (red.tokens, red.sizes, red.assign):
        v.dtype = point.dtype


def finish_outputs(
    tg: TokenGraph,
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
