"""Early exits: after chosen blocks, the model's own head (optionally through an adapter) and a gate.

    block l ─► x_l ─► [adapter] ─► head clone ─► <out>.exit<l> ─► parekit::ExitGate ─► exit<l>.score, exit<l>.take
                 └─► block l+1 ─► ... ─► real head ─► <out>

An exit at layer ``l`` reads the residual stream leaving block ``l``. Its head is a clone of the nodes
between the final residual stream and the head's graph outputs (decoders: final norm + LM head; sentence
encoders: pooling + normalization; classifiers: final norm + classifier), sharing every weight and every
value that does not depend on the stream (pooling masks, constants): nothing is copied but the nodes.
``head=adapter`` puts a small trained map in front of it (:mod:`parekit.passes.exit_adapter`): read from
``adapter=FILE`` (``parekit train-exit``), or, without a file, a linear adapter fitted in closed form on
the calibration data (real tokens only). The gate (``ExitGate``) reduces the gated head output's last
axis to a score and a per-row decision: ``signal=auto`` is ``margin`` for decoders and ``cosine`` (to the
previous exit's output) for encoders; classifiers such as ViT want ``signal=margin``. The threshold is
given (``threshold=``) or chosen per gate on calibration data so that a fidelity budget holds
(``budget="sentence_embedding:cosine=0.98"``, :mod:`parekit.passes.exit_calibrate`).

Forms: ``outputs`` adds ``<out>.exit<l>``, ``exit<l>.score`` and ``exit<l>.take`` as graph outputs;
``segments`` is the same graph, marked for ``parekit split``; ``if`` nests ONNX ``If`` nodes with a
batch-wide predicate (all rows take) so that the blocks after an exit do not run when it fires (the main
outputs keep their names; the exits' values then live inside the ``If`` branches, under the same names,
and are not graph outputs). ``form=if`` is refused for models with a KV cache (part 2). The exits are
described in the ``parekit.exits`` metadata (JSON; see docs/early_exit_contract.md).

Identity configuration: ``layers=[]`` (neither ``threshold`` nor ``budget`` needed). A threshold that
never fires (above 1; entropy: below 0) leaves the main outputs as they were, in every form.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from parekit.analysis.lookup import values_by_name
from parekit.analysis.modelmap import LayerMap, ModelMap
from parekit.calibration import collect
from parekit.errors import OptionError, echo
from parekit.passes.base import Pass
from parekit.passes.exit_adapter import Adapter, fit_linear, load_adapters
from parekit.passes.exit_branch import (
    BranchError,
    ExitBranch,
    HeadSlice,
    all_rows,
    clone_head,
    gate,
    head_slice,
    nest_if,
)
from parekit.passes.registry import register

__all__ = ["EXITS_KEY", "EarlyExitOptions", "EarlyExitPass"]

logger = logging.getLogger(__name__)

EXITS_KEY = "parekit.exits"
"""Model metadata key of the exits' description (JSON)."""

_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16)


@dataclass(frozen=True)
class EarlyExitOptions:
    layers: tuple[int, ...] = field(
        default=(),
        metadata={"help": "exit after these blocks (0-based, not the last), e.g. [3,4]; [] changes nothing", "min": 0},
    )
    head: Literal["own", "adapter"] = field(
        default="own", metadata={"help": "the model's own head on the exit's stream, or a trained adapter in front of it"}
    )
    adapter: str = field(
        default="",
        metadata={"help": "adapter .npz (parekit train-exit) holding every exit layer; head=adapter without it fits a linear adapter on the calibration data"},
    )
    signal: Literal["auto", "margin", "entropy", "maxprob", "cosine"] = field(
        default="auto",
        metadata={"help": "gate signal; auto: margin for decoders, cosine (to the previous exit) for encoders; classifiers such as ViT want margin"},
    )
    threshold: float | None = field(
        default=None, metadata={"help": "one threshold for every gate (give it or 'budget')"}
    )
    budget: str = field(
        default="",
        metadata={"help": "fidelity budget picking each gate's threshold on calibration data, e.g. \"logits:top1=0.95\" (give it or 'threshold')"},
    )
    form: Literal["outputs", "segments", "if"] = field(
        default="outputs",
        metadata={"help": "outputs: exits as extra graph outputs; segments: the same, marked for parekit split; if: nested If (batch-wide)"},
    )
    output: str = field(
        default="", metadata={"help": "the head output the gate reads (default: the only one, else the first that is not the residual stream)"}
    )

    def validate(self) -> None:
        if self.threshold is not None and self.budget:
            raise OptionError("early-exit: give one of the options 'threshold' and 'budget', not both")
        if self.layers and self.threshold is None and not self.budget:
            raise OptionError(
                "early-exit: give one of the options 'threshold' and 'budget'",
                note='e.g. early-exit{layers=[3],threshold=0.9} or early-exit{layers=[3],budget="logits:top1=0.95"}',
            )
        if self.threshold is not None and math.isnan(self.threshold):
            raise OptionError("early-exit: option 'threshold' must be a number, got nan")
        if self.adapter and self.head != "adapter":
            raise OptionError("early-exit: option 'adapter' needs head=adapter", note="write early-exit{head=adapter,adapter=...}")
        if self.budget:
            from parekit.passes.exit_calibrate import parse_budget

            parse_budget(self.budget, "early-exit")


def _never(signal: str) -> float:
    """A threshold the gate never passes (the calibration replaces it)."""
    return -1.0 if signal == "entropy" else 2.0


@register("early-exit", options=EarlyExitOptions)
class EarlyExitPass(Pass[EarlyExitOptions]):
    """Add early exits: the model's head (or adapter + head) after chosen blocks, and an ExitGate on each."""

    def precheck(self, model: ir.Model) -> None:
        if EXITS_KEY in model.metadata_props:
            raise self.not_applicable(
                f"the model already has early exits (metadata '{EXITS_KEY}')", note="apply early-exit to the original model"
            )

    def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
        opts = self.options
        if not opts.layers:
            self.report.set_identity("no exit layers (layers=[])")
            return ir.passes.PassResult(model, modified=False)
        chosen = mm.select_layers(opts.layers, self.name)
        last = mm.num_layers - 1
        if chosen[-1].index == last:
            raise OptionError(
                f"early-exit: layer {last} is the last layer, where the real head is",
                note=f"exit layers must be below {last}",
            )
        if opts.form == "if" and mm.has_kv_cache:
            raise self.not_applicable(
                "form=if is refused for models with a KV cache: the skipped blocks would leave their present KV unfilled",
                note="per-token exits with KV fill are part 2; use form=outputs or form=segments",
            )
        graph = model.graph
        values = values_by_name(graph)
        try:
            head = head_slice(graph, values[mm.final_output])
        except BranchError as err:
            raise self.not_applicable(f"no head found: {err}") from None
        head_names = [v.name or "" for v in head.outputs]
        gated = self._gated_output(head, mm)
        signal = opts.signal if opts.signal != "auto" else ("margin" if mm.kind == "decoder" else "cosine")
        calibration = self.ctx.require_calibration(self.name) if opts.budget else None
        adapters = self._adapters(model, mm, chosen) if opts.head == "adapter" else {}
        threshold = opts.threshold if opts.threshold is not None else _never(signal)
        branches = self._build(model, mm, head, chosen, adapters, gated, signal, threshold)
        graph.sort()
        exits = [self._describe(b, adapters.get(b.layer), signal, threshold) for b in branches]
        overall = None
        if opts.budget:
            from parekit.passes.exit_calibrate import calibrate  # the lead's module, loaded when used

            results = calibrate(model, mm, exits, opts.budget, calibration, flop_dims=self.ctx.flop_dims)
            for b, e in zip(branches, exits, strict=True):
                entry = results[b.layer]
                e["threshold"] = float(entry["threshold"])
                e["calibration"] = {k: v for k, v in entry.items() if k != "overall"}
                overall = entry.get("overall")
                node = b.take.producer() if b.take is not None else None
                assert node is not None
                node.attributes["threshold"] = ir.AttrFloat32("threshold", e["threshold"])
        if opts.form == "if":
            for b in branches:
                assert b.take is not None
                nodes, b.pred = all_rows(b.take, b.layer)
                graph.extend(nodes)
                b.nodes.extend(nodes)
            try:
                nest_if(graph, branches, [values[lm.output] for lm in chosen], head.outputs)
            except BranchError as err:
                raise self.not_applicable(f"form=if: {err}", note="use form=outputs or form=segments") from None
            graph.sort()
        meta = {
            "version": 1,
            "form": opts.form,
            "gated_output": gated,
            "head_outputs": head_names,
            "exits": exits,
        }
        model.metadata_props[EXITS_KEY] = json.dumps(meta, sort_keys=True)
        for e in exits:
            a = e["adapter"]
            site = {"layer": e["layer"], "head": e["head"], "adapter": a["kind"] if a else None,
                    "adapter_params": a["params"] if a else 0, "signal": e["signal"], "threshold": e["threshold"]}
            if e["calibration"] is not None:
                site["exit_rate"] = e["calibration"].get("exit_rate")
            self.report.note_site(**site)
        self.report.extra.update(
            form=opts.form, gated_output=gated, head_outputs=meta["head_outputs"], signal=signal,
            adapter_source=self._adapter_source(), calibration=overall,
        )
        return ir.passes.PassResult(model, modified=True)

    # -- pieces ------------------------------------------------------------------------------------

    def _gated_output(self, head: HeadSlice, mm: ModelMap) -> str:
        names = [v.name or "" for v in head.outputs]
        if self.options.output:
            if self.options.output not in names:
                raise OptionError(
                    f"early-exit: option 'output' names {echo(self.options.output)}, which is not a head output "
                    f"(head outputs: {', '.join(echo(n) for n in names)})"
                )
            name = self.options.output
        else:
            others = [v.name or "" for v in head.outputs if v is not head.final]
            name = names[0] if len(names) == 1 else others[0]
        v = next(v for v in head.outputs if v.name == name)
        if v.dtype not in _FLOATS:
            raise self.not_applicable(f"the gated output {echo(name)} is not float32/float16 ({v.dtype})")
        if v.shape is not None and v.shape.rank() < 2:
            raise self.not_applicable(f"the gated output {echo(name)} has rank {v.shape.rank()}; the gate reads [..., V]")
        return name

    def _adapters(self, model: ir.Model, mm: ModelMap, chosen: tuple[LayerMap, ...]) -> dict[int, Adapter]:
        stream = values_by_name(model.graph)[chosen[0].output]
        if stream.dtype != ir.DataType.FLOAT:
            raise self.not_applicable(f"head=adapter needs a float32 residual stream, this one is {stream.dtype}")
        if self.options.adapter:
            found = load_adapters(self.options.adapter)
            missing = [lm.index for lm in chosen if lm.index not in found]
            if missing:
                raise OptionError(
                    f"early-exit: adapter file {echo(self.options.adapter)} has no adapter for layer(s) {missing}",
                    note=f"it holds layer(s) {sorted(found)}",
                )
            for lm in chosen:
                found[lm.index].check_hidden(mm.hidden_size, self.name)
            return {lm.index: found[lm.index] for lm in chosen}
        calibration = self.ctx.require_calibration(f"{self.name} (head=adapter without an adapter file fits one)")
        return fit_adapters(model, mm, chosen, calibration)

    def _adapter_source(self) -> str | None:
        if self.options.head != "adapter":
            return None
        if self.options.adapter:
            return self.options.adapter
        return f"closed-form linear fit on {getattr(self.ctx.calibration, 'source', 'feeds')}"

    def _build(
        self,
        model: ir.Model,
        mm: ModelMap,
        head: HeadSlice,
        chosen: tuple[LayerMap, ...],
        adapters: dict[int, Adapter],
        gated: str,
        signal: str,
        threshold: float,
    ) -> list[ExitBranch]:
        from parekit.passes.exit_adapter import build_adapter

        graph = model.graph
        values = values_by_name(graph)
        names = [v.name or "" for v in head.outputs]
        branches: list[ExitBranch] = []
        prev: ir.Value | None = None
        for lm in chosen:
            l = lm.index  # noqa: E741
            nodes: list[ir.Node] = []
            stream = values[lm.output]
            if l in adapters:
                stream, built = build_adapter(graph, stream, adapters[l], prefix=f"exit{l}")
                _match_declared_shapes(graph, f"exit{l}.adapter.")
                nodes += built
            clones, outs = clone_head(head, stream, f"exit{l}", {n: f"{n}.exit{l}" for n in names})
            nodes += clones
            if signal == "cosine" and prev is None:  # the own head on the stream entering the block
                before, prev_outs = clone_head(
                    head, values[lm.input], f"exit{l}.prev", {gated: f"{gated}.exit{l}.prev"}, only=[gated]
                )
                nodes += before
                prev = prev_outs[gated]
            node = gate(model, outs[gated], prev if signal == "cosine" else None, signal, threshold, l)
            nodes.append(node)
            graph.extend(nodes)
            if self.options.form != "if":
                graph.outputs.extend([*(outs[n] for n in names), node.outputs[0], node.outputs[1]])
            branches.append(ExitBranch(l, outs, nodes, node.outputs[0], node.outputs[1]))
            prev = outs[gated]
        return branches

    def _describe(self, b: ExitBranch, adapter: Adapter | None, signal: str, threshold: float) -> dict[str, Any]:
        return {
            "layer": b.layer,
            "head": self.options.head,
            "adapter": None
            if adapter is None
            else {"kind": adapter.kind, "params": adapter.params, "record": dict(adapter.record)},
            "signal": signal,
            "threshold": float(threshold),
            "score": f"exit{b.layer}.score",
            "take": f"exit{b.layer}.take",
            "outputs": {name: v.name for name, v in b.outputs.items()},
            "calibration": None,
        }


def _match_declared_shapes(graph: ir.Graph, prefix: str) -> None:
    """Give the initializers under ``prefix`` the shape their values declare.

    ``build_adapter`` stores its 0-d epsilon through ``np.ascontiguousarray``, which makes it ``[1]``
    while the value says ``[]``; the checker refuses the mismatch. Reshape the tensor to the declared shape.
    """
    for name, value in graph.initializers.items():
        tensor = value.const_value
        if not name.startswith(prefix) or tensor is None or value.shape is None:
            continue
        want = tuple(int(d) for d in value.shape.dims if isinstance(d, int))
        if len(want) == value.shape.rank() and tuple(tensor.shape.dims) != want:
            value.const_value = ir.tensor(tensor.numpy().reshape(want), name=name)


def fit_adapters(
    model: ir.Model, mm: ModelMap, chosen: tuple[LayerMap, ...], calibration: Any
) -> dict[int, Adapter]:
    """Closed-form linear adapters, one per exit layer: the layer's output → the final residual stream.

    Rows are the real tokens (the attention mask, where the model has one; for decoders with a cache
    its last ``seq`` columns).
    """
    names = [lm.output for lm in chosen] + [mm.final_output]
    mask_name = mm.inputs.get("attention_mask")
    xs: dict[int, list[np.ndarray]] = {lm.index: [] for lm in chosen}
    ys: list[np.ndarray] = []
    for feed, vals in collect(model, names, calibration):
        y = np.asarray(vals[mm.final_output])
        keep = np.ones(y.shape[:-1], bool)
        if mask_name is not None and mask_name in feed and y.ndim == 3:
            mask = np.asarray(feed[mask_name])
            if mask.ndim == 2 and mask.shape[0] == y.shape[0] and mask.shape[1] >= y.shape[1]:
                keep = mask[:, mask.shape[1] - y.shape[1] :].astype(bool)
        ys.append(y[keep])
        for lm in chosen:
            xs[lm.index].append(np.asarray(vals[lm.output])[keep])
    target = np.concatenate(ys)
    source = getattr(calibration, "source", "feeds")
    out: dict[int, Adapter] = {}
    for lm in chosen:
        a = fit_linear(np.concatenate(xs[lm.index]), target, lm.index)
        out[lm.index] = Adapter(a.layer, a.kind, a.tensors, {**a.record, "calibration": source})
        logger.info("early-exit: fitted a linear adapter for layer %d on %d tokens", lm.index, target.shape[0])
    return out
