"""Normalizations as regions of nodes: a fused norm op, or the decomposed form the opset-18 exports write.

``ModelMap`` names one node per norm (:func:`parekit.analysis.parts.norms`); a pass that must treat a
whole norm alike (the precision pass keeps norms in float32) needs every node of it, which
:func:`norm_region` returns.
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["FUSED_NORM_OPS", "norm_region"]

FUSED_NORM_OPS = frozenset({
    "LayerNormalization", "RMSNormalization", "GroupNormalization", "InstanceNormalization",
    "SimplifiedLayerNormalization",
})  # fmt: skip
"""Standard-domain ops that are a whole normalization."""

_NORM_CHAIN = ("Add", "Sqrt", "Reciprocal", "Div", "Mul", "Cast")
"""Ops between a decomposed norm's ReduceMean and the normalized value."""


def norm_region(node: ir.Node) -> list[ir.Node] | None:
    """The nodes of the normalization ``node`` anchors, or ``None``.

    A fused norm op is its own region; a decomposed norm is anchored at its variance ``ReduceMean``.
    """
    if node.op_type in FUSED_NORM_OPS and node.domain in ("", "ai.onnx"):
        return [node]
    if node.op_type == "ReduceMean":
        return _decomposed(node)
    return None


def _decomposed(reduce: ir.Node) -> list[ir.Node] | None:
    """The nodes of a decomposed RMS/LayerNorm around ``reduce`` (its variance ReduceMean), or ``None``.

    Matched: ``Pow(x, ·) → ReduceMean → (Add | Sqrt | Reciprocal | Div | Mul | Cast)* → Mul/Div(x, ·)``
    with ``x = Sub(x0, ReduceMean(x0))`` for LayerNorm, then trailing ``Mul``/``Add`` with a constant
    operand (weight, bias).
    """
    square = reduce.inputs[0].producer() if reduce.inputs[0] is not None else None
    if square is None or square.op_type != "Pow" or square.inputs[0] is None:
        return None
    region = [square, reduce]
    x = square.inputs[0]
    roots = {id(x)}
    centre = x.producer()
    if centre is not None and centre.op_type == "Sub" and centre.inputs[1] is not None:
        mean = centre.inputs[1].producer()
        if mean is not None and mean.op_type == "ReduceMean" and mean.inputs[0] is centre.inputs[0]:
            region += [mean, centre]
    value = reduce.outputs[0]
    for _ in range(len(_NORM_CHAIN) + 2):
        uses = list(value.uses())
        if len(uses) != 1 or uses[0][0].op_type not in _NORM_CHAIN:
            return None
        user, index = uses[0]
        region.append(user)
        value = user.outputs[0]
        if any(v is not None and id(v) in roots for i, v in enumerate(user.inputs) if i != index):
            break  # the normalize step: x times (or over) the statistic
    else:
        return None
    while True:
        uses = list(value.uses())
        if len(uses) != 1:
            break
        user, index = uses[0]
        others = [v for i, v in enumerate(user.inputs) if i != index]
        if user.op_type not in ("Mul", "Add") or not all(_constant(v) for v in others):
            break
        region.append(user)
        value = user.outputs[0]
    return region


def _constant(value: ir.Value | None) -> bool:
    if value is None:
        return False
    producer = value.producer()
    return value.const_value is not None or (producer is not None and producer.op_type == "Constant")
