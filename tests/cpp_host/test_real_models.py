"""Real weights through the C++ host: SmolLM2-135M greedy ids equal the Python runtime's under kv-window,
kv-evict and kv-quant on a few prompts; MiniLM's encoder outputs equal ONNX Runtime in Python within
1e-5 (unmodified and token-merged, with and without ``libparekit_ort.so``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from parekit.frontends import zoo
from parekit.runtime import DecoderSession, generate

pytestmark = pytest.mark.slow  # SmolLM2-135M and MiniLM-L6 real weights: seconds per case on 2 cores

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
]
SMOLLM2_PIPELINES = [
    "kv-window{sink=4,window=12}",
    "kv-evict{budget=16,policy=h2o,sink=4,recent=4,decay=0.99}",
    "kv-evict{budget=16,policy=snapkv,sink=4,recent=4}",
    "kv-quant{bits=8}",
    "kv-quant{bits=4,group=32,residual=8}",
]
NEW_TOKENS = 16


# Each SmolLM2 case optimizes and loads the real model (about a minute on CI's two cores): CI runs one KV pass
# of each kind, with function bodies or kernels; llama-tiny (test_decoder_parity.py) covers every pass x both.
# PAREKIT_HOST_FULL=1 runs every pipeline with and without the native library.
_FULL = os.environ.get("PAREKIT_HOST_FULL") == "1"
SMOLLM2_CASES = (
    [(p, n) for p in SMOLLM2_PIPELINES for n in (False, True)]
    if _FULL
    else [(SMOLLM2_PIPELINES[0], False), (SMOLLM2_PIPELINES[1], True), (SMOLLM2_PIPELINES[3], True)]
)


@pytest.mark.parametrize(("pipeline", "native"), SMOLLM2_CASES,
                         ids=[f"{p}-{'kernels' if n else 'bodies'}" for p, n in SMOLLM2_CASES])
def test_smollm2_greedy_ids_equal_python(run_host, optimized, request, pipeline, native):
    path = optimized("smollm2", 23, pipeline)
    custom_ops = request.getfixturevalue("ort_custom_ops") if native else None
    tok = zoo.get_sample("smollm2").tokenizer()
    session = DecoderSession(path, native=native)
    for text in PROMPTS:
        ids = tok.encode(text)
        expected = generate(session, [ids], NEW_TOKENS).tokens
        got = run_host("generate", path, [ids], max_new_tokens=NEW_TOKENS, custom_ops=custom_ops)
        assert got["tokens"] == expected, f"{pipeline}: {text!r}"


MINILM_TEXTS = [
    "A short sentence.",
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.",
    "Embedding models map text to vectors.",
]


@pytest.mark.parametrize("native", [False, True], ids=["bodies", "kernels"])
@pytest.mark.parametrize("pipeline", ["", "token-merge{r=2}"], ids=["unmodified", "token-merge"])
def test_minilm_outputs_equal_ort_in_python(run_host, optimized, request, tmp_path, pipeline, native):
    from parekit.backends.ort import OrtRunner

    path = optimized("minilm", 18, pipeline)
    custom_ops = request.getfixturevalue("ort_custom_ops") if native else None
    tok = zoo.get_sample("minilm").tokenizer()
    rows = [tok.encode(t) for t in MINILM_TEXTS]
    # The host's encoder feeds: right padding with id 0, mask 1 over real tokens.
    length = max(len(r) for r in rows)
    ids = np.zeros((len(rows), length), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    expected = OrtRunner(path, native=native).run({"input_ids": ids, "attention_mask": mask})
    got = run_host("encode", path, rows, custom_ops=custom_ops, extra=["--out", str(tmp_path)])
    assert [o["name"] for o in got["outputs"]] == list(expected)
    for out in got["outputs"]:
        array = np.load(out["file"])
        assert list(array.shape) == out["shape"] == list(expected[out["name"]].shape)
        np.testing.assert_allclose(array, expected[out["name"]], atol=1e-5, rtol=0, err_msg=out["name"])
