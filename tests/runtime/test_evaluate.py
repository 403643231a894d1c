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


def _one_prefill(s: DecoderSession, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Full-cache teacher forcing in one step: per position ``i < N-1``, the NLL of ``x[i+1]`` and the argmax."""
    n = len(tokens)
    logits, _ = s.step(
        np.array([tokens], np.int64),
        np.ones((1, n), np.int64),
        np.arange(n, dtype=np.int64)[None],
        s.empty_state(1),
    )
    x = logits[0, :-1].astype(np.float64)
    lse = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
    return lse - x[np.arange(n - 1), tokens[1:]], x.argmax(-1)


def _ppl_by_one_prefill(s: DecoderSession, tokens: list[int], first: int = 0) -> float:
    """Perplexity over positions ``first … N-2`` from one full prefill."""
    nll, _ = _one_prefill(s, tokens)
    return math.exp(nll[first:].mean())


def _token_by_token(s: DecoderSession, tokens: list[int], prefill: int) -> tuple[np.ndarray, np.ndarray]:
    """An independent loop: prefill ``x[:p]``, then one token per step; NLL and argmax at positions p … N-2."""
    n = len(tokens)
    ids = np.array([tokens], np.int64)
    _, state = s.step(ids[:, :prefill], np.ones((1, prefill), np.int64), np.arange(prefill)[None], s.empty_state(1))
    nll, top = [], []
    for i in range(prefill, n - 1):
        logits, state = s.step(ids[:, i : i + 1], np.ones((1, i + 1), np.int64), np.array([[i]]), state)
        row = logits[0, 0].astype(np.float64)
        nll.append(np.log(np.exp(row - row.max()).sum()) + row.max() - row[tokens[i + 1]])
        top.append(row.argmax())
    return np.array(nll), np.array(top)


def test_prose_tokens_are_deterministic():
    tok = ByteTokenizer()
    ids = prose_token_ids(tok, 300)
    assert len(ids) == 300 and ids == prose_token_ids(tok, 300)
    assert tok.decode(ids[:40]).isprintable()


@pytest.mark.parametrize(("prefill", "chunk"), [(1, 1), (16, 1), (5, 7)])
def test_decode_path_ppl_equals_one_prefill(llama, prefill, chunk):
    tokens = prose_token_ids(ByteTokenizer(), 48)
    (result,) = evaluate_perplexity([llama], tokens, prefill=prefill, chunk=chunk, tail=4)
    assert result.tokens_all == 47 and result.tokens_decode == 47 - prefill
    assert result.ppl_all == pytest.approx(_ppl_by_one_prefill(llama, tokens), rel=1e-4)
    assert result.ppl_decode == pytest.approx(_ppl_by_one_prefill(llama, tokens, first=prefill), rel=1e-4)
    assert result.ppl_decode != pytest.approx(result.ppl_all, rel=1e-3)  # the two sets of positions differ
    assert result.top1_agreement_all == result.top1_agreement_decode == 1.0
    assert math.isclose(result.nll_decode, math.log(result.ppl_decode))
    # with these splits the last step feeds token 47 alone: the state fed holds tokens 0..46
    assert result.kv_bytes == 2 * 2 * 2 * 47 * 16 * 4


def test_side_by_side_agreement(llama, sample_path):
    other = DecoderSession(sample_path("gpt2-tiny", 18))
    tokens = prose_token_ids(ByteTokenizer(), 40)
    same, diff = evaluate_perplexity([llama, other], tokens, prefill=8)
    assert same.top1_agreement_all == same.top1_agreement_decode == 1.0
    assert diff.top1_agreement_all < 0.5 and diff.top1_agreement_decode < 0.5  # unrelated random models rarely agree
    assert same.ppl_all != pytest.approx(diff.ppl_all)


@pytest.fixture(scope="module")
def windowed(sample_path, tmp_path_factory):
    """llama-tiny with its cache bounded to 2 + 6 tokens: decode steps see a different cache than the prefill."""
    from parekit.backends.save import save_model
    from parekit.frontends.onnx_file import load_model
    from parekit.passes import PassContext, run_pipeline

    model = run_pipeline(load_model(sample_path("llama-tiny", 18)), "kv-window{sink=2,window=6}", PassContext()).model
    path = save_model(model, tmp_path_factory.mktemp("win") / "w.onnx")
    return DecoderSession(path)


def test_decode_positions_of_a_bounded_cache(llama, windowed):
    tokens = prose_token_ids(ByteTokenizer(), 48)
    prefill = 20
    full, win = evaluate_perplexity([llama, windowed], tokens, prefill=prefill)
    assert win.tokens_decode == 27 and win.tokens_all == 47
    # decode positions, measured independently: a plain token-by-token loop for the windowed model ...
    nll, top = _token_by_token(windowed, tokens, prefill)
    assert win.ppl_decode == pytest.approx(math.exp(nll.mean()), rel=1e-4)
    # ... against the full cache's argmax from one full-attention prefill at the same positions
    full_nll, full_top = _one_prefill(llama, tokens)
    assert full.ppl_decode == pytest.approx(math.exp(full_nll[prefill:].mean()), rel=1e-4)
    assert win.top1_agreement_decode == pytest.approx(float((top == full_top[prefill:]).mean()))
    assert win.top1_agreement_decode < 1.0 and win.ppl_decode != pytest.approx(full.ppl_decode, rel=1e-3)
    # the prefill's predictions are the full model's (a cache pass leaves the prefill's own attention alone),
    # so all positions = prefill positions of the full cache + the windowed model's decode positions
    mixed = (full_nll[:prefill].sum() + nll.sum()) / 47
    assert win.ppl_all == pytest.approx(math.exp(mixed), rel=1e-4)
    assert abs(win.ppl_all / full.ppl_all - 1) < abs(win.ppl_decode / full.ppl_decode - 1)  # diluted


def test_bad_arguments(llama):
    with pytest.raises(DataError):
        evaluate_perplexity([], [1, 2, 3])
    with pytest.raises(DataError, match="prefill"):
        evaluate_perplexity([llama], [1, 2, 3], prefill=3)
    with pytest.raises(DataError, match="only gives"):
        prose_token_ids(ByteTokenizer(), 10**8)
