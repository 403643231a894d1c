"""Remove whole transformer blocks (depth pruning).

    x ─► block i ─► y ─► consumers      =>      x ─► consumers

Layers are chosen either explicitly (``layers=[4,5]``, a TinyFusion-style layer mask) or by block
influence (``count=N``, ShortGPT): the N blocks whose output is most similar to their input,
``BI = 1 - cos(block input, block output)`` averaged over the real (unpadded) tokens of the
calibration data, are dropped. For decoders with an explicit KV cache, the dropped layers'
``past``/``present`` inputs and outputs are removed as well (their cache is no longer needed; the
runtime contract — feed every ``present<suffix>`` back as ``past<suffix>`` — still holds).

Identity configuration: ``layers=[]`` and ``count=0`` (the default) change nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from parekit.analysis.lookup import values_by_name
from parekit.analysis.modelmap import LayerMap, ModelMap
from parekit.calibration import collect
from parekit.errors import OptionError
from parekit.passes.base import Pass
from parekit.passes.registry import register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DropLayersOptions:
    layers: tuple[int, ...] = field(
        default=(), metadata={"help": "indices of the blocks to drop (0-based), e.g. [4,5]", "min": 0}
    )
    count: int = field(
        default=0,
        metadata={
            "help": "drop this many blocks, chosen by lowest block influence on calibration data",
            "min": 0,
        },
    )

    def validate(self) -> None:
        if self.layers and self.count:
            raise OptionError("drop-layers: give either 'layers' or 'count', not both")


def block_influence(model: ir.Model, mm: ModelMap, calibration: object) -> list[float]:
    """ShortGPT block influence of every layer: mean over real tokens of ``1 - cos(input, output)``."""
    names = sorted({lm.input for lm in mm.layers} | {lm.output for lm in mm.layers})
    mask_name = mm.inputs.get("attention_mask")
    sums = np.zeros(mm.num_layers)
    weight = 0.0
    for feed, values in collect(model, names, calibration):  # type: ignore[arg-type]
        mask = None
        if mask_name is not None and mask_name in feed:
            mask = np.asarray(feed[mask_name], dtype=np.float64)
        for lm in mm.layers:
            x = values[lm.input].astype(np.float64)
            y = values[lm.output].astype(np.float64)
            cos = (x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1) + 1e-12)
            bi = 1.0 - cos  # [batch, tokens]
            # The mask covers past + new tokens (decoders with a cache): weight the new ones.
            w = np.ones_like(bi) if mask is None or mask.ndim != 2 else mask[:, -bi.shape[-1] :]
            sums[lm.index] += float((bi * w).sum())
            if lm.index == 0:
                weight += float(w.sum())
    return [float(s / max(weight, 1.0)) for s in sums]


@register("drop-layers", options=DropLayersOptions)
class DropLayersPass(Pass[DropLayersOptions]):
    """Drop whole transformer blocks, chosen by index or by lowest block influence (ShortGPT)."""

    def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
        opts = self.options
        if not opts.layers and not opts.count:
            self.report.set_identity("no layers to drop (layers=[] and count=0)")
            return ir.passes.PassResult(model, modified=False)
        n = mm.num_layers
        if opts.count:
            if opts.count >= n:
                raise OptionError(
                    f"drop-layers: option 'count' must be below the number of layers ({n}), got {opts.count}"
                )
            calibration = self.ctx.require_calibration(self.name)
            scores = block_influence(model, mm, calibration)
            order = sorted(range(n), key=lambda i: scores[i])
            drop = sorted(order[: opts.count])
            self.report.extra["influence"] = {str(i): round(s, 6) for i, s in enumerate(scores)}
            self.report.extra["chosen"] = drop
            self.report.extra["calibration"] = getattr(calibration, "source", "feeds")
            logger.info("drop-layers: block influence %s → dropping %s", [round(s, 4) for s in scores], drop)
        else:
            mm.select_layers(opts.layers, self.name)
            if len(opts.layers) >= n:
                raise OptionError(f"drop-layers: dropping all {n} layers would leave no transformer")
            drop = sorted(opts.layers)
        dropped = [mm.layers[i] for i in drop]
        self._remove_cache_io(model, dropped, mm)
        for lm in reversed(dropped):
            self._bypass(model, lm)
            self.report.note_site(layer=lm.index, scope=lm.scope, action="dropped")
        RemoveUnusedNodesPass()(model)
        self._drop_past_inputs(model, dropped, mm)
        return ir.passes.PassResult(model, modified=True)

    def _bypass(self, model: ir.Model, lm: LayerMap) -> None:
        """Make every consumer of the block's output read the block's input instead."""
        values = values_by_name(model.graph)
        x, y = values[lm.input], values[lm.output]
        graph = model.graph
        if y in graph.outputs:  # keep the output's name: route it through an Identity
            name = y.name
            y.name = f"{name}.dropped"
            out = ir.Value(name=name, shape=y.shape, type=y.type)
            ident = ir.Node("", "Identity", inputs=[x], outputs=[out], name=f"{name}.bypass")
            producer = x.producer()
            if producer is not None:
                graph.insert_after(producer, ident)
            else:
                graph.insert_before(next(iter(graph)), ident)
            graph.outputs[graph.outputs.index(y)] = out
            ir.convenience.replace_all_uses_with(y, out)
        else:
            ir.convenience.replace_all_uses_with(y, x)

    def _remove_cache_io(self, model: ir.Model, dropped: list[LayerMap], mm: ModelMap) -> None:
        graph = model.graph
        names = {n for lm in dropped for n in (lm.attention.present_key, lm.attention.present_value) if n}
        for v in [v for v in graph.outputs if v.name in names]:
            graph.outputs.remove(v)

    def _drop_past_inputs(self, model: ir.Model, dropped: list[LayerMap], mm: ModelMap) -> None:
        """Remove the dropped layers' past inputs; remaining shape-only uses read a kept layer's past."""
        graph = model.graph
        kept = [lm for lm in mm.layers if lm.index not in {d.index for d in dropped}]
        inputs = {v.name: v for v in graph.inputs}
        for lm in dropped:
            for role in ("key", "value"):
                name = getattr(lm.attention, f"past_{role}")
                if not name or name not in inputs:
                    continue
                past = inputs[name]
                if past.uses():
                    # Only shape computations can still read it (all layers' caches have one length).
                    stand_in_name = getattr(kept[0].attention, f"past_{role}")
                    if stand_in_name not in inputs:
                        raise self.not_applicable(
                            f"the {role} cache input '{name}' of dropped layer {lm.index} is still read "
                            f"by shape computations, and kept layer {kept[0].index} has no {role} cache input to stand in"
                        )
                    ir.convenience.replace_all_uses_with(past, inputs[stand_in_name])
                graph.inputs.remove(past)
                self.report.note_site(layer=lm.index, action="removed cache input/output", value=name)
