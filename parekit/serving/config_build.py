"""Build the ``inference.ModelConfig`` message of one exported model, from its graph signature.

Three shapes of config (docs/serving.md):

* **encoder** (any backend): the graph's inputs and outputs with the batch dim folded into
  ``max_batch_size`` (``-1`` for every other dynamic axis), dynamic batching with a preferred batch
  size and a queue delay, instance groups.
* **decoder, python backend**: the ``model.py`` keeps each sequence's state; the config has
  ``input_ids`` in, ``next_token`` (greedy) and ``logits`` (last position) out, and a sequence batcher
  with START / END / CORRID controls.
* **decoder, onnxruntime / tensorrt backends**: Triton keeps the state (*implicit state*): one
  ``state`` entry per ``past``/``present`` pair, a zero initial state, the START control wired to the
  graph's ``start`` input (the ``state-reset`` pass), the ``oldest`` strategy.

Decoders run with ``max_batch_size: 1``: sequences of different lengths carry KV states of different
shapes, which Triton cannot stack into one batch. ``max_batch`` is then the number of sequences the
batcher keeps in flight (``max_candidate_sequences``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parekit.backends.specs import TensorSpec
from parekit.errors import ParekitError
from parekit.serving.model_config import load_schema, triton_dtype
from parekit.serving.signature import Signature, logits_output

__all__ = ["BACKENDS", "ConfigRequest", "build_config", "DECODER_IO"]

BACKENDS = ("onnxruntime", "tensorrt", "python")

DECODER_IO = {"input": "input_ids", "next_token": "next_token", "logits": "logits",
              "start": "START", "end": "END", "corrid": "CORRID"}
"""Tensor names of the python-backend decoder's interface (its ``model.py`` keeps the state)."""

_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}
_KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclass(frozen=True)
class ConfigRequest:
    """The knobs of one config.

    Attributes:
        name: The model's name in the repository (and in ``config.pbtxt``).
        backend: ``onnxruntime``, ``tensorrt`` or ``python``.
        max_batch: Encoders: ``max_batch_size`` (0: no batch dim folded, dims keep axis 0 as ``-1``).
            Decoders: sequences kept in flight per instance (``max_candidate_sequences``).
        instances: Model instances (``instance_group.count``).
        device: ``auto``, ``cpu`` or ``gpu`` (the instance kind).
        queue_delay_us: Encoders' dynamic batching delay; decoders' ``oldest`` strategy delay.
        idle_us: Decoders: ``max_sequence_idle_microseconds`` (a sequence idle this long is ended).
        threads: ONNX Runtime intra-op threads of each instance (0: ORT's default), as the
            ``intra_op_thread_count`` parameter (onnxruntime and python backends).
    """

    name: str
    backend: str
    max_batch: int
    instances: int = 1
    device: str = "auto"
    queue_delay_us: int = 500
    idle_us: int = 60_000_000
    threads: int = 0


def _dims(spec: TensorSpec, fold_batch: bool) -> list[int]:
    shape = list(spec.shape or ())
    if fold_batch:
        shape = shape[1:]
    return [d if isinstance(d, int) else -1 for d in shape]


def _add_io(entries: Any, spec: TensorSpec, fold_batch: bool, name: str | None = None,
            dims: list[int] | None = None) -> None:
    entry = entries.add()
    entry.name = name or spec.name
    entry.data_type = load_schema().DataType.Value(triton_dtype(spec.dtype, spec.name))
    entry.dims.extend(_dims(spec, fold_batch) if dims is None else dims)


def build_config(sig: Signature, req: ConfigRequest) -> Any:
    """The ``ModelConfig`` message of ``sig`` served with ``req``.

    Raises:
        ParekitError: The request does not fit the model (unknown backend or device, a batch dim that
            cannot be folded, a GPU-only backend asked for CPU instances, an implicit-state decoder
            without the ``start`` input).
    """
    if req.backend not in BACKENDS:
        raise ParekitError(f"unknown Triton backend {req.backend!r}; choose one of {', '.join(BACKENDS)}")
    if req.device not in _KINDS:
        raise ParekitError(f"unknown instance device {req.device!r}; choose auto, cpu or gpu")
    if req.backend == "tensorrt" and req.device == "cpu":
        raise ParekitError("the tensorrt backend runs on GPUs only: --device cpu cannot be used with it")
    if req.instances < 1 or req.max_batch < 0:
        raise ParekitError("instances must be ≥ 1 and max batch ≥ 0")
    schema = load_schema()
    cfg = schema.ModelConfig()
    cfg.name = req.name
    cfg.backend = req.backend
    if req.backend != "python":
        cfg.default_model_filename = _FILES[req.backend]
    group = cfg.instance_group.add()
    group.count = req.instances
    kind = req.device if req.backend != "tensorrt" else "gpu"
    group.kind = schema.ModelInstanceGroup.Kind.Value(_KINDS[kind])
    if sig.kind == "encoder":
        _encoder(cfg, sig, req)
    elif req.backend == "python":
        _python_decoder(cfg, sig, req)
    else:
        _implicit_state_decoder(cfg, sig, req)
    if req.threads > 0 and req.backend in ("python", "onnxruntime"):
        # the name Triton's onnxruntime backend reads; parekit's model.py reads the same one
        cfg.parameters["intra_op_thread_count"].string_value = str(req.threads)
    return cfg


def _encoder(cfg: Any, sig: Signature, req: ConfigRequest) -> None:
    fold = req.max_batch > 0
    if fold and sig.batch_dim is None:
        firsts = ", ".join(f"{s.name}[0]={s.shape[0] if s.shape else '?'}" for s in sig.inputs + sig.outputs)
        raise ParekitError(f"{sig.name}: axis 0 is not one symbolic batch dim on every input and output ({firsts}), "
                           "so Triton cannot batch requests", note="export with --max-batch 0 (dims then keep axis 0)")
    cfg.max_batch_size = req.max_batch
    for spec in sig.inputs:
        _add_io(cfg.input, spec, fold)
    for spec in sig.outputs:
        _add_io(cfg.output, spec, fold)
    if fold:
        cfg.dynamic_batching.preferred_batch_size.append(req.max_batch)
        cfg.dynamic_batching.max_queue_delay_microseconds = req.queue_delay_us


def _controls(seq: Any, start: str, end: str | None, corrid: str | None) -> None:
    schema = load_schema()
    kinds = schema.ModelSequenceBatching.Control.Kind
    for name, kind in ((start, "CONTROL_SEQUENCE_START"), (end, "CONTROL_SEQUENCE_END")):
        if name is None:
            continue
        entry = seq.control_input.add()
        entry.name = name
        control = entry.control.add()
        control.kind = kinds.Value(kind)
        control.bool_false_true.extend([False, True])
    if corrid is not None:
        entry = seq.control_input.add()
        entry.name = corrid
        control = entry.control.add()
        control.kind = kinds.Value("CONTROL_SEQUENCE_CORRID")
        control.data_type = schema.DataType.Value("TYPE_UINT64")


def _sequence(cfg: Any, req: ConfigRequest) -> Any:
    if req.max_batch < 1:
        raise ParekitError("a decoder needs --max-batch ≥ 1 (the sequences kept in flight per instance)")
    cfg.max_batch_size = 1
    seq = cfg.sequence_batching
    seq.max_sequence_idle_microseconds = req.idle_us
    seq.oldest.max_candidate_sequences = req.max_batch
    seq.oldest.max_queue_delay_microseconds = req.queue_delay_us
    return seq


def _python_decoder(cfg: Any, sig: Signature, req: ConfigRequest) -> None:
    seq = _sequence(cfg, req)
    _controls(seq, DECODER_IO["start"], DECODER_IO["end"], DECODER_IO["corrid"])
    ids = next(s for s in sig.inputs if s.name == "input_ids")
    _add_io(cfg.input, ids, True, DECODER_IO["input"], dims=[-1])
    logits = logits_output(sig)
    vocab = logits.shape[-1] if logits.shape and isinstance(logits.shape[-1], int) else -1
    _add_io(cfg.output, ids, True, DECODER_IO["next_token"], dims=[1])
    _add_io(cfg.output, logits, True, DECODER_IO["logits"], dims=[vocab])


def _implicit_state_decoder(cfg: Any, sig: Signature, req: ConfigRequest) -> None:
    if sig.start is None:
        raise ParekitError(f"{sig.name}: Triton's implicit state needs the graph to empty its past on START, "
                           "and this model has no 'start' input", note="run the state-reset pass first "
                           "(parekit optimize MODEL --passes state-reset)")
    if sig.batch_dim is None:
        raise ParekitError(f"{sig.name}: axis 0 is not one symbolic batch dim on every input, output and state, "
                           "so Triton's sequence batcher cannot feed it")
    seq = _sequence(cfg, req)
    _controls(seq, sig.start.name, None, None)
    schema = load_schema()
    for past, present in sig.states:
        state = seq.state.add()
        state.input_name = past.name
        state.output_name = present.name
        state.data_type = schema.DataType.Value(triton_dtype(past.dtype, past.name))
        state.dims.extend(_dims(past, True))
        init = state.initial_state.add()
        init.name = "empty"
        init.data_type = state.data_type
        # The graph slices every dynamic dim to 0 on START (state-reset), so one zero row stands in
        # for the contract's empty past: Triton needs concrete initial dims.
        init.dims.extend([d if d >= 0 else 1 for d in _dims(past, True)])
        init.zero_data = True
    for spec in sig.inputs:
        _add_io(cfg.input, spec, True)
    for spec in sig.outputs:
        _add_io(cfg.output, spec, True)
