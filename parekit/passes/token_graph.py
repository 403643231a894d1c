"""Token-reduction sites of an encoder graph: where to reduce, what to score with, how to mask.

:class:`TokenGraph` wraps one model for the token passes (``token-prune``, ``token-merge``; it is not a
pass): small node builders, and the model facts a reduction needs, all read from the structure map and
the graph's own patterns:

* :meth:`TokenGraph.mid_point`: the residual value between a block's attention and its MLP;
* :meth:`TokenGraph.keys_metric`: the layer's keys averaged over heads (ToMe's similarity metric);
* :meth:`TokenGraph.attention_scores`: token importance from the layer's attention (CLS row or mean);
* :meth:`TokenGraph.initial_sizes` / :meth:`TokenGraph.additive_mask`: token sizes and the attention mask
  built from them (``log size`` with proportional attention, ``-inf`` for padding).

:mod:`parekit.passes.token_rewire` extends it with the rewiring of everything downstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from parekit.analysis.modelmap import LayerMap, ModelMap
from parekit.errors import PassNotApplicableError
from parekit.ops.attention_probs import ATTENTION_PROBS
from parekit.ops.token_merge import TOKEN_MERGE
from parekit.ops.token_prune import TOKEN_PRUNE

__all__ = ["Reduction", "TokenDim", "TokenGraph", "refuse_reduced", "same_dim"]

TokenDim = int | str
"""A token count: an int, or a symbolic expression of the model's own sequence symbol."""


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
        **attrs: Any,
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

    def op(self, op_type: str, inputs: Sequence[ir.Value | None], **attrs: Any) -> ir.Value:
        return self.node(op_type, inputs, **attrs).outputs[0]

    def const(self, array: Any, name: str = "const") -> ir.Value:
        self._counter += 1
        data = np.asarray(array)
        tensor = ir.tensor(data, name=f"{self.pass_name}/{name}_{self._counter}")
        value = ir.Value(
            name=tensor.name,
            const_value=tensor,
            shape=ir.Shape(list(data.shape)),
            type=ir.TensorType(tensor.dtype),
        )
        self.graph.register_initializer(value)
        return value

    def insert_op(
        self, opdef: Any, inputs: Sequence[ir.Value], attributes: Mapping[str, Any], tag: str
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
            if mask.shape is not None and len(mask.shape) == 2 and same_dim(mask.shape[1], self.token_dim):
                return self.op("Cast", [mask], to=self.dtype)
        bn = self.op("Slice", [self.op("Shape", [tokens]), self.const([0]), self.const([2])])
        ones = self.op("ConstantOfShape", [bn], value=ir.tensor(np.ones(1, dtype=np.float32)))
        return self.op("CastLike", [ones, tokens])

    def mid_point(self, lm: LayerMap) -> ir.Value:
        """The residual value between the block's attention and its MLP (:attr:`LayerMap.mid`)."""
        if lm.mlp is None or lm.mlp.down is None:
            raise self.refuse(f"layer {lm.index} has no MLP to reduce tokens before")
        if lm.mid is None:
            raise self.refuse(f"layer {lm.index}: no residual Add found after the MLP output {lm.mlp.down!r}")
        return self.value(lm.mid)

    def keys_metric(self, lm: LayerMap) -> ir.Value:
        """The layer's attention keys averaged over heads, ``[B, N, D]`` (ToMe's similarity metric)."""
        att = lm.attention
        node = self._node(att.nodes[0])  # the Q·Kᵀ MatMul, or the Attention node
        if att.form == "decomposed":
            key_t = node.inputs[1]  # Kᵀ: [B, H, D, N]
            if key_t is None:
                raise self.refuse(f"layer {lm.index}: the score MatMul {node.name!r} has no key input")
            keys = self.op("Transpose", [key_t], perm=[0, 1, 3, 2])
            return self.op("ReduceMean", [keys, self.const([1])], keepdims=0)
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
        """The probabilities an ``Attention`` node does not expose: ``parekit::AttentionProbs`` on its Q, K.

        The mask hides padding (tokens of size 0), as the additive mask of the rewired graph does.
        """
        node = self._node(lm.attention.nodes[0])
        q = node.inputs[0] if node.inputs else None
        k = node.inputs[1] if len(node.inputs) > 1 else None
        if q is None or k is None or q.shape is None or len(q.shape) != 4 or k.shape is None or len(k.shape) != 4:
            raise self.refuse(f"layer {lm.index}: Attention inputs are not [B, H, S, D]")
        accepted = ATTENTION_PROBS.inputs[0].dtypes
        if q.dtype not in accepted or k.dtype not in accepted:
            raise self.refuse(f"layer {lm.index}: attention probabilities are computed for float32 Q and K, got {q.dtype}")
        scale_attr = node.attributes.get("scale")
        scale = float(scale_attr.as_float()) if scale_attr is not None else 0.0  # 0: 1/sqrt(head size)
        if cls_only:
            q = self.op("Slice", [q, self.const([0]), self.const([1]), self.const([2])])
        zero = self.op("CastLike", [self.const(np.float32(0)), sizes])
        visible = self.op("Unsqueeze", [self.op("Greater", [sizes, zero]), self.const([1, 2])])  # [B, 1, 1, N]
        probs = self.insert_op(ATTENTION_PROBS, [q, k, visible], {"scale": scale}, f"probs_l{lm.index}")
        return probs.outputs[0]

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

    def _node(self, name: str) -> ir.Node:
        for node in self.graph:
            if node.name == name:
                return node
        raise self.refuse(f"node {name!r} from the structure map is not in the graph")


def _all_values(graph: ir.Graph) -> Iterable[ir.Value]:
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs


def same_dim(d: object, token: object) -> bool:
    """Whether two dims (ints, :class:`onnx_ir.SymbolicDim` or symbol strings) are the same known dim."""
    a = d.value if isinstance(d, ir.SymbolicDim) else d
    b = token.value if isinstance(token, ir.SymbolicDim) else token
    return a is not None and a == b


def refuse_reduced(model: ir.Model, pass_name: str) -> None:
    """Raises if the model's tokens are already reduced (token passes do not stack)."""
    reduced = [n.name for n in model.graph if TOKEN_PRUNE.matches(n) or TOKEN_MERGE.matches(n)]
    if reduced:
        raise PassNotApplicableError(
            f"{pass_name}: the model's tokens are already reduced by {reduced[0]!r}; token passes do not stack",
            note="use one token-prune or token-merge with several layers",
        )
