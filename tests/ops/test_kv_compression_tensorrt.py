"""kv-window / kv-evict / kv-quant outputs (opset 18) parse and build under TensorRT-RTX's CPU-only builder.

Two kinds of profile: the ``harness.tensorrt_build`` one (every dynamic dim ``1 … 8``) and dynamic
profiles with ``min < opt < max`` per dim name (:mod:`.trt_dynamic`), valid for prefill (empty past) and
decode steps, where the state dims follow each pass's rule (the rule ``parekit build`` derives):

* unmodified: ``past`` in ``[0, P]``, ``total = past + seq`` at every point;
* kv-window{sink, window}: ``past = min(total - seq, sink + window)`` at every point (KvWindowMask maps the
  runtime's mask over all tokens seen onto the kept slots);
* kv-evict{budget}: ``past`` (and the ``score`` state, same name) in ``[0, budget]``, ``total >= seq``
  otherwise free (KvMaskRemap derives the mask from ``past`` and ``seq``);
* kv-quant{group, residual}: ``q_tokens`` in ``[0, Q]``, ``res_tokens`` in ``[0, residual + group - 1]``,
  ``total = q_tokens + res_tokens + seq``; ``q_groups`` (= ``q_tokens / group`` at run time) is free at the
  profile points: the bodies derive every dim they compare from the codes' shape.

Skipped where ``tensorrt_rtx`` is not installed. At opset 23 only fused kv-quant is tried: it replaces
every ``Attention`` node by ``KvQuantAttention``; TensorRT-RTX does not build the fp32 ``Attention`` op
at all (docs/environment.md), so the other passes' opset-23 outputs do not build.
"""

from __future__ import annotations

import os

import pytest

from parekit.backends.save import save_model
from parekit.passes.base import PassContext
from parekit.passes.manager import run_pipeline

from .harness import tensorrt_build
from .trt_dynamic import Profile, build_dynamic

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


STEP: Profile = {"batch": (1, 1, 2), "seq": (1, 1, 16)}
QUANT: Profile = {  # group 8, residual 4: the window holds 0 (prefill) to 11 tokens
    **STEP, "q_tokens": (0, 16, 64), "q_groups": (0, 2, 8), "res_tokens": (0, 6, 11), "total": (1, 23, 91),
}
DYNAMIC = {
    "none": ("", {**STEP, "past": (0, 32, 64), "total": (1, 33, 80)}),
    "kv-window": ("kv-window{sink=2,window=8}", {**STEP, "past": (0, 5, 10), "total": (1, 6, 100)}),
    "kv-evict-h2o": (
        "kv-evict{budget=8,sink=2,recent=2,policy=h2o}",
        {**STEP, "past": (0, 4, 8), "total": (1, 40, 100)},
    ),
    "kv-evict-snapkv": (
        "kv-evict{budget=8,sink=2,recent=2,policy=snapkv}",
        {**STEP, "past": (0, 4, 8), "total": (1, 40, 100)},
    ),
    "kv-quant-int8": ("kv-quant{bits=8,group=8,residual=4}", QUANT),
    "kv-quant-int4": ("kv-quant{bits=4,group=8,residual=4}", QUANT),
    "kv-quant-int4-unfused": ("kv-quant{bits=4,group=8,residual=4,fused=false}", QUANT),
    # q_tokens not a multiple of the group at kOPT, q_groups at its smallest: main's dequant bodies
    # reshaped the store into token groups and multiplied Nq/group by the scale's group count.
    "kv-quant-int8-loose": (
        "kv-quant{bits=8,group=8,residual=4}",
        {**QUANT, "q_tokens": (0, 17, 64), "q_groups": (0, 1, 1), "total": (1, 24, 91)},
    ),
    "kv-quant-int4-loose": (
        "kv-quant{bits=4,group=8,residual=4}",
        {**QUANT, "q_tokens": (0, 128, 256), "q_groups": (1, 128, 256), "total": (1, 135, 283)},
    ),
}


@pytest.mark.parametrize("sample", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("case", list(DYNAMIC))
def test_decoder_builds_over_dynamic_profile(load_sample, tmp_path, sample, case):
    pipeline, profile = DYNAMIC[case]
    model = load_sample(sample, 18)
    if pipeline:
        model = run_pipeline(model, pipeline, PassContext()).model
    path = tmp_path / "model.onnx"
    save_model(model, path)
    code, output = build_dynamic(str(path), profile)
    what = f"{sample} {pipeline or 'unmodified'}"
    assert code == 0, f"{what}: TensorRT-RTX could not build over {profile}:\n{output}"


def test_fused_kv_quant_opset23_builds_over_dynamic_profile(load_sample, tmp_path):
    """llama-tiny at opset 23, kv-quant fused: no ``Attention`` is left, the KvQuantAttention bodies build."""
    pipeline = "kv-quant{bits=8,group=8,residual=4}"
    model = run_pipeline(load_sample("llama-tiny", 23), pipeline, PassContext()).model
    path = tmp_path / "model.onnx"
    save_model(model, path)
    for name in ("kv-quant-int8", "kv-quant-int8-loose"):
        code, output = build_dynamic(str(path), DYNAMIC[name][1])
        assert code == 0, f"opset-23 fused kv-quant, {name} profile: TensorRT-RTX did not build:\n{output}"


SMOL_STEP: Profile = {"batch": (1, 1, 1), "seq": (1, 1, 16)}
SMOL_QUANT = {  # kv-quant{bits=8}: group 32, residual 16 (the profile)
    "issue": {
        **SMOL_STEP, "q_tokens": (32, 128, 256), "q_groups": (1, 4, 8), "res_tokens": (0, 16, 32),
        "total": (33, 145, 304),
    },
    # q_groups given the token dims' range: main's KvDequantKey Mul broadcast 128 against 4 at kOPT
    "groups-as-tokens": {
        **SMOL_STEP, "q_tokens": (32, 128, 256), "q_groups": (32, 128, 256), "res_tokens": (0, 16, 32),
        "total": (33, 145, 304),
    },
}


@pytest.mark.slow
def test_smollm2_kv_quant_builds_over_dynamic_profiles(load_sample, tmp_path):
    """SmolLM2 (opset 18) after kv-quant{bits=8}: the profile with q_groups free (the one the old bodies
    failed); PAREKIT_TRT_FULL=1 also builds the issue's profile (each build takes minutes on 2 cores; the
    tiny decoders above run both kinds of profile, and test_build_matrix builds SmolLM2 kv-quant's derived one)."""
    model = run_pipeline(load_sample("smollm2", 18), "kv-quant{bits=8}", PassContext()).model
    path = tmp_path / "smollm2.q8.onnx"
    save_model(model, path)
    names = list(SMOL_QUANT) if os.environ.get("PAREKIT_TRT_FULL") == "1" else ["groups-as-tokens"]
    for name, profile in ((n, SMOL_QUANT[n]) for n in names):
        code, output = build_dynamic(str(path), profile)
        assert code == 0, f"SmolLM2 kv-quant{{bits=8}}, {name} profile: TensorRT-RTX did not build:\n{output}"
