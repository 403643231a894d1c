"""Every native kernel, run by ONNX Runtime through libparekit_ort.so, against the function body and the
NumPy reference, over the cases of ``tests/native/cases_*.py`` (the ctest suite runs the same cases on
the kernels directly).

* kernel (ORT + library) == reference within the case's tolerance (bit-exact for data movement);
* kernel == function body (ORT without the library): exact where the case is exact, else within
  ``max(case tolerance, 1e-5)``;
* the library really ran: ORT's profile lists the parekit node itself, not the body's standard ops.
"""

from __future__ import annotations

import pytest

from parekit.native import describe_library
from parekit.ops import all_ops

from .cases import all_cases, reference_outputs
from .ort_harness import assert_close, profiled_op_types, run_case

CASES = [c for c in all_cases() if c.runs_in_ort]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_matches_reference_and_body(case, native_library):
    want = reference_outputs(case)
    kernel = run_case(case, native_library)
    assert_close(kernel, want, case.tol, f"{case.id} kernel vs reference")
    body = run_case(case, None)
    tol = case.tol if case.tol == (0.0, 0.0) else (max(case.tol[0], 1e-5), max(case.tol[1], 1e-5))
    assert_close(kernel, body, tol, f"{case.id} kernel vs body")


FIRST_CASE = {}
for _case in CASES:
    FIRST_CASE.setdefault(_case.op.op_type, _case)


@pytest.mark.parametrize("op_type", sorted(FIRST_CASE))
def test_library_kernel_is_what_runs(op_type, native_library):
    case = FIRST_CASE[op_type]
    assert profiled_op_types(case, native_library) == [op_type]
    body_ops = profiled_op_types(case, None)
    assert op_type not in body_ops and body_ops, "without the library ORT runs the inlined body"


def test_library_describes_every_registered_op(native_library):
    described = {op["name"]: op for op in describe_library(native_library)["ops"]}
    for op in all_ops():
        if op.op_type not in described:
            continue  # covered by test_every_op_has_a_kernel once all kernels exist
        d = described[op.op_type]
        assert d["version"] == op.plugin_version
        assert d["inputs"] == [p.name for p in op.inputs]
        assert d["outputs"] == [p.name for p in op.outputs]
        assert [(a["name"], a["kind"]) for a in d["attributes"]] == [(a.name, a.kind) for a in op.attributes]
        for a, spec in zip(d["attributes"], op.attributes, strict=True):
            assert a["default"] == pytest.approx(spec.default), f"{op.op_type}.{a['name']} default"
        # every dtype binding of the kernel is one the OpDef allows
        for variant in d["variants"]:
            for dtype, param in zip(variant["inputs"], op.inputs, strict=True):
                assert dtype in {_np_name(t) for t in param.dtypes}, (
                    f"{op.op_type} input {param.name}: {dtype}"
                )


def test_every_op_has_a_kernel(native_library):
    described = {op["name"] for op in describe_library(native_library)["ops"]}
    missing = sorted(op.op_type for op in all_ops() if op.op_type not in described)
    assert not missing, f"ops without a native kernel: {missing}"


def test_every_kernel_has_ort_cases():
    assert set(FIRST_CASE) == {c.op.op_type for c in all_cases()}


def _np_name(dtype) -> str:
    name = dtype.name.lower()
    return {"float": "float32", "double": "float64"}.get(name, name)
