"""Triton Python-backend model: a stateless ONNX model (an encoder) run with ONNX Runtime.

Written into a model repository by ``parekit export triton --backend python``; it runs ``model.onnx``
beside this file. The inputs and outputs are the ones ``config.pbtxt`` declares (the graph's own). Triton
hands the Python backend the requests of a dynamic batch one by one; requests whose inputs have equal
shapes past the batch dim run as one ONNX Runtime call and are split again afterwards.

Needs NumPy and ``onnxruntime`` in the backend's Python environment (``pip install onnxruntime`` in the
server image, or an execution environment: docs/serving.md).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def make_session(args: dict[str, Any], config: dict[str, Any]) -> Any:
    """The ONNX Runtime session of the model file beside this model version."""
    folder = os.path.join(args["model_repository"], str(args["model_version"]))
    name = config.get("default_model_filename") or "model.onnx"
    if name.endswith(".py"):  # the Python backend's own default file name: the ONNX model is beside it
        name = "model.onnx"
    path = os.path.join(folder, name)
    options = ort.SessionOptions()
    threads = int(config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value", "0") or 0)
    if threads > 0:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def error_response(message: str) -> Any:
    """A response that carries only an error (Triton sends it to the client as a failed request)."""
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


class TritonPythonModel:
    """One model instance: an ONNX Runtime session and the config's tensor names."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.session = make_session(args, config)
        self.inputs = [entry["name"] for entry in config.get("input", [])]
        self.outputs = [entry["name"] for entry in config.get("output", [])]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            feeds = {}
            for name in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is None:
                    responses[index] = error_response(f"input '{name}' is missing")
                    break
                feeds[name] = tensor.as_numpy()
            else:
                key = tuple((n, a.dtype.str, a.shape[1:] if self.batched else a.shape) for n, a in feeds.items())
                groups.setdefault(key, []).append((index, feeds))
        for members in groups.values():
            self._run_group(members, responses)
        return responses

    def _run_group(self, members: list[tuple[int, dict[str, np.ndarray]]], responses: list[Any]) -> None:
        if self.batched and len(members) > 1:
            feeds = {n: np.concatenate([m[1][n] for m in members]) for n in self.inputs}
            sizes = [next(iter(m[1].values())).shape[0] for m in members]
            try:
                results = self.session.run(self.outputs, feeds)
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
                for index, _ in members:
                    responses[index] = error_response(f"ONNX Runtime: {exc}")
                return
            start = 0
            for (index, _), size in zip(members, sizes):
                parts = [r[start:start + size] for r in results]
                responses[index] = self._response(parts)
                start += size
            return
        for index, feeds in members:
            try:
                responses[index] = self._response(self.session.run(self.outputs, feeds))
            except Exception as exc:  # noqa: BLE001 - reported to the client, the server goes on
                responses[index] = error_response(f"ONNX Runtime: {exc}")

    def _response(self, arrays: list[np.ndarray]) -> Any:
        tensors = [pb_utils.Tensor(name, np.ascontiguousarray(a)) for name, a in zip(self.outputs, arrays)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        self.session = None
