"""Static FLOP estimates from a graph's shapes.

Counted (one multiply-add = 2 FLOPs):

- ``MatMul``/``MatMulInteger``: ``2·batch·M·N·K`` with NumPy broadcasting of the batch dims;
- ``Gemm``: ``2·M·N·K`` (``transA``/``transB`` honoured; the bias add is ignored);
- ``Attention`` (ONNX, opset 23): ``QKᵀ`` plus ``P·V``, ``2·B·H·S_q·S_kv·(D_qk + D_v)`` (``4·B·H·S_q·S_kv·D``
  when the head sizes agree); ``S_kv`` includes the past cache;
- ``Conv``: ``2·out_elems·C_in/group·kernel``; ``ConvTranspose``: ``2·in_elems·C_out/group·kernel``.

Everything else (elementwise ops, Softmax, norms, reductions, data movement) is ignored: in transformer
blocks it is a few percent of the matrix products. Nodes inside ``If``/``Loop`` bodies are counted once
each, as if every branch ran once. Custom-domain nodes whose model-local function contains counted ops
go to ``unknown``.

Shapes come from the values' ``shape``. Symbolic dims are resolved through ``dims``: exact symbol names
first, then the roles ``batch``/``seq``/``past``/``total`` under common exporter spellings
(``batch_size``, ``sequence_length``, ``past_sequence_length``, ...), and expressions of those
(``past_sequence_length + sequence_length``). When a counted node's shapes are missing or do not resolve
(exporters leave some dims unknown), ONNX shape inference runs once on a copy of the model (the model is not
changed) and those nodes are retried; what still does not resolve goes to ``unknown``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnx_ir as ir

from parekit.analysis.dims import DIM_ROLE_ALIASES

if TYPE_CHECKING:
    from parekit.analysis.modelmap import ModelMap

__all__ = ["FlopCount", "dim_bindings", "estimate_flops"]

_ShapeOf = Callable[["ir.Value | None"], "list[int] | None"]

logger = logging.getLogger(__name__)

_ROLE_ALIASES = DIM_ROLE_ALIASES

_COUNTED = frozenset({"MatMul", "MatMulInteger", "Gemm", "Attention", "Conv", "ConvTranspose"})


@dataclass
class FlopCount:
    """A FLOP estimate.

    Attributes:
        total: sum over the nodes that could be estimated.
        by_node: node name → FLOPs, for counted nodes that could be estimated.
        unknown: names of nodes that would count but whose shapes could not be resolved.
    """

    total: int = 0
    by_node: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)


def dim_bindings(dims: Mapping[str, int], model_map: ModelMap | None = None) -> dict[str, int]:
    """Extend role-keyed dims with the model's own symbol names for batch and sequence.

    Args:
        dims: dimension values by role (``batch``, ``seq``, ``past``, ``total``) or symbol name.
        model_map: the model's structure map; its ``batch_dim``/``seq_dim`` name the symbols.

    Returns:
        A new mapping usable as ``estimate_flops(..., dims)``.
    """
    out = dict(dims)
    batch_dim = getattr(model_map, "batch_dim", None)
    seq_dim = getattr(model_map, "seq_dim", None)
    if isinstance(batch_dim, str) and "batch" in dims:
        out.setdefault(batch_dim, dims["batch"])
    if isinstance(seq_dim, str) and "seq" in dims:
        out.setdefault(seq_dim, dims["seq"])
    return out


class _Resolver:
    """Turns dims (ints, SymbolicDims) into ints under the given bindings, or ``None``."""

    def __init__(self, dims: Mapping[str, int]) -> None:
        bindings: dict[str, int] = {}
        for role, aliases in _ROLE_ALIASES.items():
            if role in dims:
                for alias in aliases:
                    bindings[alias] = dims[role]
        bindings.update(dims)
        self.bindings = bindings
        self.lower = {k.lower(): v for k, v in bindings.items()}
        self._cache: dict[str, int | None] = {}

    def symbol(self, text: str) -> int | None:
        if text not in self._cache:
            self._cache[text] = self._symbol(text)
        return self._cache[text]

    def _symbol(self, text: str) -> int | None:
        if text in self.bindings:
            return self.bindings[text]
        if text.lower() in self.lower:
            return self.lower[text.lower()]
        try:
            sym = ir.SymbolicDim(text)
            names = sym.free_symbols()
            subs = {n: self.bindings.get(n, self.lower.get(n.lower())) for n in names}
            if any(v is None for v in subs.values()):
                return None
            value = sym.evaluate({k: v for k, v in subs.items() if v is not None})
        except Exception:  # the string is not an expression SymPy understands
            return None
        return value if isinstance(value, int) else None

    def dim(self, d: int | ir.SymbolicDim) -> int | None:
        if isinstance(d, int):
            return d
        text = getattr(d, "value", None)
        return None if text is None else self.symbol(text)

    def shape(self, value: ir.Value | None, inferred: Mapping[str, ir.Shape]) -> list[int] | None:
        """The value's shape as ints: its own shape if that resolves, else the inferred one."""
        if value is None:
            return None
        for shape in (value.shape, inferred.get(value.name) if value.name else None):
            if shape is None:
                continue
            out = [self.dim(d) for d in shape]
            if all(d is not None for d in out):
                return out  # type: ignore[return-value]
        return None


def _broadcast(a: Sequence[int], b: Sequence[int]) -> list[int]:
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + list(a)
    b = [1] * (n - len(b)) + list(b)
    return [max(x, y) if 1 in (x, y) else x for x, y in zip(a, b, strict=True)]


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    if attr is None or attr.is_ref():
        return default
    return int(attr.as_int())


def _matmul(a: list[int], b: list[int]) -> int:
    if len(a) == 1:
        a = [1, a[0]]
    if len(b) == 1:
        b = [b[0], 1]
    m, k = a[-2], a[-1]
    n = b[-1]
    batch = math.prod(_broadcast(a[:-2], b[:-2]))
    return 2 * batch * m * n * k


def _gemm(node: ir.Node, a: list[int], b: list[int]) -> int:
    m, k = (a[1], a[0]) if _attr_int(node, "transA", 0) else (a[0], a[1])
    n = b[0] if _attr_int(node, "transB", 0) else b[1]
    return 2 * m * n * k


def _attention(node: ir.Node, shape_of: _ShapeOf) -> int | None:
    inputs = list(node.inputs) + [None] * 6
    q, k, v, past_k = shape_of(inputs[0]), shape_of(inputs[1]), shape_of(inputs[2]), inputs[4]
    if q is None or k is None or v is None:
        return None
    if len(q) == 4:
        b, h, s_q, d_qk = q
    elif len(q) == 3:
        h = _attr_int(node, "q_num_heads", 0)
        if h <= 0:
            return None
        b, s_q, d_qk = q[0], q[1], q[2] // h
    else:
        return None
    if len(v) == 4:
        d_v = v[3]
    elif len(v) == 3:
        kv_h = _attr_int(node, "kv_num_heads", 0)
        if kv_h <= 0:
            return None
        d_v = v[2] // kv_h
    else:
        return None
    present = shape_of(node.outputs[1]) if len(node.outputs) > 1 and node.outputs[1] is not None else None
    if present is not None and len(present) == 4:
        s_kv = present[2]
    else:
        s_kv = k[2] if len(k) == 4 else k[1]
        if past_k is not None:
            past = shape_of(past_k)
            if past is None or len(past) != 4:
                return None
            s_kv += past[2]
    return 2 * b * h * s_q * s_kv * (d_qk + d_v)


def _conv(node: ir.Node, x: list[int], w: list[int], y: list[int] | None) -> int | None:
    kernel = math.prod(w[2:])
    if node.op_type == "Conv":
        if y is None:
            return None
        return 2 * math.prod(y) * w[1] * kernel
    return 2 * math.prod(x) * w[1] * kernel  # W is [C_in, C_out/group, k...]


def _iter_nodes(model: ir.Model) -> Iterable[ir.Node]:
    return ir.traversal.RecursiveGraphIterator(model.graph)


def _function_counts(
    model: ir.Model, node: ir.Node, seen: frozenset[ir.OperatorIdentifier] = frozenset()
) -> bool:
    """Whether a custom node's model-local function (transitively) contains counted ops."""
    ident = node.op_identifier()
    func = model.functions.get(ident)
    if func is None or ident in seen:
        return False
    for inner in ir.traversal.RecursiveGraphIterator(func):
        if inner.domain in ("", "ai.onnx") and inner.op_type in _COUNTED:
            return True
        if _function_counts(model, inner, seen | {ident}):
            return True
    return False


def _inferred_shapes(model: ir.Model) -> dict[str, ir.Shape]:
    """Shapes by value name from ONNX shape inference on a copy of the model."""
    from onnx_ir.passes.common import ShapeInferencePass

    try:
        copy = model.clone()
        ShapeInferencePass(check_type=False, strict_mode=False, data_prop=True)(copy)
    except (RuntimeError, ValueError) as exc:
        # onnx-ir clones only topologically sorted graphs (a node reading a value defined later
        # fails); inference is a best-effort fill-in, so the nodes it would resolve stay unknown.
        logger.debug("shape inference for FLOP estimates skipped: %s", " ".join(str(exc).split())[:200])
        return {}
    shapes: dict[str, ir.Shape] = {}
    values: list[ir.Value] = list(copy.graph.inputs) + list(copy.graph.initializers.values())
    for node in ir.traversal.RecursiveGraphIterator(copy.graph):
        values.extend(node.outputs)
    for v in values:
        if v.name and v.shape is not None:
            shapes[v.name] = v.shape
    return shapes


def estimate_flops(
    model: ir.Model, dims: Mapping[str, int], *, nodes: Iterable[str] | None = None
) -> FlopCount:
    """Estimate the FLOPs of one run of the model's main graph (see the module docstring for the rules).

    Args:
        model: the model (not modified).
        dims: values of symbolic dims, by role (``batch``, ``seq``, ``past``, ``total``) or by symbol
            name.
        nodes: restrict the estimate to nodes with these names.

    Returns:
        The estimate: total, per node, and the nodes that could not be estimated.
    """
    node_filter = frozenset(nodes) if nodes is not None else None
    resolver = _Resolver(dims)
    inferred: dict[str, ir.Shape] = {}

    def shape_of(value: ir.Value | None) -> list[int] | None:
        return resolver.shape(value, inferred)

    flops: dict[int, int | None] = {}  # node index → FLOPs (None: unknown)
    keys: dict[int, str] = {}
    for index, node in enumerate(_iter_nodes(model)):
        if node_filter is not None and node.name not in node_filter:
            continue
        if node.domain not in ("", "ai.onnx"):
            if _function_counts(model, node):
                keys[index] = node.name or f"{node.op_type}#{index}"
                flops[index] = None
            continue
        if node.op_type in _COUNTED:
            keys[index] = node.name or f"{node.op_type}#{index}"
            flops[index] = _node_flops(node, shape_of)

    pending = [i for i, f in flops.items() if f is None]
    if pending:
        # Exporters leave some dims unknown (e.g. after a Transpose of the KV cache); ONNX shape
        # inference usually fills them in. Run it once, on a copy, and retry just those nodes.
        logger.debug(
            "%d counted nodes lack resolvable shapes; running shape inference on a copy", len(pending)
        )
        inferred.update(_inferred_shapes(model))
        nodes_by_index = dict(enumerate(_iter_nodes(model)))
        for i in pending:
            node = nodes_by_index[i]
            if node.domain in ("", "ai.onnx"):
                flops[i] = _node_flops(node, shape_of)

    result = FlopCount()
    for i, f in flops.items():
        if f is None:
            result.unknown.append(keys[i])
        else:
            result.by_node[keys[i]] = f
            result.total += f
    if result.unknown:
        logger.debug("FLOPs unknown for %d nodes (first: %s)", len(result.unknown), result.unknown[0])
    return result


def _node_flops(node: ir.Node, shape_of: _ShapeOf) -> int | None:
    op = node.op_type
    if op == "Attention":
        return _attention(node, shape_of)
    if len(node.inputs) < 2:
        return None
    a, b = shape_of(node.inputs[0]), shape_of(node.inputs[1])
    if a is None or b is None:
        return None
    if op in ("MatMul", "MatMulInteger"):
        return _matmul(a, b) if a and b else None
    if op == "Gemm":
        return _gemm(node, a, b) if len(a) == 2 and len(b) == 2 else None
    if op in ("Conv", "ConvTranspose"):
        if len(b) < 3:
            return None
        return _conv(node, a, b, shape_of(node.outputs[0]))
    return None
