"""Error types. Every user-facing failure is a :class:`ParekitError`.

Style (Polygraphy's): the message is one statement naming *what* failed and *where*; an optional
``note`` carries the facts that help fix it. The CLI prints ``error: <message>`` and, when present,
``Note: <note>`` on a second line, and exits non-zero.
"""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception's message folded into one line (its type name when the message is empty)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class ParekitError(Exception):
    """Base class of all errors parekit reports to users."""

    def __init__(self, message: str, note: str | None = None) -> None:
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
