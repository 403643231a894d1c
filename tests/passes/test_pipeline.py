"""Pipeline text: tokenizer, parser, errors with columns, resolution, canonical printing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import onnx_ir as ir
import pytest

from parekit.errors import OptionError, PipelineSyntaxError, UnknownPassError
from parekit.passes import registry
from parekit.passes.base import Pass
from parekit.passes.options import MAX_NESTING
from parekit.passes.pipeline import (
    MAX_NUMBER_CHARS,
    MAX_PIPELINE_CHARS,
    MAX_STRING_CHARS,
    PassSpec,
    Pipeline,
    parse_pipeline,
)


@dataclass(frozen=True)
class MergeOptions:
    r: int = field(default=8, metadata={"help": "tokens merged per layer", "min": 0})
    mode: Literal["mean", "max"] = "mean"


@dataclass(frozen=True)
class ExitOptions:
    layers: tuple[int, ...] = field(default=(), metadata={"min": 0})
    threshold: float = 0.9
    exact: bool = False
    name: str = "exit"


@dataclass(frozen=True)
class NoOptions:
    pass


class _Noop(Pass):
    def run(self, model: ir.Model, mm: object) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=False)


class ToyMerge(_Noop):
    """Toy token merge."""


class ToyExit(_Noop):
    """Toy early exit."""


class ToyPlain(_Noop):
    """Toy pass without options."""


@pytest.fixture(autouse=True)
def toy_passes() -> Iterator[None]:
    with registry.temporary():
        registry.register("toy-merge", options=MergeOptions)(ToyMerge)
        registry.register("toy-exit", options=ExitOptions, requires=("toy-merge",))(ToyExit)
        registry.register("toy-plain", options=NoOptions)(ToyPlain)
        yield


def test_parse_design_example() -> None:
    p = parse_pipeline("token-merge{r=8},kv-window{sink=4,window=512},early-exit{layers=[4,8],threshold=0.9}")
    assert p == Pipeline(
        (
            PassSpec("token-merge", {"r": 8}),
            PassSpec("kv-window", {"sink": 4, "window": 512}),
            PassSpec("early-exit", {"layers": [4, 8], "threshold": 0.9}),
        )
    )
    assert [s.column for s in p.specs] == [1, 18, 47]


def test_values() -> None:
    p = parse_pipeline(
        "a{i=-3, f=1e-3, g=-.5, h=+2, t=true, n=none, w=top_k-2, q=\"x, y}\", s='it', e=[], l=[1,[2, -3.5]]}"
    )
    assert p.specs[0].options == {
        "i": -3,
        "f": 0.001,
        "g": -0.5,
        "h": 2,
        "t": True,
        "n": None,
        "w": "top_k-2",
        "q": "x, y}",
        "s": "it",
        "e": [],
        "l": [1, [2, -3.5]],
    }


def test_quoted_strings_and_escapes() -> None:
    p = parse_pipeline(r"""a{x="say \"hi\"", y='single', z="true"}""")
    assert p.specs[0].options == {"x": 'say "hi"', "y": "single", "z": "true"}


def test_whitespace_and_empty_braces() -> None:
    p = parse_pipeline("  toy-plain { } ,\n toy-merge{ r = 2 }  ")
    assert p == Pipeline((PassSpec("toy-plain"), PassSpec("toy-merge", {"r": 2})))


def test_commas_live_inside_braces() -> None:
    p = parse_pipeline("toy-merge{r=1,mode=max},toy-exit{layers=[1,2,3],threshold=0.5}")
    assert [s.name for s in p.specs] == ["toy-merge", "toy-exit"]
    assert p.specs[1].options == {"layers": [1, 2, 3], "threshold": 0.5}


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("toy-merge{r=8,,}", 15, "expected an option name"),
        ("toy-merge{r=}", 13, "expected a value"),
        ("toy-merge{r 8}", 13, "expected '=' after option name 'r'"),
        ("toy-merge{r=8", 14, "expected '}' to close the options of 'toy-merge'"),
        ("toy-merge toy-exit", 11, "expected ',' between passes"),
        ("toy-merge,", 11, "expected a pass name, got end of text"),
        (",toy-merge", 1, "expected a pass name, got ','"),
        ("toy-merge{r=[1,2}", 17, "expected ']' to close the list"),
        ("toy-merge{r='abc}", 13, "unterminated string"),
        ("toy-merge{r=4x}", 13, "malformed number '4x'"),
        ("toy-merge{r=8;}", 14, "unexpected character ';'"),
        ("toy-merge{r=1,r=2}", 15, "option 'r' of 'toy-merge' is given twice"),
    ],
)
def test_syntax_errors_have_column_and_caret(text: str, column: int, fragment: str) -> None:
    with pytest.raises(PipelineSyntaxError) as info:
        parse_pipeline(text)
    err = info.value
    assert err.message.startswith(f"pipeline syntax error at column {column}: ")
    assert fragment in err.message
    note_lines = (err.note or "").splitlines()
    assert note_lines[1] == f"    {text}"
    assert note_lines[2] == "    " + " " * (column - 1) + "^"


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_pipeline_is_an_error(text: str) -> None:
    with pytest.raises(PipelineSyntaxError, match="empty"):
        parse_pipeline(text)
    with pytest.raises(PipelineSyntaxError, match="empty"):
        Pipeline(()).resolve()


def test_resolve_and_canonical_print() -> None:
    resolved = parse_pipeline("toy-merge{mode=max},toy-plain{},toy-exit{layers=[4,8]}").resolve()
    assert [cls for cls, _ in resolved] == [ToyMerge, ToyPlain, ToyExit]
    assert resolved[0].options == MergeOptions(r=8, mode="max")
    assert str(resolved) == (
        "toy-merge{r=8,mode=max},toy-plain,toy-exit{layers=[4,8],threshold=0.9,exact=false,name=exit}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "toy-merge",
        'toy-merge{r=0},toy-exit{threshold=1e-3,name="two words",exact=true}',
        'toy-merge,toy-exit{layers=[]},toy-merge{r=3},toy-exit{name="none"}',
        'toy-merge,toy-exit{threshold=-2.5,name="1.5"}',
    ],
)
def test_round_trip(text: str) -> None:
    resolved = parse_pipeline(text).resolve()
    again = parse_pipeline(str(resolved)).resolve()
    assert again == resolved
    assert str(again) == str(resolved)


def test_unknown_pass_did_you_mean() -> None:
    with pytest.raises(UnknownPassError) as info:
        parse_pipeline("toy-merge,toy-exitt").resolve()
    assert info.value.message == "unknown pass 'toy-exitt'"
    assert "did you mean 'toy-exit'?" in (info.value.note or "")


def test_option_errors_come_through_resolve() -> None:
    with pytest.raises(OptionError, match=r"^toy-merge: option 'r' expects an integer ≥ 0, got -1$"):
        parse_pipeline("toy-merge{r=-1}").resolve()
    with pytest.raises(OptionError) as info:
        parse_pipeline("toy-merge{rr=1}").resolve()
    assert "did you mean 'r'?" in (info.value.note or "")


def test_requires_ordering() -> None:
    with pytest.raises(PipelineSyntaxError) as info:
        parse_pipeline("toy-exit,toy-merge").resolve()
    assert info.value.message == "pass 'toy-exit' requires pass 'toy-merge' to run before it"
    assert len(parse_pipeline("toy-merge,toy-exit").resolve()) == 2


def test_unresolved_pipeline_prints_raw() -> None:
    assert str(parse_pipeline('x{a=[1,2],b="c d"},y')) == 'x{a=[1,2],b="c d"},y'


def test_temporary_registry_cleans_up() -> None:
    with registry.temporary():
        registry.register("toy-gone", options=NoOptions)(type("ToyGone", (_Noop,), {}))
        assert registry.get_pass("toy-gone").name == "toy-gone"
    with pytest.raises(UnknownPassError):
        registry.get_pass("toy-gone")
    assert ToyMerge in registry.list_passes()


def test_register_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="invalid pass name"):
        registry.register("Bad_Name", options=NoOptions)

    @dataclass
    class NotFrozen:
        a: int = 1

    with pytest.raises(TypeError, match="frozen"):
        registry.register("toy-x", options=NotFrozen)
    with pytest.raises(ValueError, match="taken"):
        registry.register("toy-merge", options=NoOptions)(ToyPlain)


def test_summary_from_docstring() -> None:
    assert ToyMerge.summary == "Toy token merge."
    assert ToyExit.required_passes == ("toy-merge",)


# --------------------------------------------------------------------------------------------------
# Hostile pipeline text: bounded nesting and literals, linear parsing, short and safe errors.


def _syntax_error(text: str) -> PipelineSyntaxError:
    with pytest.raises(PipelineSyntaxError) as info:
        parse_pipeline(text)
    return info.value


def test_deep_list_nesting_is_a_syntax_error_not_a_recursion_error() -> None:
    error = _syntax_error("x{a=" + "[" * 1000)
    assert error.message == f"pipeline syntax error at column {5 + MAX_NESTING}: lists nested more than {MAX_NESTING} deep"
    nested = "[" * MAX_NESTING + "1" + "]" * MAX_NESTING
    (spec,) = parse_pipeline(f"x{{a={nested}}}").specs  # exactly at the limit: fine
    value = spec.options["a"]
    for _ in range(MAX_NESTING):
        assert isinstance(value, list)
        (value,) = value
    assert value == 1
    assert str(parse_pipeline(f"x{{a={nested}}}")) == f"x{{a={nested}}}"


def test_many_open_brackets_anywhere() -> None:
    for text in ("[" * 1000, "x{" * 1000, "x{a=1}" + "," * 1000, "{" * 1000):
        assert _syntax_error(text).message.startswith("pipeline syntax error at column")


def test_huge_integer_is_a_syntax_error() -> None:
    error = _syntax_error("x{a=" + "9" * 4301 + "}")
    assert error.message == f"pipeline syntax error at column 5: number longer than {MAX_NUMBER_CHARS} characters"
    assert len(str(error)) < 400  # the note shows a window of the text, not all of it


def test_float_overflow_is_a_syntax_error() -> None:
    assert _syntax_error("x{a=1e999}").message.endswith("number '1e999' is out of range")


def test_long_string_is_a_syntax_error() -> None:
    error = _syntax_error('x{a="' + "s" * (MAX_STRING_CHARS + 10) + '"}')
    assert error.message.endswith(f"string longer than {MAX_STRING_CHARS:,} characters")


def test_huge_pipeline_text_gives_a_short_error() -> None:
    text = "x{a=1}," * (1_000_000 // 7)
    error = _syntax_error(text)
    assert error.message == (
        f"the pipeline text is {len(text):,} characters long; at most {MAX_PIPELINE_CHARS:,} are accepted"
    )


def test_error_in_a_long_pipeline_is_capped() -> None:
    text = "x{a=1}," * 10_000 + "?"  # 70,001 characters, error at the very end
    error = _syntax_error(text)
    assert len(str(error)) < 300
    assert error.message == f"pipeline syntax error at column {len(text)}: unexpected character '?'"
    lines = (error.note or "").splitlines()
    assert lines[1].startswith("    …") and lines[2].index("^") == lines[1].index("?")


def test_many_options_parse_in_linear_time() -> None:
    """10,000 distinct options: the duplicate check is one set lookup each (was a set rebuilt per option)."""
    count = 10_000
    text = "x{" + ",".join(f"o_{i}=1" for i in range(count)) + "}"
    (spec,) = parse_pipeline(text).specs
    assert len(spec.options) == count
    error = _syntax_error(text[:-1] + ",o-1=2}")
    assert error.message.endswith("option 'o-1' of 'x' is given twice")


def test_duplicate_check_treats_dash_and_underscore_alike() -> None:
    assert _syntax_error("x{keep_ratio=1,keep-ratio=2}").message.endswith(
        "option 'keep-ratio' of 'x' is given twice"
    )


def test_control_characters_are_neutralized_in_errors() -> None:
    text = "x{a=1}\x1b[2J\x1b]0;title\x07"
    error = _syntax_error(text)
    shown = str(error)
    assert not any(ord(c) < 0x20 and c != "\n" for c in shown)
    assert "\\x1b[2J" in (error.note or "")
    lines = (error.note or "").splitlines()
    assert lines[2].index("^") == lines[1].index("\\x1b")  # the caret stays under the bad character


def test_long_names_are_capped_in_errors() -> None:
    name = "n" * 90_000
    error = _syntax_error(f"{name}{{a=}}")
    assert len(str(error)) < 500
