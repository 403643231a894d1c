"""The schema of a parekit op: its domain and plugin constants, and the spec dataclasses.

An op declares its formal parameters (:class:`ParamSpec`, ONNX's "formal parameter": one input or
output of the op and of its function), its typed attributes (:class:`AttrSpec`) and, derived from them,
its TensorRT plugin identity (:class:`PluginIdentity`, one :class:`PluginField` per attribute).
:class:`~parekit.ops.opdef.OpDef` holds these; nothing here builds graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

import onnx_ir as ir

__all__ = [
    "DEFAULT_ONNX_OPSET",
    "PAREKIT_DOMAIN",
    "PAREKIT_OPSET_VERSION",
    "PLUGIN_NAMESPACE",
    "PLUGIN_NAMESPACE_ATTR",
    "PLUGIN_VERSION_ATTR",
    "AttrKind",
    "AttrSpec",
    "AttrValue",
    "ParamSpec",
    "PluginField",
    "PluginIdentity",
    "plugin_field",
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


@dataclass(frozen=True)
class ParamSpec:
    """One formal parameter of an op: an input or an output (of the node and of its function).

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


def plugin_field(spec: AttrSpec) -> PluginField:
    """The plugin field TensorRT's ONNX parser makes of attribute ``spec``."""
    scalar = spec.kind in ("int", "float", "string")
    return PluginField(name=spec.name, type=_PLUGIN_FIELD_TYPES[spec.kind], length=1 if scalar else None)
