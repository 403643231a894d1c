"""train-exit: dumps, the own head in torch, adapter modules == Adapter.apply, seeded training, the CLI, refusals."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from parekit.errors import MissingExtraError, PassNotApplicableError
from parekit.passes.exit_adapter import Adapter, load_adapters

TINY = ("llama-tiny", "gpt2-tiny")


def _dump(model, layer=0, tokens=4096, held_out=512):
    from parekit.analysis import discover
    from parekit.runtime.tokenizer import ByteTokenizer
    from parekit.training import build_head, dump_decoder

    mm = discover(model)
    head = build_head(model, mm)
    dump = dump_decoder(model, mm, layer, ByteTokenizer(), head.output, tokens=tokens, held_out=held_out, window=128)
    return mm, head, dump


@pytest.fixture(scope="module")
def tiny_dumps(sample_path):
    from parekit.frontends.onnx_file import load_model

    return {name: _dump(load_model(sample_path(name))) for name in TINY}


def _options(**kw):
    from parekit.training import TrainOptions

    return TrainOptions(**{"kind": "mlp", "ffn": 64, "epochs": 3, "lr": 3e-3, "batch": 256, "patience": 3, **kw})


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("name", TINY)
def test_head_in_torch_reproduces_the_model(load_sample, name, opset):
    from parekit.training import check_head

    _, head, dump = _dump(load_sample(name, opset), tokens=128, held_out=128)
    assert head.output == "logits" and head.weight_params > 0
    assert check_head(dump, head) < 1e-4
    assert dump.top_p is not None and np.allclose(dump.top_p.sum(1), 1.0, atol=1e-5)
    assert dump.top_idx is not None and (np.diff(dump.top_p, axis=1) <= 0).all()  # sorted: column 0 = top-1


@pytest.mark.parametrize(("name", "kind"), [("llama-tiny", "mlp"), ("gpt2-tiny", "linear")])
def test_training_improves_on_the_own_head_and_is_seeded(tiny_dumps, name, kind):
    from parekit.training import train_exit

    _, head, dump = tiny_dumps[name]  # (gpt2-tiny's own head agrees 0.87 at layer 0 already; linear gains most)
    a = train_exit(dump, head, _options(seed=3, kind=kind))
    b = train_exit(dump, head, _options(seed=3, kind=kind))
    c = train_exit(dump, head, _options(seed=4, kind=kind, lr=1e-3))
    for key in a.adapter.tensors:
        assert a.adapter.tensors[key].tobytes() == b.adapter.tensors[key].tobytes(), key
    assert any(a.adapter.tensors[k].tobytes() != c.adapter.tensors[k].tobytes() for k in a.adapter.tensors)
    assert a.held_out > a.own_head + 0.02, (a.own_head, a.held_out)
    rec = a.record
    assert rec["held_out_top1_agreement"] == a.held_out and rec["own_head_top1_agreement"] == a.own_head
    assert rec["tokens"] == 4096 and rec["held_out_tokens"] == 512 and rec["seed"] == 3
    assert rec["params"] == a.adapter.params and len(rec["loss_curve"]) == rec["epochs"]
    assert len(rec["held_out_curve"]) == rec["epochs"] + 1 and rec["held_out_curve"][0] == pytest.approx(a.own_head, abs=1e-4)
    assert {row[0] for row in rec["gate"]["margin"]} and rec["seconds"] > 0


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_torch_module_equals_adapter_apply(torch, kind):
    from parekit.training import make_adapter, to_adapter

    torch.manual_seed(0)
    module = make_adapter(kind, 16, 24)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the zero init: every tensor matters
    adapter = to_adapter(module, 2)
    x = np.random.default_rng(0).normal(size=(3, 5, 16)).astype(np.float32) * 4
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, adapter.apply(x), rtol=1e-5, atol=1e-5)
    fresh = to_adapter(make_adapter(kind, 16, 24), 2)
    np.testing.assert_allclose(fresh.apply(x), x, atol=1e-6)  # zero-initialised output: the identity


def test_trained_adapter_roundtrips_through_the_file(tiny_dumps, tmp_path):
    from parekit.passes.exit_adapter import save_adapters
    from parekit.training import train_exit

    _, head, dump = tiny_dumps["llama-tiny"]
    result = train_exit(dump, head, _options(kind="linear", epochs=1))
    save_adapters(tmp_path / "a.npz", [result.adapter])
    (back,) = load_adapters(tmp_path / "a.npz").values()
    assert back.kind == "linear" and back.layer == 0 and back.record["seed"] == result.record["seed"]
    x = dump.states[:7]
    np.testing.assert_array_equal(back.apply(x), result.adapter.apply(x))


def test_onnx_exit_equals_adapter_and_head(tiny_dumps, load_sample, tmp_path):
    from parekit.errors import UnknownPassError
    from parekit.passes.registry import get_pass

    try:
        get_pass("early-exit")
    except UnknownPassError:
        pytest.skip("the early-exit pass is not on this branch yet")
    from parekit.backends.ort import OrtRunner
    from parekit.passes import PassContext
    from parekit.passes.exit_adapter import save_adapters
    from parekit.passes.manager import run_pipeline
    from parekit.passes.pipeline import parse_pipeline
    from parekit.training import train_exit
    from parekit.training.torch_extra import torch

    mm, head, dump = tiny_dumps["llama-tiny"]
    result = train_exit(dump, head, _options(epochs=1))
    save_adapters(tmp_path / "a.npz", [result.adapter])
    model = load_sample("llama-tiny")
    text = f'early-exit{{layers=[0],head=adapter,adapter="{tmp_path / "a.npz"}",threshold=2.0,form=outputs}}'
    exit_model = run_pipeline(model, parse_pipeline(text), PassContext()).model
    window = dump.inputs["input_ids"][:128][None]
    feed = {"input_ids": window, "attention_mask": np.ones_like(window), "position_ids": np.arange(128)[None]}
    for v in exit_model.graph.inputs:
        if v.name.startswith("past"):
            dims = [d if isinstance(d, int) else 0 for d in v.shape]
            dims[0] = 1
            feed[v.name] = np.zeros(dims, np.float32)
    got = OrtRunner(exit_model).run(feed, outputs=["logits.exit0"])["logits.exit0"]
    with torch.no_grad():
        want = head(torch.from_numpy(result.adapter.apply(dump.states[:128])[None])).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_minilm_encoder_cosine_path(load_sample):
    from parekit.analysis import discover
    from parekit.frontends.samples import SAMPLES
    from parekit.training import build_head, check_head, dump_encoder, train_exit

    model = load_sample("minilm")
    mm = discover(model)
    head = build_head(model, mm)
    assert head.output == "sentence_embedding" and "attention_mask" in head.graph_inputs
    dump = dump_encoder(model, mm, 2, SAMPLES["minilm"].tokenizer(), head.output, held_out=32)
    assert check_head(dump, head) < 1e-4
    result = train_exit(dump, head, _options(ffn=128, epochs=4, batch=16))
    assert result.held_out > result.own_head + 0.1, (result.own_head, result.held_out)
    assert result.record["held_out_cosine"] == result.held_out and "held_out_cosine_min" in result.record


def test_training_text_never_holds_evaluation_prose():
    from parekit.data.prose import prose_paragraphs
    from parekit.training import second_half_paragraphs, training_blocks

    corpus = prose_paragraphs()
    evaluation = set(corpus[: len(corpus) // 2])
    blocks = {" ".join(b.split()) for b in training_blocks()}
    assert not blocks & evaluation
    assert all(p in blocks for p in second_half_paragraphs())
    assert sum(map(len, blocks)) > 150_000  # far more text than the cleaned paragraphs alone


def test_unsupported_head_is_refused(load_sample):
    from parekit.analysis import discover
    from parekit.training import build_head

    model = load_sample("llama-tiny")
    mm = discover(model)
    nodes = {n.name: n for n in model.graph}
    norm = next(nodes[n] for n in mm.head_nodes if nodes[n].op_type == "Reciprocal")
    norm.op_type = "Softplus"
    with pytest.raises(PassNotApplicableError, match="uses op Softplus"):
        build_head(model, mm)


def test_cli_writes_the_adapter_and_refuses_with_reasons(sample_path, run_cli, tmp_path):
    model = sample_path("llama-tiny")
    out = tmp_path / "lt.npz"
    common = ("--tokens", 1024, "--held-out", 256, "--window", 128, "--epochs", 2, "--hidden", 32)
    run_cli("train-exit", model, "--layer", 0, *common, "-o", out)
    (adapter,) = load_adapters(out).values()
    assert isinstance(adapter, Adapter) and adapter.kind == "mlp" and adapter.record["tokens"] == 1024
    for layer, message in ((1, "is the last layer"), (7, "out of range")):
        bad = tmp_path / f"bad{layer}.npz"
        result = run_cli("train-exit", model, "--layer", layer, *common, "-o", bad, code=2)
        assert message in result.output and not bad.exists()
    onnx_out = tmp_path / "lt.exit.onnx"
    run_cli("train-exit", model, "--layer", 0, *common, "--threshold", 0.5, "-o", onnx_out)
    import onnx

    written = onnx.load(onnx_out)
    names = [o.name for o in written.graph.output]
    assert {"logits.exit0", "exit0.score", "exit0.take"} <= set(names) and names[0] == "logits"
    meta = {p.key: p.value for p in written.metadata_props}
    assert 'adapter="lt.exit.npz"' in meta["parekit.pipeline"] and (tmp_path / "lt.exit.npz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    result = run_cli("train-exit", model, "--layer", 0, "-o", model, code=2)
    assert "same file as the input" in result.output
    result = run_cli("train-exit", model, "--layer", 0, "-o", tmp_path / "none" / "x.npz", code=2)
    assert "does not exist" in result.output


def test_missing_torch_names_the_extra(monkeypatch):
    saved = {k: v for k, v in sys.modules.items() if k.startswith("parekit.training")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    try:
        with pytest.raises(MissingExtraError, match="training exit adapters") as info:
            importlib.import_module("parekit.training")
        assert "parekit[samples]" in (info.value.note or "")
    finally:
        for k in [k for k in sys.modules if k.startswith("parekit.training")]:
            del sys.modules[k]
        sys.modules.update(saved)
