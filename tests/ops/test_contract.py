"""The op contract, checked for every registered op, and the op registry.

Every op is dual form (a TensorRT plugin identity and a model-local function of standard ops), has a
documented schema, and its body matches its NumPy reference on the op's example inputs, both under ONNX
Runtime and under ``onnx.reference.ReferenceEvaluator`` (see ``harness.py``). The layout rules of
``parekit/ops`` are checked here too: one mask dtype set, dtype sets from ``ops/dtypes.py`` only, no op
module importing another op module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import parekit.ops
from parekit.errors import ParekitError
from parekit.ops import PAREKIT_DOMAIN, PLUGIN_NAMESPACE, OpDef, UnknownOpError, all_ops, get_op, op_names
from parekit.ops.dtypes import MASK_DTYPES
from parekit.ops.kv_window import KV_WINDOW
from parekit.ops.kv_window_mask import KV_WINDOW_MASK
from parekit.ops.registry import register_op

from .harness import assert_body_matches_reference

RNG = np.random.default_rng(0)
OPS_DIR = Path(parekit.ops.__file__).parent

# -- registry ----------------------------------------------------------------------------------------


def test_registry_lookup():
    assert get_op(KV_WINDOW.op_type) is KV_WINDOW
    assert get_op(KV_WINDOW_MASK.op_type) is KV_WINDOW_MASK
    assert KV_WINDOW.op_type in op_names()
    assert tuple(op.op_type for op in all_ops()) == op_names()


@pytest.mark.parametrize(
    "wrong", [KV_WINDOW.op_type.replace("ow", "w"), KV_WINDOW.op_type.lower()], ids=["typo", "lowercase"]
)
def test_registry_did_you_mean(wrong):
    with pytest.raises(UnknownOpError) as info:
        get_op(wrong)
    assert f"unknown parekit op '{wrong}'" in info.value.message
    assert info.value.note is not None and f"did you mean '{KV_WINDOW.op_type}'" in info.value.note
    assert isinstance(info.value, ParekitError) and isinstance(info.value, LookupError)


def test_registry_without_suggestion_lists_known_ops():
    pattern = rf"known ops: (\w+, )*{re.escape(KV_WINDOW.op_type)}, {re.escape(KV_WINDOW_MASK.op_type)}"
    with pytest.raises(UnknownOpError, match=pattern):
        get_op("TotallyDifferent")


def test_register_refuses_duplicates_and_unlisted_modules():
    with pytest.raises(ValueError, match="registered twice"):
        register_op(type(KV_WINDOW)())

    class Stray(type(KV_WINDOW)):  # type: ignore[misc]
        op_type = "StrayOp"

    with pytest.raises(ValueError, match="add it to _OP_MODULES in parekit/ops/registry.py"):
        register_op(Stray())


# -- the contract, for every registered op ------------------------------------------------------------


@pytest.mark.parametrize("op", all_ops(), ids=lambda op: op.op_type)
def test_every_op_is_dual_form(op: OpDef):
    # TensorRT plugin identity: name = op type, a version, namespace parekit, one field per attribute.
    plugin = op.plugin
    assert plugin.name == op.op_type
    assert plugin.version and plugin.namespace == PLUGIN_NAMESPACE
    assert [f.name for f in plugin.fields] == [a.name for a in op.attributes]
    assert all(f.type in {"kINT32", "kFLOAT32", "kCHAR"} for f in plugin.fields)
    # A function of the same name in domain parekit, built from standard ops only.
    function = op.function(18)
    assert (function.domain, function.name) == (PAREKIT_DOMAIN, op.op_type)
    assert len(function) > 0 and all(node.domain == "" for node in function)
    assert [a.name for a in function.attributes.values()] == [a.name for a in op.attributes]
    # TopK is allowed (TensorRT parses it for K < 3840; ops that use it cap K by an attribute maximum).
    banned = {"ScatterElements", "ScatterND", "NonZero", "Loop", "If"}
    assert not banned & {node.op_type for node in function}, "keep bodies TensorRT-friendly and static"
    # Documented schema and a NumPy reference that the body matches on a small example, under ONNX
    # Runtime and under the ONNX reference evaluator.
    assert op.doc and all(spec.shape for spec in (*op.inputs, *op.outputs))
    assert all(a.doc for a in op.attributes)
    rtol, atol = op.example_tolerance  # float math (softmax, weighted means) is not bit-exact
    assert_body_matches_reference(op, _example_inputs(op), rtol=rtol, atol=atol)


def _example_inputs(op: OpDef) -> list[np.ndarray]:
    """The op's own ``example_inputs()`` where it has shape-coupled inputs; else a small input per
    declared input: rank from the spec, first allowed dtype that NumPy has."""
    own = op.example_inputs()
    if own is not None:
        return own
    arrays = []
    for spec in op.inputs:
        assert spec.rank is not None, f"{op.op_type}.{spec.name}: give a rank or extend this test"
        dtype = next(d for d in (ir.DataType.FLOAT, ir.DataType.INT64, ir.DataType.BOOL) if d in spec.dtypes)
        shape = tuple(range(2, 2 + spec.rank))
        arrays.append(RNG.standard_normal(shape).astype(dtype.numpy()))
    return arrays


# -- layout rules of parekit/ops ----------------------------------------------------------------------


def test_every_position_mask_accepts_the_one_mask_dtype_set():
    """A 2-D attention mask over positions is the same thing to every op: one dtype set."""
    masks = [
        (op.op_type, spec.name)
        for op in all_ops()
        for spec in (*op.inputs, *op.outputs)
        if "mask" in spec.name and spec.rank == 2
    ]
    assert len(masks) >= 4, masks  # KvWindowMask in/out, KvMaskRemap in/out, KvEvict* mask
    for op in all_ops():
        for spec in (*op.inputs, *op.outputs):
            if "mask" in spec.name and spec.rank == 2:
                assert spec.dtypes == MASK_DTYPES, f"{op.op_type}.{spec.name}"


def _op_modules() -> set[str]:
    return {type(op).__module__ for op in all_ops()}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


@pytest.mark.parametrize("path", sorted(OPS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_op_module_imports_another_op_module(path: Path):
    """Shared constants and helpers live in the infrastructure or family modules, not in an op's module."""
    own = f"parekit.ops.{path.stem}"
    others = (_imported_modules(path) & _op_modules()) - {own}
    assert not others, f"{path.name} imports op module(s) {sorted(others)}: move what it needs out of them"


@pytest.mark.parametrize("path", sorted(OPS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_dtype_sets_are_defined_only_in_dtypes(path: Path):
    if path.name == "dtypes.py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "frozenset":
            assert "DataType" not in ast.unparse(node), f"{path.name}:{node.lineno}: define it in ops/dtypes.py"
