"""Running one-node parekit models in ONNX Runtime with the native library (kernels) and without it
(function bodies)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tests.ops.harness import build_model, check_model

from .cases import Case


def session(proto_bytes: bytes, library: Path | None, *, threads: int = 2, profile: str | None = None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if library is not None:
        options.register_custom_ops_library(str(library))
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(proto_bytes, options, providers=["CPUExecutionProvider"])


def run_case(case: Case, library: Path | None, *, threads: int = 2) -> list[np.ndarray]:
    """Runs the case's op as a one-node model (symbolic dims) with or without the library."""
    model = build_model(case.op, list(case.inputs), dict(case.attrs))
    proto = check_model(model).SerializeToString()
    sess = session(proto, library, threads=threads)
    feeds = {value.name: np.asarray(a) for value, a in zip(model.graph.inputs, case.inputs, strict=True)}
    return list(sess.run(None, feeds))


def profiled_op_types(case: Case, library: Path | None) -> list[str]:
    """The op types of the nodes ONNX Runtime executed (from its profile), for one run of the case."""
    model = build_model(case.op, list(case.inputs), dict(case.attrs))
    proto = check_model(model).SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(proto, library, profile=os.path.join(tmp, "p"))
        feeds = {value.name: np.asarray(a) for value, a in zip(model.graph.inputs, case.inputs, strict=True)}
        sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    return [
        e["args"]["op_name"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
    ]


def assert_close(
    got: Sequence[np.ndarray], want: Sequence[np.ndarray], tol: tuple[float, float], what: str
) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype, f"{what}: output {i} dtype {g.dtype}, expected {w.dtype}"
        assert g.shape == w.shape, f"{what}: output {i} shape {g.shape}, expected {w.shape}"
        if tol == (0.0, 0.0) or not np.issubdtype(w.dtype, np.floating):
            np.testing.assert_array_equal(g, w, err_msg=f"{what}: output {i}")
        else:
            np.testing.assert_allclose(g, w, rtol=tol[0], atol=tol[1], err_msg=f"{what}: output {i}")
