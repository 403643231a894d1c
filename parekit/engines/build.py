"""``parekit build``'s engine: ONNX → serialized TensorRT / TensorRT-RTX plan, with a report.

The TensorRT work runs in a subprocess (:mod:`parekit.engines.trt_builder`): TensorRT-RTX's parser aborts
the whole process on a node that maps to a registered plugin, and a builder that crashes must not take the
caller down. This module prepares the request (backend module, derived profile, plugin library), reads the
answer and turns it into the build report and one-line errors.

How parekit nodes end up in the engine:

* TensorRT-RTX has no plugin layers: its parser inlines every parekit node's model-local function body.
  No plugin library is ever registered in an RTX process.
* TensorRT with ``plugins``: the library is loaded into the builder process's registry and the parser's
  plugin-override flag is set, so a node with ``plugin_namespace=parekit`` becomes a plugin layer where
  the library has its creator (TensorRT >= 10.15; older parsers inline the body). The report lists each
  parekit node with what it became, checked against the parsed network's plugin layers.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parekit.engines.profiles import Profile
from parekit.errors import BackendError, MissingExtraError, ParekitError

__all__ = ["BACKENDS", "BuildRequest", "build_engine", "parekit_nodes"]


@dataclass(frozen=True)
class Backend:
    name: str
    module: str
    extra: str
    display: str
    plugins: bool


BACKENDS: dict[str, Backend] = {
    "tensorrt": Backend("tensorrt", "tensorrt", "tensorrt", "TensorRT", True),
    "tensorrt-rtx": Backend("tensorrt-rtx", "tensorrt_rtx", "tensorrt-rtx", "TensorRT-RTX", False),
}

_ATTENTION_HINT = (
    "TensorRT-RTX has no fused float32 kernel for the opset-23 Attention op; build with the default "
    "--decomposable-attention, with --precision fp16, or from an opset-18 export"
)


@dataclass(frozen=True)
class BuildRequest:
    """What to build.

    Attributes:
        onnx: The ONNX file TensorRT parses (external data beside it).
        plan: Where the subprocess writes the plan (a staged temporary file).
        backend: A key of :data:`BACKENDS`.
        profile: The optimization profile (:func:`parekit.engines.profiles.derive_profile`).
        plugins: The plugin library to register (TensorRT only), or ``None``.
        decomposable_attention: Mark every ``IAttention`` layer decomposable.
        timeout: Seconds before the build is abandoned.
    """

    onnx: Path
    plan: Path
    backend: str
    profile: Profile
    plugins: Path | None = None
    decomposable_attention: bool = True
    timeout: float = 3600.0


def _communicate(text: str, env: dict[str, str], request: BuildRequest, backend: Backend,
                 on_progress: Callable[[dict[str, Any]], None] | None) -> tuple[str, str, int]:
    """Runs the builder; ``@progress`` lines of its stderr go to ``on_progress`` as they come."""
    process = subprocess.Popen([sys.executable, "-m", "parekit.engines.trt_builder"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    chunks: list[str] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith("@progress "):
                if on_progress is not None:
                    with contextlib.suppress(ValueError):
                        on_progress(json.loads(line[len("@progress "):]))
            else:
                chunks.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        stdout, _ = process.communicate(text, timeout=request.timeout)
    except subprocess.TimeoutExpired as exc:
        process.kill()
        process.communicate()
        raise BackendError(f"{backend.display} build of {request.onnx.name} timed out after {request.timeout:.0f} s",
                           note="raise --timeout, or build a smaller profile") from exc
    reader.join(timeout=10)
    return stdout, "".join(chunks), process.returncode


def _run(request: BuildRequest, on_start: Callable[[str], None] | None,
         on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    backend = BACKENDS[request.backend]
    from parekit.ops import PLUGIN_NAMESPACE

    payload = {
        "module": backend.module,
        "onnx": str(request.onnx),
        "plan": str(request.plan),
        "profile": request.profile.shapes,
        "plugins": str(request.plugins) if request.plugins else None,
        "plugin_override": request.plugins is not None,
        "plugin_namespace": PLUGIN_NAMESPACE,
        "decomposable_attention": request.decomposable_attention,
    }
    if on_start is not None:
        on_start(backend.display)
    env = dict(os.environ)
    env.setdefault("CUDA_MODULE_LOADING", "LAZY")
    payload["progress"] = on_progress is not None
    stdout, stderr, code = _communicate(json.dumps(payload), env, request, backend, on_progress)
    lines = stdout.strip().splitlines()
    try:
        answer: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if not answer:
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        last = (stderr.strip().splitlines() or [""])[-1]
        raise BackendError(f"the {backend.display} builder process died ({how}) on {request.onnx.name}"
                           + (f": {last[:300]}" if last else ""),
                           note="run with -v to see TensorRT's log" if not last else None)
    answer["stderr"] = stderr[-20000:]
    return answer


def _raise_for(answer: dict[str, Any], backend: Backend, onnx: Path) -> None:
    stage, error = answer.get("stage"), str(answer.get("error", ""))
    version = answer.get("version", "")
    who = f"{backend.display} {version}".strip()
    if stage == "import":
        raise MissingExtraError(backend.module, backend.extra, f"building a {backend.display} engine") \
            if "No module named" in error else BackendError(
                f"{backend.display} is installed but cannot be loaded: {error[:300]}",
                note=f"pip install 'parekit[{backend.extra}]' into a clean environment; see docs/tensorrt.md")
    if stage == "parse":
        errors = answer.get("parse_errors") or [{}]
        first = errors[0]
        inside = first.get("function_stack") or []
        where = f" inside function {' > '.join(inside)}" if inside else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BackendError(
            f"{who}'s ONNX parser rejected node '{first.get('name', '?')}' (op {first.get('op', '?')}, "
            f"node #{first.get('node', '?')}){where} of {onnx.name}: {' '.join(str(first.get('desc', '')).split())[:400]}{more}"
        )
    messages = " ".join(m["message"] for m in answer.get("log", []) if m.get("level") == "error")
    if "Attention operation was not supported" in messages or "is_decomposable" in messages:
        raise BackendError(f"{who} cannot build the Attention op of {onnx.name} in float32 as a fused kernel",
                           note=_ATTENTION_HINT)
    detail = next((m["message"] for m in answer.get("log", []) if m.get("level") == "error"), error)
    raise BackendError(f"{who} failed at the {stage} stage on {onnx.name}: {' '.join(str(detail).split())[:500]}",
                       note="run with -v for TensorRT's log; the report (--report) keeps it")


def build_engine(request: BuildRequest, *, on_start: Callable[[str], None] | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Build the plan; returns the subprocess's answer (see :mod:`parekit.engines.trt_builder`).

    Raises:
        MissingExtraError: The backend's Python package is not installed.
        BackendError: TensorRT refused the model (one line naming the node, op and reason), the builder
            process died or timed out.
    """
    backend = BACKENDS[request.backend]
    if request.plugins is not None and not backend.plugins:
        raise ParekitError(f"{backend.display} has no plugin layers: it cannot use a plugin library",
                           note="its parser builds the parekit ops from their function bodies; drop --plugins")
    answer = _run(request, on_start, on_progress)
    if not answer.get("ok"):
        _raise_for(answer, backend, request.onnx)
    return answer


def parekit_nodes(model: Any, backend: str, answer: dict[str, Any], plugins: Path | None) -> list[dict[str, Any]]:
    """Every parekit node of the model and what TensorRT made of it (``becomes``: plugin / function body)."""
    from parekit.backends.trt_plugins import plugin_nodes

    creators = {name for name, _ in answer.get("creators", [])}
    version = answer.get("version", "")
    try:
        major_minor = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        major_minor = None
    entries = plugin_nodes(model, creators, major_minor if len(major_minor or ()) == 2 else None)  # type: ignore[arg-type]
    layers = set(answer.get("plugin_layers", []))
    for entry in entries:
        if not BACKENDS[backend].plugins:
            entry.update(becomes="function body", reason="TensorRT-RTX has no plugin layers")
        elif plugins is None:
            entry.update(becomes="function body", reason="no plugin library registered")
        elif entry["becomes"] == "plugin" and entry["node"] not in layers:
            entry.update(becomes="function body", reason="the parser inlined the function (no plugin layer of that name)")
        elif entry["node"] in layers:
            entry.update(becomes="plugin", reason=None)
    return entries

