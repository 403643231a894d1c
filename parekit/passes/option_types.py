"""Option dataclass introspection: normalized field types, and the descriptions used in help and errors.

Split out of :mod:`parekit.passes.options` (see there for the supported field types and metadata).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from parekit.passes.option_format import format_value

__all__ = ["Field", "Kind", "OptionDoc", "describe_options", "expectation", "fields_of", "option_name"]


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


@dataclass(frozen=True)
class Kind:
    """A normalized option type.

    ``base`` is one of ``int``, ``float``, ``bool``, ``str``, ``literal``, ``tuple``; ``choices`` are the
    members of a ``Literal``; ``items`` the element kinds of a tuple (one kind plus ``variadic`` for
    ``tuple[X, ...]``).
    """

    base: str
    optional: bool = False
    choices: tuple[Any, ...] = ()
    items: tuple[Kind, ...] = ()
    variadic: bool = False


_SCALARS: dict[Any, str] = {int: "int", float: "float", bool: "bool", str: "str"}


def _kind_of(tp: Any, where: str) -> Kind:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(args) == len(typing.get_args(tp)):
            raise TypeError(f"{where}: only Optional[X] unions are supported, got {tp!r}")
        return dataclasses.replace(_kind_of(args[0], where), optional=True)
    if tp in _SCALARS:
        return Kind(_SCALARS[tp])
    if origin is Literal:
        choices = typing.get_args(tp)
        if not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in choices):
            raise TypeError(f"{where}: Literal members must be str or int, got {tp!r}")
        return Kind("literal", choices=choices)
    if origin is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            item = _kind_of(targs[0], where)
            variadic = True
            items: tuple[Kind, ...] = (item,)
        else:
            items = tuple(_kind_of(a, where) for a in targs)
            variadic = False
        if any(i.base == "tuple" or i.optional for i in items):
            raise TypeError(f"{where}: tuple elements must be non-optional scalars, got {tp!r}")
        return Kind("tuple", items=items, variadic=variadic)
    raise TypeError(f"{where}: unsupported option type {tp!r}")


@dataclass(frozen=True)
class Field:
    attr: str
    name: str
    kind: Kind
    lo: float | None
    hi: float | None
    help: str
    has_default: bool
    default: Any


def fields_of(options_type: type) -> list[Field]:
    if not (isinstance(options_type, type) and dataclasses.is_dataclass(options_type)):
        raise TypeError(f"pass options must be a dataclass type, got {options_type!r}")
    hints = typing.get_type_hints(options_type)
    out: list[Field] = []
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
            Field(
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


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    if lo is not None:
        return f"≥ {lo}"
    if hi is not None:
        return f"≤ {hi}"
    return ""


def _scalar_phrase(kind: Kind, plural: bool = False) -> str:
    if kind.base == "literal":
        return "one of " + ", ".join(format_value(c) for c in kind.choices)
    words = {
        "int": ("an integer", "integers"),
        "float": ("a number", "numbers"),
        "bool": ("true or false", "true/false values"),
        "str": ("a string", "strings"),
    }[kind.base]
    return words[1] if plural else words[0]


def expectation(fld: Field) -> str:
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


def _type_text(kind: Kind) -> str:
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
        for f in fields_of(options_type)
    ]
