"""Pass options: frozen dataclasses whose field types drive parsing, printing and help.

A pass declares its options as a frozen dataclass::

    @dataclass(frozen=True)
    class DropLayersOptions:
        count: int = field(default=0, metadata={"help": "layers to drop", "min": 0})
        layers: tuple[int, ...] = field(default=(), metadata={"help": "explicit layer indices", "min": 0})
        mode: Literal["skip", "zero"] = "skip"

        def validate(self) -> None:  # optional, cross-field rules; raise ValueError
            if self.count and self.layers:
                raise ValueError("give either 'count' or 'layers', not both")

Supported field types: ``int``, ``float``, ``bool``, ``str``, ``Literal[...]`` of str/int, ``tuple[X, ...]``
and fixed ``tuple[X, Y]`` of those scalars, and ``Optional[...]`` (``X | None``) of any of them. Field
metadata keys: ``help`` (text for ``parekit passes NAME``), ``min``/``max`` (inclusive bounds, applied to
numbers and to each element of a tuple).

Option names are written with dashes in pipelines and help (``keep_ratio`` → ``keep-ratio``, as MLIR
does); underscores are accepted on input too.

Raw values come from the pipeline parser (:mod:`parekit.passes.pipeline`): ``int``, ``float``, ``bool``,
``str``, ``None`` (written ``none``) or lists of those. Strings are also accepted for every scalar type
(``"8"`` for an int), so options given as ``key=value`` text parse the same way.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from parekit.errors import OptionError, echo
from parekit.passes.option_format import MAX_NESTING, RawValue, format_value
from parekit.passes.option_types import (
    Field,
    Kind,
    OptionDoc,
    describe_options,
    expectation,
    fields_of,
    option_name,
)

__all__ = [
    "MAX_NESTING",
    "OptionDoc",
    "RawValue",
    "describe_options",
    "format_options",
    "format_value",
    "option_name",
    "parse_options",
]

T = TypeVar("T")

_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})
_MAX_INT_TEXT = 100
"""Longest integer text (in characters) accepted from a string value; longer is refused, not parsed."""


# --------------------------------------------------------------------------------------------------
# Parsing


class _Bad(Exception):
    """Internal: the raw value does not fit the option type."""


def _coerce_scalar(kind: Kind, raw: Any) -> Any:
    if kind.base == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE_WORDS | _FALSE_WORDS:
            return raw.lower() in _TRUE_WORDS
        raise _Bad
    if isinstance(raw, bool):  # bool is an int subclass: never accept it as a number
        raise _Bad
    if kind.base == "int":
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str):
            text = raw.strip()
            if len(text) > _MAX_INT_TEXT:
                raise _Bad
            try:
                return int(text, 10)
            except ValueError:
                raise _Bad from None
        raise _Bad
    if kind.base == "float":
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            text = raw.strip()
            if len(text) > _MAX_INT_TEXT:
                raise _Bad
            try:
                return float(text)
            except ValueError:
                raise _Bad from None
        raise _Bad
    if kind.base == "str":
        if isinstance(raw, str):
            return raw
        if isinstance(raw, (int, float)):
            return str(raw)
        raise _Bad
    if kind.base == "literal":
        for choice in kind.choices:
            if raw == choice or (
                isinstance(choice, int) and isinstance(raw, str) and raw.strip() == str(choice)
            ):
                return choice
        raise _Bad
    raise AssertionError(kind.base)


def _check_range(value: Any, lo: float | None, hi: float | None) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise _Bad
        if hi is not None and value > hi:
            raise _Bad
        if isinstance(value, float) and math.isnan(value) and (lo is not None or hi is not None):
            raise _Bad


def _coerce(fld: Field, raw: RawValue) -> Any:
    kind = fld.kind
    text_none = isinstance(raw, str) and kind.base != "str" and raw.strip().lower() == "none"
    if raw is None or (kind.optional and text_none):
        if kind.optional:
            return None
        raise _Bad
    if kind.base == "tuple":
        seq: Sequence[Any] = raw if isinstance(raw, (list, tuple)) else [raw]
        if kind.variadic:
            item_kinds = [kind.items[0]] * len(seq)
        else:
            if len(seq) != len(kind.items):
                raise _Bad
            item_kinds = list(kind.items)
        values = []
        for item_kind, item in zip(item_kinds, seq, strict=True):
            if isinstance(item, (list, tuple)) or item is None:
                raise _Bad
            v = _coerce_scalar(item_kind, item)
            _check_range(v, fld.lo, fld.hi)
            values.append(v)
        return tuple(values)
    if isinstance(raw, (list, tuple)):
        raise _Bad
    value = _coerce_scalar(kind, raw)
    _check_range(value, fld.lo, fld.hi)
    return value


def _did_you_mean(word: str, candidates: Sequence[str]) -> str | None:
    if len(word) > 100:  # no option name is that long; keep difflib's work small
        return None
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def parse_options(pass_name: str, options_type: type[T], raw: Mapping[str, RawValue]) -> T:
    """Build a pass's options from raw values, checking names, types, ranges and ``validate()``.

    Args:
        pass_name: pass name, used in error messages.
        options_type: the pass's options dataclass.
        raw: option name (dashes or underscores) → raw value; missing options take their default.

    Returns:
        The options instance.

    Raises:
        OptionError: an option is unknown, required but missing, mistyped, out of range, or
            ``validate()`` rejected the combination.
    """
    fields = fields_of(options_type)
    by_name = {f.name: f for f in fields}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = option_name(key)
        fld = by_name.get(name)
        if fld is None:
            known = ", ".join(by_name) or "(none)"
            guess = _did_you_mean(name, list(by_name))
            hint = f"did you mean '{guess}'? " if guess else ""
            raise OptionError(
                f"{pass_name}: unknown option '{echo(key)}'", note=f"{hint}options of {pass_name}: {known}"
            )
        if fld.attr in kwargs:
            raise OptionError(f"{pass_name}: option '{fld.name}' is given twice")
        try:
            kwargs[fld.attr] = _coerce(fld, value)
        except _Bad:
            raise OptionError(
                f"{pass_name}: option '{fld.name}' expects {expectation(fld)}, got {echo(format_value(value))}"
            ) from None
    missing = [f.name for f in fields if not f.has_default and f.attr not in kwargs]
    if missing:
        raise OptionError(
            f"{pass_name}: option '{missing[0]}' is required",
            note=f"write it as {pass_name}{{{missing[0]}=...}}",
        )
    instance = options_type(**kwargs)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        try:
            validate()
        except OptionError as e:
            if e.message.startswith(f"{pass_name}:"):
                raise
            raise OptionError(f"{pass_name}: {e.message}", note=e.note) from None
        except ValueError as e:
            raise OptionError(f"{pass_name}: {e}") from None
    return instance


# --------------------------------------------------------------------------------------------------
# Printing


def format_options(instance: Any, *, only_non_default: bool = False) -> str:
    """Print an options instance as ``name=value`` pairs in declaration order, comma-separated.

    Args:
        instance: an options dataclass instance.
        only_non_default: leave out options equal to their default.

    Returns:
        Text such as ``count=0,layers=[4,5]`` (no braces; empty when there is nothing to print).
    """
    parts = []
    for f in fields_of(type(instance)):
        value = getattr(instance, f.attr)
        if only_non_default and f.has_default and value == f.default:
            continue
        parts.append(f"{f.name}={format_value(value)}")
    return ",".join(parts)
