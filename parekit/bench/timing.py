"""Latency and peak memory of ONNX models under ONNX Runtime, measured side by side.

Timing: all models are loaded in this process and run interleaved — each round runs every feed
set on every model in turn (A, B, A, B, …; the model that goes first rotates from round to
round), so slow drifts of a shared machine (other jobs, thermal state) hit all models alike.
Each run is timed with :func:`time.perf_counter` around ``InferenceSession.run`` (feeds are
checked once beforehand). ``ratio`` is the speed-up over the first model: its median latency
divided by this model's median.

Memory: each model is loaded and run once in a fresh child interpreter (``python -c``, like
``multiprocessing``'s spawn but without re-importing the caller's ``__main__``); its peak resident
set size minus its resident set size after importing numpy and onnxruntime is reported. On Linux
the peak is ``VmHWM`` (reset after the imports), because ``ru_maxrss`` is inherited across
fork+exec and would start at the parent's peak; elsewhere it is ``ru_maxrss``. This is a
process-level measure: it includes ORT's arenas, the weights and any copies made while loading,
not only the tensors of the model.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parekit.errors import BackendError, DataError, ParekitError

if TYPE_CHECKING:
    from rich.table import Table

logger = logging.getLogger(__name__)

__all__ = ["BenchReport", "ModelTiming", "bench_models"]

_MEMORY_TIMEOUT_S = 600.0


@dataclass
class ModelTiming:
    """Latency statistics (milliseconds) and peak memory of one model.

    Attributes:
        model: The model path.
        median_ms: Median latency of one run.
        p10_ms: 10th percentile latency.
        p90_ms: 90th percentile latency.
        mean_ms: Mean latency.
        ratio: Speed-up over the first model (its median / this median); 1.0 for the first.
        runs: How many timed runs the statistics cover.
        peak_rss_mib: Peak RSS of a child process loading and running the model once, minus its
            baseline after imports; ``None`` when not measured or the measurement failed.
        native: The native library its session registered (parekit ops with a kernel ran it), or
            ``None`` (function bodies).
    """

    model: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    ratio: float
    runs: int
    peak_rss_mib: float | None = None
    native: str | None = None


@dataclass
class BenchReport:
    """Latency and memory of several models measured together.

    Attributes:
        models: One entry per model, in the order given (the first is the baseline of ``ratio``).
        warmup: Untimed rounds run first.
        iters: Timed rounds.
        feed_sets: Feed sets per round.
        providers: ORT execution providers used.
        threads: Intra-op threads (``None``: ORT's default).
    """

    models: list[ModelTiming]
    warmup: int
    iters: int
    feed_sets: int
    providers: list[str] = field(default_factory=list)
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "warmup": self.warmup,
            "iters": self.iters,
            "feed_sets": self.feed_sets,
            "providers": list(self.providers),
            "threads": self.threads,
            "models": [asdict(m) for m in self.models],
        }

    def render(self) -> Table:
        """A rich table with one row per model."""
        from rich.table import Table

        from parekit.errors import ECHO_LIMIT, escape

        table = Table(
            title=f"latency over {self.iters} rounds × {self.feed_sets} feed sets "
            f"({', '.join(self.providers)}, threads={self.threads or 'default'})"
        )
        table.add_column("model", style="bold")
        for column in ("median ms", "p10 ms", "p90 ms", "mean ms", "speed-up", "peak RSS MiB"):
            table.add_column(column, justify="right")
        for m in self.models:
            memory = "—" if m.peak_rss_mib is None else f"{m.peak_rss_mib:.1f}"
            table.add_row(
                escape(m.model, ECHO_LIMIT),
                f"{m.median_ms:.3f}",
                f"{m.p10_ms:.3f}",
                f"{m.p90_ms:.3f}",
                f"{m.mean_ms:.3f}",
                f"{m.ratio:.2f}×",
                memory,
            )
        return table


def bench_models(
    models: Sequence[str | os.PathLike[str] | Any],
    feeds: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
    *,
    warmup: int = 3,
    iters: int = 20,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    measure_memory: bool = True,
    progress: bool = False,
    native: bool | None | Sequence[bool | None] = None,
) -> BenchReport:
    """Time models side by side (interleaved) and measure their peak memory.

    Args:
        models: Model files or runners (duck-typed ``OrtRunner``s such as ``SegmentRunner``: memory is measured
            from their ``child_spec``); the first is the baseline of ``ratio``.
        feeds: One feed set or several; every round runs each set on each model (each model
            takes the inputs it needs).
        warmup: Untimed rounds before timing.
        iters: Timed rounds.
        providers: ORT execution providers (default CPU).
        threads: Intra-op threads per session (``None``: ORT's default).
        measure_memory: Measure peak RSS per model in a child process.
        progress: Show a progress bar.
        native: parekit's native kernels (see :class:`~parekit.backends.ort.OrtRunner`), one setting for
            every model or one per model (a path may appear twice to time both forms side by side), for the timed
            sessions and the memory children alike.

    Returns:
        The report.

    Raises:
        DataError: No models or feeds, ``iters < 1``, or a feed does not fit a model.
        BackendError: A model does not load or run.
    """
    from parekit.backends.ort import OrtRunner

    if not models:
        raise DataError("no models to benchmark")
    feed_sets = [feeds] if isinstance(feeds, Mapping) else list(feeds)
    if not feed_sets:
        raise DataError("no feed sets to benchmark with")
    if iters < 1 or warmup < 0:
        raise DataError(f"bench needs iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")

    built: list[Any] = [m if callable(getattr(m, "run", None)) else None for m in models]  # runners given (duck-typed)
    paths = [str(Path(m)) if b is None else str(b.name) for m, b in zip(models, built, strict=True)]
    natives = list(native) if isinstance(native, Sequence) else [native] * len(paths)
    if len(natives) != len(paths):
        raise DataError(f"bench got {len(natives)} native settings for {len(paths)} models")
    runners: list[Any] = [
        OrtRunner(p, providers=providers, threads=threads, native=n) if b is None else b
        for p, n, b in zip(paths, natives, built, strict=True)
    ]
    prepared = [[r.prepare_feeds(f) for f in feed_sets] for r in runners]
    samples: list[list[float]] = [[] for _ in runners]

    rounds = warmup + iters
    bar = _progress_bar(progress, rounds, len(paths))
    try:
        for round_index in range(rounds):
            timed = round_index >= warmup
            for set_index in range(len(feed_sets)):
                for k in range(len(runners)):
                    i = (round_index + k) % len(runners)
                    elapsed = _run_once(runners[i], prepared[i][set_index])
                    if timed:
                        samples[i].append(elapsed)
            if bar is not None:
                bar[0].advance(bar[1])
    finally:
        if bar is not None:
            bar[0].stop()

    memory: list[float | None] = [None] * len(paths)
    if measure_memory:
        for i, path in enumerate(paths):
            library = runners[i].native_library
            spec = getattr(runners[i], "child_spec", None) if built[i] is not None else {"model": path}
            if spec is not None:
                memory[i] = _peak_rss_mib(spec, feed_sets[0], providers, threads, library is not None)

    base_median = statistics.median(samples[0])
    timings = []
    for path, times, mem, runner in zip(paths, samples, memory, runners, strict=True):
        ms = np.asarray(times) * 1e3
        median = float(np.median(ms))
        timings.append(
            ModelTiming(
                model=path,
                median_ms=median,
                p10_ms=float(np.percentile(ms, 10)),
                p90_ms=float(np.percentile(ms, 90)),
                mean_ms=float(ms.mean()),
                ratio=(base_median * 1e3) / median if median > 0 else float("inf"),
                runs=len(times),
                peak_rss_mib=mem,
                native=str(runner.native_library) if runner.native_library is not None else None,
            )
        )
    return BenchReport(
        models=timings,
        warmup=warmup,
        iters=iters,
        feed_sets=len(feed_sets),
        providers=list(runners[0].providers),
        threads=threads,
    )


def _run_once(runner: Any, feeds: dict[str, np.ndarray]) -> float:
    session = getattr(runner, "session", None)
    start = time.perf_counter()
    try:
        session.run(None, feeds) if session is not None else runner.run(feeds)  # else: segments, several sessions
    except ParekitError:
        raise
    except Exception as exc:
        raise BackendError(
            f"ONNX Runtime failed running {runner.name}: {' '.join(str(exc).split())}"
        ) from exc
    return time.perf_counter() - start


def _progress_bar(enabled: bool, rounds: int, n_models: int) -> tuple[Any, Any] | None:
    if not enabled:
        return None
    from parekit.progress import progress_bar

    bar = progress_bar()
    task = bar.add_task(f"timing {n_models} models", total=rounds)
    bar.start()
    return bar, task


# --------------------------------------------------------------------------------------------
# Peak memory, in a child process


def _peak_rss_mib(
    spec: dict[str, Any],
    feeds: Mapping[str, np.ndarray],
    providers: Sequence[str] | None,
    threads: int | None,
    native: bool,
) -> float | None:
    """Run :func:`_memory_main` in a fresh interpreter and read its answer.

    A plain ``python -c`` child is used rather than ``multiprocessing``'s spawn, which re-imports
    the caller's ``__main__`` (re-running unguarded scripts, failing under ``python -``). ``spec``: the
    ``model`` and, for other runners than ``OrtRunner``, a ``factory`` ("module:Class") and its ``options``.
    """
    path = str(spec["model"])
    with tempfile.TemporaryDirectory(prefix="parekit-bench-") as tmp:
        feeds_file = Path(tmp) / "feeds.npz"
        np.savez(feeds_file, **{k: np.asarray(v) for k, v in feeds.items()})  # type: ignore[arg-type]
        request = {
            **spec,
            "model": path,
            "feeds": str(feeds_file),
            "providers": list(providers or []),
            "threads": threads,
            "native": native,
        }
        command = [sys.executable, "-c", "from parekit.bench.timing import _memory_main; _memory_main()"]
        try:
            done = subprocess.run(
                [*command, json.dumps(request)],
                capture_output=True,
                text=True,
                timeout=_MEMORY_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("peak memory of %s not measured: %s", path, exc)
            return None
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        answer = {}
    if done.returncode != 0 or "peak_mib" not in answer:
        reason = answer.get("error") or " ".join(done.stderr.split()[-30:]) or f"exit code {done.returncode}"
        logger.warning("peak memory of %s not measured: %s", path, reason)
        return None
    return float(answer["peak_mib"])


def _memory_main() -> None:
    """Child process body: baseline after imports, then load and run the model once.

    Reads a JSON request from ``sys.argv[1]`` and prints one JSON line: ``{"peak_mib": …}`` or
    ``{"error": …}``.
    """
    import importlib

    import onnxruntime  # noqa: F401  (imported before the baseline on purpose)

    request = json.loads(sys.argv[1])
    try:
        with np.load(request["feeds"], allow_pickle=False) as archive:
            feeds = {key: archive[key] for key in archive.files}
        probe = _PeakProbe()
        module, _, name = str(request.get("factory") or "parekit.backends.ort:OrtRunner").partition(":")
        runner = getattr(importlib.import_module(module), name)(
            request["model"],
            providers=request["providers"] or None,
            threads=request["threads"],
            native=request["native"],
            **request.get("options", {}),
        )
        runner.run(feeds)
        peak_mib = probe.peak_mib()
    except Exception as exc:  # report, never hang the parent
        print(json.dumps({"error": " ".join(str(exc).split())}))
        return
    print(json.dumps({"peak_mib": peak_mib}))


class _PeakProbe:
    """Peak RSS growth of this process from now on, in MiB.

    On Linux, ``ru_maxrss`` survives ``fork``+``exec`` (a child starts with its parent's peak),
    so the per-address-space ``VmHWM`` of ``/proc/self/status`` is used instead, reset here
    through ``/proc/self/clear_refs`` so that transient peaks of the imports do not count.
    Elsewhere ``ru_maxrss`` is used.
    """

    def __init__(self) -> None:
        self._proc = _proc_status_kib("VmRSS") is not None
        if self._proc:
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")  # reset VmHWM to the current RSS
            except OSError:
                pass
            self._baseline = _proc_status_kib("VmRSS") or 0
        else:
            self._baseline = _ru_maxrss_kib()

    def peak_mib(self) -> float:
        """Peak RSS minus the baseline RSS, in MiB."""
        peak = (_proc_status_kib("VmHWM") or 0) if self._proc else _ru_maxrss_kib()
        return max(peak - self._baseline, 0) / 1024.0


def _ru_maxrss_kib() -> int:
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" else value  # bytes on macOS, KiB on Linux


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
