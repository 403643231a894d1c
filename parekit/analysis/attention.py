"""Attention and KV-cache discovery inside one block.

The attention core is an ONNX ``Attention`` node (opset 23) or a ``Softmax`` between two ``MatMul``\\ s
(opset 18). From it: Q, K, V, scores/probabilities, the boolean mask that becomes the additive one,
the ``Concat`` that appends a graph-input KV cache and the graph output returning it, and the head
geometry read from shapes.
"""

from __future__ import annotations

from collections import Counter

import onnx_ir as ir

from parekit.analysis.graph_walk import (
    LAYOUT_OPS,
    SCORE_PATH_OPS,
    arg,
    consumers,
    is_const,
    need,
    nm,
    out,
    rank,
    static_dim,
    walk_back,
    walk_forward,
)
from parekit.analysis.modelmap import AttentionSite
from parekit.errors import StructureError


def is_attention_softmax(node: ir.Node) -> bool:
    """A ``Softmax`` over 4-D scores that a ``MatMul`` produced (through scale/mask/cast ops)."""
    if node.op_type != "Softmax" or rank(out(node)) != 4:
        return False
    return any(p.op_type == "MatMul" for p in walk_back(arg(node, 0), SCORE_PATH_OPS, limit=6))


def is_core(node: ir.Node) -> bool:
    """An attention core: an ONNX ``Attention`` node or an attention ``Softmax``."""
    return node.op_type == "Attention" or is_attention_softmax(node)


def _score_matmul(softmax: ir.Node) -> ir.Node:
    return next(p for p in walk_back(arg(softmax, 0), SCORE_PATH_OPS, limit=6) if p.op_type == "MatMul")


def _kv_role(value: ir.Value, q_matmul: ir.Node | None, core: ir.Node) -> str | None:
    """``key`` or ``value`` depending on which input of the attention core ``value`` reaches."""
    for node, idx in walk_forward(value, LAYOUT_OPS, limit=10):
        if node is core and core.op_type == "Attention":
            return {1: "key", 2: "value"}.get(idx)
        if q_matmul is not None and node is q_matmul:
            return "key"
        if node.op_type == "MatMul" and core.op_type == "Softmax" and idx == 1:
            first = arg(node, 0)
            producer = first.producer() if first is not None else None
            if producer is not None and producer.op_type in ("Softmax", "Cast", "Where", "Identity"):
                return "value"
    return None


def _mask_select(scores: ir.Value | None) -> str | None:
    """The ``Where(bool mask, 0, -inf)`` node whose output the scores ``Add`` adds, where there is one."""
    add = scores.producer() if scores is not None else None
    if add is None or add.op_type != "Add":
        return None
    for value in add.inputs:
        where = value.producer() if value is not None else None
        if where is None or where.op_type != "Where" or len(where.inputs) != 3:
            continue
        cond = arg(where, 0)
        if cond is not None and cond.dtype == ir.DataType.BOOL:
            return nm(where)
    return None


def attention_site(block: list[ir.Node], graph: ir.Graph) -> tuple[AttentionSite, ir.Node, int, int]:
    """The block's attention site, its core node, and (heads, head_dim) read from shapes.

    Raises:
        StructureError: no or several attention cores, a core with missing inputs, or no head geometry.
    """
    cores = [n for n in block if n.op_type == "Attention"] or [n for n in block if is_attention_softmax(n)]
    if len(cores) != 1:
        found = Counter(n.op_type for n in block if n.op_type in ("Attention", "Softmax", "MatMul"))
        raise StructureError(
            f"block starting at node '{nm(block[0])}': expected one attention core (an ONNX Attention "
            f"node, or MatMul → Softmax → MatMul), found {len(cores)} (ops seen: {dict(found) or 'none'})"
        )
    core = cores[0]
    q_matmul: ir.Node | None = None
    fields: dict[str, str | None] = {}
    heads: int | None
    if core.op_type == "Attention":
        query, key, value = need(core, 0, "query"), need(core, 1, "key"), need(core, 2, "value")
        context = out(core)
        if context is None:
            raise StructureError(f"Attention node '{nm(core)}' has no output")
        fields.update(query=query.name, key=key.name, value=value.name, context=context.name)
        nodes: tuple[str, ...] = (nm(core),)
        heads = int(core.attributes["q_num_heads"].value) if "q_num_heads" in core.attributes else None
        if rank(query) == 3:  # [B, S, H*D] form: heads come from the attribute
            width = static_dim(query, -1)
            head_dim = width // heads if heads and width else None
        else:
            heads = heads or static_dim(query, 1)
            head_dim = static_dim(query, -1)
    else:
        softmax = core
        q_matmul = _score_matmul(softmax)
        probs = softmax.outputs[0]
        pv = next(
            (n for n, idx in walk_forward(probs, frozenset({"Cast", "Where", "Identity", "Dropout"}), 4)
             if n.op_type == "MatMul" and idx == 0),
            None,
        )
        if pv is None or out(pv) is None:
            raise StructureError(f"Softmax '{nm(softmax)}': no MatMul consumes the attention probabilities")
        scores = arg(softmax, 0)
        fields.update(
            query=need(q_matmul, 0, "query").name,
            key=need(q_matmul, 1, "transposed key").name,
            value=need(pv, 1, "value").name,
            scores=scores.name if scores is not None else None,
            probs=probs.name,
            context=pv.outputs[0].name,
            mask_select=_mask_select(scores),
        )
        nodes = (nm(q_matmul), nm(softmax), nm(pv))
        heads = static_dim(pv.inputs[1], 1) or static_dim(probs, 1)
        head_dim = static_dim(pv.inputs[1], -1)
    fields.update(_kv_cache(block, graph, q_matmul, core))
    site = AttentionSite(form="attention-op" if core.op_type == "Attention" else "decomposed", nodes=nodes, **fields)
    if heads is None or head_dim is None:
        raise StructureError(f"attention '{nm(core)}': could not read the head count and head size from shapes")
    return site, core, heads, head_dim


def _kv_cache(block: list[ir.Node], graph: ir.Graph, q_matmul: ir.Node | None, core: ir.Node) -> dict[str, str | None]:
    """KV-cache fields: a ``Concat`` in the block whose first input is a graph input."""
    graph_inputs = {id(v) for v in graph.inputs}
    graph_outputs = {id(v) for v in graph.outputs}
    fields: dict[str, str | None] = {}
    for node in block:
        if node.op_type != "Concat" or len(node.inputs) != 2 or not node.outputs:
            continue
        past = node.inputs[0]
        if past is None or id(past) not in graph_inputs:
            continue
        role = _kv_role(node.outputs[0], q_matmul, core)
        if role is None:
            continue
        present = node.outputs[0]
        fields[f"past_{role}"] = past.name
        fields[f"{role}_concat"] = node.name
        if id(present) in graph_outputs:
            fields[f"present_{role}"] = present.name
        else:
            outs = [c.outputs[0] for c in consumers(present) if c.op_type == "Identity" and c.outputs]
            fields[f"present_{role}"] = next((o.name for o in outs if id(o) in graph_outputs), None)
    return fields


def kv_heads(core: ir.Node, heads: int) -> int:
    """KV heads of an attention core without a cache input: the fewest heads on the key path.

    Grouped-query attention expands K/V heads (Unsqueeze → Expand → Reshape) right before the
    core; walking back from the key through layout ops finds the ``[B, H_kv, S, D]`` value.
    """
    if core.op_type == "Attention":
        key = arg(core, 1)
        if "kv_num_heads" in core.attributes and rank(key) == 3:
            return int(core.attributes["kv_num_heads"].value)
    else:
        key = arg(_score_matmul(core), 1)
    found = [heads]
    frontier: list[ir.Value | None] = [key]
    for _ in range(12):
        nxt: list[ir.Value | None] = []
        for v in frontier:
            if v is None:
                continue
            d1 = static_dim(v, 1)
            if rank(v) == 4 and d1 and heads % d1 == 0:
                found.append(d1)
            producer = v.producer()
            if producer is not None and producer.op_type in LAYOUT_OPS | {"Concat", "RotaryEmbedding"}:
                nxt.extend(i for i in producer.inputs if i is not None and not is_const(i))
        frontier = nxt
    return min(found)
