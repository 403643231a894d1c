"""parekit's Triton ``model.py`` files driven in-process (a stand-in ``triton_python_backend_utils``):
encoders equal ONNX Runtime on the same model, batched or not; decoders keep each sequence's state apart
and give the greedy ids ``generate`` gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from parekit.serving import ExportRequest, export_triton
from tests.serving import fake_pb_utils as pb


def _export(model, tmp_path: Path, name: str, backend: str = "python", **kw):
    report = export_triton(model, Path(f"{name}.onnx"), ExportRequest(repo=tmp_path / "repo", name=name,
                                                                       backend=backend, **kw))
    folder = Path(report["folder"])
    return folder, (folder / "config.pbtxt").read_text()


def _model_py(folder: Path, text: str):
    return pb.load_model_py(folder / "1" / "model.py", folder, text)


def _encoder_feeds(rng, batch: int, seq: int) -> dict[str, np.ndarray]:
    ids = rng.integers(1000, 2000, size=(batch, seq)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def test_encoder_model_py_equals_onnxruntime_batched_and_alone(load_sample, tmp_path):
    import onnxruntime as ort

    folder, text = _export(load_sample("minilm"), tmp_path, "minilm")
    model = _model_py(folder, text)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    # three requests of one shape (run as one batch of 4 rows) and one of another (run alone)
    feeds = [_encoder_feeds(rng, 1, 7), _encoder_feeds(rng, 2, 7), _encoder_feeds(rng, 1, 12), _encoder_feeds(rng, 1, 7)]
    responses = model.execute([pb.InferenceRequest(**f) for f in feeds])
    assert len(responses) == 4
    for f, resp in zip(feeds, responses):
        assert not resp.has_error(), resp.error().message()
        want = session.run(["sentence_embedding", "last_hidden_state"], f)
        np.testing.assert_allclose(resp.output("sentence_embedding"), want[0], atol=1e-5)
        np.testing.assert_allclose(resp.output("last_hidden_state"), want[1], atol=1e-5)


def test_encoder_model_py_reports_a_missing_input_per_request(load_sample, tmp_path):
    folder, text = _export(load_sample("minilm"), tmp_path, "minilm")
    model = _model_py(folder, text)
    good = _encoder_feeds(np.random.default_rng(1), 1, 5)
    responses = model.execute([pb.InferenceRequest(input_ids=good["input_ids"]), pb.InferenceRequest(**good)])
    assert responses[0].has_error() and "attention_mask" in responses[0].error().message()
    assert not responses[1].has_error()


def _decode(model, prompts: dict[int, list[int]], steps: int, order: str = "interleaved") -> dict[int, list[int]]:
    """Greedy decoding of several sequences through ``execute``, one request per sequence per round,
    all sequences in one ``execute`` call per round (interleaved) or one sequence after another."""
    out: dict[int, list[int]] = {c: [] for c in prompts}
    nxt = {c: np.array([p], np.int64) for c, p in prompts.items()}

    def request(c: int, i: int):
        return pb.InferenceRequest(input_ids=nxt[c], START=np.array([[i == 0]]), END=np.array([[i == steps - 1]]),
                                   CORRID=np.array([[c]], np.uint64))

    def take(c: int, resp) -> None:
        assert not resp.has_error(), resp.error().message()
        token = int(resp.output("next_token")[0, 0])
        assert resp.output("logits").shape[0] == 1
        assert token == int(np.argmax(resp.output("logits")[0]))
        out[c].append(token)
        nxt[c] = np.array([[token]], np.int64)

    if order == "interleaved":
        for i in range(steps):
            cs = list(prompts)
            for c, resp in zip(cs, model.execute([request(c, i) for c in cs])):
                take(c, resp)
    else:
        for c in prompts:
            for i in range(steps):
                take(c, model.execute([request(c, i)])[0])
    return out


@pytest.mark.parametrize("sample,passes", [("llama-tiny", ""), ("llama-tiny", "kv-window{sink=2,window=6}"),
                                            ("gpt2-tiny", "kv-quant{bits=8,group=4,residual=2}"),
                                            ("llama-tiny", "kv-evict{budget=8,policy=snapkv,sink=1,recent=2}")])
def test_decoder_model_py_keeps_sequences_apart_and_equals_generate(load_sample, tmp_path, sample, passes):
    from parekit.passes import run_pipeline
    from parekit.runtime import DecoderSession, generate

    model = load_sample(sample)
    if passes:
        model = run_pipeline(model, passes).model
    folder, text = _export(model, tmp_path, "dec")
    served = _model_py(folder, text)
    prompts = {7: [3, 17, 42, 5], 8: [9, 1], 2**63 + 5: [11, 12, 13, 14, 15, 16]}
    steps = 12
    together = _decode(served, prompts, steps)
    assert served.sequences == {}, "END drops each sequence's state"
    session = DecoderSession(folder / "1" / "model.onnx")
    for c, prompt in prompts.items():
        assert together[c] == generate(session, [prompt], steps).tokens[0], (c, passes)
    assert _decode(served, prompts, steps, order="one after another") == together


def test_decoder_model_py_refuses_a_sequence_it_does_not_know(load_sample, tmp_path):
    folder, text = _export(load_sample("llama-tiny"), tmp_path, "dec")
    served = _model_py(folder, text)
    req = pb.InferenceRequest(input_ids=np.array([[1]], np.int64), START=np.array([[False]]),
                              END=np.array([[False]]), CORRID=np.array([[99]], np.uint64))
    (resp,) = served.execute([req])
    assert resp.has_error() and "sequence 99 was not started" in resp.error().message()
    bad = pb.InferenceRequest(input_ids=np.zeros((2, 3), np.int64), START=np.array([[True]]),
                              END=np.array([[False]]), CORRID=np.array([[1]], np.uint64))
    (resp,) = served.execute([bad])
    assert resp.has_error() and "[1, n]" in resp.error().message()


def test_decoder_model_py_drops_sequences_idle_past_the_timeout(load_sample, tmp_path, monkeypatch):
    folder, text = _export(load_sample("llama-tiny"), tmp_path, "dec", idle_us=1_000_000)
    served = _model_py(folder, text)
    start = pb.InferenceRequest(input_ids=np.array([[1, 2]], np.int64), START=np.array([[True]]),
                                END=np.array([[False]]), CORRID=np.array([[5]], np.uint64))
    assert not served.execute([start])[0].has_error()
    assert 5 in served.sequences
    served.sequences[5].touched -= 2.0  # idle for 2 s > 1 s
    later = pb.InferenceRequest(input_ids=np.array([[3]], np.int64), START=np.array([[False]]),
                                END=np.array([[False]]), CORRID=np.array([[5]], np.uint64))
    (resp,) = served.execute([later])
    assert resp.has_error() and "timed out" in resp.error().message()
