"""Cut a model into per-segment models at chosen layers: the ``segments`` form of early exit.

:func:`split_model` cuts after the blocks at the given layers (default: the exits recorded in the
``parekit.exits`` metadata by the ``early-exit`` pass). Segment ``k`` holds blocks
``(cut_{k-1}, cut_k]`` — segment 0 also the embeddings, the last one the real head — plus the exit
branch of ``cut_k``. How nodes are placed and which values may cross a boundary is in
:mod:`parekit.segments.partition`; this module copies each segment into its own
:class:`onnx_ir.Model` (initializer tensors shared with the source, not copied) and describes it
for the manifest (:mod:`parekit.segments.manifest`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from parekit.analysis import discover
from parekit.analysis.modelmap import ModelMap
from parekit.errors import OptionError, StructureError
from parekit.segments.manifest import SegmentIO
from parekit.segments.partition import Partition, SegmentNodes

logger = logging.getLogger(__name__)

__all__ = ["EXITS_KEY", "SEGMENT_KEY", "Segment", "SegmentPlan", "parse_exits", "read_exits", "split_model"]

EXITS_KEY = "parekit.exits"
"""Model metadata key of the exits the ``early-exit`` pass added (JSON, see docs/early_exit.md)."""
SEGMENT_KEY = "parekit.segment"
"""Metadata key of a segment model: ``{"index": k, "segments": K + 1, "layers": [first, last]}``."""


@dataclass
class Segment:
    """One segment model and its place in the plan.

    Attributes:
        index: ``k``.
        layers: First and last block it holds.
        model: The segment model (initializers share the source's tensors).
        inputs: What it reads: original feeds and earlier segments' outputs.
        outputs: What it produces: original graph outputs, then values later segments read.
        exit: The exit after its last block: ``{"layer", "take", "score", "outputs"}``, or ``None``.
        recomputed: Nodes of earlier segments it recomputes (shape tensors and other non-passable values).
    """

    index: int
    layers: tuple[int, int]
    model: ir.Model
    inputs: tuple[SegmentIO, ...]
    outputs: tuple[SegmentIO, ...]
    exit: dict[str, Any] | None
    recomputed: int = 0

    @property
    def file(self) -> str:
        """The segment's file name in a segments directory."""
        return f"segment{self.index}.onnx"

    def to_dict(self) -> dict[str, Any]:
        """The segment's manifest entry."""
        return {
            "file": self.file,
            "layers": list(self.layers),
            "inputs": [io.to_dict() for io in self.inputs],
            "outputs": [io.to_dict() for io in self.outputs],
            "exit": self.exit,
        }


@dataclass
class SegmentPlan:
    """A model cut into segments.

    Attributes:
        kind: ``encoder`` or ``decoder``.
        cuts: The layers cut after.
        outputs: The source model's graph outputs, in order.
        exits: The ``parekit.exits`` object when segments end at exits, else ``None``.
        segments: The segments, in run order.
    """

    kind: str
    cuts: list[int]
    outputs: list[str]
    exits: dict[str, Any] | None
    segments: list[Segment]

    def manifest(self, source: str) -> dict[str, Any]:
        """The manifest (``manifest.json``) of this plan; ``source`` is the source model's file name."""
        return {
            "format": "parekit.segments",
            "version": 1,
            "source": source,
            "kind": self.kind,
            "outputs": list(self.outputs),
            "exits": self.exits,
            "segments": [s.to_dict() for s in self.segments],
        }


def read_exits(model: ir.Model) -> dict[str, Any] | None:
    """The model's ``parekit.exits`` metadata, or ``None`` when it has none.

    Raises:
        StructureError: The metadata is not the JSON object the early-exit contract describes.
    """
    return parse_exits(model.metadata_props.get(EXITS_KEY))


def parse_exits(raw: str | None) -> dict[str, Any] | None:
    """:func:`read_exits` on the metadata value itself (``None``: no exits), for callers holding a protobuf.

    Raises:
        StructureError: The text is not the JSON object the early-exit contract describes.
    """
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise StructureError(f"model metadata '{EXITS_KEY}' is not valid JSON: {exc}") from exc
    exits = data.get("exits") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(exits, list):
        raise StructureError(f"model metadata '{EXITS_KEY}' is not a version-1 exits object")
    for entry in exits:
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("layer"), int)
            and all(isinstance(entry.get(k), str) for k in ("take", "score"))
            and isinstance(entry.get("outputs"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in entry["outputs"].items())
        )
        if not ok:
            raise StructureError(f"model metadata '{EXITS_KEY}': an exit entry lacks layer/take/score/outputs")
    return data


def split_model(model: ir.Model, at: Sequence[int] | None = None, *, mm: ModelMap | None = None) -> SegmentPlan:
    """Cut ``model`` into segments after the blocks at layers ``at``.

    Args:
        model: The model (not modified, except that structure discovery names unnamed nodes).
        at: 0-based layers to cut after, each below the last layer; ``None``: the exits recorded in the
            ``parekit.exits`` metadata.
        mm: The model's structure map, when already computed.

    Returns:
        The plan, with one in-memory model per segment.

    Raises:
        OptionError: No cut, a layer out of range or repeated, a cut at the last layer, ``at=None`` on a
            model without exits, or exits in form=if.
        StructureError: The structure cannot be found or does not allow the cut.
    """
    exits = read_exits(model)
    if exits is not None and exits.get("form") == "if":
        raise OptionError(
            "split: the model's exits are in form=if (the later blocks inside If nodes): it cannot be cut",
            note="apply early-exit with form=segments (or outputs) to the original model, then split that",
        )
    if at is None:
        if exits is None or not exits["exits"]:
            raise OptionError(
                f"split: the model records no exits (no '{EXITS_KEY}' metadata)",
                note="cut at plain layers with --at (e.g. --at 3,4), or add exits with the early-exit pass first",
            )
        at = [int(e["layer"]) for e in exits["exits"]]
    if not at:
        raise OptionError("split: no layer to cut at", note="give at least one layer, e.g. --at 3")
    mm = mm or discover(model)
    cuts = [lm.index for lm in mm.select_layers(list(at), "split", "at")]
    if cuts[-1] == mm.num_layers - 1:
        raise OptionError(
            f"split: cannot cut after the last layer ({cuts[-1]}): the real head is there",
            note=f"the model has {mm.num_layers} layers (0..{mm.num_layers - 1}); cut at 0..{mm.num_layers - 2}",
        )
    by_layer = {int(e["layer"]): e for e in exits["exits"]} if exits else {}
    partition = Partition(model, mm, cuts)
    segments = [_segment(model, partition, seg, by_layer) for seg in partition.segments]
    used = exits if any(s.exit is not None for s in segments) else None
    logger.info(
        "split into %d segments after layers %s (%s nodes recomputed)",
        len(segments), cuts, [s.recomputed for s in segments],
    )
    return SegmentPlan(
        kind=mm.kind,
        cuts=cuts,
        outputs=[v.name or "" for v in model.graph.outputs],
        exits=used,
        segments=segments,
    )


def _segment(model: ir.Model, partition: Partition, seg: SegmentNodes, by_layer: dict[int, Any]) -> Segment:
    last = seg.index == len(partition.segments) - 1
    exit_entry = None if last else by_layer.get(seg.layers[1])
    produced = {v.name for v in seg.outputs}
    if exit_entry is not None:
        names = [exit_entry["take"], exit_entry["score"], *exit_entry["outputs"].values()]
        missing = [n for n in names if n not in produced]
        if missing:
            raise StructureError(
                f"split: exit {seg.layers[1]}'s output(s) {missing} are not computed in segment {seg.index}",
                note="the exit branch reads values of later layers; the early-exit metadata does not match the graph",
            )
        exit_entry = {k: exit_entry[k] for k in ("layer", "take", "score", "outputs")}
    return Segment(
        index=seg.index,
        layers=seg.layers,
        model=_build(model, partition, seg),
        inputs=tuple(SegmentIO(v.name or "", partition.batch_axis(v)) for v in seg.inputs),
        outputs=tuple(SegmentIO(v.name or "", partition.batch_axis(v)) for v in seg.outputs),
        exit=exit_entry,
        recomputed=seg.cloned,
    )


def _build(model: ir.Model, partition: Partition, seg: SegmentNodes) -> ir.Model:
    """Copy the segment's nodes into a model of its own (values new, tensors shared)."""
    graph = model.graph
    view = ir.GraphView(
        seg.inputs,
        seg.outputs,
        nodes=seg.nodes,
        initializers=seg.initializers,
        opset_imports=dict(graph.opset_imports),
        name=f"{graph.name or 'graph'}_segment{seg.index}",
    )
    copy = view.clone()
    metadata = {k: v for k, v in model.metadata_props.items() if k != EXITS_KEY}
    metadata[SEGMENT_KEY] = json.dumps(
        {"index": seg.index, "segments": len(partition.segments), "layers": list(seg.layers)}
    )
    out = ir.Model(
        copy,
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        doc_string=model.doc_string,
        functions=_functions(model, seg.nodes),
    )
    out.metadata_props.update(metadata)
    return out


def _functions(model: ir.Model, nodes: Sequence[ir.Node]) -> list[ir.Function]:
    """The model-local functions the nodes call, directly or through other functions."""
    found: dict[ir.OperatorIdentifier, ir.Function] = {}
    work = list(nodes)
    while work:
        node = work.pop()
        key = (node.domain, node.op_type, node.overload)
        function = model.functions.get(key)
        if function is not None and key not in found:
            found[key] = function
            work.extend(ir.traversal.RecursiveGraphIterator(function))
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                work.extend(ir.traversal.RecursiveGraphIterator(attr.as_graph()))
            elif attr.type == ir.AttributeType.GRAPHS:
                for sub in attr.as_graphs():
                    work.extend(ir.traversal.RecursiveGraphIterator(sub))
    return list(found.values())
