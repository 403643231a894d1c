"""Test harness for parekit ops: one-node models, run under ONNX Runtime, compared with the NumPy reference.

The model is built through :meth:`OpDef.make_node` (the same path passes use), with every input dim
symbolic so that the body is exercised with runtime shapes, then serialized (ir_version 10), checked
with ``onnx.checker.check_model(full_check=True)`` and run in ONNX Runtime with graph optimizations
off (the function is inlined, nothing is folded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from parekit.ops import OpDef, get_op

IR_VERSION = 10
DEFAULT_OPSET = 18


def _resolve(op: OpDef | str) -> OpDef:
    return get_op(op) if isinstance(op, str) else op


def build_model(
    op: OpDef | str,
    inputs: Sequence[np.ndarray],
    attributes: Mapping[str, Any] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    static_shapes: bool = False,
) -> ir.Model:
    """Builds a one-node model ``inputs -> op -> outputs`` with the op's function attached.

    Args:
        op: The op or its op type.
        inputs: Example inputs; they fix the graph inputs' dtypes (and ranks).
        attributes: Node attributes (defaults filled by ``make_node``).
        opset: Standard-domain opset of the model.
        static_shapes: Declare the inputs' exact shapes instead of symbolic dims.

    Returns:
        The model (onnx_ir).
    """
    opdef = _resolve(op)
    graph_inputs = []
    for i, (spec, array) in enumerate(zip(opdef.inputs, inputs, strict=False)):
        dims = list(array.shape) if static_shapes else [f"{spec.name}_d{k}" for k in range(array.ndim)]
        graph_inputs.append(
            ir.Value(
                name=f"in{i}_{spec.name}",
                type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                shape=ir.Shape(dims),
            )
        )
    graph = ir.Graph(graph_inputs, [], nodes=[], opset_imports={"": opset}, name=f"test_{opdef.op_type}")
    model = ir.Model(graph, ir_version=IR_VERSION, producer_name="parekit-tests")
    node = opdef.make_node(model, graph_inputs, attributes=attributes)
    graph.append(node)
    for i, out in enumerate(node.outputs):
        out.name = f"out{i}"
        graph.outputs.append(out)
    return model


def check_model(model: ir.Model) -> onnx.ModelProto:
    """Serializes ``model`` and runs the ONNX checker with ``full_check=True``; returns the proto."""
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def run_model(model: ir.Model, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Runs ``model`` in ONNX Runtime (CPU, graph optimizations disabled)."""
    proto = check_model(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {value.name: array for value, array in zip(model.graph.inputs, inputs, strict=True)}
    return list(session.run(None, feeds))


def run_op(
    op: OpDef | str,
    inputs: Sequence[np.ndarray],
    attributes: Mapping[str, Any] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    static_shapes: bool = False,
) -> list[np.ndarray]:
    """Builds the one-node model for ``op``, checks it, runs it in ORT and returns its outputs."""
    model = build_model(op, inputs, attributes, opset=opset, static_shapes=static_shapes)
    return run_model(model, inputs)


def assert_body_matches_reference(
    op: OpDef | str,
    inputs: Sequence[np.ndarray],
    attributes: Mapping[str, Any] | None = None,
    rtol: float = 0.0,
    atol: float = 0.0,
    *,
    opset: int = DEFAULT_OPSET,
    static_shapes: bool = False,
) -> list[np.ndarray]:
    """Asserts that the function body (run by ORT) equals the NumPy reference: shapes, dtypes, values.

    Args:
        op: The op or its op type.
        inputs: Input arrays.
        attributes: Node attributes.
        rtol: Relative tolerance (0 = exact, the right default for data-movement ops).
        atol: Absolute tolerance.
        opset: Standard-domain opset of the test model.
        static_shapes: Declare static input shapes instead of symbolic dims.

    Returns:
        The ORT outputs.
    """
    opdef = _resolve(op)
    got = run_op(opdef, inputs, attributes, opset=opset, static_shapes=static_shapes)
    want = opdef.run_reference(inputs, attributes)
    assert len(got) == len(want), f"{opdef.op_type}: {len(got)} outputs from ORT, {len(want)} from reference"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        where = f"{opdef.op_type} output {i} (attributes {dict(attributes or {})})"
        assert g.dtype == w.dtype, f"{where}: dtype {g.dtype} != reference {w.dtype}"
        assert g.shape == w.shape, f"{where}: shape {g.shape} != reference {w.shape}"
        if (rtol == 0.0 and atol == 0.0) or not np.issubdtype(w.dtype, np.inexact):
            np.testing.assert_array_equal(g, w, err_msg=where)
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=where)
    return got


TENSORRT_BUILD = """
import sys, tensorrt_rtx as trt
logger = trt.Logger(trt.Logger.ERROR)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
if not parser.parse_from_file(sys.argv[1]):
    print("\\n".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    sys.exit(2)
config = builder.create_builder_config()
dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
if dynamic:  # one profile: every dynamic dim from 1 to the size given as NAME:AXIS=SIZE (default 8)
    sizes = dict(arg.split("=") for arg in sys.argv[2:])
    profile = builder.create_optimization_profile()
    for t in dynamic:
        shape = tuple(t.shape)
        opt = [int(sizes.get(f"{t.name}:{k}", 8)) if d == -1 else d for k, d in enumerate(shape)]
        profile.set_shape(t.name, [1 if d == -1 else d for d in shape], opt, opt)
    config.add_optimization_profile(profile)
sys.exit(0 if builder.build_serialized_network(network, config) else 3)
"""
"""Parse + build an ONNX file with TensorRT-RTX's CPU-only builder (run it in a subprocess: a parser
abort must not take the test session down). Exit 0 = built, 2 = parse errors (printed), 3 = build failed."""


def tensorrt_build(path: str, *dims: str, timeout: int = 600) -> tuple[int, str]:
    """Runs :data:`TENSORRT_BUILD` on ``path`` in a subprocess; returns (exit code, output)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", TENSORRT_BUILD, path, *dims], capture_output=True, text=True, timeout=timeout
    )
    return run.returncode, run.stdout + run.stderr
