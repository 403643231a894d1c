"""Graph walking for structure discovery: safe accessors, exporter metadata, dataflow walks.

Everything here reads the graph and never changes it. The accessors tolerate malformed nodes (too few
inputs, metadata that is not valid UTF-8): discovery either skips what they cannot read or raises a
:class:`~parekit.errors.StructureError` that names the node.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

import networkx as nx
import onnx_ir as ir

from parekit.errors import StructureError

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"
NORM_OPS = frozenset({"LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"})
WEIGHT_OPS = frozenset({"MatMul", "Gemm"})
ACTIVATION_OPS = frozenset({"Gelu", "Erf", "Sigmoid", "Tanh", "Relu", "FastGelu", "Swish", "HardSigmoid"})
# Ops a tensor may pass through between the QK MatMul and the Softmax (scale, mask, cast, softcap).
SCORE_PATH_OPS = frozenset({"Add", "Mul", "Div", "Where", "Cast", "Sub", "Tanh", "Identity"})
# Ops a KV tensor may pass through between its Concat and the attention core (GQA expansion, layout).
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Unsqueeze", "Expand", "Squeeze", "Identity", "Cast", "Mul"})


def nm(obj: ir.Node | ir.Value) -> str:
    """Name of a node or value (discovery names every node first; see ``NameFixPass``)."""
    return obj.name or ""


def arg(node: ir.Node, index: int) -> ir.Value | None:
    """Input ``index`` of ``node``, or ``None`` when the node has fewer inputs (or it is omitted)."""
    return node.inputs[index] if 0 <= index < len(node.inputs) else None


def out(node: ir.Node, index: int = 0) -> ir.Value | None:
    """Output ``index`` of ``node``, or ``None`` when the node has fewer outputs."""
    return node.outputs[index] if 0 <= index < len(node.outputs) else None


def need(node: ir.Node, index: int, role: str) -> ir.Value:
    """Input ``index`` of ``node``; raises a :class:`StructureError` naming the node when it is missing.

    Args:
        node: the node.
        index: input position.
        role: what the input is (``"key"``, ``"the B operand"``), for the message.
    """
    value = arg(node, index)
    if value is None:
        raise StructureError(
            f"{node.op_type} node '{nm(node)}' has no input {index} ({role}): it has {len(node.inputs)} input(s)"
        )
    return value


def prop(node: ir.Node, key: str) -> str:
    """A metadata property as text ('' when absent; undecodable bytes are replaced, not raised on)."""
    raw: object = node.metadata_props.get(key)
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw if isinstance(raw, str) else ""


def consumers(value: ir.Value) -> list[ir.Node]:
    return [node for node, _ in value.uses()]


def is_const(value: ir.Value | None) -> bool:
    return value is not None and (value.const_value is not None or value.is_initializer())


def static_dim(value: ir.Value | None, axis: int) -> int | None:
    if value is None or value.shape is None:
        return None
    dims = value.shape.dims
    if not -len(dims) <= axis < len(dims):
        return None
    d = dims[axis]
    return d if isinstance(d, int) else None


def rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def is_float(value: ir.Value | None) -> bool:
    return value is not None and value.dtype is not None and value.dtype.is_floating_point()


def scopes(node: ir.Node, cache: dict[str, list[str]] | None = None) -> list[str]:
    """The exporter's module scopes of ``node`` (``[]`` when absent or unreadable).

    Args:
        node: the node.
        cache: parsed scope lists by raw text; exported graphs repeat the same few texts thousands of times.
    """
    raw = prop(node, SCOPES_KEY)
    if not raw:
        return []
    if cache is not None and raw in cache:
        return cache[raw]
    try:
        parsed = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        parsed = []
    found = [s for s in parsed if isinstance(s, str)] if isinstance(parsed, (list, tuple)) else []
    if cache is not None:
        cache[raw] = found
    return found


def node_graph(graph: ir.Graph) -> nx.DiGraph:
    """Read-only dataflow view: node → node edges (one per produced/consumed value)."""
    g = nx.DiGraph()
    for node in graph:
        g.add_node(node.name)
        for value in node.outputs:
            for consumer in consumers(value):
                g.add_edge(node.name, consumer.name)
    return g


def walk_forward(value: ir.Value, through: frozenset[str], limit: int = 16) -> Iterator[tuple[ir.Node, int]]:
    """Yield (consumer, input index) reached from ``value`` through ops in ``through``."""
    frontier = [value]
    seen: set[int] = set()
    for _ in range(limit):
        nxt: list[ir.Value] = []
        for v in frontier:
            for node, idx in v.uses():
                if id(node) in seen:
                    continue
                seen.add(id(node))
                yield node, idx
                if node.op_type in through:
                    nxt.extend(node.outputs)
        if not nxt:
            return
        frontier = nxt


def walk_back(value: ir.Value | None, through: frozenset[str], limit: int = 16) -> Iterator[ir.Node]:
    """Yield producers reached backwards from ``value`` through ops in ``through``."""
    frontier = [value] if value is not None else []
    for _ in range(limit):
        nxt: list[ir.Value] = []
        for v in frontier:
            node = v.producer()
            if node is None:
                continue
            yield node
            if node.op_type in through:
                nxt.extend(i for i in node.inputs if i is not None and not is_const(i))
        if not nxt:
            return
        frontier = nxt
