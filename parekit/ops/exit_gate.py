"""``parekit::ExitGate``: an early exit's confidence signal and its decision, per row.

    x [..., V] ────┐
    prev [..., V] ─┴─► ExitGate{signal, threshold} ─► score float32 [...], take bool [...]

``x`` is an exit's head output (logits ``[B, S, V]`` or ``[B, C]``, or an embedding ``[B, D]``); the
signal reduces its last axis and keeps the leading dims. The softmax signals are computed stably
(``z = x - max x``, in float32 whatever the input dtype):

* ``margin``: ``p_top1 - p_top2`` (CALM's softmax response margin; ``V == 1``: 1). take = score >= threshold.
* ``maxprob``: ``p_top1``. take = score >= threshold.
* ``entropy``: ``-sum p log p`` in nats (``0 log 0 = 0``). take = score <= threshold.
* ``cosine``: ``<x, prev> / (|x| |prev|)`` clamped to [-1, 1], 0 when either norm is 0 (saturation
  between consecutive exits, PABEE-style). Needs ``prev`` (same shape and dtype); the other signals refuse
  it. take = score >= threshold.

A NaN score (a row holding NaN or +inf) never takes the exit. Thresholds above 1 (margin, maxprob,
cosine) or below 0 (entropy) never fire: the identity configuration.

Bodies: the signal changes the body's structure, and a string attribute cannot be read by reference
without string tensors (which TensorRT lacks), so each signal is its own function overload
(:meth:`ExitGate.function_overload`); ``threshold`` is read by reference. TensorRT's parser keys local
functions by name only, so a model carries one signal per model until that is solved (see docs/ops.md).
Margin uses ``TopK`` with ``K = min(2, V)``: ``p1 - p2 = (2 - e1 - e2) / S`` with ``e1 = exp(0) = 1``,
``S = sum exp(z)``, so ``V == 1`` needs no special case.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Final

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import float_attr_value
from parekit.ops.body import const_ints, dim, float_attr_ref, scalar_float
from parekit.ops.dtypes import BOOL, F16, F32
from parekit.ops.errors import OpAttributeError, OpInputError
from parekit.ops.opdef import OpDef
from parekit.ops.registry import register_op
from parekit.ops.schema import AttrSpec, AttrValue, ParamSpec

__all__ = ["EXIT_GATE", "SIGNALS", "ExitGate", "fires_never"]

SIGNALS: Final = ("margin", "entropy", "maxprob", "cosine")
"""The gate signals, in documentation order."""

_BODY_SIGNAL: ContextVar[str] = ContextVar("parekit_exit_gate_body_signal", default="margin")
"""The signal whose body :meth:`ExitGate.function` is recording (``build_body`` has no attributes)."""

_LOWER_IS_CONFIDENT: Final = frozenset({"entropy"})
"""Signals whose exit is taken at ``score <= threshold`` (all others: ``>=``)."""


def fires_never(signal: str, threshold: float) -> bool:
    """Whether a gate with this signal and threshold can never take the exit (the identity)."""
    return threshold < 0.0 if signal in _LOWER_IS_CONFIDENT else threshold > 1.0


class ExitGate(OpDef):
    """``ExitGate(x, prev?) -> (score, take)``: per-row exit signal and decision over the last axis."""

    op_type = "ExitGate"
    plugin_version = "1"
    inputs = (
        ParamSpec("x", F32 | F16, "[..., V]", doc="an exit's head output (logits or embedding), rank >= 2"),
        ParamSpec(
            "prev",
            F32 | F16,
            "[..., V]",
            optional=True,
            doc="the previous exit's output (signal=cosine only)",
        ),
    )
    outputs = (
        ParamSpec("score", F32, "[...]", doc="the signal per row (x's shape without its last axis)"),
        ParamSpec("take", BOOL, "[...]", doc="whether the row takes the exit"),
    )
    attributes = (
        AttrSpec("signal", "string", default="margin", doc="margin | entropy | maxprob | cosine"),
        AttrSpec(
            "threshold",
            "float",
            default=0.9,
            doc="take when score >= threshold (entropy: score <= threshold)",
        ),
    )
    min_opset = 18
    example_tolerance = (1e-5, 1e-6)  # float32 softmax sums against a float64 reference
    doc = (
        "Reduces the last axis of an exit's output to a confidence score (softmax margin top1 - top2, "
        "max probability, entropy in nats, or cosine to the previous exit's output) and takes the exit "
        "where score >= threshold (entropy: <=); NaN scores never take it."
    )

    # -- attributes and inputs ---------------------------------------------------------------------

    def validate_attributes(self, attributes: Mapping[str, Any] | None = None) -> dict[str, AttrValue]:
        """Also checks that ``signal`` is a known signal and ``threshold`` is not NaN."""
        attrs = super().validate_attributes(attributes)
        signal = attrs["signal"]
        if signal not in SIGNALS:
            close = difflib.get_close_matches(str(signal), SIGNALS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise OpAttributeError(
                f"op {self.op_type}: attribute 'signal' must be one of {', '.join(SIGNALS)}, got {signal!r}",
                note=f"{hint}margin/maxprob/cosine take the exit at score >= threshold, entropy at <=",
            )
        if math.isnan(float_attr_value(attrs, "threshold")):
            raise OpAttributeError(f"op {self.op_type}: attribute 'threshold' must not be NaN")
        return attrs

    def function_overload(self, attrs: Mapping[str, AttrValue]) -> str:
        """One function per signal: the overload is the signal's name."""
        return str(attrs["signal"])

    def make_node(
        self,
        model: ir.Model,
        inputs: Sequence[ir.Value | None],
        *,
        attributes: Mapping[str, Any] | None = None,
        name: str | None = None,
        num_outputs: int | None = None,
    ) -> ir.Node:
        """:meth:`OpDef.make_node`, plus the gate's own input rules (``prev`` iff cosine, rank >= 2).

        Raises:
            OpInputError: ``prev`` given with a non-cosine signal or missing for cosine; ``x`` of rank
                < 2; ``prev`` of another dtype or (known) shape than ``x``.
        """
        attrs = self.validate_attributes(attributes)
        x = inputs[0] if inputs else None
        prev = inputs[1] if len(inputs) > 1 else None
        _check_signal_inputs(self.op_type, str(attrs["signal"]), prev is not None)
        if x is not None and x.shape is not None and x.shape.rank() < 2:
            raise OpInputError(
                f"op {self.op_type}: input 'x' ({x.name}) has rank {x.shape.rank()}, expected rank >= 2 [..., V]"
            )
        if x is not None and prev is not None:
            if x.dtype is not None and prev.dtype is not None and x.dtype != prev.dtype:
                raise OpInputError(
                    f"op {self.op_type}: input 'prev' ({prev.name}) has dtype {prev.dtype.name}, "
                    f"'x' ({x.name}) has {x.dtype.name}"
                )
            if x.shape is not None and prev.shape is not None and not _same_shape(x.shape, prev.shape):
                raise OpInputError(
                    f"op {self.op_type}: input 'prev' ({prev.name}) has shape {prev.shape}, "
                    f"'x' ({x.name}) has {x.shape}"
                )
        return super().make_node(model, inputs, attributes=attributes, name=name, num_outputs=num_outputs)

    # -- the body ----------------------------------------------------------------------------------

    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> list[ir.Value]:
        """The body of the signal :meth:`function` is building (see :meth:`build_signal_body`)."""
        return self.build_signal_body(tape, inputs, _BODY_SIGNAL.get())

    def function(self, opset: int, attributes: Mapping[str, Any] | None = None) -> ir.Function:
        """The function of the signal in ``attributes`` (overload = signal; default margin)."""
        token = _BODY_SIGNAL.set(str(self.validate_attributes(attributes)["signal"]))
        try:
            return super().function(opset, attributes)
        finally:
            _BODY_SIGNAL.reset(token)

    def build_signal_body(self, tape: Tape, inputs: Sequence[ir.Value], signal: str) -> list[ir.Value]:
        """Records the body of one signal: score (float32, last axis reduced) and take."""
        x = tape.op("Cast", [inputs[0]], {"to": ir.DataType.FLOAT})
        axis = const_ints(tape, [-1])
        if signal == "cosine":
            score = _cosine_body(tape, x, tape.op("Cast", [inputs[1]], {"to": ir.DataType.FLOAT}), axis)
        else:
            score = _softmax_body(tape, x, axis, signal)
        compare = "LessOrEqual" if signal in _LOWER_IS_CONFIDENT else "GreaterOrEqual"
        take = tape.op(compare, [score, float_attr_ref(tape, "threshold")])
        return [score, take]

    # -- the reference -----------------------------------------------------------------------------

    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """NumPy twin in float64 (sorted probabilities, explicit ``p log p``), score rounded to float32."""
        signal = str(attrs["signal"])
        threshold = np.float32(float_attr_value(attrs, "threshold"))
        _check_signal_inputs(self.op_type, signal, len(inputs) > 1 and inputs[1] is not None)
        x = np.asarray(inputs[0])
        if x.ndim < 2 or x.shape[-1] == 0:
            raise OpInputError(
                f"op {self.op_type}: input 'x' has shape {list(x.shape)}, expected [..., V], V >= 1"
            )
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if signal == "cosine":
                prev = np.asarray(inputs[1])
                if prev.shape != x.shape:
                    raise OpInputError(
                        f"op {self.op_type}: input 'prev' has shape {list(prev.shape)}, 'x' has {list(x.shape)}"
                    )
                score = _cosine_reference(x.astype(np.float64), prev.astype(np.float64))
            else:
                score = _softmax_reference(x.astype(np.float64), signal)
        score32 = np.asarray(score, dtype=np.float32)
        take = score32 <= threshold if signal in _LOWER_IS_CONFIDENT else score32 >= threshold
        return [score32, np.asarray(take, dtype=bool)]

    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """Float32 score and bool take, both ``x``'s shape without its last axis."""
        x = inputs[0]
        shape = None
        if x is not None and x.shape is not None and x.shape.rank() >= 1:
            shape = ir.Shape(list(x.shape.dims)[:-1])
        return [(ir.DataType.FLOAT, shape), (ir.DataType.BOOL, shape)]

    def example_inputs(self) -> list[np.ndarray]:
        """Logits ``[2, 3, 7]``: random rows, a tie for the top, a masked (-inf) entry, one NaN row."""
        x = np.random.default_rng(11).standard_normal((2, 3, 7)).astype(np.float32) * 3
        x[0, 1, 2] = x[0, 1, 5] = 9.0
        x[1, 0, 3] = -np.inf
        x[1, 2, 4] = np.nan
        return [x]


def _check_signal_inputs(op_type: str, signal: str, has_prev: bool) -> None:
    if signal == "cosine" and not has_prev:
        raise OpInputError(
            f"op {op_type}: signal=cosine needs input 'prev' (the previous exit's output)",
            note="margin, entropy and maxprob read x alone",
        )
    if signal != "cosine" and has_prev:
        raise OpInputError(
            f"op {op_type}: input 'prev' is only read by signal=cosine, got signal={signal}",
            note="leave prev out, or use signal=cosine",
        )


def _same_shape(a: ir.Shape, b: ir.Shape) -> bool:
    if a.rank() != b.rank():
        return False
    return all(
        not (isinstance(p, int) and isinstance(q, int)) or p == q for p, q in zip(a.dims, b.dims, strict=True)
    )


def _softmax_body(tape: Tape, x: ir.Value, axis: ir.Value, signal: str) -> ir.Value:
    """``S = sum exp(x - max)``; margin ``(2 - sum exp(top2 - max)) / S``, maxprob ``1 / S``, entropy
    ``log S - sum(e z) / S`` (``e z = 0`` where ``e = 0``)."""
    if signal == "margin":
        k = tape.op("Min", [dim(tape, x, -1), const_ints(tape, [2])])
        top, _ = tape.op_multi_out("TopK", [x, k], {"axis": -1, "largest": 1, "sorted": 1}, num_outputs=2)
        top1 = tape.op("Slice", [top, const_ints(tape, [0]), const_ints(tape, [1]), axis])
    else:
        top1 = tape.op("ReduceMax", [x, axis], {"keepdims": 1})
    z = tape.op("Sub", [x, top1])
    e = tape.op("Exp", [z])
    total = tape.op("ReduceSum", [e, axis], {"keepdims": 0})
    if signal == "maxprob":
        return tape.op("Reciprocal", [total])
    if signal == "margin":
        top_e = tape.op("ReduceSum", [tape.op("Exp", [tape.op("Sub", [top, top1])]), axis], {"keepdims": 0})
        return tape.op("Div", [tape.op("Sub", [scalar_float(tape, 2.0), top_e]), total])
    zero = scalar_float(tape, 0.0)
    ez = tape.op("Where", [tape.op("Greater", [e, zero]), tape.op("Mul", [e, z]), zero])
    weighted = tape.op("ReduceSum", [ez, axis], {"keepdims": 0})
    return tape.op("Sub", [tape.op("Log", [total]), tape.op("Div", [weighted, total])])


def _cosine_body(tape: Tape, x: ir.Value, prev: ir.Value, axis: ir.Value) -> ir.Value:
    """``dot / (|x| |prev|)``, 0 where the product of norms is 0, clamped to [-1, 1] (NaN kept)."""

    def norm(v: ir.Value) -> ir.Value:
        return tape.op("Sqrt", [tape.op("ReduceSum", [tape.op("Mul", [v, v]), axis], {"keepdims": 0})])

    dot = tape.op("ReduceSum", [tape.op("Mul", [x, prev]), axis], {"keepdims": 0})
    denom = tape.op("Mul", [norm(x), norm(prev)])
    zero, one, minus_one = scalar_float(tape, 0.0), scalar_float(tape, 1.0), scalar_float(tape, -1.0)
    cos = tape.op("Where", [tape.op("Equal", [denom, zero]), zero, tape.op("Div", [dot, denom])])
    cos = tape.op("Where", [tape.op("Greater", [cos, one]), one, cos])
    return tape.op("Where", [tape.op("Less", [cos, minus_one]), minus_one, cos])


def _softmax_reference(x: np.ndarray, signal: str) -> np.ndarray:
    p = np.exp(x - x.max(axis=-1, keepdims=True))
    p = p / p.sum(axis=-1, keepdims=True)
    ranked = -np.sort(-p, axis=-1)  # descending; NaN rows stay NaN through p itself
    if signal == "maxprob":
        return ranked[..., 0]
    if signal == "margin":
        second = ranked[..., 1] if x.shape[-1] > 1 else np.zeros(x.shape[:-1])
        return ranked[..., 0] - second + np.where(np.isnan(p).any(axis=-1), np.nan, 0.0)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(np.where(p > 0, p * logs, 0.0).sum(axis=-1)) + np.where(np.isnan(p).any(axis=-1), np.nan, 0.0)


def _cosine_reference(x: np.ndarray, prev: np.ndarray) -> np.ndarray:
    dot = np.einsum("...v,...v->...", x, prev)
    norms = np.sqrt(np.einsum("...v,...v->...", x, x)) * np.sqrt(np.einsum("...v,...v->...", prev, prev))
    cos = np.where(norms == 0, 0.0, dot / np.where(norms == 0, 1.0, norms))
    return np.clip(cos, -1.0, 1.0)


EXIT_GATE: ExitGate = register_op(ExitGate())
"""The registered :class:`ExitGate` op."""
