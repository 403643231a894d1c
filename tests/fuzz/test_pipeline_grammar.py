"""Property-based tests of the pipeline grammar: print/parse fixed point, errors are ParekitErrors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parekit.errors import ParekitError, PipelineSyntaxError
from parekit.passes import registry
from parekit.passes.base import Pass
from parekit.passes.options import MAX_NESTING
from parekit.passes.pipeline import PassSpec, Pipeline, parse_pipeline

FUZZ = settings(max_examples=120, deadline=None, derandomize=True)

_FIRST = "abcxyzAZ_"
NAMES = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_FIRST),
    st.text(alphabet=_FIRST + "09-", max_size=6),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=8)


@st.composite
def pipelines(draw: st.DrawFn) -> Pipeline:
    specs = []
    for _ in range(draw(st.integers(1, 3))):
        keys = draw(st.lists(NAMES, max_size=3, unique_by=lambda k: k.replace("_", "-")))
        specs.append(PassSpec(draw(NAMES), {k: draw(VALUES) for k in keys}))
    return Pipeline(tuple(specs))


def _same(a: object, b: object) -> bool:
    """Equality that tells 1 from 1.0 and True from 1 (the printer must keep the type)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.copysign(1, a) != math.copysign(1, b):
        return False
    return type(a) is type(b) and a == b


def _same_pipeline(p: Pipeline, q: Pipeline) -> bool:
    return len(p.specs) == len(q.specs) and all(
        s.name == t.name and list(s.options) == list(t.options) and all(_same(s.options[k], t.options[k]) for k in s.options)
        for s, t in zip(p.specs, q.specs, strict=True)
    )


@FUZZ
@given(pipelines())
def test_print_then_parse_is_the_identity(pipeline: Pipeline) -> None:
    text = str(pipeline)
    again = parse_pipeline(text)
    assert _same_pipeline(again, pipeline), text
    assert str(again) == text  # and printing is a fixed point


# Text near the grammar: its punctuation, quotes, escapes, number and name pieces, whitespace and
# a few hostile characters.
NEAR = st.text(
    alphabet=st.sampled_from(list("{}[],= \"'\\-+.eE0123456789abn_tx\x1b\x00\n\u202e")), max_size=40
)


@FUZZ
@given(st.one_of(NEAR, st.text(max_size=40)))
def test_any_text_parses_or_gives_a_syntax_error(text: str) -> None:
    try:
        pipeline = parse_pipeline(text)
    except PipelineSyntaxError as error:
        assert "\n" not in error.message
        assert not any(ord(c) < 0x20 for c in error.message)
        assert "\x1b" not in (error.note or "")
        return
    printed = str(pipeline)
    again = parse_pipeline(printed)
    assert _same_pipeline(again, pipeline)
    assert str(again) == printed


@given(st.integers(MAX_NESTING + 1, 3000), st.sampled_from(["[", "[1,", "[[", "[ "]))
@settings(max_examples=25, deadline=None, derandomize=True)
def test_deep_nesting_is_refused(depth: int, opener: str) -> None:
    with pytest.raises(PipelineSyntaxError, match=f"nested more than {MAX_NESTING} deep"):
        parse_pipeline("x{a=" + opener * depth)


# ---- resolution against registered passes: every failure is a ParekitError


@dataclass(frozen=True)
class FuzzOptions:
    count: int = field(default=1, metadata={"min": 0, "max": 64})
    ratio: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    layers: tuple[int, ...] = field(default=(), metadata={"min": 0})
    mode: str = "mean"
    flag: bool = False


class _Noop(Pass[FuzzOptions]):
    def run(self, model: ir.Model, mm: object) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=False)


@pytest.fixture(scope="module", autouse=True)
def fuzz_passes() -> Iterator[None]:
    with registry.temporary():
        registry.register("fz", options=FuzzOptions)(_Noop)
        registry.register("fz-after", options=FuzzOptions, requires=("fz",))(_Noop)
        yield


OPTION_VALUES = st.one_of(VALUES, st.sampled_from(["8", "-1", "1e999", "nan", "9" * 5000, "true", "none", "[1,2]"]))


@st.composite
def resolvable(draw: st.DrawFn) -> Pipeline:
    specs = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(["fz", "fz-after", "fz_x", "nosuch"]))
        keys = draw(
            st.lists(
                st.sampled_from(["count", "ratio", "layers", "mode", "flag", "nope", "Count"]),
                max_size=3,
                unique_by=lambda k: k.replace("_", "-"),
            )
        )
        specs.append(PassSpec(name, {k: draw(OPTION_VALUES) for k in keys}))
    return Pipeline(tuple(specs))


@FUZZ
@given(resolvable())
def test_resolve_fails_only_with_parekit_errors(pipeline: Pipeline) -> None:
    try:
        resolved = pipeline.resolve()
    except ParekitError as error:
        assert "\n" not in error.message and len(error.message) < 1000
        return
    # A resolved pipeline prints canonically and resolves to itself.
    assert parse_pipeline(str(resolved)).resolve() == resolved
