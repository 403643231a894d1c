"""state-reset: start=false is the model bit for bit, start=true with any past is a fresh prefill, the runtime
feeds the control input, and the refusals."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx_ir as ir
import pytest

from parekit.errors import OptionError, ParekitError, PassNotApplicableError
from parekit.ops.kv_quant_attention import KV_QUANT_ATTENTION
from parekit.passes.state_reset import DEFAULT_INPUT, reset_state
from parekit.runtime import DecoderSession, generate, left_pad
from parekit.runtime.decoder import START_INPUT, is_empty_state, start_feeds

from .harness import PROMPTS, apply, check, clone, count_ops, decoder_model, encoder_model, optimize, runner

KV_PIPELINES = {
    "plain": "",
    "kv-window": "kv-window{sink=2,window=6}",
    "kv-evict": "kv-evict{policy=h2o,budget=8,sink=2,recent=2}",
    "kv-quant8": "kv-quant{bits=8,group=8,residual=4}",
    "kv-quant4": "kv-quant{bits=4,group=8,residual=4}",
    "kv-snapkv": "kv-evict{policy=snapkv,budget=8,sink=2,recent=2}",
}
CASES = [
    *[("llama-tiny", 18, k) for k in ("plain", "kv-window", "kv-evict", "kv-quant8", "kv-snapkv")],
    *[("gpt2-tiny", 18, k) for k in ("plain", "kv-window", "kv-evict", "kv-quant8")],
    ("llama-tiny", 23, "plain"),
    # fused attention (parekit::KvQuantAttention): discovery no longer follows, reset_state applies it
    ("llama-tiny", 23, "kv-quant8"),
    ("llama-tiny", 23, "kv-quant4"),
]


def _pair(load_sample, name: str, opset: int, key: str):
    """(the KV-optimized model, the same with state-reset) as sessions with ORT optimizations off."""
    model = load_sample(name, opset)
    if KV_PIPELINES[key]:
        optimize(model, KV_PIPELINES[key])
    base = clone(model)
    if opset == 23 and key.startswith("kv-quant"):  # the manager's discovery refuses fused kv-quant graphs
        assert count_ops(model, KV_QUANT_ATTENTION)["KvQuantAttention"] == 2
        report = reset_state(model)
    else:
        (report,) = optimize(model, "state-reset").reports
    check(model)
    return DecoderSession(runner(base)), DecoderSession(runner(model)), report


def _run(session: DecoderSession, ids, mask, pos, state, start: bool | None = None):
    """One step with explicit feeds (``start`` None: the model takes no control input)."""
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **state}
    if start is not None:
        feeds[START_INPUT] = np.full((ids.shape[0], 1), start)
    out = session.runner.run(feeds)
    nxt = {"past" + n[len("present") :]: v for n, v in out.items() if n.startswith("present")}
    return out, nxt


def _decode(session: DecoderSession, prompts, steps: int, state=None, start: bool | None = None):
    """Greedy steps of a left-padded batch from ``state`` (default: empty); yields every step's outputs."""
    ids, mask, pos = left_pad(prompts, 0)
    state = session.empty_state(len(prompts)) if state is None else state
    for k in range(steps):
        out, state = _run(session, ids, mask, pos, state, None if start is None else (start and k == 0))
        yield out
        ids = out["logits"][:, -1:].argmax(-1).astype(np.int64)
        mask = np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], 1)
        pos = pos[:, -1:] + 1


def _assert_same(a: dict, b: dict, where: str) -> None:
    assert set(a) == set(b), where
    for name in a:
        assert np.array_equal(a[name], b[name]), f"{where}: {name} differs"


@pytest.mark.parametrize(("name", "opset", "key"), CASES, ids=[f"{n}-op{o}-{k}" for n, o, k in CASES])
def test_start_false_is_bit_identical(load_sample, name, opset, key):
    base, reset, report = _pair(load_sample, name, opset, key)
    assert report.extra["input"] == "start" and report.extra["states"] == len(base.state_specs)
    assert len(report.sites) == len(base.state_specs) and all(s["axes"] for s in report.sites)
    steps = 8
    pairs = zip(_decode(base, PROMPTS, steps), _decode(reset, PROMPTS, steps, start=False), strict=True)
    for k, (a, b) in enumerate(pairs):
        _assert_same(a, b, f"step {k}")
    if key.startswith("kv-quant"):
        assert b["present.0.key.codes"].shape[2] > 0, "the store was used, not only the float window"


def _garbage(session: DecoderSession, batch: int, tokens: int, seed: int) -> dict[str, np.ndarray]:
    """A past of ``tokens`` positions along every symbolic axis, random values."""
    rng = np.random.default_rng(seed)
    state = {}
    for spec in session.state_specs:
        dims = [batch if ax == 0 else (d if isinstance(d, int) else tokens) for ax, d in enumerate(spec.shape)]
        state[spec.name] = (rng.standard_normal(dims) * 3).astype(spec.dtype)
    return state


@pytest.mark.parametrize(("name", "opset", "key"), CASES, ids=[f"{n}-op{o}-{k}" for n, o, k in CASES])
def test_start_true_ignores_any_past(load_sample, name, opset, key):
    """start=true with a non-empty past (random, or for kv-quant the real state of another prompt) is a
    fresh prefill with the empty past, bit for bit, and so are the steps after it."""
    base, reset, _ = _pair(load_sample, name, opset, key)
    batch = len(PROMPTS)
    if key.startswith("kv-quant"):
        *_, last = _decode(reset, [[5, 6, 7, 8, 9, 10, 11, 12], [3, 4]], 10, start=True)
        stale = {"past" + n[len("present") :]: v for n, v in last.items() if n.startswith("present")}
        assert stale["past.0.key.codes"].shape[2] > 0 and stale["past.0.key.res"].shape[2] > 0
    else:
        stale = _garbage(reset, batch, 3, seed=1)
    assert not is_empty_state(reset.state_specs, stale)
    fresh = _decode(base, PROMPTS, 6)
    restarted = _decode(reset, PROMPTS, 6, state=stale, start=True)
    for k, (a, b) in enumerate(zip(fresh, restarted, strict=True)):
        _assert_same(a, b, f"step {k}")


def test_generate_and_the_runtime_feed_start(load_sample):
    base, reset, _ = _pair(load_sample, "llama-tiny", 18, "kv-evict")
    assert reset.start_input == START_INPUT == DEFAULT_INPUT and base.start_input is None
    prompts = [[11, 42, 7, 300, 5], [17, 2]]
    a, b = generate(base, prompts, 12), generate(reset, prompts, 12)
    assert [list(r) for r in a.tokens] == [list(r) for r in b.tokens]
    assert is_empty_state(reset.state_specs, reset.empty_state(2))


def test_cli_optimize_then_generate(run_cli, sample_path, tmp_path):
    """`parekit generate` (plain, --speculate, --exit) prints the same text with and without state-reset."""
    plain, windowed = sample_path("llama-tiny"), tmp_path / "llama.w.onnx"
    run_cli("optimize", plain, "--passes", "kv-window{sink=2,window=6}", "-o", windowed)
    one_row = ("--prompt", "Hello there", "--max-new-tokens", "10")
    out = tmp_path / "llama.w.reset.onnx"
    run_cli("optimize", windowed, "--passes", "state-reset", "-o", out)
    for extra in (("--prompt", "A"), ("--speculate", "ngram")):
        before = run_cli("generate", windowed, *one_row, *extra)
        after = run_cli("generate", out, *one_row, *extra)
        assert after.stdout == before.stdout and after.stdout.strip(), extra
    reset = tmp_path / "llama.reset.onnx"
    run_cli("optimize", plain, "--passes", "state-reset", "-o", reset)
    # layer-skip drafts: the skip-set search builds its calibration feeds itself (start included)
    before = run_cli("generate", plain, *one_row, "--speculate", "skip:auto")
    after = run_cli("generate", reset, *one_row, "--speculate", "skip:auto")
    assert after.stdout == before.stdout and "skip:auto=" in after.stderr
    # per-token exits run kv-fill pieces cut along the KV structure, which the reset hides: refused
    refused = run_cli("generate", reset, *one_row, "--exit", "d3:1", code=2)
    assert "'start' reset input (state-reset)" in refused.output and "Traceback" not in refused.output


def test_identity_bad_names_and_no_past():
    model = decoder_model()
    same, result = apply(model, 'state-reset{input=""}')
    (report,) = result.reports
    assert report.identity and not report.modified and report.nodes_added == 0
    assert [v.name for v in same.graph.inputs] == [v.name for v in model.graph.inputs]
    for bad in ("a b", "1x", "past_start", "present", "x;y"):
        with pytest.raises(OptionError, match="state-reset: option 'input'"):
            apply(model, f'state-reset{{input="{bad}"}}')
    with pytest.raises(PassNotApplicableError, match="state-reset: .*'input_ids'"):
        apply(model, 'state-reset{input="input_ids"}')
    with pytest.raises(PassNotApplicableError, match="state-reset: the model has no past\\* inputs"):
        apply(encoder_model(), "state-reset")
    twice, _ = apply(model, "state-reset")
    with pytest.raises(PassNotApplicableError, match="already has a graph input or output named 'start'"):
        apply(twice, "state-reset")


def test_small_graph_custom_name_and_a_pipeline_after_fused_kv_quant(load_sample):
    model, result = apply(decoder_model(), 'state-reset{input="reset"}')
    (start,) = [v for v in model.graph.inputs if v.name == "reset"]
    past = next(v for v in model.graph.inputs if v.name.startswith("past"))
    assert str(start.shape) == f"[{past.shape[0]},1]" and start.dtype.name == "BOOL"
    assert all(u[0].op_type == "Shape" or u[0].op_type == "Slice" for u in past.uses())
    # discovery no longer follows a fused kv-quant graph; state-reset needs none (needs_structure=False),
    # so it runs after kv-quant in one pipeline, and its report says what it reset
    fused = load_sample("llama-tiny", 23)
    result = optimize(fused, "kv-quant{bits=8,group=8},state-reset")
    assert START_INPUT in {v.name for v in fused.graph.inputs}
    assert result.reports[-1].extra["states"] == sum(1 for v in fused.graph.inputs if v.name.startswith("past"))


@pytest.mark.skipif(not os.environ.get("PAREKIT_ORT_LIBRARY"), reason="PAREKIT_ORT_LIBRARY is not set")
@pytest.mark.parametrize("bits", [8, 4])
def test_native_kernels_fused_kv_quant(load_sample, bits):
    from parekit.backends.ort import OrtRunner

    model = load_sample("llama-tiny", 23)
    optimize(model, f"kv-quant{{bits={bits},group=8,residual=4}}")
    base = DecoderSession(OrtRunner(clone(model), optimization="disabled", native=True))
    reset_state(model)
    reset = DecoderSession(OrtRunner(model, optimization="disabled", native=True))
    assert reset.native_library is not None
    for k, (a, b) in enumerate(zip(_decode(base, PROMPTS, 8), _decode(reset, PROMPTS, 8, start=False), strict=True)):
        _assert_same(a, b, f"step {k}")
    stale = {n: v for n, v in _garbage(reset, len(PROMPTS), 3, seed=2).items()}
    fresh, restarted = _decode(base, PROMPTS, 4), _decode(reset, PROMPTS, 4, state=stale, start=True)
    for k, (a, b) in enumerate(zip(fresh, restarted, strict=True)):
        _assert_same(a, b, f"restart step {k}")


def test_runtime_start_feed_and_contract_check(load_sample):
    _, reset, _ = _pair(load_sample, "llama-tiny", 18, "plain")
    empty = reset.empty_state(2)
    assert start_feeds(reset.state_specs, empty, 2)[START_INPUT].tolist() == [[True], [True]]
    _, after = reset.step(*left_pad(PROMPTS, 0), empty)
    assert start_feeds(reset.state_specs, after, 2)[START_INPUT].tolist() == [[False], [False]]
    odd = decoder_model()
    odd.graph.inputs.append(ir.Value(name=START_INPUT, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1])))
    with pytest.raises(ParekitError, match="input 'start' is .* bool \\[batch, 1\\]"):
        DecoderSession(runner(odd))


def test_tensorrt_rtx_builds_a_state_reset_decoder(run_cli, sample_path, tmp_path):
    """The derived profile gives `start` [batch, 1] with the state's batch at every point (no rule needed)."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")
    model, plan, report = tmp_path / "r.onnx", tmp_path / "r.plan", tmp_path / "r.json"
    run_cli("optimize", sample_path("llama-tiny"), "--passes", "kv-evict{policy=h2o,budget=16,sink=2,recent=4},state-reset",
            "-o", model)
    run_cli("build", model, "-o", plan, "--backend", "tensorrt-rtx", "--report", report,
            "--profile", "past=0,32,64", "--profile", "seq=1,1,16")
    inputs = json.loads(report.read_text())["profile"]["inputs"]
    for point in ("min", "opt", "max"):
        assert inputs[START_INPUT][point] == [inputs["past.0.key"][point][0], 1], point
    assert plan.stat().st_size > 0


@pytest.mark.slow  # SmolLM2-135M real weights (≈ 25 s on 2 shared cores)
def test_smollm2_kv_window_reset(sample_path):
    from parekit.frontends.onnx_file import load_model
    from parekit.passes import get_pass

    model = load_model(sample_path("smollm2", 23))
    kv_window = get_pass("kv-window")
    kv_window(kv_window.options_type(sink=4, window=12))(model)
    base = DecoderSession(clone(model))
    reset_state(model)
    reset = DecoderSession(model)
    *_, last = _decode(reset, [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]], 10, start=True)
    stale = {"past" + n[len("present") :]: v for n, v in last.items() if n.startswith("present")}
    for k, (a, b, c) in enumerate(
        zip(_decode(base, [PROMPTS[0]], 4), _decode(reset, [PROMPTS[0]], 4, start=False),
            _decode(reset, [PROMPTS[0]], 4, state=stale, start=True), strict=True)
    ):
        _assert_same(a, b, f"start=false step {k}")
        _assert_same(a, c, f"restart step {k}")


@pytest.mark.parametrize("past", [0, 4])
def test_parekit_check_feeds_start_by_the_contract(run_cli, sample_path, tmp_path, past):
    """`parekit check ORIGINAL RESET`: the candidate's extra `start` is fed true only for an empty past
    (true with a non-empty past would be a fresh prefill, and parity would fail at past=4)."""
    from parekit.parity.controls import with_start

    reset = tmp_path / "reset.onnx"
    run_cli("optimize", sample_path("llama-tiny"), "--passes", "state-reset", "-o", reset)
    dims = ["--dim", f"past={past}"] if past else []  # default feeds: the empty past
    out = run_cli("check", sample_path("llama-tiny"), reset, *dims, "--threshold", "max_abs=0").output
    assert "all thresholds met" in out
    runner = type("R", (), {"input_specs": DecoderSession(reset).runner.input_specs})()
    feed = {"input_ids": np.zeros((2, 3), np.int64), "past.0.key": np.zeros((2, 2, past, 16), np.float32)}
    assert with_start(runner, feed)["start"].tolist() == [[past == 0]] * 2
