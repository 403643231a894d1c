"""ONNX Runtime backend: run a model, and verify that a rewritten model loads.

:class:`OrtRunner` wraps one ``InferenceSession`` with input specs read from the ONNX graph (so
symbolic dim names such as ``"batch"`` are kept) and feed checks that name what is wrong.
:func:`check_loads` (:mod:`parekit.backends.ort_check`) is the verifier run after each pass
(``--verify-each``); providers and session options are in :mod:`parekit.backends.ort_options`, model
serialization in :mod:`parekit.backends.ort_source`, the native custom-op library in
:mod:`parekit.backends.ort_native`. Their public names are importable from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parekit.backends.ort_check import check_loads
from parekit.backends.ort_native import register_native
from parekit.backends.ort_options import Optimization, resolve_providers, session_options
from parekit.backends.ort_source import PROTO_LIMIT_BYTES, describe, ort_source
from parekit.backends.specs import TensorSpec
from parekit.errors import BackendError, DataError, one_line

if TYPE_CHECKING:
    import onnx_ir as ir
    import onnxruntime

    ModelSource = str | os.PathLike[str] | bytes | ir.Model

logger = logging.getLogger(__name__)

__all__ = [
    "PROTO_LIMIT_BYTES",
    "Optimization",
    "OrtRunner",
    "check_loads",
    "register_native",
    "resolve_providers",
    "session_options",
]


class OrtRunner:
    """One ONNX Runtime session over a model, with checked feeds.

    Args:
        model: A path to an ``.onnx`` file, the serialized bytes of a model, or an
            :class:`onnx_ir.Model` (serialized in memory; saved to a temporary folder when its
            weights exceed :data:`PROTO_LIMIT_BYTES`).
        providers: Execution providers in priority order (full names or ``"cpu"``, ``"cuda"``,
            ``"tensorrt"``); default CPU.
        optimization: ORT graph optimization level.
        threads: Intra-op thread count; ``None`` lets ORT choose.
        native: parekit's native kernels (``libparekit_ort.so``): ``None`` = registered when built,
            else the ops' function bodies run; ``True`` = required; ``False`` = function bodies.

    Attributes:
        native_library: The library the session registered, or ``None`` (function bodies ran).

    Raises:
        BackendError: A provider is unavailable or did not load, or ORT rejects the model.
        NativeError: ``native=True`` without a built library, or ORT cannot load the library.
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        providers: Sequence[str] | None = None,
        optimization: Optimization = "all",
        threads: int | None = None,
        native: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        self.providers = resolve_providers(providers)
        options = session_options(optimization, threads)
        self.name = describe(model)
        self.native_library: Path | None = register_native(options, native)
        with ort_source(model, options) as (source, proto_inputs):
            try:
                self.session: onnxruntime.InferenceSession = ort.InferenceSession(
                    source, options, providers=self.providers
                )
            except Exception as exc:
                raise BackendError(f"ONNX Runtime cannot load {self.name}: {one_line(exc)}") from exc
            self._input_specs = _select_specs(proto_inputs, self.session)
        active = self.session.get_providers()
        missing = [p for p in self.providers if p not in active]
        if missing:
            raise BackendError(
                f"ONNX Runtime could not use execution provider {', '.join(missing)} for {self.name}",
                note=f"the session fell back to {', '.join(active)}; check the provider's libraries (CUDA, cuDNN, TensorRT)",
            )
        self._output_names = [o.name for o in self.session.get_outputs()]
        if self.native_library is not None:
            logger.info("%s: native library %s registered (parekit ops with a kernel run it)", self.name,
                        self.native_library)
        else:
            logger.info("%s: no native library (%s): parekit ops run as their function bodies", self.name,
                        "--no-native" if native is False else "not built")

    @property
    def input_specs(self) -> list[TensorSpec]:
        """The model's inputs (initializers excluded), with symbolic dims as named in the graph."""
        return list(self._input_specs)

    @property
    def input_names(self) -> list[str]:
        """The model's input names."""
        return [s.name for s in self._input_specs]

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in graph order."""
        return list(self._output_names)

    def prepare_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Select and check the feeds this model takes.

        Args:
            feeds: Arrays by input name; names the model does not take are ignored.

        Returns:
            The feeds for this model's inputs only.

        Raises:
            DataError: An input is missing, or an array's dtype, rank or a fixed dim does not match.
        """
        selected: dict[str, np.ndarray] = {}
        for spec in self._input_specs:
            if spec.name not in feeds:
                raise DataError(
                    f"{self.name}: no feed for input '{spec.name}'",
                    note=f"the model takes {', '.join(str(s) for s in self._input_specs)}",
                )
            array = np.asarray(feeds[spec.name])
            if array.dtype != spec.dtype:
                raise DataError(f"{self.name}: input '{spec.name}' expects {spec.dtype}, got {array.dtype}")
            if spec.shape is None:
                selected[spec.name] = array
                continue
            if array.ndim != len(spec.shape):
                raise DataError(
                    f"{self.name}: input '{spec.name}' expects rank {len(spec.shape)} "
                    f"{_dims_text(spec.shape)}, got shape {list(array.shape)}"
                )
            for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise DataError(
                        f"{self.name}: input '{spec.name}' expects size {want} on axis {axis}, "
                        f"got shape {list(array.shape)}"
                    )
            selected[spec.name] = array
        return selected

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model once.

        Args:
            feeds: Arrays by input name; names the model does not take are ignored.
            outputs: The outputs to fetch; default all.

        Returns:
            The fetched outputs by name.

        Raises:
            DataError: A feed is missing or mismatched, or an output name is unknown.
            BackendError: ONNX Runtime fails while running.
        """
        selected = self.prepare_feeds(feeds)
        names = list(outputs) if outputs is not None else self._output_names
        unknown = [n for n in names if n not in self._output_names]
        if unknown:
            raise DataError(
                f"{self.name}: no output named {', '.join(repr(n) for n in unknown)}",
                note=f"the model's outputs are {', '.join(self._output_names)}",
            )
        try:
            results = self.session.run(names, selected)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed running {self.name}: {one_line(exc)}") from exc
        return dict(zip(names, results, strict=True))


def _select_specs(graph_specs: list[TensorSpec], session: Any) -> list[TensorSpec]:
    """Keep the graph inputs ORT asks for (old models list initializers among the inputs)."""
    by_name = {s.name: s for s in graph_specs}
    specs = []
    for info in session.get_inputs():
        spec = by_name.get(info.name)
        if spec is None:
            spec = TensorSpec(info.name, _ort_dtype(info.type), tuple(info.shape))
        specs.append(spec)
    return specs


def _ort_dtype(type_str: str) -> np.dtype:
    mapping = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(int16)": np.int16,
        "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8,
        "tensor(bool)": np.bool_,
    }
    return np.dtype(mapping.get(type_str, np.float32))


def _dims_text(shape: tuple[object, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
