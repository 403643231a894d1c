"""Real weights: the SmolLM2-135M sample follows the decoder I/O contract and computes what torch does."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.backends.ort import OrtRunner
from parekit.frontends import zoo

pytestmark = pytest.mark.slow  # SmolLM2-135M real weights: export and runs take tens of seconds


@pytest.fixture(scope="module")
def smollm2(sample_path):
    return OrtRunner(sample_path("smollm2", 18))


def _greedy(runner: OrtRunner, prompt_ids: list[int], steps: int) -> list[int]:
    """Prefill, then decode by feeding every present.* output back as past.* (the contract)."""
    specs = {s.name: s for s in runner.input_specs}
    past = {n: np.zeros((1, s.shape[1], 0, s.shape[3]), np.float32) for n, s in specs.items() if n.startswith("past")}
    ids = np.array([prompt_ids], dtype=np.int64)
    seen = 0
    out_ids: list[int] = []
    for _ in range(steps):
        n = ids.shape[1]
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones((1, seen + n), np.int64),
            "position_ids": np.arange(seen, seen + n, dtype=np.int64)[None],
            **past,
        }
        outs = runner.run(feeds)
        past = {"past" + k[len("present"):]: v for k, v in outs.items() if k.startswith("present")}
        seen += n
        nxt = int(outs["logits"][0, -1].argmax())
        out_ids.append(nxt)
        ids = np.array([[nxt]], dtype=np.int64)
    return out_ids


def test_answers_paris_through_the_kv_contract(smollm2):
    tok = zoo.get_sample("smollm2").tokenizer()
    prompt = tok("The capital of France is")["input_ids"]
    text = tok.decode(_greedy(smollm2, prompt, 4))
    assert "Paris" in text, text


def test_prefill_logits_match_torch(torch, smollm2):
    tok = zoo.get_sample("smollm2").tokenizer()
    ids = tok("Python is a programming language that", return_tensors="np")["input_ids"].astype(np.int64)
    module, *_ = zoo.get_sample("smollm2").builder()
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
    }
    for s in smollm2.input_specs:
        if s.name.startswith("past"):
            feeds[s.name] = np.zeros((1, s.shape[1], 0, s.shape[3]), np.float32)
    ours = smollm2.run(feeds)["logits"]
    with torch.no_grad():
        ref = module.lm(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert np.abs(ours - ref).max() <= 5e-3
    assert (ours.argmax(-1) == ref.argmax(-1)).all()
