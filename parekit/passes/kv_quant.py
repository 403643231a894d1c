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

Fused attention (``fused=true``, the default): where a layer's attention is the ONNX ``Attention`` op (opset
23 exports) with a boolean mask, no softcap, ``is_causal=0`` and no past inputs, reading ``Concat(past, new)``
or the exporters' ``repeat_kv`` of it (``Reshape(Expand(Unsqueeze(·, 2)))``), that node becomes
``parekit::KvQuantAttention`` over the codes, scales and minimums and the float tail
``Concat(res, new)``: no float cache is rebuilt (the native kernel reads the packed codes; the function
body dequantizes). The exports' ``Shape(past)`` reads of fused layers are fed from the state inputs' shapes,
so the ``KvDequant*`` node disappears. Decomposed attention (opset 18: MatMul/Softmax) keeps the dequantized
cache; the report says per layer which form was used and why not.

Identity: quantization has no exact identity; ``residual >= context`` (nothing ever quantized) is exact with
``fused=false`` and equal up to float rounding (≤ 1e-5 on the logits) with the fused attention, and
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
from parekit.ops.kv_quant_attention import KV_QUANT_ATTENTION
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
    fused: bool = field(
        default=True,
        metadata={
            "help": "attend straight over the quantized cache (parekit::KvQuantAttention) where the layer's "
            "attention is the ONNX Attention op; false: always rebuild the float cache (KvDequant*)"
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
        nodes = {n.name: n for n in model.graph if n.name}
        fused_layers = 0
        for layer in layers:
            attention, why_not = self._fusable(model, mm, nodes, layer)
            states: dict[str, list[ir.Value]] = {}
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
                # Fused: the Shape(past) reads come from the state shapes, so nothing keeps the dequantized
                # cache alive. Unfused, attention reads that cache anyway and its shape costs nothing; the
                # shape-slice form also makes TensorRT-RTX 1.7's builder crash on the opset-18 int4 export.
                shape_nodes, shape = (
                    _cache_shape(state[0], state[3], f"kv_quant.{site.layer}.{site.role}")
                    if attention is not None
                    else ([], None)
                )
                top.extend([dequant, *shape_nodes])
                kv_cache.replace_past(model, site, dequant.outputs[0], shape=shape)
                states[site.role] = state
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
            if attention is not None:
                self._fuse(model, layer, attention, states, attrs)
                fused_layers += 1
            self.report.note_site(
                layer=layer.index,
                action=f"KV cache int{opts.bits}, group {opts.group}, {opts.residual} float tokens",
                attention="fused: parekit::KvQuantAttention over the codes"
                if attention is not None
                else f"dequantized float cache: {why_not}",
            )
        kv_cache.insert_at_top(model, top)
        quant_bytes = heads * (2 * packed + 4 * dim // opts.group + 4 * dim // opts.group)
        self.report.extra.update(
            layers=len(layers),
            bytes_per_quantized_token=quant_bytes * len(layers),
            bytes_per_float_token=heads * 2 * dim * 4 * len(layers),
            state_inputs=len(layers) * 2 * len(STATE_PARTS),
            fused_layers=fused_layers,
        )
        return ir.passes.PassResult(model, modified=True)

    def _fusable(
        self, model: ir.Model, mm: ModelMap, nodes: dict[str, ir.Node], layer: kv_cache.KvLayer
    ) -> tuple[ir.Node | None, str]:
        """The layer's ``Attention`` node when it can read the quantized cache directly, else why not."""
        if not self.options.fused:
            return None, "fused=false"
        site = mm.layers[layer.index].attention
        if site.form != "attention-op":
            return (
                None,
                f"{site.form} attention (MatMul/Softmax); the fused op replaces an ONNX Attention node",
            )
        att = nodes.get(site.nodes[0]) if site.nodes else None
        if att is None or att.op_type != "Attention" or att.domain not in ("", "ai.onnx"):
            return None, "no ONNX Attention node found for the layer"
        a = {k: v.value for k, v in att.attributes.items()}
        if a.get("softcap", 0.0) or a.get("is_causal", 0):
            return None, f"Attention has softcap={a.get('softcap', 0.0)}, is_causal={a.get('is_causal', 0)}"
        if "q_num_heads" in a or "kv_num_heads" in a:
            return None, "Attention takes 3-D (packed-head) inputs"
        if len(att.inputs) < 4 or att.inputs[3] is None or any(v is not None for v in att.inputs[4:]):
            return None, "Attention needs exactly (Q, K, V, mask) inputs (no past_key/past_value)"
        graph_outputs = set(model.graph.outputs)
        if any(o.uses() or o in graph_outputs for o in att.outputs[1:]):
            return None, "Attention's present/qk outputs are used"
        mask, query = att.inputs[3], att.inputs[0]
        if mask.dtype != ir.DataType.BOOL or mask.shape is None or mask.shape.rank() != 4:
            return (
                None,
                f"the Attention mask is {mask.dtype} {mask.shape}; the fused op takes a 4-D boolean mask",
            )
        if query is None or query.shape is None or query.shape.rank() != 4:
            return None, "the query's rank is not known to be 4"
        for role, index in (("key", 1), ("value", 2)):
            full = getattr(layer, role).full
            if not _reads_repeated(att.inputs[index], full):
                return (
                    None,
                    f"the Attention {role} is not Concat(past, new) or its repeat_kv (Unsqueeze/Expand/Reshape)",
                )
        return att, ""

    def _fuse(
        self,
        model: ir.Model,
        layer: kv_cache.KvLayer,
        att: ir.Node,
        states: dict[str, list[ir.Value]],
        attrs: dict[str, int],
    ) -> None:
        """Replace ``att`` by KvQuantAttention over the state (store ++ Concat(residual window, new))."""
        inputs: list[ir.Value] = [att.inputs[0]]  # type: ignore[list-item]
        tails = []
        for site in layer.sites:
            codes, scale, mn, res = states[site.role]
            tail = ir.node(
                "Concat",
                [res, site.new],
                attributes={"axis": kv_cache.SEQ_AXIS},
                name=f"kv_quant.{site.layer}.{site.role}.tail",
            )
            tail.outputs[0].name = f"kv_quant.{site.layer}.{site.role}.tail"
            tail.outputs[0].dtype = ir.DataType.FLOAT
            tails.append(tail)
            inputs.extend([codes, scale, mn, tail.outputs[0]])
        inputs.append(att.inputs[3])  # type: ignore[arg-type]
        scale_attr = att.attributes.get("scale")
        fused = KV_QUANT_ATTENTION.make_node(
            model,
            inputs,
            attributes={**attrs, "scale": float(scale_attr.value) if scale_attr is not None else 0.0},
            name=f"kv_quant.{layer.index}.attention",
        )
        old = att.outputs[0]
        out = fused.outputs[0]
        if old.dtype is not None:
            out.dtype = old.dtype
        out.shape = old.shape
        model.graph.insert_before(att, [*tails, fused])
        ir.convenience.replace_all_uses_with(old, out)
        for i in range(len(model.graph.outputs)):
            if model.graph.outputs[i] is old:
                out.name, old.name = old.name, f"{old.name}.unfused"
                model.graph.outputs[i] = out

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


def _cache_shape(codes: ir.Value, res: ir.Value, stem: str) -> tuple[list[ir.Node], ir.Value]:
    """Nodes computing the dequantized cache's shape ``[B, H, Nq + R, D]`` from the state inputs' shapes."""
    lead = ir.node("Shape", [res], attributes={"end": 2}, name=f"{stem}.shape.lead")
    stored = ir.node("Shape", [codes], attributes={"start": 2, "end": 3}, name=f"{stem}.shape.stored")
    window = ir.node("Shape", [res], attributes={"start": 2, "end": 3}, name=f"{stem}.shape.window")
    dim = ir.node("Shape", [res], attributes={"start": 3}, name=f"{stem}.shape.dim")
    tokens = ir.node("Add", [stored.outputs[0], window.outputs[0]], name=f"{stem}.shape.tokens")
    shape = ir.node(
        "Concat",
        [lead.outputs[0], tokens.outputs[0], dim.outputs[0]],
        attributes={"axis": 0},
        name=f"{stem}.shape",
    )
    out = shape.outputs[0]
    out.name = f"{stem}.shape"
    out.dtype = ir.DataType.INT64
    out.shape = ir.Shape([4])
    return [lead, stored, window, dim, tokens, shape], out


def _reads_repeated(value: ir.Value | None, full: ir.Value) -> bool:
    """``value`` is ``full`` or the exporters' ``repeat_kv`` of it: ``Reshape(Expand(Unsqueeze(full, [2])))``."""
    if value is full:
        return True
    reshape = value.producer() if value is not None else None
    if reshape is None or reshape.op_type != "Reshape" or reshape.inputs[0] is None:
        return False
    expand = reshape.inputs[0].producer()
    if expand is None or expand.op_type != "Expand" or expand.inputs[0] is None:
        return False
    unsqueeze = expand.inputs[0].producer()
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or unsqueeze.inputs[0] is not full:
        return False
    axes_value = unsqueeze.inputs[1] if len(unsqueeze.inputs) > 1 else None
    if axes_value is None:
        return False
    axes = axes_value.const_value
    producer = axes_value.producer()
    if axes is None and producer is not None and producer.op_type == "Constant":
        attr = producer.attributes.get("value")
        axes = attr.value if attr is not None else None
    if axes is None:
        return False
    return [int(x) for x in axes.numpy().reshape(-1)] == [kv_cache.SEQ_AXIS]
