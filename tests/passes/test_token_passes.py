"""token-prune / token-merge on the samples: identity on MiniLM and ViT at both opsets, structure, padding, fidelity.

Seconds per test (real MiniLM/ViT weights, prose batches): all ``slow`` except the refusals. The fast
run covers the token passes on the harness's tiny encoder (tests/passes/test_small_graphs.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from parekit.analysis.flops import dim_bindings, estimate_flops
from parekit.backends.ort import OrtRunner
from parekit.errors import OptionError, PassNotApplicableError
from parekit.frontends import zoo
from parekit.ops.token_merge import TOKEN_MERGE
from parekit.ops.token_prune import TOKEN_PRUNE
from parekit.ops.token_restore import TOKEN_RESTORE
from parekit.parity.check import compare_models
from parekit.parity.data import prose_paragraphs
from parekit.testing import assert_parity

from .harness import op_nodes
from .harness import optimize as _optimize


def _prose_feeds(model, n=16, ragged=True):
    texts = prose_paragraphs()[:n]
    if ragged:  # different lengths: every batch has padding
        texts = [t[: 30 + 41 * i] for i, t in enumerate(texts)]
    return zoo.text_feeds(model, texts, seq_len=128, batch=8, pad_to_max=not ragged)


def _image_feeds(n=1, batch=2):
    rng = np.random.default_rng(0)
    return [{"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)} for _ in range(n)]


def _feeds(name, model):
    return _prose_feeds(model) if name == "minilm" else _image_feeds()


IDENTITIES = ["token-prune{keep=1.0}", "token-merge{r=0}", "token-merge{r=0,unmerge=true}"]


@pytest.mark.slow
@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("name", ["minilm", "vit"])
@pytest.mark.parametrize("pipeline", IDENTITIES)
def test_identity_configuration_matches_original(sample_path, load_sample, name, opset, pipeline):
    model = load_sample(name, opset)
    feeds = _feeds(name, model)
    result = _optimize(model, pipeline)
    (report,) = result.reports
    # The rewiring really happened (ops inserted in every layer), yet nothing is reduced.
    n_layers = 6 if name == "minilm" else 12
    op = TOKEN_PRUNE if "prune" in pipeline else TOKEN_MERGE
    assert len(op_nodes(result.model, op)) == n_layers
    assert "identity" in report.extra
    assert_parity(sample_path(name, opset), result.model, feeds, max_abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("opset", [18, 23])
def test_vit_merge_structure_and_flops(load_sample, opset):
    model = load_sample("vit", opset)
    result = _optimize(model, "token-merge{r=16}")
    (report,) = result.reports
    merges = op_nodes(result.model, TOKEN_MERGE)
    assert len(merges) == 12
    # 197 tokens lose 16 per layer until too few are left to pair (21 → 11: r is clamped to 10).
    counts = [181, 165, 149, 133, 117, 101, 85, 69, 53, 37, 21, 11]
    assert [s["tokens_out"] for s in report.sites] == [str(c) for c in counts]
    assert merges[-1].outputs[0].shape.dims[1] == 11
    assert [o.name for o in result.model.graph.outputs] == ["logits"]
    assert 0.45 < report.flops_after / report.flops_before < 0.55  # ToMe r=16 on ViT-B/16: about half
    (out,) = OrtRunner(result.model).run(_image_feeds(batch=3)[0]).values()
    assert out.shape == (3, 1000) and np.isfinite(out).all()


@pytest.mark.slow
def test_minilm_prune_keeps_output_names_shapes_and_restores_last_hidden_state(sample_path, load_sample):
    model = load_sample("minilm", 18)
    feeds = _prose_feeds(model)
    result = _optimize(model, "token-prune{keep=0.5,layers=[2]}")
    (report,) = result.reports
    assert [o.name for o in result.model.graph.outputs] == ["last_hidden_state", "sentence_embedding"]
    assert report.extra["outputs"] == {"last_hidden_state": "restore"}
    assert len(op_nodes(result.model, TOKEN_PRUNE)) == 1 and len(op_nodes(result.model, TOKEN_RESTORE)) == 1
    ref = OrtRunner(sample_path("minilm", 18))
    cand = OrtRunner(result.model)
    for feed in feeds:
        want, got = ref.run(feed), cand.run(feed)
        assert got["last_hidden_state"].shape == want["last_hidden_state"].shape
        # CLS is always kept: its final state is computed on the kept tokens, close to the original.
        cls_cos = _cos(got["last_hidden_state"][:, 0], want["last_hidden_state"][:, 0])
        assert cls_cos.min() > 0.9


@pytest.mark.slow
def test_minilm_short_outputs_shrink_the_token_axis(load_sample):
    model = load_sample("minilm", 23)
    result = _optimize(model, "token-prune{keep=0.5,layers=[2],outputs=short}")
    feed = _prose_feeds(model, ragged=False, n=8)[0]
    out = OrtRunner(result.model).run(feed)
    assert out["last_hidden_state"].shape == (8, 1 + 64, 384)  # CLS + ceil(0.5 · 127)
    assert out["sentence_embedding"].shape == (8, 384)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["token-prune{keep=0.5,layers=[2]}", "token-merge{r=16}"])
def test_padding_never_leaks_into_real_tokens(load_sample, pipeline):
    """Changing what padded positions hold must not change the sentence embedding."""
    model = load_sample("minilm", 18)
    result = _optimize(model, pipeline)
    runner = OrtRunner(result.model)
    feed = _prose_feeds(model)[0]
    assert (feed["attention_mask"] == 0).any()
    other = dict(feed)
    other["input_ids"] = np.where(feed["attention_mask"] == 1, feed["input_ids"], 2023)  # pad ids → "this"
    a = runner.run(feed)["sentence_embedding"]
    b = runner.run(other)["sentence_embedding"]
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pipeline", "min_cos"),
    [
        ("token-prune{keep=0.5,layers=[2]}", 0.975),
        ("token-prune{keep=0.7,layers=[1,2]}", 0.975),
        ("token-merge{r=16}", 0.95),
    ],
)
def test_minilm_sentence_embedding_fidelity_on_prose(sample_path, load_sample, pipeline, min_cos):
    model = load_sample("minilm", 18)
    result = _optimize(model, pipeline)
    feeds = _prose_feeds(model, n=32, ragged=False)
    report = compare_models(
        sample_path("minilm", 18),
        result.model,
        feeds,
        outputs=["sentence_embedding"],
        thresholds=[f"sentence_embedding:cosine={min_cos}", "max_abs=inf"],
    )
    assert report.passed, report.failures
    assert report.outputs["sentence_embedding"]["cosine"] < 1.0 - 1e-6, "tokens were really reduced"


@pytest.mark.slow
def test_symbolic_token_counts_keep_flop_estimates(load_sample):
    model = load_sample("minilm", 18)
    result = _optimize(model, "token-prune{keep=0.5,layers=[2]}")
    (report,) = result.reports
    assert report.sites[0]["tokens_out"] == "1 + ceil(0.5·(seq - 1))"
    dims = dim_bindings({"batch": 1, "seq": 128}, None) | {"seq": 128}
    flops = estimate_flops(result.model, dims)
    assert not [n for n in flops.unknown if not n.startswith("token-prune/")]  # only the inserted ops
    # layers 0–2 attention at 128 tokens, the rest at 65: roughly 0.7 of the original
    assert 0.6 < report.flops_after / report.flops_before < 0.75


@pytest.mark.parametrize("pipeline", ["token-prune{keep=0.5}", "token-merge{r=4}"])
def test_decoders_are_refused_with_a_reason(load_sample, pipeline):
    model = load_sample("gpt2-tiny", 18)
    with pytest.raises(PassNotApplicableError, match="decoder.*token axis"):
        _optimize(model, pipeline)


@pytest.mark.slow
def test_token_passes_do_not_stack(load_sample):
    model = load_sample("minilm", 18)
    with pytest.raises(PassNotApplicableError, match="already reduced"):
        _optimize(model, "token-merge{r=4,layers=[0]},token-prune{keep=0.5,layers=[3]}")


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("token-prune{keep=0.0}", "keep"),
        ("token-prune{score=cls,protect=0}", "protect"),
        ("token-merge{layers=[6]}", "out of range"),
        ("token-merge{layers=[]}", "empty"),
        ("token-merge{layers=[1,1]}", "repeats"),
    ],
)
def test_bad_options_are_named(load_sample, pipeline, message):
    model = load_sample("minilm", 18)
    with pytest.raises(OptionError, match=message):
        _optimize(model, pipeline)


def _cos(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["token-prune{keep=0.5,layers=[2]}", "token-merge{r=16}"])
def test_opset_18_and_23_exports_reduce_the_same_tokens(load_sample, pipeline):
    """Opset 18 scores from the exported Softmax; opset 23 recomputes them from Attention's Q and K."""
    models = [_optimize(load_sample("minilm", opset), pipeline).model for opset in (18, 23)]
    feed = _prose_feeds(models[0])[0]
    a, b = (OrtRunner(m).run(feed)["sentence_embedding"] for m in models)
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_rows_of_a_batch_are_reduced_independently(load_sample):
    model = load_sample("minilm", 18)
    runner = OrtRunner(_optimize(model, "token-prune{keep=0.5,layers=[2]}").model)
    feed = _prose_feeds(model)[0]
    row = int(np.argmax(feed["attention_mask"].sum(1)))  # the longest row, no padding
    alone = {k: v[row : row + 1] for k, v in feed.items()}
    np.testing.assert_allclose(
        runner.run(alone)["sentence_embedding"][0], runner.run(feed)["sentence_embedding"][row], atol=1e-5
    )
