"""Tests of parekit.backends.ort: OrtRunner, provider checks, feed checks, check_loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from parekit.backends.ort import OrtRunner, check_loads
from parekit.backends.save import save_model
from parekit.backends.specs import TensorSpec
from parekit.errors import BackendError, DataError, VerificationError
from parekit.frontends.onnx_file import load_model

TEXT = """
<ir_version: 10, opset_import: ["" : 18]>
g (float[batch, seq, 4] x, int64[batch, seq] ids) => (float[batch, seq, 4] y, int64[batch, seq] ids2) {
  e = Gather(table, ids)
  y = Add(x, e)
  ids2 = Identity(ids)
}
"""
TABLE = np.arange(1200, dtype=np.float32).reshape(300, 4)


def _model() -> ir.Model:
    proto = onnx.parser.parse_model(TEXT)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(TABLE, "table"))
    return ir.from_proto(proto)


def _feeds() -> dict[str, np.ndarray]:
    return {"x": np.ones((2, 3, 4), np.float32), "ids": np.array([[0, 1, 2], [299, 8, 7]], np.int64)}


def _expected(feeds: dict[str, np.ndarray]) -> np.ndarray:
    return feeds["x"] + TABLE[feeds["ids"]]


@pytest.mark.parametrize("form", ["ir", "bytes", "path", "external"])
def test_runs_every_model_form(tmp_path: Path, form: str) -> None:
    model = _model()
    source: object = model
    if form == "bytes":
        source = ir.to_proto(model).SerializeToString()
    elif form == "path":
        source = save_model(model, tmp_path / "m.onnx")
    elif form == "external":
        source = load_model(save_model(model, tmp_path / "m.onnx", external_data=True))
        assert isinstance(source.graph.initializers["table"].const_value, ir.ExternalTensor)
    runner = OrtRunner(source, optimization="disabled", threads=1)  # type: ignore[arg-type]
    feeds = _feeds()
    out = runner.run({**feeds, "unused": np.zeros(1)})  # extra feeds are ignored
    np.testing.assert_array_equal(out["y"], _expected(feeds))
    np.testing.assert_array_equal(out["ids2"], feeds["ids"])
    assert runner.output_names == ["y", "ids2"]


def test_input_specs_keep_symbolic_dims() -> None:
    specs = OrtRunner(_model()).input_specs
    assert specs == [
        TensorSpec("x", np.dtype(np.float32), ("batch", "seq", 4)),
        TensorSpec("ids", np.dtype(np.int64), ("batch", "seq")),
    ]


def test_select_outputs() -> None:
    out = OrtRunner(_model()).run(_feeds(), outputs=["ids2"])
    assert list(out) == ["ids2"]
    with pytest.raises(DataError, match="no output named 'nope'"):
        OrtRunner(_model()).run(_feeds(), outputs=["nope"])


def test_missing_feed() -> None:
    with pytest.raises(DataError, match="no feed for input 'ids'"):
        OrtRunner(_model()).run({"x": np.ones((2, 3, 4), np.float32)})


def test_dtype_mismatch() -> None:
    feeds = _feeds()
    feeds["x"] = feeds["x"].astype(np.float64)
    with pytest.raises(DataError, match="input 'x' expects float32, got float64"):
        OrtRunner(_model()).run(feeds)


def test_rank_and_fixed_dim_mismatch() -> None:
    feeds = _feeds()
    feeds["ids"] = feeds["ids"][0]
    with pytest.raises(DataError, match="input 'ids' expects rank 2"):
        OrtRunner(_model()).run(feeds)
    feeds = _feeds()
    feeds["x"] = np.ones((2, 3, 5), np.float32)
    with pytest.raises(DataError, match="expects size 4 on axis 2"):
        OrtRunner(_model()).run(feeds)


def test_runtime_failure_is_backend_error() -> None:
    feeds = _feeds()
    feeds["ids"] = np.array([[0, 1, 2], [999, 8, 7]], np.int64)  # out of the table's range
    with pytest.raises(BackendError, match="ONNX Runtime failed running"):
        OrtRunner(_model()).run(feeds)


@pytest.mark.parametrize("name", ["CUDAExecutionProvider", "cuda", "TensorrtExecutionProvider"])
def test_missing_gpu_provider_names_extra(name: str) -> None:
    with pytest.raises(BackendError) as info:
        OrtRunner(_model(), providers=[name])
    assert "execution provider" in info.value.message and "not available" in info.value.message
    assert info.value.note is not None and "pip install 'parekit[gpu]'" in info.value.note


def test_unknown_provider() -> None:
    with pytest.raises(BackendError, match="'NoSuchExecutionProvider' is not available"):
        OrtRunner(_model(), providers=["NoSuchExecutionProvider"])


def test_bad_optimization_level() -> None:
    with pytest.raises(BackendError, match="optimization level 'max'"):
        OrtRunner(_model(), optimization="max")  # type: ignore[arg-type]


def test_check_loads_accepts_good_models(tmp_path: Path) -> None:
    check_loads(_model())
    check_loads(load_model(save_model(_model(), tmp_path / "m.onnx", external_data=True)))


def test_check_loads_rejects_checker_failure() -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 18]>
        g (float[2, 3] x) => (float[2, 3] y) {
          y = Relu(x, x)
        }
        """
    )
    with pytest.raises(VerificationError, match="fails the ONNX checker") as info:
        check_loads(model)
    assert "\n" not in info.value.message


def test_check_loads_rejects_ort_failure() -> None:
    # Valid for the checker, but ORT has no kernel for this custom op.
    proto = onnx.parser.parse_model(
        """
        <ir_version: 10, opset_import: ["" : 18, "nowhere" : 1]>
        g (float[2, 3] x) => (float[2, 3] y) {
          y = nowhere.Mystery(x)
        }
        """
    )
    with pytest.raises(VerificationError, match="does not load in ONNX Runtime"):
        check_loads(ir.from_proto(proto))


def test_bad_bytes() -> None:
    with pytest.raises(BackendError, match="not a valid ONNX model"):
        OrtRunner(b"\xff\xff garbage")
