"""The dual-form custom op contract: :class:`OpDef`, its specs, and the op registry.

Every node a pass inserts is a ``parekit`` custom op defined once, in ``parekit/ops/<snake_name>.py``,
by a subclass of :class:`OpDef` that carries four things:

* the **schema**: op type, inputs/outputs (:class:`TensorSpec`), typed attributes (:class:`AttrSpec`)
  and a type/shape rule (:meth:`OpDef.infer_outputs`);
* the **reference body**: an ONNX model-local function of the same name built only from standard ONNX
  ops (:meth:`OpDef.build_body`), which ONNX Runtime and TensorRT's ONNX parser inline;
* a **NumPy reference** (:meth:`OpDef.reference`), the oracle of the tests and of a CUDA kernel's CPU twin;
* its **TensorRT plugin identity** (:attr:`OpDef.plugin`): plugin name = op type, a version, namespace
  ``parekit``, and one plugin field per attribute.

Passes insert nodes only through :meth:`OpDef.make_node`, which also attaches the function and the
opset imports to the model. Op type strings live only in ``parekit/ops``.
"""

from __future__ import annotations

import abc
import difflib
import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, TypeAlias, TypeVar

import numpy as np
import onnx_ir as ir
from onnx_ir.tape import Tape

from parekit.errors import OptionError, ParekitError

__all__ = [
    "DEFAULT_ONNX_OPSET",
    "FLOAT_DTYPES",
    "PAREKIT_DOMAIN",
    "PAREKIT_OPSET_VERSION",
    "PLUGIN_NAMESPACE",
    "PLUGIN_NAMESPACE_ATTR",
    "PLUGIN_VERSION_ATTR",
    "AttrKind",
    "AttrSpec",
    "AttrValue",
    "OpAttributeError",
    "OpDef",
    "OpInputError",
    "PluginField",
    "PluginIdentity",
    "TensorSpec",
    "UnknownOpError",
    "all_ops",
    "const_ints",
    "dim",
    "dims",
    "int_attr_value",
    "scalar_float",
    "scalar_int",
    "get_op",
    "float_attr_ref",
    "int_attr_ref",
    "op_names",
    "register_op",
]

PAREKIT_DOMAIN: Final = "parekit"
"""ONNX domain of every parekit op and of its model-local function."""

PAREKIT_OPSET_VERSION: Final = 1
"""Version of the ``parekit`` opset import added to every model that uses a parekit op."""

PLUGIN_NAMESPACE: Final = "parekit"
"""TensorRT plugin namespace of every parekit plugin."""

PLUGIN_NAMESPACE_ATTR: Final = "plugin_namespace"
PLUGIN_VERSION_ATTR: Final = "plugin_version"
"""Node attributes TensorRT's ONNX parser reads to find a plugin creator (name = op type)."""

DEFAULT_ONNX_OPSET: Final = 18
"""Standard-domain opset added to a model that has no ``""`` opset import at all."""

FLOAT_DTYPES: Final = frozenset(
    {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}
)
"""Floating-point element types."""

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

AttrKind: TypeAlias = Literal["int", "float", "string", "ints", "floats", "strings"]
AttrValue: TypeAlias = int | float | str | tuple[int, ...] | tuple[float, ...] | tuple[str, ...]

_ATTR_TYPES: Final[dict[str, ir.AttributeType]] = {
    "int": ir.AttributeType.INT,
    "float": ir.AttributeType.FLOAT,
    "string": ir.AttributeType.STRING,
    "ints": ir.AttributeType.INTS,
    "floats": ir.AttributeType.FLOATS,
    "strings": ir.AttributeType.STRINGS,
}

# How TensorRT's ONNX parser (FallbackPluginImporter → loadFields) turns a node attribute into a
# PluginField: INT/INTS become kINT32 (values are narrowed to int32), FLOAT/FLOATS kFLOAT32,
# STRING/STRINGS kCHAR.
_PLUGIN_FIELD_TYPES: Final[dict[str, str]] = {
    "int": "kINT32",
    "float": "kFLOAT32",
    "string": "kCHAR",
    "ints": "kINT32",
    "floats": "kFLOAT32",
    "strings": "kCHAR",
}

_OP_TYPE_RE: Final = re.compile(r"^[A-Z][A-Za-z0-9]*$")


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class OpAttributeError(OptionError, ValueError):
    """An op attribute is unknown, missing, mistyped or out of range (names the op and attribute)."""


class OpInputError(ParekitError, ValueError):
    """An op was given the wrong number of inputs, an unsupported dtype or rank, or an unfit model."""


class UnknownOpError(ParekitError, LookupError):
    """No registered op has the requested name."""


# --------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an op.

    Attributes:
        name: Name of the input/output (also the function's formal parameter name).
        dtypes: Allowed element types.
        shape: The shape rule in words, e.g. ``"[B, H, T, D]"``.
        rank: Required rank, or ``None`` when any rank is allowed.
        optional: Whether the input/output may be omitted (only trailing ones).
        doc: One line of documentation.
    """

    name: str
    dtypes: frozenset[ir.DataType]
    shape: str
    rank: int | None = None
    optional: bool = False
    doc: str = ""


@dataclass(frozen=True)
class AttrSpec:
    """One typed attribute of an op.

    Attributes:
        name: Attribute name; also the TensorRT plugin field name.
        kind: ``"int"``, ``"float"``, ``"string"``, ``"ints"``, ``"floats"`` or ``"strings"``.
        default: Value used when the caller omits the attribute; ``None`` makes it required.
        doc: One line of documentation.
        minimum: Smallest allowed value (numeric kinds, checked per element).
        maximum: Largest allowed value (numeric kinds, checked per element).
    """

    name: str
    kind: AttrKind
    default: AttrValue | None = None
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None

    @property
    def ir_type(self) -> ir.AttributeType:
        """The ONNX attribute type of this attribute."""
        return _ATTR_TYPES[self.kind]

    @property
    def required(self) -> bool:
        """Whether a caller must give this attribute."""
        return self.default is None


@dataclass(frozen=True)
class PluginField:
    """How one op attribute reaches the TensorRT plugin creator.

    TensorRT's ONNX parser asks the creator for its field names and reads the node attribute of the
    same name, so ``name`` always equals the attribute name; ``type`` is the ``nvinfer1::PluginFieldType``
    the parser produces for the attribute's ONNX type.

    Attributes:
        name: Plugin field name (= attribute name).
        type: ``nvinfer1::PluginFieldType`` enumerator name, e.g. ``"kINT32"``.
        length: Number of elements for scalar attributes (1), ``None`` for lists (variable).
    """

    name: str
    type: str
    length: int | None = 1


@dataclass(frozen=True)
class PluginIdentity:
    """The TensorRT plugin an op maps to, where a plugin library is loaded.

    Attributes:
        name: Plugin name; always the op type (TensorRT's parser looks plugins up by ``op_type``).
        version: Plugin version string, written on every node as ``plugin_version``.
        namespace: Plugin namespace, written on every node as ``plugin_namespace``.
        fields: One field per op attribute, in declaration order.
    """

    name: str
    version: str
    namespace: str = PLUGIN_NAMESPACE
    fields: tuple[PluginField, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------------
# Body-building helpers
# --------------------------------------------------------------------------------------------------


def const_ints(tape: Tape, values: Sequence[int]) -> ir.Value:
    """Emits a 1-D int64 ``Constant`` into a function body.

    Args:
        tape: The tape recording the body.
        values: The integers.

    Returns:
        The constant's value.
    """
    return tape.op("Constant", [], {"value_ints": [int(v) for v in values]})


def int_attr_ref(tape: Tape, attr_name: str) -> ir.Value:
    """Emits a 1-D int64 tensor ``[attr]`` holding an ``int`` function attribute of the calling node.

    Built as ``Reshape(Constant(value_int=@attr_name), [1])``: the ``Constant`` takes its value from the
    node through ``ref_attr_name``, which ONNX Runtime and TensorRT's parser both resolve.

    Args:
        tape: The tape recording the body.
        attr_name: Name of an ``int`` attribute of the op.

    Returns:
        A value of shape ``[1]`` and type int64.
    """
    scalar = tape.op("Constant", [], {"value_int": ir.RefAttr("value_int", attr_name, ir.AttributeType.INT)})
    return tape.op("Reshape", [scalar, const_ints(tape, [1])])


def float_attr_ref(tape: Tape, attr_name: str) -> ir.Value:
    """Emits a 0-D float32 tensor holding a ``float`` function attribute of the calling node.

    Built as ``Constant(value_float=@attr_name)`` (``ref_attr_name``), like :func:`int_attr_ref`.

    Args:
        tape: The tape recording the body.
        attr_name: Name of a ``float`` attribute of the op.

    Returns:
        A scalar float32 value.
    """
    return tape.op(
        "Constant", [], {"value_float": ir.RefAttr("value_float", attr_name, ir.AttributeType.FLOAT)}
    )


# --------------------------------------------------------------------------------------------------
# OpDef
# --------------------------------------------------------------------------------------------------


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
    """

    op_type: ClassVar[str]
    plugin_version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[TensorSpec, ...]]
    outputs: ClassVar[tuple[TensorSpec, ...]]
    attributes: ClassVar[tuple[AttrSpec, ...]] = ()
    min_opset: ClassVar[int] = 13
    doc: ClassVar[str] = ""

    # -- to implement ------------------------------------------------------------------------------

    @abc.abstractmethod
    def build_body(self, tape: Tape, inputs: Sequence[ir.Value]) -> Sequence[ir.Value]:
        """Records the reference body from standard ONNX ops onto ``tape``.

        Attributes are not known here: read them with ``ref_attr_name`` (see :func:`int_attr_ref`).
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
            fields=tuple(
                PluginField(
                    name=spec.name,
                    type=_PLUGIN_FIELD_TYPES[spec.kind],
                    length=1 if spec.kind in ("int", "float", "string") else None,
                )
                for spec in self.attributes
            ),
        )

    def attribute_spec(self, name: str) -> AttrSpec:
        """Returns the spec of attribute ``name``.

        Raises:
            OpAttributeError: The op has no such attribute.
        """
        for spec in self.attributes:
            if spec.name == name:
                return spec
        known = [spec.name for spec in self.attributes]
        close = difflib.get_close_matches(name, known, n=1)
        note = f"did you mean '{close[0]}'? " if close else ""
        raise OpAttributeError(
            f"op {self.op_type} has no attribute '{name}'",
            note=f"{note}its attributes are: {', '.join(known) or '(none)'}",
        )

    def validate_attributes(self, attributes: Mapping[str, Any] | None = None) -> dict[str, AttrValue]:
        """Checks attribute names, types and ranges, and fills in defaults.

        Args:
            attributes: Attribute values by name; ``None`` for all defaults. Lists may be any sequence.

        Returns:
            All attributes in declaration order, normalized (``int``/``float``/``str`` or tuples thereof).

        Raises:
            OpAttributeError: An attribute is unknown, missing, mistyped or out of range.
        """
        given = dict(attributes or {})
        for name in given:
            if name in (PLUGIN_NAMESPACE_ATTR, PLUGIN_VERSION_ATTR):
                raise OpAttributeError(
                    f"op {self.op_type}: attribute '{name}' is set by parekit, not by the caller",
                    note=f"the plugin identity is {self.plugin.namespace}::{self.op_type} "
                    f"version {self.plugin_version}",
                )
            self.attribute_spec(name)  # raises on unknown names
        result: dict[str, AttrValue] = {}
        for spec in self.attributes:
            if spec.name in given:
                result[spec.name] = _normalize_attr(self.op_type, spec, given[spec.name])
            elif spec.default is not None:
                result[spec.name] = spec.default
            else:
                raise OpAttributeError(f"op {self.op_type} needs attribute '{spec.name}' ({spec.doc})")
        return result

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
        fn_attrs = [_make_attr(spec, spec.default) for spec in self.attributes]
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

        node_attrs = [_make_attr(spec, attrs[spec.name]) for spec in self.attributes]
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



def dim(tape: Tape, x: ir.Value, axis: int) -> ir.Value:
    """``Shape(x)[axis]`` as a 1-D int64 tensor ``[1]``."""
    return tape.op("Gather", [tape.op("Shape", [x]), const_ints(tape, [axis])], {"axis": 0})


def dims(tape: Tape, x: ir.Value, rank: int) -> list[ir.Value]:
    """The first ``rank`` dims of ``x``, each a 1-D int64 tensor ``[1]`` (one ``Shape``)."""
    shape = tape.op("Shape", [x])
    return [tape.op("Gather", [shape, const_ints(tape, [i])], {"axis": 0}) for i in range(rank)]


def scalar_float(tape: Tape, value: float) -> ir.Value:
    """A 0-D float32 ``Constant``."""
    return tape.op("Constant", [], {"value_float": float(value)})


def scalar_int(tape: Tape, value: int) -> ir.Value:
    """A 0-D int64 ``Constant``."""
    return tape.op("Constant", [], {"value_int": int(value)})


def int_attr_value(attrs: Mapping[str, AttrValue], name: str) -> int:
    """An ``int`` attribute from a validated attribute mapping (NumPy references)."""
    value = attrs[name]
    assert isinstance(value, int), f"attribute {name} must be an int"
    return value


def _count_range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo} to {hi}"


def _make_attr(spec: AttrSpec, value: AttrValue | None) -> ir.Attr:
    if isinstance(value, tuple):
        return ir.Attr(spec.name, spec.ir_type, list(value))
    return ir.Attr(spec.name, spec.ir_type, value)


def _normalize_attr(op_type: str, spec: AttrSpec, value: Any) -> AttrValue:
    """Type-checks one attribute value and returns it as a plain Python value (lists → tuples)."""

    def fail(why: str) -> OpAttributeError:
        return OpAttributeError(
            f"op {op_type}: attribute '{spec.name}' {why}, got {value!r}", note=spec.doc or None
        )

    def scalar(item: Any, base: str) -> int | float | str:
        if base == "string":
            if not isinstance(item, str):
                raise fail("must be a string")
            return item
        out: int | float
        if base == "int":
            if isinstance(item, bool) or not isinstance(item, int | np.integer):
                raise fail("must be an int")
            out = int(item)
            if not _INT32_MIN <= out <= _INT32_MAX:
                raise fail("must fit in int32 (TensorRT plugin fields are int32)")
        else:
            if isinstance(item, bool) or not isinstance(item, int | float | np.integer | np.floating):
                raise fail("must be a float")
            out = float(item)
        if spec.minimum is not None and out < spec.minimum:
            raise fail(f"must be >= {_fmt_num(spec.minimum)}")
        if spec.maximum is not None and out > spec.maximum:
            raise fail(f"must be <= {_fmt_num(spec.maximum)}")
        return out

    if spec.kind in ("int", "float", "string"):
        return scalar(value, spec.kind)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise fail(f"must be a list of {spec.kind[:-1]}s")
    return tuple(scalar(item, spec.kind[:-1]) for item in value)  # type: ignore[return-value]


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

# The explicit list of op modules: op type -> module that defines and registers it. Modules are
# imported lazily, on first lookup. A new op adds one line here.
_OP_MODULES: Final[dict[str, str]] = {
    "KvWindow": "parekit.ops.kv_window",
    "KvWindowMask": "parekit.ops.kv_window_mask",
    "TokenMerge": "parekit.ops.token_merge",
    "TokenPrune": "parekit.ops.token_prune",
    "TokenRestore": "parekit.ops.token_restore",
    "KvQuantKey": "parekit.ops.kv_quant",
    "KvQuantValue": "parekit.ops.kv_quant",
    "KvDequantKey": "parekit.ops.kv_dequant",
    "KvDequantValue": "parekit.ops.kv_dequant",
    "KvEvictH2O": "parekit.ops.kv_evict",
    "KvEvictSnap": "parekit.ops.kv_evict",
    "KvSlotMask": "parekit.ops.kv_slot_mask",
    "KvMaskRemap": "parekit.ops.kv_slot_mask",
    "AttentionProbs": "parekit.ops.attention_probs",
}

_REGISTRY: dict[str, OpDef] = {}

_OpT = TypeVar("_OpT", bound=OpDef)


def register_op(op: _OpT) -> _OpT:
    """Registers an op instance; call once at the bottom of the op's module.

    Example::

        KV_WINDOW = register_op(KvWindow())

    Args:
        op: The op definition.

    Returns:
        ``op`` itself.

    Raises:
        ValueError: The op is not listed in the registry's module list, is registered twice, or its
            schema is malformed.
    """
    name = op.op_type
    if not _OP_TYPE_RE.match(name):
        raise ValueError(f"op type '{name}' must be CamelCase ([A-Z][A-Za-z0-9]*)")
    if _OP_MODULES.get(name) != type(op).__module__:
        raise ValueError(
            f"op {name} is defined in module {type(op).__module__}, but the op registry lists "
            f"{_OP_MODULES.get(name, 'no module')} for it: add it to _OP_MODULES in parekit/ops/base.py"
        )
    if name in _REGISTRY:
        raise ValueError(f"op {name} is registered twice")
    _check_schema(op)
    _REGISTRY[name] = op
    return op


def _check_schema(op: OpDef) -> None:
    if not op.plugin_version:
        raise ValueError(f"op {op.op_type}: plugin_version must not be empty")
    if not op.outputs:
        raise ValueError(f"op {op.op_type} declares no outputs")
    for what, specs in (("inputs", op.inputs), ("outputs", op.outputs)):
        flags = [s.optional for s in specs]
        if flags != sorted(flags):
            raise ValueError(f"op {op.op_type}: optional {what} must come last")
    names = [s.name for s in op.attributes]
    if len(set(names)) != len(names) or {PLUGIN_NAMESPACE_ATTR, PLUGIN_VERSION_ATTR} & set(names):
        raise ValueError(f"op {op.op_type}: attribute names must be unique and not plugin_* ({names})")
    for spec in op.attributes:
        if spec.default is not None:
            _normalize_attr(op.op_type, spec, spec.default)


def op_names() -> tuple[str, ...]:
    """The op types the registry knows (without importing any op module)."""
    return tuple(sorted(_OP_MODULES))


def get_op(name: str) -> OpDef:
    """Returns the registered op with op type ``name``, importing its module on first use.

    Args:
        name: The op type, e.g. as found in ``node.op_type``.

    Returns:
        The op definition.

    Raises:
        UnknownOpError: No op has that name; the note suggests the closest names.
    """
    op = _REGISTRY.get(name)
    if op is not None:
        return op
    module = _OP_MODULES.get(name)
    if module is None:
        known = op_names()
        lower = {k.lower(): k for k in known}
        close = [lower[m] for m in difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)]
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise UnknownOpError(f"unknown parekit op '{name}'", note=f"{hint}known ops: {', '.join(known)}")
    importlib.import_module(module)
    op = _REGISTRY.get(name)
    if op is None:
        raise RuntimeError(f"module {module} was imported but did not register op {name}")
    return op


def all_ops() -> tuple[OpDef, ...]:
    """Every registered op, sorted by op type (imports all op modules)."""
    return tuple(get_op(name) for name in op_names())
