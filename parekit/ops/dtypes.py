"""Element-type sets of the parekit ops: the one place op schemas take their allowed dtypes from.

Op modules import these sets from here, never from one another, so that two ops that accept "a mask" or
"a float32 cache" accept the same types.
"""

from __future__ import annotations

from typing import Final

import onnx_ir as ir

__all__ = ["BOOL", "F16", "F32", "FLOAT_DTYPES", "I8", "IDS_DTYPES", "MASK_DTYPES"]

FLOAT_DTYPES: Final = frozenset(
    {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}
)
"""Floating-point element types."""

F32: Final = frozenset({ir.DataType.FLOAT})
"""float32 only."""

F16: Final = frozenset({ir.DataType.FLOAT16})
"""float16 only."""

I8: Final = frozenset({ir.DataType.INT8})
"""int8 only."""

BOOL: Final = frozenset({ir.DataType.BOOL})
"""bool only (boolean attention masks: True = visible)."""

IDS_DTYPES: Final = frozenset({ir.DataType.INT64, ir.DataType.INT32})
"""Token-id element types."""

MASK_DTYPES: Final = FLOAT_DTYPES | {ir.DataType.BOOL, ir.DataType.INT32, ir.DataType.INT64}
"""Element types of a 2-D attention mask over positions (``[B, T]``; nonzero = visible): the exporters'
int64 and the bool, int32 and float masks other graphs use. Every op that reads such a mask accepts these."""
