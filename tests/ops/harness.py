"""Test harness for parekit ops: one-node models, run by ONNX Runtime and by the ONNX reference evaluator.

The model is built through :meth:`OpDef.make_node` (the same path passes use), with every input dim
symbolic so that the body is exercised with runtime shapes, then serialized (ir_version 10), checked
with ``onnx.checker.check_model(full_check=True)`` and run twice:

* in ONNX Runtime with graph optimizations off (the function is inlined, nothing is folded);
* in ``onnx.reference.ReferenceEvaluator``, the spec's own evaluator, on the model with the function
  inlined (``onnx.inliner``): it runs the body's standard ops one by one with the spec's semantics.
  ONNX Runtime is lenient where the spec is not (it takes a rank-1 ``CumSum`` axis, for one); TensorRT
  and other runtimes are entitled to reject what the spec does not allow, so a body must satisfy both.

Every call of :func:`assert_body_matches_reference` runs both, so every body-vs-reference sweep in
``tests/ops`` (the contract test's example inputs and each op file's shape/dtype/attribute sweeps) is
checked under the evaluator too: no subset.

:func:`assert_body_matches_reference` compares both runs with the NumPy reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx.inliner
import onnx_ir as ir
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from parekit.ops import OpDef

IR_VERSION = 10
DEFAULT_OPSET = 18


def build_model(
    op: OpDef,
    inputs: Sequence[np.ndarray],
    attributes: Mapping[str, Any] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    static_shapes: bool = False,
) -> ir.Model:
    """Builds a one-node model ``inputs -> op -> outputs`` with the op's function attached.

    Args:
        op: The op.
        inputs: Example inputs; they fix the graph inputs' dtypes (and ranks).
        attributes: Node attributes (defaults filled by ``make_node``).
        opset: Standard-domain opset of the model.
        static_shapes: Declare the inputs' exact shapes instead of symbolic dims.

    Returns:
        The model (onnx_ir).
    """
    opdef = op
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


class GatherElements(OpRun):
    """``GatherElements`` as the spec defines it (``np.take_along_axis``, negative indices wrap once).

    Replaces onnx 1.23's own implementation, which goes through ``np.choose`` (fewer than 64 choices in
    NumPy 2) and, past that, a fallback that returns wrong shapes: a [1, 197] gather fails. Every other op
    runs on the evaluator's own implementation.
    """

    op_domain = ""

    def _run(self, data, indices, axis=0):  # type: ignore[no-untyped-def]
        wrapped = np.where(indices < 0, indices + data.shape[axis], indices)
        return (np.take_along_axis(data, wrapped, axis=axis),)


def run_reference_evaluator(model: ir.Model, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Runs ``model`` in ``onnx.reference.ReferenceEvaluator``: the op's function body, node by node.

    The model-local function is inlined first (``onnx.inliner``, which also resolves the body's
    ``ref_attr_name`` reads from the node's attributes), so the evaluator sees only the body's standard
    ops, each run by the evaluator's own implementation except :class:`GatherElements`.
    """
    proto = onnx.inliner.inline_local_functions(check_model(model))
    assert not proto.functions and all(node.domain in ("", "ai.onnx") for node in proto.graph.node), (
        "after inlining, the graph must hold the body's standard ops only"
    )
    evaluator = ReferenceEvaluator(proto, new_ops=[GatherElements])
    feeds = {value.name: array for value, array in zip(model.graph.inputs, inputs, strict=True)}
    return [np.asarray(out) for out in evaluator.run(None, feeds)]


def run_op(
    op: OpDef,
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
    op: OpDef,
    inputs: Sequence[np.ndarray],
    attributes: Mapping[str, Any] | None = None,
    rtol: float = 0.0,
    atol: float = 0.0,
    *,
    opset: int = DEFAULT_OPSET,
    static_shapes: bool = False,
    evaluator: bool = True,
) -> list[np.ndarray]:
    """Asserts that the function body equals the NumPy reference (shapes, dtypes, values), run by ONNX
    Runtime and by the ONNX reference evaluator.

    Args:
        op: The op.
        inputs: Input arrays.
        attributes: Node attributes.
        rtol: Relative tolerance (0 = exact, the right default for data-movement ops).
        atol: Absolute tolerance.
        opset: Standard-domain opset of the test model.
        static_shapes: Declare static input shapes instead of symbolic dims.
        evaluator: Also run the body in ``onnx.reference.ReferenceEvaluator`` (only a test that runs
            the same body on a representative subset elsewhere may turn it off, and says so).

    Returns:
        The ORT outputs.
    """
    opdef = op
    model = build_model(opdef, inputs, attributes, opset=opset, static_shapes=static_shapes)
    want = opdef.run_reference(inputs, attributes)
    got = run_model(model, inputs)
    _assert_outputs_match(f"{opdef.op_type} (ONNX Runtime)", got, want, attributes, rtol, atol)
    if evaluator:
        spec = run_reference_evaluator(model, inputs)
        _assert_outputs_match(f"{opdef.op_type} (onnx.reference)", spec, want, attributes, rtol, atol)
    return got


def _assert_outputs_match(
    who: str,
    got: Sequence[np.ndarray],
    want: Sequence[np.ndarray],
    attributes: Mapping[str, Any] | None,
    rtol: float,
    atol: float,
) -> None:
    assert len(got) == len(want), f"{who}: {len(got)} outputs, the reference has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        where = f"{who} output {i} (attributes {dict(attributes or {})})"
        assert g.dtype == w.dtype, f"{where}: dtype {g.dtype} != reference {w.dtype}"
        assert g.shape == w.shape, f"{where}: shape {g.shape} != reference {w.shape}"
        if (rtol == 0.0 and atol == 0.0) or not np.issubdtype(w.dtype, np.inexact):
            np.testing.assert_array_equal(g, w, err_msg=where)
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=where)


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
