"""Implicit-state repositories (decoders on the onnxruntime / tensorrt backends), checked offline.

No server here carries Triton's implicit state (the Python backend does not), so these tests play the
sequence batcher's part *from the written config.pbtxt*: at START every ``state`` input gets its
``initial_state`` (zeros of the initial dims, batch 1 in front) and the START control input is true;
after each request every state input gets its ``output_name`` tensor. The client sends what Triton does
not keep: ``attention_mask`` over all tokens so far and ``position_ids``. Greedy ids must equal
``generate`` on the original model: this proves the config's state pairs, dtypes and initial dims fit the
graph and the graph honours START, not Triton's own batcher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from parekit.serving import ExportRequest, export_triton, validate_model_dir
from parekit.serving.model_config import parse_config

CASES = [("llama-tiny", 18, ""), ("gpt2-tiny", 18, "kv-window{sink=2,window=6}"),
         ("llama-tiny", 18, "kv-evict{budget=8,policy=h2o,sink=1,recent=2}"),
         ("gpt2-tiny", 18, "kv-quant{bits=8,group=4,residual=2,fused=false}"),
         ("llama-tiny", 23, "kv-quant{bits=4,group=4,residual=2}")]

_NP = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32,
       "TYPE_INT8": np.int8, "TYPE_UINT8": np.uint8, "TYPE_BOOL": np.bool_}


def _as_triton_would(folder: Path, prompt: list[int], steps: int) -> list[int]:
    import onnxruntime as ort

    from parekit.serving.model_config import load_schema

    cfg = parse_config((folder / "config.pbtxt").read_text(), "config")
    dtype = load_schema().DataType.Name
    session = ort.InferenceSession(str(folder / "1" / cfg.default_model_filename), providers=["CPUExecutionProvider"])
    seq = cfg.sequence_batching
    (start_name,) = [c.name for c in seq.control_input]
    outputs = [o.name for o in cfg.output]
    state = {s.input_name: np.zeros([1, *s.initial_state[0].dims], _NP[dtype(s.data_type)]) for s in seq.state}
    fetch = outputs + [s.output_name for s in seq.state]
    ids, seen, tokens = np.array([prompt], np.int64), 0, []
    for i in range(steps):
        n = ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, seen + n), np.int64),
                 "position_ids": np.arange(seen, seen + n, dtype=np.int64)[None], start_name: np.array([[i == 0]]),
                 **state}
        feeds = {k: v for k, v in feeds.items() if k in {x.name for x in session.get_inputs()}}
        results = dict(zip(fetch, session.run(fetch, feeds)))
        state = {s.input_name: results[s.output_name] for s in seq.state}
        seen += n
        tokens.append(int(np.argmax(results["logits"][0, -1])))
        ids = np.array([[tokens[-1]]], np.int64)
    return tokens


@pytest.mark.parametrize("sample,opset,passes", CASES, ids=lambda v: str(v) or "unmodified")
def test_implicit_state_config_drives_the_graph_like_generate(load_sample, tmp_path, sample, opset, passes):
    from parekit.passes import run_pipeline
    from parekit.runtime import DecoderSession, generate

    model = load_sample(sample, opset)
    if passes:
        model = run_pipeline(model, passes).model
    session = DecoderSession(model)  # before export: the original graph, without 'start'
    report = export_triton(model, Path("d.onnx"), ExportRequest(repo=tmp_path / "repo", name="d"))
    assert any("state-reset" in n for n in report["notes"])
    assert "start" not in {v.name for v in model.graph.inputs}, "export adapts a copy, not the caller's model"
    cfg = parse_config(report["config"], "d")
    assert len(cfg.sequence_batching.state) == report["states"] == sum(
        1 for v in model.graph.inputs if v.name.startswith("past"))
    folder = tmp_path / "repo" / "d"
    for prompt in ([3, 17, 42, 5], [9, 1, 7]):
        assert _as_triton_would(folder, prompt, 10) == generate(session, [prompt], 10).tokens[0], prompt


def test_the_validator_checks_states_and_the_start_control(load_sample, tmp_path):
    from parekit.errors import ParekitError

    export_triton(load_sample("llama-tiny"), Path("d.onnx"), ExportRequest(repo=tmp_path / "repo", name="d"))
    folder = tmp_path / "repo" / "d"
    original = (folder / "config.pbtxt").read_text()
    breaks = [('output_name: "present.0.key"', 'output_name: "present.0.value"', "must be fed from 'present.0.key'"),
              ('input_name: "past.1.value"', 'input_name: "past.9.value"', "not a past\\* input"),
              ('name: "start"', 'name: "begin"', "START control must feed the graph input 'start'"),
              ('      dims: 1\n      dims: 16', '      dims: 1\n      dims: 17', "initial_state dims"),
              ('    dims: 2\n    dims: -1', '    dims: 2\n    dims: 5', "dynamic there")]
    for old, new, message in breaks:
        assert old in original, old
        (folder / "config.pbtxt").write_text(original.replace(old, new, 1))
        with pytest.raises(ParekitError, match=message):
            validate_model_dir(folder)
    (folder / "config.pbtxt").write_text(original)
    assert validate_model_dir(folder)["kind"] == "decoder"


def test_a_tensorrt_decoder_repository_from_a_state_reset_model(load_sample, tmp_path):
    from parekit.passes import run_pipeline

    model = run_pipeline(load_sample("llama-tiny"), "kv-window{sink=2,window=6},state-reset").model
    plan = tmp_path / "d.plan"
    plan.write_bytes(b"plan bytes (copied as they are)")
    report = export_triton(model, Path("d.onnx"), ExportRequest(repo=tmp_path / "repo", name="d", backend="tensorrt",
                                                                 plan=plan))
    cfg = parse_config(report["config"], "d")
    assert cfg.backend == "tensorrt" and cfg.default_model_filename == "model.plan"
    assert cfg.instance_group[0].kind == 1  # KIND_GPU
    assert (tmp_path / "repo" / "d" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert report["validation"]["checked"][-1] == "I/O against the graph"
    assert any("plan must be built from this state-reset model" in n for n in report["notes"])
