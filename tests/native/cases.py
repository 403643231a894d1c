"""Native-kernel test cases: op, inputs, attributes, tolerance; expected outputs come from the op's NumPy
reference (``OpDef.reference``, the oracle).

The same cases drive two suites:

* ``tests/native/export_vectors.py`` writes them (inputs and reference outputs as ``.npy`` plus a
  ``case.txt``) for the C++ ctest runner ``parekit_kernel_tests`` (``native/tests``);
* ``tests/native/test_ops_native.py`` runs each case as a one-node model in ONNX Runtime with the
  library (the kernel) and without it (the function body) and compares both with the reference.

Each op family has its own module ``cases_<family>.py`` with a ``cases()`` generator; ``CASE_MODULES``
lists them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parekit.ops import OpDef

__all__ = ["CASE_MODULES", "Case", "all_cases", "bf16_bits", "reference_outputs"]

CASE_MODULES: tuple[str, ...] = (
    # KV window
    "tests.native.cases_kv_window",
    # KV quantization
    "tests.native.cases_kv_quant",
    # KV eviction, slot masks, attention probabilities
    "tests.native.cases_kv_evict",
    # token reduction
    "tests.native.cases_tokens",
    # early exit
    "tests.native.cases_exit",
)


@dataclass
class Case:
    """One kernel test case.

    Attributes:
        op: The op.
        name: Unique within the op; a folder name (letters, digits, ``_``, ``-``, ``.``).
        inputs: Input arrays (NumPy dtypes; see ``bf16`` for bfloat16).
        attrs: Node attributes (absent ones take the op's defaults).
        tol: ``(rtol, atol)`` for float outputs; ``(0, 0)`` = bit-exact. Integer and bool outputs are
            always compared exactly.
        bf16: Indexes of inputs that are bfloat16 (given as ``ml_dtypes.bfloat16`` arrays). Such cases
            run in the C++ runner only: ONNX Runtime's Python API cannot feed bfloat16.
        error: Instead of outputs, the kernel must refuse the inputs with an error containing this text.
        ort: Run this case in the ONNX Runtime suite too (default: yes unless bfloat16).
    """

    op: OpDef
    name: str
    inputs: Sequence[np.ndarray]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    tol: tuple[float, float] = (0.0, 0.0)
    bf16: tuple[int, ...] = ()
    error: str | None = None
    ort: bool | None = None

    @property
    def id(self) -> str:
        return f"{self.op.op_type}/{self.name}"

    @property
    def runs_in_ort(self) -> bool:
        if self.ort is not None:
            return self.ort
        return not self.bf16 and self.error is None


def reference_outputs(case: Case) -> list[np.ndarray]:
    """The reference's outputs for a case (attributes validated, defaults filled, like ``make_node``)."""
    return [
        np.asarray(o) for o in case.op.run_reference([np.asarray(x) for x in case.inputs], dict(case.attrs))
    ]


def bf16_bits(array: np.ndarray) -> np.ndarray:
    """bfloat16 values as their uint16 bit patterns (the .npy form the C++ runner reads)."""
    return np.asarray(array).view(np.uint16)


def all_cases() -> Iterator[Case]:
    """Every case of every module in ``CASE_MODULES``; names are checked to be unique per op."""
    seen: set[str] = set()
    for module in CASE_MODULES:
        for case in importlib.import_module(module).cases():
            if case.id in seen:
                raise ValueError(f"duplicate native test case {case.id}")
            seen.add(case.id)
            yield case
