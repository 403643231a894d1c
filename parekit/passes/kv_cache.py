"""Shared KV-cache rewiring for the ``kv-*`` passes (a helper module, not a pass).

Exported decoders append each layer's new K/V to the past with one ``Concat`` along the sequence
axis; its output feeds attention *and* is the ``present<suffix>`` graph output::

    past<sfx> ──► Concat(axis=2) ◄── new K/V              past<sfx> ──► Concat ──► full ──► attention
                     │                             =>                      │
                     ▼                                                      └──► <compress> ──► present<sfx>
                present<sfx> ──► attention

The I/O contract (README, "Decoder I/O contract"): a runtime feeds every output ``present<suffix>``
back as the input ``past<suffix>`` and passes ``attention_mask`` over *all* tokens seen plus the new
ones. A pass that keeps fewer cached tokens than were seen therefore maps that mask onto the kept
positions inside the graph (:func:`map_past_mask`).

API (all functions mutate ``model`` in place; :class:`KvSite` objects are snapshots taken before):

* :func:`kv_layers` — per layer, the key and value :class:`KvSite` (past input, Concat, new K/V,
  full cache, present output);
* :func:`set_present` — make a value the ``present<suffix>`` output (attention keeps reading ``full``);
* :func:`replace_past` — make every reader of a ``past<suffix>`` input read another value (e.g. a
  dequantized cache built from new state inputs) and drop that input;
* :func:`add_state_input` / :func:`add_state_output` — extra state under the contract's naming rule;
* :func:`attention_mask`, :func:`new_token_count`, :func:`map_past_mask` — the mask over the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import onnx_ir as ir

from parekit.analysis.lookup import values_by_name
from parekit.analysis.modelmap import ModelMap
from parekit.errors import StructureError

if TYPE_CHECKING:
    from parekit.passes.base import Pass

__all__ = [
    "PAST_PREFIX",
    "PRESENT_PREFIX",
    "KvLayer",
    "KvSite",
    "add_state_input",
    "add_state_output",
    "attention_mask",
    "insert_at_top",
    "kv_layers",
    "map_past_mask",
    "new_token_count",
    "replace_past",
    "set_present",
]

logger = logging.getLogger(__name__)

PAST_PREFIX = "past"
PRESENT_PREFIX = "present"
"""The contract's naming rule: output ``present<suffix>`` is fed back as input ``past<suffix>``."""

SEQ_AXIS = 2
"""Sequence axis of a ``[B, H_kv, T, D]`` cache."""


@dataclass(frozen=True)
class KvSite:
    """One cache tensor (key or value) of one layer, as found in the graph.

    Attributes:
        layer: 0-based layer index.
        role: ``"key"`` or ``"value"``.
        suffix: contract suffix, e.g. ``".0.key"`` (input ``past.0.key``, output ``present.0.key``).
        past: the graph input ``past<suffix>`` ``[B, H_kv, P, D]``.
        new: the new tokens' K/V entering the Concat, ``[B, H_kv, S, D]``.
        concat: the ``Concat(past, new, axis=2)`` node.
        full: the Concat output ``[B, H_kv, P + S, D]``: what attention reads.
        present: the graph output ``present<suffix>`` (``full`` itself in unmodified exports).
    """

    layer: int
    role: Literal["key", "value"]
    suffix: str
    past: ir.Value
    new: ir.Value
    concat: ir.Node
    full: ir.Value
    present: ir.Value

    @property
    def axis(self) -> int:
        """The sequence axis (2)."""
        return SEQ_AXIS


@dataclass(frozen=True)
class KvLayer:
    """The key and value :class:`KvSite` of one layer."""

    index: int
    key: KvSite
    value: KvSite

    @property
    def sites(self) -> tuple[KvSite, KvSite]:
        return (self.key, self.value)


def decoder_kv_layers(pass_: Pass[Any], model: ir.Model, mm: ModelMap, verb: str) -> list[KvLayer]:
    """:func:`kv_layers` for a KV pass, refusing encoders and cache-less graphs as not applicable.

    Args:
        pass_: The pass (its name and ``not_applicable`` are used).
        model: The model.
        mm: Its structure map.
        verb: What the pass does to the cache, for the refusal ("bound", "quantize", ...).

    Raises:
        PassNotApplicableError: Not a decoder, or no ``past → Concat → present`` wiring.
    """
    if mm.kind != "decoder":
        raise pass_.not_applicable(
            f"the model is an {mm.kind}: it has no KV cache to {verb}",
            note=f"{pass_.name} applies to decoders exported with past/present KV inputs and outputs",
        )
    try:
        return kv_layers(model, mm)
    except StructureError as exc:
        raise pass_.not_applicable(exc.message, note=exc.note) from exc


def kv_layers(model: ir.Model, mm: ModelMap) -> list[KvLayer]:
    """Find every layer's past → Concat → present wiring.

    Args:
        model: The model (its graph objects are returned).
        mm: Its structure map (``past_key``, ``key_concat``, ... of each layer's attention).

    Returns:
        One :class:`KvLayer` per layer, in layer order.

    Raises:
        StructureError: The model has no explicit KV cache, or a layer's cache wiring is not
            ``past<suffix>`` → ``Concat`` → ``present<suffix>``.
    """
    if not mm.has_kv_cache:
        raise StructureError("the model has no explicit KV cache (past/present inputs and outputs)")
    graph = model.graph
    values = values_by_name(graph)
    nodes = {n.name: n for n in graph}
    outputs = {v.name: v for v in graph.outputs}
    layers = []
    for lm in mm.layers:
        att = lm.attention
        found: dict[str, KvSite] = {}
        for role in ("key", "value"):
            past_name = getattr(att, f"past_{role}")
            concat = nodes.get(getattr(att, f"{role}_concat") or "")
            if past_name is None or concat is None or past_name not in values:
                raise StructureError(
                    f"layer {lm.index}: no past {role} input → Concat found",
                    note="kv passes need an export with explicit past/present KV tensors",
                )
            if not past_name.startswith(PAST_PREFIX):
                raise StructureError(
                    f"layer {lm.index}: cache input '{past_name}' does not follow the contract name past<suffix>"
                )
            suffix = past_name[len(PAST_PREFIX) :]
            present = outputs.get(PRESENT_PREFIX + suffix)
            if present is None:
                raise StructureError(
                    f"layer {lm.index}: input '{past_name}' has no matching output '{PRESENT_PREFIX}{suffix}'"
                )
            past = values[past_name]
            if concat.inputs[0] is not past or len(concat.inputs) != 2 or concat.inputs[1] is None:
                raise StructureError(
                    f"layer {lm.index}: Concat '{concat.name}' is not Concat({past_name}, new)"
                )
            found[role] = KvSite(
                layer=lm.index,
                role=role,  # type: ignore[arg-type]
                suffix=suffix,
                past=past,
                new=concat.inputs[1],
                concat=concat,
                full=concat.outputs[0],
                present=present,
            )
        layers.append(KvLayer(lm.index, found["key"], found["value"]))
    return layers


def set_present(model: ir.Model, site: KvSite, value: ir.Value) -> ir.Value:
    """Make ``value`` the graph output ``present<suffix>``; attention keeps reading ``site.full``.

    When the Concat output itself was the output (unmodified exports), it is renamed
    ``present<suffix>.full`` and stays where it is; ``value`` takes the output's name and slot.

    Args:
        model: The model.
        site: The cache site (snapshot from :func:`kv_layers`).
        value: The new present value (produced by a node already in, or about to be inserted into, the graph).

    Returns:
        ``value``.
    """
    _require_type(value, PRESENT_PREFIX + site.suffix)
    graph = model.graph
    old = next(v for v in graph.outputs if v.name == PRESENT_PREFIX + site.suffix)
    name = old.name
    index = list(graph.outputs).index(old)
    taken = set(values_by_name(graph))
    renamed, n = f"{name}.full", 1
    while renamed in taken:  # a second cache pass on the same model
        renamed, n = f"{name}.full{n}", n + 1
    old.name = renamed
    value.name = name
    graph.outputs[index] = value
    return value


def _require_type(value: ir.Value, name: str) -> None:
    if value.type is None:
        raise ValueError(
            f"graph output '{name}' needs a type: set value.dtype (and shape) before exposing it"
        )


def replace_past(model: ir.Model, site: KvSite, value: ir.Value, *, shape: ir.Value | None = None) -> None:
    """Every reader of ``past<suffix>`` (the Concat and shape reads) reads ``value``; the input is dropped.

    Use it when a pass carries the cache in another form (e.g. quantized codes and scales added with
    :func:`add_state_input`) and rebuilds a float ``[B, H_kv, P, D]`` tensor from it in the graph.

    Args:
        model: The model.
        site: The cache tensor whose ``past`` input goes.
        value: What the readers read instead (``[B, H_kv, P, D]``).
        shape: Optionally, an int64 ``[4]`` tensor holding ``value``'s shape, computed without ``value``
            (e.g. from the state inputs' shapes): the ``Shape(past)`` reads (the exports' length
            computations) become slices of it, so they do not keep ``value`` alive for nothing.
    """
    past = site.past
    if shape is not None:
        graph_outputs = set(model.graph.outputs)
        for node, _ in list(past.uses()):
            if (
                node.op_type != "Shape"
                or node.domain not in ("", "ai.onnx")
                or node.outputs[0] in graph_outputs
            ):
                continue
            attrs = {k: a.value for k, a in node.attributes.items()}
            start, end = int(attrs.get("start", 0)), attrs.get("end")
            if start == 0 and end is None:
                ir.convenience.replace_all_uses_with(node.outputs[0], shape)
                model.graph.remove(node, safe=True)
                continue
            starts = _const([start])
            ends = _const([int(end) if end is not None else 2**62])
            part = ir.node(
                "Slice",
                [shape, starts.outputs[0], ends.outputs[0]],
                name=f"{node.name}.from_shape" if node.name else None,
            )
            part.outputs[0].dtype = ir.DataType.INT64
            model.graph.insert_before(node, [starts, ends, part])
            ir.convenience.replace_all_uses_with(node.outputs[0], part.outputs[0])
            model.graph.remove(node, safe=True)
    ir.convenience.replace_all_uses_with(past, value)
    model.graph.inputs.remove(past)


def add_state_input(
    model: ir.Model, suffix: str, dtype: ir.DataType, shape: Sequence[int | str | None]
) -> ir.Value:
    """Add the graph input ``past<suffix>`` (extra state the runtime feeds back from ``present<suffix>``).

    Symbolic dims are strings; at prefill the runtime feeds an empty tensor (every symbolic dim except
    the batch dim is 0), so give the growing/state axis a symbolic name.
    """
    value = ir.Value(name=PAST_PREFIX + suffix, type=ir.TensorType(dtype), shape=ir.Shape(list(shape)))
    model.graph.inputs.append(value)
    return value


def add_state_output(model: ir.Model, suffix: str, value: ir.Value) -> ir.Value:
    """Expose ``value`` as the graph output ``present<suffix>`` (renames it)."""
    _require_type(value, PRESENT_PREFIX + suffix)
    value.name = PRESENT_PREFIX + suffix
    model.graph.outputs.append(value)
    return value


def attention_mask(model: ir.Model, mm: ModelMap) -> ir.Value:
    """The 2-D ``attention_mask`` graph input ``[B, total]``.

    Raises:
        StructureError: The model takes no attention mask.
    """
    name = mm.inputs.get("attention_mask")
    found = next((v for v in model.graph.inputs if v.name == name), None) if name else None
    if found is None:
        raise StructureError("the model has no attention_mask input; the cache mask cannot be mapped")
    return found


def insert_at_top(model: ir.Model, nodes: Sequence[ir.Node]) -> None:
    """Insert nodes before the first node of the graph (for nodes reading only graph inputs)."""
    graph = model.graph
    first = next(iter(graph), None)
    if first is None:
        graph.extend(nodes)
    else:
        graph.insert_before(first, nodes)


def new_token_count(model: ir.Model, mm: ModelMap) -> tuple[list[ir.Node], ir.Value]:
    """Nodes computing the number of new tokens ``S`` as int64 ``[1]`` (``Shape(input_ids)[1:2]``).

    Returns the nodes (not inserted; they read only graph inputs) and the value.
    """
    name = mm.inputs.get("input_ids") or mm.inputs.get("position_ids")
    ids = next((v for v in model.graph.inputs if name and v.name == name), None)
    if ids is None:
        raise StructureError("the model has neither input_ids nor position_ids: cannot count new tokens")
    shape = ir.node("Shape", [ids], attributes={"start": 1, "end": 2})
    return [shape], shape.outputs[0]


def _const(values: list[int]) -> ir.Node:
    return ir.node("Constant", [], attributes={"value_ints": values})


MaskMapper = Callable[[ir.Value], tuple[list[ir.Node], ir.Value]]


def map_past_mask(model: ir.Model, mm: ModelMap, mapper: MaskMapper) -> ir.Value:
    """Map the full-length mask onto the kept cache: ``mask' = Concat(mapper(mask[:, :T-S]), mask[:, T-S:])``.

    ``T`` is the mask length (all tokens seen plus the ``S`` new ones, as the runtime passes it);
    ``mask[:, :T-S]`` covers the tokens seen before this step. ``mapper`` returns the nodes that turn
    it into a mask over the cached positions the graph kept (same order as the past cache), and that
    value. Every node that read ``attention_mask`` reads ``mask'`` afterwards: the exported causal-mask
    construction indexes the mask by cache position (``[0, P + S)``), so it stays consistent when
    the past length ``P`` differs from the tokens seen.

    Args:
        model: The model.
        mm: Its structure map.
        mapper: ``past_mask [B, T-S] -> (nodes, kept_mask [B, P])``.

    Returns:
        The mapped mask ``[B, P + S]``.
    """
    mask = attention_mask(model, mm)
    readers = list(mask.uses())
    nodes, n_new = new_token_count(model, mm)
    total = ir.node("Shape", [mask], attributes={"start": 1, "end": 2})
    seen = ir.node("Sub", [total.outputs[0], n_new])
    zero, axis = _const([0]), _const([1])
    past_part = ir.node("Slice", [mask, zero.outputs[0], seen.outputs[0], axis.outputs[0]])
    new_part = ir.node("Slice", [mask, seen.outputs[0], total.outputs[0], axis.outputs[0]])
    kept_nodes, kept = mapper(past_part.outputs[0])
    joined = ir.node("Concat", [kept, new_part.outputs[0]], attributes={"axis": 1})
    out = joined.outputs[0]
    out.name = f"{mask.name}.kept"
    if mask.dtype is not None:
        out.dtype = mask.dtype
    out.shape = ir.Shape([mask.shape[0] if mask.shape is not None else None, None])
    insert_at_top(model, [*nodes, total, seen, zero, axis, past_part, new_part, *kept_nodes, joined])
    for node, index in readers:
        node.replace_input_with(index, out)
    return out
