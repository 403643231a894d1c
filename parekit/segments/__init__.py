"""Models cut into segments at chosen layers (the ``segments`` form of early exit).

- :func:`~parekit.segments.split.split_model`: cut a model after chosen blocks (default: its exits);
- :mod:`~parekit.segments.manifest`: the segments directory (``manifest.json`` + ``segment<k>.onnx``),
  written atomically and validated on read;
- :class:`~parekit.segments.runner.SegmentRunner`: run the segments in order, stopping the rows whose
  exit fired and compacting the batch for the later segments;
- :func:`~parekit.segments.kv_fill.build_pieces`: the ``kv-fill`` form for per-token exits in decoders
  (stage, fill and head pieces; :class:`~parekit.runtime.exit_decode.ExitSession` runs them).

Names are imported on first use, so that importing the runner does not load onnx-ir.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EXITS_KEY",
    "KvFillPieces",
    "Manifest",
    "Segment",
    "SegmentIO",
    "SegmentPlan",
    "SegmentRunner",
    "build_pieces",
    "read_exits",
    "read_manifest",
    "split_model",
    "write_segments",
]

_HOME = {
    "EXITS_KEY": "split",
    "Segment": "split",
    "SegmentPlan": "split",
    "read_exits": "split",
    "split_model": "split",
    "Manifest": "manifest",
    "SegmentIO": "manifest",
    "read_manifest": "manifest",
    "write_segments": "manifest",
    "SegmentRunner": "runner",
    "KvFillPieces": "kv_fill",
    "build_pieces": "kv_fill",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'parekit.segments' has no attribute {name!r}")
    return getattr(importlib.import_module(f"parekit.segments.{home}"), name)
