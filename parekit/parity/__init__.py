"""Is it still right: output parity between a reference and a candidate model.

- :func:`compare_models` / :func:`compare_to_golden` run models under ONNX Runtime and return a
  :class:`ParityReport`, judged by :class:`Thresholds`;
- :mod:`parekit.parity.metrics` holds the array metrics;
- :mod:`parekit.parity.data` makes seeded random feeds; :mod:`parekit.parity.npz` reads and writes
  ``.npz`` files of feeds and goldens.

``prose_paragraphs`` (:mod:`parekit.data`) and ``int_input_bounds`` (:mod:`parekit.analysis.input_bounds`)
are re-exported for earlier callers.
"""

from parekit.analysis.input_bounds import int_input_bounds
from parekit.data.prose import prose_paragraphs
from parekit.parity.check import (
    ParityReport,
    compare_models,
    compare_to_golden,
    load_golden,
    run_outputs,
    save_golden,
)
from parekit.parity.data import DEFAULT_DIMS, random_feeds
from parekit.parity.metrics import METRICS, MetricAccumulator, compare_arrays
from parekit.parity.npz import load_feeds_npz, load_npz, save_npz
from parekit.parity.thresholds import DEFAULT_THRESHOLDS, Thresholds

__all__ = [
    "DEFAULT_DIMS",
    "DEFAULT_THRESHOLDS",
    "METRICS",
    "MetricAccumulator",
    "ParityReport",
    "Thresholds",
    "compare_arrays",
    "compare_models",
    "compare_to_golden",
    "int_input_bounds",
    "load_feeds_npz",
    "load_golden",
    "load_npz",
    "prose_paragraphs",
    "random_feeds",
    "run_outputs",
    "save_golden",
    "save_npz",
]
