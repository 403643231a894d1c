"""The model's own output head, re-run in torch so that an exit adapter can be trained through it.

    final residual stream ──► [final norm ─► LM head]            decoders: logits
        (the exit adapter's output stands in for it)   [mean pool ─► L2 normalise]   encoders: embedding

:func:`build_head` walks back from one head output of the graph to :attr:`ModelMap.final_output` and
keeps the nodes on the way (graph patterns, never names): the final norm and head MatMul with their
initializer weights (tied weights included: a ``Transpose`` of the embedding is folded once), pooling
that reads graph inputs such as the attention mask (re-computed from the minibatch's own inputs, so
shapes always fit), and the shape arithmetic around them. The weights are frozen constants of the
program; only the adapter in front of it trains. A head reading a value from inside a block, or using
an op outside :data:`parekit.training.head_ops.OPS`, is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from parekit.analysis.lookup import values_by_name
from parekit.analysis.modelmap import ModelMap
from parekit.errors import PassNotApplicableError, echo
from parekit.training.head_ops import OPS
from parekit.training.torch_extra import torch

__all__ = ["HeadProgram", "build_head", "head_outputs"]

MAX_HEAD_NODES = 400
"""Most nodes a head may have (a walk that grows past this is not a head)."""

Tensor = Any


@dataclass
class _Step:
    op: str
    inputs: list[str | None]
    outputs: list[str]
    attrs: dict[str, Any]


@dataclass
class HeadProgram:
    """A head output as a torch function of the residual stream (and the graph inputs it reads).

    Attributes:
        output: the graph output it computes (``logits``, ``sentence_embedding``).
        residual: the residual-stream value it reads (the model's final one).
        graph_inputs: graph inputs the head reads besides the residual stream (e.g. ``attention_mask``).
        ops: op types of its nodes, in order (for reports).
        weight_params: elements of its constant tensors (frozen).
    """

    output: str
    residual: str
    graph_inputs: tuple[str, ...]
    ops: tuple[str, ...]
    weight_params: int
    _steps: list[_Step] = field(default_factory=list, repr=False)
    _constants: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def __call__(self, x: Tensor, inputs: Mapping[str, Tensor] | None = None) -> Tensor:
        """Run the head on ``x`` (the residual stream, e.g. ``[B, S, H]``) with ``inputs`` (torch tensors)."""
        env: dict[str, Tensor] = dict(self._constants)
        env[self.residual] = x
        for name in self.graph_inputs:
            if inputs is None or name not in inputs:
                raise KeyError(f"the output head needs graph input {name!r}")
            env[name] = inputs[name]
        for step in self._steps:
            ins = [env[n] if n else None for n in step.inputs]
            outs = OPS[step.op](ins, step.attrs)
            for name, value in zip(step.outputs, outs, strict=False):
                env[name] = value
        return env[self.output]


def _reaches(start: ir.Value) -> set[str]:
    """Names of the values computed from ``start`` (itself included)."""
    seen = {start.name or ""}
    todo = [start]
    while todo:
        for node in todo.pop().consumers():
            for out in node.outputs:
                if out.name not in seen:
                    seen.add(out.name or "")
                    todo.append(out)
    return seen


def head_outputs(model: ir.Model, mm: ModelMap) -> list[str]:
    """Graph outputs computed from the final residual stream, not counting that value itself, in order."""
    by_name = values_by_name(model.graph)
    reach = _reaches(by_name[mm.final_output])
    return [o.name or "" for o in model.graph.outputs if o.name in reach and o.name != mm.final_output]


def _attr(attr: ir.Attr) -> Any:
    value = attr.value
    if attr.type == ir.AttributeType.TENSOR:
        return torch.from_numpy(np.array(value.numpy()))
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


def _constant(node: ir.Node) -> Tensor:
    for key, attr in node.attributes.items():
        if key == "value":
            return _attr(attr)
        if key in ("value_float", "value_floats"):
            return torch.tensor(attr.value, dtype=torch.float32)
        if key in ("value_int", "value_ints"):
            return torch.tensor(attr.value, dtype=torch.int64)
    raise PassNotApplicableError(f"train-exit: Constant node {echo(node.name)} has no value this trainer reads")


def build_head(model: ir.Model, mm: ModelMap, output: str | None = None) -> HeadProgram:
    """The head computing ``output`` (default: the only head output, else the first) as a :class:`HeadProgram`.

    Raises:
        PassNotApplicableError: no head output, an unknown ``output``, a head reading a value from
            inside a block, an op outside the supported set, or a residual stream that is not float32.
    """
    owner = "train-exit"
    by_name = values_by_name(model.graph)
    residual = by_name[mm.final_output]
    if residual.dtype != ir.DataType.FLOAT:
        raise PassNotApplicableError(
            f"{owner}: the residual stream is {residual.dtype}; training supports float32 models only"
        )
    outs = head_outputs(model, mm)
    if not outs:
        raise PassNotApplicableError(
            f"{owner}: no graph output is computed from the final residual stream {echo(mm.final_output)}",
            note="an exit needs the model's own head (final norm + LM head, pooling, classifier)",
        )
    if output is None:
        output = outs[0]
    elif output not in outs:
        raise PassNotApplicableError(
            f"{owner}: {echo(output)} is not a head output", note=f"head outputs: {', '.join(map(echo, outs))}"
        )
    in_blocks = {name for layer in mm.layers for name in layer.nodes}
    constants: dict[str, Tensor] = {}
    needed: dict[int, ir.Node] = {}
    reads: list[str] = []
    todo = [by_name[output]]
    seen: set[str] = set()
    while todo:
        value = todo.pop()
        name = value.name or ""
        if name in seen or name == mm.final_output:
            continue
        seen.add(name)
        if value.const_value is not None:  # an initializer (a graph input with a default counts as data)
            constants[name] = torch.from_numpy(np.array(value.const_value.numpy()))
            continue
        if value.is_graph_input():
            reads.append(name)
            continue
        node = value.producer()
        if node is None:
            raise PassNotApplicableError(f"{owner}: head value {echo(name)} has no producer and no data")
        if node.name in in_blocks:
            raise PassNotApplicableError(
                f"{owner}: the head of {echo(output)} reads {echo(name)} from inside a block",
                note="only heads computed from the final residual stream and the graph inputs are supported",
            )
        if node.domain not in ("", "ai.onnx") or (node.op_type not in OPS and node.op_type != "Constant"):
            raise PassNotApplicableError(
                f"{owner}: the head of {echo(output)} uses op {echo(node.domain + '::' if node.domain else '')}"
                f"{echo(node.op_type)} (node {echo(node.name)}), which the trainer cannot run in torch",
                note=f"supported head ops: {', '.join(sorted(OPS))}",
            )
        needed[id(node)] = node
        if len(needed) > MAX_HEAD_NODES:
            raise PassNotApplicableError(f"{owner}: the head of {echo(output)} has over {MAX_HEAD_NODES} nodes")
        todo.extend(v for v in node.inputs if v is not None)
    order = {id(n): i for i, n in enumerate(model.graph)}
    nodes = sorted(needed.values(), key=lambda n: order[id(n)])
    steps: list[_Step] = []
    with torch.no_grad():
        for node in nodes:
            outs_names = [o.name or "" for o in node.outputs]
            if node.op_type == "Constant":
                constants[outs_names[0]] = _constant(node)
                continue
            step = _Step(
                node.op_type,
                [v.name if v is not None else None for v in node.inputs],
                outs_names,
                {k: _attr(a) for k, a in node.attributes.items()},
            )
            if all(n is None or n in constants for n in step.inputs):  # fold (e.g. a tied weight's Transpose)
                results = OPS[step.op]([constants[n] if n else None for n in step.inputs], step.attrs)
                constants.update({n: r.contiguous() for n, r in zip(outs_names, results, strict=False)})
                continue
            steps.append(step)
    used = {n for s in steps for n in s.inputs if n}
    constants = {k: v for k, v in constants.items() if k in used}
    params = sum(int(v.numel()) for v in constants.values() if v.is_floating_point())
    return HeadProgram(
        output=output,
        residual=mm.final_output,
        graph_inputs=tuple(dict.fromkeys(reads)),
        ops=tuple(s.op for s in steps),
        weight_params=params,
        _steps=steps,
        _constants=constants,
    )
