"""The generation loop on the tiny decoders: cache decode == re-prefill, left padding, seeded sampling."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.errors import DataError, ParekitError
from parekit.runtime import DecoderSession, SamplingOptions, generate, left_pad

DECODERS = [("llama-tiny", 18), ("gpt2-tiny", 18), ("llama-tiny", 23), ("gpt2-tiny", 23)]
PROMPTS = [[11, 42, 7, 300, 5, 99, 123, 8, 64], [17, 2, 250]]


@pytest.fixture(scope="module")
def session():
    from parekit.frontends import zoo

    cache: dict[tuple[str, int], DecoderSession] = {}

    def get(name: str, opset: int) -> DecoderSession:
        if (name, opset) not in cache:
            cache[(name, opset)] = DecoderSession(zoo.export_sample(name, opset=opset))
        return cache[(name, opset)]

    return get


def _greedy_by_reprefill(s: DecoderSession, prompt: list[int], steps: int) -> list[int]:
    """Oracle without a cache: every step re-runs the whole sequence from an empty past."""
    ids = list(prompt)
    out = []
    for _ in range(steps):
        n = len(ids)
        logits, _ = s.step(
            np.array([ids], np.int64),
            np.ones((1, n), np.int64),
            np.arange(n, dtype=np.int64)[None],
            s.empty_state(1),
        )
        out.append(int(logits[0, -1].argmax()))
        ids.append(out[-1])
    return out


@pytest.mark.parametrize(("name", "opset"), DECODERS)
def test_greedy_loop_equals_reprefill_without_cache(session, name, opset):
    s = session(name, opset)
    got = generate(s, [PROMPTS[0]], 12)
    assert got.tokens[0] == _greedy_by_reprefill(s, PROMPTS[0], 12)
    assert len(got.decode_s) == 11
    # KV bytes: 2 layers x (key, value) x [1, H_kv, 9 + 11 tokens, 16] float32
    heads = s.state_specs[0].shape[1]
    assert got.kv_bytes == 2 * 2 * heads * (9 + 11) * 16 * 4


@pytest.mark.parametrize(("name", "opset"), [("llama-tiny", 18), ("gpt2-tiny", 23)])
def test_left_padded_batch_equals_rows_alone(session, name, opset):
    s = session(name, opset)
    batch = generate(s, PROMPTS, 10)
    for row, prompt in enumerate(PROMPTS):
        assert batch.tokens[row] == generate(s, [prompt], 10).tokens[0], f"row {row}"


def test_left_pad_layout():
    ids, mask, pos = left_pad([[1, 2, 3], [4]], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]
    with pytest.raises(DataError):
        left_pad([[1], []], 0)


def test_sampling_is_seeded_and_top_k_1_is_greedy(session):
    s = session("llama-tiny", 18)
    hot = SamplingOptions(greedy=False, temperature=5.0, seed=3)
    first = generate(s, PROMPTS, 12, sampling=hot).tokens
    assert generate(s, PROMPTS, 12, sampling=hot).tokens == first
    other = generate(s, PROMPTS, 12, sampling=SamplingOptions(greedy=False, temperature=5.0, seed=4)).tokens
    assert other != first
    assert (
        first != generate(s, PROMPTS, 12).tokens
    )  # sampling at T=5 is not greedy on a 1000-token vocabulary
    top1 = SamplingOptions(greedy=False, top_k=1, seed=0)
    assert generate(s, PROMPTS, 8, sampling=top1).tokens == generate(s, PROMPTS, 8).tokens
    tiny_p = SamplingOptions(greedy=False, top_p=1e-6, seed=0)
    assert generate(s, PROMPTS, 8, sampling=tiny_p).tokens == generate(s, PROMPTS, 8).tokens


def test_eos_stops_a_row(session):
    s = session("llama-tiny", 18)
    free = generate(s, [PROMPTS[0]], 6).tokens[0]
    stopped = generate(s, [PROMPTS[0]], 6, eos_id=free[2]).tokens[0]
    assert stopped == free[: free.index(free[2]) + 1]


def test_empty_state_follows_the_input_specs(session):
    s = session("llama-tiny", 23)
    state = s.empty_state(3)
    assert sorted(state) == ["past.0.key", "past.0.value", "past.1.key", "past.1.value"]
    assert all(a.shape == (3, 2, 0, 16) and a.dtype == np.float32 for a in state.values())


def test_refuses_a_model_without_cache(sample_path):
    with pytest.raises(ParekitError, match="no past"):
        DecoderSession(sample_path("minilm", 18))


def test_bad_sampling_options():
    with pytest.raises(DataError, match="top-p"):
        SamplingOptions(greedy=False, top_p=0.0).validate()
    with pytest.raises(DataError, match="temperature"):
        SamplingOptions(greedy=False, temperature=0.0).validate()
