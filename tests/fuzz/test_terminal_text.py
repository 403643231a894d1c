"""Terminal text (parekit.errors): neutralize, echo, escape — properties and hostile inputs."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.markup import escape as rich_escape
from rich.text import Text

from parekit.errors import ECHO_LIMIT, MESSAGE_LIMIT, ParekitError, echo, escape, markup_escape, neutralize

FUZZ = settings(max_examples=300, deadline=None, derandomize=True)
# Text that exercises rich markup: backslashes, brackets, tag starts, and some controls.
MARKUPISH = st.text(alphabet=st.sampled_from(list("\\[]/#@ab =\x1b\x07\n\x9b")), max_size=40)


def _has_control(text: str, *, allow_newline: bool = False) -> bool:
    return any(
        (unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")) and not (allow_newline and c == "\n") for c in text
    )


@FUZZ
@given(MARKUPISH)
def test_markup_escape_matches_rich(text: str) -> None:
    # Where rich's escape is right (no plain '[' after a backslash), ours gives the same text.
    if "\\[" not in text:
        assert markup_escape(text) == rich_escape(text)
    expected = text
    if not text.endswith("\\") and not _has_control(text):  # (rich drops some controls itself)
        assert Text.from_markup(f"[bold]{markup_escape(text)}[/bold]").plain == expected


@FUZZ
@given(st.one_of(MARKUPISH, st.text(max_size=60)))
def test_escape_renders_as_the_neutralized_text(text: str) -> None:
    # As the CLI uses it: escaped text inside markup. The text cannot open or close a style, and the
    # closing tag is never escaped away; like rich's escape, a trailing run of backslashes before a
    # tag shows halved (rich's markup has no context-free spelling for it).
    rendered = Text.from_markup(f"[bold]{escape(text)}[/bold]").plain
    expected = neutralize(text)
    if expected.endswith("\\"):
        stem = expected.rstrip("\\")
        assert rendered.startswith(stem) and set(rendered[len(stem) :]) <= {"\\"}
    else:
        assert rendered == expected
    assert not _has_control(rendered)


@FUZZ
@given(st.text(alphabet=st.characters(codec=None), max_size=80))
def test_neutralize_leaves_no_control_characters(text: str) -> None:
    out = neutralize(text)
    assert not _has_control(out)
    kept = neutralize(text, keep_newlines=True)
    assert not _has_control(kept, allow_newline=True)
    assert kept.count("\n") == text.count("\n")
    # Printable text is left alone.
    if not _has_control(text):
        assert out == text


def test_every_c0_c1_and_del_is_neutralized() -> None:
    controls = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)])
    out = neutralize(controls)
    assert all(0x20 <= ord(c) < 0x7F for c in out)
    assert out.count("\\") == len(controls)  # one visible escape per control character


def test_escape_sequences_are_shown_not_obeyed() -> None:
    assert neutralize("\x1b[2J\x1b]0;title\x07\u202eevil") == "\\x1b[2J\\x1b]0;title\\x07\\u202eevil"
    assert neutralize("tag\U000e0041 lone\ud800") == "tag\\U000e0041 lone\\ud800"


def test_backslash_runs_are_linear() -> None:
    """200,000 backslashes (rich's own escape needs minutes): the result has the expected shape."""
    n = 200_000
    assert escape("\\" * n) == "\\" * n
    out = escape("a" + "\\" * n + "[bold]x")
    assert out == "a" + "\\" * (2 * n) + "\\[bold]x"
    assert Text.from_markup(out).plain == "a" + "\\" * n + "[bold]x"


def test_echo_caps_with_ellipsis_and_length() -> None:
    text = "p" * 1_000_000
    out = echo(text)
    assert out == "p" * ECHO_LIMIT + "… (1,000,000 characters)"
    assert echo("short") == "short"
    assert echo("\x1b" * 300, 10) == "\\x1b" * 10 + "… (300 characters)"


def test_errors_neutralize_and_cap_their_text() -> None:
    error = ParekitError("bad \x1b[31mred\x1b[0m\nsecond line", note="line one\nline \x07two")
    assert error.message == "bad \\x1b[31mred\\x1b[0m\\nsecond line"
    assert error.note == "line one\nline \\x07two"
    huge = ParekitError("x" * 1_600_000)
    assert len(huge.message) < MESSAGE_LIMIT + 40
    assert huge.message.endswith("… (1,600,000 characters)")
