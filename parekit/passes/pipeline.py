"""Pipeline text, MLIR style: ``token-merge{r=8},kv-window{sink=4,window=512},early-exit{layers=[4,8]}``.

Grammar (whitespace is free between tokens)::

    pipeline := spec ("," spec)*
    spec     := NAME ["{" [option ("," option)*] "}"]
    option   := NAME "=" value
    value    := NUMBER | STRING | WORD | "[" [value ("," value)*] "]"

``NAME``/``WORD`` are identifiers (letters, digits, ``_``, ``-``; not starting with a digit or ``-``);
as values the words ``true``/``false``/``none`` are booleans/none and other words are strings.
``NUMBER`` is an integer or a float (``-3``, ``0.5``, ``1e-3``). ``STRING`` is single- or double-quoted,
with backslash escapes.

Limits (each a :class:`~parekit.errors.PipelineSyntaxError` naming the column): the text is at most
:data:`MAX_PIPELINE_CHARS` characters, a number at most :data:`MAX_NUMBER_CHARS` characters (and a
float finite), a string at most :data:`MAX_STRING_CHARS`, and lists nest at most
:data:`~parekit.passes.option_format.MAX_NESTING` deep. Tokenizing and parsing are linear in the
length of the text, and the parser does not recurse beyond the nesting limit.

:func:`parse_pipeline` gives a :class:`Pipeline` of raw :class:`PassSpec`\\ s; :meth:`Pipeline.resolve`
looks the passes up, parses their options and checks ordering constraints, giving a
:class:`ResolvedPipeline` whose ``str()`` is the canonical text (every option, declaration order), so
``parse_pipeline(str(p)).resolve() == p``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from parekit.errors import PipelineSyntaxError, echo, neutralize
from parekit.passes.base import Pass, pass_spec
from parekit.passes.options import MAX_NESTING, RawValue, format_value, parse_options
from parekit.passes.registry import get_pass

__all__ = [
    "MAX_NUMBER_CHARS",
    "MAX_PIPELINE_CHARS",
    "MAX_STRING_CHARS",
    "PassSpec",
    "Pipeline",
    "ResolvedPass",
    "ResolvedPipeline",
    "parse_pipeline",
]

MAX_PIPELINE_CHARS = 100_000
"""Longest pipeline text accepted."""
MAX_NUMBER_CHARS = 100
"""Longest number literal accepted (Python refuses to read integers over 4,300 digits)."""
MAX_STRING_CHARS = 4096
"""Longest quoted string accepted (as written, quotes included)."""
_CONTEXT = 40
"""Characters of the text shown either side of the error column in the note."""


# --------------------------------------------------------------------------------------------------
# Tokenizer


class _Token(NamedTuple):
    kind: str  # NAME, NUMBER, STRING, PUNCT, END
    text: str  # source text (for PUNCT the character itself)
    value: Any  # NAME/STRING: str; NUMBER: int | float
    pos: int  # 0-based offset into the source


_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_INT_RE = re.compile(r"[+-]?\d+")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_PUNCT = "{}[],="
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def _error(text: str, pos: int, what: str) -> PipelineSyntaxError:
    """A syntax error at ``pos``; the note shows at most ``_CONTEXT`` characters either side, neutralized,
    with a caret under the column."""
    col = pos + 1
    lo, hi = max(0, pos - _CONTEXT), min(len(text), pos + _CONTEXT)
    head = ("…" if lo > 0 else "") + neutralize(text[lo:pos])
    tail = neutralize(text[pos:hi]) + ("…" if hi < len(text) else "")
    note = f"at column {col}:\n    {head}{tail}\n    {' ' * len(head)}^"
    return PipelineSyntaxError(f"pipeline syntax error at column {col}: {what}", note=note)


def _describe(tok: _Token) -> str:
    if tok.kind == "END":
        return "end of text"
    return f"'{echo(tok.text, 60)}'"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    if n > MAX_PIPELINE_CHARS:
        raise PipelineSyntaxError(
            f"the pipeline text is {n:,} characters long; at most {MAX_PIPELINE_CHARS:,} are accepted"
        )
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in _PUNCT:
            tokens.append(_Token("PUNCT", c, c, i))
            i += 1
            continue
        if c in "\"'":
            start, quote, chars = i, c, []
            i += 1
            while True:
                if i >= n:
                    raise _error(text, start, "unterminated string")
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    chars.append(_ESCAPES.get(text[i + 1], text[i + 1]))
                    i += 2
                    continue
                if ch == quote:
                    i += 1
                    break
                chars.append(ch)
                i += 1
            if i - start > MAX_STRING_CHARS:
                raise _error(text, start, f"string longer than {MAX_STRING_CHARS:,} characters")
            tokens.append(_Token("STRING", text[start:i], "".join(chars), start))
            continue
        m = _NUMBER_RE.match(text, i)
        if m and (c.isdigit() or c == "." or (c in "+-" and m.end() > i + 1)):
            end = m.end()
            if end - i > MAX_NUMBER_CHARS:
                raise _error(text, i, f"number longer than {MAX_NUMBER_CHARS} characters")
            if end < n and (text[end].isalpha() or text[end] == "_"):
                raise _error(text, i, f"malformed number '{echo(text[i : end + 1], 60)}'")
            s = m.group()
            value: int | float = int(s) if _INT_RE.fullmatch(s) else float(s)
            if isinstance(value, float) and not math.isfinite(value):
                raise _error(text, i, f"number '{s}' is out of range")
            tokens.append(_Token("NUMBER", s, value, i))
            i = end
            continue
        m = _NAME_RE.match(text, i)
        if m:
            tokens.append(_Token("NAME", m.group(), m.group(), i))
            i = m.end()
            continue
        raise _error(text, i, f"unexpected character {c!r}")
    tokens.append(_Token("END", "", None, n))
    return tokens


# --------------------------------------------------------------------------------------------------
# Data model


@dataclass(frozen=True)
class PassSpec:
    """One pass as written: its name and raw option values.

    Attributes:
        name: pass name.
        options: option name (as written) → raw value.
        column: 1-based column of the name in the source text (not compared).
    """

    name: str
    options: dict[str, RawValue] = field(default_factory=dict)
    column: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        body = ",".join(f"{k}={format_value(v)}" for k, v in self.options.items())
        return f"{self.name}{{{body}}}"


class ResolvedPass(NamedTuple):
    """A pass class with parsed options; ``str()`` is its canonical text."""

    pass_cls: type[Pass]
    options: Any

    def __str__(self) -> str:
        return pass_spec(self.pass_cls.name, self.options)


@dataclass(frozen=True)
class ResolvedPipeline:
    """Passes ready to run, in order. Iterates as ``(pass_cls, options)`` pairs; ``str()`` is canonical."""

    passes: tuple[ResolvedPass, ...]

    def __iter__(self) -> Iterator[ResolvedPass]:
        return iter(self.passes)

    def __len__(self) -> int:
        return len(self.passes)

    def __getitem__(self, index: int) -> ResolvedPass:
        return self.passes[index]

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.passes)


@dataclass(frozen=True)
class Pipeline:
    """A parsed, not yet resolved pipeline: pass specs in order."""

    specs: tuple[PassSpec, ...]

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.specs)

    def resolve(self) -> ResolvedPipeline:
        """Look up each pass, parse its options and check ``requires`` ordering.

        Raises:
            PipelineSyntaxError: the pipeline is empty, or a pass's required pass does not run before it.
            UnknownPassError: a pass name is not registered.
            OptionError: an option is unknown, mistyped or out of range.
        """
        if not self.specs:
            raise PipelineSyntaxError("the pipeline is empty", note="name at least one pass")
        resolved = []
        for spec in self.specs:
            cls = get_pass(spec.name)
            resolved.append(ResolvedPass(cls, parse_options(spec.name, cls.options_type, spec.options)))
        seen: set[str] = set()
        for step in resolved:
            cls = step.pass_cls
            for required in cls.required_passes:
                if required not in seen:
                    get_pass(required)  # a typo in requires= is a bug in the pass: say so
                    raise PipelineSyntaxError(
                        f"pass '{cls.name}' requires pass '{required}' to run before it",
                        note=f"put {required}{{...}} earlier in the pipeline than {cls.name}",
                    )
            seen.add(cls.name)
        return ResolvedPipeline(tuple(resolved))


# --------------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != "END":
            self.i += 1
        return tok

    def is_punct(self, ch: str) -> bool:
        tok = self.peek()
        return tok.kind == "PUNCT" and tok.text == ch

    def expect_punct(self, ch: str, context: str) -> _Token:
        tok = self.next()
        if tok.kind != "PUNCT" or tok.text != ch:
            raise _error(self.text, tok.pos, f"expected '{ch}' {context}, got {_describe(tok)}")
        return tok

    def pipeline(self) -> Pipeline:
        if self.peek().kind == "END":
            raise PipelineSyntaxError("the pipeline is empty", note="name at least one pass")
        specs = [self.spec()]
        while self.is_punct(","):
            self.next()
            specs.append(self.spec())
        tok = self.peek()
        if tok.kind != "END":
            raise _error(self.text, tok.pos, f"expected ',' between passes, got {_describe(tok)}")
        return Pipeline(tuple(specs))

    def spec(self) -> PassSpec:
        tok = self.next()
        if tok.kind != "NAME":
            raise _error(self.text, tok.pos, f"expected a pass name, got {_describe(tok)}")
        options: dict[str, RawValue] = {}
        seen: set[str] = set()  # option names with '_' as '-': the duplicate check is one lookup
        if self.is_punct("{"):
            self.next()
            if not self.is_punct("}"):
                self.option(tok.text, options, seen)
                while self.is_punct(","):
                    self.next()
                    self.option(tok.text, options, seen)
            self.expect_punct("}", f"to close the options of '{echo(tok.text, 60)}'")
        return PassSpec(tok.text, options, column=tok.pos + 1)

    def option(self, pass_name: str, options: dict[str, RawValue], seen: set[str]) -> None:
        key = self.next()
        if key.kind != "NAME":
            raise _error(
                self.text, key.pos, f"expected an option name in '{echo(pass_name, 60)}', got {_describe(key)}"
            )
        normalized = key.text.replace("_", "-")
        if normalized in seen:
            raise _error(
                self.text, key.pos, f"option '{echo(key.text, 60)}' of '{echo(pass_name, 60)}' is given twice"
            )
        seen.add(normalized)
        self.expect_punct("=", f"after option name '{echo(key.text, 60)}'")
        options[key.text] = self.value()

    def value(self, depth: int = 0) -> RawValue:
        tok = self.next()
        if tok.kind in ("NUMBER", "STRING"):
            return tok.value  # type: ignore[no-any-return]
        if tok.kind == "NAME":
            return {"true": True, "false": False, "none": None}.get(tok.text.lower(), tok.text)
        if tok.kind == "PUNCT" and tok.text == "[":
            if depth >= MAX_NESTING:
                raise _error(self.text, tok.pos, f"lists nested more than {MAX_NESTING} deep")
            items: list[RawValue] = []
            if not self.is_punct("]"):
                items.append(self.value(depth + 1))
                while self.is_punct(","):
                    self.next()
                    items.append(self.value(depth + 1))
            self.expect_punct("]", "to close the list")
            return items
        raise _error(self.text, tok.pos, f"expected a value, got {_describe(tok)}")


def parse_pipeline(text: str) -> Pipeline:
    """Parse pipeline text into raw pass specs (no registry lookup yet; see :meth:`Pipeline.resolve`).

    Raises:
        PipelineSyntaxError: the text does not parse (the note shows the column with a caret), or is
            empty.
    """
    return _Parser(text).pipeline()
