"""Pass options: parsing from raw values, errors, printing, help."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from parekit.errors import OptionError
from parekit.passes.options import MAX_NESTING, describe_options, format_options, format_value, parse_options


@dataclass(frozen=True)
class Opts:
    count: int = field(default=1, metadata={"help": "how many", "min": 1})
    ratio: float = field(default=0.5, metadata={"help": "a fraction", "min": 0.0, "max": 1.0})
    exact: bool = False
    label: str = "x"
    mode: Literal["mean", "max"] = "mean"
    layers: tuple[int, ...] = field(default=(), metadata={"min": 0})
    pair: tuple[int, float] = (1, 2.0)
    limit: Optional[int] = None  # noqa: UP045 (Optional spelling must be supported too)
    keep_ratio: float | None = None

    def validate(self) -> None:
        if self.exact and self.mode == "max":
            raise ValueError("'exact' cannot be combined with mode=max")


@dataclass(frozen=True)
class Required:
    window: int = field(metadata={"min": 1})
    sink: int = 4


def test_defaults() -> None:
    assert parse_options("p", Opts, {}) == Opts()


def test_types_are_coerced() -> None:
    o = parse_options(
        "p",
        Opts,
        {
            "count": 3,
            "ratio": 1,
            "exact": False,
            "label": "hello",
            "mode": "max",
            "layers": [4, 8],
            "pair": [2, 3],
            "limit": 7,
            "keep-ratio": 0.25,
        },
    )
    assert o == Opts(
        count=3, ratio=1.0, label="hello", mode="max", layers=(4, 8), pair=(2, 3.0), limit=7, keep_ratio=0.25
    )
    assert isinstance(o.ratio, float)


def test_strings_parse_like_cli_values() -> None:
    o = parse_options("p", Opts, {"count": "5", "ratio": "1e-3", "exact": "true", "limit": "none"})
    assert (o.count, o.ratio, o.exact, o.limit) == (5, 0.001, True, None)


def test_scalar_for_tuple_and_underscore_names() -> None:
    assert parse_options("p", Opts, {"layers": 3}).layers == (3,)
    assert parse_options("p", Opts, {"keep_ratio": 0.5}).keep_ratio == 0.5


def test_none_for_optional() -> None:
    assert parse_options("p", Opts, {"limit": None}).limit is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"count": "x"}, "drop-layers: option 'count' expects an integer ≥ 1, got x"),
        ({"count": 0}, "drop-layers: option 'count' expects an integer ≥ 1, got 0"),
        ({"count": True}, "option 'count' expects an integer ≥ 1, got true"),
        ({"count": 1.5}, "option 'count' expects an integer"),
        ({"ratio": 2.0}, "option 'ratio' expects a number in [0.0, 1.0], got 2.0"),
        ({"mode": "median"}, "option 'mode' expects one of mean, max, got median"),
        ({"layers": [1, -1]}, "option 'layers' expects a list of integers ≥ 0, got [1,-1]"),
        ({"pair": [1]}, "option 'pair' expects a list of 2 values"),
        ({"exact": "maybe"}, "option 'exact' expects true or false"),
        ({"count": None}, "option 'count' expects an integer ≥ 1, got none"),
        ({"limit": "abc"}, "option 'limit' expects an integer or none, got abc"),
        ({"label": [1]}, "option 'label' expects a string"),
    ],
)
def test_type_and_range_errors(raw: dict, message: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_options("drop-layers", Opts, raw)
    assert message in info.value.message
    assert info.value.message.startswith("drop-layers: option '")


def test_unknown_option_did_you_mean() -> None:
    with pytest.raises(OptionError) as info:
        parse_options("p", Opts, {"cout": 1})
    assert info.value.message == "p: unknown option 'cout'"
    assert "did you mean 'count'?" in (info.value.note or "")


def test_required_option() -> None:
    with pytest.raises(OptionError, match="p: option 'window' is required"):
        parse_options("p", Required, {})
    assert parse_options("p", Required, {"window": 2}) == Required(window=2)


def test_validate_errors_name_the_pass() -> None:
    with pytest.raises(OptionError) as info:
        parse_options("p", Opts, {"exact": True, "mode": "max"})
    assert info.value.message == "p: 'exact' cannot be combined with mode=max"


def test_validate_may_raise_option_error() -> None:
    @dataclass(frozen=True)
    class V:
        a: int = 0

        def validate(self) -> None:
            if self.a == 1:
                raise OptionError("option 'a' must not be 1")

    with pytest.raises(OptionError, match="^q: option 'a' must not be 1$"):
        parse_options("q", V, {"a": 1})


def test_format_options_round_trip() -> None:
    o = Opts(count=2, label="a b", layers=(4, 5), limit=None, keep_ratio=0.1)
    text = format_options(o)
    assert text == (
        'count=2,ratio=0.5,exact=false,label="a b",mode=mean,layers=[4,5],pair=[1,2.0],limit=none,keep-ratio=0.1'
    )
    assert format_options(o, only_non_default=True) == 'count=2,label="a b",layers=[4,5],keep-ratio=0.1'
    assert format_options(Opts(), only_non_default=True) == ""


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (None, "none"),
        ("true", '"true"'),
        ('say "hi"', '"say \\"hi\\""'),
        (1e-5, "1e-05"),
        (float("inf"), '"inf"'),
        ((), "[]"),
        ("top-k", "top-k"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_describe_options() -> None:
    docs = {d.name: d for d in describe_options(Opts)}
    assert list(docs)[:3] == ["count", "ratio", "exact"]
    assert (docs["count"].type, docs["count"].default, docs["count"].help, docs["count"].constraint) == (
        "int",
        "1",
        "how many",
        "≥ 1",
    )
    assert docs["mode"].type == "mean | max"
    assert docs["layers"].type == "[int, ...]"
    assert docs["pair"].type == "[int, float]"
    assert docs["limit"].type == "int | none"
    assert docs["keep-ratio"].default == "none"
    assert describe_options(Required)[0].default is None


def test_unsupported_types_are_rejected() -> None:
    @dataclass(frozen=True)
    class Bad:
        x: dict = field(default_factory=dict)

    with pytest.raises(TypeError, match="unsupported option type"):
        describe_options(Bad)


# --------------------------------------------------------------------------------------------------
# Hostile values: huge numbers in strings, deep lists, long and control-laden text in errors.


@pytest.mark.parametrize("raw", ["9" * 4301, "1" * 101, " " + "7" * 5000])
def test_huge_integer_text_is_an_option_error(raw: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_options("p", Opts, {"count": raw})
    assert info.value.message.startswith("p: option 'count' expects an integer ≥ 1, got ")
    assert len(info.value.message) < 400  # a long echoed value is cut, with its length
    assert ("characters)" in info.value.message) == (len(raw) > 200)


def test_huge_float_text_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="option 'ratio' expects a number in"):
        parse_options("p", Opts, {"ratio": "1" * 5000})


def test_format_value_of_deep_lists_does_not_recurse_without_bound() -> None:
    value: list = [1]
    for _ in range(5000):
        value = [value]
    text = format_value(value)
    assert text == "[" * MAX_NESTING + "[...]" + "]" * MAX_NESTING


def test_format_value_of_an_unprintably_large_int() -> None:
    assert format_value(10**5000).startswith('"<integer of about')


def test_unknown_option_with_control_characters_and_length() -> None:
    key = "\x1b[31m" + "k" * 10_000
    with pytest.raises(OptionError) as info:
        parse_options("p", Opts, {key: 1})
    assert "\x1b" not in str(info.value) and "\\x1b[31m" in info.value.message
    assert len(info.value.message) < 400


def test_value_with_control_characters_is_neutralized() -> None:
    with pytest.raises(OptionError) as info:
        parse_options("p", Opts, {"count": "\x1b]0;owned\x07"})
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)
    assert "\\x1b]0;owned\\x07" in info.value.message
