"""Let the graph empty its own past on a ``start`` control input (Triton's implicit state).

    start [B, 1] bool ─► Cast(int64) ─► ReduceMax ─► > 0 ─► reset (bool scalar)
                                                              │
    past<sfx> ─► Shape ─► Gather(symbolic axes) ─► Where(reset, 0, ·) ─► ends
        │                                                                 │
        └──────────────────────────────► Slice(past, 0, ends, axes) ─► every former reader of past<sfx>

Triton's sequence batcher can carry a decoder's state itself (``sequence_batching { state [...] }``), but at
a sequence's START it hands the model an *initial state* of fixed dims (e.g. ``zero_data`` of
``[heads, 1, head_dim]``), not the empty past the KV I/O contract feeds at prefill. The graph therefore
honours START itself: when any element of ``start`` is true, every reader of every ``past<suffix>`` input
(KV tensors and extra state alike: kv-quant codes/scales/residual, kv-evict scores) sees the contract's
empty past (axis 0 unchanged, every other symbolic dim sliced to length 0, fixed dims as declared); when
``start`` is all false the Slice covers the whole tensor and the graph computes exactly what it did before.

The reset is batch-wide (one shared length per state tensor cannot be empty for some rows only): serve a
state-reset model with one sequence per batch, or all rows starting together.

Structure is not needed: the rewrite reads only the graph's inputs, so it also applies to graphs that
discovery no longer follows (fused kv-quant attention): ``needs_structure = False``, the manager runs no
discovery for it. :func:`reset_state` applies the same rewrite outside a pipeline.

Identity configuration: ``input=""`` (nothing changes).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnx_ir as ir

from parekit.errors import OptionError
from parekit.passes import kv_cache
from parekit.passes.base import Pass, PassContext, PassReport
from parekit.passes.registry import register

if TYPE_CHECKING:
    from parekit.analysis.modelmap import ModelMap

__all__ = ["DEFAULT_INPUT", "StateResetOptions", "StateResetPass", "reset_state"]

logger = logging.getLogger(__name__)

DEFAULT_INPUT = "start"
"""Default name of the control input; ``parekit.runtime.decoder.START_INPUT`` must stay equal (tested)."""

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}\Z")


@dataclass(frozen=True)
class StateResetOptions:
    input: str = field(
        default=DEFAULT_INPUT,
        metadata={
            "help": "name of the new BOOL [batch, 1] graph input that empties the past when true "
            "(empty: identity, nothing added)"
        },
    )

    def validate(self) -> None:
        name = self.input
        if not name:
            return
        if not _NAME_RE.match(name):
            raise OptionError(
                f"state-reset: option 'input' must be an identifier (letters, digits, '_', '.'), got {name!r}"
            )
        for prefix in (kv_cache.PAST_PREFIX, kv_cache.PRESENT_PREFIX):
            if name.startswith(prefix):
                raise OptionError(
                    f"state-reset: option 'input' must not start with '{prefix}' "
                    f"(the KV I/O contract would take {name!r} for state)"
                )


@register("state-reset", options=StateResetOptions)
class StateResetPass(Pass[StateResetOptions]):
    """Add a BOOL `start` input that empties every past* input when true (Triton implicit state)."""

    needs_structure = False

    def precheck(self, model: ir.Model) -> None:
        name = self.options.input
        if not name:
            return
        if not _pasts(model):
            raise self.not_applicable(
                "the model has no past* inputs: there is no carried state to reset",
                note="state-reset applies to decoders under the KV I/O contract (past<suffix> → present<suffix>)",
            )
        taken = {v.name for v in (*model.graph.inputs, *model.graph.outputs)}
        if name in taken:
            raise self.not_applicable(f"the model already has a graph input or output named {name!r}")

    def run(self, model: ir.Model, mm: ModelMap | None) -> ir.passes.PassResult:
        """Insert the reset (``mm`` is not used: the rewrite needs only the graph's inputs)."""
        del mm
        name = self.options.input
        if not name:
            self.report.set_identity("input='': no control input added")
            return ir.passes.PassResult(model, modified=False)
        self.precheck(model)  # also when called without the manager
        pasts = _pasts(model)
        plans = [(p, _reset_axes(p)) for p in pasts]
        if not any(axes for _, axes in plans):
            raise self.not_applicable(
                "no past* input has a symbolic dim besides axis 0: the empty past is the declared shape, "
                "nothing to reset"
            )
        for past, _ in plans:
            if past in set(model.graph.outputs):
                raise self.not_applicable(f"input '{past.name}' is also a graph output; cannot reroute its readers")
        start = ir.Value(
            name=name, type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([_batch_dim(pasts), 1])
        )
        model.graph.inputs.append(start)
        nodes, reset = _reset_flag(start)
        for past, axes in plans:
            if not axes:
                self.report.note_site(input=past.name, axes=[], action="fixed shape: nothing to slice")
                continue
            made, sliced = _emptied(past, axes, reset)
            nodes.extend(made)
            self.report.note_site(input=past.name, axes=list(axes), action="emptied when start")
        kv_cache.insert_at_top(model, nodes)
        states = sum(1 for _, axes in plans if axes)
        self.report.extra.update(input=name, states=states)
        logger.info("state-reset: %d past inputs emptied on '%s'", states, name)
        return ir.passes.PassResult(model, modified=True)


def reset_state(model: ir.Model, input: str = DEFAULT_INPUT) -> PassReport:  # noqa: A002 (the option's name)
    """Apply the rewrite in place without structure discovery (nor the manager's cleanup and checks).

    For models discovery no longer follows (fused kv-quant attention, token-reduced graphs), where a
    pipeline's ``state-reset`` step would be refused before it runs. The caller verifies the result.

    Raises:
        OptionError: a bad ``input`` name.
        PassNotApplicableError: the model has no past* input, or the name is taken.
    """
    options = StateResetOptions(input=input)
    options.validate()
    pass_ = StateResetPass(options, PassContext(analyze=_no_structure))
    pass_(model)
    return pass_.report


def _no_structure(model: ir.Model) -> ModelMap:
    return None  # type: ignore[return-value]  # StateResetPass.run never reads the map


def _pasts(model: ir.Model) -> list[ir.Value]:
    return [v for v in model.graph.inputs if v.name and v.name.startswith(kv_cache.PAST_PREFIX)]


def _reset_axes(past: ir.Value) -> tuple[int, ...]:
    """Axes the contract's empty past has at length 0: every non-int dim except axis 0."""
    shape = past.shape
    if shape is None:
        return ()
    return tuple(ax for ax in range(1, shape.rank()) if not isinstance(shape[ax], int))


def _batch_dim(pasts: list[ir.Value]) -> int | str:
    for past in pasts:
        if past.shape is not None and past.shape.rank() > 0:
            dim = past.shape[0]
            if isinstance(dim, int):
                return dim
            if dim.value is not None:
                return str(dim.value)
    return "batch"


def _reset_flag(start: ir.Value) -> tuple[list[ir.Node], ir.Value]:
    """``any(start)`` as a BOOL scalar (ReduceMax over an int64 cast: there is no bool reduction)."""
    as_int = _node("Cast", [start], "state_reset.cast", to=int(ir.DataType.INT64))
    top = _node("ReduceMax", [as_int.outputs[0]], "state_reset.any", keepdims=0)
    zero = _node("Constant", [], "state_reset.zero", value_int=0)
    flag = _node("Greater", [top.outputs[0], zero.outputs[0]], "state_reset.flag")
    return [as_int, top, zero, flag], flag.outputs[0]


def _emptied(past: ir.Value, axes: tuple[int, ...], reset: ir.Value) -> tuple[list[ir.Node], ir.Value]:
    """``past`` sliced to length 0 along ``axes`` when ``reset``, whole otherwise; its readers move to it."""
    tag = f"state_reset.{past.name}"
    readers = list(past.uses())
    shape = _node("Shape", [past], f"{tag}.shape")
    axes_c = _node("Constant", [], f"{tag}.axes", value_ints=list(axes))
    lengths = _node("Gather", [shape.outputs[0], axes_c.outputs[0]], f"{tag}.len", axis=0)
    zeros = _node("Constant", [], f"{tag}.zeros", value_ints=[0] * len(axes))
    ends = _node("Where", [reset, zeros.outputs[0], lengths.outputs[0]], f"{tag}.ends")
    sliced = _node("Slice", [past, zeros.outputs[0], ends.outputs[0], axes_c.outputs[0]], f"{tag}.slice")
    out = sliced.outputs[0]
    out.name = f"{past.name}.reset"
    out.type = past.type
    if past.shape is not None:
        out.shape = ir.Shape([None if ax in axes else past.shape[ax] for ax in range(past.shape.rank())])
    for node, index in readers:
        node.replace_input_with(index, out)
    return [shape, axes_c, lengths, zeros, ends, sliced], out


def _node(op_type: str, inputs: list[ir.Value], name: str, **attributes: int | list[int]) -> ir.Node:
    """A standard-domain node with its output named after it (the rewrite is valid without NameFixPass)."""
    node = ir.node(op_type, inputs, attributes=attributes, name=name)
    node.outputs[0].name = f"{name}.out"
    return node
