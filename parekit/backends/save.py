"""Save an :class:`onnx_ir.Model` to disk atomically, with or without external data.

Everything is first written under a temporary folder created beside the destination (same file
system), then moved into place with :func:`os.replace`. If anything fails, the destination is left
as it was: no half-written ``.onnx`` or ``.data`` file remains.

With external data, the weights go to ``<file name>.data`` beside the model (``model.onnx`` →
``model.onnx.data``, the torch exporter's convention), and the model records that name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from parekit.errors import BackendError, one_line

if TYPE_CHECKING:
    import onnx_ir as ir

logger = logging.getLogger(__name__)

__all__ = ["EXTERNAL_DATA_THRESHOLD_BYTES", "MAX_IR_VERSION", "initializer_bytes", "save_model"]

EXTERNAL_DATA_THRESHOLD_BYTES = int(1.8 * 2**30)
"""Automatic mode stores weights externally above this many initializer bytes (protobuf caps at 2 GiB)."""

MAX_IR_VERSION = 10
"""IR version written at most; onnx 1.23 stamps 14 but onnxruntime 1.31 loads at most 13."""

_EXTERNAL_SIZE_THRESHOLD = 1024
"""With external data, initializers of at most this many bytes stay inline in the ``.onnx`` file."""


@contextlib.contextmanager
def loadable_ir_version(model: ir.Model) -> Iterator[None]:
    """Temporarily cap the model's IR version at :data:`MAX_IR_VERSION` (what ONNX Runtime loads)."""
    old = model.ir_version
    model.ir_version = min(old, MAX_IR_VERSION) if old else MAX_IR_VERSION
    try:
        yield
    finally:
        model.ir_version = old


def save_model(model: ir.Model, path: str | os.PathLike[str], *, external_data: bool | None = None) -> Path:
    """Write a model to ``path`` atomically.

    The model object is left unchanged (its IR version is capped only in the written file).

    Args:
        model: The model to save.
        path: The destination ``.onnx`` file; its folder must exist.
        external_data: ``True`` stores initializers in ``<file name>.data`` beside the model,
            ``False`` stores everything inside the ``.onnx`` file (loading any external weights
            into memory), ``None`` chooses external data when the initializers exceed
            :data:`EXTERNAL_DATA_THRESHOLD_BYTES`.

    Returns:
        The path written.

    Raises:
        BackendError: The destination folder is missing or the model cannot be written; nothing
            is left at the destination.
    """
    import onnx_ir as ir

    dest = Path(path)
    if not dest.parent.is_dir():
        raise BackendError(f"cannot save model to {dest}: folder {dest.parent} does not exist")
    if dest.is_dir():
        raise BackendError(f"cannot save model to {dest}: it is a directory")
    if external_data is None:
        total = initializer_bytes(model)
        external_data = total > EXTERNAL_DATA_THRESHOLD_BYTES
        if external_data:
            logger.info("%s: %.2f GiB of initializers, saving weights as external data", dest, total / 2**30)
    data_name = dest.name + ".data"

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        tmp_model = tmp_dir / dest.name
        with loadable_ir_version(model):
            if external_data:
                ir.save(model, tmp_model, external_data=data_name, size_threshold_bytes=_EXTERNAL_SIZE_THRESHOLD)
            else:
                with _external_tensors_in_memory(model):
                    ir.save(model, tmp_model)
        written = [tmp_model]
        if external_data and (tmp_dir / data_name).exists():
            written.append(tmp_dir / data_name)
            _detach_from_file(model, dest.parent / data_name)
        _move_into_place(written, dest.parent)
    except BackendError:
        raise
    except Exception as exc:  # any failure of the write: report it, leave nothing behind
        raise BackendError(f"cannot save model to {dest}: {one_line(exc)}") from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.debug("saved %s%s", dest, " (+ external data)" if external_data else "")
    return dest


def initializer_bytes(model: ir.Model) -> int:
    """Total size in bytes of the initializers of all graphs of a model (external ones included)."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            if value.const_value is not None:
                total += value.const_value.nbytes
    return total


def _detach_from_file(model: ir.Model, data_file: Path) -> None:
    """Point initializers that read ``data_file`` at a memory map of its current contents.

    ``data_file`` is about to be replaced by a new file with a different layout. The map keeps the
    old contents readable (the replaced file lives on while mapped) without copying them.
    """
    import numpy as np
    import onnx_ir as ir

    if not data_file.exists():
        return
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if (
                isinstance(tensor, ir.ExternalTensor)
                and os.path.exists(tensor.path)
                and os.path.samefile(tensor.path, data_file)
            ):
                value.const_value = ir.Tensor(np.asarray(tensor), dtype=tensor.dtype, name=tensor.name)


@contextlib.contextmanager
def _external_tensors_in_memory(model: ir.Model):  # type: ignore[no-untyped-def]
    """Temporarily replace external initializers by in-memory copies, so they are saved inline."""
    import onnx_ir as ir

    values = [
        v
        for g in model.graphs()
        for v in g.initializers.values()
        if isinstance(v.const_value, ir.ExternalTensor)
    ]
    originals = [v.const_value for v in values]
    try:
        if values:
            loaded = ir.external_data.convert_tensors_from_external(originals)  # type: ignore[arg-type]
            for value, memory_tensor in zip(values, loaded, strict=True):
                value.const_value = memory_tensor
        yield
    finally:
        for value, original in zip(values, originals, strict=True):
            value.const_value = original


def _move_into_place(files: list[Path], folder: Path) -> None:
    """Move ``files`` into ``folder`` under their names, all or nothing.

    Existing files at the destination are first moved aside (into the temporary folder that
    holds ``files``), and moved back if any step fails.
    """
    tmp_dir = files[0].parent
    backups: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for i, src in enumerate(files):
            target = folder / src.name
            if target.exists():
                backup = tmp_dir / f"backup-{i}"
                os.replace(target, backup)
                backups.append((backup, target))
        for src in files:
            target = folder / src.name
            os.replace(src, target)
            placed.append(target)
    except BaseException:
        for target in placed:
            with contextlib.suppress(OSError):
                target.unlink()
        for backup, target in backups:
            with contextlib.suppress(OSError):
                os.replace(backup, target)
        raise


