"""kv-quant's fused attention: where it is used (and why not), no dequantized cache left, parity with the
dequantizing form with and without the native library."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.backends.ort import OrtRunner
from parekit.ops.kv_dequant import KV_DEQUANT_KEY, KV_DEQUANT_VALUE
from parekit.ops.kv_quant_attention import KV_QUANT_ATTENTION
from parekit.runtime import DecoderSession

from .harness import count_ops, decode_side_by_side, decoder_model
from .harness import optimize as _optimize

DEQUANT = (KV_DEQUANT_KEY, KV_DEQUANT_VALUE)


def _attention_ops(model) -> int:
    return sum(1 for n in model.graph if n.op_type == "Attention" and n.domain in ("", "ai.onnx"))


def test_fused_replaces_attention_and_the_dequantized_cache(load_sample):
    result = _optimize(load_sample("llama-tiny", 23), "kv-quant{bits=4,group=8,residual=16}")
    m = result.model
    assert count_ops(m, KV_QUANT_ATTENTION, *DEQUANT) == {
        "KvQuantAttention": 2,
        "KvDequantKey": 0,
        "KvDequantValue": 0,
    }
    assert _attention_ops(m) == 0
    (node,) = [n for n in m.graph if KV_QUANT_ATTENTION.matches(n) and n.name == "kv_quant.0.attention"]
    assert node.attributes["bits"].value == 4 and node.attributes["group"].value == 8
    assert node.attributes["scale"].value == pytest.approx(0.25), "copied from the Attention node"
    assert [v.name for v in node.inputs[1:4]] == ["past.0.key.codes", "past.0.key.scale", "past.0.key.min"]
    (report,) = result.reports
    assert [s["attention"] for s in report.sites] == ["fused: parekit::KvQuantAttention over the codes"] * 2
    assert report.extra["fused_layers"] == 2


def test_fused_false_keeps_the_dequantized_cache(load_sample):
    result = _optimize(load_sample("llama-tiny", 23), "kv-quant{bits=8,group=8,residual=16,fused=false}")
    m = result.model
    assert count_ops(m, KV_QUANT_ATTENTION, *DEQUANT) == {
        "KvQuantAttention": 0,
        "KvDequantKey": 2,
        "KvDequantValue": 2,
    }
    assert _attention_ops(m) == 2
    # unfused, attention reads the dequantized cache (Concat), and the exported Shape(past) reads stay on it
    for node in m.graph:
        if any(op.matches(node) for op in DEQUANT):
            assert "Concat" in {user.op_type for user, _ in node.outputs[0].uses()}
    (report,) = result.reports
    assert [s["attention"] for s in report.sites] == ["dequantized float cache: fused=false"] * 2
    assert report.extra["fused_layers"] == 0


def test_decomposed_attention_stays_on_the_dequantized_cache():
    result = _optimize(decoder_model(), "kv-quant{bits=8,group=4,residual=2}")
    assert count_ops(result.model, KV_QUANT_ATTENTION)["KvQuantAttention"] == 0
    assert count_ops(result.model, KV_DEQUANT_KEY)["KvDequantKey"] == 2
    (report,) = result.reports
    assert all(
        s["attention"].startswith("dequantized float cache: decomposed attention") for s in report.sites
    )


def test_fused_residual_covering_the_context_matches_the_base(load_sample, sample_path):
    """Nothing is ever quantized: the fused form is the base model up to float rounding (not bit-exact:
    its attention sums in another order than ONNX Attention)."""
    model = _optimize(load_sample("llama-tiny", 23), "kv-quant{bits=4,group=4,residual=64}").model
    assert count_ops(model, KV_QUANT_ATTENTION)["KvQuantAttention"] == 2
    base, quant = DecoderSession(sample_path("llama-tiny", 23)), DecoderSession(model)
    for la, lb, sa, sb, mask in decode_side_by_side(base, quant):
        real = mask[:, -la.shape[1] :].astype(bool)
        np.testing.assert_allclose(lb[real], la[real], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(sb["past.1.value.res"], sa["past.1.value"], atol=1e-6, rtol=1e-5)
        assert sb["past.1.value.codes"].shape[2] == 0


@pytest.mark.parametrize("native", [False, True], ids=["bodies", "native"])
@pytest.mark.parametrize("bits", [8, 4])
def test_fused_matches_dequantizing_form(load_sample, request, native, bits):
    """Greedy decode of a left-padded batch, residual=2 and group=4: most tokens are served from the store."""
    if native:
        request.getfixturevalue("native_library")  # built and current
    spec = f"kv-quant{{bits={bits},group=4,residual=2"
    unfused = _optimize(load_sample("llama-tiny", 23), spec + ",fused=false}").model
    fused = _optimize(load_sample("llama-tiny", 23), spec + "}").model
    assert count_ops(fused, KV_QUANT_ATTENTION)["KvQuantAttention"] == 2
    base = DecoderSession(OrtRunner(unfused, optimization="disabled", native=native))
    other = DecoderSession(OrtRunner(fused, optimization="disabled", native=native))
    assert (other.runner.native_library is not None) == native
    stored = 0
    for la, lb, sa, sb, mask in decode_side_by_side(base, other):
        real = mask[:, -la.shape[1] :].astype(bool)  # query positions that are tokens, not left padding
        np.testing.assert_allclose(lb[real], la[real], atol=1e-5, rtol=1e-5)
        for name, value in sa.items():
            np.testing.assert_allclose(sb[name], value, atol=1e-5, rtol=1e-5, err_msg=name)
        stored = sb["past.0.key.codes"].shape[2]
    assert stored >= 16, "the store, not only the float window, was read"
