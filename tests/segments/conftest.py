"""Fixtures of the segments tests: small models with and without exits, segments directories, feeds.

The torch-free models are the pass harness's (``tests/passes/harness.py``): a post-norm encoder (plus a
masked mean pooling + L2 normalization here, so that it has a sentence-embedding head) and a pre-norm
decoder with an explicit KV cache. Exits come from the real ``early-exit`` pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from passes.harness import clone, optimize

from parekit.backends.ort import OrtRunner
from parekit.ops.exit_gate import EXIT_GATE
from parekit.segments.manifest import write_segments
from parekit.segments.split import EXITS_KEY, split_model


def pooled(model: ir.Model) -> ir.Model:
    """``model`` (a harness encoder) plus ``sentence_embedding [batch, H]``: masked mean pooling, L2 norm."""
    proto = ir.serde.serialize_model(model)
    g, h = proto.graph, onnx.helper
    width = g.output[0].type.tensor_type.shape.dim[2].dim_value
    g.initializer.extend([
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "pool.last"),
        onnx.numpy_helper.from_array(np.array([1], np.int64), "pool.seq"),
        onnx.numpy_helper.from_array(np.array(1e-9, np.float32), "pool.eps"),
    ])
    g.node.extend([
        h.make_node("Cast", ["attention_mask"], ["pool.maskf"], to=onnx.TensorProto.FLOAT, name="pool_cast"),
        h.make_node("Unsqueeze", ["pool.maskf", "pool.last"], ["pool.mask3"], name="pool_unsq"),
        h.make_node("Mul", ["last_hidden_state", "pool.mask3"], ["pool.masked"], name="pool_mul"),
        h.make_node("ReduceSum", ["pool.masked", "pool.seq"], ["pool.sum"], keepdims=0, name="pool_sum"),
        h.make_node("ReduceSum", ["pool.mask3", "pool.seq"], ["pool.count"], keepdims=0, name="pool_count"),
        h.make_node("Max", ["pool.count", "pool.eps"], ["pool.count1"], name="pool_max"),
        h.make_node("Div", ["pool.sum", "pool.count1"], ["pool.mean"], name="pool_div"),
        h.make_node("ReduceL2", ["pool.mean", "pool.last"], ["pool.norm"], keepdims=1, name="pool_l2"),
        h.make_node("Max", ["pool.norm", "pool.eps"], ["pool.norm1"], name="pool_max2"),
        h.make_node("Div", ["pool.mean", "pool.norm1"], ["sentence_embedding"], name="pool_normalize"),
    ])
    g.output.append(h.make_tensor_value_info("sentence_embedding", onnx.TensorProto.FLOAT, ["batch", width]))
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def with_exits(model: ir.Model, layers: Sequence[int], options: str = "threshold=2.0") -> ir.Model:
    """A copy of ``model`` with exits after ``layers`` (the early-exit pass, form=segments)."""
    copy = clone(model)
    optimize(copy, f"early-exit{{layers=[{','.join(map(str, layers))}],form=segments,{options}}}")
    return copy


def set_thresholds(model: ir.Model, by_layer: Mapping[int, float]) -> None:
    """Set the threshold of each exit's gate (the ExitGate node producing ``exit<l>.take``)."""
    meta = json.loads(model.metadata_props[EXITS_KEY])
    takes = {e["take"]: e["layer"] for e in meta["exits"]}
    for node in model.graph:
        if EXIT_GATE.matches(node) and node.outputs[1].name in takes:
            layer = takes[node.outputs[1].name]
            node.attributes["threshold"] = ir.AttrFloat32("threshold", float(by_layer[layer]))


def run_all(model: ir.Model | str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of a model (ORT, optimizations off)."""
    source = model if isinstance(model, ir.Model) else str(model)
    return OrtRunner(source, optimization="disabled").run(feeds)


def recombine(directory: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Oracle: run every segment file in order, each fed from the feeds and earlier segments' outputs."""
    manifest = json.loads((directory / "manifest.json").read_text())
    env = dict(feeds)
    for seg in manifest["segments"]:
        runner = OrtRunner(str(directory / seg["file"]), optimization="disabled")
        env.update(runner.run({io["name"]: env[io["name"]] for io in seg["inputs"]}))
    return {name: env[name] for name in manifest["outputs"]}


@pytest.fixture()
def split_to(tmp_path) -> Callable[..., Path]:
    """``split_to(model, at=None, name="segs") -> Path``: split and write a segments directory under tmp_path."""

    def make(model: ir.Model, at: Sequence[int] | None = None, name: str = "segs") -> Path:
        target = tmp_path / name
        write_segments(split_model(model, at), target, "model.onnx")
        return target

    return make
