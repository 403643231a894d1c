"""Exit adapters: small trained maps on the frozen residual stream, in front of an exit's head.

An adapter turns the residual stream leaving block ``l`` (``x [..., H]``) into a stand-in for the final
residual stream, which the model's own head (final norm + LM head, pooling, classifier) then reads.
Both kinds are residual (an all-zero adapter is the identity, so training starts at the logit lens):

* ``linear``: ``y = x + x @ w + b``, ``w [H, H]``, ``b [H]``.
* ``mlp``: ``h = x / sqrt(mean(x^2) + 1e-6) * g`` (RMS norm with gain ``g [H]``), then
  ``y = x + silu(h @ w1 + b1) @ w2 + b2`` with ``w1 [H, F]``, ``b1 [F]``, ``w2 [F, H]``, ``b2 [H]``
  (``silu(z) = z * sigmoid(z)``; PABEE's internal classifiers and Kangaroo's adapter are of this size).

File format: one ``.npz`` (loaded without pickle) holding adapters for one or more layers, keys
``exit<l>.<tensor>``: ``exit<l>.kind`` (a 0-d string array, ``linear`` | ``mlp``), the tensors above
(float32), and optionally ``exit<l>.record`` (a 0-d string array: the training record as JSON: tokens,
epochs, loss curve, held-out agreement, seed). ``parekit train-exit`` writes it; the ``early-exit`` pass
reads it (``adapter=FILE``) and builds the adapter into the graph with :func:`build_adapter`, its
tensors becoming initializers ``exit<l>.adapter.<tensor>`` (no torch needed to run it).
:meth:`Adapter.apply` is the NumPy reference the graph and the torch training module are tested against.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from parekit.atomic import atomic_output
from parekit.errors import DataError, OptionError, echo

__all__ = [
    "ADAPTER_KINDS",
    "RMS_EPS",
    "Adapter",
    "AdapterKind",
    "build_adapter",
    "fit_linear",
    "load_adapters",
    "save_adapters",
]

AdapterKind = Literal["linear", "mlp"]
ADAPTER_KINDS: tuple[str, ...] = ("linear", "mlp")
RMS_EPS = 1e-6
"""Epsilon of the mlp adapter's RMS norm."""

_TENSORS: dict[str, tuple[str, ...]] = {"linear": ("w", "b"), "mlp": ("g", "w1", "b1", "w2", "b2")}
_KEY = re.compile(r"exit(\d{1,6})\.([a-z0-9_]{1,32})\Z")


@dataclass(frozen=True)
class Adapter:
    """One layer's exit adapter.

    Attributes:
        layer: the block whose output it reads (0-based).
        kind: ``linear`` or ``mlp``.
        tensors: its float32 tensors by name (see the module docstring).
        record: how it was made (training record), JSON-ready; empty when unknown.
    """

    layer: int
    kind: AdapterKind
    tensors: Mapping[str, np.ndarray]
    record: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"exit adapter of layer {self.layer}"
        if self.kind not in _TENSORS:
            raise DataError(
                f"{where}: unknown kind {echo(self.kind)} (expected one of {', '.join(ADAPTER_KINDS)})"
            )
        missing = [t for t in _TENSORS[self.kind] if t not in self.tensors]
        if missing:
            raise DataError(f"{where}: {self.kind} adapter lacks tensor(s) {', '.join(missing)}")
        shapes = {k: np.shape(v) for k, v in self.tensors.items()}
        h = self.hidden
        want: dict[str, tuple[int, ...]]
        if self.kind == "linear":
            want = {"w": (h, h), "b": (h,)}
        else:
            f = shapes["w1"][1] if len(shapes["w1"]) == 2 else -1
            want = {"g": (h,), "w1": (h, f), "b1": (f,), "w2": (f, h), "b2": (h,)}
        for name, shape in want.items():
            if tuple(shapes[name]) != shape or min(shape, default=1) < 1:
                raise DataError(
                    f"{where}: tensor '{name}' has shape {list(shapes[name])}, expected {list(shape)}"
                )
            if not np.all(np.isfinite(self.tensors[name])):
                raise DataError(f"{where}: tensor '{name}' holds non-finite values")

    @property
    def hidden(self) -> int:
        """The residual width ``H`` the adapter maps."""
        key = "w" if self.kind == "linear" else "g"
        shape = np.shape(self.tensors[key])
        return int(shape[0]) if shape else 0

    @property
    def params(self) -> int:
        """Number of trained parameters."""
        return int(sum(np.size(self.tensors[t]) for t in _TENSORS[self.kind]))

    def check_hidden(self, hidden: int, owner: str) -> None:
        """Refuse an adapter made for another residual width.

        Raises:
            OptionError: ``hidden`` differs from the adapter's.
        """
        if self.hidden != hidden:
            raise OptionError(
                f"{owner}: the adapter of layer {self.layer} maps width {self.hidden}, the model's residual stream is {hidden}"
            )

    def apply(self, x: np.ndarray) -> np.ndarray:
        """NumPy reference: the adapter on ``x [..., H]`` (float32 in, float32 out; float64 inside)."""
        t = {k: np.asarray(v, np.float64) for k, v in self.tensors.items()}
        x64 = np.asarray(x, np.float64)
        if self.kind == "linear":
            y = x64 + x64 @ t["w"] + t["b"]
        else:
            h = x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + RMS_EPS) * t["g"]
            z = h @ t["w1"] + t["b1"]
            y = x64 + (z / (1.0 + np.exp(-z))) @ t["w2"] + t["b2"]
        return y.astype(np.float32)


def load_adapters(path: str | os.PathLike[str]) -> dict[int, Adapter]:
    """Read an adapter file: layer → :class:`Adapter`.

    Raises:
        DataError: the file is missing, not an ``.npz`` of this format, or an adapter is malformed.
    """
    where = f"adapter file {echo(os.fspath(path))}"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{where}: not a readable .npz ({type(e).__name__})") from None
    grouped: dict[int, dict[str, np.ndarray]] = {}
    for key, arr in arrays.items():
        m = _KEY.match(key)
        if m is None:
            raise DataError(f"{where}: unexpected entry {echo(key)} (keys are exit<layer>.<tensor>)")
        grouped.setdefault(int(m.group(1)), {})[m.group(2)] = arr
    if not grouped:
        raise DataError(f"{where}: holds no adapters")
    adapters: dict[int, Adapter] = {}
    for layer, entries in sorted(grouped.items()):
        kind = entries.pop("kind", None)
        if kind is None or kind.ndim != 0 or kind.dtype.kind != "U":
            raise DataError(f"{where}: layer {layer} has no string 'kind' entry")
        record: dict[str, Any] = {}
        rec = entries.pop("record", None)
        if rec is not None:
            try:
                record = json.loads(str(rec)) if rec.ndim == 0 and rec.dtype.kind == "U" else {}
            except ValueError:
                raise DataError(f"{where}: layer {layer}'s record is not JSON") from None
        tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in entries.items() if v.dtype.kind == "f"}
        odd = sorted(set(entries) - set(tensors))
        if odd:
            raise DataError(
                f"{where}: layer {layer} entries {', '.join(map(echo, odd))} are not float tensors"
            )
        adapters[layer] = Adapter(layer, str(kind), tensors, record)  # type: ignore[arg-type]
    return adapters


def save_adapters(path: str | os.PathLike[str], adapters: Mapping[int, Adapter] | list[Adapter]) -> None:
    """Write adapters to ``path`` (``.npz``, atomically; the folder must exist)."""
    items = list(adapters.values()) if isinstance(adapters, Mapping) else list(adapters)
    arrays: dict[str, np.ndarray] = {}
    for a in items:
        arrays[f"exit{a.layer}.kind"] = np.asarray(a.kind)
        for name in _TENSORS[a.kind]:
            arrays[f"exit{a.layer}.{name}"] = np.ascontiguousarray(a.tensors[name], np.float32)
        if a.record:
            arrays[f"exit{a.layer}.record"] = np.asarray(json.dumps(dict(a.record), sort_keys=True))
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def fit_linear(x: np.ndarray, y: np.ndarray, layer: int, *, ridge: float = 1e-3) -> Adapter:
    """Closed-form ridge fit of a ``linear`` adapter so that ``adapter(x) ≈ y``.

    Solves ``min ||[x, 1] @ [w; b] - (y - x)||² + ridge · tr(xᵀx)/H · ||w||²`` in float64 (the ridge
    scales with the data so that it means the same at any activation size).

    Args:
        x: residual stream at the exit, ``[N, H]`` (rows = real tokens).
        y: the target (the final residual stream), ``[N, H]``.
        layer: the exit layer, for the adapter.
        ridge: relative ridge strength.
    """
    x64 = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    y64 = np.asarray(y, np.float64).reshape(-1, np.shape(y)[-1])
    if x64.shape != y64.shape or x64.shape[0] == 0:
        raise DataError(
            f"exit adapter of layer {layer}: fit needs equal, non-empty [N, H] inputs, got {list(x64.shape)} and {list(y64.shape)}"
        )
    n, h = x64.shape
    a = np.concatenate([x64, np.ones((n, 1))], axis=1)
    gram = a.T @ a
    reg = ridge * float(np.trace(gram[:h, :h])) / h
    gram[np.arange(h), np.arange(h)] += reg
    sol = np.linalg.solve(gram, a.T @ (y64 - x64))
    record = {"method": "closed-form ridge (linear)", "tokens": int(n), "ridge": ridge}
    return Adapter(layer, "linear", {"w": sol[:h].astype(np.float32), "b": sol[h].astype(np.float32)}, record)


def build_adapter(
    graph: ir.Graph, x: ir.Value, adapter: Adapter, *, prefix: str
) -> tuple[ir.Value, list[ir.Node]]:
    """Build ``adapter`` on ``x`` in ``graph``: initializers registered, nodes returned (not inserted).

    Args:
        graph: the graph that receives the initializers ``<prefix>.adapter.<tensor>``.
        x: the residual stream value the adapter reads (float32).
        adapter: the adapter.
        prefix: name prefix, e.g. ``exit4``.

    Returns:
        ``(y, nodes)``: the adapted value and the nodes computing it, in order; the caller inserts them
        after ``x``'s producer.
    """
    nodes: list[ir.Node] = []
    counter = [0]

    def const(name: str, array: np.ndarray) -> ir.Value:
        full = f"{prefix}.adapter.{name}"
        tensor = ir.tensor(np.array(array, copy=True, order="C"), name=full)  # keeps 0-d arrays 0-d
        value = ir.Value(
            name=full,
            const_value=tensor,
            shape=ir.Shape(list(np.shape(array))),
            type=ir.TensorType(tensor.dtype),
        )
        graph.register_initializer(value)
        return value

    def op(op_type: str, inputs: list[ir.Value], **attrs: Any) -> ir.Value:
        counter[0] += 1
        node = ir.node(op_type, inputs, attributes=attrs, name=f"{prefix}.adapter.{op_type}_{counter[0]}")
        node.outputs[0].name = f"{prefix}.adapter.{op_type}_{counter[0]}"
        node.outputs[0].dtype = ir.DataType.FLOAT
        nodes.append(node)
        return node.outputs[0]

    t = adapter.tensors
    if adapter.kind == "linear":
        delta = op("Add", [op("MatMul", [x, const("w", t["w"])]), const("b", t["b"])])
    else:
        axes = const("axes", np.asarray([-1], np.int64))
        ms = op("ReduceMean", [op("Mul", [x, x]), axes], keepdims=1)
        rms = op("Sqrt", [op("Add", [ms, const("eps", np.asarray(RMS_EPS, np.float32))])])
        h = op("Mul", [op("Div", [x, rms]), const("g", t["g"])])
        z = op("Add", [op("MatMul", [h, const("w1", t["w1"])]), const("b1", t["b1"])])
        act = op("Mul", [z, op("Sigmoid", [z])])
        delta = op("Add", [op("MatMul", [act, const("w2", t["w2"])]), const("b2", t["b2"])])
    y = op("Add", [x, delta])
    y.name = f"{prefix}.adapter.out"
    y.shape = x.shape
    return y, nodes
