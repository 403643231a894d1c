"""Input/output tensor descriptions read from an ONNX graph, shared by backends, parity and bench."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

Dim = int | str | None
"""One dimension: a fixed size, a symbolic name (``"batch"``), or ``None`` when unknown and unnamed."""


@dataclass(frozen=True)
class TensorSpec:
    """The name, element type and shape of a graph input or output.

    Attributes:
        name: The value's name in the graph.
        dtype: The NumPy element type.
        shape: One entry per axis: ``int`` for a fixed size, ``str`` for a symbolic dim (the name
            the exporter gave it, e.g. ``"batch"``), ``None`` for an unknown unnamed dim. The
            whole shape is ``None`` when the graph does not record the rank.
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None

    @property
    def rank(self) -> int | None:
        """The number of axes, or ``None`` when unknown."""
        return None if self.shape is None else len(self.shape)

    @property
    def symbolic_dims(self) -> tuple[str, ...]:
        """The symbolic dim names of this spec, in axis order."""
        return tuple(d for d in self.shape or () if isinstance(d, str))

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.name}: {self.dtype}[unknown rank]"
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


def specs_from_ir_values(values: Iterable[ir.Value]) -> list[TensorSpec]:
    """Build specs from onnx-ir values (graph inputs or outputs).

    Args:
        values: The values; each must have a tensor type.

    Returns:
        One spec per value, in order.
    """
    specs = []
    for value in values:
        dtype = np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype(np.float32)
        shape: tuple[Dim, ...] | None = None
        if value.shape is not None:
            shape = tuple(_ir_dim(d) for d in value.shape)
        specs.append(TensorSpec(value.name or "", dtype, shape))
    return specs


def specs_from_proto_values(values: Iterable[onnx.ValueInfoProto]) -> list[TensorSpec]:
    """Build specs from protobuf ``ValueInfoProto`` entries (graph inputs or outputs).

    Args:
        values: The value infos.

    Returns:
        One spec per value, in order.
    """
    from onnx import helper

    specs = []
    for info in values:
        tensor_type = info.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        shape: tuple[Dim, ...] | None = None
        if tensor_type.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor_type.shape.dim
            )
        specs.append(TensorSpec(info.name, dtype, shape))
    return specs


def _ir_dim(dim: object) -> Dim:
    if isinstance(dim, int):
        return dim
    value = getattr(dim, "value", None)
    if isinstance(value, (int, str)):
        return value
    return None
