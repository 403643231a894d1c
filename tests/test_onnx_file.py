"""Tests of parekit.frontends.onnx_file: loading files, external data, error messages, node names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from parekit.errors import ModelLoadError
from parekit.frontends.onnx_file import check_external_data, ensure_node_names, load_model

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


# --------------------------------------------------------------------------------------------------
# Invalid models that onnx-ir rejects while deserializing: one ModelLoadError line naming the file.


def _external(proto: onnx.ModelProto, location: str, **fields: str) -> onnx.ModelProto:
    """Make initializer 'w' external at ``location`` (with extra external_data fields)."""
    tensor = proto.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    for key, value in fields.items():
        tensor.external_data.add(key=key, value=value)
    return proto


def _duplicate_names() -> onnx.ModelProto:
    proto = _proto()
    proto.graph.node[1].output[0] = "t"  # Relu redeclares Add's output
    return proto


def _unknown_dtype() -> onnx.ModelProto:
    proto = _proto()
    proto.graph.initializer[0].data_type = 999
    return proto


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_duplicate_names, "redeclared"),
        (lambda: _external(_proto(), "w.data", offset="-1"), "offset must be non-negative"),
        (_unknown_dtype, "999 is not a valid DataType"),
        (lambda: _external(_proto(), "w.data", length="many"), "not a valid ONNX model"),
    ],
    ids=["duplicate-value-names", "offset-minus-one", "unknown-data-type", "bad-length"],
)
def test_deserialization_errors_are_model_load_errors(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "bad.onnx"
    onnx.save(make(), path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = info.value.message
    assert message.startswith(f"{path}: not a valid ONNX model (")
    assert reason in message
    assert "\n" not in message and "_deserialize_graph" not in message


def test_huge_duplicate_name_gives_a_short_message(tmp_path: Path) -> None:
    proto = _duplicate_names()
    name = "v" * 60_000
    for node in proto.graph.node:
        node.input[:] = [name if i == "t" else i for i in node.input]
        node.output[:] = [name if o == "t" else o for o in node.output]
    path = tmp_path / "bad.onnx"
    onnx.save(proto, path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    assert len(str(info.value)) < 1000
    assert "characters)" in info.value.message  # cut, with the original length


# --------------------------------------------------------------------------------------------------
# External data must stay inside the model's folder; one message, whatever the path is.

_OUTSIDE = "which is not a file inside the model's folder"


def _save_with_location(folder: Path, location: str) -> Path:
    path = folder / "m.onnx"
    onnx.save(_external(_proto(), location), path)
    return path


def _outside_message(path: Path) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    assert "\n" not in info.value.message
    return info.value.message


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../x.data", "..\\x.data", ""])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    path = _save_with_location(tmp_path, location)
    message = _outside_message(path)
    assert message == f"{path}: tensor 'w' keeps its data at '{location}', {_OUTSIDE}"
    with pytest.raises(ModelLoadError, match=_OUTSIDE):
        check_external_data(path)  # the path-only check for readers that load by path


def test_symlink_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.data").write_bytes(np.arange(8, dtype=np.float32).tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "w.data").symlink_to(outside / "secret.data")
    message = _outside_message(_save_with_location(model_dir, "w.data"))
    assert message.endswith(f"keeps its data at 'w.data', {_OUTSIDE}")


def test_symlink_inside_the_folder_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "real.data").write_bytes(np.arange(8, dtype=np.float32).tobytes())
    (tmp_path / "w.data").symlink_to(tmp_path / "real.data")
    model = load_model(_save_with_location(tmp_path, "w.data"))
    np.testing.assert_array_equal(model.graph.initializers["w"].const_value.numpy(), np.arange(8))


def test_outside_message_does_not_probe_the_path(tmp_path: Path) -> None:
    """Existing, missing, short and long targets outside the folder all get the same message."""
    (tmp_path / "big.data").write_bytes(b"\0" * 4096)
    (tmp_path / "short.data").write_bytes(b"\0" * 3)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    messages = set()
    for target in ("big.data", "short.data", "missing.data"):
        location = f"../{target}"
        messages.add(_outside_message(_save_with_location(model_dir, location)).replace(location, "LOC"))
    assert len(messages) == 1


def test_nul_byte_in_location(tmp_path: Path) -> None:
    path = _save_with_location(tmp_path, "w\0.data")
    message = _outside_message(path)
    assert "\0" not in message and "w\\x00.data" in message


def test_control_characters_in_location_are_neutralized(tmp_path: Path) -> None:
    location = "../\x1b]0;pwned\x07\x1b[2J\x9b31m.data"
    message = _outside_message(_save_with_location(tmp_path, location))
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in message)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m" in message


def test_missing_and_truncated_data_inside_the_folder_get_one_message(tmp_path: Path) -> None:
    path = _save_external(tmp_path)
    data = tmp_path / "ext.onnx.data"
    full = data.read_bytes()
    data.write_bytes(full[:10])  # shorter than the first initializer needs
    with pytest.raises(ModelLoadError) as short:
        load_model(path)
    data.unlink()
    with pytest.raises(ModelLoadError) as missing:
        load_model(path)
    assert short.value.message == missing.value.message
    assert "is missing or too short" in missing.value.message


def test_external_data_that_is_a_folder(tmp_path: Path) -> None:
    path = _save_external(tmp_path)
    data = tmp_path / "ext.onnx.data"
    data.unlink()
    data.mkdir()
    with pytest.raises(ModelLoadError, match="is missing or too short"):
        load_model(path)


def test_check_external_data_accepts_a_good_model(tmp_path: Path) -> None:
    check_external_data(_save_external(tmp_path))  # no raise
