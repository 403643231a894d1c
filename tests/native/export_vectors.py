"""Writes the native test cases as vectors for the C++ runner ``parekit_kernel_tests``.

    python -m tests.native.export_vectors DIR

One folder per case, ``DIR/<Op>/<case>/``, holding ``case.txt`` (format: ``native/tests/kernel_tests.cpp``),
``in<i>.npy`` and, unless the case expects an error, ``out<i>.npy`` from the NumPy reference. DIR is
replaced as a whole (written to a sibling temp folder first), so a half-written export never remains.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.native.cases import Case, all_cases, bf16_bits, reference_outputs

_DTYPE_NAMES = {
    np.dtype(np.float32): "float32",
    np.dtype(np.float64): "float64",
    np.dtype(np.float16): "float16",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.bool_): "bool",
}


def _dtype_name(array: np.ndarray) -> str:
    if array.dtype.name == "bfloat16":
        return "bfloat16"
    try:
        return _DTYPE_NAMES[array.dtype]
    except KeyError:
        raise ValueError(f"no native dtype for {array.dtype}") from None


def _save(folder: Path, stem: str, array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    name = _dtype_name(array)
    np.save(folder / f"{stem}.npy", bf16_bits(array) if name == "bfloat16" else array, allow_pickle=False)
    return f"{stem}.npy {name}"


def write_case(case: Case, folder: Path) -> None:
    folder.mkdir(parents=True)
    lines = [f"op {case.op.op_type}"]
    for key, value in case.attrs.items():
        if isinstance(value, str):  # runs to the end of the line (native/tests/kernel_tests.cpp)
            if not value or "\n" in value or value != value.strip():
                raise ValueError(f"{case.id}: string attribute {key}={value!r} cannot be written to case.txt")
            lines.append(f"attr {key} string {value}")
        elif isinstance(value, float):
            lines.append(f"attr {key} float {value!r}")
        else:
            lines.append(f"attr {key} int {int(value)}")
    for i, array in enumerate(case.inputs):
        lines.append("input " + _save(folder, f"in{i}", np.asarray(array)))
    if case.error is not None:
        lines.append(f"expect_error {case.error}")
    else:
        for i, array in enumerate(reference_outputs(case)):
            lines.append("output " + _save(folder, f"out{i}", array))
        lines.append(f"tolerance {case.tol[0]!r} {case.tol[1]!r}")
    (folder / "case.txt").write_text("\n".join(lines) + "\n")


def export(root: Path) -> int:
    root = root.resolve()
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        count = 0
        for case in all_cases():
            write_case(case, staging / case.op.op_type / case.name)
            count += 1
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return count


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.native.export_vectors DIR", file=sys.stderr)
        return 2
    count = export(Path(argv[0]))
    print(f"export_vectors: {count} cases -> {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
