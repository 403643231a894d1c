"""The kv-quant / kv-evict / kv-window op bodies parse and build under TensorRT-RTX (CPU-only builder).

Two kinds of build: the examples at static shapes, and one-node models whose inputs carry the kv passes'
dim names (``batch``, ``q_tokens``, ``q_groups``, ``res_tokens``, ``past``, ``seq`` …) built over a dynamic
profile with ``min < opt < max`` (:mod:`.trt_dynamic`). TensorRT checks every shape relation of a body at
each profile point separately, so a body must not need two independent input dims to agree there.

Skipped where ``tensorrt_rtx`` is not installed (``pip install tensorrt-rtx-cu13``, docs/environment.md).
Each build runs in a subprocess: a parser abort must not take the session down.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from parekit.ops import OpDef
from parekit.ops.attention_probs import ATTENTION_PROBS
from parekit.ops.kv_dequant import KV_DEQUANT_KEY, KV_DEQUANT_VALUE
from parekit.ops.kv_evict import KV_EVICT_H2O, KV_EVICT_SNAP
from parekit.ops.kv_quant import KV_QUANT_KEY, KV_QUANT_VALUE
from parekit.ops.kv_quant_attention import KV_QUANT_ATTENTION
from parekit.ops.kv_quant_format import quantize_reference
from parekit.ops.kv_slot_mask import KV_MASK_REMAP, KV_SLOT_MASK
from parekit.ops.kv_window import KV_WINDOW
from parekit.ops.kv_window_mask import KV_WINDOW_MASK

from .harness import build_model, check_model, tensorrt_build
from .trt_dynamic import Profile, build_dynamic, one_node_file

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


# -- dynamic profiles -----------------------------------------------------------------------------------

I8, F16, F32 = ir.DataType.INT8, ir.DataType.FLOAT16, ir.DataType.FLOAT
I64, BOOL = ir.DataType.INT64, ir.DataType.BOOL
HKV, HQ, D, GROUP = 2, 4, 64, 32  # SmolLM2-like geometry: head dim 64, group 32

# kv-quant state, as the pass declares it: tokens of the store (q_tokens), key groups (q_groups), float
# window (res_tokens); q_tokens = 0 at prefill. `tail` = res_tokens + seq (the fused op's float keys) and
# `total` = q_tokens + tail are dims the model itself derives: they stay consistent here.
QUANT_CONSISTENT: Profile = {
    "batch": (1, 1, 2), "seq": (1, 1, 16), "q_tokens": (0, 128, 256), "q_groups": (0, 4, 8),
    "res_tokens": (0, 16, 31), "tail": (1, 17, 47), "total": (1, 145, 303),
}
# q_tokens not a multiple of the group at kOPT: main's bodies reshaped the store into token groups.
QUANT_NOT_MULTIPLE: Profile = {**QUANT_CONSISTENT, "q_tokens": (0, 100, 250), "total": (1, 117, 297)}
# q_groups given the token range (the failure, "128 != 4" at kOPT): main's bodies multiplied the
# store's Nq/group by the scale's own group count.
QUANT_GROUPS_FREE: Profile = {
    **QUANT_CONSISTENT, "q_tokens": (32, 128, 256), "q_groups": (1, 128, 256), "total": (33, 145, 303),
}
QUANT_PROFILES = {
    "consistent": QUANT_CONSISTENT,
    "not-multiple": QUANT_NOT_MULTIPLE,
    "groups-free": QUANT_GROUPS_FREE,
}

# kv-evict / kv-window: `past` kept slots (0 at prefill, at most the budget / sink + window), `t` = past +
# seq (the step's full cache, derived in the model), `total` the runtime's mask over all tokens seen.
EVICT: Profile = {
    "batch": (1, 1, 2), "seq": (1, 1, 16), "past": (0, 4, 8), "t": (1, 5, 24), "total": (1, 40, 100),
}


def _store(bits: int, per_channel: bool) -> list[tuple[ir.DataType, list[int | str]]]:
    groups: list[int | str] = ["q_groups", D] if per_channel else ["q_tokens", D // GROUP]
    return [
        (I8, ["batch", HKV, "q_tokens", D * bits // 8]),
        (F16, ["batch", HKV, *groups]),
        (F16, ["batch", HKV, *groups]),
    ]


def _dynamic_cases() -> list[tuple[str, OpDef, list, dict]]:
    cases = []
    for bits in (8, 4):
        attrs = {"bits": bits, "group": GROUP}
        res = (F32, ["batch", HKV, "res_tokens", D])
        new = (F32, ["batch", HKV, "seq", D])
        cases += [
            (f"key-int{bits}", KV_DEQUANT_KEY, [*_store(bits, True), res], attrs),
            (f"value-int{bits}", KV_DEQUANT_VALUE, [*_store(bits, False), res], attrs),
            (f"key-int{bits}", KV_QUANT_KEY, [*_store(bits, True), res, new], {**attrs, "residual": 16}),
            (f"value-int{bits}", KV_QUANT_VALUE, [*_store(bits, False), res, new], {**attrs, "residual": 16}),
        ]
        tail = (F32, ["batch", HKV, "tail", D])
        attention = [
            (F32, ["batch", HQ, "seq", D]), *_store(bits, True), tail, *_store(bits, False), tail,
            (BOOL, ["batch", 1, "seq", "total"]),
        ]
        cases.append((f"int{bits}", KV_QUANT_ATTENTION, attention, attrs))
    return cases


@pytest.mark.parametrize("profile", list(QUANT_PROFILES), ids=str)
@pytest.mark.parametrize(
    ("op", "inputs", "attrs"),
    [pytest.param(op, ins, attrs, id=f"{op.op_type}-{tag}") for tag, op, ins, attrs in _dynamic_cases()],
)
def test_quant_body_builds_over_dynamic_profiles(tmp_path, op: OpDef, inputs, attrs, profile: str):
    """Every kv-quant body builds over min < opt < max, with or without q_groups * group == q_tokens
    holding at the profile points (a body needs it only at run time, where the pass keeps it)."""
    path = one_node_file(str(tmp_path / f"{op.op_type}.onnx"), op, inputs, attrs)
    code, output = build_dynamic(path, QUANT_PROFILES[profile])
    assert code == 0, f"{op.op_type} ({profile} profile): TensorRT-RTX could not build the body:\n{output}"


def _evict_cases() -> list[tuple[OpDef, list, dict]]:
    kv = (F32, ["batch", HKV, "t", D])
    score = (F32, ["batch", HKV, "past"])
    probs = (F32, ["batch", HQ, "seq", "t"])
    evict = [kv, kv, score, probs, (I64, ["batch", "t"])]
    return [
        (KV_EVICT_H2O, evict, {"budget": 8, "sink": 2, "recent": 2, "decay": 0.9}),
        (KV_EVICT_SNAP, evict, {"budget": 8, "sink": 2, "recent": 2}),
        (KV_SLOT_MASK, [(BOOL, ["batch", 1, "seq", "t"]), score], {"group": HQ // HKV}),
        (
            KV_MASK_REMAP,
            [(I64, ["batch", "total"]), (F32, ["batch", HKV, "past", D]), (I64, ["batch", "seq"])],
            {},
        ),
        (
            ATTENTION_PROBS,
            [(F32, ["batch", HQ, "seq", D]), (F32, ["batch", HQ, "t", D]), (BOOL, ["batch", 1, "seq", "t"])],
            {},
        ),
        (KV_WINDOW, [kv], {"sink": 2, "window": 8}),
        (KV_WINDOW_MASK, [(I64, ["batch", "total"])], {"sink": 2, "window": 8}),
    ]


@pytest.mark.parametrize(
    ("op", "inputs", "attrs"), [pytest.param(*c, id=c[0].op_type) for c in _evict_cases()]
)
def test_evict_window_body_builds_over_dynamic_profile(tmp_path, op: OpDef, inputs, attrs):
    path = one_node_file(str(tmp_path / f"{op.op_type}.onnx"), op, inputs, attrs)
    code, output = build_dynamic(path, EVICT)
    assert code == 0, f"{op.op_type}: TensorRT-RTX could not build the body over {EVICT}:\n{output}"
