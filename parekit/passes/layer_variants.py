"""Layer-drop variants of one model, for the runtime's model drafters (``--speculate exit:L / skip:[...]``).

    load() ─► drop-layers{layers=S} ─► the model without layers S (the kept layers' past/present names kept)
    load() + calibration feeds ─► block influence of every layer (ShortGPT, as ``drop-layers{count=N}``)

The runtime may not import the passes (docs/design.md), so a caller that may (the CLI) builds this
object and hands it to :func:`parekit.runtime.drafters.make_drafter`; the runtime sees it only through
the ``LayerVariants`` protocol of :mod:`parekit.runtime.model_drafters`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from parekit.analysis import discover
from parekit.calibration import CalibrationSet
from parekit.passes.base import PassContext
from parekit.passes.drop_layers import block_influence
from parekit.passes.manager import run_pipeline

__all__ = ["LayerVariants"]


class LayerVariants:
    """A model and its layer-drop variants.

    Args:
        load: Returns a fresh copy of the model each call (variants rewrite it in place), e.g.
            ``lambda: parekit.frontends.onnx_file.load_model(path)``.
    """

    def __init__(self, load: Callable[[], ir.Model]) -> None:
        self._load = load
        first = load()
        self.num_layers: int = discover(first).num_layers
        self._spare: ir.Model | None = first

    def _fresh(self) -> ir.Model:
        model, self._spare = self._spare, None
        return model if model is not None else self._load()

    def without(self, layers: Sequence[int]) -> ir.Model:
        """The model without ``layers`` (``drop-layers{layers=[...]}``; the checker is left to the caller's load)."""
        model = self._fresh()
        pipeline = f"drop-layers{{layers=[{','.join(str(i) for i in sorted(layers))}]}}"
        return run_pipeline(model, pipeline, PassContext(), verify_each=False, input_verifier=None).model

    def influence(self, feeds: Sequence[Mapping[str, np.ndarray]], source: str = "feeds") -> list[float]:
        """ShortGPT block influence of every layer on ``feeds`` (prefill feed dicts; extra names are dropped)."""
        model = self._fresh()
        names = {v.name for v in model.graph.inputs}
        kept = [{k: np.asarray(v) for k, v in f.items() if k in names} for f in feeds]
        return block_influence(model, discover(model), CalibrationSet(feeds=kept, source=source))
