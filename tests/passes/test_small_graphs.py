"""Every pass on the harness's hand-built encoder and decoder: applies, refuses with a reason, identity, no-op.

Milliseconds each, no torch. Structure is asserted through the ops' ``OpDef``; numerics run under ONNX
Runtime with graph optimizations off against the original graph; every rewritten model passes the
ONNX checker (:func:`harness.apply`).

No-op: only ``drop-layers`` has a configuration that leaves the graph as it was (``layers=[]``). The
token and KV passes always insert their ops (their identity configurations are numerically equal,
not no-ops); for them the no-op case tested is a refusal, which must leave the model untouched.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from parekit.analysis import discover
from parekit.errors import OptionError, PassNotApplicableError
from parekit.ops.kv_dequant import KV_DEQUANT_KEY, KV_DEQUANT_VALUE
from parekit.ops.kv_evict import KV_EVICT_H2O, KV_EVICT_SNAP
from parekit.ops.kv_quant import KV_QUANT_KEY, KV_QUANT_VALUE
from parekit.ops.kv_slot_mask import KV_MASK_REMAP, KV_SLOT_MASK
from parekit.ops.kv_window import KV_WINDOW
from parekit.ops.kv_window_mask import KV_WINDOW_MASK
from parekit.ops.token_merge import TOKEN_MERGE
from parekit.ops.token_prune import TOKEN_PRUNE, pruned_count
from parekit.ops.token_restore import TOKEN_RESTORE

from . import harness as h

SEQ = 7  # encoder tokens (row 1: 3 of them padding)


@pytest.fixture(scope="module")
def encoder() -> ir.Model:
    return h.encoder_model()


@pytest.fixture(scope="module")
def decoder() -> ir.Model:
    return h.decoder_model()


@pytest.fixture(scope="module")
def cacheless() -> ir.Model:
    return h.decoder_model(cache=False)


def graph_bytes(model: ir.Model) -> bytes:
    """The serialized graph (the pipeline text in the model's metadata left out)."""
    return ir.serde.serialize_graph(model.graph).SerializeToString(deterministic=True)


def with_outputs(model: ir.Model, names: list[str]) -> ir.Model:
    """A copy of ``model`` that also returns the named intermediate values."""
    copy = h.clone(model)
    values = {v.name: v for n in copy.graph for v in n.outputs}
    copy.graph.outputs.extend(values[n] for n in names)
    return copy


def assert_refused(model: ir.Model, pipeline: str, error: type[Exception], match: str) -> None:
    """The pipeline is refused with ``error`` matching ``match``, and the model is left as it was."""
    copy = h.clone(model)
    before = graph_bytes(copy)
    with pytest.raises(error, match=match):
        h.optimize(copy, pipeline)
    assert graph_bytes(copy) == before, "a refused pass changed the model"


def decode_equal(base: ir.Model, other: ir.Model, steps: int = 6) -> None:
    """Greedy side-by-side decode: logits and the K/V state agree at every step."""
    for step, (la, lb, sa, sb, _) in enumerate(h.decode_side_by_side(h.session(base), h.session(other), steps, PROMPTS)):
        np.testing.assert_allclose(lb, la, atol=1e-5, rtol=1e-5, err_msg=f"step {step}")
        for name in sa:
            np.testing.assert_allclose(sb[name], sa[name], atol=1e-6, err_msg=f"step {step}: {name}")


PROMPTS = [[11, 4, 7, 30, 5, 9, 12, 8], [17, 2, 25]]


# ------------------------------------------------------------------------------------------------
# drop-layers


def test_drop_layers_applies_to_the_encoder(encoder):
    dropped, result = h.apply(encoder, "drop-layers{layers=[1]}")
    (report,) = result.reports
    assert report.modified and [s["layer"] for s in report.sites] == [1] and report.nodes_removed > 0
    assert discover(dropped).num_layers == 1
    assert [v.name for v in dropped.graph.outputs] == ["last_hidden_state"]
    # Post-norm: without block 1 the output is block 0's output in the original.
    layer0 = discover(encoder).layers[0].output
    want = h.run(with_outputs(encoder, [layer0]), h.encoder_feeds())[layer0]
    np.testing.assert_allclose(h.run(dropped, h.encoder_feeds())["last_hidden_state"], want, atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1])
def test_drop_layers_applies_to_the_decoder_and_its_cache(decoder, layer):
    dropped, _ = h.apply(decoder, f"drop-layers{{layers=[{layer}]}}")
    kept = 1 - layer
    names = [v.name for v in dropped.graph.inputs] + [v.name for v in dropped.graph.outputs]
    assert f"past.{layer}.key" not in names and f"present.{layer}.value" not in names
    assert f"past.{kept}.key" in names and f"present.{kept}.value" in names
    mm = discover(dropped)
    assert mm.num_layers == 1 and mm.has_kv_cache
    # Pre-norm: dropping a block equals the original with that block's residual updates zeroed.
    feeds = h.decoder_feeds()
    h.assert_same_outputs(
        h.zero_block_updates(decoder, layer), dropped, feeds, outputs=["logits", f"present.{kept}.key", f"present.{kept}.value"]
    )
    assert not np.allclose(h.run(decoder, feeds)["logits"], h.run(dropped, feeds)["logits"], atol=1e-3)


@pytest.mark.parametrize(
    ("pipeline", "error", "match"),
    [
        ("drop-layers{layers=[2]}", OptionError, "out of range: the model has 2 layers"),
        ("drop-layers{layers=[0,1]}", OptionError, "no transformer"),
        ("drop-layers{layers=[1,1]}", OptionError, "repeats"),
        ("drop-layers{count=2}", OptionError, "below the number of layers"),
        ("drop-layers{count=1}", PassNotApplicableError, "needs calibration data"),
    ],
)
def test_drop_layers_refuses_with_a_reason(encoder, pipeline, error, match):
    assert_refused(encoder, pipeline, error, match)


@pytest.mark.parametrize("pipeline", ["drop-layers{layers=[]}", "drop-layers{count=0}"])
def test_drop_layers_identity_is_a_no_op(encoder, pipeline):
    model = h.clone(encoder)
    before = graph_bytes(model)
    result = h.optimize(model, pipeline)
    (report,) = result.reports
    assert not report.modified and report.identity == "no layers to drop (layers=[] and count=0)"
    assert (report.nodes_added, report.nodes_removed, report.sites) == (0, 0, [])
    assert report.flops_removed == 0
    assert graph_bytes(model) == before
    assert model.metadata_props["parekit.pipeline"] == "drop-layers{layers=[],count=0}"
    h.assert_same_outputs(encoder, model, h.encoder_feeds(), atol=0.0)


# ------------------------------------------------------------------------------------------------
# token-prune / token-merge


def test_token_prune_applies_and_keeps_or_freezes_every_token(encoder):
    """Pruning in the last block: a kept token's output is the original's, a pruned one keeps its
    residual value from the prune point (the MLP input), and per row exactly the top-k are kept."""
    pruned, result = h.apply(encoder, "token-prune{keep=0.5,layers=[1]}")
    assert h.count_ops(pruned, TOKEN_PRUNE, TOKEN_RESTORE, TOKEN_MERGE) == {TOKEN_PRUNE.op_type: 1, TOKEN_RESTORE.op_type: 1, TOKEN_MERGE.op_type: 0}
    (report,) = result.reports
    assert report.extra["outputs"] == {"last_hidden_state": "restore"}
    assert report.sites[0]["tokens_out"] == "1 + ceil(0.5·(seq - 1))"
    point = h.op_nodes(pruned, TOKEN_PRUNE)[0].inputs[0].name
    feeds = h.encoder_feeds(seq=SEQ)
    ref = h.run(with_outputs(encoder, [point]), feeds)
    got = h.run(pruned, feeds)["last_hidden_state"]
    assert got.shape == ref["last_hidden_state"].shape
    kept = np.isclose(got, ref["last_hidden_state"], atol=1e-5).all(-1)
    frozen = np.isclose(got, ref[point], atol=1e-5).all(-1)
    assert (kept | frozen).all()
    assert kept[:, 0].all(), "CLS is protected"
    assert (kept.sum(1) == pruned_count(SEQ, 0.5, 1)).all()
    # Padding is pruned first: row 1's 3 padded tokens are the ones frozen.
    assert not kept[1, SEQ - 3 :].any()


def test_token_merge_applies_and_padding_never_leaks(encoder):
    merged, result = h.apply(encoder, "token-merge{r=2}")
    assert h.count_ops(merged, TOKEN_MERGE) == {TOKEN_MERGE.op_type: 2}
    (report,) = result.reports
    assert [s["tokens_out"] for s in report.sites] == ["seq - 2", "seq - 2 - 2"]
    feeds = h.encoder_feeds(seq=SEQ)
    other = dict(feeds, input_ids=np.where(feeds["attention_mask"] == 1, feeds["input_ids"], 3))
    a, b = h.run(merged, feeds)["last_hidden_state"], h.run(merged, other)["last_hidden_state"]
    real = feeds["attention_mask"] == 1
    np.testing.assert_allclose(a[real], b[real], atol=1e-5)
    assert not np.allclose(a, h.run(encoder, feeds)["last_hidden_state"], atol=1e-3), "tokens really merged"


def test_token_merge_short_outputs_shrink_the_token_axis(encoder):
    merged, _ = h.apply(encoder, "token-merge{r=2,outputs=short}")
    assert h.run(merged, h.encoder_feeds(seq=SEQ))["last_hidden_state"].shape == (2, SEQ - 4, 16)


@pytest.mark.parametrize("pipeline", ["token-prune{keep=1.0}", "token-merge{r=0}", "token-merge{r=0,unmerge=true}"])
def test_token_pass_identity_matches_the_original(encoder, pipeline):
    rewritten, result = h.apply(encoder, pipeline)
    op = TOKEN_PRUNE if "prune" in pipeline else TOKEN_MERGE
    assert len(h.op_nodes(rewritten, op)) == 2, "the ops are inserted in every layer"
    assert "identity" in result.reports[0].extra
    h.assert_same_outputs(encoder, rewritten, h.encoder_feeds(seq=SEQ))


@pytest.mark.parametrize("pipeline", ["token-prune{keep=0.5}", "token-merge{r=2}"])
def test_token_passes_refuse_decoders(decoder, pipeline):
    assert_refused(decoder, pipeline, PassNotApplicableError, "decoder.*token axis")


@pytest.mark.parametrize(
    ("pipeline", "error", "match"),
    [
        ("token-prune{keep=0.0}", OptionError, "keep"),
        ("token-prune{score=cls,protect=0}", OptionError, "protect"),
        ("token-prune{layers=[2]}", OptionError, "out of range"),
        ("token-merge{layers=[]}", OptionError, "empty"),
        ("token-merge{layers=[1,1]}", OptionError, "repeats"),
        ("token-merge{r=1,layers=[0]},token-prune{keep=0.5,layers=[1]}", PassNotApplicableError, "already reduced"),
    ],
)
def test_token_passes_refuse_with_a_reason(encoder, pipeline, error, match):
    model = h.clone(encoder)
    with pytest.raises(error, match=match):
        h.optimize(model, pipeline)
    if "," not in pipeline:  # a single refused pass leaves the model as it was
        assert graph_bytes(model) == graph_bytes(encoder)


# ------------------------------------------------------------------------------------------------
# kv-window / kv-evict / kv-quant


@pytest.mark.parametrize("pipeline", ["kv-window{window=8}", "kv-evict{budget=8,recent=2}", "kv-quant"])
def test_kv_passes_refuse_encoders_and_cacheless_decoders(encoder, cacheless, pipeline):
    name = pipeline.split("{")[0]
    assert_refused(encoder, pipeline, PassNotApplicableError, f"{name}: the model is an encoder")
    assert_refused(cacheless, pipeline, PassNotApplicableError, f"{name}: the model has no explicit KV cache")


@pytest.mark.parametrize(
    ("pipeline", "error", "match"),
    [
        ("kv-window{window=0}", OptionError, "window"),
        ("kv-window{sink=-1}", OptionError, "sink"),
        ("kv-evict{budget=4,sink=2,recent=3}", OptionError, "sink \\+ recent"),
        ("kv-evict{budget=4000}", OptionError, "budget"),
        ("kv-evict{policy=lru}", OptionError, "policy"),
        ("kv-quant{bits=3}", OptionError, "bits"),
        ("kv-quant{group=3}", PassNotApplicableError, "group=3 does not divide the head dim 8"),
    ],
)
def test_kv_passes_refuse_bad_options(decoder, pipeline, error, match):
    assert_refused(decoder, pipeline, error, match)


def test_kv_window_applies_and_bounds_the_cache(decoder):
    windowed, result = h.apply(decoder, "kv-window{sink=1,window=3}")
    assert h.count_ops(windowed, KV_WINDOW, KV_WINDOW_MASK) == {KV_WINDOW.op_type: 4, KV_WINDOW_MASK.op_type: 1}
    assert [v.name for v in windowed.graph.inputs] == [v.name for v in decoder.graph.inputs]
    assert [v.name for v in windowed.graph.outputs] == [v.name for v in decoder.graph.outputs]
    for out in windowed.graph.outputs[1:]:  # present.* come out of a KvWindow that reads the Concat
        assert KV_WINDOW.matches(out.producer()) and out.producer().inputs[0].producer().op_type == "Concat"
    assert result.reports[0].extra["max_cached_tokens"] == 4
    steps = list(h.decode_side_by_side(h.session(decoder), h.session(windowed), 6, PROMPTS))
    np.testing.assert_allclose(steps[0][1], steps[0][0], atol=1e-5)  # the prefill reads everything
    for _, _, _, state, _ in steps:
        assert all(v.shape[2] == 4 for v in state.values())
    assert not np.allclose(steps[-1][1], steps[-1][0], atol=1e-3), "evicted tokens change later steps"


def test_kv_window_identity_matches_the_original(decoder):
    windowed, _ = h.apply(decoder, "kv-window{sink=2,window=64}")
    decode_equal(decoder, windowed)


@pytest.mark.parametrize(("policy", "op"), [("h2o", KV_EVICT_H2O), ("snapkv", KV_EVICT_SNAP)])
def test_kv_evict_applies_and_keeps_the_budget(decoder, policy, op):
    evicted, result = h.apply(decoder, f"kv-evict{{budget=4,policy={policy},sink=1,recent=1}}")
    assert h.count_ops(evicted, op, KV_MASK_REMAP, KV_SLOT_MASK) == {op.op_type: 2, KV_MASK_REMAP.op_type: 1, KV_SLOT_MASK.op_type: 2}
    inputs = {v.name for v in evicted.graph.inputs}
    assert {"past.0.score", "past.1.score"} <= inputs
    for name in ("present.0.key", "present.1.value", "present.1.score"):
        assert op.matches(next(v for v in evicted.graph.outputs if v.name == name).producer())
    assert result.reports[0].extra["group"] == 1
    steps = list(h.decode_side_by_side(h.session(decoder), h.session(evicted), 5, PROMPTS))
    np.testing.assert_allclose(steps[0][1], steps[0][0], atol=1e-5)  # the prefill reads everything
    for _, _, _, state, _ in steps:
        assert state["past.0.key"].shape[2] == 4 and state["past.1.score"].shape[2] == 4


@pytest.mark.parametrize("policy", ["h2o", "snapkv"])
def test_kv_evict_identity_matches_the_original(decoder, policy):
    evicted, _ = h.apply(decoder, f"kv-evict{{budget=64,policy={policy},sink=1,recent=2}}")
    for step, (la, lb, sa, sb, _) in enumerate(h.decode_side_by_side(h.session(decoder), h.session(evicted), 6, PROMPTS)):
        np.testing.assert_allclose(lb, la, atol=1e-5, rtol=1e-5, err_msg=f"step {step}")
        for name in sa:
            np.testing.assert_array_equal(sb[name], sa[name])


def test_kv_quant_applies_and_quantizes_the_state(decoder):
    quant, result = h.apply(decoder, "kv-quant{bits=8,group=4,residual=2}")
    ops = (KV_DEQUANT_KEY, KV_DEQUANT_VALUE, KV_QUANT_KEY, KV_QUANT_VALUE)
    assert h.count_ops(quant, *ops) == {op.op_type: 2 for op in ops}
    inputs = {v.name: v for v in quant.graph.inputs}
    assert "past.0.key" not in inputs
    assert inputs["past.0.key.codes"].dtype == ir.DataType.INT8 and inputs["past.1.value.scale"].dtype == ir.DataType.FLOAT16
    assert result.reports[0].extra["state_inputs"] == 16
    worst = 1.0
    for la, lb, _, sb, _ in h.decode_side_by_side(h.session(decoder), h.session(quant), 6, PROMPTS):
        a, b = la[:, -1].astype(np.float64), lb[:, -1].astype(np.float64)
        worst = min(worst, float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min()))
        assert 2 <= sb["past.0.key.res"].shape[2] < 2 + 4
    assert sb["past.0.key.codes"].shape[2] >= 8
    assert 0.999 <= worst < 1.0 - 1e-9, worst


def test_kv_quant_residual_covering_the_context_is_exact(decoder):
    quant, _ = h.apply(decoder, "kv-quant{bits=4,group=4,residual=64}")
    for la, lb, sa, sb, _ in h.decode_side_by_side(h.session(decoder), h.session(quant), 6, PROMPTS):
        np.testing.assert_allclose(lb, la, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(sb["past.1.value.res"], sa["past.1.value"])
        assert sb["past.1.value.codes"].shape[2] == 0
