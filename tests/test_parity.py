"""Tests of parekit.parity (data, metrics, thresholds, model comparison, golden files) and parekit.testing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from rich.console import Console
from rich.table import Table

from parekit.analysis.input_bounds import int_input_bounds
from parekit.backends.ort import OrtRunner
from parekit.backends.specs import TensorSpec
from parekit.errors import DataError, ParityError
from parekit.parity import (
    Thresholds,
    compare_arrays,
    compare_models,
    compare_to_golden,
    load_feeds_npz,
    load_golden,
    load_npz,
    prose_paragraphs,
    random_feeds,
    run_outputs,
    save_golden,
    save_npz,
)
from parekit.testing import assert_parity

VOCAB = 50

# A tiny "language model": embedding lookup (through a Cast), a projection to logits, plus a
# pooled embedding and an extra cache-like output.
LM_TEXT = """
<ir_version: 10, opset_import: ["" : 18]>
lm (int32[batch, seq] input_ids, int64[batch, seq] attention_mask, int64[batch, seq] token_type_ids)
    => (float[batch, seq, 50] logits, float[batch, 8] sentence_embedding, float[batch, seq, 8] present) {
  ids64 = Cast<to = 7>(input_ids)
  h0 = Gather(embed, ids64)
  tt = Gather(types, token_type_ids)
  h = Add(h0, tt)
  logits = MatMul(h, head)
  sentence_embedding = ReduceMean<keepdims = 0>(h, axes)
  present = Identity(h)
}
"""


def _lm(scale: float = 1.0, drop_present: bool = False, head_noise: float = 0.0) -> ir.Model:
    text = LM_TEXT
    if drop_present:
        text = text.replace(", float[batch, seq, 8] present", "").replace("  present = Identity(h)\n", "")
    proto = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    embed = rng.standard_normal((VOCAB, 8)).astype(np.float32)
    head = rng.standard_normal((8, VOCAB)).astype(np.float32) * scale
    head += head_noise * np.random.default_rng(1).standard_normal(head.shape).astype(np.float32)
    types = rng.standard_normal((2, 8)).astype(np.float32)
    for name, array in (("embed", embed), ("head", head), ("types", types), ("axes", np.array([1]))):
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    return ir.from_proto(proto)


def _feeds(n: int = 3) -> list[dict[str, np.ndarray]]:
    model = _lm()
    specs = OrtRunner(model).input_specs
    return [random_feeds(specs, seed=i, model=model, dims={"seq": 5 + i}) for i in range(n)]


# ---------------------------------------------------------------- data


def test_prose_paragraphs_deterministic_and_clean() -> None:
    paragraphs = prose_paragraphs(min_chars=200)
    assert len(paragraphs) > 200
    assert prose_paragraphs(10) == paragraphs[:10]
    for text in paragraphs:
        assert len(text) >= 200
        assert "  " not in text and "\n" not in text
        assert not text.startswith(">>>")
    with pytest.raises(DataError, match="prose paragraphs"):
        prose_paragraphs(10**6)


def test_int_input_bounds_follow_casts_to_gathers() -> None:
    assert int_input_bounds(_lm()) == {"input_ids": VOCAB, "token_type_ids": 2}


def test_moved_names_stay_importable_from_parity() -> None:
    """Earlier callers import these from parekit.parity / parekit.parity.data; they are the moved functions."""
    from parekit import data, parity
    from parekit.parity import data as pdata
    from parekit.parity import npz

    assert parity.int_input_bounds is pdata.int_input_bounds is int_input_bounds
    assert parity.prose_paragraphs is pdata.prose_paragraphs is data.prose_paragraphs
    assert pdata.save_npz is npz.save_npz and pdata.load_feeds_npz is npz.load_feeds_npz


def test_random_feeds_respect_dtypes_dims_and_bounds() -> None:
    model = _lm()
    specs = OrtRunner(model).input_specs
    feeds = random_feeds(specs, model=model, seed=3, dims={"seq": 64})
    assert feeds["input_ids"].dtype == np.int32 and feeds["input_ids"].shape == (2, 64)
    assert feeds["input_ids"].min() >= 0 and feeds["input_ids"].max() < VOCAB
    assert feeds["input_ids"].max() > 2  # the vocabulary bound was used, not [0, 2)
    assert set(np.unique(feeds["token_type_ids"])) <= {0, 1}
    np.testing.assert_array_equal(feeds["attention_mask"], np.ones((2, 64), np.int64))
    again = random_feeds(specs, model=model, seed=3, dims={"seq": 64})
    np.testing.assert_array_equal(feeds["input_ids"], again["input_ids"])
    other = random_feeds(specs, model=model, seed=4, dims={"seq": 64})
    assert not np.array_equal(feeds["input_ids"], other["input_ids"])
    # explicit ranges win over the bounds found in the graph
    ranged = random_feeds(specs, model=model, int_ranges={"input_ids": (10, 12)})
    assert set(np.unique(ranged["input_ids"])) <= {10, 11}
    with pytest.raises(DataError, match="empty value range"):
        random_feeds(specs, int_ranges={"input_ids": (5, 5)})


def test_random_feeds_decoder_dims() -> None:
    specs = [
        TensorSpec("input_ids", np.dtype(np.int64), ("batch_size", "sequence_length")),
        TensorSpec("attention_mask", np.dtype(np.int64), ("batch", "total")),
        TensorSpec("position_ids", np.dtype(np.int64), ("batch", "seq")),
        TensorSpec("past_key_0", np.dtype(np.float16), ("batch", 3, "past", 4)),
        TensorSpec("flag", np.dtype(np.bool_), (1,)),
    ]
    feeds = random_feeds(specs, dims={"past": 7, "seq": 3})
    assert feeds["input_ids"].shape == (2, 3)
    assert set(np.unique(feeds["input_ids"])) <= {0, 1}  # no model: [0, 2)
    assert feeds["attention_mask"].shape == (2, 10)
    np.testing.assert_array_equal(feeds["position_ids"], [[7, 8, 9], [7, 8, 9]])
    assert feeds["past_key_0"].dtype == np.float16 and feeds["past_key_0"].shape == (2, 3, 7, 4)
    assert feeds["flag"].dtype == np.bool_


def test_random_feeds_unresolved_dim() -> None:
    specs = [TensorSpec("pixel_values", np.dtype(np.float32), ("batch", 3, "height", None))]
    with pytest.raises(DataError) as info:
        random_feeds(specs)
    assert "'height'" in info.value.message and "unnamed axis 3" in info.value.message
    assert info.value.note is not None and "dims=" in info.value.note
    feeds = random_feeds(specs, dims={"height": 4, "pixel_values:3": 5})
    assert feeds["pixel_values"].shape == (2, 3, 4, 5)


def test_npz_round_trip_single_and_multi(tmp_path: Path) -> None:
    sets = _feeds(2)
    save_npz(tmp_path / "multi.npz", sets)
    loaded = load_npz(tmp_path / "multi.npz")
    assert len(loaded) == 2
    for a, b in zip(sets, loaded, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            assert a[key].dtype == b[key].dtype
    np.savez(tmp_path / "plain.npz", **sets[0])
    specs = OrtRunner(_lm()).input_specs
    single = load_feeds_npz(tmp_path / "plain.npz", specs)
    assert len(single) == 1 and set(single[0]) == set(sets[0])


def test_load_feeds_npz_errors(tmp_path: Path) -> None:
    specs = OrtRunner(_lm()).input_specs
    with pytest.raises(DataError, match="no such file"):
        load_feeds_npz(tmp_path / "absent.npz", specs)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a valid .npz"):
        load_feeds_npz(tmp_path / "bad.npz", specs)
    feeds = _feeds(1)[0]
    np.savez(tmp_path / "short.npz", input_ids=feeds["input_ids"])
    with pytest.raises(DataError, match="no array for input 'attention_mask'"):
        load_feeds_npz(tmp_path / "short.npz", specs)
    wrong = dict(feeds, input_ids=feeds["input_ids"].astype(np.int64))
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(DataError, match="'input_ids' is int64, the model expects int32"):
        load_feeds_npz(tmp_path / "wrong.npz", specs)


# ---------------------------------------------------------------- metrics


def test_compare_arrays_values() -> None:
    ref = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], np.float32)
    cand = np.array([[1.0, 2.5, 3.0], [0.0, 0.0, -1.0]], np.float32)
    m = compare_arrays(ref, cand)
    assert m["max_abs"] == pytest.approx(2.0)
    assert m["mean_abs"] == pytest.approx(2.5 / 6)
    assert m["max_rel"] == pytest.approx(2.0)
    r0, c0 = ref[0].astype(np.float64), cand[0].astype(np.float64)
    cos0 = float(r0 @ c0 / np.linalg.norm(r0) / np.linalg.norm(c0))
    assert m["cosine"] == pytest.approx((cos0 - 1.0) / 2)
    assert m["cosine_min"] == pytest.approx(-1.0)
    assert m["top1"] == pytest.approx(0.5)


def test_compare_arrays_identical_and_shape_mismatch() -> None:
    x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    m = compare_arrays(x, x.copy())
    assert m["max_abs"] == 0 and m["cosine"] == pytest.approx(1.0) and m["top1"] == 1.0
    bad = compare_arrays(x, x[:, :3])
    assert bad == {"shape_mismatch": True, "reference_shape": [2, 4, 8], "candidate_shape": [2, 3, 8]}


def test_top1_only_for_logits_like_outputs() -> None:
    assert "top1" not in compare_arrays(np.ones(5, np.float32), np.ones(5, np.float32))
    assert "top1" not in compare_arrays(np.ones((3, 4), np.int64), np.ones((3, 4), np.int64))
    assert "top1" not in compare_arrays(np.ones((3, 1), np.float32), np.ones((3, 1), np.float32))


def test_nan_on_one_side_fails() -> None:
    ref = np.ones((2, 3), np.float32)
    cand = ref.copy()
    cand[0, 1] = np.nan
    m = compare_arrays(ref, cand)
    assert np.isnan(m["max_abs"])
    assert Thresholds().check("y", m)  # fails
    both = compare_arrays(cand, cand.copy())  # NaN in the same place on both sides is equal
    assert both["max_abs"] == 0 and Thresholds().check("y", both) == []


# ---------------------------------------------------------------- thresholds


def test_thresholds_parse() -> None:
    t = Thresholds.parse(["max_abs=1e-3", "logits:cosine=0.99", "sentence_embedding:top1=0.97"])
    assert t.for_output("present") == {"max_abs": 1e-3, "cosine": 0.999}
    assert t.for_output("logits") == {"max_abs": 1e-3, "cosine": 0.99, "top1": 0.99}
    assert t.for_output("sentence_embedding") == {"max_abs": 1e-3, "cosine": 0.999, "top1": 0.97}
    t2 = Thresholds.parse("max_abs=off, out:0:cosine_min=0.5, logits:top1=off")
    assert t2.for_output("x") == {"cosine": 0.999}
    assert t2.for_output("out:0") == {"cosine": 0.999, "cosine_min": 0.5}
    assert t2.for_output("logits") == {"cosine": 0.999}
    assert Thresholds.parse(str(t)).for_output("logits") == t.for_output("logits")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("max_abs", "does not parse"),
        ("cosin=0.9", "unknown metric 'cosin'"),
        ("max_abs=abc", "not a number"),
        ("max_abs=-1", "negative"),
        ("logits:cosine=1.5", r"outside \[-1, 1\]"),
        ("top1=2", r"outside \[0, 1\]"),
    ],
)
def test_thresholds_bad_text(text: str, pattern: str) -> None:
    with pytest.raises(ParityError, match=pattern) as info:
        Thresholds.parse(text)
    assert text.split("=")[0].strip() in info.value.message


def test_threshold_check_lines() -> None:
    t = Thresholds.parse("logits:cosine=0.99")
    lines = t.check("logits", {"max_abs": 1e-5, "cosine": 0.91, "top1": 1.0})
    assert lines == ["output 'logits': cosine 0.91 < 0.99"]
    lines = t.check("h", {"max_abs": 0.002, "cosine": 1.0})
    assert lines == ["output 'h': max_abs 0.002 > 0.0001"]
    # asked for by name but not computable: a failure, not a silent pass
    assert Thresholds.parse("h:top1=0.9").check("h", {"max_abs": 0, "cosine": 1.0}) == [
        "output 'h': top1 is not computed for this output"
    ]


# ---------------------------------------------------------------- comparing models


def test_identical_models_pass_and_report_renders() -> None:
    report = compare_models(_lm(), _lm(), _feeds())
    assert report.passed, report.failures
    assert set(report.outputs) == {"logits", "sentence_embedding", "present"}
    assert report.outputs["logits"]["max_abs"] == 0
    assert report.outputs["logits"]["top1"] == 1.0
    assert report.thresholds["logits"]["top1"] == 0.99
    assert report.feed_sets == 3
    json.dumps(report.to_dict())
    table = report.render()
    assert isinstance(table, Table)
    console = Console(record=True, width=200)
    console.print(table)
    assert "logits" in console.export_text()


def test_different_candidate_fails() -> None:
    report = compare_models(_lm(), _lm(scale=1.5), _feeds(), thresholds="sentence_embedding:max_abs=off")
    assert not report.passed
    assert any(line.startswith("output 'logits': max_abs ") for line in report.failures)
    assert not any("sentence_embedding" in line for line in report.failures)
    assert report.outputs["logits"]["cosine"] == pytest.approx(1.0, abs=1e-6)  # a pure rescale
    loose = compare_models(_lm(), _lm(scale=1.5), _feeds(), thresholds="max_abs=off")
    assert loose.passed, loose.failures


def test_logits_top1_checked_by_name() -> None:
    report = compare_models(_lm(), _lm(head_noise=0.8), _feeds(), thresholds="max_abs=off,cosine=-1")
    top1 = report.outputs["logits"]["top1"]
    assert top1 < 0.99
    assert report.failures == [f"output 'logits': top1 {top1:.4g} < 0.99"]


def test_outputs_only_in_one_model_are_listed() -> None:
    report = compare_models(_lm(), _lm(drop_present=True), _feeds())
    assert report.passed
    assert report.not_compared == {"only in reference": ["present"]}
    assert "present" not in report.outputs
    reverse = compare_models(_lm(drop_present=True), _lm(), _feeds())
    assert reverse.not_compared == {"only in candidate": ["present"]}
    with pytest.raises(ParityError, match="'present' \\(only in reference\\)"):
        compare_models(_lm(), _lm(drop_present=True), _feeds(), outputs=["present"])


def test_aggregation_equals_concatenation() -> None:
    feeds = _feeds(3)  # three different sequence lengths
    ref = run_outputs(_lm(), feeds)
    cand = run_outputs(_lm(head_noise=0.05), feeds)
    report = compare_models(_lm(), _lm(head_noise=0.05), feeds, thresholds="max_abs=off")
    flat_r = np.concatenate([o["logits"].reshape(-1, VOCAB) for o in ref])
    flat_c = np.concatenate([o["logits"].reshape(-1, VOCAB) for o in cand])
    expected = compare_arrays(flat_r, flat_c)
    for metric in ("max_abs", "mean_abs", "max_rel", "mean_rel", "cosine", "cosine_min", "top1"):
        assert report.outputs["logits"][metric] == pytest.approx(expected[metric], rel=1e-9), metric


def test_golden_round_trip(tmp_path: Path) -> None:
    feeds = _feeds()
    golden = run_outputs(_lm(), feeds)
    path = save_golden(tmp_path / "golden.npz", golden)
    loaded = load_golden(path)
    assert len(loaded) == 3
    np.testing.assert_array_equal(loaded[2]["logits"], golden[2]["logits"])
    assert compare_to_golden(_lm(), feeds, path).passed
    bad = compare_to_golden(_lm(scale=1.5), feeds, path)
    assert not bad.passed and bad.reference == str(path)
    with pytest.raises(ParityError, match="3 output sets but 2 feed sets"):
        compare_to_golden(_lm(), feeds[:2], path)


def test_assert_parity() -> None:
    feeds = _feeds(2)
    report = assert_parity(_lm(), _lm(), feeds)
    assert report.passed
    with pytest.raises(AssertionError, match="output 'logits': max_abs"):
        assert_parity(_lm(), _lm(scale=1.5), feeds)
    assert_parity(_lm(), _lm(scale=1.5), feeds, max_abs=None)
    with pytest.raises(AssertionError, match="cosine"):
        assert_parity(_lm(), _lm(head_noise=2.0), feeds, thresholds=["max_abs=off"], cosine=0.9999)


def test_no_feeds_and_no_common_outputs() -> None:
    with pytest.raises(ParityError, match="no feed sets"):
        compare_models(_lm(), _lm(), [])
    other = ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 18]>
        g (int32[batch, seq] input_ids) => (int32[batch, seq] z) {
          z = Identity(input_ids)
        }
        """
    )
    with pytest.raises(ParityError, match="no output in common"):
        compare_models(_lm(), other, _feeds(1))
