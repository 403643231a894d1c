"""Output parity between a reference model and a candidate (or golden outputs).

Each model runs under ONNX Runtime and gets only the feeds it takes. Outputs are matched by name;
an output present in only one model is listed in the report as not compared (a candidate may
drop outputs, e.g. the KV cache of a removed layer) and does not fail the check.

Aggregation over feed sets: metrics are accumulated set by set so that they equal the metrics of
all sets concatenated — the maximum of the maxima, element-weighted means of the errors,
row-weighted mean (and overall minimum) of the cosine, row-weighted top-1 agreement — and this
also works when sets have different shapes (e.g. different sequence lengths). A shape mismatch
between reference and candidate in any set marks the output ``shape_mismatch`` (a failure).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parekit.errors import ParityError
from parekit.parity.controls import with_start
from parekit.parity.metrics import METRICS, MetricAccumulator
from parekit.parity.npz import load_npz, save_npz
from parekit.parity.thresholds import Thresholds

if TYPE_CHECKING:
    import onnx_ir as ir
    from rich.table import Table

    from parekit.backends.ort import Optimization, OrtRunner

    ModelLike = str | os.PathLike[str] | bytes | ir.Model | OrtRunner

logger = logging.getLogger(__name__)

__all__ = [
    "ParityReport",
    "Thresholds",
    "compare_models",
    "compare_to_golden",
    "load_golden",
    "run_outputs",
    "save_golden",
]

Feeds = Mapping[str, np.ndarray]
ONLY_IN_REFERENCE = "only in reference"
ONLY_IN_CANDIDATE = "only in candidate"


@dataclass
class ParityReport:
    """The result of a parity check.

    Attributes:
        passed: Whether every compared output met its thresholds.
        outputs: Metrics by compared output name (see :mod:`parekit.parity.metrics`).
        failures: One line per failed check, e.g. ``"output 'logits': cosine 0.91 < 0.99"``.
        not_compared: Output names present in one side only, by reason (``"only in reference"``,
            ``"only in candidate"``).
        thresholds: The thresholds applied, by compared output then metric.
        feed_sets: How many feed sets were run.
        reference: A description of the reference (path or model name).
        candidate: A description of the candidate.
        native: What ran the parekit ops, per side (``"reference"``, ``"candidate"``): the native
            library's path, or ``None`` for the function bodies (and for golden outputs).
    """

    passed: bool
    outputs: dict[str, dict[str, Any]]
    failures: list[str]
    not_compared: dict[str, list[str]] = field(default_factory=dict)
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    feed_sets: int = 0
    reference: str = "reference"
    candidate: str = "candidate"
    native: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
        data: dict[str, Any] = _json_ready(
            {
                "passed": self.passed,
                "reference": self.reference,
                "candidate": self.candidate,
                "feed_sets": self.feed_sets,
                "outputs": self.outputs,
                "thresholds": self.thresholds,
                "failures": self.failures,
                "not_compared": self.not_compared,
                "native": dict(self.native),
            }
        )
        return data

    def render(self) -> Table:
        """A rich table: one row per output, metrics with their thresholds, failing values in red."""
        from rich.table import Table

        from parekit.errors import ECHO_LIMIT, escape

        verdict = "[green]passed[/green]" if self.passed else "[red]FAILED[/red]"
        table = Table(
            title=f"parity {verdict}: {escape(self.candidate, ECHO_LIMIT)} vs {escape(self.reference, ECHO_LIMIT)} "
            f"({self.feed_sets} feed sets)"
        )
        table.add_column("output", style="bold")
        for metric in METRICS:
            table.add_column(metric, justify="right")
        table.add_column("result")
        for name, metrics in self.outputs.items():
            if metrics.get("shape_mismatch"):
                cells = ["—"] * len(METRICS)
                result = (
                    f"[red]shape {tuple(metrics['reference_shape'])} vs "
                    f"{tuple(metrics['candidate_shape'])}[/red]"
                )
            else:
                bounds = self.thresholds.get(name, {})
                cells = [_cell(metric, metrics.get(metric), bounds.get(metric)) for metric in METRICS]
                failed = any(line.startswith(f"output '{name}':") for line in self.failures)
                result = "[red]fail[/red]" if failed else "[green]ok[/green]"
            table.add_row(escape(name, ECHO_LIMIT), *cells, result)
        for reason, names in self.not_compared.items():
            for name in names:
                table.add_row(escape(name, ECHO_LIMIT), *(["—"] * len(METRICS)), f"[dim]not compared: {escape(reason, ECHO_LIMIT)}[/dim]")
        return table


def compare_models(
    reference: ModelLike,
    candidate: ModelLike,
    feeds: Sequence[Feeds] | Feeds,
    *,
    thresholds: Thresholds | str | Sequence[str] | None = None,
    providers: Sequence[str] | None = None,
    optimization: Optimization = "all",
    outputs: Sequence[str] | None = None,
    progress: bool = False,
    native: bool | None = None,
) -> ParityReport:
    """Run two models on the same feeds and compare their outputs.

    Args:
        reference: The reference model (path, bytes, ``onnx_ir.Model``, an ``OrtRunner`` or any object with
            its ``run``/``output_names``/``name``, such as a ``SegmentRunner``).
        candidate: The candidate model (same forms).
        feeds: One feed set or a sequence of them; each model takes the inputs it needs.
        thresholds: Pass/fail thresholds (object, text or list of texts; default
            :class:`Thresholds`).
        providers: ORT execution providers for both models (default CPU).
        optimization: ORT graph optimization level for both models.
        outputs: Compare only these outputs (each must exist in both models).
        progress: Show a progress bar.
        native: parekit's native kernels for both models (see :class:`~parekit.backends.ort.OrtRunner`;
            runners passed in keep their own).

    Returns:
        The report.

    Raises:
        ParityError: No feeds, no output in common, or a requested output is missing.
        DataError: A model lacks a feed or a feed does not fit.
        BackendError: A model does not load or run.
    """
    limits = Thresholds.coerce(thresholds)
    feed_sets = _feed_sets(feeds)
    ref = _runner(reference, providers, optimization, native)
    cand = _runner(candidate, providers, optimization, native)
    names, not_compared = _match_outputs(ref.output_names, cand.output_names, outputs)

    def pairs() -> Iterator[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]:
        for feed in _progress(feed_sets, progress, "comparing"):
            yield ref.run(feed, names), cand.run(with_start(cand, feed), names)

    report = _report(pairs(), names, not_compared, limits, len(feed_sets), ref.name, cand.name)
    report.native = {"reference": _native(ref), "candidate": _native(cand)}
    return report


def compare_to_golden(
    candidate: ModelLike,
    feeds: Sequence[Feeds] | Feeds,
    golden: str | os.PathLike[str] | Sequence[Feeds],
    thresholds: Thresholds | str | Sequence[str] | None = None,
    *,
    providers: Sequence[str] | None = None,
    optimization: Optimization = "all",
    outputs: Sequence[str] | None = None,
    progress: bool = False,
    native: bool | None = None,
) -> ParityReport:
    """Compare a model's outputs with stored golden outputs (see :func:`save_golden`).

    Args:
        candidate: The model to check.
        feeds: The feed sets the golden outputs were produced from, in the same order.
        golden: A golden ``.npz`` file or the loaded list of output sets.
        thresholds: Pass/fail thresholds.
        providers: ORT execution providers.
        optimization: ORT graph optimization level.
        outputs: Compare only these outputs.
        progress: Show a progress bar.
        native: parekit's native kernels (see :class:`~parekit.backends.ort.OrtRunner`).

    Returns:
        The report (the golden outputs play the reference).

    Raises:
        ParityError: The golden sets do not match the feeds in number or names, or nothing can
            be compared.
    """
    limits = Thresholds.coerce(thresholds)
    feed_sets = _feed_sets(feeds)
    ref_name = str(golden) if isinstance(golden, (str, os.PathLike)) else "golden outputs"
    golden_sets = load_golden(golden) if isinstance(golden, (str, os.PathLike)) else list(golden)
    if len(golden_sets) != len(feed_sets):
        raise ParityError(
            f"{ref_name} holds {len(golden_sets)} output sets but {len(feed_sets)} feed sets were given"
        )
    golden_names = list(golden_sets[0])
    for index, outs in enumerate(golden_sets):
        if set(outs) != set(golden_names):
            raise ParityError(f"{ref_name}: output set {index} has different outputs than set 0")
    cand = _runner(candidate, providers, optimization, native)
    names, not_compared = _match_outputs(golden_names, cand.output_names, outputs)

    def pairs() -> Iterator[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]:
        for feed, gold in zip(_progress(feed_sets, progress, "comparing"), golden_sets, strict=True):
            yield gold, cand.run(feed, names)

    report = _report(pairs(), names, not_compared, limits, len(feed_sets), ref_name, cand.name)
    report.native = {"reference": None, "candidate": _native(cand)}
    return report


def run_outputs(
    model: ModelLike,
    feeds: Sequence[Feeds] | Feeds,
    *,
    providers: Sequence[str] | None = None,
    optimization: Optimization = "all",
    outputs: Sequence[str] | None = None,
    progress: bool = False,
    native: bool | None = None,
) -> list[dict[str, np.ndarray]]:
    """Run a model over feed sets and return its outputs (e.g. to store as golden outputs).

    ``native``: parekit's native kernels (see :class:`~parekit.backends.ort.OrtRunner`).

    Returns:
        One dict of outputs per feed set.
    """
    runner = _runner(model, providers, optimization, native)
    return [runner.run(feed, outputs) for feed in _progress(_feed_sets(feeds), progress, "running")]


def save_golden(path: str | os.PathLike[str], outputs_list: Sequence[Feeds]) -> Path:
    """Store golden outputs (one mapping per feed set) as ``.npz`` with ``"<i>/<name>"`` keys."""
    if not outputs_list:
        raise ParityError("no golden outputs to save")
    return save_npz(path, list(outputs_list))


def load_golden(path: str | os.PathLike[str]) -> list[dict[str, np.ndarray]]:
    """Load golden outputs written by :func:`save_golden` (one dict per feed set).

    Raises:
        DataError: The file is missing or not a valid ``.npz``.
    """
    return load_npz(path)


# --------------------------------------------------------------------------------------------


def _report(
    pairs: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    names: list[str],
    not_compared: dict[str, list[str]],
    limits: Thresholds,
    feed_sets: int,
    ref_name: str,
    cand_name: str,
) -> ParityReport:
    accumulators = {name: MetricAccumulator() for name in names}
    for ref_out, cand_out in pairs:
        for name in names:
            accumulators[name].update(ref_out[name], cand_out[name])
    results = {name: acc.result() for name, acc in accumulators.items()}
    failures = [line for name in names for line in limits.check(name, results[name])]
    unknown = sorted(set(limits.per_output) - set(names))
    if unknown:
        logger.warning("thresholds name outputs that are not compared: %s", ", ".join(unknown))
    return ParityReport(
        passed=not failures,
        outputs=results,
        failures=failures,
        not_compared={k: v for k, v in not_compared.items() if v},
        thresholds={name: limits.for_output(name) for name in names},
        feed_sets=feed_sets,
        reference=ref_name,
        candidate=cand_name,
    )


def _match_outputs(
    ref_names: Sequence[str], cand_names: Sequence[str], wanted: Sequence[str] | None
) -> tuple[list[str], dict[str, list[str]]]:
    only_ref = [n for n in ref_names if n not in cand_names]
    only_cand = [n for n in cand_names if n not in ref_names]
    common = [n for n in ref_names if n in cand_names]
    if wanted is not None:
        missing = [n for n in wanted if n not in common]
        if missing:
            where = [
                f"'{n}' ({ONLY_IN_REFERENCE})"
                if n in only_ref
                else f"'{n}' ({ONLY_IN_CANDIDATE})"
                if n in only_cand
                else f"'{n}' (in neither)"
                for n in missing
            ]
            raise ParityError(
                f"cannot compare output {', '.join(where)}", note=f"common outputs: {', '.join(common)}"
            )
        common = list(wanted)
    if not common:
        raise ParityError(
            "reference and candidate have no output in common",
            note=f"reference outputs: {', '.join(ref_names)}; candidate outputs: {', '.join(cand_names)}",
        )
    return common, {ONLY_IN_REFERENCE: only_ref, ONLY_IN_CANDIDATE: only_cand}


def _feed_sets(feeds: Sequence[Feeds] | Feeds) -> list[Feeds]:
    sets = [feeds] if isinstance(feeds, Mapping) else list(feeds)
    if not sets:
        raise ParityError("no feed sets given")
    return sets


def _runner(
    model: ModelLike, providers: Sequence[str] | None, optimization: Optimization, native: bool | None
) -> OrtRunner:
    from parekit.backends.ort import OrtRunner

    if isinstance(model, OrtRunner) or callable(getattr(model, "run", None)):  # any runner (e.g. SegmentRunner)
        return model  # type: ignore[return-value]
    return OrtRunner(model, providers=providers, optimization=optimization, native=native)


def _native(runner: OrtRunner) -> str | None:
    library = getattr(runner, "native_library", None)
    return str(library) if library is not None else None


def _progress(items: Sequence[Feeds], enabled: bool, what: str) -> Iterator[Feeds]:
    if not enabled:
        yield from items
        return
    from parekit.progress import progress_bar

    with progress_bar() as bar:
        yield from bar.track(items, description=f"{what} {len(items)} feed sets")


def _cell(metric: str, value: Any, bound: float | None) -> str:
    if value is None:
        return "—"
    text = f"{float(value):.3g}"
    if bound is None:
        return f"[dim]{text}[/dim]"
    op = "≥" if metric in ("cosine", "cosine_min", "top1") else "≤"
    ok = Thresholds.passes(metric, float(value), bound)
    colour = "green" if ok else "red"
    return f"[{colour}]{text}[/{colour}] [dim]({op}{bound:.3g})[/dim]"


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else str(value)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
