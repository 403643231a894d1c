"""Error types and the one place where text bound for the terminal is made safe.

Every user-facing failure is a :class:`ParekitError`. Style (Polygraphy's): the message is one
statement naming *what* failed and *where*; an optional ``note`` carries the facts that help fix it.
The CLI prints ``error: <message>`` and, when present, ``Note: <note>`` on a second line, and exits
non-zero.

Text that comes from a model or from the command line (value names, file names, external-data
locations, pipeline text, option values) may hold control characters (terminal escape sequences)
or be huge. :func:`neutralize` makes such text printable, :func:`echo` also caps it, and
:func:`escape` additionally escapes rich markup, in time linear in the length of the text.
:class:`ParekitError` neutralizes its message and note, so nothing it carries can drive a terminal.
"""

from __future__ import annotations

import re

__all__ = [
    "ECHO_LIMIT",
    "MESSAGE_LIMIT",
    "BackendError",
    "DataError",
    "MissingExtraError",
    "ModelLoadError",
    "OptionError",
    "ParekitError",
    "ParityError",
    "PassNotApplicableError",
    "PipelineSyntaxError",
    "StructureError",
    "UnknownPassError",
    "VerificationError",
    "echo",
    "escape",
    "neutralize",
    "one_line",
]

ECHO_LIMIT = 200
"""Characters of one echoed input (a name, a path, an option value) shown in an error."""
MESSAGE_LIMIT = 4000
"""Characters of an error message or note kept in full; longer ones are cut (see :func:`echo`)."""

# Characters that can drive a terminal or hide/reorder what it shows: C0 controls, DEL, C1 controls
# (the 8-bit CSI among them), lone surrogates (unprintable), and the Unicode format characters
# (general categories Cf, Zl, Zp: soft hyphen, zero-width characters, bidirectional overrides and
# isolates, line/paragraph separators, BOM, tag characters), as of Python 3.11's Unicode data.
_FORMAT_RANGES = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_CONTROL_RE = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT_RANGES}]")
_CONTROL_NO_NEWLINE_RE = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT_RANGES}]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# A '[': a rich markup tag (group 1: a letter, '#', '/' or '@', up to the next ']' without another
# '['), or a plain bracket.
_BRACKET_RE = re.compile(r"\[(?:(?=([a-z#/@][^\[]*?\])))?")


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def neutralize(text: str, *, keep_newlines: bool = False) -> str:
    """Return ``text`` with every control character replaced by a visible escape.

    ESC (``\\x1b``), the other C0 controls, DEL, the C1 controls (``\\x80``–``\\x9f``, which
    include the 8-bit CSI) and the Unicode characters that reorder or hide text become ``\\xNN`` /
    ``\\uNNNN`` (``\\n``, ``\\t``, ``\\r`` for those three), so the result prints as itself and cannot
    move the cursor, recolour, retitle or clear a terminal. Linear in ``len(text)``.

    Args:
        text: Any text.
        keep_newlines: Leave ``\\n`` as a line break (for multi-line notes).

    Returns:
        The printable text.
    """
    pattern = _CONTROL_NO_NEWLINE_RE if keep_newlines else _CONTROL_RE
    return pattern.sub(_visible, text)


def echo(value: object, limit: int = ECHO_LIMIT, *, keep_newlines: bool = False) -> str:
    """Text of a user- or model-supplied value, made safe to show in a message.

    The text is neutralized (see :func:`neutralize`) and, when longer than ``limit`` characters,
    cut to its first ``limit`` characters followed by ``…`` and the original length, so a 1 MB
    pipeline or a 60,000-character value name gives a short error.

    Args:
        value: The value (``str()`` is taken of non-strings).
        limit: Most characters of the original kept.
        keep_newlines: Leave ``\\n`` as a line break (multi-line text such as generated text).

    Returns:
        Printable text (one line unless ``keep_newlines``).
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return neutralize(text, keep_newlines=keep_newlines)
    return f"{neutralize(text[:limit], keep_newlines=keep_newlines)}… ({len(text):,} characters)"


def escape(text: object, limit: int | None = None) -> str:
    """Make text safe to print through rich with markup on: neutralized, optionally capped, and
    with markup escaped.

    Does what ``rich.markup.escape`` does (a backslash before every ``[tag]``, doubled backslashes
    before one, a trailing single backslash doubled) in one linear pass; rich's own version is
    quadratic in runs of backslashes.

    Args:
        text: The text (``str()`` is taken of non-strings).
        limit: Cap the text as :func:`echo` does; ``None`` keeps it whole.

    Returns:
        Markup that renders as the neutralized text.
    """
    raw = text if isinstance(text, str) else str(text)
    safe = echo(raw, limit) if limit is not None else neutralize(raw)
    return markup_escape(safe)


def markup_escape(text: str) -> str:
    """Escape rich markup in ``text``, in linear time (rich's own ``escape`` is quadratic in runs of
    backslashes).

    As ``rich.markup.escape`` does: a backslash before every ``[tag]`` (with the backslashes before it
    doubled) and a trailing single backslash doubled. In addition, a ``[`` that is not a tag but
    follows a backslash gets one more backslash, since rich's renderer turns ``\\[`` into ``[``.
    Control characters are left alone; use :func:`escape` for text from outside.
    """
    parts: list[str] = []
    pos = 0
    for match in _BRACKET_RE.finditer(text):
        start = match.start()
        first = start
        while first > pos and text[first - 1] == "\\":
            first -= 1
        parts.append(text[pos:first])
        if match.group(1) is not None:  # a tag: double the backslashes, then escape it
            parts.append(text[first:start] * 2)
            parts.append("\\")
        elif first < start:  # a plain '[' after backslashes: keep the '\\[' from being eaten
            parts.append(text[first:start])
            parts.append("\\")
        parts.append(match.group())
        pos = match.end()
    parts.append(text[pos:])
    result = "".join(parts)
    if result.endswith("\\") and not result.endswith("\\\\"):
        result += "\\"
    return result


def one_line(exc: BaseException) -> str:
    """An exception's message folded into one line (its type name when the message is empty)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _cap(text: str) -> str:
    if len(text) <= MESSAGE_LIMIT:
        return text
    return f"{text[:MESSAGE_LIMIT]}… ({len(text):,} characters)"


class ParekitError(Exception):
    """Base class of all errors parekit reports to users.

    The message and note are neutralized (:func:`neutralize`; the note keeps its line breaks) and
    capped at :data:`MESSAGE_LIMIT` characters, so an error never carries terminal control
    sequences or megabytes of echoed input.
    """

    def __init__(self, message: str, note: str | None = None) -> None:
        message = neutralize(_cap(message))
        note = None if note is None else neutralize(_cap(note), keep_newlines=True)
        super().__init__(message)
        self.message = message
        self.note = note

    def __str__(self) -> str:
        return self.message if self.note is None else f"{self.message}\nNote: {self.note}"


class ModelLoadError(ParekitError):
    """A model file is missing, truncated, malformed or otherwise cannot be read."""


class StructureError(ParekitError):
    """Structure analysis could not find the transformer structure it looked for."""


class PipelineSyntaxError(ParekitError):
    """A ``--passes`` pipeline string does not parse."""


class UnknownPassError(ParekitError):
    """A pipeline names a pass that is not registered."""


class OptionError(ParekitError):
    """A pass option is unknown, mistyped or out of range."""


class PassNotApplicableError(ParekitError):
    """A pass cannot apply to this model; the message says why."""


class VerificationError(ParekitError):
    """A rewritten model failed the ONNX checker or could not be loaded by ONNX Runtime."""


class BackendError(ParekitError):
    """A backend (ONNX Runtime, TensorRT) failed or is not available."""


class MissingExtraError(ParekitError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed",
            note=f"install it with: pip install 'parekit[{extra}]'",
        )


class ParityError(ParekitError):
    """Reference and candidate cannot be compared (mismatched inputs, bad feeds, bad thresholds)."""


class DataError(ParekitError):
    """Input data (feeds, calibration data, .npz files) is missing or does not fit the model."""
