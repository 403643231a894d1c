"""``parekit export triton`` / ``parekit export validate`` from the command line: what a user runs, and
every bad request as a one-line error with nothing written and the input untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    assert "\x1b" not in result.output
    return lines[0]


def test_export_then_validate_a_token_pruned_encoder(run_cli, sample_path, tmp_path):
    model = tmp_path / "minilm.p.onnx"
    run_cli("optimize", sample_path("minilm"), "--passes", "token-prune{keep=0.5,layers=[2]}", "-o", model)
    before = _digest(model)
    result = run_cli("export", "triton", model, "-o", tmp_path / "repo", "--json")
    report = json.loads(result.stdout)
    assert report["name"] == "minilm_p" and report["backend"] == "onnxruntime" and report["kind"] == "encoder"
    assert report["files"] == ["1/model.onnx", "config.pbtxt"]
    assert _digest(model) == before
    out = run_cli("export", "validate", tmp_path / "repo").output
    assert "minilm_p" in out and "1 model(s) valid" in out
    listed = json.loads(run_cli("export", "validate", tmp_path / "repo", "--json").stdout)
    assert listed[0]["checked"][-1] == "I/O against the graph"
    # a second model joins the repository; the first stays
    run_cli("export", "triton", model, "-o", tmp_path / "repo", "--backend", "python", "--name", "minilm_py",
            "--instances", "2", "--max-batch", "4", "--threads", "1")
    text = (tmp_path / "repo" / "minilm_py" / "config.pbtxt").read_text()
    assert "count: 2" in text and "max_batch_size: 4" in text
    assert 'key: "intra_op_thread_count"' in text and 'string_value: "1"' in text
    assert len(json.loads(run_cli("export", "validate", tmp_path / "repo", "--json").stdout)) == 2


def test_an_existing_model_folder_is_replaced_only_with_overwrite(run_cli, sample_path, tmp_path):
    repo = tmp_path / "repo"
    run_cli("export", "triton", sample_path("minilm"), "-o", repo, "--name", "m")
    config = repo / "m" / "config.pbtxt"
    first = config.read_text()
    result = run_cli("export", "triton", sample_path("minilm"), "-o", repo, "--name", "m", "--max-batch", "2", code=2)
    assert "exists" in _error_line(result)
    assert config.read_text() == first
    run_cli("export", "triton", sample_path("minilm"), "-o", repo, "--name", "m", "--max-batch", "2", "--overwrite")
    assert "max_batch_size: 2" in config.read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["m"]  # no staging or old folders left


@pytest.mark.parametrize("args,word", [
    (["--name", "../evil"], "not a Triton model folder name"),
    (["--name", "a\x1b[31mred"], "not a Triton model folder name"),
    (["--backend", "tensorrt"], "give --plan"),
    (["--plan", "PLAN"], "--plan is for the tensorrt backend"),
    (["--backend", "tensorrt", "--plan", "MISSING.plan"], "not a file"),
    (["--backend", "tensorrt", "--plan", "PLAN", "--device", "cpu"], "GPUs only"),
    (["--max-batch", "5000"], "5000"),
    (["--backend", "triton"], "triton"),
])
def test_bad_requests_are_one_line_errors_and_write_nothing(run_cli, sample_path, tmp_path, args, word):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    args = [str(plan) if a == "PLAN" else str(tmp_path / a) if a.endswith(".plan") else a for a in args]
    before = _digest(sample_path("minilm"))
    result = run_cli("export", "triton", sample_path("minilm"), "-o", tmp_path / "repo", *args, code=2)
    assert word in result.output, result.output
    assert not (tmp_path / "repo").exists() or list((tmp_path / "repo").iterdir()) == []
    assert _digest(sample_path("minilm")) == before


def test_bad_models_are_one_line_errors(run_cli, tmp_path, sample_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01not a model")
    assert "garbage.onnx" in _error_line(run_cli("export", "triton", garbage, "-o", tmp_path / "repo", code=2))
    missing = run_cli("export", "triton", tmp_path / "nope.onnx", "-o", tmp_path / "repo", code=2)
    assert "no such file" in _error_line(missing)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in _error_line(run_cli("export", "triton", sample_path("minilm"), "-o", a_file, code=2))
    assert "not a folder" in _error_line(run_cli("export", "validate", tmp_path / "nowhere", code=2))
    (tmp_path / "empty").mkdir()
    assert "no model folder" in _error_line(run_cli("export", "validate", tmp_path / "empty", code=2))


def test_hostile_tensor_names_are_refused_and_neutralized(run_cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    name = "x\x1b[2J\nrm -rf"
    graph = helper.make_graph([helper.make_node("Relu", [name], ["y"])], "g",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    path = tmp_path / "hostile.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    line = _error_line(run_cli("export", "triton", path, "-o", tmp_path / "repo", code=2))
    assert "is not a name Triton can serve" in line
    assert not (tmp_path / "repo").exists() or list((tmp_path / "repo").iterdir()) == []


def test_a_decoder_on_tensorrt_needs_the_state_reset_graph(run_cli, sample_path, tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    result = run_cli("export", "triton", sample_path("llama-tiny"), "-o", tmp_path / "repo", "--backend", "tensorrt",
                     "--plan", plan, code=2)
    assert "'start' input" in _error_line(result) and "state-reset" in result.output
    bad = run_cli("export", "triton", sample_path("llama-tiny"), "-o", tmp_path / "repo", "--backend", "python",
                  "--max-batch", "0", code=2)
    assert "--max-batch ≥ 1" in _error_line(bad)
