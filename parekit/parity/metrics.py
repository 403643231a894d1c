"""Numerical comparison of a reference array and a candidate array.

Metrics (all computed in float64):

- ``max_abs``, ``mean_abs``: of ``|ref - cand|``;
- ``max_rel``, ``mean_rel``: of ``|ref - cand| / max(|ref|, eps)``;
- ``cosine``, ``cosine_min``: cosine similarity of each row of the last axis (the whole array for
  rank 0), averaged / minimum over rows; two zero rows count as 1, one zero row as 0;
- ``top1``: fraction of rows of the last axis whose argmax agrees — computed for float arrays
  of rank ≥ 2 whose last dim is ≥ 2 (logits-like); whether it is *checked* is up to
  :class:`parekit.parity.check.Thresholds`.

Positions where both arrays hold the same value (including both NaN, or the same infinity) count
as equal; a NaN on one side only makes the error metrics NaN, which fails every threshold.

:class:`MetricAccumulator` aggregates over several (ref, cand) pairs so that the result equals the
metrics of the concatenation of all pairs (max of maxima, size-weighted means, row-weighted
cosine/top-1), without holding all arrays at once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "ERROR_METRICS",
    "METRICS",
    "SIMILARITY_METRICS",
    "MetricAccumulator",
    "compare_arrays",
    "has_top1",
]

ERROR_METRICS = ("max_abs", "mean_abs", "max_rel", "mean_rel")
"""Metrics where lower is better (thresholds are upper bounds)."""

SIMILARITY_METRICS = ("cosine", "cosine_min", "top1")
"""Metrics where higher is better (thresholds are lower bounds)."""

METRICS = ERROR_METRICS + SIMILARITY_METRICS

DEFAULT_EPS = 1e-6


def has_top1(array: np.ndarray) -> bool:
    """Whether top-1 agreement is computed for arrays like this one (float, rank ≥ 2, last dim ≥ 2)."""
    return _is_float(array.dtype) and array.ndim >= 2 and array.shape[-1] >= 2


class MetricAccumulator:
    """Aggregates comparison metrics over several (reference, candidate) array pairs.

    Args:
        eps: Floor of ``|ref|`` in relative errors.
    """

    def __init__(self, eps: float = DEFAULT_EPS) -> None:
        self.eps = eps
        self.pairs = 0
        self.elements = 0
        self.rows = 0
        self._sum_abs = 0.0
        self._sum_rel = 0.0
        self._max_abs = 0.0
        self._max_rel = 0.0
        self._sum_cos = 0.0
        self._min_cos = 1.0
        self._top1_rows = 0
        self._top1_agree = 0
        self._top1_possible = True
        self._mismatch: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """Add one pair. A shape mismatch marks the whole result as ``shape_mismatch``."""
        ref = np.asarray(ref)
        cand = np.asarray(cand)
        self.pairs += 1
        if self._mismatch is not None:
            return
        if ref.shape != cand.shape:
            self._mismatch = (ref.shape, cand.shape)
            return
        self._top1_possible = self._top1_possible and has_top1(ref)
        if ref.size == 0:
            return
        r = ref.astype(np.float64)
        c = cand.astype(np.float64)
        both_nan = np.isnan(r) & np.isnan(c)
        if both_nan.any():  # equal positions: make them neutral for cosine and top-1 too
            r = np.where(both_nan, 0.0, r)
            c = np.where(both_nan, 0.0, c)
        with np.errstate(invalid="ignore", over="ignore"):
            same = r == c
            diff = np.where(same, 0.0, np.abs(r - c))
            rel = diff / np.maximum(np.abs(np.nan_to_num(r, nan=0.0)), self.eps)
        self.elements += diff.size
        self._sum_abs += float(diff.sum())
        self._sum_rel += float(rel.sum())
        self._max_abs = _nanmax(self._max_abs, float(diff.max()))
        self._max_rel = _nanmax(self._max_rel, float(rel.max()))

        rows_r = r.reshape(-1, r.shape[-1]) if r.ndim else r.reshape(1, 1)
        rows_c = c.reshape(rows_r.shape)
        cos = _row_cosine(rows_r, rows_c)
        self.rows += cos.size
        self._sum_cos += float(cos.sum())
        self._min_cos = _nanmin(self._min_cos, float(cos.min()))
        if self._top1_possible:
            agree = np.argmax(rows_r, axis=-1) == np.argmax(rows_c, axis=-1)
            self._top1_rows += agree.size
            self._top1_agree += int(agree.sum())

    def result(self) -> dict[str, Any]:
        """The aggregated metrics.

        Returns:
            ``{"max_abs", "mean_abs", "max_rel", "mean_rel", "cosine", "cosine_min"}`` plus
            ``"top1"`` for logits-like arrays, and ``"elements"``/``"rows"`` counts; or, after a
            shape mismatch, ``{"shape_mismatch": True, "reference_shape", "candidate_shape"}``.
        """
        if self._mismatch is not None:
            return {
                "shape_mismatch": True,
                "reference_shape": list(self._mismatch[0]),
                "candidate_shape": list(self._mismatch[1]),
            }
        n = max(self.elements, 1)
        out: dict[str, Any] = {
            "max_abs": self._max_abs,
            "mean_abs": self._sum_abs / n,
            "max_rel": self._max_rel,
            "mean_rel": self._sum_rel / n,
            "cosine": self._sum_cos / self.rows if self.rows else 1.0,
            "cosine_min": self._min_cos,
        }
        if self._top1_possible and self._top1_rows:
            out["top1"] = self._top1_agree / self._top1_rows
        out["elements"] = self.elements
        out["rows"] = self.rows
        return out


def compare_arrays(ref: np.ndarray, cand: np.ndarray, *, eps: float = DEFAULT_EPS) -> dict[str, Any]:
    """Compare one candidate array with its reference.

    Args:
        ref: The reference values.
        cand: The candidate values.
        eps: Floor of ``|ref|`` in relative errors.

    Returns:
        The metrics (see :meth:`MetricAccumulator.result`); a shape mismatch gives a result
        marked ``shape_mismatch`` instead of raising.
    """
    acc = MetricAccumulator(eps)
    acc.update(ref, cand)
    return acc.result()


def _row_cosine(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        dot = np.einsum("ij,ij->i", r, c)
        nr = np.sqrt(np.einsum("ij,ij->i", r, r))
        nc = np.sqrt(np.einsum("ij,ij->i", c, c))
        cos = dot / (nr * nc)
    both_zero = (nr == 0) & (nc == 0)
    one_zero = (nr == 0) ^ (nc == 0)
    cos = np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))
    return np.minimum(cos, 1.0)


def _is_float(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.floating)) or str(dtype) in {
        "bfloat16",
        "float8_e4m3fn",
        "float8_e5m2",
    }


def _nanmax(a: float, b: float) -> float:
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _nanmin(a: float, b: float) -> float:
    return math.nan if math.isnan(a) or math.isnan(b) else min(a, b)
