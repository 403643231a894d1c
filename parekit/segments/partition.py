"""Which segment every node of a model belongs to, and what each segment reads and passes on.

Segment ``k`` holds the blocks ``(cut_{k-1}, cut_k]`` of the :class:`~parekit.analysis.ModelMap`; block
nodes are placed by the map's layer node sets. Every other node (embeddings, mask and rotary
construction, heads, exit branches) is placed by reachability: first the earliest segment whose
values it reads (a forward pass), then the earliest segment that consumes what it produces (a
backward pass), so shared preparation runs where it is first needed, the real head after the last
block, and an exit branch — whose nodes only feed that exit's graph outputs — right after its layer.

A value that crosses a segment boundary must be *passable*: it carries the batch as axis 0 (the
map's symbolic batch dim) and depends on the feeds' data, so that the runtime can drop the rows that
exited and gather the remaining ones. Anything else — shape tensors holding the batch size as data,
``[1, S, D]`` rotary tables, scalars — is recomputed inside the consuming segment by cloning its
producer cone back to graph inputs, initializers and passable values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import onnx_ir as ir

from parekit.analysis.modelmap import ModelMap
from parekit.errors import StructureError

# Ops whose output holds a shape, not the data: a value computed from shapes only holds the batch
# size as data and must be recomputed after rows are dropped.
_SHAPE_OPS = frozenset({"Shape", "Size"})


@dataclass
class SegmentNodes:
    """What one segment computes and exchanges (original graph objects, not yet copied).

    Attributes:
        index: The segment index ``k``.
        layers: First and last block index of the segment.
        nodes: The segment's nodes in graph order: its own plus the clones of earlier segments' nodes
            it recomputes.
        cloned: How many of ``nodes`` are clones.
        inputs: Values it reads from outside (graph inputs first, then earlier segments' values).
        initializers: Initializers its nodes read.
        outputs: Original graph outputs it produces, then its values later segments read.
    """

    index: int
    layers: tuple[int, int]
    nodes: list[ir.Node] = field(default_factory=list)
    cloned: int = 0
    inputs: list[ir.Value] = field(default_factory=list)
    initializers: list[ir.Value] = field(default_factory=list)
    outputs: list[ir.Value] = field(default_factory=list)


class Partition:
    """The segments of ``model`` cut after the blocks in ``cuts`` (ascending, each below the last block).

    Args:
        model: The model (not modified).
        mm: Its structure map.
        cuts: The cut layers.

    Raises:
        StructureError: A node would need a value of a later segment, or a graph output is not produced
            by any node.
    """

    def __init__(self, model: ir.Model, mm: ModelMap, cuts: Sequence[int]) -> None:
        self.graph = model.graph
        self.mm = mm
        self.cuts = list(cuts)
        self.order = list(self.graph)
        self.position = {node: i for i, node in enumerate(self.order)}
        self.compact = mm.batch_dim is not None
        self._top = self._top_level_nodes()
        self._data = self._data_dependence()
        self.segment_of = self._assign()
        bounds = [-1, *self.cuts, mm.num_layers - 1]
        self.segments = [
            SegmentNodes(k, (bounds[k] + 1, bounds[k + 1])) for k in range(len(self.cuts) + 1)
        ]
        for seg in self.segments:
            self._close(seg)
        self._outputs()

    # ------------------------------------------------------------------------------------------
    # reading the graph

    def reads(self, node: ir.Node) -> list[ir.Value]:
        """Main-graph values ``node`` reads: its inputs and the outer values its subgraphs use."""
        found = [v for v in node.inputs if v is not None]
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                graphs: Iterable[ir.Graph] = [attr.as_graph()]
            elif attr.type == ir.AttributeType.GRAPHS:
                graphs = attr.as_graphs()
            else:
                continue
            for sub in graphs:
                for inner in ir.traversal.RecursiveGraphIterator(sub):
                    found.extend(v for v in inner.inputs if v is not None and v.graph is self.graph)
        return found

    def _top_level_nodes(self) -> dict[ir.Node, ir.Node]:
        """Nodes inside subgraphs → the main-graph node that holds them."""
        top: dict[ir.Node, ir.Node] = {}
        for node in self.order:
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    subs: Iterable[ir.Graph] = [attr.as_graph()]
                elif attr.type == ir.AttributeType.GRAPHS:
                    subs = attr.as_graphs()
                else:
                    continue
                for sub in subs:
                    for inner in ir.traversal.RecursiveGraphIterator(sub):
                        top[inner] = node
        return top

    def consumers(self, node: ir.Node) -> set[ir.Node]:
        """Main-graph nodes that read an output of ``node``."""
        found: set[ir.Node] = set()
        for value in node.outputs:
            for user, _ in value.uses():
                found.add(self._top.get(user, user))
        found.discard(node)
        return found

    def _data_dependence(self) -> dict[ir.Value, bool]:
        """Whether each value depends on the feeds' data (not only on their shapes)."""
        data: dict[ir.Value, bool] = {v: True for v in self.graph.inputs}
        for node in self.order:
            shape_only = node.domain in ("", "ai.onnx") and node.op_type in _SHAPE_OPS
            depends = not shape_only and any(data.get(v, False) for v in self.reads(node))
            for value in node.outputs:
                data[value] = depends
        return data

    def passable(self, value: ir.Value) -> bool:
        """Whether ``value`` may cross a segment boundary (see the module docstring)."""
        if not self.compact:
            return True
        return self._data.get(value, False) and self.batch_axis(value) == 0

    def batch_axis(self, value: ir.Value) -> int | None:
        """0 when the value's first dim is the batch dim (and rows can be dropped), else ``None``."""
        if not self.compact or value.shape is None or len(value.shape) == 0:
            return None
        dim = value.shape[0]
        if isinstance(dim, ir.SymbolicDim) and dim.value == self.mm.batch_dim:
            return 0
        return None

    # ------------------------------------------------------------------------------------------
    # placing nodes

    def _assign(self) -> dict[ir.Node, int]:
        segment_of_layer = {lm.index: sum(1 for c in self.cuts if c < lm.index) for lm in self.mm.layers}
        fixed: dict[str, int] = {}
        for lm in self.mm.layers:
            for name in lm.nodes:
                fixed[name] = segment_of_layer[lm.index]
        outputs = set(self.graph.outputs)
        earliest: dict[ir.Node, int] = {}
        for node in self.order:  # forward: the earliest segment whose values the node reads
            if node.name in fixed:
                earliest[node] = fixed[node.name]
                continue
            producers = [v.producer() for v in self.reads(node)]
            earliest[node] = max((earliest[p] for p in producers if p is not None and p in earliest), default=0)
        segment: dict[ir.Node, int] = {}
        for node in reversed(self.order):  # backward: the earliest segment that consumes its outputs
            if node.name in fixed:
                segment[node] = fixed[node.name]
                continue
            candidates = [segment[c] for c in self.consumers(node) if c in segment]
            if not candidates or any(v in outputs for v in node.outputs):
                candidates.append(earliest[node])
            segment[node] = min(candidates)
        for node in self.order:
            for value in self.reads(node):
                producer = value.producer()
                if producer is not None and producer in segment and segment[producer] > segment[node]:
                    raise StructureError(
                        f"cannot cut the model after layers {self.cuts}: node '{node.name}' (segment "
                        f"{segment[node]}) reads '{value.name}', computed later in segment {segment[producer]}",
                        note="the blocks the structure map found do not run in layer order",
                    )
        return segment

    def _close(self, seg: SegmentNodes) -> None:
        """Own nodes plus the cones of the non-passable values they read from earlier segments."""
        chosen = {n for n in self.order if self.segment_of[n] == seg.index}
        own = len(chosen)
        work = list(chosen)
        while work:
            node = work.pop()
            for value in self.reads(node):
                producer = value.producer()
                if producer is None or producer in chosen or producer not in self.segment_of:
                    continue
                if self.segment_of[producer] < seg.index and not self.passable(value):
                    chosen.add(producer)
                    work.append(producer)
        seg.nodes = sorted(chosen, key=self.position.__getitem__)
        seg.cloned = len(chosen) - own
        produced = {v for n in seg.nodes for v in n.outputs}
        seen: set[ir.Value] = set()
        graph_inputs: list[ir.Value] = []
        crossing: list[ir.Value] = []
        for node in seg.nodes:
            for value in self.reads(node):
                if value in seen or value in produced:
                    continue
                seen.add(value)
                if value.is_initializer():
                    seg.initializers.append(value)
                elif value.producer() is None:
                    graph_inputs.append(value)
                else:
                    crossing.append(value)
        order = {v: i for i, v in enumerate(self.graph.inputs)}
        graph_inputs.sort(key=lambda v: order.get(v, len(order)))
        crossing.sort(key=lambda v: self.position[v.producer()])  # type: ignore[index]
        seg.inputs = graph_inputs + crossing

    def _outputs(self) -> None:
        needed: dict[int, list[ir.Value]] = {seg.index: [] for seg in self.segments}
        for seg in self.segments:
            for value in seg.inputs:
                producer = value.producer()
                if producer is not None:
                    needed[self.segment_of[producer]].append(value)
        for value in self.graph.outputs:
            producer = value.producer()
            if producer is None:
                raise StructureError(
                    f"cannot split: graph output '{value.name}' is a graph input or an initializer, "
                    "not computed by any node"
                )
        for seg in self.segments:
            own = {v for n in seg.nodes if self.segment_of[n] == seg.index for v in n.outputs}
            outs = [v for v in self.graph.outputs if v in own]
            later = sorted(set(needed[seg.index]) - set(outs), key=lambda v: self.position[v.producer()])  # type: ignore[index]
            seg.outputs = outs + later
