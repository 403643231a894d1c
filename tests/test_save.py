"""Tests of parekit.backends.save: atomic writes, external data, IR version cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from parekit.backends import save as save_module
from parekit.backends.save import save_model
from parekit.errors import BackendError
from parekit.frontends.onnx_file import load_model

TEXT = """
<ir_version: 10, opset_import: ["" : 18]>
g (float[batch, 8] x) => (float[batch, 8] y) {
  s = ReduceSum(big)
  t = Add(x, s)
  y = Mul(t, w)
}
"""
BIG = np.arange(2048, dtype=np.float32).reshape(256, 8) / 100.0
W = np.linspace(-1, 1, 8, dtype=np.float32)


def _model() -> ir.Model:
    proto = onnx.parser.parse_model(TEXT)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(BIG, "big"))
    proto.graph.initializer.append(onnx.numpy_helper.from_array(W, "w"))
    return ir.from_proto(proto)


def _expected(x: np.ndarray) -> np.ndarray:
    return (x + BIG.sum(dtype=np.float32)) * W


def _run(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((2, 8), np.float32)
    return session.run(None, {"x": x})[0]


def test_inline_save(tmp_path: Path) -> None:
    path = save_model(_model(), tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    np.testing.assert_allclose(_run(path), _expected(np.ones((2, 8), np.float32)), rtol=1e-6)


def test_external_data_round_trip(tmp_path: Path) -> None:
    path = save_model(_model(), tmp_path / "m.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert (tmp_path / "m.onnx.data").stat().st_size >= BIG.nbytes
    assert path.stat().st_size < BIG.nbytes  # the big weight is not inline
    proto = onnx.load(str(path), load_external_data=False)
    locations = {
        t.name: {e.key: e.value for e in t.external_data}.get("location") for t in proto.graph.initializer
    }
    assert locations["big"] == "m.onnx.data"
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.graph.initializers["big"].const_value.numpy(), BIG)
    np.testing.assert_allclose(_run(path), _expected(np.ones((2, 8), np.float32)), rtol=1e-6)


def test_external_model_saved_inline_elsewhere(tmp_path: Path) -> None:
    src = save_model(_model(), tmp_path / "a.onnx", external_data=True)
    other = tmp_path / "other"
    other.mkdir()
    out = save_model(load_model(src), other / "b.onnx", external_data=False)
    assert [p.name for p in other.iterdir()] == ["b.onnx"]
    np.testing.assert_allclose(_run(out), _expected(np.ones((2, 8), np.float32)), rtol=1e-6)


def test_resave_over_own_external_data_keeps_model_valid(tmp_path: Path) -> None:
    path = save_model(_model(), tmp_path / "m.onnx", external_data=True)
    model = load_model(path)
    # change the layout of the data file: a new initializer written before the others
    values = list(model.graph.initializers.values())
    model.graph.initializers.clear()
    pad = np.full(1000, 7.0, np.float32)
    model.graph.initializers.add(ir.Value(name="pad", const_value=ir.tensor(pad, name="pad")))
    for value in values:
        model.graph.initializers.add(value)
    save_model(model, path, external_data=True)
    np.testing.assert_array_equal(model.graph.initializers["big"].const_value.numpy(), BIG)
    np.testing.assert_array_equal(load_model(path).graph.initializers["big"].const_value.numpy(), BIG)
    np.testing.assert_allclose(_run(path), _expected(np.ones((2, 8), np.float32)), rtol=1e-6)


def test_automatic_mode_uses_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_model(_model(), tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx.data").exists()
    monkeypatch.setattr(save_module, "EXTERNAL_DATA_THRESHOLD_BYTES", 1000)
    save_model(_model(), tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()


def test_ir_version_capped_and_model_unchanged(tmp_path: Path) -> None:
    model = _model()
    model.ir_version = 14
    path = save_model(model, tmp_path / "m.onnx")
    assert onnx.load(str(path)).ir_version == 10
    assert model.ir_version == 14
    _run(path)  # onnxruntime loads it


def _failing_save(*args: object, **kwargs: object) -> None:
    # write part of the output, then fail, as a full disk would
    path = Path(str(args[1]))
    path.write_bytes(b"partial")
    (path.parent / (path.name + ".data")).write_bytes(b"partial")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("external", [False, True])
def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, external: bool) -> None:
    monkeypatch.setattr(ir, "save", _failing_save)
    with pytest.raises(BackendError, match="No space left on device"):
        save_model(_model(), tmp_path / "m.onnx", external_data=external)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_model(_model(), tmp_path / "m.onnx", external_data=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(ir, "save", _failing_save)
    with pytest.raises(BackendError):
        save_model(_model(), path, external_data=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_failed_move_restores_previous_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_model(_model(), tmp_path / "m.onnx", external_data=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = save_module.os.replace
    calls = []

    def flaky_replace(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 4:  # 2 backups, then the .onnx moved, then the .data fails
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(save_module.os, "replace", flaky_replace)
    with pytest.raises(BackendError, match="Input/output error"):
        save_model(_model(), path, external_data=True)
    monkeypatch.setattr(save_module.os, "replace", real_replace)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        save_model(_model(), tmp_path / "nope" / "m.onnx")


def test_atomic_output_all_or_nothing(tmp_path: Path) -> None:
    from parekit.atomic import atomic_output

    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("write failed")
    assert dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with atomic_output(dest) as tmp:
        assert tmp.parent == tmp_path and tmp != dest
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
