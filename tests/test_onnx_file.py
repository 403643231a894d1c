"""Tests of parekit.frontends.onnx_file: loading files, external data, error messages, node names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from parekit.errors import ModelLoadError
from parekit.frontends.onnx_file import ensure_node_names, load_model

TEXT = """
<ir_version: 10, opset_import: ["" : 18]>
g (float[batch, 8] x) => (float[batch, 8] y) {
  t = Add(x, w)
  named = Relu(t)
  y = Mul(named, w)
}
"""


def _proto() -> onnx.ModelProto:
    proto = onnx.parser.parse_model(TEXT)
    proto.graph.initializer.append(numpy_helper.from_array(np.arange(8, dtype=np.float32), "w"))
    proto.graph.node[1].name = "my_relu"
    return proto


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(_proto(), path)
    return path


def test_loads_and_names_nodes(model_file: Path) -> None:
    before = model_file.read_bytes()
    model = load_model(model_file)
    names = [n.name for n in model.graph]
    assert names == ["Add_0", "my_relu", "Mul_0"]
    assert len(set(names)) == 3
    np.testing.assert_array_equal(model.graph.initializers["w"].const_value.numpy(), np.arange(8))
    assert model_file.read_bytes() == before  # never modifies the file


def test_ensure_node_names_avoids_existing_names() -> None:
    import onnx_ir as ir

    proto = _proto()
    proto.graph.node[1].name = "Add_0"  # collides with the name the first Add would get
    model = ir.from_proto(proto)
    assert ensure_node_names(model) == 2
    names = [n.name for n in model.graph]
    assert names[1] == "Add_0"
    assert len(set(names)) == 3
    assert ensure_node_names(model) == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "absent.onnx")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty file"):
        load_model(path)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8, 0.95])
def test_truncated_file(model_file: Path, fraction: float) -> None:
    data = model_file.read_bytes()
    model_file.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelLoadError) as info:
        load_model(model_file)
    message = str(info.value)
    assert message.startswith(f"{model_file}: not a valid ONNX model (truncated or malformed protobuf")
    assert "\n" not in info.value.message


@pytest.mark.parametrize("payload", [b"\xff\xfe\x00garbage\x13\x99" * 10, b"hello world, not a model\n"])
def test_garbage_file(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(payload)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        load_model(path)


def _save_external(tmp_path: Path) -> Path:
    proto = _proto()
    big = np.arange(1024, dtype=np.float32).reshape(128, 8)
    proto.graph.initializer.append(numpy_helper.from_array(big, "big"))
    path = tmp_path / "ext.onnx"
    onnx.save(proto, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    return path


def test_external_data_resolved_next_to_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save_external(tmp_path)
    monkeypatch.chdir("/")  # resolution must not depend on the working directory
    model = load_model(path)
    np.testing.assert_array_equal(
        model.graph.initializers["big"].const_value.numpy(), np.arange(1024, dtype=np.float32).reshape(128, 8)
    )


def test_missing_external_data(tmp_path: Path) -> None:
    path = _save_external(tmp_path)
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match=r"external data file .ext.onnx.data. .* is missing or too short"):
        load_model(path)


def test_truncated_external_data(tmp_path: Path) -> None:
    path = _save_external(tmp_path)
    data = tmp_path / "ext.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="is missing or too short"):
        load_model(path)
