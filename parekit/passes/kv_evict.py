"""Keep a fixed budget of cached tokens per layer and KV head, chosen by attention (H2O or SnapKV).

    attention_mask ─► parekit::KvMaskRemap ─► mask' (every kept slot visible, new columns as given)
    past<i>.score ──► parekit::KvSlotMask ─► per-head boolean mask ─► attention ─► probs
    past ─► Concat ◄─ new ─► full ─► attention                  (opset 23: parekit::AttentionProbs)
                               └─► parekit::KvEvict{H2O|Snap}{budget,sink,recent} ◄─ probs, score
                                      └─► present<i>.key, present<i>.value, present<i>.score

Attention at a step reads the kept past slots plus the new tokens; afterwards each KV head keeps
``budget`` slots: ``sink`` first and ``recent`` last always, the rest by ``policy``:

* ``h2o``: the attention each slot has accumulated over all steps (summed over the KV head's query
  heads), carried across the boundary as ``present.<i>.score`` → ``past.<i>.score`` ``[B, Hkv, P]``;
  ``decay < 1`` multiplies the carried score each step, so recent attention weighs more;
* ``snapkv``: at prefill, the attention of the last ``recent`` prompt queries (the observation
  window), max-pooled over 7 slots; during decode a window (sink + most recent slots). Its
  ``score`` state only marks padding.

Kept slots differ per KV head, so the runtime's per-batch mask cannot describe them: the graph maps the
mask to "all kept slots visible" (:class:`~parekit.ops.kv_slot_mask.KvMaskRemap`) and hides padding
slots (score ``-1``) per head in the boolean mask each layer's attention reads
(:class:`~parekit.ops.kv_slot_mask.KvSlotMask`). Attention probabilities come from the graph's own
Softmax at opset 18 (after its NaN guard) and are recomputed from the ``Attention`` node's own Q, K and
mask at opset 23 (its ``qk_matmul_output`` is not portable). Positions stay absolute (keys keep their
rotary phase).

Identity configuration: ``budget`` >= the longest context (every slot kept, in order: exact).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import onnx_ir as ir

from parekit.analysis.lookup import values_by_name
from parekit.analysis.modelmap import AttentionSite, ModelMap
from parekit.errors import OptionError, StructureError
from parekit.ops.attention_probs import ATTENTION_PROBS
from parekit.ops.kv_evict import BUDGET_MAX, KV_EVICT_H2O, KV_EVICT_SNAP
from parekit.ops.kv_slot_mask import KV_MASK_REMAP, KV_SLOT_MASK
from parekit.passes import kv_cache
from parekit.passes.base import Pass
from parekit.passes.registry import register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KvEvictOptions:
    budget: int = field(
        default=512,
        metadata={"help": "cached tokens kept per layer and KV head", "min": 1, "max": BUDGET_MAX},
    )
    policy: Literal["h2o", "snapkv"] = field(
        default="h2o",
        metadata={"help": "h2o: accumulated attention; snapkv: prompt observation window, then a window"},
    )
    sink: int = field(default=4, metadata={"help": "first tokens always kept", "min": 0})
    recent: int = field(
        default=64,
        metadata={"help": "most recent tokens always kept (snapkv: also the observation window)", "min": 0},
    )

    decay: float = field(
        default=1.0,
        metadata={
            "help": "h2o: factor on the accumulated score per step (1: plain H2O sum; 0: this step only)",
            "min": 0.0,
            "max": 1.0,
        },
    )

    def validate(self) -> None:
        if self.sink + self.recent > self.budget:
            raise OptionError(
                f"kv-evict: sink + recent ({self.sink} + {self.recent}) must not exceed budget ({self.budget})"
            )


@register("kv-evict", options=KvEvictOptions)
class KvEvictPass(Pass[KvEvictOptions]):
    """Keep `budget` cached tokens per layer and KV head, chosen by attention (H2O or SnapKV)."""

    def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
        opts = self.options
        layers = kv_cache.decoder_kv_layers(self, model, mm, "evict from")
        try:
            mask = kv_cache.attention_mask(model, mm)
        except StructureError as exc:
            raise self.not_applicable(exc.message, note=exc.note) from exc
        ids = next((v for v in model.graph.inputs if v.name == mm.inputs.get("input_ids")), None)
        if ids is None:
            raise self.not_applicable("the model has no input_ids input: the number of new tokens is unknown")
        shape = layers[0].key.past.shape
        kv_heads = shape[1] if shape is not None and shape.rank() == 4 else None
        if not isinstance(kv_heads, int) or mm.num_heads % kv_heads:
            raise self.not_applicable(
                f"cannot relate {mm.num_heads} query heads to the cache's KV heads ({shape})"
            )
        group = mm.num_heads // kv_heads
        evict_op = KV_EVICT_H2O if opts.policy == "h2o" else KV_EVICT_SNAP
        attrs: dict[str, int | float] = {"budget": opts.budget, "sink": opts.sink, "recent": opts.recent}
        if opts.policy == "h2o":
            attrs["decay"] = opts.decay

        readers = list(mask.uses())
        remap = KV_MASK_REMAP.make_node(model, [mask, layers[0].key.past, ids], name="kv_evict.mask")
        remap.outputs[0].name = f"{mask.name}.kept"
        kv_cache.insert_at_top(model, [remap])
        for node, index in readers:
            node.replace_input_with(index, remap.outputs[0])

        nodes = {str(n.name): n for n in model.graph}
        batch = mm.batch_dim or "batch"
        for layer in layers:
            site = mm.layers[layer.index].attention
            score = kv_cache.add_state_input(
                model, f".{layer.index}.score", ir.DataType.FLOAT, [batch, kv_heads, "past"]
            )
            probs, anchor = self._mask_and_probs(model, nodes, site, score, group, layer.index)
            evict = evict_op.make_node(
                model,
                [layer.key.full, layer.value.full, score, probs, remap.outputs[0]],
                attributes=attrs,
                name=f"kv_evict.{layer.index}",
            )
            model.graph.insert_after(anchor, evict)
            kv_cache.set_present(model, layer.key, evict.outputs[0])
            kv_cache.set_present(model, layer.value, evict.outputs[1])
            kv_cache.add_state_output(model, f".{layer.index}.score", evict.outputs[2])
            self.report.note_site(
                layer=layer.index, action=f"{opts.policy}: cache ≤ {opts.budget} per KV head"
            )
        self.report.extra.update(
            policy=opts.policy,
            max_cached_tokens=opts.budget,
            kv_heads=kv_heads,
            group=group,
            layers=len(layers),
        )
        return ir.passes.PassResult(model, modified=True)

    def _mask_and_probs(
        self,
        model: ir.Model,
        nodes: dict[str, ir.Node],
        site: AttentionSite,
        score: ir.Value,
        group: int,
        index: int,
    ) -> tuple[ir.Value, ir.Node]:
        """Hide padding slots per head in the layer's mask; return (probs, node to insert the eviction after)."""
        attrs = {"group": group}
        if site.form == "attention-op":
            att = nodes[site.nodes[0]]
            a = {k: v.value for k, v in att.attributes.items()}
            if a.get("softcap", 0.0) or a.get("is_causal", 0) or len(att.inputs) < 4 or att.inputs[3] is None:
                raise self.not_applicable(
                    f"layer {index}: the Attention node needs an explicit boolean mask, no softcap and is_causal=0",
                    note=f"found attributes {a} and {len(att.inputs)} inputs",
                )
            old = att.inputs[3]
            if old.dtype != ir.DataType.BOOL:
                raise self.not_applicable(
                    f"layer {index}: the Attention mask is {old.dtype}, kv-evict needs a boolean one"
                )
            slot = KV_SLOT_MASK.make_node(
                model, [old, score], attributes=attrs, name=f"kv_evict.{index}.slot_mask"
            )
            model.graph.insert_before(att, slot)
            att.replace_input_with(3, slot.outputs[0])
            probs = ATTENTION_PROBS.make_node(
                model,
                [att.inputs[0], att.inputs[1], slot.outputs[0]],
                attributes={"scale": float(a.get("scale", 0.0) or 0.0)},
                name=f"kv_evict.{index}.probs",
            )
            model.graph.insert_after(att, probs)
            return probs.outputs[0], probs
        # The map names the Where(bool mask, 0, -inf) the scores add; the Add is the scores' producer.
        where = nodes.get(site.mask_select) if site.mask_select else None
        scores = values_by_name(model.graph).get(site.scores or "")
        add = scores.producer() if scores is not None else None
        context = nodes.get(site.nodes[-1])
        if where is None or add is None or where.outputs[0] not in add.inputs or context is None:
            raise self.not_applicable(
                f"layer {index}: attention scores are not Add(QK, Where(bool mask, 0, -inf)) followed by a context MatMul",
                note="kv-evict hides padding slots per KV head in the boolean mask before it becomes additive",
            )
        slot = KV_SLOT_MASK.make_node(
            model, [where.inputs[0], score], attributes=attrs, name=f"kv_evict.{index}.slot_mask"
        )
        additive = ir.node(
            "Where",
            [slot.outputs[0], where.inputs[1], where.inputs[2]],
            name=f"kv_evict.{index}.additive_mask",
        )
        model.graph.insert_before(add, [slot, additive])
        add.replace_input_with(list(add.inputs).index(where.outputs[0]), additive.outputs[0])
        return context.inputs[0], context  # type: ignore[return-value]
