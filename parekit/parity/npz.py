""".npz files of arrays: feeds and golden outputs.

Layout: a file holds one or more *sets* of arrays. Keys are ``"<i>/<name>"`` (``"0/input_ids"``,
``"0/attention_mask"``, ``"1/input_ids"``…), set ``i`` holding the arrays of one model run. A file
whose keys are plain names (no ``"<i>/"`` prefix) is read as a single set, so
``np.savez("feeds.npz", input_ids=...)`` works too. :func:`save_npz` writes the indexed form for a
list of sets and the plain form for one mapping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from parekit.atomic import atomic_output
from parekit.backends.specs import TensorSpec
from parekit.errors import DataError

__all__ = ["load_feeds_npz", "load_npz", "save_npz"]

_SET_KEY = re.compile(r"^(\d+)/(.+)$")




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
    try:
        with atomic_output(dest) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **flat)  # type: ignore[arg-type]
    except OSError as exc:
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
