"""Serving: export optimized models as NVIDIA Triton Inference Server model repositories.

``export_triton`` writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/`` (the ONNX model, a TensorRT
plan, or a Python-backend ``model.py`` beside the ONNX model) for encoders (stateless, dynamic batching)
and decoders under the KV I/O contract (a sequence batcher; the state kept by ``model.py`` or, for the
onnxruntime and tensorrt backends, by Triton itself as implicit state). Every config is built as
Triton's own protobuf message and validated offline against the graph (``validate_repository``). See
docs/serving.md.
"""

from parekit.serving.export import ExportRequest, export_triton
from parekit.serving.validate import validate_model_dir, validate_repository

__all__ = ["ExportRequest", "export_triton", "validate_model_dir", "validate_repository"]
