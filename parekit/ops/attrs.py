"""Op attributes: validation and normalization of caller values, ONNX attributes, typed reads.

Callers (passes, tests) give attributes as plain Python values; :func:`validate_attributes` checks
names, types and ranges against the op's :class:`~parekit.ops.schema.AttrSpec` list, fills in
defaults and returns plain ``int``/``float``/``str`` values (lists become tuples). Ints must fit in
int32, because TensorRT's parser narrows them to int32 plugin fields.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import onnx_ir as ir

from parekit.ops.errors import OpAttributeError
from parekit.ops.schema import (
    PLUGIN_NAMESPACE,
    PLUGIN_NAMESPACE_ATTR,
    PLUGIN_VERSION_ATTR,
    AttrSpec,
    AttrValue,
)

__all__ = [
    "attribute_spec",
    "float_attr_value",
    "int_attr_value",
    "make_attr",
    "normalize_attr",
    "validate_attributes",
]

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


def attribute_spec(op_type: str, specs: Sequence[AttrSpec], name: str) -> AttrSpec:
    """Returns the spec named ``name`` among an op's attribute specs.

    Raises:
        OpAttributeError: The op has no such attribute (the note suggests the closest name).
    """
    for spec in specs:
        if spec.name == name:
            return spec
    known = [spec.name for spec in specs]
    close = difflib.get_close_matches(name, known, n=1)
    note = f"did you mean '{close[0]}'? " if close else ""
    raise OpAttributeError(
        f"op {op_type} has no attribute '{name}'",
        note=f"{note}its attributes are: {', '.join(known) or '(none)'}",
    )


def validate_attributes(
    op_type: str, plugin_version: str, specs: Sequence[AttrSpec], attributes: Mapping[str, Any] | None
) -> dict[str, AttrValue]:
    """Checks attribute names, types and ranges, and fills in defaults.

    Args:
        op_type: The op, for messages.
        plugin_version: The op's plugin version, for the message about ``plugin_*`` attributes.
        specs: The op's attribute specs.
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
                f"op {op_type}: attribute '{name}' is set by parekit, not by the caller",
                note=f"the plugin identity is {PLUGIN_NAMESPACE}::{op_type} version {plugin_version}",
            )
        attribute_spec(op_type, specs, name)  # raises on unknown names
    result: dict[str, AttrValue] = {}
    for spec in specs:
        if spec.name in given:
            result[spec.name] = normalize_attr(op_type, spec, given[spec.name])
        elif spec.default is not None:
            result[spec.name] = spec.default
        else:
            raise OpAttributeError(f"op {op_type} needs attribute '{spec.name}' ({spec.doc})")
    return result


def normalize_attr(op_type: str, spec: AttrSpec, value: Any) -> AttrValue:
    """Type-checks one attribute value and returns it as a plain Python value (lists → tuples).

    Raises:
        OpAttributeError: The value has the wrong type, is out of range or does not fit in int32.
    """

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


def make_attr(spec: AttrSpec, value: AttrValue | None) -> ir.Attr:
    """The ONNX attribute ``spec.name = value`` (of the spec's ONNX type)."""
    if isinstance(value, tuple):
        return ir.Attr(spec.name, spec.ir_type, list(value))
    return ir.Attr(spec.name, spec.ir_type, value)


def int_attr_value(attrs: Mapping[str, AttrValue], name: str) -> int:
    """An ``int`` attribute from a validated attribute mapping (NumPy references, shape rules)."""
    value = attrs[name]
    assert isinstance(value, int), f"attribute {name} must be an int"
    return value


def float_attr_value(attrs: Mapping[str, AttrValue], name: str) -> float:
    """A ``float`` attribute from a validated attribute mapping (NumPy references, shape rules)."""
    value = attrs[name]
    assert isinstance(value, float), f"attribute {name} must be a float"
    return value


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
