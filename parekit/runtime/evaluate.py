"""Teacher-forced evaluation of decoders side by side, through the decode path.

    tokens x[0:N] ─► prefill x[0:p] ─► step x[p:p+c] ─► step … ─► step x[N-c:N]     (every model, interleaved)
                         │                 │                          │
                         ▼                 ▼                          ▼
            NLL of the next token, argmax vs the first model's, state bytes fed, step time

Every model sees the same tokens through the same loop (:class:`~parekit.runtime.decoder.DecoderSession`),
so a compressed cache is exercised exactly as in generation: a short prefill, then ``chunk`` tokens per
step (default 1, one token per step as a decoder generates). With ``chunk > 1`` the tokens of one
chunk attend to each other and to the whole cache before it is compressed again, i.e. a cache pass sees
up to ``chunk - 1`` more tokens than in generation: slightly optimistic for kv-window/kv-evict, exact
for the full cache. Reported numbers use ``chunk = 1``.

Per model, perplexity and top-1 agreement of its argmax with the first model's, each over two sets of
positions (a position ``i`` predicts token ``x[i+1]``; the last one predicts nothing):

- **decode positions** ``p … N-2`` (``*_decode`` fields): the tokens fed through decode steps after the
  prefill, ``N - 1 - p`` predictions. This is what a cache pass changes: the prefill attends to its own
  tokens in full, whatever the pass does to the cache it leaves behind.
- **all positions** ``0 … N-2`` (``*_all`` fields): the prefill's ``p`` predictions included. With a long
  prefill these dilute any difference between caches (``p = 1536`` of ``N = 2048``: 1,536 of 2,047).

Also per model: KV bytes fed at the last step (all ``past*`` arrays), and decode ms/step at the end of the
context (median of the last ``tail`` steps, models interleaved so that they share machine load).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from parekit.data.prose import prose_token_ids  # re-exported: the token stream ``parekit eval`` reads
from parekit.errors import DataError
from parekit.runtime.decoder import DecoderSession, state_nbytes

__all__ = ["ModelEval", "evaluate_perplexity", "prose_token_ids"]

logger = logging.getLogger(__name__)


@dataclass
class ModelEval:
    """Result for one model.

    ``*_decode`` fields cover the decode positions (fed after the prefill), ``*_all`` fields every
    predicting position (prefill included); see the module docstring.

    Attributes:
        model: Its name (path).
        ppl_decode: Perplexity over the decode positions (``nan`` when there are none).
        nll_decode: Mean negative log-likelihood over the decode positions (nats per token).
        top1_agreement_decode: Fraction of decode positions where the argmax equals the first model's.
        tokens_decode: Decode positions counted (``N - 1 - prefill``).
        ppl_all: Perplexity over all positions.
        nll_all: Mean negative log-likelihood over all positions (nats per token).
        top1_agreement_all: Fraction of all positions where the argmax equals the first model's.
        tokens_all: Positions counted (``N - 1``).
        kv_bytes: Bytes of all ``past*`` state fed at the last step.
        ms_per_step: Median decode step time (ms) over the last ``tail`` steps.
        native: The native library its session registered (parekit ops with a kernel ran it), or
            ``None`` (function bodies).
    """

    model: str
    ppl_decode: float
    nll_decode: float
    top1_agreement_decode: float
    tokens_decode: int
    ppl_all: float
    nll_all: float
    top1_agreement_all: float
    tokens_all: int
    kv_bytes: int
    ms_per_step: float
    native: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dict(self.__dict__)


def _log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    top = x.max(-1, keepdims=True)
    lse = np.log(np.exp(x - top).sum(-1)) + top[..., 0]
    return np.take_along_axis(x, targets[..., None], -1)[..., 0] - lse


def evaluate_perplexity(
    sessions: Sequence[DecoderSession],
    tokens: Sequence[int],
    *,
    prefill: int = 16,
    chunk: int = 1,
    tail: int = 8,
    progress: bool = False,
) -> list[ModelEval]:
    """Teacher-forced perplexity of each model on ``tokens``, through prefill + decode steps.

    Args:
        sessions: The models; the first is the reference of the top-1 agreement.
        tokens: The context (batch 1), ``N = len(tokens)``.
        prefill: Tokens of the first (prefill) step.
        chunk: Tokens per decode step.
        tail: Decode steps at the end whose median time is reported.
        progress: Show a progress bar (stderr, terminals only).

    Returns:
        One :class:`ModelEval` per session, in order: decode-position and all-position numbers.

    Raises:
        DataError: No models, fewer than 2 tokens, or bad ``prefill``/``chunk``.
    """
    n = len(tokens)
    if not sessions:
        raise DataError("no models to evaluate")
    if n < 2:
        raise DataError(f"perplexity needs at least 2 tokens, got {n}")
    if not 1 <= prefill < n or chunk < 1:
        raise DataError(
            f"need 1 <= prefill < context ({n}) and chunk >= 1, got prefill={prefill}, chunk={chunk}"
        )
    ids = np.asarray(tokens, dtype=np.int64)[None, :]
    bounds = [(0, prefill)] + [(s, min(s + chunk, n)) for s in range(prefill, n, chunk)]
    states = [s.empty_state(1) for s in sessions]
    nll = np.zeros((len(sessions), n - 1))  # per model, per predicting position
    agree = np.zeros((len(sessions), n - 1), dtype=bool)
    times: list[list[float]] = [[] for _ in sessions]
    fed_bytes = [0] * len(sessions)
    bar = task = None
    if progress:
        from parekit.progress import progress_bar

        bar = progress_bar()
        bar.start()
        task = bar.add_task(f"ppl over {n} tokens, {len(sessions)} model(s)", total=len(bounds))
    try:
        for index, (lo, hi) in enumerate(bounds):
            step_ids = ids[:, lo:hi]
            mask = np.ones((1, hi), dtype=np.int64)
            positions = np.arange(lo, hi, dtype=np.int64)[None, :]
            targets = ids[0, lo + 1 : hi + 1]  # the last position of the context has no target
            where = slice(lo, lo + len(targets))
            order = list(range(len(sessions)))
            order = order[index % len(order) :] + order[: index % len(order)]  # rotate who runs first
            preds: dict[int, np.ndarray] = {}
            for k in order:
                fed_bytes[k] = state_nbytes(states[k])
                logits, states[k] = sessions[k].step(step_ids, mask, positions, states[k])
                if index > 0:
                    times[k].append(sessions[k].last_step_s)
                row = logits[0, : len(targets)]
                nll[k, where] = -_log_softmax_at(row, targets)
                preds[k] = row.argmax(-1)
            for k in range(len(sessions)):
                agree[k, where] = preds[k] == preds[0]
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    results = []
    for k, session in enumerate(sessions):
        decode_nll = float(nll[k, prefill:].mean()) if n - 1 > prefill else float("nan")
        all_nll = float(nll[k].mean())
        last = times[k][-tail:]
        results.append(
            ModelEval(
                model=session.name,
                ppl_decode=math.exp(decode_nll),
                nll_decode=decode_nll,
                top1_agreement_decode=float(agree[k, prefill:].mean()) if n - 1 > prefill else float("nan"),
                tokens_decode=n - 1 - prefill,
                ppl_all=math.exp(all_nll),
                nll_all=all_nll,
                top1_agreement_all=float(agree[k].mean()),
                tokens_all=n - 1,
                kv_bytes=fed_bytes[k],
                ms_per_step=1e3 * statistics.median(last) if last else float("nan"),
                native=session.native_library,
            )
        )
    return results
