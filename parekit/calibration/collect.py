"""Run chosen intermediate values of a model over calibration feeds.

A pass that needs statistics (which layers matter, which tokens receive attention, value ranges)
names the values it wants; :func:`collect` adds them as extra graph outputs, builds an ONNX Runtime
session from the model as it is then (serialized), removes the extra outputs again, and yields the
arrays one feed at a time, so statistics can be accumulated without holding every activation. The
model the pass is rewriting ends exactly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from parekit.analysis.lookup import values_by_name
from parekit.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class CalibrationSet:
    """Feeds a pass may run the model on, and where they came from (for reports).

    Attributes:
        feeds: one dict of input arrays per run (model inputs by name).
        source: short description, e.g. ``"text: 64 paragraphs of pydoc_data.topics, 8x128"``.
        providers: ONNX Runtime providers to run calibration with (default CPU).
    """

    feeds: list[dict[str, np.ndarray]]
    source: str = "feeds"
    providers: Sequence[str] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.feeds:
            raise DataError(f"calibration set '{self.source}' has no feeds")


def collect(
    model: ir.Model,
    values: Sequence[str],
    calibration: CalibrationSet,
) -> Iterator[tuple[Mapping[str, np.ndarray], dict[str, np.ndarray]]]:
    """Yield ``(feed, {value name: array})`` for every calibration feed.

    Args:
        model: the model to observe (not modified).
        values: names of values to expose: graph inputs, intermediate values or outputs.
        calibration: the feeds to run.

    Raises:
        DataError: a named value does not exist in the main graph.
    """
    from parekit.backends.ort import OrtRunner  # calibration runs through a backend

    by_name = values_by_name(model.graph)
    missing = [n for n in values if n not in by_name]
    if missing:
        raise DataError(f"calibration: value(s) {', '.join(repr(m) for m in missing)} not found in the main graph")
    existing = {v.name for v in model.graph.outputs}
    added = [by_name[n] for n in dict.fromkeys(values) if n not in existing and not by_name[n].is_graph_input()]
    model.graph.outputs.extend(added)
    try:
        runner = OrtRunner(model, providers=calibration.providers)
    finally:
        for v in added:
            model.graph.outputs.remove(v)
    wanted = [n for n in values if not by_name[n].is_graph_input()]
    for feed in calibration.feeds:
        outs = runner.run(feed, outputs=wanted) if wanted else {}
        result = {n: (outs[n] if n in outs else np.asarray(feed[n])) for n in values}
        yield feed, result
