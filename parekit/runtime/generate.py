"""The generation loop: prefill the (left-padded) prompts, then decode one token per row per step.

    prompts ─► left_pad ─► step(all prompt tokens, empty past) ─► pick ─┐
                                  ▲                                    │
                                  └── step(1 token, state, mask + [1]) ◄┘   × max_new_tokens - 1

The loop knows nothing about compression: it follows the I/O contract (:mod:`parekit.runtime.decoder`),
so it drives an unmodified export and every optimized variant alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from parekit.errors import DataError
from parekit.runtime.decoder import DecoderSession, left_pad, state_nbytes
from parekit.runtime.sampling import Sampler, SamplingOptions

__all__ = ["Generation", "generate"]

logger = logging.getLogger(__name__)


@dataclass
class Generation:
    """What :func:`generate` produced.

    Attributes:
        tokens: New tokens per row (a row stops after its ``eos_id``, which is included).
        prompt_tokens: Real (unpadded) prompt tokens, all rows together.
        prefill_s: Time of the prefill step.
        decode_s: Per decode step, the time of the model run.
        kv_bytes: Bytes of the state fed back after the last step.
    """

    tokens: list[list[int]]
    prompt_tokens: int
    prefill_s: float
    decode_s: list[float] = field(default_factory=list)
    kv_bytes: int = 0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("inf")

    @property
    def decode_tokens_per_s(self) -> float:
        """Generated tokens per second of decode steps (rows together; the prefill's token excluded)."""
        total = sum(self.decode_s)
        steps = len(self.decode_s) * len(self.tokens)
        return steps / total if total > 0 else float("inf")


def generate(
    session: DecoderSession,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    sampling: SamplingOptions | None = None,
    pad_id: int = 0,
    eos_id: int | None = None,
) -> Generation:
    """Generate up to ``max_new_tokens`` tokens for each prompt.

    Args:
        session: The decoder.
        prompts: Token ids per row; rows of different lengths are left-padded with ``pad_id``.
        max_new_tokens: Tokens to generate per row (≥ 1).
        sampling: Greedy (default) or seeded sampling.
        pad_id: Token fed at padded positions (masked out).
        eos_id: A row that produced it stops (later tokens of that row are not reported).

    Returns:
        The new tokens and timings.

    Raises:
        DataError: Empty prompts or ``max_new_tokens < 1``.
    """
    if max_new_tokens < 1:
        raise DataError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    sampler = Sampler(sampling or SamplingOptions())
    ids, mask, positions = left_pad(prompts, pad_id)
    batch = ids.shape[0]
    logits, state = session.step(ids, mask, positions, session.empty_state(batch))
    result = Generation(
        tokens=[[] for _ in range(batch)], prompt_tokens=int(mask.sum()), prefill_s=session.last_step_s
    )
    done = np.zeros(batch, dtype=bool)
    next_pos = positions[:, -1:] + 1
    for step in range(max_new_tokens):
        chosen = sampler(logits[:, -1, :])
        for row in range(batch):
            if not done[row]:
                result.tokens[row].append(int(chosen[row]))
                done[row] = eos_id is not None and int(chosen[row]) == eos_id
        if done.all() or step == max_new_tokens - 1:
            break
        feed = np.where(done, pad_id, chosen).astype(np.int64)[:, None]
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        logits, state = session.step(feed, mask, next_pos, state)
        result.decode_s.append(session.last_step_s)
        next_pos = next_pos + 1
    result.kv_bytes = state_nbytes(state)
    return result
