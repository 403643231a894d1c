"""The shape of a decoder's state after ``past`` tokens, measured on ONNX Runtime.

A KV pass may carry state whose dims are functions of the context length that parekit's profile code does
not know (kv-quant: quantized tokens, groups, float residual tokens; kv-evict: a cache capped at its
budget). The KV I/O contract fixes how such a model is driven, so running it tells the truth for any
pass: prefill ``past`` tokens from an empty state and read the shapes of ``present<suffix>``, which is
exactly what the next step feeds as ``past<suffix>``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from parekit.errors import ParekitError

__all__ = ["StateProbe"]


class StateProbe:
    """The decoder's state shapes after a number of tokens, run on ONNX Runtime CPU at batch 1.

    Args:
        model: The model (a path or an ``onnx_ir.Model``).
        token_id: The token fed at every position (any id in the vocabulary gives the same shapes).
        window: Decode steps looked at on either side of the largest context (see :meth:`cover`).
    """

    def __init__(self, model: Path | Any, token_id: int = 0, window: int = 64) -> None:
        self._model = model
        self._token = token_id
        self._window = window
        self._session: Any = None
        self.runs: list[str] = []
        """What was run, for the report."""

    def _open(self) -> Any:
        from parekit.runtime.decoder import DecoderSession

        if self._session is None:
            self._session = DecoderSession(self._model)
        return self._session

    def _feed(self, state: dict[str, np.ndarray], done: int, new: int) -> dict[str, np.ndarray]:
        session = self._open()
        ids = np.full((1, new), self._token, dtype=np.int64)
        mask = np.ones((1, done + new), dtype=np.int64)
        positions = np.arange(done, done + new, dtype=np.int64)[None, :]
        _, nxt = session.step(ids, mask, positions, state)
        return dict(nxt)

    @staticmethod
    def _shapes(state: dict[str, np.ndarray]) -> Shapes:
        return {name: tuple(int(d) for d in value.shape) for name, value in state.items()}

    def at(self, tokens: int) -> Shapes:
        """The state after a prefill of ``tokens`` tokens."""
        start = time.perf_counter()
        state = self._feed(self._open().empty_state(1), 0, tokens)
        self.runs.append(f"a prefill of {tokens} tokens ({time.perf_counter() - start:.1f} s)")
        return self._shapes(state)

    def cover(self, tokens: int) -> tuple[int, Shapes]:
        """A real state that is at least as large, dim by dim, as every state of up to ``tokens`` tokens.

        State dims need not grow with the context: kv-quant's float residual cycles between ``residual``
        and ``residual + group - 1`` tokens while its quantized store grows a group at a time. TensorRT's
        maximum profile point must be one consistent state (its dims are tied together inside the graph)
        that bounds all of them, so: prefill ``tokens - window`` tokens, decode one token at a time up to
        ``tokens`` while recording each dim's largest size, then keep decoding until one state reaches
        all of those sizes at once (up to ``window`` more steps).

        Returns:
            ``(context length of that state, its shapes)``.

        Raises:
            ParekitError: No state within ``window`` steps bounds the earlier ones.
        """
        start = time.perf_counter()
        done = max(0, tokens - self._window)
        state = self._feed(self._open().empty_state(1), 0, done) if done else self._open().empty_state(1)
        largest = self._shapes(state)
        while done < tokens + self._window:
            if done >= tokens and all(_covers(s, largest[name]) for name, s in self._shapes(state).items()):
                self.runs.append(f"{done - max(0, tokens - self._window)} decode steps up to {done} tokens "
                                 f"({time.perf_counter() - start:.1f} s)")
                return done, self._shapes(state)
            state = self._feed(state, done, 1)
            done += 1
            if done <= tokens:
                largest = {name: tuple(max(a, b) for a, b in zip(largest[name], s, strict=True))
                           for name, s in self._shapes(state).items()}
        raise ParekitError(f"no decoder state within {self._window} tokens after {tokens} bounds the state "
                           "sizes seen before it, so no profile maximum covers them",
                           note="give a larger --profile past=MIN,OPT,MAX or report the pass that makes the state")


def _covers(shape: tuple[int, ...], bound: tuple[int, ...]) -> bool:
    return len(shape) == len(bound) and all(a >= b for a, b in zip(shape, bound, strict=True))


Shapes = dict[str, tuple[int, ...]]
