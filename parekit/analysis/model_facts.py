"""Model-level facts: input roles, the architecture family, symbolic dimension names."""

from __future__ import annotations

from collections.abc import Iterable

import onnx_ir as ir

from parekit.analysis.graph_walk import (
    CLASSES_KEY,
    arg,
    is_const,
    is_float,
    prop,
    rank,
    static_dim,
    walk_forward,
)

# Embedding tables shorter than this index token types/segments, not positions.
_MIN_POSITION_TABLE = 64
# Ops between position ids and the rotary Cos/Sin (inv_freq product, layout, dtype).
_ROTARY_PATH_OPS = frozenset({"Cast", "Unsqueeze", "Mul", "MatMul", "Reshape", "Expand", "Transpose", "Concat"})


def input_roles(graph: ir.Graph) -> dict[str, str]:
    """Roles of the graph inputs (``input_ids``, ``attention_mask``, ``position_ids``, ...) → input name."""
    roles: dict[str, str] = {}
    ints = [v for v in graph.inputs if v.dtype is not None and not v.dtype.is_floating_point() and rank(v) == 2]
    floats4 = [v for v in graph.inputs if is_float(v) and rank(v) == 4]
    tables: list[tuple[int, ir.Value]] = []
    for v in ints:
        for node, idx in walk_forward(v, frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze"}), limit=3):
            if node.op_type == "Gather" and idx == 1 and is_const(arg(node, 0)):
                tables.append((static_dim(node.inputs[0], 0) or 0, v))
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
        reached = {n.op_type for n, _ in walk_forward(v, _ROTARY_PATH_OPS, 8)}
        if reached & {"Cos", "Sin", "RotaryEmbedding"} and "position_ids" not in roles:
            roles["position_ids"] = v.name  # type: ignore[assignment]
        elif "attention_mask" not in roles:
            roles["attention_mask"] = v.name  # type: ignore[assignment]
    if floats4 and "input_ids" not in roles:
        roles["pixel_values"] = floats4[0].name  # type: ignore[assignment]
    return roles


def family(graph: ir.Graph, kind: str, norms: Iterable[str], graph_nodes: dict[str, ir.Node]) -> str:
    """Best guess at the architecture family, for display only."""
    classes = " ".join(prop(n, CLASSES_KEY) for n in list(graph)[:400]).lower()
    for token, name in (("llama", "llama"), ("gpt2", "gpt2"), ("vit", "vit"), ("bert", "bert")):
        if token in classes:
            return name
    norm_ops = {graph_nodes[n].op_type for n in norms}
    if kind == "decoder":
        return "llama" if norm_ops & {"RMSNormalization", "ReduceMean"} else "gpt2"
    return "unknown"


def dim_name(value: ir.Value | None, axis: int) -> str | None:
    """The symbolic name of ``value``'s dim ``axis`` (``None`` when static or absent)."""
    if value is None or value.shape is None or len(value.shape) <= axis:
        return None
    d = value.shape[axis]
    return None if isinstance(d, int) else (d.value if hasattr(d, "value") else str(d))
