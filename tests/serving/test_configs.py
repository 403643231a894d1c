"""Every generated config.pbtxt parses with Triton's schema and fits the graph, for every sample, pass and
backend; the validator itself rejects what Triton (or the graph) would."""

from __future__ import annotations

from pathlib import Path

import pytest

from parekit.errors import ParekitError
from parekit.serving import ExportRequest, export_triton, validate_model_dir, validate_repository
from parekit.serving.model_config import parse_config

ENCODER_CASES = [("minilm", ""), ("minilm", "token-prune{keep=0.5,layers=[2]}"),
                 ("minilm", "token-merge{r=4,layers=[1,2]}"), ("minilm", "drop-layers{layers=[4,5]}"),
                 ("vit", ""), ("vit", "token-merge{r=8}")]
DECODER_CASES = [("gpt2-tiny", ""), ("llama-tiny", ""), ("llama-tiny", "kv-window{sink=2,window=6}"),
                 ("llama-tiny", "kv-evict{budget=8,policy=h2o,sink=1,recent=2}"),
                 ("gpt2-tiny", "kv-quant{bits=8,group=4,residual=2}"),
                 ("llama-tiny", "kv-quant{bits=4,group=4,residual=2,fused=false}")]


def _model(load_sample, sample: str, passes: str, opset: int = 18):
    from parekit.passes import run_pipeline

    model = load_sample(sample, opset)
    return run_pipeline(model, passes).model if passes else model


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("sample,passes", ENCODER_CASES, ids=lambda v: v or "unmodified")
def test_encoder_configs_validate_on_every_backend(load_sample, tmp_path, sample, passes, opset):
    model = _model(load_sample, sample, passes, opset)
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"stand-in plan bytes")  # the tensorrt backend's plan is copied, not read
    for backend in ("onnxruntime", "python", "tensorrt"):
        report = export_triton(model, Path("m.onnx"), ExportRequest(
            repo=tmp_path / "repo", name=f"m_{backend}", backend=backend,
            plan=plan if backend == "tensorrt" else None))
        assert "I/O against the graph" in report["validation"]["checked"], backend
        cfg = parse_config(report["config"], backend)
        assert cfg.max_batch_size == 8 and list(cfg.dynamic_batching.preferred_batch_size) == [8]
        assert {i.name for i in cfg.input} == {v.name for v in model.graph.inputs}
        assert {o.name for o in cfg.output} == {v.name for v in model.graph.outputs}
    # the tensorrt folder holds no ONNX model: checking it alone says what it could not check
    summary = validate_model_dir(tmp_path / "repo" / "m_tensorrt")
    assert summary["unchecked"] and summary["kind"] == "unknown"
    assert [s["name"] for s in validate_repository(tmp_path / "repo")] == ["m_onnxruntime", "m_python", "m_tensorrt"]


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("sample,passes", DECODER_CASES, ids=lambda v: v or "unmodified")
def test_python_decoder_configs_validate(load_sample, tmp_path, sample, passes, opset):
    model = _model(load_sample, sample, passes, opset)
    report = export_triton(model, Path("d.onnx"), ExportRequest(repo=tmp_path / "repo", name="d", backend="python"))
    cfg = parse_config(report["config"], "d")
    assert cfg.max_batch_size == 1 and cfg.sequence_batching.oldest.max_candidate_sequences == 16
    assert [c.name for c in cfg.sequence_batching.control_input] == ["START", "END", "CORRID"]
    vocab = model.graph.outputs[0].shape[-1]
    assert list(next(o for o in cfg.output if o.name == "logits").dims) == [vocab]
    assert validate_repository(tmp_path / "repo")[0]["kind"] == "decoder"


def test_encoder_without_a_shared_batch_dim_needs_max_batch_0(tmp_path):
    import onnx
    import onnx_ir as ir
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    onnx.checker.check_model(ir.to_proto(model))
    with pytest.raises(ParekitError, match="axis 0 is not one symbolic batch dim.*x\\[0\\]=3"):
        export_triton(model, Path("fixed.onnx"), ExportRequest(repo=tmp_path / "repo"))
    assert not (tmp_path / "repo" / "fixed").exists()
    report = export_triton(model, Path("fixed.onnx"), ExportRequest(repo=tmp_path / "repo", max_batch=0))
    cfg = parse_config(report["config"], "fixed")
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [3, 4]
    assert not cfg.HasField("dynamic_batching")


def _edit(folder: Path, old: str, new: str) -> None:
    path = folder / "config.pbtxt"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


ENCODER_BREAKS = [
    ('max_batch_size: 8', 'max_batch_size: 8\nmax_batch_sise: 2', "no field named"),
    ('data_type: TYPE_INT64', 'data_type: TYPE_INT65', "TYPE_INT65"),
    ('data_type: TYPE_INT64', 'data_type: TYPE_INT32', "data_type TYPE_INT32, the graph's 'input_ids' is TYPE_INT64"),
    ('dims: 384', 'dims: 385', "dim 1 is 385, the graph's 'last_hidden_state' has 384"),
    ('name: "input_ids"', 'name: "input_idz"', "input 'input_idz' is not a graph input"),
    ('name: "m"', 'name: "other"', "is not the model folder's name"),
    ('backend: "onnxruntime"', 'backend: "pytorch"', "backend 'pytorch'"),
    ('  dims: -1\n}\ninput', '  dims: -1\n  dims: -1\n}\ninput', "have rank 2"),
]


@pytest.mark.parametrize("old,new,message", ENCODER_BREAKS, ids=[b[2][:30] for b in ENCODER_BREAKS])
def test_the_validator_rejects_a_broken_encoder_config(load_sample, tmp_path, old, new, message):
    export_triton(load_sample("minilm"), Path("m.onnx"), ExportRequest(repo=tmp_path / "repo", name="m"))
    folder = tmp_path / "repo" / "m"
    validate_model_dir(folder)
    _edit(folder, old, new)
    with pytest.raises(ParekitError, match=message.replace("[", "\\[").replace("(", "\\(")) as info:
        validate_model_dir(folder)
    assert "config.pbtxt" in str(info.value) and "\n" not in str(info.value).split("\nNote:")[0]


def test_the_validator_rejects_a_broken_decoder_config(load_sample, tmp_path):
    export_triton(load_sample("llama-tiny"), Path("d.onnx"), ExportRequest(repo=tmp_path / "repo", name="d",
                                                                          backend="python"))
    folder = tmp_path / "repo" / "d"
    original = (folder / "config.pbtxt").read_text()
    breaks = [('max_batch_size: 1', 'max_batch_size: 4', "max_batch_size must be 1"),
              ('name: "END"', 'name: "STOP"', "not the START/END/CORRID"),
              ('dims: 1000', 'dims: 999', "vocabulary is \\[1000\\]"),
              ('bool_false_true: false\n      bool_false_true: true', 'bool_false_true: true\n      bool_false_true: false',
               "must send bool_false_true")]
    for old, new, message in breaks:
        (folder / "config.pbtxt").write_text(original)
        _edit(folder, old, new)
        with pytest.raises(ParekitError, match=message):
            validate_model_dir(folder)
    (folder / "config.pbtxt").write_text(original.split("sequence_batching")[0] + 'backend: "python"\n')
    with pytest.raises(ParekitError, match="needs sequence_batching"):
        validate_model_dir(folder)


def test_the_validator_knows_parekits_model_py(load_sample, tmp_path):
    from importlib import resources

    export_triton(load_sample("llama-tiny"), Path("d.onnx"), ExportRequest(repo=tmp_path / "repo", name="d",
                                                                          backend="python"))
    folder = tmp_path / "repo" / "d"
    assert validate_model_dir(folder)["unchecked"] == []
    encoder_py = resources.files("parekit.serving.triton_models").joinpath("encoder.py").read_text()
    (folder / "1" / "model.py").write_text(encoder_py)
    with pytest.raises(ParekitError, match="parekit's encoder model.py serves a decoder"):
        validate_model_dir(folder)
    (folder / "1" / "model.py").write_text("# the user's own\n")
    assert "not parekit's decoder model.py" in validate_model_dir(folder)["unchecked"][0]


def test_a_failed_export_leaves_no_repository_it_made(tmp_path, monkeypatch):
    import onnx_ir as ir
    from onnx import TensorProto, helper

    import parekit.serving.export as export

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))

    def broken(*args, **kwargs):
        raise ParekitError("validation failed on purpose")

    monkeypatch.setattr(export, "validate_model_dir", broken)
    with pytest.raises(ParekitError, match="on purpose"):
        export_triton(model, Path("m.onnx"), ExportRequest(repo=tmp_path / "new" / "repo"))
    assert not (tmp_path / "new" / "repo").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ParekitError, match="on purpose"):
        export_triton(model, Path("m.onnx"), ExportRequest(repo=tmp_path / "kept"))
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []
