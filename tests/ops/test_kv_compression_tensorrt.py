"""kv-evict / kv-quant outputs (llama-tiny, opset 18) parse and build under TensorRT-RTX's CPU-only builder.

Skipped where ``tensorrt_rtx`` is not installed. Opset 23 is not tried: TensorRT-RTX does not build the
fp32 ``Attention`` op at all (docs/environment.md), with or without these passes.
"""

from __future__ import annotations

import pytest

from parekit.backends.save import save_model
from parekit.passes.base import PassContext
from parekit.passes.manager import run_pipeline

from .harness import tensorrt_build

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")

# kv-quant's scale/min inputs hold q_tokens / group entries: give the profile consistent sizes.
QUANT_DIMS = tuple(f"past.{i}.key.{part}:2=1" for i in range(2) for part in ("scale", "min"))


@pytest.mark.parametrize(
    ("pipeline", "dims"),
    [
        ("kv-evict{budget=8,sink=2,recent=2,policy=h2o}", ()),
        ("kv-evict{budget=8,sink=2,recent=2,policy=snapkv}", ()),
        ("kv-quant{bits=4,group=8,residual=4}", QUANT_DIMS),
    ],
)
def test_compressed_decoder_builds_under_tensorrt(load_sample, tmp_path, pipeline, dims):
    model = run_pipeline(load_sample("llama-tiny", 18), pipeline, PassContext()).model
    path = tmp_path / "model.onnx"
    save_model(model, path)
    code, output = tensorrt_build(str(path), *dims)
    assert code == 0, f"{pipeline}: TensorRT-RTX could not parse/build the model:\n{output}"
