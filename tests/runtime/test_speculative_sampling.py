"""Speculative sampling keeps the model's output distribution (the rejection rule), tested statistically.

Exact target distributions are enumerated (a toy model of 4 tokens; llama-tiny with top-k 3 over three
tokens) and the sampled frequencies are compared with a chi-square test at p = 1e-3: a broken rule (e.g.
accepting every draft, or drawing the correction from p instead of max(p - q, 0)) fails it by far.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from parekit.runtime import SamplingOptions
from parekit.runtime.sampling import Sampler
from parekit.runtime.speculative import Draft, speculative_generate

V = 4
_W = np.random.default_rng(0).normal(size=(V, V)) * 1.5


class _Toy:
    """A 'decoder' whose next-token logits depend on the last token only; its state is the token list."""

    name = "toy"
    last_step_s = 0.0

    def empty_state(self, batch):
        return {"past.ids": np.zeros((batch, 0), np.int64)}

    def step(self, ids, mask, pos, state):
        past = state["past.ids"]
        assert mask.shape[1] == past.shape[1] + ids.shape[1]
        return _W[ids][..., :], {"past.ids": np.concatenate([past, ids], axis=1)}


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


class _Random:
    """Draws drafts from its own (wrong) distribution q and reports q: the general rejection rule."""

    name = "random"

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.q = np.array([_softmax(row) for row in np.random.default_rng(9).normal(size=(V, V)) * 2])

    def start(self, prompt):
        pass

    def propose(self, view, k):
        tokens, probs, last = [], [], view.tokens[-1]
        for _ in range(k):
            q = self.q[last]
            last = int(self.rng.choice(V, p=q))
            tokens.append(last)
            probs.append(q)
        return Draft(tokens, np.array(probs))


class _Constant:
    name = "constant"

    def start(self, prompt):
        pass

    def propose(self, view, k):
        return Draft([0, 1, 2][:k])  # a point mass: accepted with probability p(x)


def _chi2_p(counts: dict, expected: dict, n: int) -> float:
    keys = sorted(expected)
    obs = np.array([counts.get(key, 0) for key in keys], float)
    exp = np.array([expected[key] * n for key in keys])
    assert sum(counts.get(key, 0) for key in counts if key not in expected) == 0
    return float(stats.chisquare(obs, exp).pvalue)


@pytest.mark.parametrize("drafter", [_Constant(), _Random(1)], ids=["point-mass", "distribution"])
def test_toy_sequence_distribution_is_the_models(drafter):
    n, new = 4000, 3
    # exact distribution of the 3 tokens after prompt [0] (the first from the prefill)
    rows = np.array([_softmax(_W[t]) for t in range(V)])
    expected = {}
    for seq in itertools.product(range(V), repeat=new):
        p, last = 1.0, 0
        for t in seq:
            p *= rows[last, t]
            last = t
        expected[seq] = p
    assert np.isclose(sum(expected.values()), 1.0)
    out = speculative_generate(
        _Toy(), [[0]] * n, new, drafter, k=2, sampling=SamplingOptions(greedy=False, seed=3)  # type: ignore[arg-type]
    )
    counts: dict = {}
    for toks in out.tokens:
        counts[tuple(toks)] = counts.get(tuple(toks), 0) + 1
    assert out.stats.drafted > 0 and 0 < out.stats.accepted < out.stats.drafted
    assert _chi2_p(counts, expected, n) > 1e-3


def test_accepting_every_draft_would_fail_the_same_test():
    """The test's power: drafts of the point-mass drafter taken unconditionally are far from the model."""
    n = 4000
    sampler = Sampler(SamplingOptions(greedy=False, seed=3))
    counts: dict = {}
    for _ in range(n):
        first = sampler.draw(_softmax(_W[0]))
        seq = (first, *[0, 1][: 2])  # what 'accept everything' would emit after the first token
        counts[seq] = counts.get(seq, 0) + 1
    expected = {}
    for seq in itertools.product(range(V), repeat=3):
        expected[seq] = _softmax(_W[0])[seq[0]] * _softmax(_W[seq[0]])[seq[1]] * _softmax(_W[seq[1]])[seq[2]]
    assert _chi2_p(counts, expected, n) < 1e-6


def test_llama_tiny_sequence_distribution_is_the_models(sample_path):
    """End to end on a real export: top-k 3 at temperature 1.5, 3 new tokens (the last two drafted and
    verified in one step), an argmax drafter that is often right and often wrong."""
    from parekit.runtime import DecoderSession

    session = DecoderSession(sample_path("llama-tiny", 18))
    options = SamplingOptions(greedy=False, temperature=1.5, top_k=3)
    prompt = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7]
    memo: dict[tuple[int, ...], np.ndarray] = {}

    def last_logits(tokens: list[int]) -> np.ndarray:  # a fresh prefill: independent of the loop's state
        key = tuple(tokens)
        if key not in memo:
            n = len(tokens)
            logits, _ = session.step(
                np.array([tokens]), np.ones((1, n), np.int64), np.arange(n)[None], session.empty_state(1)
            )
            memo[key] = logits[0, -1]
        return memo[key]

    class Argmax:
        name = "argmax"

        def start(self, prompt):
            pass

        def propose(self, view, k):
            return Draft([int(last_logits(list(view.tokens)).argmax())])

    dist = Sampler(options).distribution
    expected = {}
    p1 = dist(last_logits(prompt))
    for a in np.flatnonzero(p1):
        p2 = dist(last_logits([*prompt, int(a)]))
        for b in np.flatnonzero(p2):
            p3 = dist(last_logits([*prompt, int(a), int(b)]))
            for c in np.flatnonzero(p3):
                expected[(int(a), int(b), int(c))] = p1[a] * p2[b] * p3[c]
    assert len(expected) == 27 and np.isclose(sum(expected.values()), 1.0)
    n, counts, drafted, accepted = 2000, {}, 0, 0
    for seed in range(n):
        out = speculative_generate(
            session, [prompt], 3, Argmax(), k=1, sampling=SamplingOptions(**{**options.__dict__, "seed": seed})
        )
        key = tuple(out.tokens[0])
        counts[key] = counts.get(key, 0) + 1
        drafted += out.stats.drafted
        accepted += out.stats.accepted
    assert drafted == n and 0.1 * n < accepted < 0.9 * n  # verification both accepted and rejected
    assert _chi2_p(counts, expected, n) > 1e-3
