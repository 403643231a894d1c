"""split_model: segments recombined == the original (every sample, both opsets, KV I/O), structure, refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from passes.harness import TINY_DECODERS, decoder_feeds, decoder_model, encoder_feeds, encoder_model

from parekit.analysis import discover
from parekit.backends.ort import OrtRunner
from parekit.backends.specs import specs_from_ir_values
from parekit.errors import OptionError
from parekit.parity.data import random_feeds
from parekit.segments.runner import SegmentRunner
from parekit.segments.split import SEGMENT_KEY, split_model

from .conftest import pooled, recombine, run_all, with_exits


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], atol=atol, rtol=0, err_msg=name)


def _feeds(model, seed=0, **dims):
    sizes = {"batch": 3, "seq": 6, "past": 0, **dims}
    return random_feeds(specs_from_ir_values(model.graph.inputs), dims=sizes, seed=seed, model=model)


# ------------------------------------------------------------------------------------------------
# recombination on the harness models (milliseconds)


@pytest.mark.parametrize("at", [[0], [1], [0, 1, 2]])
def test_encoder_segments_recombine_exactly(split_to, at):
    model = pooled(encoder_model(layers=4))
    feeds = encoder_feeds(batch=3)
    directory = split_to(model, at)
    want = run_all(model, feeds)
    _same(recombine(directory, feeds), want, atol=0)
    _same(SegmentRunner(directory, optimization="disabled").run(feeds), want, atol=0)


def test_decoder_segments_recombine_with_kv_io(split_to):
    model = decoder_model(layers=3)
    directory = split_to(model, [0, 1])
    for feeds in (decoder_feeds(layers=3, past=0, seq=5), decoder_feeds(layers=3, past=4, seq=1, seed=1)):
        want = run_all(model, feeds)
        assert "present.2.key" in want
        _same(recombine(directory, feeds), want, atol=0)
        _same(SegmentRunner(directory, optimization="disabled").run(feeds), want, atol=0)
    manifest = json.loads((directory / "manifest.json").read_text())
    # Each segment takes its own layers' past and returns its own present (KV I/O per segment).
    assert [[io["name"] for io in s["outputs"] if io["name"].startswith("present")] for s in manifest["segments"]] == [
        ["present.0.key", "present.0.value"], ["present.1.key", "present.1.value"], ["present.2.key", "present.2.value"]
    ]
    assert "past.2.key" in [io["name"] for io in manifest["segments"][2]["inputs"]]


def test_exit_branches_go_with_their_cut_and_recombine(split_to):
    model = with_exits(pooled(encoder_model(layers=4)), [0, 2], "signal=cosine,threshold=2.0")
    directory = split_to(model)  # at the exits
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["exits"]["exits"][0]["layer"] == 0 and manifest["kind"] == "encoder"
    assert [s["layers"] for s in manifest["segments"]] == [[0, 0], [1, 2], [3, 3]]
    assert [s["exit"] and s["exit"]["layer"] for s in manifest["segments"]] == [0, 2, None]
    outs0 = {io["name"] for io in manifest["segments"][0]["outputs"]}
    assert {"exit0.take", "exit0.score", "sentence_embedding.exit0"} <= outs0
    assert "sentence_embedding" not in outs0  # the real head runs in the last segment
    # cosine: exit 2 compares with exit 0's output, which segment 0 passes on
    assert "sentence_embedding.exit0" in {io["name"] for io in manifest["segments"][1]["inputs"]}
    feeds = encoder_feeds(batch=3)
    want = run_all(model, feeds)
    _same(recombine(directory, feeds), want, atol=0)
    _same(SegmentRunner(directory, exits=False, optimization="disabled").run(feeds), want, atol=0)


# ------------------------------------------------------------------------------------------------
# structure


def test_only_batch_major_data_crosses_and_shapes_are_recomputed(load_sample):
    model = load_sample("llama-tiny", 23)
    mm = discover(model)
    plan = split_model(model, [0], mm=mm)
    first, second = plan.segments
    produced = {io.name for io in first.outputs}
    crossing = [io for io in second.inputs if io.name in produced]
    assert crossing and all(io.batch_axis == 0 for io in crossing)
    values = {v.name: v for n in model.graph for v in n.outputs}
    for io in crossing:
        assert values[io.name].shape[0].value == mm.batch_dim
    assert second.recomputed > 0  # shape tensors (the batch size as data) recomputed, not passed
    assert all(io.batch_axis == 0 for s in plan.segments for io in (*s.inputs, *s.outputs))
    assert second.exit is None and plan.exits is None


def test_initializers_go_only_where_they_are_used_and_files_check(split_to, load_sample):
    model = load_sample("llama-tiny", 23)
    directory = split_to(model, [0])
    original = {v.name for v in model.graph.initializers.values()}
    for k, path in enumerate(sorted(directory.glob("segment*.onnx"))):
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        used = {i for n in proto.graph.node for i in n.input}
        names = {t.name for t in proto.graph.initializer}
        assert names <= used and names <= original
        assert json.loads({p.key: p.value for p in proto.metadata_props}[SEGMENT_KEY])["index"] == k
    embedding = next(n for n in model.graph if n.op_type == "Gather" and n.inputs[0].is_initializer())
    seg0 = {t.name for t in onnx.load(str(directory / "segment0.onnx")).graph.initializer}
    seg1 = {t.name for t in onnx.load(str(directory / "segment1.onnx")).graph.initializer}
    assert embedding.inputs[0].name in seg0
    layer1 = set(discover(model).layers[1].nodes)
    readers: dict[str, set[bool]] = {}
    for node in model.graph:
        for v in node.inputs:
            if v is not None and v.name in original:
                readers.setdefault(v.name, set()).add(node.name in layer1)
    private = {name for name, where in readers.items() if where == {True}}  # read by layer-1 nodes only
    assert private and private <= seg1 and not private & seg0


def test_the_source_model_is_not_changed(load_sample):
    model = load_sample("llama-tiny", 23)
    before = (len(model.graph), [v.name for v in model.graph.inputs], [v.name for v in model.graph.outputs])
    split_model(model, [0])
    assert (len(model.graph), [v.name for v in model.graph.inputs], [v.name for v in model.graph.outputs]) == before


# ------------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize(
    ("at", "text"),
    [
        ([3], "cannot cut after the last layer (3)"),
        ([4], "out of range"),
        ([1, 1], "repeats a layer"),
        ([], "no layer to cut at"),
    ],
)
def test_bad_cuts_are_refused(at, text):
    with pytest.raises(OptionError, match=text.replace("(", r"\(").replace(")", r"\)")):
        split_model(encoder_model(layers=4), at)


def test_exits_in_form_if_are_refused():
    model = with_exits(pooled(encoder_model(layers=3)), [0], "signal=cosine,threshold=2.0")
    meta = json.loads(model.metadata_props["parekit.exits"])
    model.metadata_props["parekit.exits"] = json.dumps({**meta, "form": "if"})
    with pytest.raises(OptionError, match="form=if"):
        split_model(model)


def test_no_exits_and_no_cut_is_refused():
    with pytest.raises(OptionError, match="records no exits") as info:
        split_model(encoder_model(layers=2))
    assert "--at" in (info.value.note or "")


# ------------------------------------------------------------------------------------------------
# every sample, both opsets (the tiny decoders at opset 23 in the fast run)

_CUTS = {"minilm": [1, 3], "vit": [3, 7], "smollm2": [9, 19], "gpt2-tiny": [0], "llama-tiny": [0]}
_SAMPLES = [
    *TINY_DECODERS,
    *(pytest.param(n, o, marks=pytest.mark.slow, id=f"{n}-{o}") for n in ("minilm", "vit", "smollm2") for o in (18, 23)),
]


@pytest.mark.parametrize(("name", "opset"), _SAMPLES)
def test_every_sample_recombines_within_1e_5(sample_path, load_sample, split_to, name, opset):
    model = load_sample(name, opset)
    mm = discover(model)
    directory = split_to(model, _CUTS[name])
    seq = 4 if name == "smollm2" else 6
    cases = [_feeds(model, seq=seq)]
    if mm.has_kv_cache:  # prefill above, one decode step with a cache here
        cases.append(_feeds(model, seed=1, seq=1, past=5))
    del model
    wants = {}
    for level in ("disabled", "all"):  # one session of the whole model at a time (SmolLM2)
        original = OrtRunner(str(sample_path(name, opset)), optimization=level)
        wants[level] = [original.run(feeds) for feeds in cases]
        del original
    for feeds, want in zip(cases, wants["disabled"], strict=True):
        _same(recombine(directory, feeds), want)
    # ORT's fusions change the rounding (by more than 1e-5 on SmolLM2's logits): compare like with like
    runner = SegmentRunner(directory)  # default ORT optimizations, exits on (this model has none)
    for feeds, want in zip(cases, wants["all"], strict=True):
        _same(runner.run(feeds), want)
