"""``parekit build`` end to end with TensorRT-RTX's CPU-only builder: plans, reports, and errors.

Skipped where ``tensorrt_rtx`` is not installed (``pip install 'parekit[tensorrt-rtx]'``). Every build runs
in a subprocess, so nothing TensorRT does can take the test session down.
"""

from __future__ import annotations

import importlib.util
import json

import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")


def _facts(path):
    return json.loads(path.read_text())


def _consistent(report):
    """Every profile point of a decoder: attention_mask's total = past + seq, batch shared by all inputs."""
    inputs = report["profile"]["inputs"]
    for point in ("min", "opt", "max"):
        batch = {shape[point][0] for shape in inputs.values()}
        assert len(batch) == 1, (point, inputs)


def test_builds_a_decoder_and_reports_it(run_cli, sample_path, tmp_path):
    plan, report = tmp_path / "m.plan", tmp_path / "r.json"
    run_cli("build", sample_path("llama-tiny", 18), "-o", plan, "--backend", "tensorrt-rtx", "--report", report,
            "--profile", "past=0,64,256", "--profile", "seq=1,1,32")
    facts = _facts(report)
    assert plan.stat().st_size == facts["plan_bytes"] > 0
    assert facts["backend"] == "tensorrt-rtx" and facts["version"].startswith("1.")
    assert facts["kind"] == "decoder" and facts["precision"] == "fp32" and facts["layers"] > 100
    assert facts["profile"]["dims"]["total"] == {"min": 1, "opt": 65, "max": 288, "from": "past + seq"}
    inputs = facts["profile"]["inputs"]
    assert inputs["past.0.key"]["max"][2] + inputs["input_ids"]["max"][1] == inputs["attention_mask"]["max"][1]
    _consistent(facts)
    assert facts["parekit_nodes"] == []  # an unmodified export


def test_kv_quant_state_profile_and_inlined_nodes(run_cli, sample_path, tmp_path):
    optimized = tmp_path / "q.onnx"
    run_cli("optimize", sample_path("llama-tiny", 18), "--passes", "kv-quant{bits=4,group=8,residual=4}", "-o", optimized)
    report = tmp_path / "r.json"
    run_cli("build", optimized, "-o", tmp_path / "q.plan", "--backend", "tensorrt-rtx", "--report", report,
            "--profile", "past=0,40,200")
    facts = _facts(report)
    dims = facts["profile"]["dims"]
    assert dims["res_tokens"]["max"] == 4 + 8 - 1  # residual + group - 1: the float window's largest size
    inputs = facts["profile"]["inputs"]
    for point in ("min", "opt", "max"):  # one real state per point
        codes = inputs["past.0.key.codes"][point][2]
        res = inputs["past.0.key.res"][point][2]
        assert res + codes + inputs["input_ids"][point][1] == inputs["attention_mask"][point][1], point
        assert inputs["past.0.key.scale"][point][2] * 8 == codes  # q_groups = q_tokens / group
    nodes = facts["parekit_nodes"]
    assert nodes and all(n["becomes"] == "function body" and "no plugin layers" in n["reason"] for n in nodes)
    _consistent(facts)


def test_opset23_attention_builds_decomposable_or_fails_with_the_documented_error(run_cli, sample_path, tmp_path):
    model = sample_path("minilm", 23)
    report = tmp_path / "r.json"
    run_cli("build", model, "-o", tmp_path / "a.plan", "--backend", "tensorrt-rtx", "--report", report)
    assert any("marked decomposable" in n for n in _facts(report)["notes"])
    plan = tmp_path / "b.plan"
    result = run_cli("build", model, "-o", plan, "--backend", "tensorrt-rtx", "--fused-attention", code=2)
    assert "cannot build the Attention op" in result.output and "--precision fp16" in result.output
    assert not plan.exists()
    # the suggested way out: fp16 (explicit casts from the precision pass) has a fused kernel
    run_cli("build", model, "-o", plan, "--backend", "tensorrt-rtx", "--fused-attention", "--precision", "fp16",
            "--report", report)
    facts = _facts(report)
    assert facts["precision"] == "fp16" and facts["precision_pass"]["spec"].startswith("precision{dtype=fp16")
    assert not any("marked decomposable" in n for n in facts["notes"])


def test_parser_rejection_names_the_node_and_op(run_cli, tmp_path):
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="acme", name="evil\x1b[31mnode")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("acme", 1)]), path)
    before = path.read_bytes()
    result = run_cli("build", path, "-o", tmp_path / "bad.plan", "--backend", "tensorrt-rtx", code=2)
    line = next(ln for ln in result.output.splitlines() if ln.startswith("error:"))
    assert "rejected node 'evil\\x1b[31mnode' (op Frobnicate" in line
    assert "\x1b" not in result.output
    assert not (tmp_path / "bad.plan").exists() and path.read_bytes() == before


def test_rtx_refuses_plugins_and_bad_options(run_cli, sample_path, tmp_path):
    model = sample_path("llama-tiny", 18)
    lib = tmp_path / "lib.so"
    lib.write_bytes(b"")
    out = tmp_path / "x.plan"
    result = run_cli("build", model, "-o", out, "--backend", "tensorrt-rtx", "--plugins", lib, code=2)
    assert "TensorRT-RTX has no plugin layers" in result.output
    result = run_cli("build", model, "-o", out, "--backend", "tensorrt-rtx", "--profile", "total=1,2,3", code=2)
    assert "derived from the others" in result.output
    result = run_cli("build", model, "-o", model, "--backend", "tensorrt-rtx", code=2)
    assert "same file as the input" in result.output
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_missing_tensorrt_names_the_extra(run_cli, sample_path, tmp_path):
    result = run_cli("build", sample_path("llama-tiny", 18), "-o", tmp_path / "x.plan", "--no-plugins", code=2)
    assert "pip install 'parekit[tensorrt]'" in result.output
    assert not (tmp_path / "x.plan").exists()


def test_tensorrt_backend_path_with_a_stand_in_module(run_cli, sample_path, tmp_path, monkeypatch):
    """The --backend tensorrt code path (strongly typed network, no plugin library, report), driven through a
    stand-in ``tensorrt`` package that re-exports TensorRT-RTX's API (full TensorRT cannot be installed here)."""
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("a real tensorrt module is installed")
    shim = tmp_path / "shim" / "tensorrt"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("from tensorrt_rtx import *\nfrom tensorrt_rtx import __version__\n")
    monkeypatch.setenv("PYTHONPATH", str(shim.parent))
    report = tmp_path / "r.json"
    optimized = tmp_path / "w.onnx"
    run_cli("optimize", sample_path("gpt2-tiny", 18), "--passes", "kv-window{sink=2,window=30}", "-o", optimized)
    run_cli("build", optimized, "-o", tmp_path / "t.plan", "--backend", "tensorrt", "--no-plugins", "--report", report,
            "--profile", "past=0,16,64")
    facts = _facts(report)
    assert facts["backend"] == "tensorrt" and facts["plugins"]["library"] is None
    nodes = facts["parekit_nodes"]
    assert nodes and all(n["becomes"] == "function body" and n["reason"] == "no plugin library registered" for n in nodes)


def test_python_api_reports_build_phases(sample_path, load_sample, tmp_path):
    from parekit.engines.plan import prepare_build

    path = sample_path("gpt2-tiny", 18)
    prepared = prepare_build(path, load_sample("gpt2-tiny", 18), tmp_path, backend="tensorrt-rtx")
    events: list[dict] = []
    report = prepared.build(tmp_path / "g.plan", library=None, on_progress=events.append)
    assert report["plan_bytes"] == (tmp_path / "g.plan").stat().st_size
    phases = [e for e in events if "steps" in e]
    assert phases and all(isinstance(e["phase"], str) and e["steps"] >= 1 for e in phases)
    assert any(e.get("done") for e in events)
