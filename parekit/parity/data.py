"""Feeds for parity checks and benchmarks: seeded random arrays sized from a model's input specs.

Text feeds come from :mod:`parekit.data` (prose) and a tokenizer; ``.npz`` files from
:mod:`parekit.parity.npz`; index bounds of integer inputs from :mod:`parekit.analysis.input_bounds`.
Their functions are re-exported here too, where earlier callers import them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from parekit.analysis.dims import dim_role
from parekit.analysis.input_bounds import int_input_bounds
from parekit.backends.specs import TensorSpec
from parekit.data.prose import prose_paragraphs
from parekit.errors import DataError
from parekit.parity.npz import load_feeds_npz, load_npz, save_npz

if TYPE_CHECKING:
    import onnx_ir as ir

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DIMS",
    "int_input_bounds",
    "load_feeds_npz",
    "load_npz",
    "prose_paragraphs",
    "random_feeds",
    "save_npz",
]

DEFAULT_DIMS: dict[str, int] = {"batch": 2, "seq": 16, "past": 0}
"""Sizes of the usual symbolic dims; ``total`` defaults to ``past + seq``."""




def random_feeds(
    input_specs: Sequence[TensorSpec],
    *,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    int_ranges: Mapping[str, tuple[int, int]] | None = None,
    model: ir.Model | None = None,
) -> dict[str, np.ndarray]:
    """Make one seeded set of random feeds for a model's inputs.

    Symbolic dims are sized from ``dims``, then from :data:`DEFAULT_DIMS` (``batch=2``,
    ``seq=16``, ``past=0``, ``total=past+seq``; common spellings such as ``batch_size`` or
    ``sequence_length`` map to these). A ``dims`` key ``"<input>:<axis>"`` sizes one axis of one
    input, for unnamed dims. Values:

    - ``attention_mask``: ones;
    - ``position_ids``: ``past, past+1, …`` along the last axis;
    - other integer inputs: uniform in ``int_ranges[name]`` (``[low, high)``), else in
      ``[0, bound)`` with ``bound`` from :func:`int_input_bounds` when ``model`` is given
      (e.g. the vocabulary size for ``input_ids``), else ``[0, 2)``;
    - booleans: random; floats: standard normal.

    Args:
        input_specs: The model's inputs (e.g. ``OrtRunner.input_specs``).
        dims: Sizes of symbolic dims by name.
        seed: Seed of the random generator; the same seed gives the same feeds.
        int_ranges: ``[low, high)`` value ranges for integer inputs, by input name.
        model: The model, to find index bounds of integer inputs.

    Returns:
        Arrays by input name, with the specs' dtypes.

    Raises:
        DataError: A symbolic dim has no size, a range is empty, or a dtype is unsupported.
    """
    rng = np.random.default_rng(seed)
    sizes = _dim_sizes(dims)
    ranges = dict(int_ranges or {})
    bounds = int_input_bounds(model) if model is not None else {}
    past = sizes.get("past", 0)

    shapes = {spec.name: _resolve_shape(spec, sizes, dims or {}) for spec in input_specs}
    unresolved = [shape for shape in shapes.values() if isinstance(shape, str)]
    if unresolved:
        raise DataError(
            f"cannot size inputs: {'; '.join(unresolved)}",
            note="set the sizes with dims={'name': size} (CLI: --dim name=size); "
            "for an unnamed dim use the key '<input>:<axis>'",
        )

    feeds: dict[str, np.ndarray] = {}
    for spec in input_specs:
        shape = shapes[spec.name]
        assert not isinstance(shape, str)
        feeds[spec.name] = _random_array(spec, shape, rng, ranges.get(spec.name), bounds.get(spec.name), past)
    return feeds


def _dim_sizes(dims: Mapping[str, int] | None) -> dict[str, int]:
    sizes = dict(DEFAULT_DIMS)
    for name, value in (dims or {}).items():
        sizes[dim_role(name) or name] = int(value)
        sizes[name] = int(value)
    sizes.setdefault("total", sizes["past"] + sizes["seq"])
    return sizes


def _resolve_shape(
    spec: TensorSpec, sizes: Mapping[str, int], dims: Mapping[str, int]
) -> tuple[int, ...] | str:
    """The concrete shape, or a text naming the dims that could not be sized."""
    if spec.shape is None:
        return f"'{spec.name}' has no shape in the graph"
    shape: list[int] = []
    missing: list[str] = []
    for axis, dim in enumerate(spec.shape):
        per_axis = dims.get(f"{spec.name}:{axis}")
        if per_axis is not None:
            shape.append(int(per_axis))
        elif isinstance(dim, int):
            shape.append(dim)
        elif isinstance(dim, str) and (dim in sizes or dim_role(dim) in sizes):
            shape.append(sizes[dim] if dim in sizes else sizes[dim_role(dim)])  # type: ignore[index]
        else:
            missing.append(f"'{dim}'" if isinstance(dim, str) else f"unnamed axis {axis}")
    if missing:
        return f"'{spec.name}' dims {', '.join(missing)}"
    return tuple(shape)


def _random_array(
    spec: TensorSpec,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    int_range: tuple[int, int] | None,
    bound: int | None,
    past: int,
) -> np.ndarray:
    dtype = spec.dtype
    lowered = spec.name.lower()
    if lowered.endswith("attention_mask") and (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        return np.ones(shape, dtype=dtype)
    if lowered.endswith("position_ids") and np.issubdtype(dtype, np.integer):
        length = shape[-1] if shape else 1
        return np.broadcast_to(np.arange(past, past + length, dtype=dtype), shape).copy()
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        low, high = int_range if int_range is not None else (0, bound if bound is not None else 2)
        if high <= low:
            raise DataError(f"empty value range [{low}, {high}) for integer input '{spec.name}'")
        info = np.iinfo(dtype)
        if low < info.min or high - 1 > info.max:
            raise DataError(f"value range [{low}, {high}) does not fit {dtype} input '{spec.name}'")
        return rng.integers(low, high, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.floating) or dtype.kind == "V" or str(dtype) == "bfloat16":
        return rng.standard_normal(shape).astype(dtype)
    raise DataError(f"cannot make random data for input '{spec.name}' of type {dtype}")
