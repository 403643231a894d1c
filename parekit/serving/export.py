"""``export_triton``: write one model's folder into a Triton model repository, validated, all or nothing.

The folder is assembled beside its destination (``REPO/.NAME.*.tmp``), validated there
(:func:`~parekit.serving.validate.validate_model_dir`), and moved into place with one rename; a failure
leaves the repository as it was. Other models already in ``REPO`` are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parekit.errors import ParekitError, one_line
from parekit.serving.config_build import ConfigRequest, build_config
from parekit.serving.model_config import format_config, parse_config
from parekit.serving.signature import Signature, read_signature
from parekit.serving.validate import validate_model_dir

if TYPE_CHECKING:
    import onnx_ir as ir

__all__ = ["ExportRequest", "export_triton", "model_name"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
DEFAULT_MAX_BATCH = {"encoder": 8, "decoder": 16}
"""Encoders: ``max_batch_size``; decoders: sequences in flight per instance."""


@dataclass(frozen=True)
class ExportRequest:
    """What to export, where, and how it is served.

    Attributes:
        repo: The model repository folder (created when missing).
        name: The model's name (``None``: from the file name).
        backend: ``onnxruntime``, ``tensorrt`` or ``python``.
        max_batch: See :class:`~parekit.serving.config_build.ConfigRequest` (``None``: 8 for encoders,
            16 sequences for decoders).
        instances, device, queue_delay_us, idle_us, threads: See ``ConfigRequest``.
        plan: The TensorRT plan (``parekit build``) for the tensorrt backend.
        overwrite: Replace ``REPO/NAME`` when it exists.
    """

    repo: Path
    name: str | None = None
    backend: str = "onnxruntime"
    max_batch: int | None = None
    instances: int = 1
    device: str = "auto"
    queue_delay_us: int = 500
    idle_us: int = 60_000_000
    threads: int = 0
    plan: Path | None = None
    overwrite: bool = False


def model_name(source: Path) -> str:
    """A Triton model name from a file name: ``minilm.p.onnx`` → ``minilm_p``."""
    stem = source.name[: -len(".onnx")] if source.name.endswith(".onnx") else source.stem
    name = re.sub(r"[^A-Za-z0-9_\-]", "_", stem).strip("_-") or "model"
    return name[:64]


def export_triton(model: ir.Model, source: Path, req: ExportRequest) -> dict[str, Any]:
    """Export ``model`` (read from ``source``) as ``REPO/NAME``.

    Returns:
        A report: name, folder, backend, kind, files, the config text, the validation summary, notes.

    Raises:
        ParekitError: A bad request (name, backend for this model, missing plan), a model without the
            structure the backend needs, or a failed validation; nothing is written then.
    """
    name = req.name or model_name(source)
    if not _NAME.match(name):
        raise ParekitError(f"model name {name!r} is not a Triton model folder name "
                           "(letters, digits, _ and -, starting with a letter or digit, at most 64)")
    notes: list[str] = []
    sig = read_signature(model, source.name)
    if sig.kind == "decoder" and req.backend == "onnxruntime" and sig.start is None:
        model, sig = _state_reset(model, source)
        notes.append("applied the state-reset pass: Triton's START control empties the past (input 'start')")
    _check_backend(sig, req)
    max_batch = DEFAULT_MAX_BATCH[sig.kind] if req.max_batch is None else req.max_batch
    creq = ConfigRequest(name=name, backend=req.backend, max_batch=max_batch, instances=req.instances,
                         device=req.device, queue_delay_us=req.queue_delay_us, idle_us=req.idle_us,
                         threads=req.threads)
    from parekit import __version__

    text = (f"# written by parekit {__version__}: {'a stateless' if sig.kind == 'encoder' else 'a KV-cache'} {sig.kind} "
            f"for Triton's {req.backend} backend (docs/serving.md)\n" + format_config(build_config(sig, creq)))
    parse_config(text, f"{name}/config.pbtxt")  # what reaches the disk is what Triton's schema parses
    repo = Path(req.repo)
    dest = repo / name
    if dest.exists() and not req.overwrite:
        raise ParekitError(f"{dest} exists", note="pick another --name, or --overwrite to replace it")
    if repo.exists() and not repo.is_dir():
        raise ParekitError(f"{repo}: not a folder")
    created = not repo.exists()
    try:
        repo.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=repo))
    except OSError as exc:
        raise ParekitError(f"cannot write {dest}: {one_line(exc)}") from exc
    try:
        files = _write(tmp, model, sig, req, text)
        summary = validate_model_dir(tmp, model=model, name=name)
        _move(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:  # a repository this call made holds nothing on failure: remove it again
            with contextlib.suppress(OSError):
                repo.rmdir()
        if isinstance(exc, OSError):
            raise ParekitError(f"cannot write {dest}: {one_line(exc)}") from exc
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("exported %s (%s, %s) to %s", name, sig.kind, req.backend, dest)
    if sig.kind == "decoder" and req.backend == "tensorrt":
        notes.append("the plan must be built from this state-reset model: Triton's I/O are checked against the "
                     "ONNX graph, the plan itself is not read here")
    return {"name": name, "folder": str(dest), "backend": req.backend, "kind": sig.kind, "files": files,
            "config": text, "validation": summary, "notes": notes,
            "states": len(sig.states), "max_batch": max_batch, "instances": req.instances}


def _state_reset(model: ir.Model, source: Path) -> tuple[ir.Model, Signature]:
    import onnx_ir as ir

    from parekit.passes import run_pipeline

    copy = ir.from_proto(ir.to_proto(model))  # the caller's model stays as it was
    result = run_pipeline(copy, "state-reset")
    return result.model, read_signature(result.model, source.name)


def _check_backend(sig: Signature, req: ExportRequest) -> None:
    if req.backend == "tensorrt":
        if req.plan is None:
            raise ParekitError("the tensorrt backend serves an engine plan: give --plan MODEL.plan",
                               note="build it with: parekit build MODEL -o MODEL.plan --backend tensorrt")
        if not Path(req.plan).is_file() or Path(req.plan).stat().st_size == 0:
            raise ParekitError(f"--plan {req.plan}: not a file, or empty")
        if sig.kind == "decoder" and sig.start is None:
            raise ParekitError(f"{sig.name}: Triton's implicit state needs the graph's 'start' input, and the plan "
                               "must be built from such a graph", note="parekit optimize MODEL --passes state-reset "
                               "-o M.r.onnx; parekit build M.r.onnx -o M.plan; export M.r.onnx with --plan M.plan")
    elif req.plan is not None:
        raise ParekitError(f"--plan is for the tensorrt backend, not {req.backend}")


def _write(folder: Path, model: ir.Model, sig: Signature, req: ExportRequest, text: str) -> list[str]:
    from parekit.backends.save import save_model

    version = folder / "1"
    version.mkdir()
    (folder / "config.pbtxt").write_text(text, encoding="utf-8")
    if req.backend == "tensorrt":
        assert req.plan is not None
        shutil.copyfile(req.plan, version / "model.plan")
    else:
        save_model(model, version / "model.onnx")
    if req.backend == "python":
        template = "decoder.py" if sig.kind == "decoder" else "encoder.py"
        body = resources.files("parekit.serving.triton_models").joinpath(template).read_text(encoding="utf-8")
        (version / "model.py").write_text(body, encoding="utf-8")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _move(tmp: Path, dest: Path) -> None:
    """Rename the finished folder onto ``dest``; an old ``dest`` (``--overwrite``) goes only after that."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(old)
        dest.rename(old)
    try:
        tmp.rename(dest)
    except OSError:
        if old is not None:
            old.rename(dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
