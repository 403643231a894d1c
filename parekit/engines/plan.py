"""From a model to a plan and its report: precision, profile, build, what each parekit node became.

:func:`prepare_build` does everything that can fail before the slow TensorRT build (structure, the
precision pass, the profile, including the state shapes measured on ONNX Runtime);
:meth:`PreparedBuild.build` builds and returns the report ``parekit build --report`` writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parekit.engines.build import BACKENDS, BuildRequest, build_engine, parekit_nodes
from parekit.engines.profiles import DimRange, Profile, derive_profile
from parekit.engines.state_shapes import StateProbe
from parekit.errors import ParekitError, StructureError

__all__ = ["PreparedBuild", "prepare_build"]


@dataclass
class PreparedBuild:
    """A model ready for TensorRT: the file it parses, the profile, and facts for the report."""

    source: Path
    onnx: Path
    model: Any
    backend: str
    precision: str
    kind: str
    profile: Profile
    precision_report: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    prepare_s: float = 0.0

    def build(self, plan: Path, *, library: Path | None, decomposable: bool = True, timeout: float = 3600.0,
              on_start: Callable[[str], None] | None = None,
              on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Build the plan into ``plan``; returns the report (docs/engines.md, "The report").

        ``on_progress`` receives TensorRT's build phases (``phase``, ``step``, ``steps``, ``done``)."""
        request = BuildRequest(onnx=self.onnx, plan=plan, backend=self.backend, profile=self.profile,
                               plugins=library, decomposable_attention=decomposable, timeout=timeout)
        answer = build_engine(request, on_start=on_start, on_progress=on_progress)
        nodes = parekit_nodes(self.model, self.backend, answer, library)
        notes = list(self.notes)
        if answer.get("attention_layers"):
            notes.append(f"{answer['attention_layers']} Attention op(s) marked decomposable "
                         "(TensorRT may run them unfused)")
        spec = BACKENDS[self.backend]
        return {
            "model": str(self.source),
            "kind": self.kind,
            "backend": self.backend,
            "backend_display": spec.display,
            "version": answer.get("version"),
            "precision": self.precision,
            "precision_pass": self.precision_report,
            "profile": self.profile.to_dict(),
            "plugins": {"library": str(library) if library else None, "creators": answer.get("creators", [])},
            "layers": answer.get("layers"),
            "layer_types": answer.get("layer_types", {}),
            "plugin_layers": answer.get("plugin_layers", []),
            "parekit_nodes": nodes,
            "plan_bytes": answer.get("plan_bytes"),
            "prepare_s": self.prepare_s,
            "parse_s": answer.get("parse_s"),
            "build_s": answer.get("build_s"),
            "notes": notes,
            "tensorrt_log": answer.get("log", []),
        }


def _kind(model: Any) -> tuple[str, dict[str, str], str | None]:
    """(kind, dim roles, position input) from the ModelMap, or from the inputs when discovery fails."""
    from parekit.analysis import discover

    try:
        mm = discover(model)
    except StructureError:
        decoder = any((v.name or "").startswith("past") for v in model.graph.inputs)
        return ("decoder" if decoder else "encoder"), {}, "position_ids" if decoder else None
    roles = {d: r for d, r in ((mm.batch_dim, "batch"), (mm.seq_dim, "seq")) if d}
    # A KV pass replaces past.<i>.key by its own state inputs (the map then finds no plain KV cache), so the
    # contract's naming rule decides: a causal model with past* inputs is driven step by step.
    stateful = mm.has_kv_cache or any((v.name or "").startswith("past") for v in model.graph.inputs)
    kind = "decoder" if mm.kind == "decoder" and stateful else "encoder"
    return kind, roles, mm.inputs.get("position_ids")


def _precision(model: Any, precision: str, scratch: Path, log: Callable[[str], None]) -> tuple[Any, Path, dict[str, Any]]:
    from parekit.backends.save import save_model
    from parekit.passes.base import PassContext
    from parekit.passes.manager import run_pipeline

    log(f"precision: converting to {precision} (explicit casts) …")
    result = run_pipeline(model, f"precision{{dtype={precision}}}", PassContext())
    path = scratch / "model.onnx"
    save_model(result.model, path)
    return result.model, path, result.reports[-1].to_dict()


def prepare_build(source: Path, model: Any, scratch: Path, *, backend: str, precision: str = "fp32",
                  overrides: Mapping[str, DimRange] | None = None,
                  log: Callable[[str], None] = lambda line: None) -> PreparedBuild:
    """Everything before the TensorRT build.

    Args:
        source: The model file (TensorRT parses it as it is when no pass must run first).
        model: The same model, loaded (``onnx_ir.Model``).
        scratch: A folder for the converted model (precision fp16/bf16).
        backend: A key of :data:`parekit.engines.build.BACKENDS`.
        precision: ``fp32`` (as the model is), ``fp16`` or ``bf16`` (the precision pass runs first).
        overrides: ``--profile`` values.
        log: Receives progress lines.

    Raises:
        ParekitError: The model cannot be profiled, the precision pass cannot apply, a state probe fails.
    """
    from parekit.analysis.input_bounds import int_input_bounds
    from parekit.backends.specs import specs_from_ir_values

    if backend not in BACKENDS:
        raise ParekitError(f"unknown backend '{backend}'", note=f"one of: {', '.join(BACKENDS)}")
    start = time.perf_counter()
    kind, roles, position_input = _kind(model)
    onnx, built, precision_report = source, model, None
    if precision != "fp32":
        built, onnx, precision_report = _precision(model, precision, scratch, log)
    bound = int_input_bounds(model).get(position_input) if position_input else None
    probe = StateProbe(source)
    profile = derive_profile(specs_from_ir_values(model.graph.inputs), kind=kind, overrides=dict(overrides or {}),
                             roles=roles, position_bound=bound, state=probe)
    notes = [f"state dims measured on ONNX Runtime: {run}" for run in probe.runs]
    return PreparedBuild(source=source, onnx=onnx, model=built, backend=backend, precision=precision, kind=kind,
                         profile=profile, precision_report=precision_report, notes=notes,
                         prepare_s=time.perf_counter() - start)
