"""Graph building for the ``early-exit`` pass: the head slice, its clones, the gate, the nested ``If``.

    block l ─► x_l ─► [adapter] ─► head clone ─► <out>.exit<l> ─► ExitGate ─► exit<l>.score, exit<l>.take

* :func:`head_slice`: the nodes downstream of the final residual stream that lead to the head's graph
  outputs (final norm + LM head, pooling + normalization, norm + classifier), in graph order, and those
  outputs. Everything else the head reads (weights, pooling masks, shapes not taken from the stream) is
  shared by the clones, never copied.
* :func:`clone_head`: the slice re-applied to another residual value; nodes ``<prefix>.<node name>``.
* :func:`gate`: the ``ExitGate`` node on an exit's gated output.
* :func:`nest_if`: the ``form=if`` rewrite. With exits at ``l1 < l2 < ...``::

      main: ... block l1, exit l1, If(all rows take at l1)
              then: exit l1's outputs
              else: blocks l1+1..l2, exit l2, If(all rows take at l2)
                      then: exit l2's outputs
                      else: remaining blocks, the real head

  so the main outputs keep their names and the skipped blocks do not run when a predicate holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import onnx_ir as ir

from parekit.errors import echo
from parekit.ops.exit_gate import EXIT_GATE

__all__ = ["ExitBranch", "HeadSlice", "clone_head", "descendants", "gate", "head_slice", "nest_if"]


@dataclass
class HeadSlice:
    """The model's head as seen from the final residual stream.

    Attributes:
        final: the final residual stream value.
        nodes: the head nodes reading it (directly or not) that lead to a head output, in graph order.
        outputs: the graph outputs computed from it (possibly ``final`` itself), in graph-output order.
    """

    final: ir.Value
    nodes: list[ir.Node]
    outputs: list[ir.Value]


@dataclass
class ExitBranch:
    """What one exit added to the graph.

    Attributes:
        layer: the exit layer.
        outputs: head output name → the exit's version of it (``<out>.exit<l>``).
        nodes: every node built for this exit, in build order (clones, adapter, gate, predicate).
        score, take: the gate's outputs.
        pred: the batch-wide 0-D bool predicate (``form=if`` only).
    """

    layer: int
    outputs: dict[str, ir.Value]
    nodes: list[ir.Node] = field(default_factory=list)
    score: ir.Value | None = None
    take: ir.Value | None = None
    pred: ir.Value | None = None


class BranchError(Exception):
    """A head or graph the exit builder cannot handle; the pass turns it into its own refusal."""


def descendants(graph: ir.Graph, value: ir.Value) -> set[ir.Node]:
    """Nodes of ``graph`` that read ``value``, directly or through other nodes.

    Raises:
        BranchError: a node inside a subgraph reads it (the exit builder does not follow subgraphs).
    """
    seen: set[ir.Node] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        for user, _ in v.uses():
            if user in seen:
                continue
            if user.graph is not graph:
                raise BranchError(f"value {echo(v.name or '')} is read inside a subgraph (node {echo(user.name or '')})")
            seen.add(user)
            stack.extend(user.outputs)
    return seen


def _ancestors_within(nodes: set[ir.Node], values: Iterable[ir.Value]) -> set[ir.Node]:
    keep: set[ir.Node] = set()
    stack = [v.producer() for v in values]
    while stack:
        node = stack.pop()
        if node is None or node in keep or node not in nodes:
            continue
        keep.add(node)
        stack.extend(v.producer() for v in node.inputs if v is not None)
    return keep


def head_slice(graph: ir.Graph, final: ir.Value) -> HeadSlice:
    """The head nodes and outputs downstream of ``final`` (see :class:`HeadSlice`).

    Raises:
        BranchError: no graph output depends on ``final``, or a head node holds a subgraph.
    """
    down = descendants(graph, final)
    produced = {v for n in down for v in n.outputs}
    outputs = [v for v in dict.fromkeys(graph.outputs) if v is final or v in produced]
    if not outputs:
        raise BranchError(f"no graph output depends on the final residual stream {echo(final.name or '')}")
    keep = _ancestors_within(down, outputs)
    nodes = [n for n in graph if n in keep]
    for n in nodes:
        if any(a.type == ir.AttributeType.GRAPH or a.type == ir.AttributeType.GRAPHS for a in _attrs(n)):
            raise BranchError(f"head node {echo(n.name or '')} ({n.op_type}) holds a subgraph")
    return HeadSlice(final, nodes, outputs)


def _attrs(node: ir.Node) -> list[ir.Attr]:
    return [a for a in node.attributes.values() if isinstance(a, ir.Attr)]


def _like(value: ir.Value, name: str) -> ir.Value:
    """A new value named ``name`` with ``value``'s type and shape."""
    shape = ir.Shape(list(value.shape.dims)) if value.shape is not None else None
    return ir.Value(name=name, type=value.type, shape=shape)


def clone_head(
    head: HeadSlice,
    source: ir.Value,
    prefix: str,
    names: Mapping[str, str],
    *,
    only: Sequence[str] | None = None,
) -> tuple[list[ir.Node], dict[str, ir.Value]]:
    """The head re-applied to ``source`` (nodes built, not inserted).

    Args:
        head: the head slice.
        source: the residual value standing in for the final residual stream.
        prefix: node and value name prefix (``exit4``): node ``<prefix>.<node name>``, intermediate
            values ``<prefix>.<value name>``.
        names: head output name → name of its clone (``logits`` → ``logits.exit4``).
        only: clone only what these head outputs need (default all of ``head.outputs``).

    Returns:
        ``(nodes, outputs)``: the clones in order, and head output name → cloned value.
    """
    wanted = [v for v in head.outputs if only is None or v.name in only]
    keep = _ancestors_within(set(head.nodes), wanted)
    mapping: dict[ir.Value, ir.Value] = {head.final: source}
    nodes: list[ir.Node] = []
    for node in head.nodes:
        if node not in keep:
            continue
        inputs = [mapping.get(v, v) if v is not None else None for v in node.inputs]
        clone = ir.Node(
            node.domain,
            node.op_type,
            inputs,
            _attrs(node) + [a for a in node.attributes.values() if not isinstance(a, ir.Attr)],
            overload=node.overload,
            num_outputs=len(node.outputs),
            version=node.version,
            name=f"{prefix}.{node.name}",
        )
        for old, new in zip(node.outputs, clone.outputs, strict=True):
            fresh = _like(old, names.get(old.name or "", f"{prefix}.{old.name}"))
            new.name, new.type, new.shape = fresh.name, fresh.type, fresh.shape
            mapping[old] = new
        nodes.append(clone)
    outputs: dict[str, ir.Value] = {}
    for v in wanted:
        name = v.name or ""
        if v is head.final:  # the stream itself is a head output (an encoder's last_hidden_state)
            out = _like(v, names[name])
            ident = ir.Node("", "Identity", [source], outputs=[out], name=f"{prefix}.{name}.identity")
            nodes.append(ident)
            mapping[v] = out
        outputs[name] = mapping[v]
    return nodes, outputs


def gate(
    model: ir.Model, x: ir.Value, prev: ir.Value | None, signal: str, threshold: float, layer: int
) -> ir.Node:
    """The ``ExitGate`` node of exit ``layer`` (outputs ``exit<l>.score``, ``exit<l>.take``)."""
    inputs = [x] if prev is None else [x, prev]
    node = EXIT_GATE.make_node(
        model, inputs, attributes={"signal": signal, "threshold": float(threshold)}, name=f"exit{layer}.gate"
    )
    node.outputs[0].name = f"exit{layer}.score"
    node.outputs[1].name = f"exit{layer}.take"
    return node


def all_rows(take: ir.Value, layer: int) -> tuple[list[ir.Node], ir.Value]:
    """``form=if`` predicate: a 0-D bool, true when every row (every token of ``[B, S]``) takes the exit."""
    prefix = f"exit{layer}.all_take"
    as_int = ir.node("Cast", [take], attributes={"to": int(ir.DataType.INT32)}, name=f"{prefix}.cast")
    low = ir.node("ReduceMin", [as_int.outputs[0]], attributes={"keepdims": 0}, name=f"{prefix}.min")
    pred = ir.node("Cast", [low.outputs[0]], attributes={"to": int(ir.DataType.BOOL)}, name=f"{prefix}.pred")
    for node, dtype, shape in (
        (as_int, ir.DataType.INT32, take.shape),
        (low, ir.DataType.INT32, ir.Shape([])),
        (pred, ir.DataType.BOOL, ir.Shape([])),
    ):
        node.outputs[0].name = node.name
        node.outputs[0].dtype = dtype
        node.outputs[0].shape = ir.Shape(list(shape.dims)) if shape is not None else None
    return [as_int, low, pred], pred.outputs[0]


def nest_if(
    graph: ir.Graph, exits: Sequence[ExitBranch], streams: Sequence[ir.Value], head_outputs: Sequence[ir.Value]
) -> None:
    """Rewrite ``graph`` (holding the exits as built) into the nested ``If`` form.

    Args:
        graph: the main graph; its exit nodes are already inserted, its exits' values are not graph outputs.
        exits: the exits, ascending, each with its predicate.
        streams: the residual value leaving each exit's block (``mm.layers[l].output``), same order.
        head_outputs: the head's graph outputs; they become the outermost ``If``'s outputs, same names.

    Raises:
        BranchError: a graph output other than the head's, or a node outside the skipped part, reads
            what the skipped blocks compute.
    """
    own = [set(e.nodes) for e in exits]
    skipped = [descendants(graph, s) - own[k] for k, s in enumerate(streams)]
    for k, part in enumerate(skipped):
        for node in part:
            for v in node.outputs:
                for user, _ in v.uses():
                    if user not in part:
                        raise BranchError(
                            f"node {echo(user.name or '')} reads {echo(v.name or '')}, which the blocks after "
                            f"layer {exits[k].layer} compute, outside what an exit at {exits[k].layer} skips"
                        )
        heads = set(head_outputs)
        for v in graph.outputs:
            if v not in heads and v.producer() in part:
                raise BranchError(
                    f"graph output {echo(v.name or '')} depends on the blocks after layer {exits[k].layer} "
                    "and has no exit version"
                )
    order = {n: i for i, n in enumerate(graph)}
    names = [v.name or "" for v in head_outputs]
    slots = [graph.outputs.index(v) for v in head_outputs]
    for v in head_outputs:
        graph.outputs.remove(v)
        v.name = f"{v.name}.full"
    inner: ir.Node | None = None
    for k in reversed(range(len(exits))):
        e = exits[k]
        mine = skipped[k] - (skipped[k + 1] if k + 1 < len(skipped) else set())
        body = sorted(mine, key=order.__getitem__)
        graph.remove(body, safe=False)
        else_outputs = list(inner.outputs) if inner is not None else list(head_outputs)
        then_nodes = []
        for name in names:
            out = _like(e.outputs[name], f"{name}.exit{e.layer}.then")
            then_nodes.append(ir.Node("", "Identity", [e.outputs[name]], outputs=[out], name=f"exit{e.layer}.then.{name}"))
        then_g = ir.Graph((), [n.outputs[0] for n in then_nodes], nodes=then_nodes, name=f"exit{e.layer}_then")
        else_nodes = body + ([inner] if inner is not None else [])
        else_g = ir.Graph((), else_outputs, nodes=else_nodes, name=f"exit{e.layer}_else")
        outs = [_like(v, name if k == 0 else f"{name}.if{e.layer}") for v, name in zip(head_outputs, names, strict=True)]
        assert e.pred is not None
        inner = ir.Node(
            "",
            "If",
            [e.pred],
            [ir.AttrGraph("then_branch", then_g), ir.AttrGraph("else_branch", else_g)],
            outputs=outs,
            name=f"exit{e.layer}.if",
        )
    assert inner is not None
    graph.append(inner)
    for slot, new in sorted(zip(slots, inner.outputs, strict=True), key=lambda p: p[0]):
        graph.outputs.insert(slot, new)
