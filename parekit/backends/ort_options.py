"""ONNX Runtime settings: execution providers by short name, and session options.

Shared by :class:`~parekit.backends.ort.OrtRunner` and the verifier
(:func:`~parekit.backends.ort_check.check_loads`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from parekit.errors import BackendError

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["Optimization", "resolve_providers", "session_options"]

Optimization = Literal["all", "basic", "extended", "disabled"]

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
