"""``parekit generate`` and ``parekit eval`` on the tiny decoders, and their one-line errors."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest


@pytest.fixture()
def tiny(sample_path, tmp_path):
    dest = tmp_path / "llama.onnx"
    shutil.copyfile(sample_path("llama-tiny", 23), dest)
    return dest


@pytest.fixture()
def anonymous(sample_path, tmp_path):
    """llama-tiny without its zoo metadata: parekit cannot know its tokenizer."""
    proto = onnx.load(str(sample_path("llama-tiny", 18)))
    kept = [p for p in proto.metadata_props if p.key != "parekit.sample"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    dest = tmp_path / "anon.onnx"
    onnx.save(proto, str(dest))
    return dest


def test_generate_greedy_and_sampled(run_cli, tiny):
    out = run_cli("generate", tiny, "--prompt", "Hello", "--prompt", "Hi", "--max-new-tokens", "6")
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Hello") and lines[1].startswith("Hi")
    assert (
        "prefill: 7 tokens" in out.stderr and "tokens/s" in out.stderr and "decode: 10 tokens" in out.stderr
    )
    args = (
        "generate",
        tiny,
        "--prompt",
        "Hello",
        "--sample",
        "--temperature",
        "3",
        "--top-k",
        "50",
        "--seed",
        "7",
    )
    assert run_cli(*args).stdout == run_cli(*args).stdout


def test_optimize_then_eval_side_by_side(run_cli, tiny, tmp_path):
    windowed = tmp_path / "w.onnx"
    run_cli("optimize", tiny, "--passes", "kv-window{sink=2,window=14}", "-o", windowed)
    res = run_cli("eval", tiny, windowed, "--task", "ppl", "--data", "text", "--ctx", "48", "--json")
    payload = json.loads(res.stdout)
    full, win = payload["models"]
    assert payload["ctx"] == 48 and full["tokens_all"] == win["tokens_all"] == 47
    assert full["top1_agreement_all"] == 1.0 and 0 < win["top1_agreement_all"] <= 1.0
    assert full["tokens_decode"] == win["tokens_decode"] == 47 - payload["prefill"]
    assert full["top1_agreement_decode"] == 1.0 and 0 < win["top1_agreement_decode"] <= 1.0
    assert win["kv_bytes"] == 16 * full["kv_bytes"] // 47  # 16 of the 47 tokens fed at the last step
    assert full["ppl_all"] > 1 and win["ppl_all"] > 1 and full["ppl_decode"] > 1
    table = run_cli("eval", tiny, windowed, "--ctx", "32", "--json-file", tmp_path / "e.json").stdout
    assert "top-1 agree" in table and json.loads((tmp_path / "e.json").read_text())["ctx"] == 32
    assert run_cli("generate", windowed, "--prompt", "abc", "--max-new-tokens", "30").stdout.startswith("abc")


def test_unknown_tokenizer_is_a_one_line_error(run_cli, anonymous):
    res = run_cli("generate", anonymous, "--prompt", "x", code=2)
    assert "not a parekit zoo sample" in res.output and "--tokenizer" in res.output
    assert "Traceback" not in res.output
    assert run_cli(
        "generate", anonymous, "--prompt", "x", "--tokenizer", "bytes", "--max-new-tokens", "3"
    ).stdout.startswith("x")
    bad = run_cli("eval", anonymous, "--tokenizer", "/nonexistent", code=2)
    assert "not a folder" in bad.output


def test_encoder_and_bad_context_are_refused(run_cli, sample_path, tiny):
    res = run_cli("generate", sample_path("minilm", 18), "--prompt", "x", code=2)
    assert "no past" in res.output
    assert "--prefill" in run_cli("eval", tiny, "--ctx", "8", "--prefill", "8", code=2).output
    assert "no such model file" in run_cli("eval", "missing.onnx", code=2).output
