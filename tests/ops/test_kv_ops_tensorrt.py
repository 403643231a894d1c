"""The kv-quant / kv-evict op bodies parse and build under TensorRT (TensorRT-RTX, CPU-only builder).

Skipped where ``tensorrt_rtx`` is not installed (``pip install tensorrt-rtx-cu13``, notes/tensorrt.md).
Each build runs in a subprocess (``harness.tensorrt_build``): a parser abort must not take the session down.
"""

from __future__ import annotations

import numpy as np
import pytest

from parekit.ops import get_op
from parekit.ops.kv_quant import quantize_reference

from .harness import build_model, check_model, tensorrt_build

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")


def _quant_state(per_channel: bool, bits: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    codes, scale, mn = quantize_reference(
        rng.standard_normal((1, 3, 64, 64)).astype(np.float32), bits, 32, per_channel
    )
    return [codes, scale, mn, rng.standard_normal((1, 3, 20, 64)).astype(np.float32)]


def _cases() -> list[tuple[str, list[np.ndarray], dict]]:
    new = np.random.default_rng(1).standard_normal((1, 3, 13, 64)).astype(np.float32)
    evict = get_op("KvEvictH2O").example_inputs()  # type: ignore[attr-defined]
    return [
        ("KvQuantKey", [*_quant_state(True, 4), new], {"bits": 4, "group": 32, "residual": 16}),
        ("KvQuantValue", [*_quant_state(False, 8), new], {"bits": 8, "group": 32, "residual": 16}),
        ("KvDequantKey", _quant_state(True, 8), {"bits": 8, "group": 32}),
        ("KvDequantValue", _quant_state(False, 4), {"bits": 4, "group": 32}),
        ("KvEvictH2O", evict, {"budget": 5, "sink": 1, "recent": 2, "decay": 0.9}),
        ("KvEvictSnap", evict, {"budget": 5, "sink": 1, "recent": 2}),
        ("KvSlotMask", get_op("KvSlotMask").example_inputs(), {"group": 2}),  # type: ignore[attr-defined]
        ("KvMaskRemap", get_op("KvMaskRemap").example_inputs(), {}),  # type: ignore[attr-defined]
        ("AttentionProbs", get_op("AttentionProbs").example_inputs(), {}),  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize(("op", "inputs", "attrs"), [pytest.param(*c, id=c[0]) for c in _cases()])
def test_body_builds_under_tensorrt(tmp_path, op, inputs, attrs):
    path = tmp_path / f"{op}.onnx"
    path.write_bytes(check_model(build_model(op, inputs, attrs, static_shapes=True)).SerializeToString())
    code, output = tensorrt_build(str(path))
    assert code == 0, f"{op}: TensorRT-RTX could not parse/build the body:\n{output}"
