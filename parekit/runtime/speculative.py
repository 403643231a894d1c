"""Lossless self-speculative decoding: draft k tokens cheaply, verify them in one step of the full model.

The loop, for one sequence (batch 1; rows of a batch accept different numbers of tokens, so prompts run
one after another). Invariant: the state covers every token but the last, which is *pending*::

    prefill(prompt) ─► state covers prompt; t = pick(logits[-1]); tokens = prompt + [t]
    repeat until max_new_tokens or eos:
        d = drafter.propose(tokens, state, k')                  k' = min(k, tokens still wanted - 1)
        logits, present = step([t] + d, state)                 one step, 1 + len(d) tokens
        accept d[j] while it is what the model picks at row j   (greedy: argmax; sampling: rejection rule)
        b = the model's token at the first row not accepted     (the "bonus": always one new token)
        state = crop(present, accepted + 1) if the step was append-only      (rollback.crop_state)
                else: replay — discard the step, run [t] alone from the old state (plain decoding)
        tokens += d[:a] + [b]; t = b

Greedy output is the model's own greedy output token for token: every token kept is the argmax of logits
computed over exactly the tokens before it. Sampling uses the standard rule (Leviathan et al. / Chen et
al., 2023): accept draft token ``x`` with probability ``min(1, p(x) / q(x))`` (``q``: the drafter's
distribution, a point mass for deterministic drafters); on rejection draw from ``max(p - q, 0)``
renormalised; when every draft is accepted draw the bonus from ``p``. The output distribution is the
model's. ``p`` is the sampler's distribution (temperature, top-k, top-p applied).

A step that is not append-only (a bounded cache evicted, kv-quant quantized a group) is replayed, and
speculation then pauses for 1, 2, 4, … plain steps (reset by the next append-only step): once a bounded
cache is full every multi-token step would be replayed, and plain steps are then the fastest exact choice.

The C++ host is to follow this loop: :func:`speculative_generate` is its specification.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from parekit.errors import DataError
from parekit.runtime.decoder import DecoderSession, State, state_nbytes
from parekit.runtime.rollback import crop_state
from parekit.runtime.sampling import Sampler, SamplingOptions

__all__ = ["Draft", "DraftView", "Drafter", "SpecStats", "Speculation", "speculative_generate"]

MAX_BACKOFF = 64
"""Most plain steps speculation pauses for after replays in a row."""


@dataclass(frozen=True)
class DraftView:
    """What a drafter may read. ``tokens[-1]`` is pending: ``state`` covers ``tokens[:-1]``.

    Attributes:
        tokens: The sequence so far (prompt + generated).
        state: The verifying model's state over ``tokens[:-1]`` (``past*`` names; never written to).
        session: The verifying model.
        sampler: The loop's sampler (``distribution`` gives a drafter's ``q`` from its logits).
    """

    tokens: Sequence[int]
    state: State
    session: DecoderSession
    sampler: Sampler


@dataclass
class Draft:
    """Proposed tokens; ``probs[j]`` (``[V]``) is the distribution token ``j`` was drawn from, or ``None``
    for a deterministic drafter (a point mass on each token)."""

    tokens: list[int]
    probs: np.ndarray | None = None


class Drafter(Protocol):
    """Proposes tokens; must not change anything the loop owns (the state arrays, the tokens)."""

    name: str

    def start(self, prompt: Sequence[int]) -> None:
        """A new sequence begins with ``prompt``."""

    def propose(self, view: DraftView, k: int) -> Draft:
        """Up to ``k`` (≥ 1) tokens to follow ``view.tokens``; fewer (or none) is fine."""
        ...


@dataclass
class SpecStats:
    """Counts and times of the speculative steps, all sequences together."""

    steps: int = 0
    """Verify steps (each yields ≥ 1 token), replayed ones included."""
    drafted: int = 0
    accepted: int = 0
    replays: int = 0
    plain_steps: int = 0
    """One-token steps: nothing drafted, speculation paused, or a replay."""
    runs: int = 0
    """Model runs of the decode loops (a replay costs two)."""
    produced: int = 0
    """Tokens the decode loops produced."""
    draft_s: float = 0.0
    verify_s: float = 0.0
    """Model time of every decode step (verify, plain and replay steps)."""

    @property
    def acceptance(self) -> float:
        """Accepted / drafted tokens (0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_run(self) -> float:
        """New tokens per model run of the decode loops (1 = plain decoding)."""
        return self.produced / self.runs if self.runs else 0.0

    @property
    def mean_accepted(self) -> float:
        """Draft tokens accepted per verify step that kept its result."""
        kept = self.steps - self.replays
        return self.accepted / kept if kept else 0.0


@dataclass
class Speculation:
    """What :func:`speculative_generate` produced (the shape of :class:`~parekit.runtime.Generation`)."""

    tokens: list[list[int]]
    prompt_tokens: int = 0
    prefill_s: float = 0.0
    decode_wall_s: float = 0.0
    """Wall time of the decode loops (drafting, verifying, bookkeeping), prefill excluded."""
    kv_bytes: int = 0
    stats: SpecStats = field(default_factory=SpecStats)

    @property
    def decode_tokens(self) -> int:
        """Tokens produced by decode steps (each row's first token comes from its prefill)."""
        return sum(max(len(t) - 1, 0) for t in self.tokens)

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_wall_s if self.decode_wall_s > 0 else float("inf")


def speculative_generate(
    session: DecoderSession,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    drafter: Drafter,
    *,
    k: int = 8,
    sampling: SamplingOptions | None = None,
    eos_id: int | None = None,
) -> Speculation:
    """Generate up to ``max_new_tokens`` per prompt, drafting with ``drafter`` and verifying with ``session``.

    Args:
        session: The model whose output this is (any decoder under the I/O contract, KV passes included).
        prompts: Token ids per sequence; run one after another.
        max_new_tokens: Tokens to generate per sequence (≥ 1).
        drafter: Proposes tokens (:mod:`parekit.runtime.drafters`).
        k: Most tokens drafted per step (≥ 1).
        sampling: Greedy (default; output == plain greedy decoding) or seeded sampling.
        eos_id: A sequence that produced it stops (it is included).

    Raises:
        DataError: Empty prompts, ``max_new_tokens < 1`` or ``k < 1``.
    """
    if max_new_tokens < 1:
        raise DataError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if k < 1:
        raise DataError(f"draft length k must be >= 1, got {k}")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise DataError("every prompt needs at least one token")
    sampler = Sampler(sampling or SamplingOptions())
    result = Speculation(tokens=[])
    for prompt in prompts:
        result.tokens.append(_one(session, list(prompt), max_new_tokens, drafter, k, sampler, eos_id, result))
    return result


def _step(session: DecoderSession, fed: list[int], start: int, state: State) -> tuple[np.ndarray, State]:
    ids = np.array([fed], dtype=np.int64)
    mask = np.ones((1, start + len(fed)), dtype=np.int64)
    pos = np.arange(start, start + len(fed), dtype=np.int64)[None]
    logits, present = session.step(ids, mask, pos, state)
    return logits[0], present


def _one(
    session: DecoderSession,
    tokens: list[int],
    max_new: int,
    drafter: Drafter,
    k: int,
    sampler: Sampler,
    eos_id: int | None,
    out: Speculation,
) -> list[int]:
    stats = out.stats
    drafter.start(tokens)
    logits, state = _step(session, tokens, 0, session.empty_state(1))
    out.prompt_tokens += len(tokens)
    out.prefill_s += session.last_step_s
    new = [int(sampler(logits[-1:])[0])]
    tokens.append(new[0])
    began = time.perf_counter()
    pause = backoff = 0
    while len(new) < max_new and not (eos_id is not None and new[-1] == eos_id):
        want = min(k, max_new - len(new) - 1)
        draft = Draft([])
        if want > 0 and pause == 0:
            t0 = time.perf_counter()
            draft = drafter.propose(DraftView(tokens, state, session, sampler), want)
            stats.draft_s += time.perf_counter() - t0
            draft.tokens = [int(t) for t in draft.tokens[:want]]
        pause = max(pause - 1, 0)
        start = len(tokens) - 1
        fed = [tokens[-1], *draft.tokens]
        logits, present = _step(session, fed, start, state)
        stats.verify_s += session.last_step_s
        stats.runs += 1
        if not draft.tokens:
            stats.plain_steps += 1
            state, got = present, [_pick(sampler, logits[0])]
        else:
            stats.steps += 1
            stats.drafted += len(draft.tokens)
            got = _accept(sampler, logits, draft)
            cropped = crop_state(state, present, len(fed), len(got))
            if cropped is None:  # not append-only: take the step back, decode [t] alone
                stats.replays += 1
                backoff = min(max(2 * backoff, 1), MAX_BACKOFF)
                pause = backoff
                logits, present = _step(session, fed[:1], start, state)
                stats.verify_s += session.last_step_s
                stats.runs += 1
                state, got = present, [_pick(sampler, logits[0])]
            else:
                backoff = 0
                state = cropped
                stats.accepted += len(got) - 1
        got = got[: max_new - len(new)]
        if eos_id is not None and eos_id in got:
            got = got[: got.index(eos_id) + 1]
        stats.produced += len(got)
        new += got
        tokens += got
    out.decode_wall_s += time.perf_counter() - began
    out.kv_bytes = state_nbytes(state)
    return new


def _pick(sampler: Sampler, logits_row: np.ndarray) -> int:
    return int(sampler(logits_row[None])[0])


def _accept(sampler: Sampler, logits: np.ndarray, draft: Draft) -> list[int]:
    """The accepted draft tokens followed by one token of the model's (``logits`` row ``j`` predicts draft ``j``)."""
    d = draft.tokens
    if sampler.options.greedy:
        picks = logits[: len(d) + 1].argmax(-1)
        a = 0
        while a < len(d) and int(picks[a]) == d[a]:
            a += 1
        return [*d[:a], int(picks[a])]
    kept: list[int] = []
    for j, x in enumerate(d):
        p = sampler.distribution(logits[j])
        if draft.probs is None:
            q = np.zeros_like(p)
            q[x] = 1.0
        else:
            q = np.asarray(draft.probs[j], dtype=np.float64)
        if sampler.rng.random() * q[x] < p[x]:  # u < p/q without dividing by q = 0
            kept.append(x)
            continue
        residual = np.maximum(p - q, 0.0)
        kept.append(sampler.draw(residual if residual.sum() > 0 else p))
        return kept
    kept.append(sampler.draw(sampler.distribution(logits[len(d)])))
    return kept
