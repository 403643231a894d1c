"""drop-layers on the samples: identity parity, structure after dropping, equivalence oracles, refusals, ShortGPT."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.analysis import discover
from parekit.backends.ort import OrtRunner
from parekit.backends.specs import specs_from_ir_values
from parekit.calibration import CalibrationSet
from parekit.errors import OptionError, PassNotApplicableError
from parekit.parity.data import random_feeds
from parekit.passes import PassContext
from parekit.testing import assert_parity

from .harness import TINY_DECODERS, optimize, zero_block_updates


def _feeds(model, n=2, **dims):
    specs = specs_from_ir_values(model.graph.inputs)
    dims = {"batch": 2, "seq": 8, "past": 3, **dims}
    return [random_feeds(specs, dims=dims, seed=i, model=model) for i in range(n)]


@pytest.mark.parametrize(
    ("name", "opset"),
    [
        pytest.param(name, opset, marks=[pytest.mark.slow] if name in ("smollm2", "vit", "minilm") else [])
        for name in ("minilm", "vit", "gpt2-tiny", "llama-tiny", "smollm2")
        for opset in (18, 23)
    ],
)
def test_identity_configuration_matches_original(sample_path, load_sample, name, opset):
    model = load_sample(name, opset)
    feeds = _feeds(model, n=1, seq=8 if name != "smollm2" else 4)
    result = optimize(model, "drop-layers{layers=[]}")
    (report,) = result.reports
    assert report.identity and not report.modified and report.nodes_removed == 0
    assert result.model.metadata_props["parekit.pipeline"] == "drop-layers{layers=[],count=0}"
    assert_parity(sample_path(name, opset), result.model, feeds, max_abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("opset", [18, 23])
def test_drops_encoder_layers_including_the_last(load_sample, sample_path, opset):
    model = load_sample("minilm", opset)
    result = optimize(model, "drop-layers{layers=[1,5]}")
    mm = discover(result.model)
    assert mm.num_layers == 4
    assert [lm.scope.rsplit(".", 1)[1] for lm in mm.layers] == ["0", "2", "3", "4"]
    # Output names and count are kept even though the last block produced `last_hidden_state`.
    assert [v.name for v in result.model.graph.outputs] == ["last_hidden_state", "sentence_embedding"]
    (report,) = result.reports
    assert {s["layer"] for s in report.sites} == {1, 5}
    assert report.flops_removed and 0.30 < report.flops_removed / report.flops_before < 0.34  # 2 of 6 blocks
    # It is a real change: outputs differ from the original ...
    feeds = _feeds(model, n=1)
    with pytest.raises(AssertionError):
        assert_parity(sample_path("minilm", opset), result.model, feeds, max_abs=1e-3)


@pytest.mark.parametrize(("name", "opset"), TINY_DECODERS)
@pytest.mark.parametrize("layer", [0, 1])
def test_decoder_drop_removes_the_layer_cache(load_sample, name, opset, layer):
    model = load_sample(name, opset)
    oracle = zero_block_updates(model, layer)
    result = optimize(model, f"drop-layers{{layers=[{layer}]}}")
    kept = 1 - layer
    inputs = [v.name for v in result.model.graph.inputs]
    outputs = [v.name for v in result.model.graph.outputs]
    assert f"past.{layer}.key" not in inputs and f"present.{layer}.value" not in outputs
    assert f"past.{kept}.key" in inputs and f"present.{kept}.value" in outputs
    mm = discover(result.model)
    assert mm.num_layers == 1 and mm.has_kv_cache
    # Pre-norm blocks: dropping one equals the original with that block's residual updates zeroed
    # (its output then equals its input); the kept layer's cache is computed exactly as before.
    feeds = _feeds(oracle, n=1)  # the oracle takes the dropped layer's cache too (ignored by the candidate)
    assert_parity(
        oracle, result.model, feeds, outputs=["logits", f"present.{kept}.key", f"present.{kept}.value"],
        max_abs=1e-5,
    )


def test_drop_first_decoder_layer_agrees_across_opsets(load_sample):
    """The opset-18 (decomposed) and opset-23 (Attention op) graphs, rewired independently, agree."""
    a = optimize(load_sample("llama-tiny", 18), "drop-layers{layers=[0]}").model
    b = optimize(load_sample("llama-tiny", 23), "drop-layers{layers=[0]}").model
    feeds = _feeds(a, n=1)
    assert_parity(a, b, feeds, max_abs=1e-4)


@pytest.mark.slow
def test_dropped_minilm_equals_torch_model_without_those_layers(torch, load_sample):
    """Oracle: the same BERT in torch with encoder layers 1 and 4 deleted."""
    from parekit.frontends import zoo

    module, _, _, _, _ = zoo.get_sample("minilm").builder()
    layers = module.bert.encoder.layer
    module.bert.encoder.layer = torch.nn.ModuleList([m for i, m in enumerate(layers) if i not in (1, 4)])
    module.bert.config.num_hidden_layers = 4
    result = optimize(load_sample("minilm"), "drop-layers{layers=[1,4]}")
    feeds = _feeds(result.model, n=1, seq=12)[0]
    feeds["attention_mask"][1, 9:] = 0  # a padded row
    ours = OrtRunner(result.model).run(feeds)
    with torch.no_grad():
        hidden, emb = module(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
    np.testing.assert_allclose(ours["last_hidden_state"], hidden.numpy(), atol=2e-5)
    np.testing.assert_allclose(ours["sentence_embedding"], emb.numpy(), atol=2e-5)


@pytest.mark.parametrize(
    ("pipeline", "error", "text"),
    [
        ("drop-layers{layers=[6]}", OptionError, "out of range"),
        ("drop-layers{layers=[0,1,2,3,4,5]}", OptionError, "no transformer"),
        ("drop-layers{count=6}", OptionError, "below the number of layers"),
        ("drop-layers{count=1}", PassNotApplicableError, "calibration"),
    ],
)
def test_bad_configurations_are_refused(load_sample, pipeline, error, text):
    with pytest.raises(error, match=text):
        optimize(load_sample("minilm"), pipeline)


@pytest.mark.slow
def test_count_drops_the_blocks_it_reports(load_sample):
    model = load_sample("minilm")
    calib = CalibrationSet(_feeds(model, n=2, seq=16), source="random")
    result = optimize(model, "drop-layers{count=2}", PassContext(calibration=calib))
    (report,) = result.reports
    influence = {int(k): v for k, v in report.extra["influence"].items()}
    assert sorted(influence) == list(range(6)) and all(0.0 <= v <= 2.0 for v in influence.values())
    # The model really lost the two blocks it names (which two is checked by the zeroed-block oracle below).
    kept = [int(lm.scope.rsplit(".", 1)[1]) for lm in discover(result.model).layers]
    assert len(report.extra["chosen"]) == 2
    assert kept == [i for i in range(6) if i not in report.extra["chosen"]]


@pytest.mark.parametrize("layer", [0, 1])
def test_block_influence_picks_a_block_that_does_nothing(load_sample, layer):
    """Zero a block's residual updates: its output equals its input (influence 0), so count=1 must
    choose it, whatever the other blocks do."""
    model = zero_block_updates(load_sample("llama-tiny"), layer)
    calib = CalibrationSet(_feeds(model, n=2), source="random")
    result = optimize(model, "drop-layers{count=1}", PassContext(calibration=calib))
    (report,) = result.reports
    assert report.extra["influence"][str(layer)] < 1e-6 < report.extra["influence"][str(1 - layer)]
    assert report.extra["chosen"] == [layer]
    assert [lm.attention.past_key for lm in discover(result.model).layers] == [f"past.{1 - layer}.key"]


def test_dropped_decoder_layer_equals_torch_model_without_it(torch, load_sample):
    """Oracle with a KV cache: the same Llama in torch with layer 0 deleted, prefill + past tokens."""
    from transformers import DynamicCache

    from parekit.frontends import zoo

    wrapper, *_ = zoo.get_sample("llama-tiny").builder()  # seeded: the weights of the cached export
    lm = wrapper.lm
    kept = lm.model.layers[1]
    kept.self_attn.layer_idx = 0  # the cache now has one layer
    lm.model.layers = torch.nn.ModuleList([kept])
    lm.config.num_hidden_layers = 1
    result = optimize(load_sample("llama-tiny"), "drop-layers{layers=[0]}")
    feeds = _feeds(result.model, n=1, seq=5, past=3)[0]
    feeds["attention_mask"][1, :2] = 0  # left padding in the second row
    ours = OrtRunner(result.model).run(feeds)
    with torch.no_grad():
        t = {k: torch.from_numpy(v) for k, v in feeds.items()}
        cache = DynamicCache([(t["past.1.key"], t["past.1.value"])], config=lm.config)
        out = lm(input_ids=t["input_ids"], attention_mask=t["attention_mask"], position_ids=t["position_ids"],
                 past_key_values=cache, use_cache=True)
    np.testing.assert_allclose(ours["logits"], out.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours["present.1.key"], out.past_key_values.layers[0].keys.numpy(), atol=1e-5)
