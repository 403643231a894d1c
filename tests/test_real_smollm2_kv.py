"""Real weights: SmolLM2-135M with kv-window vs the full cache on prose, through the decode path.

Bounded in time (≈ 25–40 s on 2 shared cores): 128 tokens, a cache bounded to 4 + 44 tokens, so that more
than half of the context is evicted by the end. The pass is applied directly (no manager cleanup or
FLOP estimate: the manager path is tested on the tiny decoders).
"""

from __future__ import annotations

import pytest

from parekit.frontends import zoo
from parekit.frontends.onnx_file import load_model
from parekit.passes import get_pass
from parekit.runtime import DecoderSession, evaluate_perplexity, generate, prose_token_ids

pytestmark = pytest.mark.slow  # SmolLM2-135M real weights, 128-token decodes

CTX, SINK, WINDOW = 128, 4, 44


@pytest.fixture(scope="module")
def pair(sample_path):
    path = sample_path("smollm2", 23)
    windowed = load_model(path)
    kv_window = get_pass("kv-window")  # the pass class, by its registered name
    assert kv_window(kv_window.options_type(sink=SINK, window=WINDOW))(windowed).modified
    return DecoderSession(path), DecoderSession(windowed)


def test_window_stays_close_to_the_full_cache_on_prose(pair):
    full, win = pair
    tok = zoo.get_sample("smollm2").tokenizer()
    tokens = prose_token_ids(tok, CTX)
    ref, got = evaluate_perplexity([full, win], tokens, prefill=16)
    assert 5 < ref.ppl_decode < 40, ref  # real weights on English prose
    assert got.ppl_decode <= ref.ppl_decode * 1.10, (ref.ppl_decode, got.ppl_decode)
    assert got.top1_agreement_decode >= 0.85, got.top1_agreement_decode
    per_token = ref.kv_bytes // (CTX - 1)  # 30 layers x K,V x 3 heads x 64 x 4 bytes
    assert per_token == 30 * 2 * 3 * 64 * 4
    assert got.kv_bytes == per_token * (SINK + WINDOW)


def test_windowed_model_still_answers(pair):
    _, win = pair
    tok = zoo.get_sample("smollm2").tokenizer()
    result = generate(win, [tok.encode("The capital of France is")], 4)
    assert "Paris" in tok.decode(result.tokens[0])
