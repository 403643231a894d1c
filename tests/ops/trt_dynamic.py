"""Build an ONNX file under TensorRT-RTX with one dynamic optimization profile given per dim *name*.

``harness.tensorrt_build`` gives every dynamic dim the range ``1 … size`` (min = 1, opt = max): a body
that is only buildable where two independent dims happen to agree at those two points passes it. TensorRT
checks every shape relation at each profile point (kMIN, kOPT, kMAX) separately, so the tests here name
``min < opt < max`` for each dim, the way ``parekit build`` derives profiles from the input dim names
(``batch``, ``seq``, ``past``, ``total``, ``q_tokens``, ``q_groups``, ``res_tokens``). The network is
strongly typed, as ``parekit build`` creates it. Runs in a subprocess: a parser abort must not take the
test session down.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import onnx
import onnx_ir as ir

from parekit.ops import OpDef

from .harness import IR_VERSION, check_model

__all__ = ["Profile", "build_dynamic", "input_shapes", "one_node_file"]

Profile = Mapping[str, tuple[int, int, int]]
"""Dim name → (min, opt, max)."""

_BUILD = """
import json, sys, tensorrt_rtx as trt
shapes = json.loads(sys.argv[2])
logger = trt.Logger(trt.Logger.ERROR)
builder = trt.Builder(logger)
network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
parser = trt.OnnxParser(network, logger)
if not parser.parse_from_file(sys.argv[1]):
    print("\\n".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    sys.exit(2)
config = builder.create_builder_config()
profile = builder.create_optimization_profile()
for i in range(network.num_inputs):
    t = network.get_input(i)
    if -1 in tuple(t.shape):
        low, opt, high = shapes[t.name]
        profile.set_shape(t.name, low, opt, high)
config.add_optimization_profile(profile)
sys.exit(0 if builder.build_serialized_network(network, config) else 3)
"""


def input_shapes(path: str, profile: Profile) -> dict[str, list[list[int]]]:
    """``input name → [min, opt, max]`` shapes: each named dim from ``profile``, static dims as they are.

    Raises:
        KeyError: a dynamic dim whose name the profile does not give (the test must name every one).
    """
    model = onnx.load(path, load_external_data=False)
    shapes: dict[str, list[list[int]]] = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        points: list[list[int]] = [[], [], []]
        for d in dims:
            sizes = (d.dim_value,) * 3 if d.HasField("dim_value") else profile[d.dim_param]
            for point, size in zip(points, sizes, strict=True):
                point.append(int(size))
        shapes[value.name] = points
    return shapes


def build_dynamic(path: str, profile: Profile, timeout: int = 900) -> tuple[int, str]:
    """Parses and builds ``path`` with one profile from ``profile``; returns (exit code, output).

    Exit 0 = built, 2 = parse errors (printed), 3 = ``build_serialized_network`` failed (TensorRT's
    error is in the output).
    """
    for name, (low, opt, high) in profile.items():
        assert low <= opt <= high, f"profile dim {name}: min {low}, opt {opt}, max {high} out of order"
    run = subprocess.run(
        [sys.executable, "-c", _BUILD, path, json.dumps(input_shapes(path, profile))],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return run.returncode, run.stdout + run.stderr


def one_node_file(
    path: str,
    op: OpDef,
    inputs: Sequence[tuple[ir.DataType, Sequence[int | str]]],
    attributes: Mapping[str, Any] | None = None,
    opset: int = 18,
) -> str:
    """Writes a checked one-node model ``inputs -> op -> outputs`` whose input dims carry the given names
    (the kv passes' names: ``batch``, ``q_tokens``, ``past`` …) or static sizes; returns ``path``."""
    values = [
        ir.Value(name=f"in{i}_{spec.name}", type=ir.TensorType(dtype), shape=ir.Shape(list(shape)))
        for i, (spec, (dtype, shape)) in enumerate(zip(op.inputs, inputs, strict=False))
    ]
    graph = ir.Graph(values, [], nodes=[], opset_imports={"": opset}, name=f"dyn_{op.op_type}")
    model = ir.Model(graph, ir_version=IR_VERSION, producer_name="parekit-tests")
    node = op.make_node(model, values, attributes=attributes)
    graph.append(node)
    for i, out in enumerate(node.outputs):
        out.name = f"out{i}"
        graph.outputs.append(out)
    with open(path, "wb") as handle:
        handle.write(check_model(model).SerializeToString())
    return path
