"""Helpers for users' own pytest suites."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from parekit.parity.check import ParityReport, compare_models
from parekit.parity.thresholds import Thresholds

if TYPE_CHECKING:
    import onnx_ir as ir

    from parekit.backends.ort import Optimization, OrtRunner

__all__ = ["assert_parity"]


def assert_parity(
    reference: str | os.PathLike[str] | bytes | ir.Model | OrtRunner,
    candidate: str | os.PathLike[str] | bytes | ir.Model | OrtRunner,
    feeds: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
    *,
    thresholds: Thresholds | str | Sequence[str] | None = None,
    providers: Sequence[str] | None = None,
    optimization: Optimization = "all",
    outputs: Sequence[str] | None = None,
    native: bool | None = None,
    **metric_defaults: float | None,
) -> ParityReport:
    """Assert that a candidate model's outputs match the reference's.

    Example::

        assert_parity("model.onnx", "pruned.onnx", feeds, thresholds="logits:top1=0.95", cosine=0.99)

    Args:
        reference: The reference model (path, bytes, ``onnx_ir.Model`` or ``OrtRunner``).
        candidate: The candidate model.
        feeds: One feed set or a sequence of them.
        thresholds: Thresholds as an object, text or list of texts (default thresholds if None).
        providers: ORT execution providers.
        optimization: ORT graph optimization level.
        outputs: Compare only these outputs.
        native: parekit's native kernels for both models (``None``: when built; see
            :class:`~parekit.backends.ort.OrtRunner`).
        **metric_defaults: Default thresholds by metric (``max_abs=1e-3``, ``cosine=0.99``;
            ``None`` stops checking that metric), applied over ``thresholds``.

    Returns:
        The report, when parity holds.

    Raises:
        AssertionError: Some output misses a threshold; the message lists every failure.
    """
    limits = Thresholds.coerce(thresholds)
    if metric_defaults:
        limits = limits.with_defaults(**metric_defaults)
    report = compare_models(
        reference,
        candidate,
        feeds,
        thresholds=limits,
        providers=providers,
        optimization=optimization,
        outputs=outputs,
        native=native,
    )
    if not report.passed:
        lines = "\n".join(f"  {line}" for line in report.failures)
        raise AssertionError(f"parity failed ({report.candidate} vs {report.reference}):\n{lines}")
    return report
