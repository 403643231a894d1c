"""kv-quant: structure, exact residual configuration, int8/int4 fidelity, state bytes, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.errors import OptionError, PassNotApplicableError
from parekit.ops import PAREKIT_DOMAIN
from parekit.ops.kv_dequant import KV_DEQUANT_KEY, KV_DEQUANT_VALUE
from parekit.ops.kv_quant import KV_QUANT_KEY, KV_QUANT_VALUE
from parekit.ops.kv_quant_attention import KV_QUANT_ATTENTION
from parekit.runtime import DecoderSession

from .harness import TINY_DECODERS as TINY
from .harness import count_ops, decode_side_by_side
from .harness import optimize as _optimize

PARTS = ("codes", "scale", "min", "res")
QUANT_OPS = (KV_DEQUANT_KEY, KV_DEQUANT_VALUE, KV_QUANT_KEY, KV_QUANT_VALUE)


@pytest.mark.parametrize(("name", "opset"), TINY)
def test_structure(load_sample, name, opset):
    # the dequantizing form (fused attention: tests/passes/test_kv_quant_fused.py)
    result = _optimize(load_sample(name, opset), "kv-quant{bits=4,group=8,residual=16,fused=false}")
    m = result.model
    inputs = {v.name: v for v in m.graph.inputs}
    outputs = {v.name for v in m.graph.outputs}
    for i in range(2):
        for role in ("key", "value"):
            assert f"past.{i}.{role}" not in inputs and f"present.{i}.{role}" not in outputs
            for part in PARTS:
                assert f"past.{i}.{role}.{part}" in inputs and f"present.{i}.{role}.{part}" in outputs
    assert inputs["past.0.key.codes"].dtype.name == "INT8" and inputs["past.0.key.codes"].shape[3] == 8
    assert inputs["past.0.value.scale"].dtype.name == "FLOAT16" and inputs["past.0.value.scale"].shape[3] == 2
    assert count_ops(m, *QUANT_OPS) == {op.op_type: 2 for op in QUANT_OPS}
    assert sum(1 for n in m.graph if n.domain == PAREKIT_DOMAIN) == 8, "no other parekit op"
    # the dequantized cache replaces the float past everywhere (the Concat and the exported shape reads)
    for node in m.graph:
        if KV_DEQUANT_KEY.matches(node):
            readers = {user.op_type for user, _ in node.outputs[0].uses()}
            assert "Concat" in readers
    (report,) = result.reports
    assert report.modified and len(report.sites) == 2 and report.identity is None
    assert m.metadata_props["parekit.pipeline"] == "kv-quant{bits=4,group=8,residual=16,fused=false}"


@pytest.mark.parametrize(("name", "opset"), TINY)
def test_residual_covering_the_context_is_exact(load_sample, sample_path, name, opset):
    # exact in the dequantizing form; the fused attention rounds differently (test_kv_quant_fused.py)
    model = _optimize(load_sample(name, opset), "kv-quant{bits=4,group=4,residual=64,fused=false}").model
    base, quant = DecoderSession(sample_path(name, opset)), DecoderSession(model)
    for la, lb, sa, sb, _ in decode_side_by_side(base, quant):
        np.testing.assert_allclose(lb, la, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(sb["past.1.value.res"], sa["past.1.value"])
        assert sb["past.1.value.codes"].shape[2] == 0


@pytest.mark.parametrize(("name", "opset"), TINY)
@pytest.mark.parametrize(("bits", "min_cos"), [(8, 0.9999), (4, 0.999)])
def test_quantized_cache_stays_close(load_sample, sample_path, name, opset, bits, min_cos):
    """residual=2, group=4: almost every token of the 11..22-token contexts is served quantized."""
    model = _optimize(load_sample(name, opset), f"kv-quant{{bits={bits},group=4,residual=2}}").model
    base, quant = DecoderSession(sample_path(name, opset)), DecoderSession(model)
    worst, quantized = 1.0, 0
    for la, lb, _, sb, _ in decode_side_by_side(base, quant):
        a, b = la[:, -1].astype(np.float64), lb[:, -1].astype(np.float64)
        worst = min(
            worst, float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min())
        )
        quantized = sb["past.0.key.codes"].shape[2]
        assert 2 <= sb["past.0.key.res"].shape[2] < 2 + 4
    assert quantized >= 16
    assert worst >= min_cos
    assert worst < 1.0 - 1e-9, "the cache is really quantized (not a silent identity)"


def test_state_bytes_shrink(load_sample, sample_path):
    model = _optimize(load_sample("llama-tiny", 23), "kv-quant{bits=4,group=16,residual=0}").model
    states = list(
        decode_side_by_side(DecoderSession(sample_path("llama-tiny", 23)), DecoderSession(model), steps=6)
    )
    _, _, sa, sb, _ = states[-1]  # 16 tokens seen: one whole group quantized, nothing left in float
    full = sum(v.nbytes for v in sa.values())
    quant = sum(v.nbytes for v in sb.values())
    # per token and head: 16 channels x 4 bits x 2 (K, V) = 16 B, + float16 scale/min: 2*2*16/16 (K) + 2*2*1 (V)
    assert quant / full == pytest.approx((16 + 4 + 4) / (2 * 16 * 4))


@pytest.mark.slow
def test_smollm2_structure(load_sample):
    result = _optimize(load_sample("smollm2", 23), "kv-quant{bits=4,group=32,residual=32}", verify=False)
    # opset 23: every layer's Attention reads the codes (KvQuantAttention), no dequantized cache is left
    assert count_ops(result.model, *QUANT_OPS, KV_QUANT_ATTENTION) == {
        "KvDequantKey": 0,
        "KvDequantValue": 0,
        "KvQuantKey": 30,
        "KvQuantValue": 30,
        "KvQuantAttention": 30,
    }
    inputs = {v.name: v for v in result.model.graph.inputs}
    codes = inputs["past.29.key.codes"].shape
    assert (codes[1], codes[3]) == (3, 32)  # 3 KV heads, 64 channels packed two per byte
    assert inputs["past.29.value.scale"].shape[3] == 2 and inputs["past.29.key.scale"].shape[3] == 64


def test_refusals(load_sample):
    with pytest.raises(PassNotApplicableError, match="kv-quant: the model is an encoder"):
        _optimize(load_sample("minilm", 18), "kv-quant")
    with pytest.raises(PassNotApplicableError, match="group=5 does not divide the head dim 16"):
        _optimize(load_sample("llama-tiny", 18), "kv-quant{group=5}")
    with pytest.raises(OptionError, match="bits"):
        _optimize(load_sample("llama-tiny", 18), "kv-quant{bits=3}")
