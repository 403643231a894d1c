"""Capture a torch ``nn.Module`` or ``torch.export.ExportedProgram`` as an ``onnx_ir.Model``.

Uses the torch.export-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``), which returns
an ``ONNXProgram`` whose ``.model`` already is an ``onnx_ir.Model``: no protobuf round trip.
torch is an optional dependency (extra ``samples``), imported lazily. The exporter's third-party
warnings and log lines go to this module's logger at DEBUG (:mod:`parekit.frontends.export_log`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import onnx_ir as ir

from parekit.errors import MissingExtraError, ModelLoadError
from parekit.frontends.export_log import third_party_to_debug

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
SUPPORTED_OPSETS = (18, 23)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError("torch", "samples", "capturing a torch model") from exc
    return torch


def capture(
    module: Any,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    dynamic_shapes: Any = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
) -> ir.Model:
    """Export ``module`` (an ``nn.Module`` or ``ExportedProgram``) to an ``onnx_ir.Model``.

    Args:
        module: the model to capture; an ``ExportedProgram`` is exported as is.
        args: positional example inputs.
        kwargs: keyword example inputs.
        dynamic_shapes: ``torch.export`` dynamic shape specification (dims named by strings or
            ``torch.export.Dim``); named dims become the symbolic dim names of the ONNX graph.
        input_names: names for the graph inputs, in order.
        output_names: names for the graph outputs, in order.
        opset: 18 (attention decomposed into MatMul/Softmax) or 23 (native ``Attention``,
            ``RotaryEmbedding``, ``RMSNormalization``).

    Returns:
        The captured model with node names and exporter metadata (module paths) preserved.

    Raises:
        ModelLoadError: the exporter failed; the message carries its first line.
    """
    torch = _import_torch()
    if opset not in SUPPORTED_OPSETS:
        raise ModelLoadError(f"opset {opset} is not supported by the torch frontend", note="use 18 or 23")
    try:
        with third_party_to_debug(logger):  # exporter warnings and log lines: under -vv, not on the terminal
            program = torch.onnx.export(
                module,
                args,
                kwargs=dict(kwargs or {}),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                input_names=list(input_names) if input_names else None,
                output_names=list(output_names) if output_names else None,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # first line only
        raise ModelLoadError(f"torch export of {type(module).__name__} failed: {first}") from exc
    model: ir.Model = program.model
    return model
