"""ExitGate: body == NumPy reference (ORT and the spec's evaluator), hand-computed values, edge cases, refusals."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import pytest

from parekit.ops import OpAttributeError, OpInputError
from parekit.ops.exit_gate import EXIT_GATE, SIGNALS, fires_never

from .harness import IR_VERSION, assert_body_matches_reference, check_model, run_model, run_op

RNG = np.random.default_rng(23)
TOL = {"rtol": 1e-5, "atol": 1e-6}
SOFTMAX_SIGNALS = ("margin", "entropy", "maxprob")
TRT_SAFE = {
    "Cast", "Constant", "Div", "Equal", "Exp", "Gather", "Greater", "GreaterOrEqual", "Less", "LessOrEqual",
    "Log", "Min", "Mul", "Reciprocal", "ReduceMax", "ReduceSum", "Shape", "Slice", "Sqrt", "Sub", "TopK",
    "Where",
}  # fmt: skip


def _inputs(signal: str, shape: tuple[int, ...], dtype: type) -> list[np.ndarray]:
    x = (RNG.standard_normal(shape) * 3).astype(dtype)
    if signal != "cosine":
        return [x]
    prev = (x.astype(np.float32) + RNG.standard_normal(shape).astype(np.float32)).astype(dtype)
    return [x, prev]


# -- body == reference sweeps -------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 11), (1, 1), (4, 1), (2, 2, 3, 6), (2, 3, 257)], ids=str)
@pytest.mark.parametrize("signal", SIGNALS)
def test_body_matches_reference(signal, shape, dtype, opset):
    inputs = _inputs(signal, shape, dtype)
    for threshold in (0.4, 1.5 if signal != "entropy" else -0.5):
        score, take = assert_body_matches_reference(
            EXIT_GATE, inputs, {"signal": signal, "threshold": threshold}, **TOL, opset=opset
        )
        assert score.shape == shape[:-1] and score.dtype == np.float32 and take.dtype == bool
        if fires_never(signal, threshold):
            assert not take.any()


@pytest.mark.parametrize("signal", SIGNALS)
def test_body_matches_reference_with_static_shapes_and_ties(signal):
    x = np.zeros((3, 6), np.float32)
    x[0, [1, 4]] = 5.0  # a tie for the top: margin 0
    x[1] = np.arange(6)
    x[2, 2] = -np.inf  # a masked logit: p = 0, 0 log 0 = 0
    inputs = [x, x[::-1].copy()] if signal == "cosine" else [x]
    score, _ = assert_body_matches_reference(
        EXIT_GATE, inputs, {"signal": signal, "threshold": 0.3}, **TOL, static_shapes=True
    )
    if signal == "margin":
        assert score[0] == 0.0


# -- hand-computed values ------------------------------------------------------------------------------

P = np.array([0.5, 0.3, 0.2])
HAND = {  # rows: p = [.5, .3, .2], uniform over 3, V = 1 (separately)
    "margin": [0.2, 0.0],
    "maxprob": [0.5, 1.0 / 3.0],
    "entropy": [-(P * np.log(P)).sum(), math.log(3.0)],  # 1.0296530, 1.0986123
}


@pytest.mark.parametrize("signal", SOFTMAX_SIGNALS)
def test_hand_computed_softmax_signals(signal):
    x = np.stack([np.log(P) + 7.0, np.full(3, -2.0)]).astype(np.float32)  # the shift must not matter
    for score in (
        EXIT_GATE.run_reference([x], {"signal": signal})[0],
        run_op(EXIT_GATE, [x], {"signal": signal})[0],
    ):
        np.testing.assert_allclose(score, HAND[signal], rtol=1e-6, atol=1e-7)
    one = np.array([[3.0], [-40.0]], np.float32)  # V == 1: margin 1, maxprob 1, entropy 0
    want = 0.0 if signal == "entropy" else 1.0
    for score in (
        EXIT_GATE.run_reference([one], {"signal": signal})[0],
        run_op(EXIT_GATE, [one], {"signal": signal})[0],
    ):
        np.testing.assert_array_equal(score, [want, want])


def test_hand_computed_cosine():
    x = np.array([[1, 0], [0, 0], [1, 2], [3, 4]], np.float32)
    prev = np.array([[1, 1], [1, 1], [-2, -4], [0, 0]], np.float32)
    want = [1 / math.sqrt(2), 0.0, -1.0, 0.0]  # zero vectors (either side): 0
    attrs = {"signal": "cosine", "threshold": 0.5}
    for score, take in (EXIT_GATE.run_reference([x, prev], attrs), run_op(EXIT_GATE, [x, prev], attrs)):
        np.testing.assert_allclose(score, want, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(take, [True, False, False, False])


@pytest.mark.parametrize(
    ("signal", "threshold", "want"),
    [("margin", 0.1, [True, False]), ("maxprob", 0.4, [True, False]), ("entropy", 1.05, [True, False]),
     ("entropy", 1.2, [True, True]), ("margin", 0.0, [True, True])],
)  # fmt: skip
def test_take_direction(signal, threshold, want):
    """>= threshold takes the exit, except entropy (<=): confident rows have low entropy."""
    x = np.stack([np.log(P), np.zeros(3)]).astype(np.float32)
    attrs = {"signal": signal, "threshold": threshold}
    np.testing.assert_array_equal(run_op(EXIT_GATE, [x], attrs)[1], want)
    np.testing.assert_array_equal(EXIT_GATE.run_reference([x], attrs)[1], want)


# -- edge cases ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal", SIGNALS)
def test_nan_rows_never_take_the_exit(signal):
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    x[1, 2] = np.nan
    prev = np.ones_like(x)
    prev[2, 0] = np.nan
    inputs = [x, prev] if signal == "cosine" else [x]
    always = {
        "signal": signal,
        "threshold": 1e9 if signal == "entropy" else -1e9,
    }  # fires on every finite row
    score, take = assert_body_matches_reference(EXIT_GATE, inputs, always, **TOL)
    nan_rows = [1, 2] if signal == "cosine" else [1]
    assert np.isnan(score[nan_rows]).all() and not take[nan_rows].any()
    assert take[0]


@pytest.mark.parametrize("signal", SIGNALS)
def test_never_fire_thresholds_on_confident_rows(signal):
    x = np.zeros((2, 3, 8), np.float32)
    x[..., 0] = 80.0  # one-hot: margin = maxprob = 1 exactly, entropy ~0
    inputs = [x, x * 2.0] if signal == "cosine" else [x]  # parallel: cosine 1
    threshold = -1e-6 if signal == "entropy" else 1.0 + 1e-6
    assert fires_never(signal, threshold) and not fires_never(signal, 0.5)
    score, take = assert_body_matches_reference(
        EXIT_GATE, inputs, {"signal": signal, "threshold": threshold}, **TOL
    )
    np.testing.assert_allclose(score, 0.0 if signal == "entropy" else 1.0, atol=1e-6)
    assert not take.any()


def test_float16_is_computed_in_float32():
    """Entropy of 4096 uniform float16 logits is ln 4096: a float16 sum of p log p would be off by ~1e-2."""
    x = np.full((2, 4096), 3.0, np.float16)
    score, _ = assert_body_matches_reference(EXIT_GATE, [x], {"signal": "entropy"}, **TOL)
    np.testing.assert_allclose(score, math.log(4096), rtol=1e-6)


def test_large_logits_are_stable():
    x = np.array([[1000.0, 999.0, -1000.0], [-1e30, -1e30, -1e30]], np.float32)
    for signal in SOFTMAX_SIGNALS:
        score, _ = assert_body_matches_reference(EXIT_GATE, [x], {"signal": signal}, **TOL)
        assert np.isfinite(score).all(), signal


# -- the node ------------------------------------------------------------------------------------------


def _model(*values: ir.Value) -> ir.Model:
    graph = ir.Graph(list(values), [], nodes=[], opset_imports={"": 23}, name="g")
    return ir.Model(graph, ir_version=IR_VERSION)


def test_make_node_shapes_and_one_function_per_signal():
    x = ir.Value(name="logits", type=ir.TensorType(ir.DataType.FLOAT16), shape=ir.Shape(["B", "S", 50]))
    prev = ir.Value(name="prev", type=ir.TensorType(ir.DataType.FLOAT16), shape=ir.Shape(["B", "S", 50]))
    model = _model(x, prev)
    margin = EXIT_GATE.make_node(model, [x], attributes={"signal": "margin", "threshold": 0.7})
    cosine = EXIT_GATE.make_node(model, [x, prev], attributes={"signal": "cosine", "threshold": 0.99})
    again = EXIT_GATE.make_node(model, [x], attributes={"threshold": 0.2})  # default signal: margin
    for node in (margin, cosine, again):
        model.graph.append(node)
        score, take = node.outputs
        assert (score.dtype, take.dtype) == (ir.DataType.FLOAT, ir.DataType.BOOL)
        assert [str(d) for d in score.shape.dims] == ["B", "S"] == [str(d) for d in take.shape.dims]
        model.graph.outputs.extend(node.outputs)
    assert sorted(key[2] for key in model.functions) == ["cosine", "margin"]
    assert margin.overload == "margin" and cosine.overload == "cosine"
    assert margin.attributes["signal"].value == "margin"
    assert cosine.attributes["threshold"].value == pytest.approx(0.99)
    check_model(model)
    feeds = [(RNG.standard_normal((2, 3, 50)) * 2).astype(np.float16) for _ in range(2)]
    got = run_model(model, feeds)
    np.testing.assert_allclose(got[0], EXIT_GATE.run_reference(feeds[:1], {"threshold": 0.7})[0], **TOL)
    np.testing.assert_allclose(got[2], EXIT_GATE.run_reference(feeds, {"signal": "cosine"})[0], **TOL)


def test_plugin_identity():
    fields = {f.name: f.type for f in EXIT_GATE.plugin.fields}
    assert fields == {"signal": "kCHAR", "threshold": "kFLOAT32"}
    assert EXIT_GATE.plugin.name == EXIT_GATE.op_type and EXIT_GATE.plugin.namespace == "parekit"


@pytest.mark.parametrize("signal", SIGNALS)
def test_bodies_are_standard_and_tensorrt_friendly(signal):
    function = EXIT_GATE.function(23, {"signal": signal})
    ops = {node.op_type for node in function}
    assert ops <= TRT_SAFE, ops - TRT_SAFE
    assert ("TopK" in ops) == (signal == "margin")
    assert function.overload == signal


# -- refusals ------------------------------------------------------------------------------------------


def _value(name: str, shape: list[int | str], dtype: ir.DataType = ir.DataType.FLOAT) -> ir.Value:
    return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(shape))


def test_refuses_cosine_without_prev_and_prev_without_cosine():
    x, prev = _value("x", ["B", 8]), _value("p", ["B", 8])
    model = _model(x, prev)
    with pytest.raises(OpInputError, match="signal=cosine needs input 'prev'"):
        EXIT_GATE.make_node(model, [x], attributes={"signal": "cosine"})
    with pytest.raises(OpInputError, match="'prev' is only read by signal=cosine, got signal=entropy"):
        EXIT_GATE.make_node(model, [x, prev], attributes={"signal": "entropy"})
    with pytest.raises(OpInputError, match="signal=cosine needs input 'prev'"):
        EXIT_GATE.run_reference([np.zeros((2, 3), np.float32)], {"signal": "cosine"})
    with pytest.raises(OpInputError, match="only read by signal=cosine"):
        EXIT_GATE.run_reference([np.zeros((2, 3), np.float32)] * 2, {"signal": "margin"})


def test_refuses_bad_attributes():
    x = _value("x", ["B", 8])
    model = _model(x)
    with pytest.raises(
        OpAttributeError, match="must be one of margin, entropy, maxprob, cosine, got 'margn'"
    ) as info:
        EXIT_GATE.make_node(model, [x], attributes={"signal": "margn"})
    assert info.value.note is not None and "did you mean 'margin'" in info.value.note
    with pytest.raises(OpAttributeError, match="'threshold' must not be NaN"):
        EXIT_GATE.make_node(model, [x], attributes={"threshold": float("nan")})
    with pytest.raises(OpAttributeError, match="'threshold' must be a float"):
        EXIT_GATE.make_node(model, [x], attributes={"threshold": "high"})
    assert not model.functions  # nothing was added by a refused call


def test_refuses_bad_inputs():
    v = _value("v", [8])
    with pytest.raises(OpInputError, match=r"input 'x' \(v\) has rank 1, expected rank >= 2"):
        EXIT_GATE.make_node(_model(v), [v])
    x, other = _value("x", ["B", 8]), _value("p", ["B", 9])
    with pytest.raises(OpInputError, match=r"'prev' \(p\) has shape"):
        EXIT_GATE.make_node(_model(x, other), [x, other], attributes={"signal": "cosine"})
    x, half = _value("x", ["B", 8]), _value("h", ["B", 8], ir.DataType.FLOAT16)
    with pytest.raises(OpInputError, match=r"'prev' \(h\) has dtype FLOAT16"):
        EXIT_GATE.make_node(_model(x, half), [x, half], attributes={"signal": "cosine"})
    ints = _value("i", ["B", 8], ir.DataType.INT64)
    with pytest.raises(OpInputError, match="has dtype INT64"):
        EXIT_GATE.make_node(_model(ints), [ints])
    with pytest.raises(OpInputError, match=r"expected \[\.\.\., V\], V >= 1"):
        EXIT_GATE.run_reference([np.zeros((2, 0), np.float32)])
