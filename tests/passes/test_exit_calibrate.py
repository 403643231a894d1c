"""Budget calibration of exit gates: parsing, the threshold choice, the FLOP speed-up model."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.errors import OptionError
from parekit.passes import exit_calibrate as ec


def test_parse_budget() -> None:
    b = ec.parse_budget("sentence_embedding:cosine=0.98")
    assert (b.output, b.metric, b.value) == ("sentence_embedding", "cosine", 0.98)
    assert str(ec.parse_budget("logits:top1=0.95")) == "logits:top1=0.95"


@pytest.mark.parametrize(
    "text",
    ["logits", "logits:top5=0.9", "logits:top1=1.5", "logits:top1=0", "a b:cosine=0.9", "x:cosine=\x1b[31m"],
)
def test_parse_budget_refuses(text: str) -> None:
    with pytest.raises(OptionError, match="budget") as err:
        ec.parse_budget(text)
    assert "\x1b" not in str(err.value)


def _choose(
    metric: str, signal: str, score: list[float], fid: list[float], value: float
) -> tuple[float, bool]:
    s, f = np.asarray(score, float), np.asarray(fid, float)
    return ec._choose(ec.Budget("o", metric, value), signal, s, f, np.ones(s.size, bool), 0.0, 1.0, s.size)


def test_choose_most_permissive_threshold_within_budget() -> None:
    # Rows by confidence 0.9 > 0.8 > 0.7 > 0.1; fidelities 1, 0.9, 0.5, 0.
    score, fid = [0.9, 0.1, 0.7, 0.8], [1.0, 0.0, 0.5, 0.9]
    # Mean over 4 rows with exits {0.9, 0.8}: (1 + 0.9 + 1 + 1) / 4 = 0.975; adding 0.7: 0.85.
    assert _choose("cosine", "margin", score, fid, 0.97) == (0.8, True)
    assert _choose("cosine", "margin", score, fid, 0.85) == (0.7, True)
    assert _choose("cosine", "margin", score, fid, 0.8) == (0.7, True)
    assert _choose("cosine", "margin", score, fid, 0.6) == (0.1, True)
    assert _choose("cosine_min", "margin", score, fid, 0.95) == (0.9, True)


def test_choose_entropy_is_low_is_confident_and_ties_exit_together() -> None:
    score, fid = [0.2, 0.2, 3.0], [1.0, 0.0, 1.0]
    # The two rows at entropy 0.2 exit together or not at all: together the mean is 2/3.
    assert _choose("top1", "entropy", score, fid, 0.9) == (ec.never_fires("entropy"), False)
    assert _choose("top1", "entropy", score, fid, 0.6) == (3.0, True)


def test_choose_nan_scores_never_exit() -> None:
    assert _choose("cosine", "margin", [float("nan")] * 3, [1.0] * 3, 0.5) == (2.0, False)


def test_speedup_counts_blocks_and_branches() -> None:
    costs = {"embed": 0, "blocks": [10, 10, 10, 10], "head": 0, "branch": {1: 2}, "baseline": 40}
    exit_at = np.array([0, 0, -1, -1])  # two rows leave after block 1, two run everything
    # leaving: 20 + 2; staying: 40 + 2 → mean 32 → 40 / 32
    assert ec._speedup(costs, [1], exit_at) == pytest.approx(40 / 32)
