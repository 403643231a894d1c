"""Bound each layer's KV cache to its first ``sink`` tokens plus the last ``window`` tokens (StreamingLLM).

    past ─► Concat ◄─ new            past ─► Concat ─► full ─► attention
              │                =>                  │
              ▼                                    └─► parekit::KvWindow{sink,window} ─► present
            present ─► attention

    attention_mask [B, T] ─► Slice[:T-S] ─► parekit::KvWindowMask ─┐
                         └─► Slice[T-S:] ────────────────────────► Concat ─► mask over (kept past + new)

Attention at a step reads the (bounded) past plus the new tokens; the ``present`` output keeps at
most ``sink + window`` tokens, so the cache fed back stays bounded. Positions keep counting
absolutely: the runtime passes the real ``position_ids``, and each kept key keeps the rotation it got
when it was computed. The runtime keeps passing the mask over *all* tokens seen; the graph maps it onto
the kept positions with the same keep rule (both rules compose step after step: the past always holds
tokens ``[0, sink)`` and the last ``window`` tokens seen).

With left-padded batches the sinks of a padded row are pad positions (masked out, so still correct,
but that row then keeps ``window`` real tokens only).

Identity configuration: ``sink + window`` ≥ the longest context (bit-exact). The pass cannot know the
context, so it always inserts the nodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx_ir as ir

from parekit.analysis.modelmap import ModelMap
from parekit.ops.kv_window import KV_WINDOW
from parekit.ops.kv_window_mask import KV_WINDOW_MASK
from parekit.passes import kv_cache
from parekit.passes.base import Pass
from parekit.passes.registry import register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KvWindowOptions:
    sink: int = field(default=4, metadata={"help": "first tokens always kept (attention sinks)", "min": 0})
    window: int = field(default=1024, metadata={"help": "most recent tokens kept", "min": 1})


@register("kv-window", options=KvWindowOptions)
class KvWindowPass(Pass[KvWindowOptions]):
    """Bound each layer's KV cache to `sink` first + `window` most recent tokens (StreamingLLM)."""

    def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
        layers = kv_cache.decoder_kv_layers(self, model, mm, "bound")
        attrs = {"sink": self.options.sink, "window": self.options.window}
        graph = model.graph
        for layer in layers:
            for site in layer.sites:
                node = KV_WINDOW.make_node(
                    model, [site.full], attributes=attrs, name=f"kv_window.{site.layer}.{site.role}"
                )
                graph.insert_after(site.concat, node)
                kv_cache.set_present(model, site, node.outputs[0])
            self.report.note_site(
                layer=layer.index, action=f"cache ≤ {self.options.sink}+{self.options.window}"
            )

        def keep(past_mask: ir.Value) -> tuple[list[ir.Node], ir.Value]:
            node = KV_WINDOW_MASK.make_node(model, [past_mask], attributes=attrs, name="kv_window.mask")
            return [node], node.outputs[0]

        mapped = kv_cache.map_past_mask(model, mm, keep)
        self.report.extra.update(
            max_cached_tokens=self.options.sink + self.options.window, mask=mapped.name, layers=len(layers)
        )
        logger.info(
            "kv-window: %d layers bounded to %d tokens", len(layers), self.options.sink + self.options.window
        )
        return ir.passes.PassResult(model, modified=True)
