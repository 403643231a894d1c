"""Per-metric pass/fail thresholds, with a default per metric and per-output overrides.

Text form (CLI ``--threshold``, :meth:`Thresholds.parse`), items separated by commas::

    max_abs=1e-3                  default for every output
    logits:cosine=0.99            override for the output 'logits'
    sentence_embedding:top1=0.97  top-1 agreement is checked only where asked (or on 'logits')
    max_abs=off                   stop checking a metric (by default or for one output)

Error metrics (``max_abs``, ``mean_abs``, ``max_rel``, ``mean_rel``) are upper bounds; similarity
metrics (``cosine``, ``cosine_min``, ``top1``) are lower bounds. By default ``max_abs <= 1e-4``
and ``cosine >= 0.999`` are checked on every output, plus ``top1 >= 0.99`` on outputs whose name
contains ``"logits"``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from parekit.errors import ParityError
from parekit.parity.metrics import ERROR_METRICS, METRICS, SIMILARITY_METRICS

__all__ = ["DEFAULT_THRESHOLDS", "LOGITS_TOP1", "Thresholds"]

DEFAULT_THRESHOLDS: dict[str, float] = {"max_abs": 1e-4, "cosine": 0.999}
LOGITS_TOP1 = 0.99
"""Top-1 agreement required by default on outputs whose name contains ``"logits"``."""

_OFF = {"off", "none", "-"}


@dataclass
class Thresholds:
    """Thresholds by metric: defaults for all outputs and overrides per output.

    Attributes:
        defaults: Threshold by metric name for every output.
        per_output: Threshold by metric name, by output name; ``None`` turns a metric off for
            that output.
        logits_top1: Top-1 threshold for outputs whose name contains ``"logits"`` when no
            ``top1`` threshold is set for them otherwise; ``None`` to not check it.
    """

    defaults: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    per_output: dict[str, dict[str, float | None]] = field(default_factory=dict)
    logits_top1: float | None = LOGITS_TOP1

    def __post_init__(self) -> None:
        for metric, value in self.defaults.items():
            _validate(metric, value, metric)
        for output, metrics in self.per_output.items():
            for metric, bound in metrics.items():
                if bound is not None:
                    _validate(metric, bound, f"{output}:{metric}")

    @classmethod
    def parse(cls, specs: str | Iterable[str], *, base: Thresholds | None = None) -> Thresholds:
        """Parse threshold text (see the module docstring) on top of ``base`` (default thresholds).

        Args:
            specs: One string (items separated by commas) or several strings.
            base: Thresholds to start from; not modified.

        Returns:
            New thresholds.

        Raises:
            ParityError: An item does not parse, names an unknown metric, or has a bad value.
        """
        out = (base or cls()).copy()
        items = [specs] if isinstance(specs, str) else list(specs)
        for text in items:
            for item in text.split(","):
                item = item.strip()
                if item:
                    out._apply(item)
        return out

    @classmethod
    def coerce(cls, value: Thresholds | str | Iterable[str] | None) -> Thresholds:
        """Accept thresholds as an object, text, a list of texts, or ``None`` (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, Thresholds):
            return value
        return cls.parse(value)

    def copy(self) -> Thresholds:
        """A deep copy."""
        return Thresholds(
            dict(self.defaults), {k: dict(v) for k, v in self.per_output.items()}, self.logits_top1
        )

    def with_defaults(self, **metrics: float | None) -> Thresholds:
        """A copy with default thresholds set (``None`` stops checking that metric by default).

        Raises:
            ParityError: A metric name is unknown or a value is out of range.
        """
        out = self.copy()
        for metric, value in metrics.items():
            _check_metric(metric, metric)
            if value is None:
                out.defaults.pop(metric, None)
            else:
                out.defaults[metric] = _validate(metric, float(value), metric)
        return out

    def for_output(self, name: str) -> dict[str, float]:
        """The thresholds that apply to one output, by metric."""
        merged: dict[str, float | None] = dict(self.defaults)
        if "logits" in name.lower() and "top1" not in merged and self.logits_top1 is not None:
            merged["top1"] = self.logits_top1
        merged.update(self.per_output.get(name, {}))
        return {m: v for m, v in merged.items() if v is not None}

    def check(self, name: str, metrics: Mapping[str, Any]) -> list[str]:
        """Check one output's metrics.

        A metric that was not computed for this output (e.g. ``top1`` on a rank-1 output) is
        skipped, unless a threshold was set for this output by name, which then fails.

        Args:
            name: The output name.
            metrics: Its metrics (from :func:`parekit.parity.metrics.compare_arrays`).

        Returns:
            One line per failed check, e.g. ``"output 'logits': cosine 0.91 < 0.99"``.
        """
        if metrics.get("shape_mismatch"):
            return [
                f"output '{name}': shape mismatch, reference {tuple(metrics['reference_shape'])} "
                f"vs candidate {tuple(metrics['candidate_shape'])}"
            ]
        failures = []
        explicit = self.per_output.get(name, {})
        for metric, bound in self.for_output(name).items():
            value = metrics.get(metric)
            if value is None:
                if metric in explicit:
                    failures.append(f"output '{name}': {metric} is not computed for this output")
                continue
            if not self.passes(metric, float(value), bound):
                op = "<" if metric in SIMILARITY_METRICS else ">"
                failures.append(f"output '{name}': {metric} {_fmt(value)} {op} {_fmt(bound)}")
        return failures

    @staticmethod
    def passes(metric: str, value: float, bound: float) -> bool:
        """Whether ``value`` meets ``bound`` (NaN never does)."""
        if metric in SIMILARITY_METRICS:
            return value >= bound
        return value <= bound

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "defaults": dict(self.defaults),
            "per_output": {k: dict(v) for k, v in self.per_output.items()},
            "logits_top1": self.logits_top1,
        }

    def __str__(self) -> str:
        items = [f"{m}={_fmt(v)}" for m, v in self.defaults.items()]
        for output, metrics in self.per_output.items():
            items += [f"{output}:{m}={'off' if v is None else _fmt(v)}" for m, v in metrics.items()]
        return ",".join(items)

    def _apply(self, item: str) -> None:
        if "=" not in item:
            raise ParityError(
                f"threshold '{item}' does not parse", note="write METRIC=VALUE or OUTPUT:METRIC=VALUE"
            )
        lhs, text = (part.strip() for part in item.rsplit("=", 1))
        output, _, metric = lhs.rpartition(":")
        _check_metric(metric, item)
        value: float | None
        if text.lower() in _OFF:
            value = None
        else:
            try:
                value = float(text)
            except ValueError:
                raise ParityError(f"threshold '{item}' has a value that is not a number") from None
            _validate(metric, value, item)
        if output:
            self.per_output.setdefault(output, {})[metric] = value
        elif value is None:
            self.defaults.pop(metric, None)
            if metric == "top1":
                self.logits_top1 = None
        else:
            self.defaults[metric] = value


def _check_metric(metric: str, where: str) -> None:
    if metric not in METRICS:
        close = difflib.get_close_matches(metric, METRICS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ParityError(
            f"threshold '{where}' names an unknown metric '{metric}'",
            note=f"{hint}metrics: {', '.join(METRICS)}",
        )


def _validate(metric: str, value: float, where: str) -> float:
    _check_metric(metric, where)
    if math.isnan(value):
        raise ParityError(f"threshold '{where}' is NaN")
    if metric in ERROR_METRICS and value < 0:
        raise ParityError(f"threshold '{where}' is negative; {metric} is an upper bound >= 0")
    if metric in ("cosine", "cosine_min") and not -1 <= value <= 1:
        raise ParityError(f"threshold '{where}' is outside [-1, 1]")
    if metric == "top1" and not 0 <= value <= 1:
        raise ParityError(f"threshold '{where}' is outside [0, 1]")
    return value


def _fmt(value: float) -> str:
    return f"{value:.4g}"
