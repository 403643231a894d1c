"""Lower the float32 computation to fp16 or bf16 with explicit Casts, keeping chosen nodes in float32.

    x (f32) ─► Cast ─► MatMul (f16) ─► Add (f16) ─► Cast ─► LayerNormalization (f32) ─► Cast ─► …

TensorRT 11 and TensorRT-RTX build strongly typed networks: there is no fp16 builder flag, the graph's
own types are what runs. This pass writes those types: every float32 tensor of a converted node becomes
``dtype``, weights are stored in it (about half the bytes), and a ``Cast`` sits wherever a float32 node
(``keep``) meets a converted one. The rewrite itself is :mod:`parekit.passes.precision_cast`.

``keep`` lists what stays float32, three kinds of entries:

* categories: ``norms`` (LayerNormalization, RMSNormalization, Group/InstanceNormalization and the
  decomposed norms of the opset-18 exports: ``Pow → ReduceMean → Add → Sqrt → Reciprocal → Mul`` with
  its weight ``Mul``), ``head`` (every node after the last block: final norm, pooler, LM head or
  classifier, so logits and embeddings are computed in float32), ``parekit`` (all parekit nodes);
* op types (``Softmax``, ``Gelu``…). The opset-23 ``Attention`` op holds its own softmax; it is converted
  as a whole (TensorRT-RTX rejects ``softmax_precision`` on it: "Setting softmax precision is not
  supported in TensorRT Attention"), keep ``Attention`` to run it in float32;
* node-name globs (``"*lm_head*"``, ``node_linear_14``).

Parekit nodes follow their ``OpDef``: a slot is converted only where its ``ParamSpec`` lists the type
(``KvWindow``, the token ops and ``ExitGate`` take fp16; the KV-quant/evict ops and ``AttentionProbs`` are
float32-only, so they run in float32 with Casts around them).

``io=true`` (the default) keeps every graph input and output float32: a Cast after each float input and
before each float output, so callers and the KV I/O contract (``past``/``present`` dtypes) do not change.
``io=false`` gives the graph fp16/bf16 inputs and outputs instead: no boundary Casts, half the KV bytes
crossing the boundary, and callers must feed and read that type (the runtime's empty past at prefill
follows the input spec; ``present`` is fed back as ``past`` whatever its dtype).

Identity configuration: ``dtype=fp32`` (nothing to lower, the model is returned as it is). A ``keep`` that
covers every float node also changes nothing and says so.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass, field
from typing import Literal

import onnx_ir as ir

from parekit.analysis.modelmap import ModelMap
from parekit.analysis.norms import norm_region
from parekit.errors import OptionError
from parekit.ops import PAREKIT_DOMAIN, op_names
from parekit.passes.base import Pass
from parekit.passes.manager import PIPELINE_KEY, PROVENANCE_KEY
from parekit.passes.precision_cast import lower
from parekit.passes.registry import register

logger = logging.getLogger(__name__)

DTYPES = {"fp16": ir.DataType.FLOAT16, "bf16": ir.DataType.BFLOAT16}
CATEGORIES = ("norms", "head", "parekit")
"""Keep entries that name a kind of node rather than an op type or a node name."""
_OP_TYPE_RE = re.compile(r"[A-Z][A-Za-z0-9]*\Z")


def _is_op_type(entry: str) -> bool:
    return bool(_OP_TYPE_RE.match(entry))


@dataclass(frozen=True)
class PrecisionOptions:
    dtype: Literal["fp16", "bf16", "fp32"] = field(
        default="fp16", metadata={"help": "what converted nodes compute in; fp32 is the identity"}
    )
    keep: tuple[str, ...] = field(
        default=("norms", "Softmax", "head"),
        metadata={
            "help": "kept in float32: categories (norms, head, parekit), op types (Softmax) and node-name "
            'globs ("*lm_head*")'
        },
    )
    io: bool = field(
        default=True,
        metadata={
            "help": "keep graph inputs/outputs float32 (Casts at the boundary; the KV I/O contract is "
            "unchanged); false: they become dtype"
        },
    )

    def validate(self) -> None:
        for entry in self.keep:
            if not entry.strip():
                raise OptionError("precision: option 'keep' has an empty entry")
            if _is_op_type(entry) and not _known_op_type(entry):
                raise OptionError(
                    f"precision: keep entry '{entry}' is not an ONNX or parekit op type",
                    note='op types are CamelCase (Softmax); quote node-name globs: keep=["*lm_head*"]',
                )
        if len(set(self.keep)) != len(self.keep):
            raise OptionError(f"precision: option 'keep' repeats an entry: {list(self.keep)}")


def _known_op_type(op_type: str) -> bool:
    import onnx.defs

    return op_type in op_names() or onnx.defs.has(op_type)


@register("precision", options=PrecisionOptions)
class PrecisionPass(Pass[PrecisionOptions]):
    """Lower float32 compute to fp16/bf16 with explicit Casts (strongly typed TensorRT), norms/softmax/head kept fp32."""

    def precheck(self, model: ir.Model) -> None:
        lowered = any(n.metadata_props.get(PROVENANCE_KEY) == self.name for n in model.graph)
        pipeline = model.metadata_props.get(PIPELINE_KEY, "")
        if lowered or re.search(r"(^|,)precision(\{|,|$)", pipeline):
            raise self.not_applicable(
                "the model was already lowered by precision",
                note="run precision once, as the last pass, on the float32 model",
            )

    def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
        opts = self.options
        if opts.dtype == "fp32":
            self.report.set_identity("dtype=fp32: the model already computes in float32")
            return ir.passes.PassResult(model, modified=False)
        target = DTYPES[opts.dtype]
        reasons = self._kept_nodes(model, mm)
        kept_by: dict[str, int] = {}
        for reason in reasons.values():
            kept_by[reason] = kept_by.get(reason, 0) + 1
        plan = lower(model, target, lambda n: id(n) in reasons, io=opts.io, dry_run=True)
        if plan.converted_nodes == 0:
            self.report.set_identity(
                f"every float32 node is kept in float32 (keep={list(opts.keep)}): nothing to lower"
                if kept_by
                else "the model computes nothing in float32: nothing to lower"
            )
            self.report.extra.update(kept_nodes=kept_by)
            return ir.passes.PassResult(model, modified=False)
        plan = lower(model, target, lambda n: id(n) in reasons, io=opts.io)
        for reason, count in sorted(kept_by.items()):
            self.report.note_site(action="kept float32", reason=reason, nodes=count)
        self.report.note_site(action=f"lowered to {opts.dtype}", nodes=plan.converted_nodes)
        self.report.extra.update(
            dtype=opts.dtype,
            converted_nodes=plan.converted_nodes,
            kept_nodes=kept_by,
            casts=plan.casts,
            retyped_constants=plan.retyped,
            weights_converted=plan.weights_converted,
            weight_bytes_before=plan.weight_bytes_before,
            weight_bytes_after=plan.weight_bytes_after,
            io_float32=opts.io,
        )
        logger.info(
            "precision: %d nodes in %s, %d kept float32, %d casts, weights %d → %d bytes",
            plan.converted_nodes,
            opts.dtype,
            len(reasons),
            plan.casts,
            plan.weight_bytes_before,
            plan.weight_bytes_after,
        )
        return ir.passes.PassResult(model, modified=True)

    def _kept_nodes(self, model: ir.Model, mm: ModelMap) -> dict[int, str]:
        """``id(node) → why it stays float32`` for the main graph's nodes."""
        keep = self.options.keep
        nodes = list(model.graph)
        reasons: dict[int, str] = {}

        def mark(node: ir.Node, reason: str) -> None:
            reasons.setdefault(id(node), reason)

        for node in nodes:
            if any(_has_graphs(a) for a in node.attributes.values()):
                mark(node, "has subgraphs")
            elif node.domain not in ("", "ai.onnx", PAREKIT_DOMAIN):
                mark(node, f"custom domain {node.domain}")
        if "norms" in keep:
            for node in nodes:
                for member in norm_region(node) or ():
                    mark(member, "norms")
        if "head" in keep:
            head = set(mm.head_nodes)
            for node in nodes:
                if node.name in head:
                    mark(node, "head")
        if "parekit" in keep:
            for node in nodes:
                if node.domain == PAREKIT_DOMAIN:
                    mark(node, "parekit")
        for entry in keep:
            if entry in CATEGORIES:
                continue
            if _is_op_type(entry):
                for node in nodes:
                    if node.op_type == entry:
                        mark(node, entry)
                continue
            matched = [n for n in nodes if n.name is not None and fnmatch.fnmatchcase(n.name, entry)]
            if not matched:
                raise self.not_applicable(
                    f"keep entry '{entry}' matches no node name",
                    note=f"entries are categories ({', '.join(CATEGORIES)}), op types (Softmax) or node-name globs",
                )
            for node in matched:
                mark(node, f"name {entry}")
        return reasons


def _has_graphs(attr: ir.Attr) -> bool:
    return attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
