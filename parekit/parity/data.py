"""Data for parity checks and benchmarks: prose text, random feeds, and ``.npz`` files.

``.npz`` layout (feeds and golden outputs alike): a file holds one or more *sets* of arrays.
Keys are ``"<i>/<name>"`` (``"0/input_ids"``, ``"0/attention_mask"``, ``"1/input_ids"``…), set
``i`` holding the arrays of one model run. A file whose keys are plain names (no ``"<i>/"``
prefix) is read as a single set, so ``np.savez("feeds.npz", input_ids=...)`` works too.
:func:`save_npz` writes the indexed form for a list of sets and the plain form for one mapping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parekit.analysis.dims import dim_role
from parekit.backends.save import give_default_mode
from parekit.backends.specs import TensorSpec
from parekit.errors import DataError

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


# Ops through which an integer input keeps its meaning as indices.
_INDEX_PASSTHROUGH = {
    "Cast",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "Identity",
    "Expand",
    "Transpose",
    "Slice",
}

_SET_KEY = re.compile(r"^(\d+)/(.+)$")


# --------------------------------------------------------------------------------------------
# Prose


def prose_paragraphs(n: int | None = None, min_chars: int = 200) -> list[str]:
    """English prose paragraphs from the Python documentation shipped in the standard library.

    The text comes from ``pydoc_data.topics`` (≈ 500 paragraphs of ≥ 200 characters). Topics
    are visited in sorted order; code samples, headings and signature lines are skipped and
    whitespace is collapsed, so the result is the same on every machine with the same Python.

    Args:
        n: How many paragraphs to return (the first ``n``); ``None`` for all.
        min_chars: Shortest paragraph kept, in characters.

    Returns:
        The paragraphs.

    Raises:
        DataError: Fewer than ``n`` paragraphs are available.
    """
    from pydoc_data.topics import topics

    paragraphs: list[str] = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            text = _prose(block)
            if text is not None and len(text) >= min_chars:
                paragraphs.append(text)
    if n is not None:
        if n > len(paragraphs):
            raise DataError(
                f"only {len(paragraphs)} prose paragraphs of at least {min_chars} characters are "
                f"available, {n} were asked for",
                note="lower the count or min_chars",
            )
        paragraphs = paragraphs[:n]
    return paragraphs


def _prose(block: str) -> str | None:
    lines = [line for line in block.split("\n") if line.strip()]
    if not lines:
        return None
    if any(line.lstrip().startswith((">>>", "...")) for line in lines):
        return None  # interactive code sample
    if set(lines[-1].strip()) <= set("*=-~^"):
        return None  # heading with its underline
    text = " ".join(" ".join(lines).split())
    letters = sum(c.isalpha() or c.isspace() for c in text) / len(text)
    if letters < 0.9 or not text.endswith((".", ":")):
        return None  # code, tables, signatures
    return text


# --------------------------------------------------------------------------------------------
# Random feeds


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


def int_input_bounds(model: ir.Model) -> dict[str, int]:
    """Index bounds of integer graph inputs that are used as ``Gather`` indices into a weight.

    An integer input that reaches the indices of a ``Gather`` (possibly through Cast, Reshape,
    Unsqueeze and similar ops) whose data is a constant (an initializer or ``Constant``) gets the
    size of that constant along the gather axis: e.g. ``input_ids`` gets the vocabulary size,
    ``token_type_ids`` the number of token types. The smallest bound wins when there are several.

    Args:
        model: The model.

    Returns:
        Bounds by input name; inputs with no such use are absent.
    """
    bounds: dict[str, int] = {}
    for value in model.graph.inputs:
        if value.dtype is None or not np.issubdtype(np.dtype(value.dtype.numpy()), np.integer):
            continue
        found = [b for b in _gather_bounds(value) if b > 0]
        if found and value.name:
            bounds[value.name] = min(found)
    return bounds


def _gather_bounds(start: ir.Value) -> Iterable[int]:
    seen: set[int] = set()
    stack = [start]
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        for node, index in value.uses():
            if node.op_type == "Gather" and node.domain in ("", "ai.onnx") and index == 1:
                bound = _constant_dim(node.inputs[0], _axis(node))
                if bound is not None:
                    yield bound
            elif node.op_type in _INDEX_PASSTHROUGH and node.domain in ("", "ai.onnx") and index == 0:
                stack.extend(out for out in node.outputs)


def _axis(node: ir.Node) -> int:
    attr = node.attributes.get("axis")
    return int(attr.value) if attr is not None else 0


def _constant_dim(value: ir.Value | None, axis: int) -> int | None:
    if value is None:
        return None
    tensor = value.const_value
    if tensor is None:
        producer = value.producer()
        if producer is not None and producer.op_type == "Constant":
            attr = producer.attributes.get("value")
            tensor = attr.value if attr is not None else None
    if tensor is None:
        return None
    shape = tuple(tensor.shape)
    if not shape or not -len(shape) <= axis < len(shape):
        return None
    dim = shape[axis]
    return dim if isinstance(dim, int) else None


# --------------------------------------------------------------------------------------------
# .npz files


def save_npz(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]]
) -> Path:
    """Write one set (a mapping) or several sets (a sequence of mappings) of arrays to ``.npz``.

    The file is written atomically (temporary file, then rename). See the module docstring for
    the key layout.

    Args:
        path: The destination file (written as given; no ``.npz`` is appended).
        arrays: One mapping (plain keys) or a sequence of mappings (keys ``"<i>/<name>"``).

    Returns:
        The path written.

    Raises:
        DataError: The folder does not exist or the file cannot be written.
    """
    dest = Path(path)
    if isinstance(arrays, Mapping):
        flat = {str(k): np.asarray(v) for k, v in arrays.items()}
    else:
        flat = {f"{i}/{k}": np.asarray(v) for i, group in enumerate(arrays) for k, v in group.items()}
    if not dest.parent.is_dir():
        raise DataError(f"cannot write {dest}: folder {dest.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **flat)  # type: ignore[arg-type]
        give_default_mode(tmp_name)
        os.replace(tmp_name, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise DataError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    return dest


def load_npz(path: str | os.PathLike[str]) -> list[dict[str, np.ndarray]]:
    """Read the sets of arrays of an ``.npz`` file (see the module docstring for the layout).

    Args:
        path: The file.

    Returns:
        The sets, in index order.

    Raises:
        DataError: The file is missing or not a valid ``.npz``, or mixes plain and indexed keys,
            or its set indices are not ``0…n-1``.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: no such file")
    try:
        with np.load(file, allow_pickle=False) as archive:
            items = {key: archive[key] for key in archive.files}
    except Exception as exc:
        raise DataError(f"{file}: not a valid .npz file ({' '.join(str(exc).split())})") from exc
    if not items:
        raise DataError(f"{file}: holds no arrays")
    matches = {key: _SET_KEY.match(key) for key in items}
    indexed = [m for m in matches.values() if m is not None]
    if not indexed:
        return [items]
    if len(indexed) != len(items):
        plain = sorted(k for k, m in matches.items() if m is None)
        raise DataError(
            f"{file}: mixes indexed keys ('0/name') and plain keys ({', '.join(plain[:3])})",
            note="use '<i>/<name>' for every array, or plain names for a single set",
        )
    sets: dict[int, dict[str, np.ndarray]] = {}
    for key, match in matches.items():
        assert match is not None
        sets.setdefault(int(match.group(1)), {})[match.group(2)] = items[key]
    if sorted(sets) != list(range(len(sets))):
        raise DataError(f"{file}: set indices {sorted(sets)} are not 0…{len(sets) - 1}")
    return [sets[i] for i in range(len(sets))]


def load_feeds_npz(
    path: str | os.PathLike[str], input_specs: Sequence[TensorSpec] | None = None
) -> list[dict[str, np.ndarray]]:
    """Read feed sets from an ``.npz`` file and check them against a model's inputs.

    Args:
        path: The file (one set with plain keys, or several with ``"<i>/<name>"`` keys).
        input_specs: The model's inputs; each set must hold every input with its dtype and rank.
            Arrays the model does not take are kept (runners ignore them).

    Returns:
        The feed sets.

    Raises:
        DataError: The file is bad, or a set lacks an input or has a wrong dtype or rank.
    """
    sets = load_npz(path)
    for index, feeds in enumerate(sets):
        where = f"{path}" if len(sets) == 1 else f"{path} set {index}"
        for spec in input_specs or ():
            if spec.name not in feeds:
                raise DataError(
                    f"{where}: no array for input '{spec.name}'",
                    note=f"the file has {', '.join(sorted(feeds))}",
                )
            array = feeds[spec.name]
            if array.dtype != spec.dtype:
                raise DataError(
                    f"{where}: input '{spec.name}' is {array.dtype}, the model expects {spec.dtype}"
                )
            if spec.shape is not None and array.ndim != len(spec.shape):
                raise DataError(
                    f"{where}: input '{spec.name}' has rank {array.ndim}, the model expects {len(spec.shape)}"
                )
    return sets
