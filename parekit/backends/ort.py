"""ONNX Runtime backend: run a model, and verify that a rewritten model loads.

:class:`OrtRunner` wraps one ``InferenceSession`` with input specs read from the ONNX graph (so
symbolic dim names such as ``"batch"`` are kept) and feed checks that name what is wrong.
:func:`check_loads` is the verifier run after each pass (``--verify-each``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from parekit.backends.specs import TensorSpec, specs_from_ir_values, specs_from_proto_values
from parekit.errors import BackendError, DataError, VerificationError, one_line

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir
    import onnxruntime

    ModelSource = str | os.PathLike[str] | bytes | ir.Model

logger = logging.getLogger(__name__)

__all__ = ["Optimization", "OrtRunner", "check_loads", "resolve_providers"]

Optimization = Literal["all", "basic", "extended", "disabled"]

PROTO_LIMIT_BYTES = int(1.8 * 2**30)
"""In-memory models with more initializer bytes than this are saved to a temporary folder first."""

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
_GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """Turn provider names (full ORT names or short aliases like ``"cuda"``) into ORT names.

    Args:
        providers: The requested providers in priority order; ``None`` means CPU only.

    Returns:
        The full provider names.

    Raises:
        BackendError: A provider is not available in this onnxruntime build.
    """
    import onnxruntime as ort

    if not providers:
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    resolved = []
    for name in providers:
        full = _PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            note = f"available providers: {', '.join(available)}"
            if full in _GPU_PROVIDERS:
                note += "; for CUDA/TensorRT install the GPU build: pip install 'parekit[gpu]'"
            raise BackendError(f"ONNX Runtime execution provider '{full}' is not available", note=note)
        resolved.append(full)
    return resolved


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

    Raises:
        BackendError: A provider is unavailable or did not load, or ORT rejects the model.
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        providers: Sequence[str] | None = None,
        optimization: Optimization = "all",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.providers = resolve_providers(providers)
        options = session_options(optimization, threads)
        self.name = _describe(model)
        with _ort_source(model, options) as (source, proto_inputs):
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


def check_loads(model: ir.Model, *, optimization: Optimization = "basic") -> None:
    """Verify a model: the full ONNX checker, then an ONNX Runtime (CPU) session.

    Models whose weights exceed :data:`PROTO_LIMIT_BYTES`, or that read external data, are
    checked by path from a temporary copy.

    Args:
        model: The model to verify.
        optimization: ORT optimization level used for the test session (``"basic"`` also runs
            constant folding, which catches more type errors than ``"disabled"``).

    Raises:
        VerificationError: The checker or ORT rejects the model; the message is one line.
    """
    import onnx
    import onnxruntime as ort

    options = session_options(optimization, None)
    with _serialized(model, options) as (source, proto):
        try:
            onnx.checker.check_model(_checkable(proto) if proto is not None else source, full_check=True)
        except Exception as exc:
            raise VerificationError(
                f"model '{_model_name(model)}' fails the ONNX checker: {one_line(exc)}"
            ) from exc
        try:
            ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise VerificationError(
                f"model '{_model_name(model)}' does not load in ONNX Runtime: {one_line(exc)}"
            ) from exc


def _checkable(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` that the checker can take from memory.

    The checker resolves external data relative to a model *path*, which an in-memory proto does
    not have; external initializers are turned into graph inputs of the same type and shape for
    the check (their files were checked at load time and ORT reads them right after).
    """
    import onnx

    graph = proto.graph
    external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    names = {t.name for t in external}
    kept = [t for t in copy.graph.initializer if t.name not in names]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    input_names = {i.name for i in copy.graph.input}
    for tensor in external:
        if tensor.name not in input_names:
            copy.graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )
    return copy


def session_options(optimization: Optimization, threads: int | None) -> onnxruntime.SessionOptions:
    """ORT session options for an optimization level and thread count.

    Raises:
        BackendError: The optimization level is not one of all/basic/extended/disabled.
    """
    import onnxruntime as ort

    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    if optimization not in levels:
        raise BackendError(
            f"unknown ONNX Runtime optimization level '{optimization}'",
            note=f"choose one of {', '.join(levels)}",
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


# --------------------------------------------------------------------------------------------
# Model sources


@contextlib.contextmanager
def _ort_source(
    model: ModelSource, options: onnxruntime.SessionOptions
) -> Iterator[tuple[str | bytes, list[TensorSpec]]]:
    """Yield what ``InferenceSession`` takes (a path or bytes) and the graph's input specs."""
    import onnx

    if isinstance(model, bytes):
        try:
            proto = onnx.load_model_from_string(model)
        except Exception as exc:
            raise BackendError(f"the model bytes are not a valid ONNX model: {one_line(exc)}") from exc
        yield model, specs_from_proto_values(proto.graph.input)
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise BackendError(f"{path}: no such model file")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise BackendError(f"{path}: not a valid ONNX model: {one_line(exc)}") from exc
        yield str(path), specs_from_proto_values(proto.graph.input)
    else:
        specs = specs_from_ir_values(model.graph.inputs)
        with _serialized(model, options) as (source, _proto):
            yield source, specs


@contextlib.contextmanager
def _serialized(
    model: ir.Model, options: onnxruntime.SessionOptions
) -> Iterator[tuple[str | bytes, onnx.ModelProto | None]]:
    """Yield the model as bytes (with its proto), or as a path in a temporary folder if too large.

    Bytes are used when the inline weights fit in a protobuf and external tensors (if any) all
    live in one folder (``options`` then tells ORT that folder); otherwise the model is saved
    with external data to a temporary folder that is removed afterwards.
    """
    import onnx_ir as ir

    from parekit.backends.save import loadable_ir_version, save_model

    folders = _external_folders(model)
    if _inline_bytes(model) <= PROTO_LIMIT_BYTES and len(folders) <= 1:
        if folders:
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", next(iter(folders))
            )
        with loadable_ir_version(model):
            proto = ir.to_proto(model)
        yield proto.SerializeToString(), proto
        return
    with tempfile.TemporaryDirectory(prefix="parekit-", ignore_cleanup_errors=True) as tmp:
        path = save_model(model, Path(tmp) / "model.onnx", external_data=True)
        logger.debug("serialized %s to %s for ONNX Runtime", _model_name(model), path)
        yield str(path), None


def _external_folders(model: ir.Model) -> set[str]:
    import onnx_ir as ir

    return {
        os.fspath(v.const_value.base_dir)
        for g in model.graphs()
        for v in g.initializers.values()
        if isinstance(v.const_value, ir.ExternalTensor)
    }


def _inline_bytes(model: ir.Model) -> int:
    import onnx_ir as ir

    return sum(
        v.const_value.nbytes
        for g in model.graphs()
        for v in g.initializers.values()
        if v.const_value is not None and not isinstance(v.const_value, ir.ExternalTensor)
    )


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


def _describe(model: ModelSource) -> str:
    if isinstance(model, bytes):
        return "<model bytes>"
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return f"model '{_model_name(model)}'"


def _model_name(model: ir.Model) -> str:
    return model.graph.name or "main_graph"


def _dims_text(shape: tuple[object, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


