"""Block grouping: which nodes form each transformer block, and the residual stream through it.

1. **Exporter scopes.** The torch.export-based exporter records each node's module path
   (``pkg.torch.onnx.name_scopes``, e.g. ``[..., 'encoder.layer.3', 'encoder.layer.3.attention']``).
   The layer stack is the family of scopes ``<prefix>.<index>`` under one prefix with the most nodes.
2. **Graph patterns** otherwise: each attention core anchors one block, and blocks are cut along the
   residual stream.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import onnx_ir as ir

from parekit.analysis.attention import is_core
from parekit.analysis.graph_walk import (
    NORM_OPS,
    WEIGHT_OPS,
    consumers,
    is_const,
    is_float,
    nm,
    out,
    rank,
    scopes,
    static_dim,
)
from parekit.errors import StructureError

Block = tuple[str, list[ir.Node]]
"""One block: its scope (module path or ``block.<i>``) and its nodes in graph order."""

_LAYER_SCOPE = re.compile(r"^(?P<prefix>.+)\.(?P<index>\d+)$")


def blocks_from_scopes(graph: ir.Graph) -> list[Block] | None:
    """Group nodes into blocks by exporter module scopes; ``None`` when the graph has none."""
    by_prefix: dict[str, Counter[int]] = defaultdict(Counter)
    node_scope: dict[str, tuple[str, int]] = {}
    parsed: dict[str, list[str]] = {}
    layer_scopes: dict[str, list[tuple[str, str, int]]] = {}  # node → (scope, prefix, index)
    for node in graph:
        found = []
        for scope in scopes(node, parsed):
            m = _LAYER_SCOPE.match(scope)
            if m:
                found.append((scope, m["prefix"], int(m["index"])))
                by_prefix[m["prefix"]][int(m["index"])] += 1
        layer_scopes[nm(node)] = found
    if not by_prefix:
        return None
    # The layer stack: most nodes; ties → the shallowest prefix (fewest dots).
    prefix = max(by_prefix, key=lambda p: (sum(by_prefix[p].values()), -p.count(".")))
    for node in graph:
        for scope, pfx, index in layer_scopes[nm(node)]:
            if pfx == prefix:
                node_scope[nm(node)] = (scope, index)
                break
    # Nodes without metadata (inserted by passes or constant folding): adopt the block of their
    # consumers when all consumers sit in one block.
    for node in reversed(list(graph)):
        if nm(node) in node_scope or scopes(node, parsed):
            continue
        owners = {node_scope.get(nm(c)) for v in node.outputs for c in consumers(v)}
        if len(owners) == 1 and None not in owners:
            node_scope[nm(node)] = owners.pop()  # type: ignore[assignment]
    groups: dict[int, Block] = {}
    for node in graph:
        if nm(node) in node_scope:
            scope, index = node_scope[nm(node)]
            groups.setdefault(index, (scope, []))[1].append(node)
    # A scope left with shape bookkeeping only (its block was removed, e.g. by drop-layers, but a
    # shared shape computation survived) is not a block.
    return [groups[i] for i in sorted(groups) if any(is_core(n) for n in groups[i][1])]


def blocks_from_patterns(graph: ir.Graph) -> list[Block] | None:
    """Group nodes into blocks around attention cores when there is no scope metadata.

    Cuts are residual-stream values: float ``[B, S, hidden]`` values that feed both a residual
    ``Add`` and a norm or projection. Block ``i`` starts after the last such value before attention
    core ``i``; the last block ends at the last residual ``Add`` (pre-norm models) or at the norm
    that follows it (post-norm models, whose residual stream is a norm output).
    """
    cores = [n for n in graph if is_core(n)]
    if not cores:
        return None
    nodes = list(graph)
    order = {id(n): i for i, n in enumerate(nodes)}
    cuts: list[int] = []  # positions of nodes producing a residual-stream value, ascending
    for i, node in enumerate(nodes):
        if any(_is_residual_value(v) for v in node.outputs):
            cuts.append(i)
    starts: list[int] = []
    for core in cores:
        before = [i for i in cuts if i < order[id(core)]]
        if not before:
            return None
        starts.append(before[-1])
    first_producer = nodes[starts[0]]
    post_norm = first_producer.op_type in NORM_OPS
    last_core = order[id(cores[-1])]
    hidden = static_dim(out(first_producer), -1)
    adds = [
        n for n in nodes[last_core + 1 :]
        if n.op_type == "Add" and rank(out(n)) == 3 and static_dim(out(n), -1) == hidden
    ]
    if not adds:
        return None
    end = order[id(adds[-1])]
    if post_norm:
        norms = [c for c in consumers(adds[-1].outputs[0]) if c.op_type in NORM_OPS]
        if norms:
            end = order[id(norms[0])]
    bounds = [*starts[1:], end]
    return [(f"block.{i}", nodes[lo + 1 : hi + 1]) for i, (lo, hi) in enumerate(zip(starts, bounds))]


def _is_residual_value(value: ir.Value) -> bool:
    if rank(value) != 3 or not is_float(value) or static_dim(value, -1) is None:
        return False
    users = consumers(value)
    return any(c.op_type == "Add" for c in users) and any(
        c.op_type in NORM_OPS or c.op_type in WEIGHT_OPS or c.op_type in {"ReduceMean", "Pow"} for c in users
    )


def block_io(nodes: list[ir.Node], graph: ir.Graph) -> tuple[ir.Value, ir.Value]:
    """The residual-stream value entering the block and the one leaving it.

    Raises:
        StructureError: not exactly one of each.
    """
    names = {nm(n) for n in nodes}
    inputs: list[ir.Value] = []
    outputs: list[ir.Value] = []
    graph_outputs = set(map(id, graph.outputs))
    for node in nodes:
        for v in node.inputs:
            if v is None or is_const(v) or rank(v) != 3 or not is_float(v):
                continue
            producer = v.producer()
            if (producer is None or nm(producer) not in names) and v not in inputs:
                inputs.append(v)
        for v in node.outputs:
            if rank(v) != 3 or not is_float(v):
                continue
            if id(v) in graph_outputs or any(nm(c) not in names for c in consumers(v)):
                outputs.append(v)
    hidden_in = [v for v in inputs if static_dim(v, -1) is not None]
    if len(hidden_in) > 1:
        # Side inputs (rotary cos/sin, position tables) feed Muls; the residual stream feeds the
        # block's residual Add (and a norm or the Q/K/V projections).
        hidden_in = [v for v in hidden_in if any(c.op_type == "Add" and nm(c) in names for c in consumers(v))]
    if len(hidden_in) != 1:
        raise StructureError(
            f"block starting at node '{nm(nodes[0])}': expected one residual-stream input, "
            f"found {len(hidden_in)} ({', '.join(v.name or '?' for v in hidden_in) or 'none'})"
        )
    hidden = static_dim(hidden_in[0], -1)
    hidden_out = [v for v in outputs if static_dim(v, -1) == hidden]
    if len(hidden_out) != 1:
        raise StructureError(
            f"block starting at node '{nm(nodes[0])}': expected one residual-stream output of width "
            f"{hidden}, found {len(hidden_out)} ({', '.join(v.name or '?' for v in hidden_out) or 'none'})"
        )
    return hidden_in[0], hidden_out[0]
