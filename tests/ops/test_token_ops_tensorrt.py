"""The token-reduction op bodies, and a whole token-merged ViT, parse and build under TensorRT-RTX (CPU-only).

Skipped where ``tensorrt_rtx`` is not installed (``pip install tensorrt-rtx-cu13``, docs/environment.md).
"""

from __future__ import annotations

import pytest

from parekit.backends.save import save_model
from parekit.ops import OpDef
from parekit.ops.token_merge import TOKEN_MERGE
from parekit.ops.token_prune import TOKEN_PRUNE
from parekit.ops.token_restore import TOKEN_RESTORE
from parekit.passes.manager import run_pipeline

from .harness import build_model, check_model, tensorrt_build

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
