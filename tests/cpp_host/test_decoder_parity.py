"""The C++ host's greedy tokens equal ``parekit.runtime.generate``'s, token for token.

llama-tiny (opset 18 and 23) unmodified and under every KV pass, at configurations that really drop,
evict or quantize tokens with these prompts (10 prompt tokens + 12 new ones against budgets of 6-8 and
residual windows of 2), with and without ``libparekit_ort.so`` registered on both sides; a batch of
two left-padded rows; and the host's one-line errors at its edge. Both sides run the same ONNX Runtime
release (the host dlopens the imported wheel's library) with the same session options.
"""

from __future__ import annotations

import subprocess

import pytest

from parekit.runtime import DecoderSession, generate

PIPELINES = [
    "",
    "kv-window{sink=2,window=6}",
    "kv-evict{budget=8,policy=h2o,sink=1,recent=2,decay=0.9}",
    "kv-evict{budget=8,policy=snapkv,sink=1,recent=2}",
    "kv-quant{bits=8,group=4,residual=2}",
    "kv-quant{bits=4,group=4,residual=2}",
    "kv-quant{bits=8,group=4,residual=2,fused=false}",
    "kv-quant{bits=4,group=4,residual=2,fused=false}",
    # the state-reset pass's BOOL start input (Triton's implicit state): the host feeds it true after reset()
    "state-reset",
    "kv-quant{bits=8,group=4,residual=2},state-reset",
]
PROMPT = [11, 402, 87, 5, 913, 250, 64, 3, 777, 38]
BATCH = [[11, 402, 87, 5, 913, 250, 64, 3, 777, 38], [9, 120, 44]]
NEW_TOKENS = 12


def _python_tokens(path, prompts, native: bool) -> list[list[int]]:
    session = DecoderSession(path, native=native)
    return generate(session, prompts, NEW_TOKENS).tokens


@pytest.mark.parametrize("native", [False, True], ids=["bodies", "kernels"])
@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("pipeline", PIPELINES, ids=[p or "unmodified" for p in PIPELINES])
def test_greedy_ids_equal_python(run_host, optimized, request, pipeline, opset, native):
    path = optimized("llama-tiny", opset, pipeline)
    custom_ops = request.getfixturevalue("ort_custom_ops") if native else None
    expected = _python_tokens(path, [PROMPT], native)
    got = run_host("generate", path, [PROMPT], max_new_tokens=NEW_TOKENS, custom_ops=custom_ops)
    assert got["tokens"] == expected, f"{pipeline or 'unmodified'} opset {opset}"
    assert got["decode_steps"] == NEW_TOKENS - 1 and got["prompt_tokens"] == len(PROMPT)
    assert got["state_bytes"] > 0 and got["decode_tokens_per_s"] > 0


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("pipeline", ["", "kv-window{sink=2,window=6}", "kv-quant{bits=4,group=4,residual=2}"])
def test_left_padded_batch_equals_python(run_host, optimized, pipeline, opset):
    path = optimized("llama-tiny", opset, pipeline)
    got = run_host("generate", path, BATCH, max_new_tokens=NEW_TOKENS)
    assert got["tokens"] == _python_tokens(path, BATCH, native=False)


def test_state_bytes_follow_the_pass(run_host, optimized):
    """A bounded cache carries fewer bytes than the full one after the same tokens (the state is real)."""
    full = run_host("generate", optimized("llama-tiny", 18, ""), [PROMPT], max_new_tokens=NEW_TOKENS)
    window = run_host("generate", optimized("llama-tiny", 18, PIPELINES[1]), [PROMPT], max_new_tokens=NEW_TOKENS)
    # full: 2 layers x (key, value) x 2 heads x 21 tokens x 16 x 4 bytes; window: 8 tokens
    assert full["state_bytes"] == 2 * 2 * 2 * 21 * 16 * 4
    assert window["state_bytes"] == 2 * 2 * 2 * 8 * 16 * 4


def test_embedded_bytes_give_the_same_tokens(run_host, optimized):
    path = optimized("llama-tiny", 23, PIPELINES[4])
    from_file = run_host("generate", path, [PROMPT], max_new_tokens=6)
    from_memory = run_host("generate", path, [PROMPT], max_new_tokens=6, extra=["--from-memory"])
    assert from_file["tokens"] == from_memory["tokens"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "MODEL", "--ids", "1,a"], "'1,a' is not a comma-separated list of integers"),
        (["generate", "MODEL", "--ids", "1", "--custom-ops", "/nonexistent.so"], "/nonexistent.so: no such file"),
        (["generate", "/nonexistent/model.onnx", "--ids", "1"], "no such model file"),
        (["generate", "MODEL", "--ids", "1", "--ort", "/nonexistent.so.1"], "ONNX Runtime library /nonexistent.so.1: no such file"),
        (["generate", "MODEL", "--ids", "1", "--max-new-tokens", "0"], "--max-new-tokens must be in"),
    ],
)
def test_errors_are_one_line(host_binary, optimized, args, message):
    model = str(optimized("llama-tiny", 18, ""))
    done = subprocess.run([str(host_binary), *[model if a == "MODEL" else a for a in args]], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parekit-host: error: ") and message in lines[0], done.stderr
