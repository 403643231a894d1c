"""kv-fill: a decoder cut into stage, fill and head pieces, for per-token exits with CALM's KV fill.

    ids ─► stage 0 ─► x_c0 ─► stage 1 ─► x_c1 ─► … ─► stage m ─► x_{N-1} ─► head ─► logits
               │           │      │           │
               ▼           │      ▼           │                (presents of the layers each stage runs)
       presents 0..c0      │  presents …c1    │
                           ▼                  ▼
                 fill 0: x_c0 ─► presents of layers c0+1..N-1      fill 1: x_c1 ─► presents c1+1..N-1

Exit after cut ``c``: run stages up to ``c``, the head on ``x_c``, and fill ``c``. The fill is what is
left of the model after every use of the stream leaving block ``j`` (``j = c+1..N-1``) is replaced by
``x_c`` and dead code is removed: each later layer's input norm and K/V projections (rotary included)
of the exited state, appended to that layer's cache; its attention and MLP outputs die. That is CALM's
state propagation, so every later token sees a complete cache.

Each piece is a backward slice of the original graph from the piece's outputs, stopping at the stream
it reads: values other than the stream (rotary tables, expanded masks) are recomputed in the piece from
graph inputs. A piece keeps the original value names, so one dictionary of values feeds them all.
Weights are not copied into the pieces: every initializer of at least :data:`SHARE_MIN_BYTES` is an
external reference, and :func:`weights` gives the arrays once, for the runtime to hand the same memory
to every session (:mod:`parekit.runtime.exit_decode`). Each piece records what it is in the
``parekit.kv_fill`` metadata (JSON: form, piece, cut index, cuts, layers run, layers filled).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from parekit.analysis.modelmap import ModelMap
from parekit.errors import OptionError, StructureError, echo
from parekit.segments.split import EXITS_KEY, parse_exits

__all__ = ["KV_FILL_KEY", "SHARE_MIN_BYTES", "KvFillPieces", "Piece", "build_pieces", "cuts_every", "weights"]

logger = logging.getLogger(__name__)

KV_FILL_KEY = "parekit.kv_fill"
"""Metadata key of a piece's description (JSON)."""

SHARE_MIN_BYTES = 1024
"""Initializers this large or larger are shared between pieces (external references)."""

WEIGHTS_FILE = "kv_fill.weights"
"""The file name every shared initializer's external reference names (offsets in :class:`KvFillPieces`)."""

PieceKind = Literal["prelude", "stage", "fill", "head"]


@dataclass
class Piece:
    """One piece: a self-contained ONNX model over original value names.

    Attributes:
        kind: ``stage`` (stream at the previous cut, or the token ids, → stream at this cut + presents of
            its layers), ``fill`` (stream at a cut → presents of every later layer), ``head`` (final
            stream → logits).
        index: The cut it ends at (stage) or starts from (fill); 0 for the head.
        layers: Layers whose presents it outputs (stage: run in full; fill: filled by propagation).
        proto: The model; shared initializers are external references into :data:`WEIGHTS_FILE`.
        inputs: Its graph input names.
        outputs: Its graph output names.
    """

    kind: PieceKind
    index: int
    layers: tuple[int, ...]
    proto: onnx.ModelProto
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass
class KvFillPieces:
    """A decoder as kv-fill pieces.

    Attributes:
        prelude: Graph inputs → the values the blocks read besides the stream (masks, rotary tables,
            shapes), computed once per step.
        cuts: The last layer of each stage, ascending; the last is ``num_layers - 1``.
        num_layers: Layers of the model.
        streams: The residual-stream value leaving each cut (the last: the stream entering the head).
        stages: One per cut.
        fills: One per cut but the last.
        head: Final stream → logits (the model's own head; on the stream of a cut: the logit lens).
        exit_heads: Per cut index, the model's own exit branch at that layer (part 1's ``early-exit``,
            adapter included), where it has one: stream at the cut → that exit's logits.
        logits: The logits output's name.
        presents: Per layer, its present key and value output names.
        offsets: Per shared initializer, ``(offset, nbytes)`` in :data:`WEIGHTS_FILE`.
    """

    prelude: Piece
    cuts: tuple[int, ...]
    num_layers: int
    streams: tuple[str, ...]
    stages: list[Piece]
    fills: list[Piece]
    head: Piece
    logits: str
    presents: tuple[tuple[str, str], ...]
    exit_heads: dict[int, Piece] = field(default_factory=dict)
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def pieces(self) -> list[Piece]:
        return [self.prelude, *self.stages, *self.fills, self.head, *self.exit_heads.values()]


def cuts_every(num_layers: int, every: int) -> tuple[int, ...]:
    """Cuts after every ``every`` layers (layers ``every-1, 2·every-1, …``) and after the last layer.

    Raises:
        OptionError: ``every`` is not in ``[1, num_layers]``.
    """
    if not 1 <= every <= num_layers:
        raise OptionError(f"kv-fill: exits every {every} layers: need 1..{num_layers} (the model's layers)")
    return tuple(sorted({*range(every - 1, num_layers, every), num_layers - 1}))


def weights(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The shared initializers of ``proto`` (the source model) as arrays, by name."""
    return {
        t.name: numpy_helper.to_array(t)
        for t in proto.graph.initializer
        if _nbytes(t) >= SHARE_MIN_BYTES
    }


def exit_heads(proto: onnx.ModelProto, logits: str) -> dict[int, str]:
    """Per layer, the output of the model's exit on ``logits`` (``parekit.exits`` metadata), if any.

    Raises:
        StructureError: The metadata is not the early-exit JSON object.
    """
    data = parse_exits({p.key: p.value for p in proto.metadata_props}.get(EXITS_KEY))
    if data is None:
        return {}
    found = {int(e["layer"]): str(e["outputs"][logits]) for e in data["exits"] if logits in e["outputs"]}
    names = {o.name for o in proto.graph.output}
    return {layer: name for layer, name in found.items() if name in names}


def calibrated_thresholds(metadata: dict[str, str]) -> dict[int, float]:
    """Per exit layer, the gate threshold the ``early-exit`` pass set (calibrated by a budget, or given)
    for the ``margin`` signal; exits with another signal are left out. ``{}`` without exits."""
    data = parse_exits(metadata.get(EXITS_KEY))
    if data is None:
        return {}
    try:
        return {e["layer"]: float(e["threshold"]) for e in data["exits"] if e.get("signal") == "margin"}
    except (KeyError, TypeError, ValueError) as exc:
        raise StructureError(f"model metadata '{EXITS_KEY}': a margin exit has no numeric threshold ({exc})") from None


def exit_layers(proto: onnx.ModelProto) -> tuple[int, ...]:
    """The layers of the model's own exits (``parekit.exits``), ascending; ``()`` without any."""
    outputs = [o.name for o in proto.graph.output if not o.name.startswith("present")]
    return tuple(sorted(exit_heads(proto, "logits" if "logits" in outputs else outputs[0]))) if outputs else ()


def _nbytes(t: onnx.TensorProto) -> int:
    size = int(np.prod(t.dims)) if t.dims else 1
    if t.data_type == onnx.TensorProto.STRING:
        return 0
    return size * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def build_pieces(proto: onnx.ModelProto, mm: ModelMap, cuts: Sequence[int]) -> KvFillPieces:
    """Cut decoder ``proto`` (described by ``mm``) into stage, fill and head pieces at ``cuts``.

    Args:
        proto: The decoder (weights loaded; it is read, not changed).
        mm: Its structure map (:func:`parekit.analysis.discover`).
        cuts: Layers after which an exit is possible (0-based); the last layer is added.

    Returns:
        The pieces.

    Raises:
        OptionError: A cut is out of range.
        StructureError: Not a decoder with a KV cache, or a graph the slicer does not handle (subgraphs,
            a layer without its present outputs, a value without a producer).
    """
    n = mm.num_layers
    if mm.kind != "decoder" or not mm.has_kv_cache:
        raise StructureError("kv-fill: the model is not a decoder with an explicit KV cache")
    bad = [c for c in cuts if not 0 <= c < n]
    if bad:
        raise OptionError(f"kv-fill: cut(s) {bad} out of range: the model has {n} layers (0..{n - 1})")
    cut_list = tuple(sorted({*cuts, n - 1}))
    graph = proto.graph
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise StructureError(f"kv-fill: node '{echo(node.name)}' has a subgraph; the slicer handles flat graphs")
    presents = []
    for lm in mm.layers:
        key, value = lm.attention.present_key, lm.attention.present_value
        if not key or not value:
            raise StructureError(f"kv-fill: layer {lm.index} has no present key/value output")
        presents.append((key, value))
    logits = [o.name for o in graph.output if o.name not in {p for kv in presents for p in kv}]
    if not logits:
        raise StructureError("kv-fill: the model has no logits output")
    if "logits" in logits:
        logits.insert(0, "logits")
    own_exits = exit_heads(proto, logits[0])
    if mm.layers[-1].output != mm.final_output:
        raise StructureError("kv-fill: the last block's output is not the stream entering the head")
    slicer = _Slicer(proto)
    streams = tuple(mm.layers[c].output for c in cut_list)
    meta = {"form": "kv-fill", "cuts": list(cut_list)}
    side = _side_values(proto, mm, slicer)
    prelude = slicer.piece("prelude", 0, (), sorted(side), set(), {}, meta)
    stages, fills = [], []
    for k, c in enumerate(cut_list):
        first = cut_list[k - 1] + 1 if k else 0
        run = tuple(range(first, c + 1))
        stop = ({streams[k - 1]} if k else set()) | side
        outs = [streams[k], *(p for i in run for p in presents[i])]
        stages.append(slicer.piece("stage", k, run, outs, stop, {}, meta))
        if c == n - 1:
            continue
        filled = tuple(range(c + 1, n))
        # CALM: every later block reads the exited stream; only its K/V path stays alive.
        rename = {mm.layers[j].output: streams[k] for j in range(c + 1, n - 1)}
        outs = [p for i in filled for p in presents[i]]
        fills.append(slicer.piece("fill", k, filled, outs, {streams[k]} | side, rename, meta))
    head = slicer.piece("head", 0, (), logits[:1], {mm.final_output}, {}, meta)
    heads = {k: slicer.piece("head", k, (c,), [own_exits[c]], {streams[k]} | side, {}, meta)
             for k, c in enumerate(cut_list) if c in own_exits}
    return KvFillPieces(
        prelude=prelude,
        cuts=cut_list,
        num_layers=n,
        streams=streams,
        stages=stages,
        fills=fills,
        head=head,
        exit_heads=heads,
        logits=logits[0],
        presents=tuple(presents),
        offsets=slicer.offsets,
    )


def _side_values(proto: onnx.ModelProto, mm: ModelMap, slicer: _Slicer) -> set[str]:
    """Values the blocks read that are computed outside every block from graph inputs alone."""
    in_blocks = {name for lm in mm.layers for name in lm.nodes}
    nodes = [n for n in proto.graph.node if n.name in in_blocks]
    made = {out for n in nodes for out in n.output}
    outside = {x for n in nodes for x in n.input if x and x not in made}
    candidates = outside - set(slicer.inputs) - set(slicer.inits) - {mm.embedding_output}
    streams = {lm.output for lm in mm.layers} | {mm.embedding_output}
    return {v for v in candidates if not slicer.reaches(v, streams | made)}


class _Slicer:
    """Backward slices of one graph: the nodes that compute some outputs from some stop values."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.proto = proto
        graph = proto.graph
        self.producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
        self.inputs = {v.name: v for v in graph.input}
        self.inits = {t.name: t for t in graph.initializer}
        self.types = {v.name: v for v in [*graph.value_info, *graph.input, *graph.output]}
        self.offsets: dict[str, tuple[int, int]] = {}
        end = 0
        for t in graph.initializer:
            size = _nbytes(t)
            if size >= SHARE_MIN_BYTES:
                self.offsets[t.name] = (end, size)
                end += -(-size // 64) * 64

    def reaches(self, value: str, targets: set[str]) -> bool:
        """Whether computing ``value`` reads any of ``targets``."""
        graph = self.proto.graph
        stack, seen = [value], set()
        while stack:
            name = stack.pop()
            if name in targets:
                return True
            if name in seen or name not in self.producer:
                continue
            seen.add(name)
            stack.extend(graph.node[self.producer[name]].input)
        return False

    def piece(
        self,
        kind: PieceKind,
        index: int,
        layers: tuple[int, ...],
        outputs: Sequence[str],
        stops: set[str],
        rename: dict[str, str],
        meta: Mapping[str, object],
    ) -> Piece:
        graph = self.proto.graph
        keep: set[int] = set()
        leaves: set[str] = set()
        stack = list(outputs)
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or not name:
                continue
            seen.add(name)
            if name in stops or name in self.inputs or name in self.inits:
                leaves.add(name)
                continue
            i = self.producer.get(name)
            if i is None:
                raise StructureError(f"kv-fill: value '{echo(name)}' has no producer and is not a graph input")
            if i not in keep:
                keep.add(i)
                stack.extend(rename.get(x, x) for x in graph.node[i].input)
        nodes = []
        for i in sorted(keep):
            node = onnx.NodeProto()
            node.CopyFrom(graph.node[i])
            for j, x in enumerate(node.input):
                if x in rename:
                    node.input[j] = rename[x]
            nodes.append(node)
        g_inputs = [self.inputs[v.name] for v in graph.input if v.name in leaves]
        for stop in sorted(stops & leaves):
            if stop not in self.types:
                raise StructureError(f"kv-fill: the stream '{echo(stop)}' has no type in the graph")
            g_inputs.append(self.types[stop])
        inits = [self._initializer(self.inits[v]) for v in sorted(leaves) if v in self.inits and v not in stops]
        g_outputs = []
        for out in outputs:
            if out not in self.types:
                raise StructureError(f"kv-fill: output '{echo(out)}' has no type in the graph")
            g_outputs.append(self.types[out])
        names = {x for node in nodes for x in [*node.input, *node.output]}
        info = [v for v in graph.value_info if v.name in names and v.name not in {o.name for o in g_outputs}]
        new = onnx.helper.make_graph(nodes, f"{graph.name or 'main'}.{kind}{index}", g_inputs, g_outputs, inits,
                                     value_info=info)
        model = onnx.helper.make_model(new, opset_imports=list(self.proto.opset_import))
        model.ir_version = self.proto.ir_version
        model.functions.extend(self.proto.functions)
        for prop in self.proto.metadata_props:
            model.metadata_props.add(key=prop.key, value=prop.value)
        description = {**meta, "piece": kind, "index": index, ("layers_filled" if kind == "fill" else "layers_run"): list(layers)}
        model.metadata_props.add(key=KV_FILL_KEY, value=json.dumps(description))
        logger.debug("kv-fill: %s %d: %d nodes, layers %s", kind, index, len(nodes), list(layers))
        return Piece(kind, index, layers, model, tuple(v.name for v in g_inputs), tuple(o.name for o in g_outputs))

    def _initializer(self, t: onnx.TensorProto) -> onnx.TensorProto:
        if t.name not in self.offsets:
            return t
        ref = onnx.TensorProto()
        ref.name, ref.data_type = t.name, t.data_type
        ref.dims.extend(t.dims)
        ref.data_location = onnx.TensorProto.EXTERNAL
        offset, size = self.offsets[t.name]
        for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(size))):
            ref.external_data.add(key=key, value=value)
        return ref
