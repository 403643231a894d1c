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

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar, Union

from parekit.errors import OptionError

__all__ = [
    "OptionDoc",
    "RawValue",
    "describe_options",
    "format_options",
    "format_value",
    "option_name",
    "parse_options",
]

RawValue: TypeAlias = "int | float | bool | str | None | list[RawValue]"
"""A value as written in a pipeline, before it is checked against the option's type."""

T = TypeVar("T")

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
_KEYWORDS = frozenset({"true", "false", "none"})
_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class OptionDoc:
    """One option as shown by ``parekit passes NAME``.

    Attributes:
        name: option name as written in a pipeline (dashes).
        type: type text, e.g. ``int``, ``float | none``, ``[int, ...]``, ``'mean' | 'max'``.
        default: default value in pipeline syntax, or ``None`` when the option is required.
        help: help text from the field's metadata (may be empty).
        constraint: range text, e.g. ``≥ 1`` or ``in [0, 1]`` (empty when unbounded).
    """

    name: str
    type: str
    default: str | None
    help: str
    constraint: str = ""


# --------------------------------------------------------------------------------------------------
# Type introspection


@dataclass(frozen=True)
class _Kind:
    """A normalized option type.

    ``base`` is one of ``int``, ``float``, ``bool``, ``str``, ``literal``, ``tuple``; ``choices`` are the
    members of a ``Literal``; ``items`` the element kinds of a tuple (one kind plus ``variadic`` for
    ``tuple[X, ...]``).
    """

    base: str
    optional: bool = False
    choices: tuple[Any, ...] = ()
    items: tuple[_Kind, ...] = ()
    variadic: bool = False


_SCALARS: dict[Any, str] = {int: "int", float: "float", bool: "bool", str: "str"}


def _kind_of(tp: Any, where: str) -> _Kind:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(args) == len(typing.get_args(tp)):
            raise TypeError(f"{where}: only Optional[X] unions are supported, got {tp!r}")
        return dataclasses.replace(_kind_of(args[0], where), optional=True)
    if tp in _SCALARS:
        return _Kind(_SCALARS[tp])
    if origin is Literal:
        choices = typing.get_args(tp)
        if not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in choices):
            raise TypeError(f"{where}: Literal members must be str or int, got {tp!r}")
        return _Kind("literal", choices=choices)
    if origin is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            item = _kind_of(targs[0], where)
            variadic = True
            items: tuple[_Kind, ...] = (item,)
        else:
            items = tuple(_kind_of(a, where) for a in targs)
            variadic = False
        if any(i.base == "tuple" or i.optional for i in items):
            raise TypeError(f"{where}: tuple elements must be non-optional scalars, got {tp!r}")
        return _Kind("tuple", items=items, variadic=variadic)
    raise TypeError(f"{where}: unsupported option type {tp!r}")


@dataclass(frozen=True)
class _Field:
    attr: str
    name: str
    kind: _Kind
    lo: float | None
    hi: float | None
    help: str
    has_default: bool
    default: Any


def _fields(options_type: type) -> list[_Field]:
    if not (isinstance(options_type, type) and dataclasses.is_dataclass(options_type)):
        raise TypeError(f"pass options must be a dataclass type, got {options_type!r}")
    hints = typing.get_type_hints(options_type)
    out: list[_Field] = []
    for f in dataclasses.fields(options_type):
        if not f.init:
            continue
        where = f"{options_type.__qualname__}.{f.name}"
        meta: Mapping[str, Any] = f.metadata or {}
        if f.default is not dataclasses.MISSING:
            has_default, default = True, f.default
        elif f.default_factory is not dataclasses.MISSING:
            has_default, default = True, f.default_factory()
        else:
            has_default, default = False, None
        out.append(
            _Field(
                attr=f.name,
                name=option_name(f.name),
                kind=_kind_of(hints[f.name], where),
                lo=meta.get("min"),
                hi=meta.get("max"),
                help=str(meta.get("help", "")),
                has_default=has_default,
                default=default,
            )
        )
    return out


def option_name(attr: str) -> str:
    """Return the pipeline spelling of a dataclass field name (``keep_ratio`` → ``keep-ratio``)."""
    return attr.replace("_", "-")


# --------------------------------------------------------------------------------------------------
# Descriptions used in errors and help


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    if lo is not None:
        return f"≥ {lo}"
    if hi is not None:
        return f"≤ {hi}"
    return ""


def _scalar_phrase(kind: _Kind, plural: bool = False) -> str:
    if kind.base == "literal":
        return "one of " + ", ".join(format_value(c) for c in kind.choices)
    words = {
        "int": ("an integer", "integers"),
        "float": ("a number", "numbers"),
        "bool": ("true or false", "true/false values"),
        "str": ("a string", "strings"),
    }[kind.base]
    return words[1] if plural else words[0]


def _expectation(fld: _Field) -> str:
    """Phrase for 'expects ...' in errors, e.g. ``an integer ≥ 1`` or ``a list of integers ≥ 0``."""
    kind, rng = fld.kind, _range_text(fld.lo, fld.hi)
    if kind.base == "tuple":
        if kind.variadic:
            text = f"a list of {_scalar_phrase(kind.items[0], plural=True)}"
        else:
            text = (
                "a list of "
                + str(len(kind.items))
                + " values ("
                + ", ".join(_scalar_phrase(i) for i in kind.items)
                + ")"
            )
    else:
        text = _scalar_phrase(kind)
    if rng:
        text += f" {rng}"
    if kind.optional:
        text += " or none"
    return text


def _type_text(kind: _Kind) -> str:
    if kind.base == "literal":
        text = " | ".join(format_value(c) for c in kind.choices)
    elif kind.base == "tuple":
        inner = [_type_text(i) for i in kind.items]
        text = f"[{inner[0]}, ...]" if kind.variadic else "[" + ", ".join(inner) + "]"
    else:
        text = kind.base
    return f"{text} | none" if kind.optional else text


def describe_options(options_type: type) -> list[OptionDoc]:
    """Describe a pass's options for help output, in declaration order.

    Args:
        options_type: the pass's options dataclass.

    Returns:
        One :class:`OptionDoc` per option.

    Raises:
        TypeError: the dataclass uses an unsupported field type (a programming error).
    """
    return [
        OptionDoc(
            name=f.name,
            type=_type_text(f.kind),
            default=format_value(f.default) if f.has_default else None,
            help=f.help,
            constraint=_range_text(f.lo, f.hi),
        )
        for f in _fields(options_type)
    ]


# --------------------------------------------------------------------------------------------------
# Parsing


class _Bad(Exception):
    """Internal: the raw value does not fit the option type."""


def _coerce_scalar(kind: _Kind, raw: Any) -> Any:
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
            try:
                return int(raw.strip(), 10)
            except ValueError:
                raise _Bad from None
        raise _Bad
    if kind.base == "float":
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw.strip())
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


def _coerce(fld: _Field, raw: RawValue) -> Any:
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
    fields = _fields(options_type)
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
                f"{pass_name}: unknown option '{key}'", note=f"{hint}options of {pass_name}: {known}"
            )
        if fld.attr in kwargs:
            raise OptionError(f"{pass_name}: option '{fld.name}' is given twice")
        try:
            kwargs[fld.attr] = _coerce(fld, value)
        except _Bad:
            raise OptionError(
                f"{pass_name}: option '{fld.name}' expects {_expectation(fld)}, got {format_value(value)}"
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


def format_value(value: Any) -> str:
    """Print a value in pipeline syntax so that it parses back to the same value.

    Strings are bare when they are identifiers (``mean``) and quoted otherwise (``"a b"``, ``"true"``);
    non-finite floats are quoted (the float options accept them as strings).
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f'"{value!r}"'
    if isinstance(value, str):
        if _IDENT_RE.match(value) and value.lower() not in _KEYWORDS:
            return value
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot print option value {value!r} in pipeline syntax")


def format_options(instance: Any, *, only_non_default: bool = False) -> str:
    """Print an options instance as ``name=value`` pairs in declaration order, comma-separated.

    Args:
        instance: an options dataclass instance.
        only_non_default: leave out options equal to their default.

    Returns:
        Text such as ``count=0,layers=[4,5]`` (no braces; empty when there is nothing to print).
    """
    parts = []
    for f in _fields(type(instance)):
        value = getattr(instance, f.attr)
        if only_non_default and f.has_default and value == f.default:
            continue
        parts.append(f"{f.name}={format_value(value)}")
    return ",".join(parts)
