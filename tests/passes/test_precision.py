"""precision: Casts where expected, kept nodes in float32, identity, parity on ORT CPU, refusals, composition, RTX."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx_ir as ir
import pytest

from parekit.errors import OptionError, PassNotApplicableError
from parekit.ops import FLOAT_DTYPES, all_ops
from parekit.passes import run_pipeline
from parekit.passes.manager import check_model
from parekit.passes.precision_cast import emulate_bf16, saturate
from parekit.runtime import DecoderSession, generate
from tests.ops.harness import build_model, run_model, tensorrt_build
from tests.ops.test_contract import _example_inputs

from .harness import (
    PROMPTS,
    apply,
    clone,
    decode_side_by_side,
    decoder_feeds,
    decoder_model,
    encoder_feeds,
    encoder_model,
    optimize,
    run,
)

F16, F32 = ir.DataType.FLOAT16, ir.DataType.FLOAT


def _io(model: ir.Model) -> list[tuple[str, ir.DataType | None]]:
    return [(v.name, v.dtype) for v in (*model.graph.inputs, *model.graph.outputs)]


def _float_inputs(node: ir.Node) -> set[ir.DataType | None]:
    return {v.dtype for v in node.inputs if v is not None and v.dtype in (F16, F32)}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- structure -----------------------------------------------------------------------------------


def test_casts_where_expected_and_kept_nodes_stay_float32():
    model = decoder_model()
    lowered, result = apply(model, "precision")
    assert _io(lowered) == _io(model), "io=true: inputs/outputs keep their names and float32"
    nodes = list(lowered.graph)
    head = next(n for n in nodes if n.outputs[0] is lowered.graph.outputs[0])  # the logits MatMul (kept)
    for node in nodes:
        if node.op_type in ("LayerNormalization", "Softmax") or node is head:
            assert _float_inputs(node) == {F32}, node.name
        elif node.op_type == "MatMul":
            assert _float_inputs(node) == {F16}, node.name
    casts = [n for n in nodes if n.op_type == "Cast" and n.name.startswith("precision.")]
    assert casts and all(n.metadata_props.get("parekit.pass") == "precision" for n in casts)
    weights = [v for v in lowered.graph.initializers.values() if v.dtype in (F16, F32)]
    assert sum(v.dtype == F16 for v in weights) > len(weights) // 2
    (report,) = result.reports
    assert report.modified and report.identity is None
    assert report.extra["kept_nodes"]["norms"] == 5 and report.extra["kept_nodes"]["Softmax"] == 2
    assert report.extra["weight_bytes_after"] < 0.6 * report.extra["weight_bytes_before"]
    assert (
        lowered.metadata_props["parekit.pipeline"]
        == "precision{dtype=fp16,keep=[norms,Softmax,head],io=true}"
    )


def test_decomposed_norms_are_kept(load_sample):
    """Opset-18 Llama exports decompose RMSNorm (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul weight)."""
    lowered, result = apply(load_sample("llama-tiny", 18), "precision")
    for node in lowered.graph:
        if node.op_type in ("ReduceMean", "Sqrt", "Reciprocal", "Pow"):
            assert _float_inputs(node) == {F32}, (node.op_type, node.name)
    assert result.reports[0].extra["kept_nodes"]["norms"] == 35  # 5 norms x 7 nodes


def test_keep_op_types_and_name_globs():
    model = decoder_model()
    lowered, _ = apply(model, 'precision{keep=[MatMul,"Div_*"]}')
    for node in lowered.graph:
        if node.op_type in ("MatMul", "Div"):
            assert _float_inputs(node) == {F32}, node.name
        if node.op_type == "LayerNormalization":  # not kept any more
            assert _float_inputs(node) == {F16}, node.name


def test_parekit_nodes_follow_their_opdef(load_sample):
    """KvWindow accepts fp16 (converted); the kv-evict ops are float32-only (kept, Casts around)."""
    from parekit.ops.kv_evict import KV_EVICT_H2O
    from parekit.ops.kv_window import KV_WINDOW

    lowered = optimize(load_sample("llama-tiny", 23), "kv-window{sink=2,window=6},precision").model
    windows = [n for n in lowered.graph if KV_WINDOW.matches(n)]
    assert windows and all(n.inputs[0].dtype == F16 for n in windows)
    lowered = optimize(load_sample("llama-tiny", 23), "kv-evict,precision").model
    evicts = [n for n in lowered.graph if KV_EVICT_H2O.matches(n)]
    assert evicts and all(_float_inputs(n) == {F32} for n in evicts)


@pytest.mark.parametrize("op", [op for op in all_ops() if any(F16 in s.dtypes for s in op.inputs)], ids=str)
def test_bodies_of_fp16_capable_ops_run_in_fp16_on_ort_cpu(op):
    """The pass converts a parekit slot wherever its ParamSpec lists fp16: the function body must then
    type-check and run in fp16 on ORT CPU, close to the float32 body."""
    xs = _example_inputs(op)
    ys = [
        x.astype(np.float16) if x.dtype == np.float32 and F16 in spec.dtypes else x
        for x, spec in zip(xs, op.inputs, strict=False)
    ]
    got, want = run_model(build_model(op, ys), ys), run_model(build_model(op, xs), xs)
    for g, w, spec in zip(got, want, op.outputs, strict=True):
        if np.issubdtype(w.dtype, np.floating):
            np.testing.assert_allclose(g.astype(np.float32), w, rtol=1e-2, atol=1e-2, err_msg=spec.name)
            assert spec.dtypes & FLOAT_DTYPES
        else:
            np.testing.assert_array_equal(g, w, err_msg=spec.name)


# -- identity and refusals -----------------------------------------------------------------------


def test_identity_configurations():
    model = decoder_model()
    same, result = apply(model, "precision{dtype=fp32}")
    assert result.reports[0].identity == "dtype=fp32: the model already computes in float32"
    assert not result.reports[0].modified
    feeds = decoder_feeds()
    for name, want in run(model, feeds).items():
        np.testing.assert_array_equal(run(same, feeds)[name], want)
    everything = ",".join(sorted({n.op_type for n in model.graph}))
    _, result = apply(model, f"precision{{keep=[{everything}]}}")
    assert "nothing to lower" in result.reports[0].identity and not result.reports[0].modified


@pytest.mark.parametrize(
    ("pipeline", "error", "match"),
    [
        ("precision{dtype=fp8}", OptionError, "option 'dtype' expects one of fp16, bf16, fp32"),
        ("precision{keep=[Sofmax]}", OptionError, "keep entry 'Sofmax' is not an ONNX or parekit op type"),
        ('precision{keep=[""]}', OptionError, "option 'keep' has an empty entry"),
        ("precision{keep=[norms,norms]}", OptionError, "repeats an entry"),
        ("precision{keep=[norm]}", PassNotApplicableError, "keep entry 'norm' matches no node name"),
        ("precision,precision", PassNotApplicableError, "already lowered by precision"),
    ],
)
def test_bad_options_and_repeats_are_one_line_errors(pipeline, error, match):
    with pytest.raises(error, match=match) as info:
        optimize(decoder_model(), pipeline)
    assert "\n" not in info.value.message


# -- parity on ONNX Runtime CPU ------------------------------------------------------------------


def test_fp16_parity_on_small_graphs():
    dec, enc = decoder_model(), encoder_model()
    feeds = decoder_feeds()
    want, got = run(dec, feeds), run(apply(dec, "precision")[0], feeds)
    assert _cosine(got["logits"], want["logits"]) > 0.9999
    assert (got["logits"].argmax(-1) == want["logits"].argmax(-1)).mean() == 1.0
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=2e-2, rtol=0, err_msg=name)
    feeds = encoder_feeds()
    want, got = run(enc, feeds), run(apply(enc, "precision")[0], feeds)
    assert _cosine(got["last_hidden_state"], want["last_hidden_state"]) > 0.9999


def test_bf16_graph_checks_and_its_emulation_matches():
    """ORT CPU has no bf16 kernels: the bf16 graph passes the ONNX checker, and its float32 twin that rounds
    to bf16 where it stores bf16 runs on ORT and stays close."""
    model = decoder_model()
    lowered = clone(model)
    run_pipeline(lowered, "precision{dtype=bf16}", verifier=check_model)
    assert any(v.dtype == ir.DataType.BFLOAT16 for v in lowered.graph.initializers.values())
    assert emulate_bf16(lowered) > 0
    feeds = decoder_feeds()
    want, got = run(model, feeds), run(lowered, feeds)
    assert _cosine(got["logits"], want["logits"]) > 0.999
    assert not np.array_equal(got["logits"], want["logits"])  # the rounding is real


@pytest.mark.parametrize(("name", "opset"), [("llama-tiny", 23), ("gpt2-tiny", 18)])
def test_decoding_agrees_on_tiny_decoders(load_sample, sample_path, name, opset):
    lowered = optimize(load_sample(name, opset), "precision").model
    base, half = DecoderSession(sample_path(name, opset)), DecoderSession(lowered)
    agree = []
    for la, lb, _sa, sb, _ in decode_side_by_side(base, half, 8):
        agree.append((la[:, -1].argmax(-1) == lb[:, -1].argmax(-1)).mean())
        assert _cosine(la, lb) > 0.9999
        assert all(sb[k].dtype == np.float32 for k in sb), "io=true: the KV state stays float32"
    assert np.mean(agree) == 1.0


def test_saturate_keeps_masks_finite():
    lowest = np.array([np.finfo(np.float32).min, 1.0, np.inf], np.float32)
    assert saturate(lowest, F16).tolist() == [-65504.0, 1.0, np.inf]
    assert np.isfinite(saturate(lowest[:2], ir.DataType.BFLOAT16).astype(np.float32)).all()


def test_io_false_gives_fp16_io_and_the_runtime_follows_it(load_sample, sample_path):
    lowered = optimize(load_sample("llama-tiny", 23), "precision{io=false}").model
    floats = [v for v in (*lowered.graph.inputs, *lowered.graph.outputs) if v.dtype in (F16, F32)]
    assert floats and all(v.dtype == F16 for v in floats)
    want = generate(DecoderSession(sample_path("llama-tiny", 23)), PROMPTS, 6)
    got = generate(DecoderSession(lowered), PROMPTS, 6)  # empty fp16 past from the input spec, fed back
    assert got.tokens == want.tokens
    assert got.kv_bytes * 2 == want.kv_bytes


# -- composition ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opset", "first"),
    [(23, "kv-window{sink=2,window=6}"), (18, "kv-quant{bits=8,group=8}"), (23, "kv-evict")],
)
def test_after_a_kv_pass_the_state_io_stays_as_declared(load_sample, opset, first):
    kv = optimize(load_sample("llama-tiny", opset), first).model
    declared = _io(kv)
    lowered = optimize(clone(kv), "precision").model
    assert _io(lowered) == declared
    base, half = DecoderSession(kv), DecoderSession(lowered)
    for la, lb, sa, sb, _ in decode_side_by_side(base, half, 6):
        assert _cosine(la, lb) > 0.999
        assert {k: v.dtype for k, v in sb.items()} == {k: v.dtype for k, v in sa.items()}


# -- TensorRT-RTX --------------------------------------------------------------------------------

rtx = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt_rtx is not installed"
)


@rtx
def test_tensorrt_rtx_builds_fp16_attention_that_fp32_does_not(load_sample, sample_path, tmp_path):
    """Opset-23 ``Attention`` does not build in float32 under TensorRT-RTX 1.7; lowered to fp16 it does."""
    code, out = tensorrt_build(str(sample_path("llama-tiny", 23)))
    assert code == 3, out
    lowered = optimize(load_sample("llama-tiny", 23), "precision").model
    path = tmp_path / "fp16.onnx"
    ir.save(lowered, path)
    code, out = tensorrt_build(str(path))
    assert code == 0, out


@rtx
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_tensorrt_rtx_builds_opset18(load_sample, tmp_path, dtype):
    lowered = clone(load_sample("llama-tiny", 18))
    run_pipeline(lowered, f"precision{{dtype={dtype}}}", verifier=check_model)
    path = tmp_path / f"{dtype}.onnx"
    ir.save(lowered, path)
    code, out = tensorrt_build(str(path))
    assert code == 0, out


# -- CLI and the real models ---------------------------------------------------------------------


def test_passes_command_documents_it(run_cli):
    out = run_cli("passes", "precision").output
    for word in ("dtype", "keep", "io", "fp16", "bf16", "norms", "head", "io=false", "Identity"):
        assert word in out, word


@pytest.mark.slow
@pytest.mark.parametrize("opset", [18, 23])
def test_minilm_sentence_embedding_parity(run_cli, sample_path, tmp_path, opset):
    out = tmp_path / "fp16.onnx"
    run_cli("optimize", sample_path("minilm", opset), "-o", out, "--passes", "precision")
    run_cli(
        "check",
        sample_path("minilm", opset),
        out,
        "--data",
        "text",
        "--samples",
        "16",
        "--threshold",
        "sentence_embedding:cosine=0.9999",
        "--threshold",
        "max_abs=1e-2",
    )


@pytest.mark.slow
@pytest.mark.parametrize("opset", [18, 23])
def test_smollm2_logits_parity(run_cli, sample_path, tmp_path, opset):
    out = tmp_path / "fp16.onnx"
    run_cli("optimize", sample_path("smollm2", opset), "-o", out, "--passes", "precision")
    run_cli(
        "check",
        sample_path("smollm2", opset),
        out,
        "--data",
        "text",
        "--samples",
        "8",
        "--output",
        "logits",
        "--threshold",
        "logits:top1=0.97",
        "--threshold",
        "logits:cosine=0.999",
        "--threshold",
        "max_abs=1",
    )


def test_after_early_exit_shared_types_are_not_retyped(load_sample):
    """early-exit's exit head shares the LM head's weight and the exported values' type objects: lowering
    the exit head must not retype the kept head's output."""
    lowered = optimize(load_sample("llama-tiny", 23), "early-exit{layers=[0],threshold=0.9},precision").model
    assert all(v.dtype in (F32, ir.DataType.BOOL) for v in lowered.graph.outputs)
    head = lowered.graph.outputs[0].producer()
    assert head is not None and _float_inputs(head) == {F32}


@pytest.mark.slow
def test_vit_logits_parity(run_cli, sample_path, tmp_path):
    out = tmp_path / "fp16.onnx"
    run_cli("optimize", sample_path("vit", 18), "-o", out, "--passes", "precision")
    run_cli(
        "check",
        sample_path("vit", 18),
        out,
        "--data",
        "random",
        "--samples",
        "8",
        "--threshold",
        "logits:cosine=0.999",
        "--threshold",
        "max_abs=off",
    )
