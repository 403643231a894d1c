"""Resolve the names a :class:`~parekit.analysis.modelmap.ModelMap` holds back to graph objects."""

from __future__ import annotations

import onnx_ir as ir


def values_by_name(graph: ir.Graph) -> dict[str, ir.Value]:
    """Every named value of the main graph: graph inputs and node outputs (initializers excluded)."""
    found: dict[str, ir.Value] = {v.name: v for v in graph.inputs if v.name}
    for node in graph:
        for v in node.outputs:
            if v.name:
                found[v.name] = v
    return found
