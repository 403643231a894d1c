"""The :class:`OpDef` base class: one subclass, one registered instance per parekit op.

Every node a pass inserts is a ``parekit`` custom op defined once, in ``parekit/ops/<snake_name>.py``,
by a subclass of :class:`OpDef` that carries four things:

* the **schema**: op type, inputs/outputs (:class:`~parekit.ops.schema.ParamSpec`), typed attributes
  (:class:`~parekit.ops.schema.AttrSpec`) and a type/shape rule (:meth:`OpDef.infer_outputs`);
* the **reference body**: an ONNX model-local function of the same name built only from standard ONNX
  ops (:meth:`OpDef.build_body`), which ONNX Runtime and TensorRT's ONNX parser inline;
* a **NumPy reference** (:meth:`OpDef.reference`), the oracle of the tests and of a CUDA kernel's CPU twin;
* its **TensorRT plugin identity** (:attr:`OpDef.plugin`): plugin name = op type, a version, namespace
  ``parekit``, and one plugin field per attribute.

Passes insert nodes only through :meth:`OpDef.make_node`, which also attaches the function and the
opset imports to the model. Op type strings live only in ``parekit/ops``; the registry
(:mod:`parekit.ops.registry`) maps them to their ops.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.ops.attrs import attribute_spec, make_attr, validate_attributes
from parekit.ops.errors import OpInputError
from parekit.ops.schema import (
    DEFAULT_ONNX_OPSET,
    PAREKIT_DOMAIN,
    PAREKIT_OPSET_VERSION,
    PLUGIN_NAMESPACE,
    PLUGIN_NAMESPACE_ATTR,
    PLUGIN_VERSION_ATTR,
    AttrSpec,
    AttrValue,
    ParamSpec,
    PluginIdentity,
    plugin_field,
)

__all__ = ["OpDef"]


class OpDef(abc.ABC):
    """Base class of every parekit custom op; one subclass, one registered instance per op.

    Subclasses set the class variables and implement :meth:`build_body`, :meth:`reference` and
    :meth:`infer_outputs`. Everything else (validation, the function, the node, the plugin identity)
    is derived here.

    Attributes:
        op_type: CamelCase op type; also the function name and the TensorRT plugin name.
        plugin_version: TensorRT plugin version string.
        inputs: Input specs, in order (optional ones last).
        outputs: Output specs, in order (optional ones last).
        attributes: Attribute specs, in order.
        min_opset: Lowest standard-domain opset the body is valid for. The function is built at the
            model's own ``""`` opset (the ONNX checker requires function and model to agree).
        doc: One paragraph describing what the op computes.
        example_tolerance: ``(rtol, atol)`` of the contract test's body-vs-reference comparison on
            :meth:`example_inputs`; ``(0, 0)`` (bit-exact) for data movement, loose for float sums.
    """

    op_type: ClassVar[str]
    plugin_version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[ParamSpec, ...]]
    outputs: ClassVar[tuple[ParamSpec, ...]]
    attributes: ClassVar[tuple[AttrSpec, ...]] = ()
    min_opset: ClassVar[int] = 13
    doc: ClassVar[str] = ""
    example_tolerance: ClassVar[tuple[float, float]] = (0.0, 0.0)

    # -- to implement ------------------------------------------------------------------------------

    @abc.abstractmethod
    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> Sequence[ir.Value]:
        """Records the reference body from standard ONNX ops onto ``tape``.

        Attributes are not known here: read them with ``ref_attr_name`` (see :func:`~parekit.ops.body.int_attr_ref`).
        Only use ops TensorRT's ONNX parser supports without plugins.

        Args:
            tape: The tape recording the function body (its nodes become the function's).
            inputs: The function's formal inputs, one per :attr:`inputs` entry.

        Returns:
            The function's outputs, one per :attr:`outputs` entry.
        """

    @abc.abstractmethod
    def reference(self, inputs: Sequence[np.ndarray], attrs: Mapping[str, AttrValue]) -> list[np.ndarray]:
        """Computes the op in NumPy (the oracle).

        Args:
            inputs: Input arrays, one per given input.
            attrs: All attributes, validated, defaults filled in.

        Returns:
            One array per output.
        """

    @abc.abstractmethod
    def infer_outputs(
        self, inputs: Sequence[ir.Value | None], attrs: Mapping[str, AttrValue]
    ) -> list[tuple[ir.DataType | None, ir.Shape | None]]:
        """The type/shape rule: output element types and shapes from the inputs' (possibly partial) ones.

        Args:
            inputs: The node's input values, ``None`` for omitted optional inputs (their ``dtype`` and
                ``shape`` may be ``None``).
            attrs: All attributes, validated, defaults filled in.

        Returns:
            ``(dtype, shape)`` per output; ``None`` where unknown; unknown dims are ``None``.
        """

    def example_inputs(self) -> list[np.ndarray] | None:
        """Small inputs the contract test runs the body on; ``None`` (the default) lets the test make
        one input per declared input. Override where inputs are shape-coupled.
        """
        return None

    def function_overload(self, attrs: Mapping[str, AttrValue]) -> str:
        """The function overload for an attribute set; ``""`` (one function per op) by default.

        Override only when an attribute changes the body's *structure* and cannot be read through
        ``ref_attr_name``. ONNX Runtime dispatches on ``(domain, name, overload)``, but TensorRT's ONNX
        parser keys local functions by name alone, so two overloads of one op in one model collide there:
        prefer ``ref_attr_name`` bodies.

        Args:
            attrs: All attributes, validated, defaults filled in.

        Returns:
            The overload string (``""`` for none).
        """
        del attrs
        return ""

    # -- derived -----------------------------------------------------------------------------------

    @property
    def plugin(self) -> PluginIdentity:
        """The TensorRT plugin identity of this op."""
        return PluginIdentity(
            name=self.op_type,
            version=self.plugin_version,
            namespace=PLUGIN_NAMESPACE,
            fields=tuple(plugin_field(spec) for spec in self.attributes),
        )

    def attribute_spec(self, name: str) -> AttrSpec:
        """Returns the spec of attribute ``name``.

        Raises:
            OpAttributeError: The op has no such attribute.
        """
        return attribute_spec(self.op_type, self.attributes, name)

    def validate_attributes(self, attributes: Mapping[str, Any] | None = None) -> dict[str, AttrValue]:
        """Checks attribute names, types and ranges, and fills in defaults.

        Args:
            attributes: Attribute values by name; ``None`` for all defaults. Lists may be any sequence.

        Returns:
            All attributes in declaration order, normalized (``int``/``float``/``str`` or tuples thereof).

        Raises:
            OpAttributeError: An attribute is unknown, missing, mistyped or out of range.
        """
        return validate_attributes(self.op_type, self.plugin_version, self.attributes, attributes)

    def run_reference(
        self, inputs: Sequence[np.ndarray], attributes: Mapping[str, Any] | None = None
    ) -> list[np.ndarray]:
        """Validates attributes, then runs the NumPy reference.

        Args:
            inputs: Input arrays.
            attributes: Attribute values by name (defaults filled in).

        Returns:
            One array per output.
        """
        return self.reference(list(inputs), self.validate_attributes(attributes))

    def function(self, opset: int, attributes: Mapping[str, Any] | None = None) -> ir.Function:
        """Builds the model-local function (domain ``parekit``, name = op type) at a given opset.

        Args:
            opset: The standard-domain opset of the model the function will live in.
            attributes: Attributes; only used to choose :meth:`function_overload`.

        Returns:
            A new function whose attributes are the op's attributes with their defaults.

        Raises:
            OpInputError: ``opset`` is below :attr:`min_opset`.
        """
        if opset < self.min_opset:
            raise OpInputError(
                f"op {self.op_type} needs ONNX opset >= {self.min_opset}, the model imports opset {opset}",
                note="convert the model to a newer opset first (onnx.version_converter)",
            )
        attrs = self.validate_attributes(attributes)
        formal = [ir.Value(name=spec.name) for spec in self.inputs]
        graph = ir.Graph(formal, [], nodes=[], opset_imports={"": opset}, name=self.op_type)
        tape = Tape(graph)
        outs = list(self.build_body(tape, formal))
        if len(outs) != len(self.outputs):
            raise RuntimeError(
                f"op {self.op_type}: build_body returned {len(outs)} outputs, the schema declares "
                f"{len(self.outputs)}"
            )
        for value, spec in zip(outs, self.outputs, strict=True):
            if value not in formal:  # readable formal output names: `cache_out`, not `val_14`
                value.name = spec.name
        graph.outputs.extend(outs)
        graph.doc_string = self.doc or None
        fn_attrs = [make_attr(spec, spec.default) for spec in self.attributes]
        return ir.Function(
            PAREKIT_DOMAIN, self.op_type, self.function_overload(attrs), graph=graph, attributes=fn_attrs
        )

    def matches(self, node: ir.Node) -> bool:
        """Whether ``node`` is an instance of this op."""
        return node.domain == PAREKIT_DOMAIN and node.op_type == self.op_type

    def make_node(
        self,
        model: ir.Model,
        inputs: Sequence[ir.Value | None],
        *,
        attributes: Mapping[str, Any] | None = None,
        name: str | None = None,
        num_outputs: int | None = None,
    ) -> ir.Node:
        """Creates a node of this op for ``model`` and makes ``model`` able to run it.

        The node is *not* inserted into any graph: the caller inserts it where it belongs
        (``graph.insert_after(anchor, node)``, ``graph.insert_before(...)`` or ``graph.append(node)``),
        then rewires consumers. ``model`` gets, if it lacks them, the ``parekit`` opset import
        (version 1), a standard-domain opset import (:data:`DEFAULT_ONNX_OPSET`), and this op's function
        at the model's standard opset (added once; rebuilt if the model's opset changed since).

        The node carries the declared attributes (defaults filled in) plus the string attributes
        ``plugin_namespace="parekit"`` and ``plugin_version``. Outputs get dtype/shape from
        :meth:`infer_outputs`; names are given when the node is added to a graph.

        Args:
            model: The model the node will be inserted into.
            inputs: Input values, one per declared input (trailing optional ones may be left out).
            attributes: Attribute values by name; omitted ones take their defaults.
            name: Node name; ``None`` lets onnx_ir name it on insertion.
            num_outputs: Number of outputs; ``None`` for all declared outputs.

        Returns:
            The new node.

        Raises:
            OpAttributeError: An attribute is unknown, missing, mistyped or out of range.
            OpInputError: Wrong input count, dtype or rank; output count out of range; the model's
                opset is too old or imports ``parekit`` at another version.
        """
        attrs = self.validate_attributes(attributes)
        self._check_inputs(inputs)
        n_out = self._check_num_outputs(num_outputs)
        opset = self._ensure_opset_imports(model)
        overload = self.function_overload(attrs)
        key = (PAREKIT_DOMAIN, self.op_type, overload)
        existing = model.functions.get(key)
        if existing is None or existing.opset_imports.get("") != opset:
            model.functions[key] = self.function(opset, attrs)

        node_attrs = [make_attr(spec, attrs[spec.name]) for spec in self.attributes]
        node_attrs.append(ir.AttrString(PLUGIN_NAMESPACE_ATTR, PLUGIN_NAMESPACE))
        node_attrs.append(ir.AttrString(PLUGIN_VERSION_ATTR, self.plugin_version))
        node = ir.Node(
            PAREKIT_DOMAIN,
            self.op_type,
            list(inputs),
            node_attrs,
            overload=overload,
            num_outputs=n_out,
            name=name,
        )
        for value, (dtype, shape) in zip(node.outputs, self.infer_outputs(inputs, attrs), strict=False):
            if dtype is not None:
                value.dtype = dtype
            if shape is not None:
                value.shape = shape
        return node

    # -- internals ---------------------------------------------------------------------------------

    def _check_inputs(self, inputs: Sequence[ir.Value | None]) -> None:
        n_required = sum(not spec.optional for spec in self.inputs)
        if not n_required <= len(inputs) <= len(self.inputs):
            raise OpInputError(
                f"op {self.op_type} takes {_count_range(n_required, len(self.inputs))} inputs "
                f"({', '.join(s.name for s in self.inputs)}), got {len(inputs)}"
            )
        for spec, value in zip(self.inputs, inputs, strict=False):
            if value is None:
                if not spec.optional:
                    raise OpInputError(f"op {self.op_type}: input '{spec.name}' is required, got None")
                continue
            if value.dtype is not None and value.dtype not in spec.dtypes:
                raise OpInputError(
                    f"op {self.op_type}: input '{spec.name}' ({value.name}) has dtype {value.dtype.name}",
                    note="allowed: " + ", ".join(sorted(d.name for d in spec.dtypes)),
                )
            if spec.rank is not None and value.shape is not None and value.shape.rank() != spec.rank:
                raise OpInputError(
                    f"op {self.op_type}: input '{spec.name}' ({value.name}) has rank "
                    f"{value.shape.rank()}, expected {spec.rank} {spec.shape}"
                )

    def _check_num_outputs(self, num_outputs: int | None) -> int:
        n_all = len(self.outputs)
        if num_outputs is None:
            return n_all
        n_required = sum(not spec.optional for spec in self.outputs)
        if not n_required <= num_outputs <= n_all:
            raise OpInputError(
                f"op {self.op_type} has {_count_range(n_required, n_all)} outputs, "
                f"num_outputs={num_outputs} asked"
            )
        return num_outputs

    def _ensure_opset_imports(self, model: ir.Model) -> int:
        imports = model.opset_imports
        have = imports.get(PAREKIT_DOMAIN)
        if have is not None and have != PAREKIT_OPSET_VERSION:
            raise OpInputError(
                f"model imports domain '{PAREKIT_DOMAIN}' at version {have}, parekit ops need version "
                f"{PAREKIT_OPSET_VERSION}"
            )
        opset = imports.get("", DEFAULT_ONNX_OPSET)
        if opset < self.min_opset:
            raise OpInputError(
                f"op {self.op_type} needs ONNX opset >= {self.min_opset}, the model imports opset {opset}",
                note="convert the model to a newer opset first (onnx.version_converter)",
            )
        imports[""] = opset
        imports[PAREKIT_DOMAIN] = PAREKIT_OPSET_VERSION
        return opset

    def __repr__(self) -> str:
        return f"<OpDef {PAREKIT_DOMAIN}::{self.op_type} v{self.plugin_version}>"



def _count_range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo} to {hi}"
