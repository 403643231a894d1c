"""The segments directory: ``manifest.json`` plus one ``segment<k>.onnx`` per segment.

The manifest's format is the early-exit contract's (docs/early_exit.md, "Segments"). Reading
validates it completely, with one-line errors naming the directory and what is wrong: a missing
directory or manifest, bad JSON, another format or version, segment files that are not plain names
inside the directory (``../x``, absolute paths, links leaving it), I/O that no earlier segment provides.
Writing is atomic: everything is built in a temporary folder beside the target and renamed into
place, so a failure leaves nothing behind; an existing target (folder or file) is refused, never
replaced (the CLI's rule: outputs replace regular files only, and a directory is not one).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from parekit.errors import ModelLoadError, ParekitError, echo, one_line

logger = logging.getLogger(__name__)

__all__ = ["MANIFEST", "Manifest", "SegmentEntry", "SegmentIO", "read_manifest", "write_segments"]

MANIFEST = "manifest.json"
FORMAT = "parekit.segments"
VERSION = 1
_MAX_MANIFEST_BYTES = 64 * 2**20
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


@dataclass(frozen=True)
class SegmentIO:
    """One input or output of a segment.

    Attributes:
        name: The value's name (as in the source model).
        batch_axis: 0 when axis 0 is the batch (the runtime gathers the remaining rows), else ``None``
            (passed unchanged).
    """

    name: str
    batch_axis: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "batch_axis": self.batch_axis}


class _Segment(Protocol):
    index: int
    model: Any

    @property
    def file(self) -> str: ...


class _Plan(Protocol):
    """What :func:`write_segments` needs of a :class:`~parekit.segments.split.SegmentPlan`."""

    @property
    def segments(self) -> Sequence[_Segment]: ...

    def manifest(self, source: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SegmentEntry:
    """One segment as the manifest describes it (see :meth:`parekit.segments.split.Segment.to_dict`)."""

    file: str
    layers: tuple[int, int]
    inputs: tuple[SegmentIO, ...]
    outputs: tuple[SegmentIO, ...]
    exit: dict[str, Any] | None


@dataclass(frozen=True)
class Manifest:
    """A validated segments directory.

    Attributes:
        directory: The directory.
        source: The file name of the model it was cut from.
        kind: ``encoder`` or ``decoder``.
        outputs: The source model's graph outputs, in order.
        exits: The ``parekit.exits`` object, or ``None`` when cut at plain layers.
        segments: The segments in run order.
    """

    directory: Path
    source: str
    kind: str
    outputs: tuple[str, ...]
    exits: dict[str, Any] | None
    segments: tuple[SegmentEntry, ...]

    def path(self, entry: SegmentEntry) -> Path:
        """The segment's model file."""
        return self.directory / entry.file

    def feeds(self) -> list[SegmentIO]:
        """The original model's inputs: segment inputs no earlier segment produces, in first-use order."""
        produced: set[str] = set()
        found: dict[str, SegmentIO] = {}
        for entry in self.segments:
            for io in entry.inputs:
                if io.name not in produced and io.name not in found:
                    found[io.name] = io
            produced.update(io.name for io in entry.outputs)
        return list(found.values())


def read_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Read and validate a segments directory's manifest.

    Raises:
        ModelLoadError: One line naming the directory and the problem.
    """
    root = Path(directory)
    where = echo(str(root))
    if not root.is_dir():
        raise ModelLoadError(f"segments directory '{where}': no such directory")
    file = root / MANIFEST
    if not file.is_file():
        raise ModelLoadError(
            f"'{where}' is not a segments directory: it has no {MANIFEST}",
            note="segments directories are written by 'parekit split' (or optimize with form=segments)",
        )
    try:
        if file.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ModelLoadError(f"{where}/{MANIFEST}: larger than {_MAX_MANIFEST_BYTES // 2**20} MiB")
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"{where}/{MANIFEST} is not valid JSON: {one_line(exc)}") from exc
    return _parse(root, data, f"{where}/{MANIFEST}")


def _parse(root: Path, data: Any, where: str) -> Manifest:
    def bad(what: str) -> ModelLoadError:
        return ModelLoadError(f"{where}: {what}")

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    if data.get("format") != FORMAT:
        raise bad(f"format is {echo(repr(data.get('format')), 60)}, expected '{FORMAT}'")
    if data.get("version") != VERSION:
        raise bad(f"version {echo(repr(data.get('version')), 60)} is not supported (this parekit reads {VERSION})")
    kind, source, outputs = data.get("kind"), data.get("source", ""), data.get("outputs")
    if kind not in ("encoder", "decoder"):
        raise bad("'kind' must be 'encoder' or 'decoder'")
    if not isinstance(source, str):
        raise bad("'source' must be a string")
    if not _names(outputs) or not outputs:
        raise bad("'outputs' must be a non-empty list of names")
    exits = data.get("exits")
    if exits is not None and not isinstance(exits, dict):
        raise bad("'exits' must be an object or null")
    raw = data.get("segments")
    if not isinstance(raw, list) or not raw:
        raise bad("'segments' must be a non-empty list")
    entries = tuple(_entry(root, item, k, bad) for k, item in enumerate(raw))
    available: set[str] = set()
    feeds: set[str] = set()
    for k, entry in enumerate(entries):
        for io in entry.inputs:
            if io.name not in available:
                if any(io.name in {o.name for o in later.outputs} for later in entries[k:]):
                    raise bad(f"segment {k} reads '{echo(io.name)}' before the segment that computes it")
                feeds.add(io.name)
        available.update(io.name for io in entry.outputs)
        if entry.exit is not None:
            names = {o.name for o in entry.outputs}
            exit_names = [entry.exit["take"], entry.exit["score"], *entry.exit["outputs"].values()]
            missing = [n for n in exit_names if n not in names]
            if missing:
                raise bad(f"segment {k}'s exit names output(s) it does not have: {echo(missing)}")
    missing_outputs = [n for n in outputs if n not in available]
    if missing_outputs:
        raise bad(f"no segment computes the output(s) {echo(missing_outputs)}")
    return Manifest(root, source, kind, tuple(outputs), exits, entries)


def _entry(root: Path, item: Any, k: int, bad: Callable[[str], ModelLoadError]) -> SegmentEntry:
    if not isinstance(item, dict):
        raise bad(f"segment {k} is not an object")
    file = item.get("file")
    if not isinstance(file, str) or not _PLAIN_NAME.fullmatch(file) or file in (".", ".."):
        raise bad(f"segment {k}: file {echo(repr(file), 80)} is not a plain file name inside the directory")
    path = root / file
    if path.is_symlink() or not path.is_file():
        raise bad(f"segment {k}: file '{file}' is missing or not a regular file in the directory")
    layers = item.get("layers")
    if not (isinstance(layers, list) and len(layers) == 2 and all(type(x) is int and x >= 0 for x in layers)
            and layers[0] <= layers[1]):
        raise bad(f"segment {k}: 'layers' must be [first, last] block indices")
    ios = []
    for key in ("inputs", "outputs"):
        listed = item.get(key)
        if not isinstance(listed, list) or (key == "outputs" and not listed):
            raise bad(f"segment {k}: '{key}' must be a list of {{name, batch_axis}}")
        parsed = []
        for io in listed:
            if not (isinstance(io, dict) and isinstance(io.get("name"), str) and io["name"]
                    and io.get("batch_axis", "missing") in (0, None) and io.get("batch_axis") is not False):
                raise bad(f"segment {k}: an entry of '{key}' is not {{\"name\": ..., \"batch_axis\": 0 | null}}")
            parsed.append(SegmentIO(io["name"], io["batch_axis"]))
        ios.append(tuple(parsed))
    exit_ = item.get("exit")
    if exit_ is not None:
        ok = (isinstance(exit_, dict) and type(exit_.get("layer")) is int
              and isinstance(exit_.get("take"), str) and isinstance(exit_.get("score"), str)
              and isinstance(exit_.get("outputs"), dict)
              and all(isinstance(a, str) and isinstance(b, str) for a, b in exit_["outputs"].items()))
        if not ok:
            raise bad(f"segment {k}: 'exit' must be null or {{layer, take, score, outputs}}")
    return SegmentEntry(file, (layers[0], layers[1]), ios[0], ios[1], exit_)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def write_segments(
    plan: _Plan,
    directory: str | os.PathLike[str],
    source: str,
    *,
    on_segment: Callable[[int, Path], None] | None = None,
) -> dict[str, int]:
    """Write ``plan`` as a segments directory, atomically.

    Args:
        plan: The segments.
        directory: The directory to create; it must not exist, its parent must.
        source: The source model's file name (recorded in the manifest).
        on_segment: Called with ``(k, path)`` after each segment file is written (progress).

    Returns:
        File name → size in bytes of every file written.

    Raises:
        ParekitError: The target exists or its parent folder is missing; a write failed (nothing is
            left behind).
    """
    from parekit.backends.save import save_model

    target = Path(directory)
    shown = echo(str(target))
    if target.exists() or target.is_symlink():
        raise ParekitError(
            f"-o '{shown}' exists",
            note="a segments directory is written new; remove it or choose another path",
        )
    if not target.parent.is_dir():
        raise ParekitError(f"-o '{shown}': folder '{echo(str(target.parent))}' does not exist",
                           note="create the folder first; parekit creates only the segments directory itself")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        sizes: dict[str, int] = {}
        for seg in plan.segments:
            path = tmp / seg.file
            try:
                save_model(seg.model, path)
            except ParekitError as exc:  # name the user's path, not the temporary one
                raise ParekitError(exc.message.replace(str(tmp), str(target)), exc.note) from exc
            for written in sorted(tmp.glob(seg.file + "*")):
                sizes[written.name] = written.stat().st_size
            if on_segment is not None:
                on_segment(seg.index, target / seg.file)
        text = json.dumps(plan.manifest(source), indent=1) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        sizes[MANIFEST] = len(text.encode("utf-8"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        try:
            os.rename(tmp, target)  # fails on a target created meanwhile (unless an empty folder)
        except OSError as exc:
            raise ParekitError(f"cannot create '{shown}': {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s (%d segments)", target, len(plan.segments))
    return sizes
