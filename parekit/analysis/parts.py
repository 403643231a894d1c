"""Block parts besides attention: norms, the MLP, and the residual value between attention and MLP."""

from __future__ import annotations

import networkx as nx
import onnx_ir as ir

from parekit.analysis.graph_walk import ACTIVATION_OPS, NORM_OPS, WEIGHT_OPS, arg, is_const, nm, out
from parekit.analysis.modelmap import MlpSite


def norms(block: list[ir.Node]) -> tuple[str, ...]:
    """Names of the block's normalization nodes, in order (decomposed RMSNorm: its ``ReduceMean``)."""
    found: list[str] = []
    for node in block:
        if node.op_type in NORM_OPS:
            found.append(nm(node))
        elif node.op_type == "ReduceMean" and arg(node, 0) is not None:
            producer = node.inputs[0].producer()  # type: ignore[union-attr]
            if producer is not None and producer.op_type == "Pow":
                found.append(nm(node))  # decomposed RMSNorm: x * rsqrt(mean(x^2) + eps)
    return tuple(found)


def _weight_matmuls(block: list[ir.Node]) -> list[ir.Node]:
    def has_weight(node: ir.Node) -> bool:
        b = arg(node, 1)
        return is_const(b) or (b is not None and _const_through_transpose(b))

    return [n for n in block if n.op_type in WEIGHT_OPS and has_weight(n)]


def _const_through_transpose(value: ir.Value) -> bool:
    producer = value.producer()
    return producer is not None and producer.op_type == "Transpose" and is_const(arg(producer, 0))


def mlp(block: list[ir.Node], core: ir.Node, nxg: nx.DiGraph) -> MlpSite | None:
    """The feed-forward block after the attention core: up (and gate) projections, down projection."""
    after = nx.descendants(nxg, core.name)
    weights = [n for n in _weight_matmuls(block) if n.name in after]
    if len(weights) < 3:  # output projection + at least up and down
        return None
    projections = weights[1:]  # weights[0] is the attention output projection
    down = projections[-1]
    ups = projections[:-1]
    gate = None
    activation = None
    for n in block:
        if n.name in after and n.op_type in ACTIVATION_OPS and n.name != core.name:
            activation = n.op_type
            x = arg(n, 0)
            src = x.producer() if x is not None else None
            if len(ups) > 1 and src is not None and src in ups:
                gate = src.name
            break
    return MlpSite(up=tuple(nm(u) for u in ups if u.name != gate), down=nm(down), gate=gate, activation=activation)


def mid_point(down: ir.Node) -> ir.Value | None:
    """The residual value between attention and MLP: the other operand of the Add after the MLP.

    Walks from the MLP's down projection through an optional bias ``Add`` to the residual ``Add``;
    ``None`` when the graph does not have that shape.
    """
    value = out(down)
    for _ in range(4):  # MatMul → [Add bias] → residual Add
        if value is None:
            return None
        adds = [u for u in value.uses() if u.node.op_type == "Add"]
        if len(adds) != 1 or len(adds[0].node.inputs) != 2:
            return None
        add = adds[0].node
        other = add.inputs[1 - adds[0].idx]
        if other is None:
            return None
        producer = other.producer()
        if other.const_value is not None or (producer is not None and producer.op_type == "Constant"):
            value = out(add)  # the bias
            continue
        return other
    return None
