"""Cast insertion for the ``precision`` pass: which float32 tensors become fp16/bf16, and the Casts between.

The plan works on the main graph of an ``onnx_ir`` model in three steps:

1. **per slot**: every float32 input and output of a node that is *converted* (not kept) gets the target
   type where the op's schema allows it there: the ONNX schema's type constraint for standard ops, the
   ``ParamSpec.dtypes`` of the ``OpDef`` for parekit ops. Slots the schema pins to float32 (``Range``,
   the scales of ``Resize``, a parekit op's float32-only inputs) stay float32, so no op is ever fed a
   type it does not declare;
2. **per value**: a value takes the type its producer computes it in. Initializers become the target
   type when any reader wants it (a tied weight is stored once; float32 readers get a Cast back), and
   ``Cast``/``Constant``/``ConstantOfShape`` are retyped (``to``/their value) when every reader wants the
   target type. Constants are saturated to the target type's finite range first (float32's lowest, the
   exporters' mask fill, would become ``-inf`` and turn fully masked softmax rows into NaN);
3. **per use**: where a reader wants another type than the value has, one Cast per (value, type) is
   inserted right after the value's producer; graph inputs/outputs keep float32 when ``io`` is set.

Function bodies (the parekit ops' reference bodies) are not touched: ONNX functions are typed by their
call, so a converted parekit node runs its body in the target type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from parekit.ops import PAREKIT_DOMAIN, UnknownOpError, get_op

__all__ = ["CastPlan", "emulate_bf16", "lower", "saturate", "slot_allows"]

FLOAT = ir.DataType.FLOAT
RETYPED_SOURCES = ("Cast", "Constant", "ConstantOfShape")
"""Ops whose output type is set by an attribute: retyped when every reader wants the target type."""


@dataclass
class CastPlan:
    """What :func:`lower` did: counts for the pass report."""

    converted_nodes: int = 0
    casts: int = 0
    retyped: int = 0
    weights_converted: int = 0
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    io_casts: list[str] = field(default_factory=list)


def _type_name(dtype: ir.DataType) -> str:
    return {ir.DataType.FLOAT16: "tensor(float16)", ir.DataType.BFLOAT16: "tensor(bfloat16)"}[dtype]


def slot_allows(node: ir.Node, opset: int, kind: str, index: int, target: ir.DataType) -> bool:
    """Whether the op's declared types allow ``target`` at input/output ``index`` (``kind`` ``in``/``out``)."""
    if node.domain == PAREKIT_DOMAIN:
        try:
            op = get_op(node.op_type)
        except UnknownOpError:
            return False
        specs = op.inputs if kind == "in" else op.outputs
        return index < len(specs) and target in specs[index].dtypes
    if node.domain not in ("", "ai.onnx"):
        return False
    import onnx.defs  # the ONNX schemas: the one source of each standard op's type constraints

    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return False
    formals = schema.inputs if kind == "in" else schema.outputs
    if not formals:
        return False
    formal = formals[min(index, len(formals) - 1)]  # variadic formals are last
    constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    allowed = constraints.get(formal.type_str, [formal.type_str])
    return _type_name(target) in allowed


def saturate(array: np.ndarray, target: ir.DataType) -> np.ndarray:
    """``array`` in the target type, finite values clipped to its finite range (NaN/inf kept)."""
    import ml_dtypes  # (onnx's own dependency) its finfo knows bfloat16 on every release; NumPy's only on some

    limit = float(ml_dtypes.finfo(target.numpy()).max)
    finite = np.isfinite(array)
    clipped = np.where(finite, np.clip(array, -limit, limit), array)
    return clipped.astype(target.numpy())


def _set_dtype(value: ir.Value, dtype: ir.DataType) -> None:
    """Give ``value`` a type object of its own: exported (and pass-made) values may share one, and
    ``value.dtype = …`` would retype every value sharing it."""
    value.type = ir.TensorType(dtype)


def _is_float(value: ir.Value | None) -> bool:
    return value is not None and value.dtype == FLOAT


def _tensor_attr_dtype(node: ir.Node) -> ir.DataType | None:
    """The element type a Cast/Constant/ConstantOfShape produces, from its attributes."""
    if node.op_type == "Cast":
        attr = node.attributes.get("to")
        return ir.DataType(attr.value) if attr is not None else None
    attr = node.attributes.get("value")
    if attr is not None and isinstance(attr.value, ir.TensorProtocol):
        return attr.value.dtype
    if node.op_type == "Constant" and ("value_float" in node.attributes or "value_floats" in node.attributes):
        return FLOAT
    if node.op_type == "ConstantOfShape" and attr is None:
        return FLOAT  # the default value is a float32 zero
    return None


def _retype_source(node: ir.Node, target: ir.DataType) -> None:
    """Make a Cast/Constant/ConstantOfShape produce ``target`` instead of float32."""
    if node.op_type == "Cast":
        node.attributes["to"] = ir.AttrInt64("to", int(target))
        return
    attr = node.attributes.get("value")
    if attr is not None:
        array = attr.value.numpy()
    elif "value_float" in node.attributes:
        array = np.asarray(node.attributes.pop("value_float").value, np.float32)
    elif "value_floats" in node.attributes:
        array = np.asarray(node.attributes.pop("value_floats").value, np.float32)
    else:
        array = np.zeros((1,), np.float32)
    node.attributes["value"] = ir.AttrTensor("value", ir.tensor(saturate(np.asarray(array), target)))


def lower(
    model: ir.Model,
    target: ir.DataType,
    kept: Callable[[ir.Node], bool],
    *,
    io: bool,
    dry_run: bool = False,
) -> CastPlan:
    """Convert the main graph's float32 computation to ``target`` except in kept nodes (see module doc).

    ``dry_run``: only count the nodes that would be converted (``converted_nodes``); nothing changes.
    """
    graph = model.graph
    opset = model.opset_imports.get("", 18)
    plan = CastPlan()
    nodes = list(graph)
    floats = _float_values(graph, nodes)  # before any retyping: the values routed in step 3
    # 1. what every node computes each float32 slot in
    want_in: dict[tuple[int, int], ir.DataType] = {}
    out_type: dict[int, ir.DataType] = {}  # id(value) → the type its producer computes it in
    sources: list[ir.Node] = []
    for node in nodes:
        keep = kept(node)
        if not keep and node.op_type in RETYPED_SOURCES and node.domain in ("", "ai.onnx"):
            if _tensor_attr_dtype(node) == FLOAT and _is_float(node.outputs[0]):
                sources.append(node)
            continue
        if not keep and node.op_type != "Cast" and any(a in node.attributes for a in ("dtype", "to")):
            keep = True  # an attribute pins the output type (EyeLike, RandomNormal…): leave it float32
        converted = False
        for i, value in enumerate(node.inputs):
            if _is_float(value):
                t = target if not keep and slot_allows(node, opset, "in", i, target) else FLOAT
                want_in[(id(node), i)] = t
                converted |= t == target
        for j, value in enumerate(node.outputs):
            if _is_float(value):
                t = target if not keep and slot_allows(node, opset, "out", j, target) else FLOAT
                out_type[id(value)] = t
                converted |= t == target
        plan.converted_nodes += converted
    if dry_run:
        return plan

    def readers_want(value: ir.Value) -> list[ir.DataType]:
        wants = [want_in.get((id(user), i), FLOAT) for user, i in value.uses()]
        if value in graph.outputs and io:
            wants.append(FLOAT)
        elif value in graph.outputs:
            wants.append(target)
        return wants

    # 2. retyped sources and initializers
    for node in sources:
        wants = readers_want(node.outputs[0])
        if wants and all(w == target for w in wants):
            _retype_source(node, target)
            out_type[id(node.outputs[0])] = target
            plan.retyped += 1
            plan.converted_nodes += 1
    for value in list(graph.initializers.values()):
        if not _is_float(value) or value.const_value is None or value in graph.inputs:
            continue
        nbytes = value.const_value.nbytes
        plan.weight_bytes_before += nbytes
        if target in readers_want(value):
            value.const_value = ir.tensor(saturate(value.const_value.numpy(), target), name=value.name)
            _set_dtype(value, target)
            plan.weights_converted += 1
            plan.weight_bytes_after += value.const_value.nbytes
        else:
            plan.weight_bytes_after += nbytes
    for value in graph.inputs:
        if _is_float(value) and not io:
            _set_dtype(value, target)
    for node in nodes:
        for value in node.outputs:
            dtype = out_type.get(id(value))
            if dtype is not None:
                _set_dtype(value, dtype)

    # 3. casts where a reader wants another type than the value has
    for value in floats:
        _route(model, value, want_in, target, io, plan)
    return plan


def _float_values(graph: ir.Graph, nodes: Iterable[ir.Node]) -> list[ir.Value]:
    values: list[ir.Value] = [v for v in graph.inputs if v.dtype == FLOAT]
    values += [v for v in graph.initializers.values() if v.dtype == FLOAT and v not in graph.inputs]
    values += [v for n in nodes for v in n.outputs if v.dtype == FLOAT]
    return values


def _route(
    model: ir.Model,
    value: ir.Value,
    want_in: dict[tuple[int, int], ir.DataType],
    target: ir.DataType,
    io: bool,
    plan: CastPlan,
) -> None:
    graph = model.graph
    have = value.dtype
    assert have is not None
    casts: dict[ir.DataType, ir.Value] = {}

    def cast_to(dtype: ir.DataType) -> ir.Value:
        if dtype not in casts:
            suffix = _suffix(dtype)
            node = ir.node(
                "Cast", [value], attributes={"to": int(dtype)}, name=f"precision.{value.name}.{suffix}"
            )
            out = node.outputs[0]
            out.name = f"{value.name}.{suffix}"
            _set_dtype(out, dtype)
            out.shape = value.shape
            producer = value.producer()
            if producer is not None:
                graph.insert_after(producer, node)
            else:
                graph.insert_before(next(iter(graph)), node)
            casts[dtype] = out
            plan.casts += 1
        return casts[dtype]

    for user, index in list(value.uses()):  # listed before any Cast of ours reads the value
        want = want_in.get((id(user), index), FLOAT)  # readers outside the plan (subgraphs) read float32
        if want != have:
            user.replace_input_with(index, cast_to(want))
    desired = FLOAT if io else target
    if have != desired and value in graph.outputs:
        # the declared output takes the Cast: the Cast gets the output's name, the value a type suffix
        name = str(value.name)
        out = cast_to(desired)
        value.name, out.name = f"{name}.{_suffix(have)}", name
        for i, v in enumerate(graph.outputs):
            if v is value:
                graph.outputs[i] = out
        plan.io_casts.append(name)


def _suffix(dtype: ir.DataType) -> str:
    return {FLOAT: "fp32", ir.DataType.FLOAT16: "fp16"}.get(dtype, "bf16")


def emulate_bf16(model: ir.Model) -> int:
    """Rewrite a bf16-lowered model into float32 that rounds to bf16 wherever the original stores bf16.

    ONNX Runtime's CPU provider has no bf16 kernels (``Add``, ``MatMul``… do not load), so a bf16 graph
    cannot be checked there. This twin computes each op in float32 but rounds every bf16 value (weights,
    node outputs, inputs) through ``Cast(bf16) → Cast(float)``: the numerics of bf16 storage with float32
    arithmetic, what TensorRT's bf16 kernels approximate (they accumulate in float32). Parekit function
    bodies run in float32 between the roundings. Returns the number of rounding pairs inserted.
    """
    graph = model.graph
    bf16 = ir.DataType.BFLOAT16
    for value in graph.initializers.values():
        if value.dtype == bf16 and value.const_value is not None:
            value.const_value = ir.tensor(value.const_value.numpy().astype(np.float32), name=value.name)
            _set_dtype(value, FLOAT)
    rounded: list[ir.Value] = [v for v in graph.inputs if v.dtype == bf16]
    for node in list(graph):
        if (
            node.op_type == "Cast"
            and node.attributes.get("to") is not None
            and node.attributes["to"].value == int(bf16)
        ):
            node.attributes["to"] = ir.AttrInt64("to", int(FLOAT))
        attr = node.attributes.get("value")
        if node.op_type in ("Constant", "ConstantOfShape") and attr is not None and attr.value.dtype == bf16:
            node.attributes["value"] = ir.AttrTensor(
                "value", ir.tensor(attr.value.numpy().astype(np.float32))
            )
        rounded += [v for v in node.outputs if v.dtype == bf16]
    for value in rounded:
        _set_dtype(value, FLOAT)
        down = ir.node("Cast", [value], attributes={"to": int(bf16)}, name=f"emulate.{value.name}.bf16")
        up = ir.node(
            "Cast", [down.outputs[0]], attributes={"to": int(FLOAT)}, name=f"emulate.{value.name}.fp32"
        )
        _set_dtype(down.outputs[0], bf16)
        _set_dtype(up.outputs[0], FLOAT)
        down.outputs[0].shape = up.outputs[0].shape = value.shape
        up.outputs[0].name = f"{value.name}.rounded"
        users = [(u, i) for u, i in value.uses() if u is not down]
        producer = value.producer()
        if producer is not None:
            graph.insert_after(producer, [down, up])
        else:
            graph.insert_before(next(iter(graph)), [down, up])
        for user, index in users:
            user.replace_input_with(index, up.outputs[0])
        for i, v in enumerate(graph.outputs):
            if v is value:
                name = value.name
                value.name, up.outputs[0].name = f"{name}.unrounded", name
                graph.outputs[i] = up.outputs[0]
    return len(rounded)
