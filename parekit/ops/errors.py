"""Errors raised by the op layer: bad attributes, bad inputs, unknown op names."""

from __future__ import annotations

from parekit.errors import OptionError, ParekitError

__all__ = ["OpAttributeError", "OpInputError", "UnknownOpError"]


class OpAttributeError(OptionError, ValueError):
    """An op attribute is unknown, missing, mistyped or out of range (names the op and attribute)."""


class OpInputError(ParekitError, ValueError):
    """An op was given the wrong number of inputs, an unsupported dtype or rank, or an unfit model."""


class UnknownOpError(ParekitError, LookupError):
    """No registered op has the requested name."""
