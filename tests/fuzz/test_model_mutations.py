"""Mutated small models through load_model, discover and ``parekit inspect``: clean errors only.

Every mutant must load or give a :class:`ParekitError`; discovery must succeed or give one; and the
CLI must exit 0 or 2 with no traceback, no "internal error" line and no control characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from parekit.analysis import discover
from parekit.errors import ParekitError
from parekit.frontends.onnx_file import load_model

TINY = """
<ir_version: 10, opset_import: ["" : 18]>
tiny (float[batch, seq, 8] x) => (float[batch, seq, 8] y) {
  h = MatMul(x, w)
  s = Softmax<axis = -1>(h)
  r = Add(s, x)
  y = Relu(r)
}
"""

HOSTILE_TEXT = st.sampled_from(
    [
        "\x1b[2J\x1b]0;pwned\x07",
        "\x9b31m",
        "n" * 60_000,
        "\\" * 30_000,
        "\u202eevil",
        "",
        "x",
        "h",  # an existing name: duplicates
        "[bold]markup[/bold]",
    ]
)
LOCATIONS = st.sampled_from(["../../etc/passwd", "/etc/passwd", "w\0.data", "missing.data", "\x1b[31m.data", ""])
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _tiny() -> onnx.ModelProto:
    proto = onnx.parser.parse_model(TINY)
    proto.graph.initializer.append(numpy_helper.from_array(np.eye(8, dtype=np.float32), "w"))
    return proto


# ---- field mutations of a model proto


def _retype_node(proto: onnx.ModelProto, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from(list(proto.graph.node)))
    node.op_type = data.draw(st.sampled_from(["NoSuchOp", "Attention", "Softmax", "MatMul", "If", "\x1bX"]))


def _rename_value(proto: onnx.ModelProto, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from(list(proto.graph.node)))
    name = data.draw(HOSTILE_TEXT)
    if node.output and data.draw(st.booleans()):
        node.output[0] = name
    elif node.input:
        node.input[0] = name


def _drop_inputs(proto: onnx.ModelProto, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from(list(proto.graph.node)))
    keep = data.draw(st.integers(0, max(0, len(node.input) - 1)))
    del node.input[keep:]


def _bad_dtype(proto: onnx.ModelProto, data: st.DataObject) -> None:
    tensor = proto.graph.initializer[0]
    tensor.data_type = data.draw(st.sampled_from([0, 8, 999, -1, 2**31 - 1]))


def _bad_dims(proto: onnx.ModelProto, data: st.DataObject) -> None:
    tensor = proto.graph.initializer[0]
    tensor.dims[:] = data.draw(st.lists(st.sampled_from([-1, 0, 3, 2**40]), max_size=3))


def _external(proto: onnx.ModelProto, data: st.DataObject) -> None:
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=data.draw(LOCATIONS))
    extra = data.draw(st.sampled_from([None, ("offset", "-1"), ("length", "x"), ("offset", "9" * 30)]))
    if extra is not None:
        tensor.external_data.add(key=extra[0], value=extra[1])


def _opset(proto: onnx.ModelProto, data: st.DataObject) -> None:
    proto.opset_import[0].version = data.draw(st.sampled_from([0, 1, 7, 99, -5]))


def _attribute(proto: onnx.ModelProto, data: st.DataObject) -> None:
    node = proto.graph.node[1]  # Softmax
    del node.attribute[:]
    node.attribute.append(onnx.helper.make_attribute("axis", data.draw(st.sampled_from([-9, 7, 2**40]))))


def _doc_strings(proto: onnx.ModelProto, data: st.DataObject) -> None:
    proto.graph.name = data.draw(HOSTILE_TEXT)
    proto.producer_name = data.draw(HOSTILE_TEXT)


MUTATIONS: list[Callable[[onnx.ModelProto, st.DataObject], None]] = [
    _retype_node,
    _rename_value,
    _drop_inputs,
    _bad_dtype,
    _bad_dims,
    _external,
    _opset,
    _attribute,
    _doc_strings,
]


def _flip_bytes(blob: bytes, data: st.DataObject) -> bytes:
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(out) - 1))
        out[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        out = out[: data.draw(st.integers(1, len(out)))]
    return bytes(out)


def _check_library(path: Path) -> None:
    try:
        model = load_model(path)
    except ParekitError as error:
        assert "\n" not in error.message and not _CONTROL.search(error.message)
        return
    try:
        discover(model)
    except ParekitError as error:
        assert not _CONTROL.search(error.message)


def _check_cli(run_cli: Callable[..., object], path: Path) -> None:
    result = run_cli("inspect", path, code=None)
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code in (0, 2), output  # type: ignore[attr-defined]
    assert "Traceback" not in output and "internal error" not in output, output
    assert not _CONTROL.search(output), repr(output[:500])
    assert len(output) < 50_000  # echoed names are capped


@FUZZ
@given(st.data())
def test_field_mutants_of_a_tiny_graph(tmp_path: Path, run_cli: Callable[..., object], data: st.DataObject) -> None:
    proto = _tiny()
    for mutate in data.draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        mutate(proto, data)
    path = tmp_path / "mutant.onnx"
    path.write_bytes(proto.SerializeToString())
    _check_library(path)
    _check_cli(run_cli, path)


@FUZZ
@given(st.data())
def test_byte_mutants_of_a_tiny_graph(tmp_path: Path, run_cli: Callable[..., object], data: st.DataObject) -> None:
    path = tmp_path / "mutant.onnx"
    path.write_bytes(_flip_bytes(_tiny().SerializeToString(), data))
    _check_library(path)
    _check_cli(run_cli, path)


@pytest.fixture(scope="module")
def llama_bytes(sample_path: Callable[[str], Path]) -> bytes:
    return sample_path("llama-tiny").read_bytes()


@settings(FUZZ, max_examples=12)
@given(st.data())
def test_byte_mutants_of_llama_tiny(
    tmp_path: Path, run_cli: Callable[..., object], llama_bytes: bytes, data: st.DataObject
) -> None:
    # Mutate the graph structure (the first ~10% of the file), not only weight bytes.
    head = len(llama_bytes) // 10
    blob = bytearray(llama_bytes)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, head))
        blob[at] = data.draw(st.integers(0, 255))
    path = tmp_path / "mutant.onnx"
    path.write_bytes(bytes(blob))
    _check_library(path)
    _check_cli(run_cli, path)


def _rename_input(sample_path: Callable[[str], Path], tmp_path: Path, new: str) -> Path:
    """llama-tiny with its graph input 'position_ids' renamed (inspect shows it in its summary)."""
    proto = onnx.load(str(sample_path("llama-tiny")))
    old = "position_ids"
    for value in proto.graph.input:
        if value.name == old:
            value.name = new
    for node in proto.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    path = tmp_path / "hostile.onnx"
    onnx.save(proto, path)
    return path


def test_inspect_neutralizes_escape_sequences_in_value_names(
    tmp_path: Path, run_cli: Callable[..., object], sample_path: Callable[[str], Path]
) -> None:
    path = _rename_input(sample_path, tmp_path, "\x1b]0;pwned\x07position_ids\x1b[2J")
    _check_library(path)
    result = run_cli("inspect", path)
    assert "\\x1b]0;pwned\\x07position_ids\\x1b[2J" in result.output  # type: ignore[attr-defined]
    _check_cli(run_cli, path)


def test_inspect_caps_huge_value_names(
    tmp_path: Path, run_cli: Callable[..., object], sample_path: Callable[[str], Path]
) -> None:
    path = _rename_input(sample_path, tmp_path, "p" * 60_000)
    result = run_cli("inspect", path)
    # Cut by parekit (text, ellipsis, original length), whatever the console's width does to it.
    assert re.search(r"p…\(60,\d{3}characters\)", re.sub(r"\s", "", result.output))  # type: ignore[attr-defined]
    _check_cli(run_cli, path)
