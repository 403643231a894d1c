"""Run a segments directory segment by segment, stopping the rows whose exit fired.

:class:`SegmentRunner` has the interface of :class:`~parekit.backends.ort.OrtRunner` that parity and
bench use (``name``, ``providers``, ``native_library``, ``input_specs``, ``input_names``,
``output_names``, ``prepare_feeds``, ``run``), so ``parekit check`` and ``parekit bench`` take a
segments directory wherever they take a model.

Per-row exits (``exits=True``): after a segment that ends at an exit, the rows whose ``take`` fired
(a ``[B]`` take; for a decoder's ``[B, S]`` take, the row's last token) stop. Their final outputs are
the exit's outputs (``<out>.exit<l>`` rows copied into ``<out>``); later segments run on the
remaining rows only — every ``batch_axis = 0`` input is gathered to those rows, other inputs pass
unchanged — and their results are scattered back in row order. Outputs that only later segments
compute and that have no exit version (a decoder's present KV of later layers) do not exist for a row
that exited: :attr:`SegmentRunner.output_names` leaves them out, and asking for them when a row exited
is an error. ``exits=False`` runs every segment on every row: the exact recombination of the source.
A model whose batch dim is static records no batch axis: its rows cannot be dropped, so its exits are
ignored (logged) and every segment runs on every row.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from parekit.errors import DataError, ModelLoadError, echo
from parekit.segments.manifest import Manifest, SegmentEntry, read_manifest

if TYPE_CHECKING:
    from pathlib import Path

    from parekit.backends.ort import Optimization
    from parekit.backends.specs import TensorSpec

logger = logging.getLogger(__name__)

__all__ = ["SegmentRunner"]

_Held = tuple[np.ndarray, "np.ndarray | None"]  # an array and the batch rows it holds (None: not per row)


class SegmentRunner:
    """The segments of a directory written by ``parekit split``, run in order under ONNX Runtime.

    Args:
        directory: The segments directory.
        providers: Execution providers for every segment (see :class:`~parekit.backends.ort.OrtRunner`).
        threads: Intra-op threads per segment session.
        native: parekit's native kernels (see :class:`~parekit.backends.ort.OrtRunner`).
        optimization: ORT graph optimization level.
        exits: Stop rows whose exit fired (per-row exits); ``False`` runs every segment on every row.

    Attributes:
        manifest: The validated manifest.
        exits: Whether exits stop rows.
        last_exit_layers: After :meth:`run`: per row, the layer it exited at, or ``None`` (full model).
        last_segment_ms: After :meth:`run`: per segment, its run time in ms (``None``: not run).
        last_segment_rows: After :meth:`run`: per segment, the rows it ran on.

    Raises:
        ModelLoadError: The directory or its manifest is invalid, or a segment file does not match it.
        BackendError: ONNX Runtime cannot load a segment.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        native: bool | None = None,
        optimization: Optimization = "all",
        exits: bool = True,
    ) -> None:
        from parekit.backends.ort import OrtRunner

        self.manifest: Manifest = read_manifest(directory)
        self.name = os.fspath(directory)
        self.exits = exits
        self.runners = [
            OrtRunner(self.manifest.path(e), providers=providers, threads=threads, native=native,
                      optimization=optimization)
            for e in self.manifest.segments
        ]
        for k, (entry, runner) in enumerate(zip(self.manifest.segments, self.runners, strict=True)):
            _check_io(self.name, k, entry, runner.input_names, runner.output_names)
        self.providers = self.runners[0].providers
        self.native_library: Path | None = self.runners[0].native_library
        self._feeds = self.manifest.feeds()
        specs = {s.name: s for r in reversed(self.runners) for s in r.input_specs}
        self._specs = [specs[io.name] for io in self._feeds]
        self._producer: dict[str, int] = {}
        self._axis: dict[str, int | None] = {}
        for k, entry in enumerate(self.manifest.segments):
            for io in entry.outputs:
                self._producer.setdefault(io.name, k)
                self._axis.setdefault(io.name, io.batch_axis)
        self._later_reads = [
            {io.name for later in self.manifest.segments[k + 1 :] for io in later.inputs}
            for k in range(len(self.manifest.segments))
        ]
        self.last_exit_layers: list[int | None] = []
        self.last_segment_ms: list[float | None] = []
        self.last_segment_rows: list[int] = []

    # ------------------------------------------------------------------------------------------
    # the OrtRunner interface

    @property
    def input_specs(self) -> list[TensorSpec]:
        """The source model's inputs (the feeds), as the segments declare them."""
        return list(self._specs)

    @property
    def input_names(self) -> list[str]:
        """The source model's input names."""
        return [s.name for s in self._specs]

    @property
    def output_names(self) -> list[str]:
        """The outputs every row gets: with exits on, those computed before the first exit and those with
        an exit version at every exit; else all the source model's outputs."""
        active = self._active_exits()
        if not active:
            return list(self.manifest.outputs)
        first = min(k for k, _ in active)
        everywhere = set.intersection(*(set(e["outputs"]) for _, e in active))
        return [n for n in self.manifest.outputs if self._producer[n] <= first or n in everywhere]

    @property
    def child_spec(self) -> dict[str, Any]:
        """How ``parekit bench`` rebuilds this runner in its memory-measuring child process."""
        return {"model": self.name, "factory": "parekit.segments.runner:SegmentRunner", "options": {"exits": self.exits}}

    @property
    def all_output_names(self) -> list[str]:
        """Every output of the source model (some may not exist for rows that exited)."""
        return list(self.manifest.outputs)

    def prepare_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Select and check the feeds the segments take (as :meth:`OrtRunner.prepare_feeds`).

        Raises:
            DataError: An input is missing, or an array's dtype, rank or a fixed dim does not match.
        """
        selected: dict[str, np.ndarray] = {}
        for spec in self._specs:
            if spec.name not in feeds:
                raise DataError(f"{self.name}: no feed for input '{spec.name}'",
                                note=f"the segments take {', '.join(str(s) for s in self._specs)}")
            array = np.asarray(feeds[spec.name])
            if array.dtype != spec.dtype:
                raise DataError(f"{self.name}: input '{spec.name}' expects {spec.dtype}, got {array.dtype}")
            if spec.shape is not None:
                fixed_ok = array.ndim == len(spec.shape) and all(
                    not isinstance(want, int) or want == got for want, got in zip(spec.shape, array.shape, strict=True)
                )
                if not fixed_ok:
                    raise DataError(f"{self.name}: input '{spec.name}' does not fit {spec}: got shape {list(array.shape)}")
            selected[spec.name] = array
        return selected

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the segments once.

        Args:
            feeds: Arrays by input name; names the segments do not take are ignored.
            outputs: The outputs to fetch; default :attr:`output_names`.

        Returns:
            The fetched outputs by name, rows in the feeds' order.

        Raises:
            DataError: A feed is missing or mismatched, an output name is unknown, or a requested output
                does not exist for a row that exited.
            BackendError: ONNX Runtime fails running a segment.
        """
        wanted = list(outputs) if outputs is not None else self.output_names
        unknown = [n for n in wanted if n not in self._producer]
        if unknown:
            raise DataError(f"{self.name}: no output named {', '.join(repr(n) for n in unknown)}",
                            note=f"the segments' outputs are {', '.join(self.manifest.outputs)}")
        selected = self.prepare_feeds(feeds)
        batch = next((selected[io.name].shape[0] for io in self._feeds
                      if io.batch_axis == 0 and selected[io.name].ndim > 0), None)
        compact = batch is not None
        everyone = np.arange(batch or 0)
        env: dict[str, _Held] = {
            io.name: (selected[io.name], everyone if compact and io.batch_axis == 0 else None) for io in self._feeds
        }
        live = everyone
        results: dict[str, np.ndarray] = {}
        active = dict(self._active_exits())
        count = len(self.runners)
        self.last_segment_ms, self.last_segment_rows = [None] * count, [0] * count
        self.last_exit_layers = [None] * (batch or 0)
        for k, (entry, runner) in enumerate(zip(self.manifest.segments, self.runners, strict=True)):
            if compact and live.size == 0:
                break
            fetch = [io.name for io in entry.outputs
                     if io.name in self._later_reads[k] or io.name in wanted
                     or (k in active and io.name in _exit_names(active[k]))]
            if not fetch:
                continue
            seg_feeds = {io.name: _rows(env[io.name], live if compact and io.batch_axis == 0 else None)
                         for io in entry.inputs}
            start = time.perf_counter()
            got = runner.run(seg_feeds, fetch)
            self.last_segment_ms[k] = (time.perf_counter() - start) * 1e3
            self.last_segment_rows[k] = int(live.size) if compact else (batch or 0)
            for name, array in got.items():
                env[name] = (array, live if compact and self._axis[name] == 0 else None)
                if name in wanted:
                    self._store(results, name, array, live if compact else None, batch)
            if k in active and compact:
                live = self._exit(k, active[k], got, live, wanted, results, batch)
            elif k in active:
                logger.info("%s: no batch axis recorded: exits cannot drop rows here", self.name)
        return {n: results[n] for n in wanted}

    # ------------------------------------------------------------------------------------------

    def _active_exits(self) -> list[tuple[int, dict[str, Any]]]:
        if not self.exits:
            return []
        return [(k, e.exit) for k, e in enumerate(self.manifest.segments) if e.exit is not None]

    def _exit(self, k: int, exit_: dict[str, Any], got: dict[str, np.ndarray], live: np.ndarray, wanted: list[str],
              results: dict[str, np.ndarray], batch: int | None) -> np.ndarray:
        """Stop the rows whose take fired after segment ``k``; returns the rows still running."""
        take = np.asarray(got[exit_["take"]]).astype(bool)
        if take.ndim == 2:
            take = take[:, -1]  # a decoder's per-token decision: the row's last token
        if take.ndim != 1 or take.shape[0] != live.size:
            raise DataError(f"{self.name}: exit {exit_['layer']}'s take '{echo(exit_['take'])}' has shape "
                            f"{list(take.shape)}, expected [{live.size}] or [{live.size}, S]")
        fired = live[take]
        if fired.size == 0:
            return live
        layer = int(exit_["layer"])
        lacking = [n for n in wanted if self._producer[n] > k and n not in exit_["outputs"]]
        if lacking:
            shown = _listed(lacking, 6)
            what = (f"the present KV of the layers after it ({shown}) is not computed for them: per-token exits "
                    "that fill the skipped layers' KV are part 2" if self.manifest.kind == "decoder"
                    else f"output(s) {shown} have no exit version at that layer")
            raise DataError(
                f"{self.name}: row(s) {fired.tolist()[:8]} exited at layer {layer}, so {what}",
                note=f"ask only for the outputs every row gets ({_listed(self.output_names)}), or run with exits "
                "off (--no-exits)",
            )
        for out, exit_name in exit_["outputs"].items():
            if out in wanted:
                self._store(results, out, np.asarray(got[exit_name])[take], fired, batch)
        for row in fired.tolist():
            self.last_exit_layers[row] = layer
        return live[~take]

    def _store(self, results: dict[str, np.ndarray], name: str, array: np.ndarray, rows: np.ndarray | None,
               batch: int | None) -> None:
        if rows is None or self._axis.get(name) != 0 or batch is None:
            results[name] = array
            return
        held = results.get(name)
        if held is None:
            held = results[name] = np.zeros((batch, *array.shape[1:]), array.dtype)
        if held.shape[1:] != array.shape[1:] or held.dtype != array.dtype:
            raise DataError(f"{self.name}: output '{name}' has shape {list(array.shape)} {array.dtype} for some rows "
                            f"and {list(held.shape)} {held.dtype} for others")
        held[rows] = array


def _rows(held: _Held, live: np.ndarray | None) -> np.ndarray:
    """The rows ``live`` of a held array (which holds the batch rows ``held[1]``)."""
    array, rows = held
    if live is None or rows is None or (rows.size == live.size and np.array_equal(rows, live)):
        return array
    return array[np.searchsorted(rows, live)]


def _listed(names: Sequence[str], most: int = 12) -> str:
    return ", ".join(names[:most]) + (f" … ({len(names)} in all)" if len(names) > most else "")


def _exit_names(exit_: dict[str, Any]) -> list[str]:
    return [exit_["take"], exit_["score"], *exit_["outputs"].values()]


def _check_io(name: str, k: int, entry: SegmentEntry, inputs: list[str], outputs: list[str]) -> None:
    want_in = {io.name for io in entry.inputs}
    want_out = {io.name for io in entry.outputs}
    if want_in != set(inputs) or not want_out <= set(outputs):
        raise ModelLoadError(
            f"{echo(name)}: {entry.file} does not match the manifest's segment {k}",
            note=f"manifest inputs {sorted(want_in)[:8]}, file inputs {sorted(inputs)[:8]}",
        )
