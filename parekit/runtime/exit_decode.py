"""Per-token exits in decoders (batch 1): each decode step runs as many layers as a policy says.

    step(token) ─► stage 0 ─► … ─► stage k ─► head ─► logits         (k: the policy's exit)
                                      └──► fill k ─► K/V of layers after cut k (state propagation)

:class:`ExitSession` runs the kv-fill pieces of a decoder (:mod:`parekit.segments.kv_fill`) behind the
interface of :class:`~parekit.runtime.decoder.DecoderSession` (``step``, ``empty_state``,
``last_step_s``), so :func:`~parekit.runtime.generate.generate` and
:func:`~parekit.runtime.evaluate.evaluate_perplexity` drive it unchanged. The prefill (a step whose
``past*`` arrays are empty) always runs the full model; decode step ``i = 1, 2, …`` after it exits
by the policy:

- ``full``: every layer (the pieces in sequence: equal to the full model).
- ``d3:ALPHA[:MIN]`` (D³): ``max(MIN, ⌊L·ALPHAⁱ⌋)`` layers, rounded up to the next cut so that no token
  runs fewer layers than the schedule; ``ALPHA = 1``: the full model every token.
- ``gate:THRESH[:MIN]`` (CALM): at each cut of at least ``MIN`` layers, in order, the head on the stream
  and the softmax margin ``p1 - p2`` of its last position (part 1's ``ExitGate`` margin); the first cut
  whose margin ``≥ THRESH`` is the exit. Every checked cut costs one head (final norm + LM head);
  ``THRESH > 1`` never exits. ``gate:calibrated[:MIN]``: each exit's own threshold, the one part 1's
  ``early-exit`` pass calibrated (``budget=``) or was given, for exits with the margin signal.

Every layer's present grows by one entry per step, whatever the exit: the layers after the exit get
the K/V of the exited state. All pieces' sessions share one copy of the weights
(``SessionOptions.add_initializer`` with the same ``OrtValue``; ORT's weight prepacking is disabled for
that, since packed copies are per session). Each piece has its own ORT thread pool that does not spin,
unless :func:`use_global_threads` gave the process one pool (faster; see there).
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parekit.errors import BackendError, DataError, OptionError, echo, one_line
from parekit.runtime.decoder import PAST_PREFIX, PRESENT_PREFIX, START_INPUT, State, empty_state
from parekit.runtime.exit_policy import ExitPolicy, margin, parse_policy
from parekit.runtime.generate import Generation, generate
from parekit.runtime.sampling import SamplingOptions

__all__ = [
    "ExitGeneration",
    "ExitPolicy",
    "ExitSession",
    "exit_generate",
    "margin",
    "parse_policy",
    "use_global_threads",
]

_GLOBAL_THREADS: list[int] = []
"""The size of the process-wide ORT thread pool, once :func:`use_global_threads` made one."""


def use_global_threads(threads: int) -> None:
    """Run every later :class:`ExitSession` of this process on one process-wide ORT thread pool.

    With a pool per piece, pools must not spin (each would hold the cores the next piece needs), and
    waking them costs time on every step; one shared pool may spin. Process-wide: call it before any ONNX
    Runtime session exists, and create no other ORT session afterwards (ORT then refuses sessions with
    their own pool, e.g. a :class:`~parekit.runtime.decoder.DecoderSession`).

    Raises:
        BackendError: ONNX Runtime refuses (a session already exists, or ``threads < 1``).
    """
    from onnxruntime.capi import _pybind_state

    if _GLOBAL_THREADS:
        return
    try:
        _pybind_state.set_global_thread_pool_sizes(threads, 1)
    except Exception as exc:
        raise BackendError(f"ONNX Runtime cannot make a global thread pool of {threads}: {one_line(exc)}") from exc
    _GLOBAL_THREADS.append(threads)


class ExitSession:
    """A decoder run as kv-fill pieces under an exit policy, step by step (batch 1).

    Args:
        model: The decoder: a path to an ``.onnx`` file or a loaded ``onnx.ModelProto`` (weights inline
            or loaded).
        policy: The policy, or its text (:func:`parse_policy`).
        every: Exits after every ``every`` layers (and the last); ignored when ``cuts`` is given. Default:
            at the model's own exits (part 1's ``early-exit``, adapters included) if it has any, else
            every 2 layers. Where the model has an exit at a cut, that exit's head gives the logits there;
            elsewhere the model's own head on the stream (the logit lens).
        cuts: Layers after which an exit is possible (0-based).
        threads: ORT intra-op threads per piece session.
        providers: ORT execution providers (default CPU).
        native: parekit's native kernels, as for :class:`~parekit.backends.ort.OrtRunner`.
        prepack: Let ORT prepack MatMul weights (faster on CPU, but each session keeps its own packed
            copy of the weights it runs: about 2x the model's weight memory); default: one shared copy.

    Attributes:
        metadata: The model's metadata properties.
        depths: Layers run by every decode step since the last prefill.
        last_step_s: Time of the last step (all its pieces).

    Raises:
        OptionError: Bad policy or cuts.
        StructureError: Not a decoder the pieces can be cut from.
        BackendError: ONNX Runtime rejects a piece.
    """

    def __init__(
        self,
        model: str | Path | Any,
        policy: ExitPolicy | str = "full",
        *,
        every: int | None = None,
        cuts: Sequence[int] | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        native: bool | None = None,
        prepack: bool = False,
    ) -> None:
        import onnx

        from parekit.analysis import discover
        from parekit.backends.specs import specs_from_proto_values
        from parekit.segments.kv_fill import build_pieces, cuts_every, exit_layers, weights

        self.policy = parse_policy(policy) if isinstance(policy, str) else policy
        proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
        source = str(model) if isinstance(model, (str, Path)) else (proto.graph.name or "model")
        self.name = f"{source} --exit {self.policy.text}"
        if any(v.name == START_INPUT for v in proto.graph.input):
            raise OptionError(
                f"{self.name}: the model takes the '{START_INPUT}' reset input (state-reset), which the kv-fill "
                "pieces do not follow",
                note="run --exit on the model as it was before the state-reset pass",
            )
        mm = _structure(proto, discover)
        own = exit_layers(proto)
        if cuts is not None:
            chosen = tuple(cuts)
        elif every is None and own:
            chosen = own
        else:
            chosen = cuts_every(mm.num_layers, every or 2)
        self.pieces = build_pieces(proto, mm, chosen)
        self.num_layers = mm.num_layers
        self.state_specs = [s for s in specs_from_proto_values(proto.graph.input) if s.name.startswith(PAST_PREFIX)]
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        self.has_position_ids = any(v.name == "position_ids" for v in proto.graph.input)
        self._arrays = weights(proto)
        del proto
        self._dir = tempfile.TemporaryDirectory(prefix="parekit-kvfill-", ignore_cleanup_errors=True)
        self._check_policy()
        self._sessions = self._load(threads, providers, native, prepack)
        self.depths: list[int] = []
        self.last_step_s = 0.0
        self._step_index = 0

    def _threshold(self, cut: int) -> float:
        if not self.policy.calibrated:
            return self.policy.threshold
        return self._calibrated.get(cut, math.inf)  # a cut without a calibrated gate never exits

    def _check_policy(self) -> None:
        from parekit.segments.kv_fill import calibrated_thresholds

        self._calibrated = calibrated_thresholds(self.metadata)
        if self.policy.calibrated and not set(self._calibrated) & set(self.pieces.cuts):
            raise OptionError(
                f"--exit {self.policy.text}: the model has no early-exit gate with the margin signal at its cuts",
                note='make one: parekit optimize M --passes "early-exit{layers=[..],head=adapter,budget=...}" --calib text',
            )

    def with_policy(self, policy: ExitPolicy | str) -> ExitSession:
        """The same pieces and sessions (no second copy of anything) under another policy.

        Raises:
            OptionError: A bad policy.
        """
        other = copy.copy(self)
        other.policy = parse_policy(policy) if isinstance(policy, str) else policy
        other.name = f"{self.name.rsplit(' --exit ', 1)[0]} --exit {other.policy.text}"
        other.depths = []
        other._step_index = 0
        other._check_policy()
        return other

    def _load(
        self, threads: int | None, providers: Sequence[str] | None, native: bool | None, prepack: bool
    ) -> dict[int, Any]:
        import onnxruntime as ort

        from parekit.backends.ort_native import register_native
        from parekit.backends.ort_options import resolve_providers, session_options
        from parekit.segments.kv_fill import WEIGHTS_FILE

        folder = Path(self._dir.name)
        with open(folder / WEIGHTS_FILE, "wb") as f:  # the same bytes ORT would read if it read the file
            for name, (offset, _size) in self.pieces.offsets.items():
                f.seek(offset)
                f.write(np.ascontiguousarray(self._arrays[name]).tobytes())
        self._values = {n: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for n, a in self._arrays.items()}
        resolved = resolve_providers(providers)
        sessions: dict[int, Any] = {}
        self.native_library: str | None = None
        for piece in self.pieces.pieces:
            options = session_options("all", None if _GLOBAL_THREADS else threads)
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
            if not prepack:
                options.add_session_config_entry("session.disable_prepacking", "1")
            if _GLOBAL_THREADS:  # one pool for every piece: it may spin, nothing else holds the cores
                options.use_per_session_threads = False
            else:  # a pool per piece, one after another: a spinning pool holds the cores the next one needs
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            library = register_native(options, native)
            self.native_library = str(library) if library is not None else None
            for init in piece.proto.graph.initializer:
                if init.name in self._values:
                    options.add_initializer(init.name, self._values[init.name])
            try:
                sessions[id(piece)] = ort.InferenceSession(piece.proto.SerializeToString(), options,
                                                           providers=resolved)
            except Exception as exc:
                raise BackendError(f"ONNX Runtime cannot load kv-fill piece {piece.kind} {piece.index}: "
                                   f"{one_line(exc)}") from exc
        return sessions

    def empty_state(self, batch: int) -> State:
        """The ``past*`` feeds of a prefill: empty tensors from the graph's input specs."""
        return empty_state(self.state_specs, batch, self.name)

    def _run(self, piece: Any, values: dict[str, Any]) -> dict[str, np.ndarray]:
        missing = [name for name in piece.inputs if name not in values]
        if missing:
            raise DataError(f"{self.name}: no feed for input '{echo(missing[0])}' of kv-fill piece {piece.kind} "
                            f"{piece.index}")
        feeds = {name: values[name] for name in piece.inputs}
        try:
            out = self._sessions[id(piece)].run(list(piece.outputs), feeds)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed running kv-fill piece {piece.kind} {piece.index}: "
                               f"{one_line(exc)}") from exc
        return dict(zip(piece.outputs, out, strict=True))

    def step(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        state: Mapping[str, np.ndarray],
    ) -> tuple[np.ndarray, State]:
        """One step as :meth:`DecoderSession.step`; a decode step exits where the policy says.

        Raises:
            DataError: A batch of more than one row, or a feed without a name the model takes.
        """
        if input_ids.shape[0] != 1:
            raise DataError(f"--exit decodes one row at a time (batch 1), got a batch of {input_ids.shape[0]}")
        prefill = all(a.size == 0 for a in state.values())
        self._step_index = 0 if prefill else self._step_index + 1
        if prefill:
            self.depths = []
        values: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, **state}
        if self.has_position_ids:
            values["position_ids"] = position_ids
        p = self.pieces
        target = self.policy.schedule(self._step_index, self.num_layers) if not prefill else self.num_layers
        checks = not prefill and self.policy.kind == "gate"
        start = time.perf_counter()
        values.update(self._run(p.prelude, values))
        fetched: dict[str, np.ndarray] = {}
        logits = np.empty(0)
        depth = 0
        for k, stage in enumerate(p.stages):
            fetched.update(self._run(stage, values))
            values[p.streams[k]] = fetched[p.streams[k]]
            depth = p.cuts[k] + 1
            if k == len(p.stages) - 1:
                logits = self._head(values, k)
                break
            if prefill or depth < (self.policy.min_layers if checks else target):
                continue
            logits = self._head(values, k)
            if checks and margin(logits[0, -1]) < self._threshold(p.cuts[k]):
                continue
            fetched.update(self._run(p.fills[k], values))
            break
        self.last_step_s = time.perf_counter() - start
        if not prefill:
            self.depths.append(depth)
        nxt = {PAST_PREFIX + name[len(PRESENT_PREFIX):]: fetched[name] for kv in p.presents for name in kv}
        return logits, nxt

    def _head(self, values: dict[str, Any], k: int) -> np.ndarray:
        """Logits at cut ``k``: the model's exit there (adapter included) or its own head on the stream."""
        own = self.pieces.exit_heads.get(k)
        if own is not None and k < len(self.pieces.stages) - 1:
            return self._run(own, values)[own.outputs[0]]
        head = self.pieces.head
        feeds = {**values, head.inputs[-1]: values[self.pieces.streams[k]]}
        return self._run(head, feeds)[self.pieces.logits]


def _structure(proto: Any, discover: Any) -> Any:
    import onnx_ir as ir

    return discover(ir.serde.deserialize_model(proto))


@dataclass
class ExitGeneration(Generation):
    """:class:`Generation` plus the layers each decode step ran."""

    depths: list[int] = field(default_factory=list)
    num_layers: int = 0

    @property
    def mean_depth(self) -> float:
        """Mean layers per decode step (the prefill's full pass excluded; ``nan`` without decode steps)."""
        return float(np.mean(self.depths)) if self.depths else float("nan")


def exit_generate(
    session: ExitSession,
    prompt: Sequence[int],
    max_new_tokens: int,
    *,
    sampling: SamplingOptions | None = None,
    eos_id: int | None = None,
) -> ExitGeneration:
    """Generate for one prompt with per-token exits (the loop of :func:`generate`).

    Raises:
        DataError: Empty prompt or ``max_new_tokens < 1``.
    """
    result = generate(session, [prompt], max_new_tokens, sampling=sampling, eos_id=eos_id)  # type: ignore[arg-type]
    return ExitGeneration(**result.__dict__, depths=list(session.depths), num_layers=session.num_layers)
