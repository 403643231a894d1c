"""Pipeline syntax for option values: :func:`format_value` prints what the pipeline parser reads.

Split out of :mod:`parekit.passes.options` (which re-exports it) so that the type descriptions and the
parser can share it without a cycle.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeAlias

__all__ = ["MAX_NESTING", "RawValue", "format_value"]

RawValue: TypeAlias = "int | float | bool | str | None | list[RawValue]"
"""A value as written in a pipeline, before it is checked against the option's type."""

MAX_NESTING = 16
"""Deepest list nesting the pipeline parser accepts (``[[1]]`` is depth 2) and the printer prints."""

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
_KEYWORDS = frozenset({"true", "false", "none"})


def format_value(value: Any) -> str:
    """Print a value in pipeline syntax so that it parses back to the same value.

    Strings are bare when they are identifiers (``mean``) and quoted otherwise (``"a b"``, ``"true"``);
    non-finite floats are quoted (the float options accept them as strings). Lists nested deeper than
    :data:`MAX_NESTING` (which the parser never produces) print their deep part as ``[...]``.
    Linear in the size of the value; never recursive beyond :data:`MAX_NESTING` levels.
    """
    return _format(value, 0)


def _format(value: Any, depth: int) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f'"{value!r}"'
    if isinstance(value, str):
        if _IDENT_RE.match(value) and value.lower() not in _KEYWORDS:
            return value
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        if depth >= MAX_NESTING:
            return "[...]"
        return "[" + ",".join(_format(v, depth + 1) for v in value) + "]"
    raise TypeError(f"cannot print option value {value!r} in pipeline syntax")


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond Python's int-to-text digit limit; the parser never makes these
        return f'"<integer of about {int(value.bit_length() * 0.30103) + 1} digits>"'
