"""SegmentRunner: per-row exits with batch compaction, decoders' KV refusal, manifests, atomic writes, parity/bench."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from passes.harness import encoder_feeds, encoder_model

from parekit.bench import bench_models
from parekit.errors import DataError, ModelLoadError, ParekitError
from parekit.parity import compare_models
from parekit.runtime import SegmentRunner
from parekit.segments.manifest import read_manifest, write_segments
from parekit.segments.split import split_model

from .conftest import pooled, run_all, set_thresholds, with_exits


def _between(scores: np.ndarray, fire: int) -> float:
    """A threshold that the ``fire`` highest scores pass and the others do not (midway, no ties)."""
    ordered = np.sort(scores)[::-1]
    assert ordered[fire - 1] > ordered[fire], "tied scores: pick other feeds"
    return float((ordered[fire - 1] + ordered[fire]) / 2)


def _last(take: np.ndarray) -> np.ndarray:
    return take[:, -1] if take.ndim == 2 else take


def _expected(outs: dict[str, np.ndarray], exits: list[dict], name: str) -> tuple[np.ndarray, list[int | None]]:
    """What each row should get: the first exit that fired gives its exit output, else the full model's."""
    want, done = outs[name].copy(), np.zeros(len(outs[name]), bool)
    layer: list[int | None] = [None] * len(want)
    for e in exits:
        fired = _last(outs[e["take"]]) & ~done
        if name in e["outputs"]:
            want[fired] = outs[e["outputs"][name]][fired]
        for r in np.flatnonzero(fired):
            layer[r] = e["layer"]
        done |= fired
    return want, layer


# ------------------------------------------------------------------------------------------------
# per-row exits


@pytest.fixture()
def encoder_with_exits():
    """A pooled 4-layer encoder with cosine exits after layers 0 and 2, thresholds set so that of 8 rows
    3 exit at layer 0, 2 at layer 2 and 3 run the whole model; and its feeds."""
    model = with_exits(pooled(encoder_model(layers=4)), [0, 2], "signal=cosine,threshold=2.0")
    feeds = encoder_feeds(batch=8, seq=7, seed=3)
    outs = run_all(model, feeds)
    t0 = _between(outs["exit0.score"], 3)
    rest = outs["exit2.score"][outs["exit0.score"] < t0]
    set_thresholds(model, {0: t0, 2: _between(rest, 2)})
    return model, feeds


def test_rows_that_exit_get_their_exit_output_and_the_others_the_full_model(split_to, encoder_with_exits):
    model, feeds = encoder_with_exits
    outs = run_all(model, feeds)
    exits = json.loads(model.metadata_props["parekit.exits"])["exits"]
    runner = SegmentRunner(split_to(model), optimization="disabled")
    assert runner.output_names == [
        "last_hidden_state", "sentence_embedding", "last_hidden_state.exit0", "sentence_embedding.exit0",
        "exit0.score", "exit0.take",
    ]
    got = runner.run(feeds)
    want, layers = _expected(outs, exits, "sentence_embedding")
    assert sorted(map(str, set(layers))) == ["0", "2", "None"]  # a mixed batch
    assert runner.last_exit_layers == layers
    assert runner.last_segment_rows == [8, 5, 3]  # the batch compacted after each exit
    rows0 = [r for r, at in enumerate(layers) if at == 0]
    np.testing.assert_array_equal(got["sentence_embedding"][rows0], outs["sentence_embedding.exit0"][rows0])
    np.testing.assert_allclose(got["sentence_embedding"], want, atol=1e-6, rtol=0)
    full = [r for r, at in enumerate(layers) if at is None]
    assert not np.allclose(outs["sentence_embedding.exit0"][full], outs["sentence_embedding"][full], atol=1e-3)
    np.testing.assert_allclose(got["last_hidden_state"], _expected(outs, exits, "last_hidden_state")[0], atol=1e-6)
    for name in ("exit0.score", "exit0.take"):  # computed for every row
        np.testing.assert_array_equal(got[name], outs[name])


def test_without_exits_every_row_runs_the_whole_model(split_to, encoder_with_exits):
    model, feeds = encoder_with_exits
    runner = SegmentRunner(split_to(model), exits=False, optimization="disabled")
    assert runner.output_names == [v.name for v in model.graph.outputs]
    got, outs = runner.run(feeds), run_all(model, feeds)
    for name, array in outs.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)
    assert runner.last_exit_layers == [None] * 8 and runner.last_segment_rows == [8, 8, 8]


def test_when_every_row_exits_the_later_segments_do_not_run(split_to, encoder_with_exits):
    model, feeds = encoder_with_exits
    set_thresholds(model, {0: -2.0, 2: -2.0})  # cosine >= -2: always
    outs = run_all(model, feeds)
    runner = SegmentRunner(split_to(model), optimization="disabled")
    got = runner.run(feeds, ["sentence_embedding"])
    np.testing.assert_array_equal(got["sentence_embedding"], outs["sentence_embedding.exit0"])
    assert runner.last_exit_layers == [0] * 8
    assert runner.last_segment_ms[1:] == [None, None] and runner.last_segment_rows == [8, 0, 0]


def test_later_exit_outputs_are_refused_for_rows_that_exited(split_to, encoder_with_exits):
    model, feeds = encoder_with_exits
    runner = SegmentRunner(split_to(model), optimization="disabled")
    with pytest.raises(DataError, match=r"exited at layer 0, so output\(s\) exit2.take have no exit version") as info:
        runner.run(feeds, ["exit2.take"])
    assert "--no-exits" in (info.value.note or "")
    with pytest.raises(DataError, match="no output named 'nope'"):
        runner.run(feeds, ["nope"])


@pytest.fixture()
def decoder_with_exit(load_sample):
    """llama-tiny (opset 23) with a margin exit after layer 0; of 6 rows the 2 with the highest margin on
    their last token exit."""
    from parekit.backends.specs import specs_from_ir_values
    from parekit.parity.data import random_feeds

    model = with_exits(load_sample("llama-tiny", 23), [0], "signal=margin,threshold=2.0")
    feeds = random_feeds(specs_from_ir_values(model.graph.inputs), dims={"batch": 6, "seq": 5, "past": 3},
                         seed=0, model=model)
    outs = run_all(model, feeds)
    set_thresholds(model, {0: _between(outs["exit0.score"][:, -1], 2)})
    return model, feeds


def test_decoder_rows_exit_on_their_last_token(split_to, decoder_with_exit):
    model, feeds = decoder_with_exit
    outs = run_all(model, feeds)
    exits = json.loads(model.metadata_props["parekit.exits"])["exits"]
    runner = SegmentRunner(split_to(model), optimization="disabled")
    assert "present.1.key" not in runner.output_names and "present.0.key" in runner.output_names
    got = runner.run(feeds, ["logits", "present.0.key"])
    want, layers = _expected(outs, exits, "logits")
    assert layers.count(0) == 2 and runner.last_exit_layers == layers and runner.last_segment_rows == [6, 4]
    np.testing.assert_allclose(got["logits"], want, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got["present.0.key"], outs["present.0.key"])  # layer 0 ran for every row


def test_decoder_kv_of_skipped_layers_is_refused_with_exits_and_exact_without(split_to, decoder_with_exit):
    model, feeds = decoder_with_exit
    directory = split_to(model)
    with pytest.raises(DataError, match="per-token exits that fill the skipped layers' KV are part 2"):
        SegmentRunner(directory, optimization="disabled").run(feeds, ["logits", "present.1.key"])
    got, outs = SegmentRunner(directory, exits=False, optimization="disabled").run(feeds), run_all(model, feeds)
    assert list(got) == list(outs)
    for name, array in outs.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)


# ------------------------------------------------------------------------------------------------
# the manifest, read


def _edit(directory, change):
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _segment_file(name):
    return lambda d: d["segments"][0].__setitem__("file", name)


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (lambda d: d.__setitem__("format", "other"), "format is 'other', expected 'parekit.segments'"),
        (lambda d: d.__setitem__("version", 2), "version 2 is not supported"),
        (lambda d: d.__setitem__("kind", "x"), "'kind' must be"),
        (lambda d: d.__setitem__("segments", []), "'segments' must be a non-empty list"),
        (_segment_file("../segment0.onnx"), "is not a plain file name"),
        (_segment_file("/etc/passwd"), "is not a plain file name"),
        (_segment_file("sub/segment0.onnx"), "is not a plain file name"),
        (_segment_file(".."), "is not a plain file name"),
        (_segment_file("absent.onnx"), "missing or not a regular file"),
        (lambda d: d["segments"][1]["inputs"][0].__setitem__("batch_axis", 2), "batch_axis"),
        (lambda d: d["segments"].reverse(), "before the segment that computes it"),
        (lambda d: d["outputs"].append("ghost"), "no segment computes the output(s) ['ghost']"),
    ],
)
def test_malformed_manifests_are_refused_in_one_line(split_to, change, text):
    directory = split_to(encoder_model(layers=2), [0])
    _edit(directory, change)
    with pytest.raises(ModelLoadError) as info:
        SegmentRunner(directory)
    assert text in info.value.message and "\n" not in info.value.message


def test_missing_directory_manifest_or_json_and_mismatched_files(tmp_path, split_to):
    with pytest.raises(ModelLoadError, match="no such directory"):
        read_manifest(tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="has no manifest.json"):
        read_manifest(tmp_path)
    directory = split_to(encoder_model(layers=2), [0])
    (directory / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="manifest.json is not valid JSON"):
        read_manifest(directory)
    other = split_to(encoder_model(layers=2), [0], name="other")
    os.replace(other / "segment1.onnx", other / "swap")
    os.replace(other / "segment0.onnx", other / "segment1.onnx")
    os.replace(other / "swap", other / "segment0.onnx")
    with pytest.raises(ModelLoadError, match="does not match the manifest's segment 0"):
        SegmentRunner(other)


def test_a_segment_file_linking_out_of_the_directory_is_refused(split_to, tmp_path):
    directory = split_to(encoder_model(layers=2), [0])
    outside = tmp_path / "outside.onnx"
    os.replace(directory / "segment0.onnx", outside)
    os.symlink(outside, directory / "segment0.onnx")
    with pytest.raises(ModelLoadError, match="missing or not a regular file"):
        read_manifest(directory)


# ------------------------------------------------------------------------------------------------
# the directory, written


def test_an_existing_target_is_refused_and_left_alone(tmp_path):
    plan = split_model(encoder_model(layers=2), [0])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("mine")
    for name in ("full", "empty", "file"):
        with pytest.raises(ParekitError, match="exists"):
            write_segments(plan, tmp_path / name, "m.onnx")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine" and not list((tmp_path / "empty").iterdir())
    assert (tmp_path / "file").read_text() == "mine"
    with pytest.raises(ParekitError, match="does not exist"):
        write_segments(plan, tmp_path / "no" / "dir", "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "full"]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from parekit.backends import save
    from parekit.errors import BackendError

    plan = split_model(encoder_model(layers=3), [0, 1])
    calls = []
    real = save.save_model

    def failing(model, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise BackendError(f"cannot save model to {path}: disk full")
        return real(model, path, **kwargs)

    monkeypatch.setattr(save, "save_model", failing)
    with pytest.raises(ParekitError, match="disk full") as info:
        write_segments(plan, tmp_path / "segs", "m.onnx")
    assert str(tmp_path / "segs" / "segment1.onnx") in info.value.message  # the user's path, not the temporary one
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# parity and bench take a SegmentRunner


def test_parity_and_bench_accept_a_segment_runner(tmp_path, split_to):
    import onnx_ir as ir

    model = pooled(encoder_model(layers=3))
    ir.save(model, tmp_path / "m.onnx")
    runner = SegmentRunner(split_to(model, [1]))
    feeds = [encoder_feeds(batch=2, seed=s) for s in range(2)]
    report = compare_models(tmp_path / "m.onnx", runner, feeds, thresholds="max_abs=1e-5")
    assert report.passed and set(report.outputs) == {"last_hidden_state", "sentence_embedding"}
    assert report.candidate == runner.name
    bench = bench_models([tmp_path / "m.onnx", runner], feeds, warmup=1, iters=2, measure_memory=True)
    assert [m.model for m in bench.models] == [str(tmp_path / "m.onnx"), runner.name]
    assert all(m.runs == 4 for m in bench.models)
    assert bench.models[1].peak_rss_mib is not None  # the child rebuilt the runner from its child_spec
