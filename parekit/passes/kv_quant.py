"""Carry each layer's KV cache across the graph boundary quantized, KIVI-style (keys per channel, values per token).

    past<sfx>.codes/.scale/.min/.res ─► parekit::KvDequant* ─► cache (float) ─► Concat ◄─ new ─► attention
                      │                                  (replaces past<sfx> everywhere)
                      └──────────────► parekit::KvQuant*{bits,group,residual} ◄─ new
                                           └─► present<sfx>.codes/.scale/.min/.res

Per layer and role (key, value), the float ``past``/``present`` pair is replaced by four state tensors:
int8 ``codes`` (``8 // bits`` codes per byte, stored as ``byte - 128``), float16 ``scale`` and ``min`` per group, and a float32
``res`` window of the most recent tokens. At the top of the graph a ``KvDequant*`` node rebuilds the float
past (``store ++ window``); it replaces the ``past`` input for every reader, the exported shape
computations included, so attention runs unchanged over ``past ++ new``. No token is dropped, so the
runtime's ``attention_mask`` already has the right length. After the layer's ``Concat`` a ``KvQuant*`` node
moves the oldest whole groups of the window into the store (each token is quantized once, when it
ages out of the last ``residual`` tokens) and returns the new state.

Keys are grouped over ``group`` tokens per channel and values over ``group`` channels per token, so
``group`` must divide the head dim. Bytes per cached token and KV head: ``D * bits / 8`` (codes) plus
``4 * D / group`` (float16 scale and min, keys and values each), plus ``8 * D`` per token still in the
float window (``residual`` to ``residual + group - 1`` tokens).

Identity: quantization has no exact identity; ``residual >= context`` (nothing ever quantized) is exact, and
``bits=8`` is the closest lossy check (logit cosine ≥ 0.9999 on the samples).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import onnx_ir as ir

from parekit.analysis.modelmap import ModelMap
from parekit.ops.kv_dequant import KV_DEQUANT_KEY, KV_DEQUANT_VALUE
from parekit.ops.kv_quant import KV_QUANT_KEY, KV_QUANT_VALUE, codes_per_byte
from parekit.passes import kv_cache
from parekit.passes.base import Pass
from parekit.passes.registry import register

logger = logging.getLogger(__name__)

STATE_PARTS = ("codes", "scale", "min", "res")
"""Suffix parts of each quantized cache tensor: ``past.<i>.key.codes`` … ``past.<i>.value.res``."""


@dataclass(frozen=True)
class KvQuantOptions:
    bits: Literal[8, 4] = field(
        default=8, metadata={"help": "code width: 8 (int8) or 4 (two codes per byte)"}
    )
    group: int = field(
        default=32, metadata={"help": "group size: tokens per key scale, channels per value scale", "min": 1}
    )
    residual: int = field(
        default=16,
        metadata={
            "help": "at least this many most recent tokens stay float32 (up to residual + group - 1)",
            "min": 0,
        },
    )


@register("kv-quant", options=KvQuantOptions)
class KvQuantPass(Pass[KvQuantOptions]):
    """Quantize the KV cache that crosses the graph boundary (KIVI: keys per channel, values per token)."""

    def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
        opts = self.options
        layers = kv_cache.decoder_kv_layers(self, model, mm, "quantize")
        heads, dim = self._geometry(layers[0].key)
        if dim % opts.group:
            raise self.not_applicable(
                f"group={opts.group} does not divide the head dim {dim}",
                note="values are quantized over groups of `group` channels; pick a divisor of the head dim",
            )
        if dim % codes_per_byte(opts.bits):
            raise self.not_applicable(
                f"head dim {dim} cannot be packed {codes_per_byte(opts.bits)} codes per byte"
            )
        batch = mm.batch_dim or "batch"
        attrs = {"bits": opts.bits, "group": opts.group}
        update_attrs = {**attrs, "residual": opts.residual}
        packed = dim // codes_per_byte(opts.bits)
        shapes: dict[str, tuple[list[int | str | None], list[int | str | None]]] = {
            "key": (["q_tokens", packed], ["q_groups", dim]),
            "value": (["q_tokens", packed], ["q_tokens", dim // opts.group]),
        }
        top: list[ir.Node] = []
        for layer in layers:
            for site in layer.sites:
                if site.past.dtype != ir.DataType.FLOAT:
                    raise self.not_applicable(
                        f"layer {site.layer}: the {site.role} cache is {site.past.dtype}, kv-quant handles float32 caches"
                    )
                code_dims, group_dims = shapes[site.role]
                state = [
                    kv_cache.add_state_input(
                        model, f"{site.suffix}.codes", ir.DataType.INT8, [batch, heads, *code_dims]
                    ),
                    kv_cache.add_state_input(
                        model, f"{site.suffix}.scale", ir.DataType.FLOAT16, [batch, heads, *group_dims]
                    ),
                    kv_cache.add_state_input(
                        model, f"{site.suffix}.min", ir.DataType.FLOAT16, [batch, heads, *group_dims]
                    ),
                    kv_cache.add_state_input(
                        model, f"{site.suffix}.res", ir.DataType.FLOAT, [batch, heads, "res_tokens", dim]
                    ),
                ]
                dequant_op, quant_op = (
                    (KV_DEQUANT_KEY, KV_QUANT_KEY)
                    if site.role == "key"
                    else (KV_DEQUANT_VALUE, KV_QUANT_VALUE)
                )
                dequant = dequant_op.make_node(
                    model, state, attributes=attrs, name=f"kv_quant.{site.layer}.{site.role}.dequant"
                )
                dequant.outputs[0].name = f"{kv_cache.PAST_PREFIX}{site.suffix}.dequant"
                top.append(dequant)
                kv_cache.replace_past(model, site, dequant.outputs[0])
                update = quant_op.make_node(
                    model,
                    [*state, site.new],
                    attributes=update_attrs,
                    name=f"kv_quant.{site.layer}.{site.role}.update",
                )
                model.graph.insert_after(site.concat, update)
                model.graph.outputs.remove(site.present)
                site.full.name = f"{kv_cache.PRESENT_PREFIX}{site.suffix}.full"
                for part, value in zip(STATE_PARTS, update.outputs, strict=True):
                    kv_cache.add_state_output(model, f"{site.suffix}.{part}", value)
            self.report.note_site(
                layer=layer.index,
                action=f"KV cache int{opts.bits}, group {opts.group}, {opts.residual} float tokens",
            )
        kv_cache.insert_at_top(model, top)
        quant_bytes = heads * (2 * packed + 4 * dim // opts.group + 4 * dim // opts.group)
        self.report.extra.update(
            layers=len(layers),
            bytes_per_quantized_token=quant_bytes * len(layers),
            bytes_per_float_token=heads * 2 * dim * 4 * len(layers),
            state_inputs=len(layers) * 2 * len(STATE_PARTS),
        )
        return ir.passes.PassResult(model, modified=True)

    def _geometry(self, site: kv_cache.KvSite) -> tuple[int, int]:
        shape = site.past.shape
        if (
            shape is None
            or shape.rank() != 4
            or not isinstance(shape[1], int)
            or not isinstance(shape[3], int)
        ):
            raise self.not_applicable(
                f"cache input '{site.past.name}' needs static KV-head and head-dim sizes, has shape {shape}"
            )
        return shape[1], shape[3]
