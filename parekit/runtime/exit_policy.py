"""Exit policies of :class:`~parekit.runtime.exit_decode.ExitSession`: their text and the margin signal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from parekit.errors import OptionError, echo

__all__ = ["ExitPolicy", "margin", "parse_policy"]

PolicyKind = Literal["full", "d3", "gate"]


@dataclass(frozen=True)
class ExitPolicy:
    """How many layers a decode step runs (see the module docstring)."""

    kind: PolicyKind
    alpha: float = 1.0
    threshold: float = math.inf
    min_layers: int = 1
    text: str = "full"
    calibrated: bool = False
    """gate: each exit's own threshold from the model's ``parekit.exits`` metadata (margin signal)."""

    def schedule(self, step: int, num_layers: int) -> int:
        """D³: layers for decode step ``step`` (≥ 1) before rounding up to a cut; others: all."""
        if self.kind != "d3":
            return num_layers
        return min(num_layers, max(self.min_layers, math.floor(num_layers * self.alpha**step)))


def parse_policy(text: str) -> ExitPolicy:
    """Read ``full``, ``d3:ALPHA[:MIN]`` or ``gate:THRESH[:MIN]``.

    Raises:
        OptionError: Unknown policy or bad argument (one line, the text shown escaped).
    """
    parts = text.strip().split(":")
    kind, args = parts[0].lower(), parts[1:]
    usage = "give full, d3:ALPHA[:MIN] (0 < ALPHA <= 1), gate:THRESH[:MIN] or gate:calibrated[:MIN]"
    if kind == "full" and not args:
        return ExitPolicy("full")
    if kind == "gate" and args and args[0].lower() == "calibrated":
        if len(args) > 2 or (len(args) == 2 and not (args[1].isdigit() and 0 < len(args[1]) < 6 and int(args[1]) >= 1)):
            raise OptionError(f"--exit: bad policy '{echo(text)}': {usage}")
        least = int(args[1]) if len(args) == 2 else 1
        return ExitPolicy("gate", min_layers=least, text=f"gate:calibrated:{least}", calibrated=True)
    if kind not in ("d3", "gate") or not 1 <= len(args) <= 2:
        raise OptionError(f"--exit: unknown policy '{echo(text)}': {usage}")
    try:
        value = float(args[0])
        least = int(args[1]) if len(args) == 2 else 1
    except ValueError:
        raise OptionError(f"--exit: bad number in '{echo(text)}': {usage}") from None
    if not math.isfinite(value) or least < 1:
        raise OptionError(f"--exit: '{echo(text)}': the value must be finite and MIN >= 1")
    if kind == "d3":
        if not 0 < value <= 1:
            raise OptionError(f"--exit: d3 ALPHA must be in (0, 1], got {value:g}")
        return ExitPolicy("d3", alpha=value, min_layers=least, text=f"d3:{value:g}:{least}")
    return ExitPolicy("gate", threshold=value, min_layers=least, text=f"gate:{value:g}:{least}")


def margin(logits: np.ndarray) -> float:
    """Softmax margin ``p1 - p2`` of one row of logits (``ExitGate`` ``signal=margin``; NaN: never exits)."""
    x = logits.astype(np.float64)
    if np.isnan(x).any() or np.isposinf(x).any():
        return -math.inf
    if x.size == 1:
        return 1.0
    p = np.exp(x - x.max())
    p /= p.sum()
    top = np.partition(p, -2)[-2:]
    return float(top[1] - top[0])
