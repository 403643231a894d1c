"""Pick each exit gate's threshold so that a fidelity budget holds on calibration data.

A budget names one model output, a metric and its bound: ``sentence_embedding:cosine=0.98`` (mean
cosine of each row to the full model's), ``sentence_embedding:cosine_min=0.9`` (the worst row),
``logits:top1=0.95`` (share of rows whose argmax agrees). Metric names are :mod:`parekit.parity`'s. A
*row* is one vector of the output's last axis: a sentence embedding, a classifier's logits, or (decoders)
one real token's next-token logits, padding left out through the attention mask.

The exits run in order: a row leaves at the first exit whose gate fires, and gets that exit's output;
rows that never exit get the full model's output (fidelity 1). Thresholds are chosen greedily, earliest
exit first (the earliest exit saves the most): at each exit, the most permissive threshold among the
scores seen such that the budget, evaluated over *all* calibration rows with the exits chosen so far,
still holds. An exit that cannot take even its most confident row within the budget gets a threshold
that never fires, and says so.

The expected speed-up is a FLOP ratio (:func:`parekit.analysis.flops.estimate_flops` at the pass
context's dims): a row leaving at exit ``k`` costs the embeddings, the blocks up to the exit's layer and
the exit branches it passed through; a row that stays costs the whole model plus every exit branch; the
baseline is the model without exit branches. Measured latency is the benchmarks' job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from parekit.analysis.flops import dim_bindings, estimate_flops
from parekit.analysis.modelmap import ModelMap
from parekit.calibration import collect
from parekit.errors import OptionError, echo

__all__ = ["BUDGET_METRICS", "Budget", "calibrate", "never_fires", "parse_budget"]

BUDGET_METRICS = ("cosine", "cosine_min", "top1")
_BUDGET = re.compile(r"([A-Za-z0-9_.:/\-]{1,200}):([a-z0-9_]{1,20})=([0-9.eE+\-]{1,30})\Z")


@dataclass(frozen=True)
class Budget:
    """A parsed fidelity budget: ``output:metric=value``."""

    output: str
    metric: str
    value: float

    def __str__(self) -> str:
        return f"{self.output}:{self.metric}={self.value:g}"


def parse_budget(text: str, owner: str = "early-exit") -> Budget:
    """Parse ``output:metric=value``.

    Raises:
        OptionError: malformed text, unknown metric, or a bound outside (0, 1].
    """
    m = _BUDGET.match(text.strip())
    if m is None:
        raise OptionError(
            f"{owner}: option 'budget' must read output:metric=value (e.g. logits:top1=0.95), got {echo(text)}"
        )
    output, metric, raw = m.groups()
    if metric not in BUDGET_METRICS:
        raise OptionError(f"{owner}: budget metric {echo(metric)} is not one of {', '.join(BUDGET_METRICS)}")
    try:
        value = float(raw)
    except ValueError:
        raise OptionError(f"{owner}: budget bound {echo(raw)} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise OptionError(f"{owner}: budget bound must be in (0, 1], got {value:g}")
    return Budget(output, metric, value)


def never_fires(signal: str) -> float:
    """A threshold the gate of ``signal`` never passes (scores are in [0, 1], entropy ≥ 0)."""
    return -1.0 if signal == "entropy" else 2.0


def _takes(signal: str, score: np.ndarray, threshold: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (score <= threshold) if signal == "entropy" else (score >= threshold)


def _fidelity(metric: str, exit_rows: np.ndarray, full_rows: np.ndarray) -> np.ndarray:
    if metric == "top1":
        return (exit_rows.argmax(-1) == full_rows.argmax(-1)).astype(np.float64)
    a = exit_rows.astype(np.float64)
    b = full_rows.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(-1) / (na * nb)
    return np.where((na == 0) & (nb == 0), 1.0, np.nan_to_num(cos, nan=0.0))


def _row_mask(feed: Mapping[str, np.ndarray], mm: ModelMap, shape: tuple[int, ...]) -> np.ndarray:
    """Which rows (leading positions of an output ``[..., V]``) are real tokens."""
    lead = shape[:-1]
    mask_name = mm.inputs.get("attention_mask")
    if len(lead) == 2 and mask_name is not None and mask_name in feed:
        mask = np.asarray(feed[mask_name])
        if mask.ndim == 2 and mask.shape[0] == lead[0] and mask.shape[1] >= lead[1]:
            return mask[:, mask.shape[1] - lead[1] :].astype(bool).reshape(-1)
    return np.ones(int(np.prod(lead, dtype=np.int64)), bool)


def _costs(model: ir.Model, mm: ModelMap, layers: Sequence[int], dims: Mapping[str, int]) -> dict[str, Any]:
    """FLOPs of the parts a row may run: embeddings, each block, the head, each exit branch."""
    flops = estimate_flops(model, dim_bindings(dims, mm)).by_node
    branch = {layer: sum(f for n, f in flops.items() if n.startswith(f"exit{layer}.")) for layer in layers}
    in_branch = {n for n in flops if any(n.startswith(f"exit{layer}.") for layer in layers)}
    blocks = [sum(flops.get(n, 0) for n in lm.nodes) for lm in mm.layers]
    head = sum(flops.get(n, 0) for n in mm.head_nodes if n not in in_branch)
    total = sum(f for n, f in flops.items() if n not in in_branch)
    embed = max(total - sum(blocks) - head, 0)
    return {"embed": embed, "blocks": blocks, "head": head, "branch": branch, "baseline": total}


def calibrate(
    model: ir.Model,
    mm: ModelMap,
    exits: list[dict[str, Any]],
    budget: str,
    calibration: Any,
    *,
    flop_dims: Mapping[str, int] | None = None,
) -> dict[int, dict[str, Any]]:
    """Choose every exit's threshold on ``calibration`` so that ``budget`` holds.

    Args:
        model: the model with the exits' outputs (``<out>.exit<l>``, ``exit<l>.score``) as graph outputs.
        mm: its structure map (layers, head nodes, input roles).
        exits: the exits, ascending by layer, as in the ``parekit.exits`` metadata (``layer``,
            ``signal``, ``score``, ``outputs``).
        budget: ``output:metric=value`` (see the module docstring).
        calibration: a :class:`~parekit.calibration.CalibrationSet`.
        flop_dims: dims for the FLOP estimate (default the pass defaults).

    Returns:
        layer → ``{"threshold", "exit_rate", "exited_fidelity", "cumulative_exit_rate", "overall"}``;
        ``overall`` (the same object in every entry) holds the budget, the calibrated metric, the rows
        counted, the expected FLOP speed-up and the calibration source.

    Raises:
        OptionError: the budget names an output the exits do not have.
    """
    from parekit.passes.base import DEFAULT_FLOP_DIMS

    spec = parse_budget(budget)
    layers = [int(e["layer"]) for e in exits]
    for e in exits:
        if spec.output not in e["outputs"]:
            raise OptionError(
                f"early-exit: budget output {echo(spec.output)} has no exit version; "
                f"exits have {', '.join(sorted(e['outputs'])) or 'none'}"
            )
    names = [spec.output] + [e["outputs"][spec.output] for e in exits] + [e["score"] for e in exits]
    fid_parts: list[list[np.ndarray]] = [[] for _ in exits]
    score_parts: list[list[np.ndarray]] = [[] for _ in exits]
    for feed, values in collect(model, names, calibration):
        full = np.asarray(values[spec.output])
        keep = _row_mask(feed, mm, full.shape)
        full_rows = full.reshape(-1, full.shape[-1])[keep]
        for k, e in enumerate(exits):
            ex = np.asarray(values[e["outputs"][spec.output]])
            fid_parts[k].append(_fidelity(spec.metric, ex.reshape(-1, ex.shape[-1])[keep], full_rows))
            score_parts[k].append(np.asarray(values[e["score"]], np.float64).reshape(-1)[keep])
    fid = [np.concatenate(p) for p in fid_parts]
    scores = [np.concatenate(p) for p in score_parts]
    n = int(fid[0].size) if fid else 0
    remaining = np.ones(n, bool)
    exit_at = np.full(n, -1)
    deficit = 0.0  # sum of (fidelity - 1) over rows that exited so far
    worst = 1.0
    result: dict[int, dict[str, Any]] = {}
    for k, e in enumerate(exits):
        signal = str(e["signal"])
        threshold, chosen = _choose(spec, signal, scores[k], fid[k], remaining, deficit, worst, n)
        took = remaining & _takes(signal, scores[k], threshold)
        exit_at[took] = k
        deficit += float((fid[k][took] - 1.0).sum())
        if took.any():
            worst = min(worst, float(fid[k][took].min()))
        remaining &= ~took
        result[layers[k]] = {
            "threshold": threshold,
            "exit_rate": float(took.sum() / n) if n else 0.0,
            "cumulative_exit_rate": float((exit_at >= 0).sum() / n) if n else 0.0,
            "exited_fidelity": float(fid[k][took].mean()) if took.any() else None,
            "fires": chosen,
        }
    metric = worst if spec.metric == "cosine_min" else (1.0 + deficit / n if n else 1.0)
    costs = _costs(model, mm, layers, flop_dims or DEFAULT_FLOP_DIMS)
    overall = {
        "budget": str(spec),
        "metric": metric,
        "rows": n,
        "expected_speedup": _speedup(costs, layers, exit_at),
        "calibration": getattr(calibration, "source", "feeds"),
        "rule": "greedy, earliest exit first",
    }
    for entry in result.values():
        entry["overall"] = overall
    return result


def _choose(
    spec: Budget,
    signal: str,
    score: np.ndarray,
    fid: np.ndarray,
    remaining: np.ndarray,
    deficit: float,
    worst: float,
    n: int,
) -> tuple[float, bool]:
    """The most permissive threshold over the remaining rows' scores that keeps the budget."""
    idx = np.flatnonzero(remaining & ~np.isnan(score))
    if idx.size == 0 or n == 0:
        return never_fires(signal), False
    s = score[idx]
    order = np.argsort(s if signal == "entropy" else -s, kind="stable")
    s, f = s[order], fid[idx][order]
    if spec.metric == "cosine_min":
        ok = np.minimum.accumulate(f) >= spec.value
        ok &= worst >= spec.value
    else:
        ok = 1.0 + (deficit + np.cumsum(f - 1.0)) / n >= spec.value - 1e-12
    # A cut is only possible where the score changes (ties exit together).
    last_of_tie = np.append(s[1:] != s[:-1], True)
    good = np.flatnonzero(ok & last_of_tie)
    if good.size == 0:
        return never_fires(signal), False
    return float(s[good[-1]]), True


def _speedup(costs: Mapping[str, Any], layers: Sequence[int], exit_at: np.ndarray) -> float | None:
    blocks, branch = costs["blocks"], costs["branch"]
    full = costs["embed"] + sum(blocks) + costs["head"] + sum(branch.values())
    if not costs["baseline"] or exit_at.size == 0:
        return None
    total = 0.0
    for k, layer in enumerate(layers):
        count = int((exit_at == k).sum())
        part = costs["embed"] + sum(blocks[: layer + 1]) + sum(branch[layers[j]] for j in range(k + 1))
        total += count * part
    total += int((exit_at < 0).sum()) * full
    mean = total / exit_at.size
    return float(costs["baseline"] / mean) if mean > 0 and math.isfinite(mean) else None
