"""The command line end to end, and its error contract: one line, non-zero exit, no output file,
input untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def tiny(sample_path, tmp_path):
    dest = tmp_path / "llama.onnx"
    shutil.copyfile(sample_path("llama-tiny"), dest)
    return dest


def test_samples_list_names_every_sample(run_cli):
    out = run_cli("samples", "list").output
    for name in ("minilm", "smollm2", "vit", "gpt2-tiny", "llama-tiny"):
        assert name in out


def test_export_inspect_optimize_check_bench(run_cli, tmp_path, sample_path):
    model = tmp_path / "m.onnx"
    run_cli("samples", "export", "gpt2-tiny", "-o", model)
    umask = os.umask(0)
    os.umask(umask)
    assert model.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    info = json.loads(run_cli("inspect", model, "--json").output)
    assert info["num_layers"] == 2 and info["num_heads"] == 4 and info["kind"] == "decoder"
    human = run_cli("inspect", model).output
    assert "gpt2" in human and "past.1.key" in human

    out = tmp_path / "m.d.onnx"
    report = tmp_path / "r.json"
    run_cli("optimize", model, "--passes", "drop-layers{layers=[1]}", "-o", out, "--report", report)
    rep = json.loads(report.read_text())
    assert rep["pipeline"] == "drop-layers{layers=[1],count=0}"
    assert rep["passes"][0]["sites"][0]["layer"] == 1 and rep["passes"][0]["flops_removed"] > 0
    assert json.loads(run_cli("inspect", out, "--json").output)["num_layers"] == 1

    parity = tmp_path / "p.json"
    res = run_cli("check", model, out, "--data", "random", "--dim", "past=2", "--json-file", parity, code=1)
    assert "FAIL" in res.output  # a dropped layer changes the logits beyond the default bound
    payload = json.loads(parity.read_text())
    assert payload["passed"] is False and "logits" in payload["outputs"]
    assert "present.1.key" in json.dumps(payload)  # reported as not compared (only in reference)

    ident = tmp_path / "m.i.onnx"
    run_cli("optimize", model, "--passes", "drop-layers", "-o", ident)
    feeds = tmp_path / "feeds.npz"
    golden = tmp_path / "golden.npz"
    run_cli("check", model, ident, "--data", "random", "--threshold", "max_abs=1e-5",
         "--save-feeds", feeds, "--save-golden", golden)
    run_cli("check", golden, ident, "--data", feeds, "--threshold", "max_abs=1e-5")

    bench = tmp_path / "b.json"
    run_cli("bench", model, out, "--data", "random", "--iters", "3", "--warmup", "1", "--no-memory", "--json-file", bench)
    timings = json.loads(bench.read_text())
    assert len(timings["models"]) == 2


def test_passes_lists_and_documents(run_cli):
    assert "drop-layers" in run_cli("passes").output
    doc = run_cli("passes", "drop-layers").output
    assert "count" in doc and "layers" in doc and "Identity configuration" in doc


BAD_PIPELINES = [
    ("drop-layer{layers=[1]}", "unknown pass", "drop-layers"),  # did-you-mean
    ("drop-layers{layer=[1]}", "layer", "layers"),
    ("drop-layers{count=x}", "count", None),
    ("drop-layers{layers=[1}", "column", None),
    ("drop-layers{layers=[9]}", "out of range", None),
]


@pytest.mark.parametrize(("pipeline", "must", "hint"), BAD_PIPELINES)
def test_bad_pipeline_is_one_line_error_and_writes_nothing(run_cli, tiny, tmp_path, pipeline, must, hint):
    before = _digest(tiny)
    out = tmp_path / "o.onnx"
    res = run_cli("optimize", tiny, "--passes", pipeline, "-o", out, code=2)
    first = res.output.strip().splitlines()[0]
    assert first.startswith("error:") and must in res.output
    if hint:
        assert hint in res.output
    assert not out.exists() and not list(tmp_path.glob(".o.onnx*"))
    assert _digest(tiny) == before


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all", "truncate"])
def test_malformed_model_is_refused(run_cli, tmp_path, tiny, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(tiny.read_bytes()[:5000] if content == "truncate" else content)
    out = tmp_path / "o.onnx"
    for args in (("inspect", bad), ("optimize", bad, "--passes", "drop-layers", "-o", out)):
        res = run_cli(*args, code=2)
        assert res.output.startswith("error:") and "bad.onnx" in res.output
    assert not out.exists()


def test_missing_file_and_same_output(run_cli, tmp_path, tiny):
    res = run_cli("inspect", tmp_path / "nope.onnx", code=2)
    assert "nope.onnx" in res.output and "error:" in res.output
    before = _digest(tiny)
    res = run_cli("optimize", tiny, "--passes", "drop-layers{layers=[1]}", "-o", tiny, code=2)
    assert "same file as the input" in res.output and _digest(tiny) == before


def test_model_without_transformer_structure(run_cli, tmp_path):
    import onnx

    proto = onnx.parser.parse_model(
        '<ir_version: 10, opset_import: ["" : 18]> g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }'
    )
    path = tmp_path / "relu.onnx"
    onnx.save(proto, path)
    out = tmp_path / "o.onnx"
    res = run_cli("optimize", path, "--passes", "drop-layers{layers=[0]}", "-o", out, code=2)
    assert "no transformer blocks found" in res.output and not out.exists()


def test_count_without_calibration_says_how_to_give_it(run_cli, tiny, tmp_path):
    res = run_cli("optimize", tiny, "--passes", "drop-layers{count=1}", "-o", tmp_path / "o.onnx", code=2)
    assert "calibration" in res.output


def test_unknown_sample_did_you_mean(run_cli, tmp_path):
    res = run_cli("samples", "export", "minilml", "-o", tmp_path / "x.onnx", code=2)
    assert "minilm" in res.output and not (tmp_path / "x.onnx").exists()


def test_paths_with_brackets_print_verbatim(run_cli, tiny, tmp_path):
    odd = tmp_path / "[x]"
    odd.mkdir()
    path = odd / "m.onnx"
    shutil.copyfile(tiny, path)
    assert "[x]" in run_cli("inspect", path, "--no-layers").output


def test_unwritable_report_leaves_no_model(run_cli, tiny, tmp_path):
    out = tmp_path / "o.onnx"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = run_cli("optimize", tiny, "--passes", "drop-layers{layers=[1]}", "-o", out, "--report", blocker / "r.json", code=2)
    assert res.output.startswith("error:") and not out.exists()


def test_print_ir_after_and_random_calibration_on_a_decoder(run_cli, tiny, tmp_path):
    out = tmp_path / "o.onnx"
    report = tmp_path / "r.json"
    res = run_cli("optimize", tiny, "--passes", "drop-layers{count=1}", "--calib", "random", "--dim", "past=4",
               "--samples", "4", "--batch", "2", "--seq", "8", "-o", out, "--report", report, "--print-ir-after")
    assert "IR after drop-layers" in res.output and "graph(" in res.output
    (rep,) = json.loads(report.read_text())["passes"]
    assert len(rep["extra"]["influence"]) == 2 and "random" in rep["extra"]["calibration"]


def test_text_data_on_an_image_sample_says_why(run_cli, sample_path, tmp_path):
    vit = sample_path("vit")
    res = run_cli("check", vit, vit, "--data", "text", code=2)
    assert "image model" in res.output


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize(
    ("name", "layers", "heads", "kv_heads"),
    [("minilm", 6, 12, 12), ("vit", 12, 12, 12), ("gpt2-tiny", 2, 4, 4), ("llama-tiny", 2, 4, 2),
     pytest.param("smollm2", 30, 9, 3, marks=pytest.mark.slow)],
)
def test_inspect_json_counts_on_every_sample(run_cli, sample_path, name, layers, heads, kv_heads, opset):
    info = json.loads(run_cli("inspect", sample_path(name, opset), "--json").output)
    assert (info["num_layers"], info["num_heads"], info["num_kv_heads"]) == (layers, heads, kv_heads)
    assert info["opset"] == opset and len(info["layers"]) == layers
