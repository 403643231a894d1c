"""Structure discovery: find the transformer in a graph and describe it as a :class:`ModelMap`.

How blocks are found, in order:

1. **Exporter scopes.** The torch.export-based exporter records each node's module path
   (``pkg.torch.onnx.name_scopes``, e.g. ``[..., 'encoder.layer.3', 'encoder.layer.3.attention']``).
   The layer stack is the family of scopes ``<prefix>.<index>`` under one prefix with the most nodes.
2. **Graph patterns** otherwise: each attention core (a ``Softmax`` between two ``MatMul``s, or an
   ONNX ``Attention`` node) anchors one block, and blocks are cut along the residual stream.

Inside a block everything is found from graph patterns, never from tensor names: the residual
stream (the one ``[B, S, hidden]`` float value entering from outside, the one leaving it), the
attention core (scores/probabilities or the ``Attention`` op; Q, K, V; the ``Concat`` that appends a
graph input KV cache and the graph output returning it), norms (``LayerNormalization``,
``RMSNormalization`` or the ``Pow → ReduceMean`` RMS pattern) and the MLP (weight MatMuls after the
attention output projection).
"""

from __future__ import annotations

import ast
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator

import networkx as nx
import onnx_ir as ir

from parekit.analysis.modelmap import AttentionSite, LayerMap, MlpSite, ModelMap
from parekit.errors import StructureError

logger = logging.getLogger(__name__)

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"
_LAYER_SCOPE = re.compile(r"^(?P<prefix>.+)\.(?P<index>\d+)$")
_NORM_OPS = frozenset({"LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"})
_WEIGHT_OPS = frozenset({"MatMul", "Gemm"})
_ACTIVATION_OPS = frozenset({"Gelu", "Erf", "Sigmoid", "Tanh", "Relu", "FastGelu", "Swish", "HardSigmoid"})
# Ops a tensor may pass through between the QK MatMul and the Softmax (scale, mask, cast, softcap).
_SCORE_PATH_OPS = frozenset({"Add", "Mul", "Div", "Where", "Cast", "Sub", "Tanh", "Identity"})
# Ops a KV tensor may pass through between its Concat and the attention core (GQA expansion, layout).
# Embedding tables shorter than this index token types/segments, not positions.
_MIN_POSITION_TABLE = 64
# Ops between position ids and the rotary Cos/Sin (inv_freq product, layout, dtype).
_ROTARY_PATH_OPS = frozenset({"Cast", "Unsqueeze", "Mul", "MatMul", "Reshape", "Expand", "Transpose", "Concat"})
_LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Unsqueeze", "Expand", "Squeeze", "Identity", "Cast", "Mul"})


# --------------------------------------------------------------------------------------------
# small graph helpers


def _nm(obj: ir.Node | ir.Value) -> str:
    """Name of a node or value (loaded models name every node; see ``ensure_node_names``)."""
    return obj.name or ""


def _consumers(value: ir.Value) -> list[ir.Node]:
    return [node for node, _ in value.uses()]


def _is_const(value: ir.Value | None) -> bool:
    return value is not None and (value.const_value is not None or value.is_initializer())


def _static_dim(value: ir.Value | None, axis: int) -> int | None:
    if value is None or value.shape is None:
        return None
    dims = value.shape.dims
    if not -len(dims) <= axis < len(dims):
        return None
    d = dims[axis]
    return d if isinstance(d, int) else None


def _rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def _is_float(value: ir.Value) -> bool:
    return value.dtype is not None and value.dtype.is_floating_point()


def _scopes(node: ir.Node) -> list[str]:
    raw = node.metadata_props.get(SCOPES_KEY)
    if not raw:
        return []
    try:
        scopes = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return []
    return [s for s in scopes if isinstance(s, str)]


def _node_graph(graph: ir.Graph) -> nx.DiGraph:
    """Read-only dataflow view: node → node edges (one per produced/consumed value)."""
    g = nx.DiGraph()
    for node in graph:
        g.add_node(node.name)
        for out in node.outputs:
            for consumer in _consumers(out):
                g.add_edge(node.name, consumer.name)
    return g


def _walk_forward(value: ir.Value, through: frozenset[str], limit: int = 16) -> Iterator[tuple[ir.Node, int]]:
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


def _walk_back(value: ir.Value, through: frozenset[str], limit: int = 16) -> Iterator[ir.Node]:
    """Yield producers reached backwards from ``value`` through ops in ``through``."""
    frontier = [value]
    for _ in range(limit):
        nxt: list[ir.Value] = []
        for v in frontier:
            node = v.producer()
            if node is None:
                continue
            yield node
            if node.op_type in through:
                nxt.extend(i for i in node.inputs if i is not None and not _is_const(i))
        if not nxt:
            return
        frontier = nxt


# --------------------------------------------------------------------------------------------
# block grouping


def _blocks_from_scopes(graph: ir.Graph) -> list[tuple[str, list[ir.Node]]] | None:
    """Group nodes into blocks by exporter module scopes; ``None`` when the graph has none."""
    by_prefix: dict[str, Counter[int]] = defaultdict(Counter)
    node_scope: dict[str, tuple[str, int]] = {}
    for node in graph:
        for scope in _scopes(node):
            m = _LAYER_SCOPE.match(scope)
            if m:
                by_prefix[m["prefix"]][int(m["index"])] += 1
    candidates = {p: c for p, c in by_prefix.items() if len(c) >= 1}
    if not candidates:
        return None
    # The layer stack: most nodes; ties → the shallowest prefix (fewest dots).
    prefix = max(candidates, key=lambda p: (sum(candidates[p].values()), -p.count(".")))
    for node in graph:
        for scope in _scopes(node):
            m = _LAYER_SCOPE.match(scope)
            if m and m["prefix"] == prefix:
                node_scope[_nm(node)] = (scope, int(m["index"]))
                break
    # Nodes without metadata (inserted by passes or constant folding): adopt the block of their
    # consumers when all consumers sit in one block.
    for node in reversed(list(graph)):
        if node.name in node_scope or _scopes(node):
            continue
        owners = {node_scope.get(_nm(c)) for out in node.outputs for c in _consumers(out)}
        if len(owners) == 1 and None not in owners:
            node_scope[_nm(node)] = owners.pop()  # type: ignore[assignment]
    groups: dict[int, tuple[str, list[ir.Node]]] = {}
    for node in graph:
        if node.name in node_scope:
            scope, index = node_scope[node.name]
            groups.setdefault(index, (scope, []))[1].append(node)
    # A scope left with shape bookkeeping only (its block was removed, e.g. by drop-layers, but a
    # shared shape computation survived) is not a block.
    return [groups[i] for i in sorted(groups) if any(_is_core(n) for n in groups[i][1])]


def _is_core(node: ir.Node) -> bool:
    return node.op_type == "Attention" or _is_attention_softmax(node)


def _blocks_from_patterns(graph: ir.Graph, nxg: nx.DiGraph) -> list[tuple[str, list[ir.Node]]] | None:
    """Group nodes into blocks around attention cores when there is no scope metadata.

    Cuts are residual-stream values: float ``[B, S, hidden]`` values that feed both a residual
    ``Add`` and a norm or projection. Block ``i`` starts after the last such value before attention
    core ``i``; the last block ends at the last residual ``Add`` (pre-norm models) or at the norm
    that follows it (post-norm models, whose residual stream is a norm output).
    """
    cores = [n for n in graph if _is_core(n)]
    if not cores:
        return None
    nodes = list(graph)
    order = {n.name: i for i, n in enumerate(nodes)}
    cuts: list[ir.Value] = []
    for node in nodes:
        cuts.extend(v for v in node.outputs if _is_residual_value(v))
    starts: list[int] = []
    for core in cores:
        before = [v for v in cuts if order[v.producer().name] < order[core.name]]  # type: ignore[union-attr]
        if not before:
            return None
        starts.append(order[before[-1].producer().name])  # type: ignore[union-attr]
    first_producer = nodes[starts[0]]
    post_norm = first_producer.op_type in _NORM_OPS
    last_core = order[cores[-1].name]
    hidden = _static_dim(nodes[starts[0]].outputs[0], -1)
    adds = [
        n for n in nodes[last_core + 1 :]
        if n.op_type == "Add" and _rank(n.outputs[0]) == 3 and _static_dim(n.outputs[0], -1) == hidden
    ]
    if not adds:
        return None
    end = order[adds[-1].name]
    if post_norm:
        norms = [c for c in _consumers(adds[-1].outputs[0]) if c.op_type in _NORM_OPS]
        if norms:
            end = order[norms[0].name]
    bounds = [*starts[1:], end]
    return [(f"block.{i}", nodes[lo + 1 : hi + 1]) for i, (lo, hi) in enumerate(zip(starts, bounds))]


def _is_residual_value(value: ir.Value) -> bool:
    if _rank(value) != 3 or not _is_float(value) or _static_dim(value, -1) is None:
        return False
    consumers = _consumers(value)
    return any(c.op_type == "Add" for c in consumers) and any(
        c.op_type in _NORM_OPS or c.op_type in _WEIGHT_OPS or c.op_type in {"ReduceMean", "Pow"} for c in consumers
    )


# --------------------------------------------------------------------------------------------
# per-block analysis


def _is_attention_softmax(node: ir.Node) -> bool:
    if node.op_type != "Softmax" or _rank(node.outputs[0]) != 4:
        return False
    return any(p.op_type == "MatMul" for p in _walk_back(node.inputs[0], _SCORE_PATH_OPS, limit=6))  # type: ignore[arg-type]


def _block_io(nodes: list[ir.Node], graph: ir.Graph) -> tuple[ir.Value, ir.Value]:
    names = {n.name for n in nodes}
    inputs: list[ir.Value] = []
    outputs: list[ir.Value] = []
    graph_outputs = set(map(id, graph.outputs))
    for node in nodes:
        for v in node.inputs:
            if v is None or _is_const(v) or _rank(v) != 3 or not _is_float(v):
                continue
            producer = v.producer()
            if (producer is None or producer.name not in names) and v not in inputs:
                inputs.append(v)
        for v in node.outputs:
            if _rank(v) != 3 or not _is_float(v):
                continue
            if id(v) in graph_outputs or any(c.name not in names for c in _consumers(v)):
                outputs.append(v)
    hidden_in = [v for v in inputs if _static_dim(v, -1) is not None]
    if len(hidden_in) > 1:
        # Side inputs (rotary cos/sin, position tables) feed Muls; the residual stream feeds the
        # block's residual Add (and a norm or the Q/K/V projections).
        hidden_in = [v for v in hidden_in if any(c.op_type == "Add" and c.name in names for c in _consumers(v))]
    if len(hidden_in) != 1:
        raise StructureError(
            f"block starting at node '{nodes[0].name}': expected one residual-stream input, "
            f"found {len(hidden_in)} ({', '.join(v.name or '?' for v in hidden_in) or 'none'})"
        )
    hidden = _static_dim(hidden_in[0], -1)
    hidden_out = [v for v in outputs if _static_dim(v, -1) == hidden]
    if len(hidden_out) != 1:
        raise StructureError(
            f"block starting at node '{nodes[0].name}': expected one residual-stream output of width "
            f"{hidden}, found {len(hidden_out)} ({', '.join(v.name or '?' for v in hidden_out) or 'none'})"
        )
    return hidden_in[0], hidden_out[0]


def _kv_role(value: ir.Value, q_matmul: ir.Node | None, core: ir.Node) -> str | None:
    """``key`` or ``value`` depending on which input of the attention core ``value`` reaches."""
    for node, idx in _walk_forward(value, _LAYOUT_OPS, limit=10):
        if node is core and core.op_type == "Attention":
            return {1: "key", 2: "value"}.get(idx)
        if q_matmul is not None and node is q_matmul:
            return "key"
        if node.op_type == "MatMul" and core.op_type == "Softmax" and idx == 1:
            producer = node.inputs[0].producer() if node.inputs[0] is not None else None
            if producer is not None and producer.op_type in ("Softmax", "Cast", "Where", "Identity"):
                return "value"
    return None


def _attention_site(block: list[ir.Node], graph: ir.Graph) -> tuple[AttentionSite, ir.Node, int, int]:
    """The block's attention site, its core node, and (heads, head_dim) read from shapes."""
    cores = [n for n in block if n.op_type == "Attention"] or [n for n in block if _is_attention_softmax(n)]
    if len(cores) != 1:
        found = Counter(n.op_type for n in block if n.op_type in ("Attention", "Softmax", "MatMul"))
        raise StructureError(
            f"block starting at node '{block[0].name}': expected one attention core (an ONNX Attention "
            f"node, or MatMul → Softmax → MatMul), found {len(cores)} (ops seen: {dict(found) or 'none'})"
        )
    core = cores[0]
    graph_inputs = {id(v) for v in graph.inputs}
    graph_outputs = {id(v) for v in graph.outputs}
    q_matmul: ir.Node | None = None
    fields: dict[str, str | None] = {}
    if core.op_type == "Attention":
        fields.update(
            query=core.inputs[0].name if core.inputs[0] else None,
            key=core.inputs[1].name if core.inputs[1] else None,
            value=core.inputs[2].name if core.inputs[2] else None,
            context=core.outputs[0].name,
        )
        nodes: tuple[str, ...] = (_nm(core),)
        heads = int(core.attributes["q_num_heads"].value) if "q_num_heads" in core.attributes else None
        if _rank(core.inputs[0]) == 3:  # [B, S, H*D] form: heads come from the attribute
            width = _static_dim(core.inputs[0], -1)
            head_dim = width // heads if heads and width else None
        else:
            heads = heads or _static_dim(core.inputs[0], 1)
            head_dim = _static_dim(core.inputs[0], -1)
    else:
        softmax = core
        q_matmul = next(p for p in _walk_back(softmax.inputs[0], _SCORE_PATH_OPS, limit=6) if p.op_type == "MatMul")  # type: ignore[arg-type]
        probs = softmax.outputs[0]
        pv = next(
            (n for n, idx in _walk_forward(probs, frozenset({"Cast", "Where", "Identity", "Dropout"}), 4)
             if n.op_type == "MatMul" and idx == 0),
            None,
        )
        if pv is None:
            raise StructureError(f"Softmax '{softmax.name}': no MatMul consumes the attention probabilities")
        fields.update(
            query=q_matmul.inputs[0].name if q_matmul.inputs[0] else None,
            key=q_matmul.inputs[1].name if q_matmul.inputs[1] else None,
            value=pv.inputs[1].name if pv.inputs[1] else None,
            scores=softmax.inputs[0].name if softmax.inputs[0] else None,
            probs=probs.name,
            context=pv.outputs[0].name,
        )
        nodes = (_nm(q_matmul), _nm(softmax), _nm(pv))
        heads = _static_dim(pv.inputs[1], 1) or _static_dim(probs, 1)
        head_dim = _static_dim(pv.inputs[1], -1)
    # KV cache: a Concat in the block whose first input is a graph input.
    for node in block:
        if node.op_type != "Concat" or len(node.inputs) != 2:
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
            outs = [c.outputs[0] for c in _consumers(present) if c.op_type == "Identity"]
            fields[f"present_{role}"] = next((o.name for o in outs if id(o) in graph_outputs), None)
    site = AttentionSite(form="attention-op" if core.op_type == "Attention" else "decomposed", nodes=nodes, **fields)
    if heads is None or head_dim is None:
        raise StructureError(f"attention '{core.name}': could not read the head count and head size from shapes")
    return site, core, heads, head_dim


def _kv_heads(core: ir.Node, heads: int) -> int:
    """KV heads of an attention core without a cache input: the fewest heads on the key path.

    Grouped-query attention expands K/V heads (Unsqueeze → Expand → Reshape) right before the
    core; walking back from the key through layout ops finds the ``[B, H_kv, S, D]`` value.
    """
    if core.op_type == "Attention":
        key = core.inputs[1]
        if "kv_num_heads" in core.attributes and _rank(key) == 3:
            return int(core.attributes["kv_num_heads"].value)
    else:
        q_matmul = next(p for p in _walk_back(core.inputs[0], _SCORE_PATH_OPS, limit=6) if p.op_type == "MatMul")  # type: ignore[arg-type]
        key = q_matmul.inputs[1]
    found = [heads]
    frontier: list[ir.Value | None] = [key]
    for _ in range(12):
        nxt: list[ir.Value | None] = []
        for v in frontier:
            if v is None:
                continue
            d1 = _static_dim(v, 1)
            if _rank(v) == 4 and d1 and heads % d1 == 0:
                found.append(d1)
            producer = v.producer()
            if producer is not None and producer.op_type in _LAYOUT_OPS | {"Concat", "RotaryEmbedding"}:
                nxt.extend(i for i in producer.inputs if i is not None and not _is_const(i))
        frontier = nxt
    return min(found)


def _norms(block: list[ir.Node]) -> tuple[str, ...]:
    out: list[str] = []
    for node in block:
        if node.op_type in _NORM_OPS:
            out.append(_nm(node))
        elif node.op_type == "ReduceMean" and node.inputs[0] is not None:
            producer = node.inputs[0].producer()
            if producer is not None and producer.op_type == "Pow":
                out.append(_nm(node))  # decomposed RMSNorm: x * rsqrt(mean(x^2) + eps)
    return tuple(out)


def _weight_matmuls(block: list[ir.Node]) -> list[ir.Node]:
    def has_weight(node: ir.Node) -> bool:
        return any(_is_const(v) or (v is not None and _const_through_transpose(v)) for v in node.inputs[1:2])

    return [n for n in block if n.op_type in _WEIGHT_OPS and has_weight(n)]


def _const_through_transpose(value: ir.Value) -> bool:
    producer = value.producer()
    return producer is not None and producer.op_type == "Transpose" and _is_const(producer.inputs[0])


def _mlp(block: list[ir.Node], core: ir.Node, nxg: nx.DiGraph) -> MlpSite | None:
    after = nx.descendants(nxg, core.name)
    weights = [n for n in _weight_matmuls(block) if n.name in after]
    if len(weights) < 3:  # output projection + at least up and down
        return None
    mlp = weights[1:]  # weights[0] is the attention output projection
    down = mlp[-1]
    ups = mlp[:-1]
    gate = None
    activation = None
    for n in block:
        if n.name in after and n.op_type in _ACTIVATION_OPS and n.name not in {core.name}:
            activation = n.op_type
            src = n.inputs[0].producer() if n.inputs[0] is not None else None
            if len(ups) > 1 and src is not None and src in ups:
                gate = src.name
            break
    return MlpSite(up=tuple(_nm(u) for u in ups if u.name != gate), down=_nm(down), gate=gate, activation=activation)


# --------------------------------------------------------------------------------------------
# model-level facts


def _input_roles(graph: ir.Graph, nxg: nx.DiGraph) -> dict[str, str]:
    roles: dict[str, str] = {}
    ints = [v for v in graph.inputs if v.dtype is not None and not v.dtype.is_floating_point() and _rank(v) == 2]
    floats4 = [v for v in graph.inputs if _is_float(v) and _rank(v) == 4]
    tables: list[tuple[int, ir.Value]] = []
    for v in ints:
        for node, idx in _walk_forward(v, frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze"}), limit=3):
            if node.op_type == "Gather" and idx == 1 and _is_const(node.inputs[0]):
                tables.append((_static_dim(node.inputs[0], 0) or 0, v))
                break
    if tables:
        tables.sort(key=lambda t: -t[0])
        roles["input_ids"] = tables[0][1].name  # type: ignore[assignment]
        for rows, v in tables[1:]:
            # A small table indexes segments (BERT's token types); a long one indexes positions.
            role = "token_type_ids" if rows < _MIN_POSITION_TABLE else "position_ids"
            roles.setdefault(role, v.name)  # type: ignore[arg-type]
    for v in ints:
        if v.name in roles.values():
            continue
        reached = {n.op_type for n, _ in _walk_forward(v, _ROTARY_PATH_OPS, 8)}
        if reached & {"Cos", "Sin", "RotaryEmbedding"} and "position_ids" not in roles:
            roles["position_ids"] = v.name  # type: ignore[assignment]
        elif "attention_mask" not in roles:
            roles["attention_mask"] = v.name  # type: ignore[assignment]
    if floats4 and "input_ids" not in roles:
        roles["pixel_values"] = floats4[0].name  # type: ignore[assignment]
    return roles


def _family(graph: ir.Graph, kind: str, norms: Iterable[str], graph_nodes: dict[str, ir.Node]) -> str:
    classes = " ".join(n.metadata_props.get(CLASSES_KEY, "") for n in list(graph)[:400]).lower()
    for token, family in (("llama", "llama"), ("gpt2", "gpt2"), ("vit", "vit"), ("bert", "bert")):
        if token in classes:
            return family
    norm_ops = {graph_nodes[n].op_type for n in norms}
    if kind == "decoder":
        return "llama" if norm_ops & {"RMSNormalization", "ReduceMean"} else "gpt2"
    return "unknown"


def _dim_name(value: ir.Value | None, axis: int) -> str | None:
    if value is None or value.shape is None or len(value.shape) <= axis:
        return None
    d = value.shape[axis]
    return None if isinstance(d, int) else (d.value if hasattr(d, "value") else str(d))


def discover(model: ir.Model) -> ModelMap:
    """Find the transformer structure of ``model``.

    Raises:
        StructureError: the graph has no recognisable transformer blocks; the message says what was
            looked for and what was found.
    """
    try:
        return _discover(model)
    except StructureError as e:
        inserted = sorted({n.op_type for n in model.graph if n.domain == "parekit"})
        if not inserted or e.note:
            raise
        raise StructureError(
            e.message,
            note=f"the graph already holds parekit nodes ({', '.join(inserted)}) whose rewiring the block "
            "patterns do not follow; analyse the model before that pass",
        ) from e


def _discover(model: ir.Model) -> ModelMap:
    graph = model.graph
    if any(not node.name for node in graph):
        # Everything below refers to nodes by name (the map outlives this call); name them.
        from onnx_ir.passes.common import NameFixPass

        NameFixPass()(model)
    nxg = _node_graph(graph)
    blocks = _blocks_from_scopes(graph)
    how = "exporter scopes"
    if not blocks:
        blocks = _blocks_from_patterns(graph, nxg)
        how = "attention patterns"
    if not blocks:
        ops = Counter(n.op_type for n in graph)
        raise StructureError(
            "no transformer blocks found: looked for exporter module scopes '<prefix>.<index>' and for "
            "attention cores (ONNX Attention, or MatMul → Softmax → MatMul)",
            note=f"the graph has {len(graph)} nodes; most common ops: {dict(ops.most_common(8))}",
        )
    logger.debug("found %d blocks from %s", len(blocks), how)
    layers: list[LayerMap] = []
    geometry: list[tuple[int, int]] = []
    cores: list[ir.Node] = []
    for index, (scope, nodes) in enumerate(blocks):
        site, core, heads, head_dim = _attention_site(nodes, graph)
        geometry.append((heads, head_dim))
        cores.append(core)
        x_in, x_out = _block_io(nodes, graph)
        layers.append(
            LayerMap(
                index=index,
                scope=scope,
                input=x_in.name,  # type: ignore[arg-type]
                output=x_out.name,  # type: ignore[arg-type]
                nodes=tuple(n.name for n in nodes),  # type: ignore[misc]
                attention=site,
                norms=_norms(nodes),
                mlp=_mlp(nodes, core, nxg),
            )
        )
    for prev, nxt in zip(layers, layers[1:]):
        if prev.output != nxt.input:
            raise StructureError(
                f"layer {prev.index} ({prev.scope}) returns '{prev.output}' but layer {nxt.index} "
                f"({nxt.scope}) reads '{nxt.input}': the residual stream is not a chain"
            )
    heads, head_dim = geometry[0]
    hidden = next(
        (_static_dim(v, -1) for n in blocks[0][1] for v in n.inputs if v is not None and v.name == layers[0].input),
        None,
    )
    if hidden is None:
        raise StructureError(f"layer 0: the residual stream '{layers[0].input}' has no static hidden size")
    has_cache = all(lm.attention.past_key and lm.attention.past_value for lm in layers)
    if has_cache:
        past = next(v for v in graph.inputs if v.name == layers[0].attention.past_key)
        kv_heads = _static_dim(past, 1) or heads
    else:
        kv_heads = _kv_heads(cores[0], heads)
    causal = has_cache or any(
        c.op_type == "Attention" and "is_causal" in c.attributes and c.attributes["is_causal"].value for c in cores
    ) or any(n.op_type in ("Trilu", "LessOrEqual") for n in graph if n.name not in {x for lm in layers for x in lm.nodes})
    kind = "decoder" if causal else "encoder"
    block_nodes = {x for lm in layers for x in lm.nodes}
    last_core = cores[-1].name
    head_nodes = tuple(_nm(n) for n in graph if n.name not in block_nodes and n.name in nx.descendants(nxg, last_core))
    roles = _input_roles(graph, nxg)
    anchor = next((v for v in graph.inputs if v.name in (roles.get("input_ids"), roles.get("pixel_values"))), None)
    graph_nodes = {_nm(n): n for n in graph}
    norms = [x for lm in layers for x in lm.norms]
    opset = model.opset_imports.get("", 0)
    return ModelMap(
        kind=kind,  # type: ignore[arg-type]
        family=_family(graph, kind, norms, graph_nodes),
        opset=opset,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        layers=tuple(layers),
        embedding_output=layers[0].input,
        final_output=layers[-1].output,
        head_nodes=head_nodes,
        batch_dim=_dim_name(anchor, 0),
        seq_dim=_dim_name(anchor, 1) if roles.get("input_ids") else None,
        inputs=roles,
        has_kv_cache=has_cache,
    )
