"""Turn the CLI's ``--data`` choice into feed dicts (shared by check, bench, calibration).

``text``   English prose from ``pydoc_data.topics``, tokenized by the model's own tokenizer (zoo
           samples); ``random``: seeded random feeds respecting dtypes and index ranges;
``FILE.npz``  feeds saved earlier (``parekit.parity.data.save_npz``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx_ir as ir

from parekit.errors import DataError

logger = logging.getLogger(__name__)

MIN_TEXT_SEQ = 4
"""Fewest tokens per sequence of ``--data text`` (room for a tokenizer's special tokens and some text)."""


def build_feeds(
    model: ir.Model,
    data: str,
    *,
    samples: int,
    batch: int,
    seq: int,
    seed: int = 0,
    dims: dict[str, int] | None = None,
    purpose: str = "eval",
) -> tuple[list[dict[str, np.ndarray]], str]:
    """Feeds for ``model`` and a one-line description of where they came from.

    Args:
        model: the model the feeds are for (the reference, for comparisons).
        data: ``text``, ``random`` or a path to an ``.npz`` file.
        samples: number of texts (``text``) or feed sets (``random``); ignored for files.
        batch: batch size of each feed set.
        seq: sequence length (tokens) of each feed set.
        seed: seed of ``random``.
        dims: extra symbolic-dim values for ``random`` (``--dim NAME=VALUE``).
        purpose: ``eval`` or ``calib``. Calibration text comes from the other end of the corpus
            (and random calibration feeds from other seeds), so a pass is never calibrated on the
            data ``parekit check`` evaluates it on.
    """
    from parekit.backends.specs import specs_from_ir_values
    from parekit.parity import data as pdata

    if data == "text":
        from parekit.frontends import zoo

        if seq < MIN_TEXT_SEQ:
            raise DataError(
                f"--seq {seq}: text feeds need at least {MIN_TEXT_SEQ} tokens per sequence",
                note="a tokenizer's special tokens alone take up to that many",
            )

        count = max(samples, batch)
        from parekit.data import prose_halves

        # evaluation: the first half; calibration: the second half without paragraphs of the first
        evaluation, calibration = prose_halves()
        pool = evaluation if purpose == "eval" else calibration
        if count > len(pool):
            raise DataError(
                f"--{'data' if purpose == 'eval' else 'calib'} text: asked for {count} paragraphs, the prose corpus "
                f"has {len(pool)} for {'evaluation' if purpose == 'eval' else 'calibration'}",
                note="evaluation and calibration use disjoint parts of pydoc_data.topics; lower --samples",
            )
        texts = pool[:count]
        feeds = zoo.text_feeds(model, texts, seq_len=seq, batch=batch)
        where = "first" if purpose == "eval" else "second (first-half repeats left out)"
        return feeds, (
            f"text: {len(feeds) * batch} paragraphs ({where} half of pydoc_data.topics prose), "
            f"batches of {batch}x{seq} tokens"
        )
    if data == "random":
        specs = specs_from_ir_values(model.graph.inputs)
        sets = max(1, samples // max(batch, 1))
        all_dims = {"batch": batch, "seq": seq, **(dims or {})}
        first_seed = seed + (0 if purpose == "eval" else 10_000)  # calibration never sees eval feeds
        feeds = [pdata.random_feeds(specs, dims=all_dims, seed=first_seed + i, model=model) for i in range(sets)]
        return feeds, f"random: {sets} seeded feed set(s) (seeds {first_seed}…{first_seed + sets - 1}), dims {all_dims}"
    path = Path(data)
    if path.suffix != ".npz":
        raise DataError(f"--data '{data}': expected 'text', 'random' or a .npz file of feeds")
    if not path.exists():
        raise DataError(f"--data '{data}': file not found")
    feeds = pdata.load_feeds_npz(path, specs_from_ir_values(model.graph.inputs))
    return feeds, f"file: {path} ({len(feeds)} feed set(s))"


def parse_dims(dims: tuple[str, ...]) -> dict[str, int]:
    """``--dim NAME=VALUE`` items as a mapping; a one-line error for a malformed item.

    Raises:
        DataError: An item is not ``NAME=INTEGER`` with a non-empty name and ``1 <= INTEGER <= MAX_DIM``.
    """
    from parekit.cli.common import MAX_DIM, safe

    out: dict[str, int] = {}
    for item in dims:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        shown = safe(item, limit=60)
        if not sep or not name:
            raise DataError(f"--dim '{shown}': expected NAME=INTEGER (e.g. --dim past=8)")
        if not value.isdigit() or not value.isascii() or len(value) > 9 or not 1 <= int(value) <= MAX_DIM:
            raise DataError(f"--dim '{shown}': the size must be an integer from 1 to {MAX_DIM}")
        out[name] = int(value)
    return out


def check_dims(model: ir.Model, dims: dict[str, int], data: str) -> None:
    """Refuse ``--dim`` names that size nothing in ``model`` (or any ``--dim`` with non-random data).

    A name is known when it is a symbolic dim of an input, a usual role name (``batch``, ``seq``,
    ``past``, ``total``) or spelling of one that the model's dims have, or ``INPUT:AXIS`` of an input.
    """
    if not dims:
        return
    from parekit.analysis.dims import dim_role
    from parekit.cli.common import safe

    if data != "random":
        raise DataError("--dim sizes the dims of random data only", note="drop --dim, or use --data random / --calib random")
    symbolic: list[str] = []
    axes: dict[str, int] = {}
    for value in model.graph.inputs:
        shape = value.shape
        axes[value.name or ""] = len(shape) if shape is not None else 0
        for dim in shape or ():
            if isinstance(dim, ir.SymbolicDim) and dim.value is not None and dim.value not in symbolic:
                symbolic.append(dim.value)
    roles = {role for role in map(dim_role, symbolic) if role is not None}
    if "total" in roles:  # total = past + seq
        roles |= {"past", "seq"}
    for name in dims:
        input_name, colon, axis = name.rpartition(":")
        if colon and input_name in axes and axis.isdigit() and int(axis) < axes[input_name]:
            continue
        if name in symbolic or name in roles or dim_role(name) in roles:
            continue
        listed = ", ".join(safe(s, limit=40) for s in symbolic[:12]) or "none"
        raise DataError(
            f"--dim '{safe(name, limit=60)}': the model has no input dim of that name",
            note=f"the model's symbolic input dims: {listed}; an unnamed dim is INPUT:AXIS",
        )
