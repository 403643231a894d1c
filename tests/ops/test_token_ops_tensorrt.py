"""The token-reduction op bodies, and a whole token-merged ViT, parse and build under TensorRT-RTX (CPU-only).

Besides the static-shape and ``1 … size`` builds, one-node bodies and whole MiniLM / ViT models are
built over dynamic profiles with ``min < opt < max`` per dim name (:mod:`.trt_dynamic`): ``batch``,
``seq`` (encoders), ``tokens`` / ``kept`` (the token ops' own axes).

Skipped where ``tensorrt_rtx`` is not installed (``pip install tensorrt-rtx-cu13``, docs/environment.md).
"""

from __future__ import annotations

import onnx_ir as ir
import pytest

from parekit.backends.save import save_model
from parekit.ops import OpDef
from parekit.ops.exit_gate import EXIT_GATE
from parekit.ops.token_merge import TOKEN_MERGE
from parekit.ops.token_prune import TOKEN_PRUNE
from parekit.ops.token_restore import TOKEN_RESTORE
from parekit.passes.manager import run_pipeline

from .harness import build_model, check_model, tensorrt_build
from .trt_dynamic import Profile, build_dynamic, one_node_file

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")


@pytest.mark.parametrize("op", [TOKEN_PRUNE, TOKEN_MERGE, TOKEN_RESTORE], ids=lambda o: o.op_type)
def test_token_op_body_builds_under_tensorrt(tmp_path, op: OpDef):
    inputs = op.example_inputs()
    assert inputs is not None
    path = tmp_path / f"{op.op_type}.onnx"
    model = build_model(op, inputs, {}, static_shapes=True)
    path.write_bytes(check_model(model).SerializeToString())
    code, out = tensorrt_build(str(path))
    assert code == 0, f"{op.op_type}: TensorRT-RTX could not parse/build the body:\n{out}"


def test_token_pruned_minilm_builds_under_tensorrt(tmp_path, load_sample):
    """The opset-18 MiniLM with a TokenPrune and a TokenRestore, dynamic batch and sequence."""
    result = run_pipeline(load_sample("minilm", 18), "token-prune{keep=0.5,layers=[2]}")
    path = tmp_path / "minilm.p.onnx"
    save_model(result.model, path)
    code, out = tensorrt_build(str(path), "input_ids:1=128", "attention_mask:1=128")
    assert code == 0, f"TensorRT-RTX could not parse/build the pruned MiniLM:\n{out}"


@pytest.mark.slow
def test_token_merged_vit_builds_under_tensorrt(tmp_path, load_sample):
    """ViT-B/16 (opset 18) with a TokenMerge in each of its twelve blocks: the claim in docs/ops.md."""
    result = run_pipeline(load_sample("vit", 18), "token-merge{r=16}")
    assert sum(TOKEN_MERGE.matches(n) for n in result.model.graph.all_nodes()) == 12
    path = tmp_path / "vit.m.onnx"
    save_model(result.model, path)
    code, out = tensorrt_build(str(path))
    assert code == 0, f"TensorRT-RTX could not parse/build the token-merged ViT:\n{out}"


F32 = ir.DataType.FLOAT
TOKENS: Profile = {"batch": (1, 2, 4), "tokens": (20, 64, 197), "kept": (1, 32, 100)}


@pytest.mark.parametrize(
    ("op", "inputs", "attrs"),
    [
        pytest.param(
            TOKEN_PRUNE,
            [(F32, ["batch", "tokens", 8]), (F32, ["batch", "tokens"]), (F32, ["batch", "tokens"])],
            {"keep": 0.5},
            id="TokenPrune",
        ),
        pytest.param(
            TOKEN_PRUNE,
            [(F32, ["batch", "tokens", 8]), (F32, ["batch", "tokens"]), (F32, ["batch", "tokens"])],
            {"keep": 0.5, "fuse": 1},
            id="TokenPrune-fuse",
        ),
        pytest.param(
            TOKEN_MERGE,
            [(F32, ["batch", "tokens", 8]), (F32, ["batch", "tokens", 4]), (F32, ["batch", "tokens"])],
            {"r": 8},
            id="TokenMerge",
        ),
        pytest.param(
            TOKEN_RESTORE,
            [(F32, ["batch", "kept", 8]), (F32, ["batch", "tokens", "kept"]), (F32, ["batch", "tokens", 8])],
            {},
            id="TokenRestore",
        ),
        pytest.param(EXIT_GATE, [(F32, ["batch", "tokens", 50])], {"signal": "margin"}, id="ExitGate-margin"),
        pytest.param(
            EXIT_GATE,
            [(F32, ["batch", 50]), (F32, ["batch", 50])],
            {"signal": "cosine"},
            id="ExitGate-cosine",
        ),
    ],
)
def test_token_op_body_builds_over_dynamic_profile(tmp_path, op: OpDef, inputs, attrs):
    path = one_node_file(str(tmp_path / f"{op.op_type}.onnx"), op, inputs, attrs)
    code, out = build_dynamic(path, TOKENS)
    assert code == 0, f"{op.op_type}: TensorRT-RTX could not build the body over {TOKENS}:\n{out}"


ENCODER: Profile = {"batch": (1, 2, 4), "seq": (2, 64, 128)}


@pytest.mark.parametrize(
    "pipeline",
    [
        "token-prune{keep=0.5,layers=[2]}",
        "token-prune{keep=0.5,layers=[2],outputs=short}",
        "token-prune{keep=0.5,layers=[1,3],fuse=true}",
        "token-merge{r=4}",
        "token-merge{r=4,unmerge=true}",
        "early-exit{layers=[2],threshold=0.9}",
    ],
)
def test_reduced_minilm_builds_over_dynamic_profile(tmp_path, load_sample, pipeline):
    result = run_pipeline(load_sample("minilm", 18), pipeline)
    path = tmp_path / "minilm.onnx"
    save_model(result.model, path)
    code, out = build_dynamic(str(path), ENCODER)
    assert code == 0, f"MiniLM {pipeline}: TensorRT-RTX could not build over {ENCODER}:\n{out}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "pipeline",
    [
        "token-merge{r=8,unmerge=true}",
        "token-prune{keep=0.5}",
        "early-exit{layers=[6],threshold=0.5,signal=margin}",
    ],
)
def test_reduced_vit_builds_over_dynamic_batch(tmp_path, load_sample, pipeline):
    result = run_pipeline(load_sample("vit", 18), pipeline)
    path = tmp_path / "vit.onnx"
    save_model(result.model, path)
    code, out = build_dynamic(str(path), {"batch": (1, 2, 4)})
    assert code == 0, f"ViT {pipeline}: TensorRT-RTX could not build over batch 1/2/4:\n{out}"
