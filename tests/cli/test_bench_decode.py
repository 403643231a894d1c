"""``parekit bench-decode`` and :func:`parekit.runtime.compare.compare_decoding`."""

from __future__ import annotations

import json

from parekit.runtime import DecoderSession
from parekit.runtime.compare import Outcome, compare_decoding, speculative_config
from parekit.runtime.drafters import NgramDrafter


def test_bench_decode_reports_identical_output_and_stats(sample_path, run_cli, tmp_path):
    out = tmp_path / "r.json"
    path = sample_path("llama-tiny")
    result = run_cli("bench-decode", path, "--tokenizer", "bytes", "--prompts", 2, "--words", 8,
                     "--max-new-tokens", 24, "--speculate", "ngram", "--speculate", "ngram:2", "--json-file", out)
    assert "| speculate ngram:4 |" in result.stdout and "| speculate ngram:2 |" in result.stdout
    payload = json.loads(out.read_text())
    rows = {r["name"]: r for r in payload["rows"]}
    assert list(rows) == ["plain", "speculate ngram:4", "speculate ngram:2"]
    for name in ("speculate ngram:4", "speculate ngram:2"):
        r = rows[name]
        assert r["identical"] == 2 and r["decode_tokens"] == rows["plain"]["decode_tokens"] == 2 * 23
        assert r["runs"] <= r["decode_tokens"] and r["produced"] == r["decode_tokens"]
        assert len(r["per_prompt_speedup"]) == 2


def test_bench_decode_refuses_bad_drafter_and_missing_model(sample_path, run_cli, tmp_path):
    bad = run_cli("bench-decode", sample_path("llama-tiny"), "--tokenizer", "bytes", "--speculate", "nope\x1b[31m",
                  code=2)
    assert "unknown drafter" in bad.output and "\x1b" not in bad.output
    missing = run_cli("bench-decode", tmp_path / "none.onnx", code=2)
    assert "none.onnx" in missing.output


def test_compare_counts_a_wrong_configuration_as_not_identical(sample_path):
    session = DecoderSession(sample_path("llama-tiny"))
    good = speculative_config(session, NgramDrafter(), 4)

    def wrong(prompt, n):
        got = good(prompt, n)
        return Outcome([*got.tokens[:-1], (got.tokens[-1] + 1) % 1000], got.decode_s, got.counts)

    prompts = [[5, 6, 7, 8, 5, 6, 7], [11, 12, 13]]
    report = compare_decoding(session, prompts, 12, [("good", "speculate", good), ("wrong", "speculate", wrong)])
    good_row, wrong_row = report.rows[1:]
    assert good_row.identical == 2 and wrong_row.identical == 0
    assert wrong_row.agree == 2 * 11 and good_row.agree == 2 * 12  # equal up to the changed last token
    assert "| wrong |" in report.markdown()


def test_bench_decode_with_exit_policies(sample_path, run_cli, tmp_path):
    out = tmp_path / "e.json"
    run_cli("bench-decode", sample_path("llama-tiny"), "--tokenizer", "bytes", "--prompts", 1, "--words", 8,
            "--max-new-tokens", 12, "--exit", "full", "--exit", "d3:0.5", "--exit-every", 1, "--json-file", out)
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    full, d3 = rows["exit full"], rows["exit d3:0.5"]
    assert full["kind"] == "exit" and full["agree"] == full["total"] == 12  # the pieces at full depth: plain
    assert full["layers"] == 2 * 11 and full["counted"] == 11
    assert d3["layers"] < full["layers"]  # D³ at 0.5 runs one of two layers after the first steps
    bad = run_cli("bench-decode", sample_path("llama-tiny"), "--tokenizer", "bytes", "--exit", "d3:7", code=2)
    assert "d3" in bad.output
