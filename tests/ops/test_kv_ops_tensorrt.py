"""The kv-quant / kv-evict op bodies parse and build under TensorRT (TensorRT-RTX, CPU-only builder).

Skipped where ``tensorrt_rtx`` is not installed (``pip install tensorrt-rtx-cu13``, docs/environment.md).
Each build runs in a subprocess (``harness.tensorrt_build``): a parser abort must not take the session down.
"""

from __future__ import annotations

import numpy as np
import pytest

from parekit.ops import OpDef
from parekit.ops.attention_probs import ATTENTION_PROBS
from parekit.ops.kv_dequant import KV_DEQUANT_KEY, KV_DEQUANT_VALUE
from parekit.ops.kv_evict import KV_EVICT_H2O, KV_EVICT_SNAP
from parekit.ops.kv_quant import KV_QUANT_KEY, KV_QUANT_VALUE
from parekit.ops.kv_quant_format import quantize_reference
from parekit.ops.kv_slot_mask import KV_MASK_REMAP, KV_SLOT_MASK

from .harness import build_model, check_model, tensorrt_build

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")


def _quant_state(per_channel: bool, bits: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    codes, scale, mn = quantize_reference(
        rng.standard_normal((1, 3, 64, 64)).astype(np.float32), bits, 32, per_channel
    )
    return [codes, scale, mn, rng.standard_normal((1, 3, 20, 64)).astype(np.float32)]


def _example(op: OpDef) -> list[np.ndarray]:
    inputs = op.example_inputs()
    assert inputs is not None, f"{op.op_type} has no example inputs"
    return inputs


def _cases() -> list[tuple[OpDef, list[np.ndarray], dict]]:
    new = np.random.default_rng(1).standard_normal((1, 3, 13, 64)).astype(np.float32)
    evict = _example(KV_EVICT_H2O)
    return [
        (KV_QUANT_KEY, [*_quant_state(True, 4), new], {"bits": 4, "group": 32, "residual": 16}),
        (KV_QUANT_VALUE, [*_quant_state(False, 8), new], {"bits": 8, "group": 32, "residual": 16}),
        (KV_DEQUANT_KEY, _quant_state(True, 8), {"bits": 8, "group": 32}),
        (KV_DEQUANT_VALUE, _quant_state(False, 4), {"bits": 4, "group": 32}),
        (KV_EVICT_H2O, evict, {"budget": 5, "sink": 1, "recent": 2, "decay": 0.9}),
        (KV_EVICT_SNAP, evict, {"budget": 5, "sink": 1, "recent": 2}),
        (KV_EVICT_SNAP, _example(KV_EVICT_SNAP), {}),  # its own example: prefill-free, T <= budget
        (KV_SLOT_MASK, _example(KV_SLOT_MASK), {"group": 2}),
        (KV_MASK_REMAP, _example(KV_MASK_REMAP), {}),
        (ATTENTION_PROBS, _example(ATTENTION_PROBS), {}),
    ]


@pytest.mark.parametrize(
    ("op", "inputs", "attrs"), [pytest.param(*c, id=f"{c[0].op_type}-{i}") for i, c in enumerate(_cases())]
)
def test_body_builds_under_tensorrt(tmp_path, op: OpDef, inputs, attrs):
    path = tmp_path / f"{op.op_type}.onnx"
    path.write_bytes(check_model(build_model(op, inputs, attrs, static_shapes=True)).SerializeToString())
    code, output = tensorrt_build(str(path))
    assert code == 0, f"{op.op_type}: TensorRT-RTX could not parse/build the body:\n{output}"
