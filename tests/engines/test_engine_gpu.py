"""A TensorRT-RTX plan that ``parekit build`` made, run on a GPU against ONNX Runtime on the same feeds.

Deselected by default (``-m gpu``); skipped without a CUDA GPU, ``tensorrt_rtx`` or a CUDA build of torch
(its tensors hold the device buffers). Deserializing an engine needs a driver, so nothing of this runs in CI.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return done.returncode == 0 and "GPU " in done.stdout


def _run_engine(trt, torch, plan: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    keep = {}
    for name, value in feeds.items():
        context.set_input_shape(name, value.shape)
        keep[name] = torch.from_numpy(np.ascontiguousarray(value)).cuda()
        context.set_tensor_address(name, keep[name].data_ptr())
    outputs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            shape = tuple(context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            context.set_tensor_address(name, outputs[name].data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return {k: v.cpu().numpy() for k, v in outputs.items()}


@pytest.mark.skipif(not _gpu(), reason="needs a CUDA GPU (nvidia-smi -L lists none)")
@pytest.mark.parametrize("sample", ["minilm", "llama-tiny"])
def test_rtx_plan_matches_onnx_runtime(run_cli, sample_path, tmp_path, sample):
    trt = pytest.importorskip("tensorrt_rtx")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    from parekit.backends.ort import OrtRunner
    from parekit.runtime.decoder import DecoderSession

    model = sample_path(sample, 18)
    plan = tmp_path / "m.plan"
    run_cli("build", model, "-o", plan, "--backend", "tensorrt-rtx", "--profile", "seq=1,8,32")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, size=(2, 8), dtype=np.int64)
    feeds: dict[str, np.ndarray] = {"input_ids": ids}
    runner = OrtRunner(model)
    names = {s.name for s in runner.input_specs}
    if "past.0.key" in names:  # a prefill step under the KV I/O contract
        session = DecoderSession(runner)
        feeds.update(attention_mask=np.ones((2, 8), np.int64), position_ids=np.tile(np.arange(8), (2, 1)),
                     **session.empty_state(2))
    else:
        feeds["attention_mask"] = np.ones((2, 8), np.int64)
        feeds.update({n: np.zeros((2, 8), np.int64) for n in names - set(feeds)})
    want = dict(zip(runner.output_names, runner.session.run(None, feeds), strict=True))
    got = _run_engine(trt, torch, plan.read_bytes(), feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-3, atol=1e-3, err_msg=name)
