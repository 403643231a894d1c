"""Triton Python-backend model: a decoder under parekit's KV I/O contract, one state per sequence.

Written into a model repository by ``parekit export triton --backend python``; it runs ``model.onnx``
beside this file with ONNX Runtime. Triton's sequence batcher sends each request with three controls:
``START`` (a new sequence), ``END`` (its last request) and ``CORRID`` (its correlation id). This model
keeps, per correlation id, what the contract carries between steps: every ``present<suffix>`` output,
fed back as ``past<suffix>``, and the count of tokens seen, from which it builds ``attention_mask``
(all tokens so far plus the new ones) and ``position_ids`` (absolute positions of the new tokens). A
graph adapted by the ``state-reset`` pass gets its ``start`` input too.

Request: ``input_ids`` ``[1, n]`` (the prompt at START, then one token a step, or several).
Response: ``next_token`` ``[1, 1]`` (greedy: the arg-max of the last position's logits) and ``logits``
``[1, vocab]`` (the last position's logits, for sampling on the client).

Triton routes every request of a sequence to the same model instance, so each instance's table holds
whole sequences. A sequence that stays idle past the config's ``max_sequence_idle_microseconds`` is
dropped from the table too (Triton has already released its slot; a later request gets an error).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
          "tensor(bool)": np.bool_}


def make_session(args: dict[str, Any], config: dict[str, Any]) -> Any:
    """The ONNX Runtime session of ``model.onnx`` beside this model version."""
    path = os.path.join(args["model_repository"], str(args["model_version"]), "model.onnx")
    options = ort.SessionOptions()
    threads = int(config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value", "0") or 0)
    if threads > 0:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class _Refused(Exception):
    """A request this model answers with an error (the server goes on)."""


class _Sequence:
    __slots__ = ("state", "seen", "touched")

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.seen = 0
        self.touched = time.monotonic()


class TritonPythonModel:
    """One model instance: an ONNX Runtime session and the state of the sequences routed to it."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.session = make_session(args, config)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        self.past = [i for name, i in inputs.items() if name.startswith("past")]
        self.feedback = {"present" + i.name[len("past"):]: i.name for i in self.past}
        missing = [p for p in self.feedback if p not in outputs]
        if missing or "input_ids" not in inputs or "attention_mask" not in inputs:
            raise pb_utils.TritonModelException("model.onnx does not follow parekit's KV I/O contract")
        self.ids_dtype = _NUMPY.get(inputs["input_ids"].type, np.int64)
        self.mask_dtype = _NUMPY.get(inputs["attention_mask"].type, np.int64)
        self.positions = inputs.get("position_ids")
        self.has_start = "start" in inputs
        plain = [o for o in outputs if o not in self.feedback]
        self.logits = "logits" if "logits" in plain else plain[0]
        self.fetch = [self.logits, *self.feedback]
        seq = config.get("sequence_batching", {})
        self.idle_s = int(seq.get("max_sequence_idle_microseconds", 0) or 0) / 1e6
        self.sequences: dict[int, _Sequence] = {}

    def _empty(self) -> dict[str, np.ndarray]:
        """The contract's empty past: batch 1, every other symbolic dim 0, fixed dims as declared."""
        state: dict[str, np.ndarray] = {}
        for spec in self.past:
            dims = [d if isinstance(d, int) else 0 for d in spec.shape]
            if dims and not isinstance(spec.shape[0], int):
                dims[0] = 1
            state[spec.name] = np.zeros(dims, dtype=_NUMPY.get(spec.type, np.float32))
        return state

    def execute(self, requests: list[Any]) -> list[Any]:
        now = time.monotonic()
        if self.idle_s > 0:
            for corrid in [c for c, s in self.sequences.items() if now - s.touched > self.idle_s]:
                del self.sequences[corrid]
        responses = []
        for request in requests:
            try:
                responses.append(self._step(request))
            except _Refused as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime failures go back to the client
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"ONNX Runtime: {exc}")))
        return responses

    @staticmethod
    def _input(request: Any, name: str) -> np.ndarray:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise _Refused(f"input '{name}' is missing (send sequence requests: sequence_id, sequence_start, sequence_end)")
        return np.asarray(tensor.as_numpy())

    def _step(self, request: Any) -> Any:
        ids: np.ndarray = self._input(request, "input_ids").astype(self.ids_dtype, copy=False)
        if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] < 1:
            raise _Refused(f"input_ids must be [1, n] with n ≥ 1, got {list(ids.shape)}")
        start = bool(self._input(request, "START").reshape(-1)[0])
        end = bool(self._input(request, "END").reshape(-1)[0])
        corrid = int(self._input(request, "CORRID").reshape(-1)[0])
        if start:
            self.sequences[corrid] = _Sequence(self._empty())
        seq = self.sequences.get(corrid)
        if seq is None:
            raise _Refused(f"sequence {corrid} was not started, or has ended or timed out")
        n = ids.shape[1]
        feeds = dict(seq.state)
        feeds["input_ids"] = ids
        feeds["attention_mask"] = np.ones((1, seq.seen + n), dtype=self.mask_dtype)
        if self.positions is not None:
            feeds["position_ids"] = np.arange(seq.seen, seq.seen + n, dtype=_NUMPY.get(self.positions.type, np.int64))[None]
        if self.has_start:
            feeds["start"] = np.full((1, 1), seq.seen == 0)
        results = self.session.run(self.fetch, feeds)
        last = np.ascontiguousarray(results[0][:, -1, :], dtype=np.float32)
        seq.state = {self.feedback[name]: value for name, value in zip(self.fetch[1:], results[1:])}
        seq.seen += n
        seq.touched = time.monotonic()
        if end:
            del self.sequences[corrid]
        token = np.argmax(last, axis=-1).astype(np.int64).reshape(1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("next_token", token),
                                                          pb_utils.Tensor("logits", last)])

    def finalize(self) -> None:
        self.sequences.clear()
        self.session = None
