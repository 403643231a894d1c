"""The standard ONNX ops an output head is made of, in torch (float math differentiable).

    op type + torch inputs + attributes ──► torch outputs          (one entry of :data:`OPS` each)

Only what the heads of the sample families use (final norms: LayerNormalization, RMSNormalization or
its decomposition; LM heads: MatMul/Gemm; pooling: masked mean, L2 normalisation, token gathers) and
the shape arithmetic around them. :mod:`parekit.training.head` refuses a head with any other op,
naming it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import onnx_ir as ir

from parekit.errors import DataError
from parekit.training.torch_extra import torch

__all__ = ["OPS", "torch_dtype"]

Tensor = Any  # torch.Tensor (torch is typed loosely here: one alias, no stubs needed)
OpFn = Callable[[list[Any], Mapping[str, Any]], list[Tensor]]

_DTYPES = {
    ir.DataType.FLOAT: torch.float32,
    ir.DataType.DOUBLE: torch.float64,
    ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16,
    ir.DataType.INT64: torch.int64,
    ir.DataType.INT32: torch.int32,
    ir.DataType.INT16: torch.int16,
    ir.DataType.INT8: torch.int8,
    ir.DataType.UINT8: torch.uint8,
    ir.DataType.BOOL: torch.bool,
}


def torch_dtype(dtype: int) -> Any:
    """The torch dtype of an ONNX element type (``DataError`` for types heads do not use)."""
    try:
        return _DTYPES[ir.DataType(dtype)]
    except (KeyError, ValueError):
        raise DataError(f"output head: element type {dtype} is not supported in training") from None


def _ints(t: Any) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axes(x: Tensor, attrs: Mapping[str, Any], axes_input: Any) -> list[int] | None:
    axes = _ints(axes_input) if axes_input is not None else list(attrs.get("axes", []) or [])
    if not axes:
        return None
    return [a % x.dim() for a in axes]


def _reduce(kind: str) -> OpFn:
    def run(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
        x = ins[0]
        axes = _axes(x, attrs, ins[1] if len(ins) > 1 else None)
        keep = bool(attrs.get("keepdims", 1))
        if axes is None:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.dim()))
        if kind == "mean":
            return [x.mean(dim=axes, keepdim=keep)]
        if kind == "sum":
            return [x.sum(dim=axes, keepdim=keep)]
        if kind == "l2":
            return [torch.sqrt((x * x).sum(dim=axes, keepdim=keep))]
        out = x
        for a in sorted(axes, reverse=True):
            out = (out.amax if kind == "max" else out.amin)(dim=a, keepdim=keep)
        return [out]

    return run


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    return lambda ins, attrs: [fn(ins[0], ins[1])]


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    return lambda ins, attrs: [fn(ins[0])]


def _div(a: Tensor, b: Tensor) -> Tensor:
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _layer_norm(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axis = int(attrs.get("axis", -1)) % x.dim()
    shape = tuple(x.shape[axis:])
    y = torch.nn.functional.layer_norm(
        x, shape, None, None, float(attrs.get("epsilon", 1e-5))
    )
    y = y * scale
    return [y + bias if bias is not None else y]


def _rms_norm(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x, scale = ins[0], ins[1]
    axis = int(attrs.get("axis", -1)) % x.dim()
    dims = list(range(axis, x.dim()))
    ms = (x * x).mean(dim=dims, keepdim=True)
    return [x * torch.rsqrt(ms + float(attrs.get("epsilon", 1e-5))) * scale]


def _gemm(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    a, b = ins[0], ins[1]
    if attrs.get("transA", 0):
        a = a.transpose(-1, -2)
    if attrs.get("transB", 0):
        b = b.transpose(-1, -2)
    y = float(attrs.get("alpha", 1.0)) * (a @ b)
    c = ins[2] if len(ins) > 2 else None
    return [y + float(attrs.get("beta", 1.0)) * c if c is not None else y]


def _reshape(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x = ins[0]
    dims = _ints(ins[1])
    if not attrs.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return [x.reshape(dims)]


def _expand(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x = ins[0]
    return [x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_ints(ins[1]))))]


def _unsqueeze(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x = ins[0]
    axes = _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else list(attrs.get("axes", []))
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return [x]


def _squeeze(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x = ins[0]
    axes = _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else list(attrs.get("axes", []) or [])
    if not axes:
        return [x.squeeze()]
    for a in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(a)
    return [x]


def _slice(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x = ins[0]
    starts, ends = _ints(ins[1]), _ints(ins[2])
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        if st < 1:
            raise DataError("output head: Slice with a step below 1 is not supported in training")
        n = x.shape[a % x.dim()]
        index[a % x.dim()] = slice(max(min(s + n if s < 0 else s, n), 0), max(min(e + n if e < 0 else e, n), 0), st)
    return [x[tuple(index)]]


def _gather(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x, idx = ins[0], ins[1]
    axis = int(attrs.get("axis", 0)) % x.dim()
    flat = idx.reshape(-1).long() % x.shape[axis]
    out = x.index_select(axis, flat)
    return [out.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1 :]))]


def _shape(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    dims = list(ins[0].shape)
    start, end = attrs.get("start", 0), attrs.get("end", None)
    return [torch.tensor(dims[start:end], dtype=torch.int64)]


def _clip(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x = ins[0]
    lo = ins[1] if len(ins) > 1 else None
    hi = ins[2] if len(ins) > 2 else None
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype))
    return [x]


def _constant_of_shape(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    value = attrs.get("value")
    fill = torch.zeros(1, dtype=torch.float32) if value is None else value.reshape(-1)
    return [fill.expand(tuple(_ints(ins[0]))).clone()]


def _softmax(log: bool) -> OpFn:
    def run(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
        axis = int(attrs.get("axis", -1))
        return [(torch.log_softmax if log else torch.softmax)(ins[0], dim=axis)]

    return run


def _concat(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    parts = [t for t in ins if t is not None]
    return [torch.cat(parts, dim=int(attrs["axis"]))]


def _transpose(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x = ins[0]
    perm: Sequence[int] = attrs.get("perm") or list(range(x.dim()))[::-1]
    return [x.permute(*perm)]


def _flatten(ins: list[Any], attrs: Mapping[str, Any]) -> list[Tensor]:
    x = ins[0]
    axis = int(attrs.get("axis", 1)) % (x.dim() + 1)
    return [x.reshape(math.prod(x.shape[:axis]), -1)]


OPS: dict[str, OpFn] = {
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(_div),
    "Pow": _binary(torch.pow),
    "Max": lambda ins, attrs: [torch.stack(torch.broadcast_tensors(*ins)).amax(0)],
    "Min": lambda ins, attrs: [torch.stack(torch.broadcast_tensors(*ins)).amin(0)],
    "Equal": _binary(torch.eq),
    "Less": _binary(torch.lt),
    "Greater": _binary(torch.gt),
    "And": _binary(torch.logical_and),
    "Or": _binary(torch.logical_or),
    "Not": _unary(torch.logical_not),
    "Where": lambda ins, attrs: [torch.where(ins[0], ins[1], ins[2])],
    "Sqrt": _unary(torch.sqrt),
    "Reciprocal": _unary(torch.reciprocal),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Tanh": _unary(torch.tanh),
    "Erf": _unary(torch.erf),
    "Sigmoid": _unary(torch.sigmoid),
    "Relu": _unary(torch.relu),
    "Identity": _unary(lambda x: x),
    "Softmax": _softmax(False),
    "LogSoftmax": _softmax(True),
    "MatMul": _binary(torch.matmul),
    "Gemm": _gemm,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    "ReduceL2": _reduce("l2"),
    "LayerNormalization": _layer_norm,
    "RMSNormalization": _rms_norm,
    "Cast": lambda ins, attrs: [ins[0].to(torch_dtype(int(attrs["to"])))],
    "CastLike": lambda ins, attrs: [ins[0].to(ins[1].dtype)],
    "Clip": _clip,
    "Shape": _shape,
    "Gather": _gather,
    "Concat": _concat,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Slice": _slice,
    "Reshape": _reshape,
    "Expand": _expand,
    "Transpose": _transpose,
    "Flatten": _flatten,
    "ConstantOfShape": _constant_of_shape,
}
"""op type → torch implementation: ``fn(inputs, attributes) -> outputs`` (first outputs only)."""
