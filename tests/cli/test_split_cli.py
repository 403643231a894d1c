"""``parekit split`` and segments directories through optimize, inspect, check and bench; refusals."""

from __future__ import annotations

import json
import shutil

import pytest

SMALL = ("--batch", "2", "--seq", "8", "--samples", "2")


@pytest.fixture()
def tiny(sample_path, tmp_path):
    """A copy of llama-tiny (opset 23, KV cache, 2 layers) in tmp_path."""
    path = tmp_path / "llama.onnx"
    shutil.copy(sample_path("llama-tiny", 23), path)
    return path


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_split_at_layers_then_check_and_bench_the_directory(run_cli, tiny, tmp_path):
    out = tmp_path / "segs"
    res = run_cli("split", tiny, "-o", out, "--at", "0")
    assert "2 segments, cut after layers [0]" in res.output and "segment1.onnx" in res.output
    assert _listing(out) == ["manifest.json", "segment0.onnx", "segment1.onnx"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "llama.onnx" and manifest["exits"] is None and manifest["kind"] == "decoder"
    for pair in ((tiny, out), (out, tiny)):  # a directory on either side
        res = run_cli("check", *pair, "--threshold", "max_abs=1e-5", *SMALL)
        assert "parity: all thresholds met" in res.output
    report = json.loads(run_cli("bench", tiny, out, "--iters", "2", "--warmup", "0", "--no-memory", *SMALL,
                                "--json").output)
    assert [m["model"] for m in report["models"]] == [str(tiny), str(out)]
    info = json.loads(run_cli("split", tiny, "-o", tmp_path / "again", "--at", "0", "--json").output)
    assert info["cuts"] == [0] and [s["layers"] for s in info["segments"]] == [[0, 0], [1, 1]]
    assert all(s["bytes"] > 0 for s in info["segments"])


def test_optimize_with_form_segments_writes_a_directory_with_exits(run_cli, tiny, tmp_path):
    out = tmp_path / "x"
    res = run_cli("optimize", tiny, "--passes", "early-exit{layers=[0],threshold=2.0,form=segments}", "-o", out)
    assert "2 segments" in res.output and "wrote" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exits"]["form"] == "segments" and manifest["segments"][0]["exit"]["layer"] == 0
    text = run_cli("inspect", out).output
    assert "early exits" in text and "segment0.onnx" in text and "margin" in text
    info = json.loads(run_cli("inspect", out, "--json").output)
    assert info["segments"][0]["exit"]["take"] == "exit0.take" and info["exits"]["exits"][0]["layer"] == 0
    # the threshold never fires: exits on or off, the outputs every row gets are the original's
    for flag in ("--exits", "--no-exits"):
        res = run_cli("check", tiny, out, "--threshold", "max_abs=1e-5", flag, *SMALL, "--json")
        report = json.loads(res.output)
        assert report["passed"] and "logits" in report["outputs"]
        assert ("present.1.key" in report["outputs"]) == (flag == "--no-exits")


def test_split_cuts_at_the_recorded_exits_and_inspect_shows_them(run_cli, tiny, tmp_path):
    model = tmp_path / "x.onnx"
    run_cli("optimize", tiny, "--passes", "early-exit{layers=[0],threshold=0.5}", "-o", model)
    assert json.loads(run_cli("inspect", model, "--json").output)["exits"]["exits"][0]["threshold"] == 0.5
    assert "early exits (form=outputs" in run_cli("inspect", model, "--no-layers").output
    out = tmp_path / "segs"
    run_cli("split", model, "-o", out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exits"]["exits"][0]["layer"] == 0 and manifest["segments"][0]["exit"]["layer"] == 0
    res = run_cli("check", model, out, "--no-exits", "--threshold", "max_abs=1e-5", *SMALL)
    assert "parity: all thresholds met" in res.output
    assert json.loads(run_cli("inspect", tiny, "--json").output)["exits"] is None


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("--at", "1"), "cannot cut after the last layer (1)"),
        (("--at", "7"), "out of range"),
        (("--at", "0,x"), "expected layer numbers separated by commas"),
        ((), "records no exits"),
    ],
)
def test_bad_cuts_are_refused_and_nothing_is_written(run_cli, tiny, tmp_path, args, text):
    res = run_cli("split", tiny, "-o", tmp_path / "segs", *args, code=2)
    assert res.output.startswith("error:") and text in res.output
    assert _listing(tmp_path) == ["llama.onnx"]


def test_existing_output_is_refused_and_untouched(run_cli, tiny, tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "keep").write_text("mine")
    (tmp_path / "file").write_text("mine")
    for target in ("dir", "file"):
        res = run_cli("split", tiny, "-o", tmp_path / target, "--at", "0", code=2)
        assert "error:" in res.output and "exists" in res.output
        res = run_cli("optimize", tiny, "--passes", "early-exit{layers=[0],threshold=2.0,form=segments}",
                      "-o", tmp_path / target, code=2)
        assert "exists" in res.output or "is a directory" in res.output  # (click refuses a folder itself)
    assert (tmp_path / "dir" / "keep").read_text() == "mine" and (tmp_path / "file").read_text() == "mine"
    assert _listing(tmp_path) == ["dir", "file", "llama.onnx"]


def test_malformed_directories_get_one_line_errors(run_cli, tiny, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (("check", tiny, empty), ("bench", empty), ("inspect", empty)):
        res = run_cli(*command, code=2)
        assert res.output.startswith("error:") and "has no manifest.json" in res.output
    out = tmp_path / "segs"
    run_cli("split", tiny, "-o", out, "--at", "0")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["segments"][1]["file"] = "../llama.onnx"
    (out / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli("check", tiny, out, *SMALL, code=2)
    assert "is not a plain file name inside the directory" in res.output and len(res.output.splitlines()) <= 2
