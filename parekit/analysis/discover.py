"""Structure discovery: find the transformer in a graph and describe it as a :class:`ModelMap`.

Blocks are grouped by exporter module scopes, or around attention cores when a graph has none
(:mod:`parekit.analysis.blocks`). Inside a block everything is found from graph patterns, never from
tensor names: the residual stream (the one ``[B, S, hidden]`` float value entering from outside, the
one leaving it), the attention core and KV cache (:mod:`parekit.analysis.attention`), norms and the MLP
(:mod:`parekit.analysis.parts`); then the model-level facts (:mod:`parekit.analysis.model_facts`).
Graph walking helpers live in :mod:`parekit.analysis.graph_walk`.
"""

from __future__ import annotations

import logging
from collections import Counter

import networkx as nx
import onnx_ir as ir

from parekit.analysis import parts
from parekit.analysis.attention import attention_site, kv_heads
from parekit.analysis.blocks import block_io, blocks_from_patterns, blocks_from_scopes
from parekit.analysis.graph_walk import nm, node_graph, static_dim
from parekit.analysis.model_facts import dim_name, family, input_roles
from parekit.analysis.modelmap import LayerMap, ModelKind, ModelMap
from parekit.errors import StructureError

logger = logging.getLogger(__name__)


def discover(model: ir.Model) -> ModelMap:
    """Find the transformer structure of ``model``.

    Raises:
        StructureError: the graph has no recognisable transformer blocks, or a node on the way is
            malformed (e.g. an attention ``MatMul`` with one input); the message says what was looked
            for and what was found.
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
    nxg = node_graph(graph)
    blocks = blocks_from_scopes(graph)
    how = "exporter scopes"
    if not blocks:
        blocks = blocks_from_patterns(graph)
        how = "attention patterns"
    if not blocks:
        ops = Counter(n.op_type for n in graph)
        raise StructureError(
            "no transformer blocks found: looked for exporter module scopes '<prefix>.<index>' and for "
            "attention cores (ONNX Attention, or MatMul → Softmax → MatMul)",
            note=f"the graph has {len(graph)} nodes; most common ops: {dict(ops.most_common(8))}",
        )
    logger.debug("found %d blocks from %s", len(blocks), how)
    graph_nodes = {nm(n): n for n in graph}
    layers: list[LayerMap] = []
    geometry: list[tuple[int, int]] = []
    cores: list[ir.Node] = []
    for index, (scope, nodes) in enumerate(blocks):
        site, core, heads, head_dim = attention_site(nodes, graph)
        geometry.append((heads, head_dim))
        cores.append(core)
        x_in, x_out = block_io(nodes, graph)
        mlp = parts.mlp(nodes, core, nxg)
        mid = parts.mid_point(graph_nodes[mlp.down]) if mlp is not None and mlp.down else None
        layers.append(
            LayerMap(
                index=index,
                scope=scope,
                input=nm(x_in),
                output=nm(x_out),
                nodes=tuple(nm(n) for n in nodes),
                attention=site,
                norms=parts.norms(nodes),
                mlp=mlp,
                mid=nm(mid) if mid is not None else None,
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
        (static_dim(v, -1) for n in blocks[0][1] for v in n.inputs if v is not None and v.name == layers[0].input),
        None,
    )
    if hidden is None:
        raise StructureError(f"layer 0: the residual stream '{layers[0].input}' has no static hidden size")
    has_cache = all(lm.attention.past_key and lm.attention.past_value for lm in layers)
    if has_cache:
        past = next(v for v in graph.inputs if v.name == layers[0].attention.past_key)
        num_kv_heads = static_dim(past, 1) or heads
    else:
        num_kv_heads = kv_heads(cores[0], heads)
    block_nodes = {x for lm in layers for x in lm.nodes}
    causal = (
        has_cache
        or any(
            c.op_type == "Attention" and "is_causal" in c.attributes and c.attributes["is_causal"].value
            for c in cores
        )
        or any(n.op_type in ("Trilu", "LessOrEqual") for n in graph if n.name not in block_nodes)
    )
    kind: ModelKind = "decoder" if causal else "encoder"
    after_last = nx.descendants(nxg, cores[-1].name)
    head_nodes = tuple(nm(n) for n in graph if n.name not in block_nodes and n.name in after_last)
    roles = input_roles(graph)
    anchor = next((v for v in graph.inputs if v.name in (roles.get("input_ids"), roles.get("pixel_values"))), None)
    norm_names = [x for lm in layers for x in lm.norms]
    return ModelMap(
        kind=kind,
        family=family(graph, kind, norm_names, graph_nodes),
        opset=model.opset_imports.get("", 0),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        layers=tuple(layers),
        embedding_output=layers[0].input,
        final_output=layers[-1].output,
        head_nodes=head_nodes,
        batch_dim=dim_name(anchor, 0),
        seq_dim=dim_name(anchor, 1) if roles.get("input_ids") else None,
        inputs=roles,
        has_kv_cache=has_cache,
    )
