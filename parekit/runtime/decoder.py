"""One decoder step under the I/O contract, compression-agnostic.

    input_ids [B, S] ───────────┐
    attention_mask [B, T] ──────┤           ┌──► logits [B, S, V]
    position_ids [B, S] ────────┼──► model ─┤
    past<suffix> (any dtype) ───┘           └──► present<suffix> ──► fed back as past<suffix>

The contract (README, "Decoder I/O contract"): every output ``present<suffix>`` is fed back as the input
``past<suffix>`` unchanged (same dtype, whatever its shape: KV tensors, quantization scales, scores);
``attention_mask`` covers all tokens seen so far plus the new ones; ``position_ids`` are absolute. At
prefill each ``past*`` input is an empty tensor built from the graph's input spec: the batch dim (axis
0) is the batch size, every other symbolic dim is 0, fixed dims are as declared.

One optional rule: a BOOL input named ``start`` (:data:`START_INPUT`, the ``state-reset`` pass's default)
``[B, 1]`` is fed true on the step whose past is the empty state (the prefill) and false after. Such a model
empties its own past when ``start`` is true, which is how Triton's implicit state restarts a sequence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from parekit.backends.kv_contract import START_INPUT, is_empty_state, start_feeds
from parekit.errors import BackendError, DataError, ParekitError, one_line

if TYPE_CHECKING:
    from parekit.backends.ort import ModelSource, OrtRunner
    from parekit.backends.specs import TensorSpec

__all__ = [
    "PAST_PREFIX",
    "PRESENT_PREFIX",
    "START_INPUT",
    "DecoderSession",
    "State",
    "empty_state",
    "is_empty_state",
    "left_pad",
    "check_start_input",
    "start_feeds",
    "state_nbytes",
]

logger = logging.getLogger(__name__)

PAST_PREFIX = "past"
PRESENT_PREFIX = "present"
"""The optional control input: BOOL ``[B, 1]``, true when the past is the empty state (equal to the
``state-reset`` pass's default name; the runtime may not import passes, a test keeps them equal)."""

State = dict[str, np.ndarray]
"""Everything fed back between steps: ``past<suffix>`` → array."""


def state_nbytes(state: Mapping[str, np.ndarray]) -> int:
    """Bytes the cache carries across the graph boundary (all ``past*`` arrays)."""
    return int(sum(a.nbytes for a in state.values()))


class DecoderSession:
    """A decoder model that follows the I/O contract, run step by step under ONNX Runtime.

    Args:
        model: Model path, bytes, ``onnx_ir.Model``, or an existing :class:`OrtRunner`.
        providers: ORT execution providers (default CPU).
        threads: ORT intra-op threads (``None``: ORT's default).
        native: parekit's native kernels (``None``: when built; see :class:`OrtRunner`); ignored when
            ``model`` is a runner.

    Raises:
        ParekitError: The model does not follow the contract (no ``input_ids``/``attention_mask``
            input, no logits output, a ``past*`` input without its ``present*`` output).
    """

    def __init__(
        self,
        model: ModelSource | OrtRunner,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        native: bool | None = None,
    ) -> None:
        from parekit.backends.ort import OrtRunner

        self.runner = (
            model
            if isinstance(model, OrtRunner)
            else OrtRunner(model, providers=providers, threads=threads, native=native)
        )
        self.name = self.runner.name
        library = self.runner.native_library
        self.native_library: str | None = str(library) if library is not None else None
        """The native library the session registered, or ``None`` (function bodies)."""
        specs = {s.name: s for s in self.runner.input_specs}
        outputs = self.runner.output_names
        for needed in ("input_ids", "attention_mask"):
            if needed not in specs:
                raise ParekitError(
                    f"{self.name}: the model has no '{needed}' input, so it does not follow the decoder I/O contract",
                    note=f"inputs: {', '.join(specs)}",
                )
        self.has_position_ids = "position_ids" in specs
        self.start_input: str | None = check_start_input(specs.get(START_INPUT), self.name)
        """:data:`START_INPUT` when the model takes it (fed by :meth:`step`), else ``None``."""
        self.state_specs: list[TensorSpec] = [s for n, s in specs.items() if n.startswith(PAST_PREFIX)]
        if not self.state_specs:
            raise ParekitError(
                f"{self.name}: the model has no past* inputs, so it carries no KV cache between steps",
                note="export decoders with explicit past/present KV tensors (see the README's decoder I/O contract)",
            )
        self._feedback: dict[str, str] = {}
        for spec in self.state_specs:
            present = PRESENT_PREFIX + spec.name[len(PAST_PREFIX) :]
            if present not in outputs:
                raise ParekitError(
                    f"{self.name}: input '{spec.name}' has no output '{present}' to be fed back from",
                    note="the contract: every output present<suffix> is fed back as input past<suffix>",
                )
            self._feedback[present] = spec.name
        logits = [o for o in outputs if not o.startswith(PRESENT_PREFIX)]
        if not logits:
            raise ParekitError(f"{self.name}: the model has no logits output")
        self.logits_name = "logits" if "logits" in logits else logits[0]
        self._fetch = [self.logits_name, *self._feedback]
        self._checked = False
        self.last_step_s = 0.0

    def empty_state(self, batch: int) -> State:
        """The ``past*`` feeds of a prefill: empty tensors from the graph's input specs."""
        return empty_state(self.state_specs, batch, self.name)

    def step(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        state: Mapping[str, np.ndarray],
    ) -> tuple[np.ndarray, State]:
        """Run one step: ``S`` new tokens per row.

        Args:
            input_ids: ``[B, S]`` int64.
            attention_mask: ``[B, T]`` int64 over all tokens seen plus the new ones.
            position_ids: ``[B, S]`` int64 absolute positions.
            state: The ``past*`` arrays (from :meth:`empty_state` or the previous step).

        Returns:
            ``(logits [B, S, V], next state)``; the time the model took is in :attr:`last_step_s`.

        Raises:
            DataError: A feed does not fit the model (checked on the first step).
            BackendError: ONNX Runtime fails.
        """
        feeds: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, **state}
        if self.has_position_ids:
            feeds["position_ids"] = position_ids
        if self.start_input is not None:
            feeds.update(start_feeds(self.state_specs, state, input_ids.shape[0]))
        if not self._checked:
            feeds = self.runner.prepare_feeds(feeds)
            self._checked = True
        start = time.perf_counter()
        try:
            results = self.runner.session.run(self._fetch, feeds)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed running {self.name}: {one_line(exc)}") from exc
        self.last_step_s = time.perf_counter() - start
        nxt = {self._feedback[name]: value for name, value in zip(self._fetch[1:], results[1:], strict=True)}
        return results[0], nxt


def empty_state(specs: Sequence[TensorSpec], batch: int, model: str) -> State:
    """The prefill's ``past*`` feeds from their input specs: batch dim (axis 0, when symbolic) ``batch``,
    every other symbolic dim 0, fixed dims as declared.

    Raises:
        ParekitError: A spec without a declared rank (``model`` names the model in the message).
    """
    state: State = {}
    for spec in specs:
        if spec.shape is None:
            raise ParekitError(f"{model}: input '{spec.name}' has no declared rank; cannot build it empty")
        dims = [d if isinstance(d, int) else 0 for d in spec.shape]
        if dims and not isinstance(spec.shape[0], int):
            dims[0] = batch
        state[spec.name] = np.zeros(dims, dtype=spec.dtype)
    return state


def check_start_input(spec: TensorSpec | None, model: str) -> str | None:
    """:data:`START_INPUT` when ``spec`` (the model's input of that name, or ``None``) is the contract's
    reset control, ``None`` when the model has no such input.

    Raises:
        ParekitError: The model has an input of that name that is not bool ``[batch, 1]``.
    """
    if spec is None:
        return None
    if spec.dtype != np.bool_ or (spec.shape is not None and len(spec.shape) != 2):
        raise ParekitError(
            f"{model}: input '{START_INPUT}' is {spec}, the contract's reset control is bool [batch, 1]",
            note="a model made by the state-reset pass takes it; rename any other input of that name",
        )
    return START_INPUT


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-pad token lists into ``(input_ids, attention_mask, position_ids)``, all ``[B, L]`` int64.

    Real tokens of each row get positions ``0, 1, …``; pad positions get 0 (masked anyway).

    Raises:
        DataError: No prompts, or an empty prompt.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise DataError("every prompt needs at least one token")
    length = max(len(p) for p in prompts)
    ids = np.full((len(prompts), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), length), dtype=np.int64)
    for row, p in enumerate(prompts):
        ids[row, length - len(p) :] = p
        mask[row, length - len(p) :] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int64)
    return ids, mask, positions
