"""Teacher-forced evaluation through the decode path: equals one full prefill for an uncompressed cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

from parekit.errors import DataError
from parekit.runtime import ByteTokenizer, DecoderSession, evaluate_perplexity, prose_token_ids


@pytest.fixture(scope="module")
def llama(sample_path):
    return DecoderSession(sample_path("llama-tiny", 18))


def _ppl_by_one_prefill(s: DecoderSession, tokens: list[int]) -> float:
    n = len(tokens)
    logits, _ = s.step(
        np.array([tokens], np.int64),
        np.ones((1, n), np.int64),
        np.arange(n, dtype=np.int64)[None],
        s.empty_state(1),
    )
    x = logits[0, :-1].astype(np.float64)
    lse = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
    nll = lse - x[np.arange(n - 1), tokens[1:]]
    return math.exp(nll.mean())


def test_prose_tokens_are_deterministic():
    tok = ByteTokenizer()
    ids = prose_token_ids(tok, 300)
    assert len(ids) == 300 and ids == prose_token_ids(tok, 300)
    assert tok.decode(ids[:40]).isprintable()


@pytest.mark.parametrize(("prefill", "chunk"), [(1, 1), (16, 1), (5, 7)])
def test_decode_path_ppl_equals_one_prefill(llama, prefill, chunk):
    tokens = prose_token_ids(ByteTokenizer(), 48)
    (result,) = evaluate_perplexity([llama], tokens, prefill=prefill, chunk=chunk, tail=4)
    assert result.tokens == 47
    assert result.ppl == pytest.approx(_ppl_by_one_prefill(llama, tokens), rel=1e-4)
    assert result.top1_agreement == 1.0
    # with these splits the last step feeds token 47 alone: the state fed holds tokens 0..46
    assert result.kv_bytes == 2 * 2 * 2 * 47 * 16 * 4
    assert result.ms_per_step > 0


def test_side_by_side_agreement(llama, sample_path):
    other = DecoderSession(sample_path("gpt2-tiny", 18))
    tokens = prose_token_ids(ByteTokenizer(), 40)
    same, diff = evaluate_perplexity([llama, other], tokens, prefill=8)
    assert same.top1_agreement == 1.0
    assert diff.top1_agreement < 0.5  # two unrelated random models rarely agree
    assert same.ppl != pytest.approx(diff.ppl)


def test_bad_arguments(llama):
    with pytest.raises(DataError):
        evaluate_perplexity([], [1, 2, 3])
    with pytest.raises(DataError, match="prefill"):
        evaluate_perplexity([llama], [1, 2, 3], prefill=3)
    with pytest.raises(DataError, match="only gives"):
        prose_token_ids(ByteTokenizer(), 10**8)
