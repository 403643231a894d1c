"""What a model looks like from outside: its tensors, whether it is a stateless encoder or a decoder under
the KV I/O contract, and which of its dims a Triton batch dim can stand for.

Read from the graph alone (no structure discovery), so graphs that discovery cannot follow any more
(token-pruned or token-merged encoders, fused kv-quant decoders) still export.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from parekit.backends.specs import TensorSpec, specs_from_ir_values
from parekit.errors import ParekitError, StructureError
from parekit.runtime.decoder import PAST_PREFIX, PRESENT_PREFIX, START_INPUT

if TYPE_CHECKING:
    import onnx_ir as ir

__all__ = ["START_INPUT", "Signature", "read_signature"]


_TRITON_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/\-]{0,127}$")


@dataclass(frozen=True)
class Signature:
    """A model's graph I/O, classified.

    Attributes:
        name: The model's name in messages.
        kind: ``encoder`` (stateless: every request stands alone) or ``decoder`` (the KV I/O contract).
        inputs: Graph inputs, in order (for decoders: without the ``past*`` state and ``start``).
        outputs: Graph outputs, in order (for decoders: without the ``present*`` state).
        states: ``(past, present)`` pairs of a decoder, in input order.
        start: The ``start`` control input of a decoder the ``state-reset`` pass adapted, else ``None``.
        batch_dim: The symbolic dim every input and output has at axis 0, else ``None``.
    """

    name: str
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    states: tuple[tuple[TensorSpec, TensorSpec], ...] = ()
    start: TensorSpec | None = None
    batch_dim: str | None = None

    @property
    def all_inputs(self) -> tuple[TensorSpec, ...]:
        """Every graph input (state and control included)."""
        extra = tuple(p for p, _ in self.states) + ((self.start,) if self.start is not None else ())
        return self.inputs + extra

    @property
    def all_outputs(self) -> tuple[TensorSpec, ...]:
        """Every graph output (state included)."""
        return self.outputs + tuple(p for _, p in self.states)

    def spec(self, name: str) -> TensorSpec:
        """The input or output named ``name``."""
        for s in self.all_inputs + self.all_outputs:
            if s.name == name:
                return s
        raise KeyError(name)


def read_signature(model: ir.Model, name: str) -> Signature:
    """Classify a model's graph I/O.

    Args:
        model: The model.
        name: What to call it in errors (its file name).

    Raises:
        StructureError: No inputs or outputs, a tensor without a declared rank, a name Triton cannot
            take, or a decoder that breaks the KV I/O contract (a ``past*`` input without its
            ``present*`` output, no ``input_ids`` / ``attention_mask``, no logits).
    """
    inputs = specs_from_ir_values(model.graph.inputs)
    outputs = specs_from_ir_values(model.graph.outputs)
    if not inputs or not outputs:
        raise StructureError(f"{name}: the graph has no {'inputs' if not inputs else 'outputs'}; nothing to serve")
    for spec in inputs + outputs:
        if not _TRITON_NAME.match(spec.name):
            raise StructureError(f"{name}: tensor name {spec.name!r} is not a name Triton can serve "
                                 "(letters, digits and _ . : / - only, at most 128)")
        if spec.shape is None:
            raise StructureError(f"{name}: tensor '{spec.name}' has no declared rank; Triton needs its dims")
    batch = _batch_dim(inputs + outputs)
    past = [s for s in inputs if s.name.startswith(PAST_PREFIX)]
    if not past:
        return Signature(name, "encoder", tuple(inputs), tuple(outputs), batch_dim=batch)
    by_name = {s.name: s for s in outputs}
    states = []
    for spec in past:
        present = PRESENT_PREFIX + spec.name[len(PAST_PREFIX):]
        if present not in by_name:
            raise StructureError(f"{name}: input '{spec.name}' has no output '{present}' to be fed back from",
                                 note="the KV I/O contract: every output present<suffix> is fed back as input past<suffix>")
        states.append((spec, by_name[present]))
    names = {s.name for s in inputs}
    for needed in ("input_ids", "attention_mask"):
        if needed not in names:
            raise StructureError(f"{name}: a decoder (it has past* inputs) without a '{needed}' input does not "
                                 "follow the KV I/O contract")
    start = next((s for s in inputs if s.name == START_INPUT), None)
    if start is not None and start.dtype != np.dtype(np.bool_):
        raise StructureError(f"{name}: input '{START_INPUT}' is {start.dtype}, not the bool control the "
                             "state-reset pass adds")
    state_names = {p.name for p, _ in states} | {q.name for _, q in states} | {START_INPUT}
    plain_out = tuple(s for s in outputs if s.name not in state_names)
    if not plain_out:
        raise StructureError(f"{name}: the decoder has no logits output")
    return Signature(name, "decoder", tuple(s for s in inputs if s.name not in state_names), plain_out,
                     states=tuple(states), start=start, batch_dim=batch)


def _batch_dim(specs: list[TensorSpec]) -> str | None:
    """The symbolic dim at axis 0 of every spec, when they all share one."""
    firsts = {s.shape[0] if s.shape else None for s in specs}
    if len(firsts) == 1:
        only = next(iter(firsts))
        if isinstance(only, str):
            return only
    return None


def logits_output(sig: Signature) -> TensorSpec:
    """A decoder's logits output: ``logits`` when there is one, else the first non-state output."""
    if sig.kind != "decoder":
        raise ParekitError(f"{sig.name}: not a decoder")
    return next((s for s in sig.outputs if s.name == "logits"), sig.outputs[0])
