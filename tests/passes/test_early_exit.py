"""early-exit: exit heads (own / adapter), gates, metadata, the If form, refusals; identity on the samples."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from parekit.analysis import discover
from parekit.calibration import CalibrationSet, collect
from parekit.errors import OptionError, PassNotApplicableError
from parekit.ops.exit_gate import EXIT_GATE
from parekit.passes import PassContext
from parekit.passes.early_exit import EXITS_KEY
from parekit.passes.exit_adapter import Adapter, save_adapters
from parekit.passes.pipeline import parse_pipeline

from .harness import apply, clone, decoder_feeds, decoder_model, encoder_feeds, encoder_model, optimize, run

H = 16  # the harness models' hidden width


# ------------------------------------------------------------------------------------------------
# small models


def pooled_encoder(layers: int = 3) -> ir.Model:
    """The harness encoder plus a masked mean pooling and L2 normalization: ``sentence_embedding [B, H]``."""
    proto = ir.serde.serialize_model(encoder_model(layers=layers))
    g = proto.graph
    h = onnx.helper
    g.initializer.extend(
        [
            onnx.numpy_helper.from_array(np.array([-1], np.int64), "pool.axes_last"),
            onnx.numpy_helper.from_array(np.array([1], np.int64), "pool.axes_seq"),
            onnx.numpy_helper.from_array(np.array(1e-9, np.float32), "pool.eps"),
        ]
    )
    g.node.extend(
        [
            h.make_node("Cast", ["attention_mask"], ["pool.maskf"], to=onnx.TensorProto.FLOAT, name="pool_cast"),
            h.make_node("Unsqueeze", ["pool.maskf", "pool.axes_last"], ["pool.mask3"], name="pool_unsq"),
            h.make_node("Mul", ["last_hidden_state", "pool.mask3"], ["pool.masked"], name="pool_mul"),
            h.make_node("ReduceSum", ["pool.masked", "pool.axes_seq"], ["pool.sum"], keepdims=0, name="pool_sum"),
            h.make_node("ReduceSum", ["pool.mask3", "pool.axes_seq"], ["pool.count"], keepdims=0, name="pool_count"),
            h.make_node("Max", ["pool.count", "pool.eps"], ["pool.count1"], name="pool_max"),
            h.make_node("Div", ["pool.sum", "pool.count1"], ["pool.mean"], name="pool_div"),
            h.make_node("ReduceL2", ["pool.mean", "pool.axes_last"], ["pool.norm"], keepdims=1, name="pool_l2"),
            h.make_node("Max", ["pool.norm", "pool.eps"], ["pool.norm1"], name="pool_max2"),
            h.make_node("Div", ["pool.mean", "pool.norm1"], ["sentence_embedding"], name="pool_normalize"),
        ]
    )
    g.output.append(h.make_tensor_value_info("sentence_embedding", onnx.TensorProto.FLOAT, ["batch", H]))
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def np_pool(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float64)[..., None]
    mean = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-9)


def np_decoder_head(model: ir.Model, x: np.ndarray) -> np.ndarray:
    """The harness decoder's head (LayerNorm, then the LM head MatMul) in NumPy, weights from the graph."""
    mm = discover(model)
    nodes = {n.name: n for n in model.graph}
    ln = next(nodes[n] for n in mm.head_nodes if nodes[n].op_type == "LayerNormalization")
    mat = next(nodes[n] for n in mm.head_nodes if nodes[n].op_type == "MatMul")
    gamma, beta, w = (v.const_value.numpy().astype(np.float64) for v in (ln.inputs[1], ln.inputs[2], mat.inputs[1]))
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + 1e-5) * gamma + beta) @ w


def layer_outputs(model: ir.Model, feeds: dict[str, np.ndarray], which: str = "output") -> list[np.ndarray]:
    """Every block's output (or input) on ``feeds``, collected from the original model."""
    mm = discover(model)
    names = [getattr(lm, which) for lm in mm.layers]
    ((_, values),) = list(collect(model, names, CalibrationSet([feeds])))
    return [values[n] for n in names]


def gate_reference(x: np.ndarray, signal: str, threshold: float, prev: np.ndarray | None = None) -> list[np.ndarray]:
    return EXIT_GATE.reference([x] if prev is None else [x, prev], {"signal": signal, "threshold": threshold})


def exits_meta(model: ir.Model) -> dict:
    return json.loads(model.metadata_props[EXITS_KEY])


def gates(model: ir.Model) -> list[ir.Node]:
    from onnx_ir.traversal import RecursiveGraphIterator

    return [n for n in RecursiveGraphIterator(model.graph) if EXIT_GATE.matches(n)]


def no_cache_feeds(layers: int = 3, seq: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    f = decoder_feeds(layers=layers, past=0, seq=seq, seed=seed)
    return {k: v for k, v in f.items() if not k.startswith("past")}


# ------------------------------------------------------------------------------------------------
# the outputs form


def test_identity_configuration_changes_nothing():
    model = decoder_model()
    out, result = apply(model, "early-exit{layers=[]}")
    (report,) = result.reports
    assert report.identity == "no exit layers (layers=[])" and not report.modified
    assert EXITS_KEY not in out.metadata_props and not gates(out)


@pytest.mark.parametrize("layer", [0, 1])
def test_decoder_exit_is_the_head_on_the_layer_output(layer):
    model = decoder_model(layers=3)
    feeds = decoder_feeds(layers=3)
    out, result = apply(model, f"early-exit{{layers=[{layer}],threshold=0.02}}")
    names = [v.name for v in out.graph.outputs]
    assert names[:7] == [v.name for v in model.graph.outputs]  # the original outputs first, unchanged
    assert names[7:] == [f"logits.exit{layer}", f"exit{layer}.score", f"exit{layer}.take"]
    got, want = run(out, feeds), run(model, feeds)
    for name in want:  # a threshold that fires changes no main output in this form
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    x = layer_outputs(model, feeds)[layer]
    np.testing.assert_allclose(got[f"logits.exit{layer}"], np_decoder_head(model, x), atol=1e-4, rtol=1e-4)
    score, take = gate_reference(got[f"logits.exit{layer}"], "margin", 0.02)
    np.testing.assert_allclose(got[f"exit{layer}.score"], score, atol=1e-5)
    np.testing.assert_array_equal(got[f"exit{layer}.take"], take)
    assert take.any() and not take.all()  # the threshold matters on these feeds
    # Weights are shared, never copied; the clones are named after the head's nodes.
    assert {v.name for v in out.graph.initializers.values()} == {v.name for v in model.graph.initializers.values()}
    mm = discover(model)
    clones = {n.name for n in out.graph if n.name.startswith(f"exit{layer}.")}
    assert clones == {f"exit{layer}.{n}" for n in mm.head_nodes} | {f"exit{layer}.gate"}
    (g,) = gates(out)
    assert g.inputs[0].name == f"logits.exit{layer}"


def test_metadata_and_report_follow_the_contract():
    model = decoder_model(layers=3)
    out, result = apply(model, "early-exit{layers=[1,0],signal=entropy,threshold=1.5,form=segments}")
    meta = exits_meta(out)
    assert meta == {
        "version": 1,
        "form": "segments",
        "gated_output": "logits",
        "head_outputs": ["logits"],
        "exits": [
            {"layer": layer, "head": "own", "adapter": None, "signal": "entropy", "threshold": 1.5,
             "score": f"exit{layer}.score", "take": f"exit{layer}.take",
             "outputs": {"logits": f"logits.exit{layer}"}, "calibration": None}
            for layer in (0, 1)
        ],
    }
    (report,) = result.reports
    assert [s["layer"] for s in report.sites] == [0, 1]
    assert report.sites[0] == {"layer": 0, "head": "own", "adapter": None, "adapter_params": 0,
                               "signal": "entropy", "threshold": 1.5}
    assert report.extra["form"] == "segments" and report.extra["gated_output"] == "logits"
    assert report.nodes_added == len([n for n in out.graph if n.name.startswith("exit")])
    # The map of the rewritten model is the original's (what split and later passes rely on).
    a, b = discover(model), discover(out)
    assert [lm.output for lm in a.layers] == [lm.output for lm in b.layers] and a.final_output == b.final_output


def test_encoder_outputs_gate_on_the_embedding_with_cosine():
    model = pooled_encoder(layers=4)
    feeds = encoder_feeds()
    out, _ = apply(model, "early-exit{layers=[1,2],threshold=0.5}")
    meta = exits_meta(out)
    assert meta["gated_output"] == "sentence_embedding"
    assert meta["head_outputs"] == ["last_hidden_state", "sentence_embedding"]
    assert [e["signal"] for e in meta["exits"]] == ["cosine", "cosine"]  # auto for encoders
    got = run(out, feeds)
    xs, ins = layer_outputs(model, feeds), layer_outputs(model, feeds, "input")
    mask = feeds["attention_mask"]
    for layer in (1, 2):
        np.testing.assert_allclose(got[f"last_hidden_state.exit{layer}"], xs[layer], atol=1e-5)
        np.testing.assert_allclose(got[f"sentence_embedding.exit{layer}"], np_pool(xs[layer], mask), atol=1e-5)
    # Exit 1 compares with the own head on the stream entering block 1; exit 2 with exit 1.
    prev1 = np_pool(ins[1], mask).astype(np.float32)
    for layer, prev in ((1, prev1), (2, got["sentence_embedding.exit1"])):
        score, take = gate_reference(got[f"sentence_embedding.exit{layer}"], "cosine", 0.5, prev)
        np.testing.assert_allclose(got[f"exit{layer}.score"], score, atol=1e-5)
        np.testing.assert_array_equal(got[f"exit{layer}.take"], take)
    assert "sentence_embedding.exit1.prev" not in got  # internal, not a graph output
    # The pooling mask is computed once, shared by the real head and both exits.
    assert sum(n.op_type == "Cast" and n.inputs[0].name == "attention_mask" for n in out.graph) == sum(
        n.op_type == "Cast" and n.inputs[0].name == "attention_mask" for n in model.graph
    )


def test_output_option_picks_the_gated_output():
    out, _ = apply(pooled_encoder(), "early-exit{layers=[0],signal=maxprob,threshold=0.5,output=last_hidden_state}")
    (g,) = gates(out)
    assert g.inputs[0].name == "last_hidden_state.exit0" and exits_meta(out)["gated_output"] == "last_hidden_state"


# ------------------------------------------------------------------------------------------------
# adapters


def _random_adapters(layers, hidden=H, seed=0, kinds=("linear", "mlp")):
    rng = np.random.default_rng(seed)
    out = []
    for i, layer in enumerate(layers):
        kind = kinds[i % len(kinds)]
        if kind == "linear":
            t = {"w": rng.standard_normal((hidden, hidden)) * 0.1, "b": rng.standard_normal(hidden) * 0.1}
        else:
            f = 8
            t = {"g": 1 + 0.1 * rng.standard_normal(hidden), "w1": rng.standard_normal((hidden, f)) * 0.2,
                 "b1": rng.standard_normal(f) * 0.1, "w2": rng.standard_normal((f, hidden)) * 0.2,
                 "b2": rng.standard_normal(hidden) * 0.1}
        out.append(Adapter(layer, kind, {k: np.asarray(v, np.float32) for k, v in t.items()}, {"seed": seed}))
    return out


def test_adapter_from_file_matches_the_numpy_reference(tmp_path):
    model = decoder_model(layers=3)
    feeds = decoder_feeds(layers=3)
    adapters = _random_adapters([0, 1])
    path = tmp_path / "a.npz"
    save_adapters(path, adapters + _random_adapters([2], seed=5))  # extra layers in the file are fine
    out, result = apply(model, f'early-exit{{layers=[0,1],head=adapter,adapter="{path}",threshold=0.2}}')
    got = run(out, feeds)
    xs = layer_outputs(model, feeds)
    for a in adapters:
        want = np_decoder_head(model, a.apply(xs[a.layer]))
        np.testing.assert_allclose(got[f"logits.exit{a.layer}"], want, atol=1e-4, rtol=1e-4)
        score, take = gate_reference(got[f"logits.exit{a.layer}"], "margin", 0.2)
        np.testing.assert_allclose(got[f"exit{a.layer}.score"], score, atol=1e-5)
        np.testing.assert_array_equal(got[f"exit{a.layer}.take"], take)
    meta = exits_meta(out)
    assert [(e["adapter"]["kind"], e["adapter"]["params"]) for e in meta["exits"]] == [
        ("linear", H * H + H), ("mlp", H + H * 8 + 8 + 8 * H + H)
    ]
    assert meta["exits"][0]["adapter"]["record"] == {"seed": 0}
    names = {v.name for v in out.graph.initializers.values()}
    assert {"exit0.adapter.w", "exit0.adapter.b", "exit1.adapter.w1"} <= names
    assert result.reports[0].sites[1]["adapter"] == "mlp" and result.reports[0].extra["adapter_source"] == str(path)


def test_adapter_fitted_on_calibration_data_moves_the_stream_towards_the_final_one():
    model = decoder_model(layers=3)
    calib = CalibrationSet([decoder_feeds(layers=3, seed=s) for s in range(3)], source="random")
    out, result = apply(model, "early-exit{layers=[0],head=adapter,threshold=0.5}", PassContext(calibration=calib))
    (e,) = exits_meta(out)["exits"]
    assert e["adapter"]["kind"] == "linear" and e["adapter"]["params"] == H * H + H
    assert e["adapter"]["record"]["calibration"] == "random" and e["adapter"]["record"]["tokens"] > 0
    mm = discover(model)
    feeds = calib.feeds[0]
    ((_, v),) = list(collect(out, [mm.layers[0].output, "exit0.adapter.out", mm.final_output], CalibrationSet([feeds])))
    x, a, y = v[mm.layers[0].output], v["exit0.adapter.out"], v[mm.final_output]
    keep = feeds["attention_mask"][:, -x.shape[1]:].astype(bool)
    assert np.linalg.norm((a - y)[keep]) < 0.8 * np.linalg.norm((x - y)[keep])
    assert "closed-form" in result.reports[0].extra["adapter_source"]


# ------------------------------------------------------------------------------------------------
# budget calibration


def test_budget_sets_each_gate_threshold_from_calibration():
    model = decoder_model(layers=3)
    calib = CalibrationSet([decoder_feeds(layers=3, seed=s) for s in range(2)], source="random")
    out, result = apply(model, 'early-exit{layers=[0,1],budget="logits:top1=0.9"}', PassContext(calibration=calib))
    meta = exits_meta(out)
    by_layer = {int(g.name.removeprefix("exit").split(".")[0]): g.attributes["threshold"].value for g in gates(out)}
    for e in meta["exits"]:
        assert e["calibration"] is not None and "exit_rate" in e["calibration"]
        assert by_layer[e["layer"]] == pytest.approx(e["threshold"])
    assert result.reports[0].extra["calibration"]["budget"] == "logits:top1=0.9"
    assert all("exit_rate" in s for s in result.reports[0].sites)


# ------------------------------------------------------------------------------------------------
# the If form


def _set_thresholds(model: ir.Model, by_layer: dict[int, float]) -> None:
    for g in gates(model):
        layer = int(g.name.removeprefix("exit").split(".")[0])
        g.attributes["threshold"] = ir.AttrFloat32("threshold", by_layer[layer])


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_if_form_runs_the_exit_that_fires_and_skips_the_rest(kind):
    if kind == "decoder":
        model, feeds, spec = decoder_model(layers=4, cache=False), no_cache_feeds(layers=4), "signal=margin"
    else:
        model, feeds, spec = pooled_encoder(layers=4), encoder_feeds(), "signal=maxprob,output=sentence_embedding"
    outs, _ = apply(model, f"early-exit{{layers=[0,2],{spec},threshold=2.0}}")
    exits = run(outs, feeds)
    iff, _ = apply(model, f"early-exit{{layers=[0,2],{spec},threshold=2.0,form=if}}")
    assert [v.name for v in iff.graph.outputs] == [v.name for v in model.graph.outputs]
    assert exits_meta(iff)["form"] == "if"
    top = [n for n in iff.graph if n.op_type == "If"]
    assert len(top) == 1 and top[0].name == "exit0.if"
    mm = discover(model)
    main = {n.name for n in iff.graph}
    assert set(mm.layers[0].nodes) <= main and not set(mm.layers[1].nodes) & main  # block 1 only in else
    want = run(model, feeds)
    main_names = list(want)
    for thresholds, expect in (
        ({0: 2.0, 2: 2.0}, {n: want[n] for n in main_names}),  # never fires: the original
        ({0: -1.0, 2: 2.0}, {n: exits[f"{n}.exit0"] for n in main_names}),
        ({0: 2.0, 2: -1.0}, {n: exits[f"{n}.exit2"] for n in main_names}),
    ):
        m = clone(iff)
        _set_thresholds(m, thresholds)
        got = run(m, feeds)
        for n in main_names:
            np.testing.assert_allclose(got[n], expect[n], atol=1e-5, err_msg=f"{thresholds} {n}")
    # Batch-wide: one row that does not take the exit keeps every row on the full model.
    m = clone(iff)
    score = exits["exit0.score"]
    row_min = score.reshape(score.shape[0], -1).min(axis=1)
    _set_thresholds(m, {0: float(row_min.max()), 2: 2.0})  # row with the highest min takes, the other not
    got = run(m, feeds)
    for n in main_names:
        np.testing.assert_allclose(got[n], want[n], atol=1e-5)


# ------------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize(
    ("pipeline", "error", "text"),
    [
        ("early-exit{layers=[3],threshold=0.9}", OptionError, r"out of range"),
        ("early-exit{layers=[0,2],threshold=0.9}", OptionError, r"layer 2 is the last layer"),
        ("early-exit{layers=[0]}", OptionError, r"one of the options 'threshold' and 'budget'"),
        ('early-exit{layers=[0],threshold=0.9,budget="logits:top1=0.9"}', OptionError, r"'threshold' and 'budget', not both"),
        ('early-exit{layers=[0],adapter="a.npz",threshold=0.9}', OptionError, r"'adapter' needs head=adapter"),
        ('early-exit{layers=[0],budget="logits:top1=0.9"}', PassNotApplicableError, r"needs calibration data"),
        ("early-exit{layers=[0],head=adapter,threshold=0.9}", PassNotApplicableError, r"needs calibration data"),
        ("early-exit{layers=[0],threshold=0.9,form=if}", PassNotApplicableError, r"form=if .* KV cache"),
        ("early-exit{layers=[0],threshold=0.9,output=\"present.0.key\"}", OptionError, r"not a head output \(head outputs: logits\)"),
        ('early-exit{layers=[0],budget="logits:top5=0.9"}', OptionError, r"budget metric"),
    ],
)
def test_bad_configurations_are_refused(pipeline, error, text):
    model = decoder_model(layers=3)
    with pytest.raises(error, match=text):
        optimize(model, pipeline)


def test_adapter_file_without_the_layer_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    save_adapters(path, _random_adapters([1]))
    with pytest.raises(OptionError, match=r"has no adapter for layer\(s\) \[0\]"):
        optimize(decoder_model(layers=3), f'early-exit{{layers=[0,1],head=adapter,adapter="{path}",threshold=0.9}}')
    save_adapters(path, _random_adapters([0], hidden=8))
    with pytest.raises(OptionError, match="maps width 8, the model's residual stream is 16"):
        optimize(decoder_model(layers=3), f'early-exit{{layers=[0],head=adapter,adapter="{path}",threshold=0.9}}')


def test_model_without_head_outputs_is_refused():
    model = decoder_model(layers=3)
    mm = discover(model)
    logits = next(v for v in model.graph.outputs if v.name == "logits")
    model.graph.outputs.remove(logits)  # only the present KV left: nothing reads the final stream
    ctx = PassContext(analyze=lambda m: mm)
    with pytest.raises(PassNotApplicableError, match="no head found: no graph output depends on the final"):
        optimize(model, "early-exit{layers=[0],threshold=0.9}", ctx, verify=False)


def test_model_with_exits_is_refused():
    out, _ = apply(decoder_model(layers=3), "early-exit{layers=[0],threshold=0.9}")
    with pytest.raises(PassNotApplicableError, match="already has early exits"):
        optimize(out, "early-exit{layers=[1],threshold=0.9}")


def test_unknown_output_name_is_echoed_safely():
    with pytest.raises(OptionError) as err:
        optimize(decoder_model(layers=3), 'early-exit{layers=[0],threshold=0.9,output="\x1b[31mx"}')
    assert "\x1b" not in str(err.value) and "head outputs: logits" in str(err.value)


# ------------------------------------------------------------------------------------------------
# pipeline text, CLI


def test_pipeline_text_round_trips():
    text = 'early-exit{layers=[4,2],head=adapter,adapter="dir/a b.npz",signal=cosine,threshold=0.98,form=if,output=x}'
    resolved = parse_pipeline(text).resolve()
    canonical = str(resolved)
    assert canonical == (
        'early-exit{layers=[4,2],head=adapter,adapter="dir/a b.npz",signal=cosine,threshold=0.98,'
        "budget=\"\",form=if,output=x}"
    )
    assert str(parse_pipeline(canonical).resolve()) == canonical


def test_passes_command_documents_the_options(run_cli):
    out = run_cli("passes", "early-exit").output
    for word in ("layers", "head", "adapter", "signal", "threshold", "budget", "form", "output", "ViT"):
        assert word in out, word


def test_optimize_report_lists_the_exits(run_cli, tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(ir.serde.serialize_model(decoder_model(layers=3)), src)
    report = tmp_path / "r.json"
    result = run_cli("optimize", src, "--passes", "early-exit{layers=[1],threshold=0.7}", "-o", tmp_path / "o.onnx",
                     "--report", report)
    assert "layer=1, head=own" in result.output
    (p,) = json.loads(report.read_text())["passes"]
    assert p["sites"] == [{"layer": 1, "head": "own", "adapter": None, "adapter_params": 0, "signal": "margin",
                           "threshold": 0.7}]
    assert p["extra"]["head_outputs"] == ["logits"]
    saved = onnx.load(tmp_path / "o.onnx")
    assert json.loads({p.key: p.value for p in saved.metadata_props}[EXITS_KEY])["exits"][0]["layer"] == 1
