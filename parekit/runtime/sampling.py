"""Choosing the next token from logits: greedy, or seeded sampling with temperature / top-k / top-p.

logits [B, V] ─► /temperature ─► keep top-k ─► keep smallest set with mass ≥ top-p ─► sample
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parekit.errors import DataError

__all__ = ["Sampler", "SamplingOptions"]


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens.

    Attributes:
        greedy: Take the argmax (the other fields are ignored).
        temperature: Logits are divided by it (> 0).
        top_k: Keep only the ``top_k`` most likely tokens (0: all).
        top_p: Keep the smallest set of most likely tokens whose probability mass reaches ``top_p`` (1: all).
        seed: Seed of the sampler (same seed, same model, same prompt → same tokens).
    """

    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.temperature <= 0:
            raise DataError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise DataError(f"top-k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise DataError(f"top-p must be in (0, 1], got {self.top_p}")


class Sampler:
    """Picks one token per row; holds the random generator so a run is reproducible from its seed."""

    def __init__(self, options: SamplingOptions) -> None:
        options.validate()
        self.options = options
        self.rng = np.random.default_rng(options.seed)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """Next token ids ``[B]`` (int64) from last-position logits ``[B, V]``."""
        if self.options.greedy:
            return np.asarray(logits.argmax(-1), dtype=np.int64)
        return np.array([self._sample_row(row) for row in logits], dtype=np.int64)

    def distribution(self, logits: np.ndarray) -> np.ndarray:
        """The distribution :meth:`__call__` samples from, over the whole vocabulary: ``[V]`` float64.

        Greedy is a point mass on the argmax. Tokens outside top-k / top-p have probability 0.
        """
        out = np.zeros(logits.shape[-1], dtype=np.float64)
        if self.options.greedy:
            out[int(logits.argmax())] = 1.0
            return out
        order, p = self._kept(logits)
        out[order] = p
        return out

    def draw(self, p: np.ndarray) -> int:
        """One token from a distribution ``p`` ``[V]`` (non-negative; normalised here), from this sampler's generator."""
        total = float(p.sum())
        if not total > 0:
            raise DataError("cannot sample from a distribution with no mass")
        return int(self.rng.choice(p.shape[0], p=p / total))

    def _kept(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        opts = self.options
        x = logits.astype(np.float64) / opts.temperature
        order = np.argsort(-x, kind="stable")
        if opts.top_k:
            order = order[: opts.top_k]
        z = x[order]
        p = np.exp(z - z.max())
        p /= p.sum()
        if opts.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(p), opts.top_p) + 1)
            order, p = order[:keep], p[:keep] / p[:keep].sum()
        return order, p

    def _sample_row(self, logits: np.ndarray) -> int:
        order, p = self._kept(logits)
        return int(order[self.rng.choice(len(order), p=p)])
