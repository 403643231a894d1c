"""Run a pipeline of passes over a model: cleanup, provenance, reports, FLOPs, verification.

First the input model is checked (``input_verifier``, by default the ONNX checker), so an invalid
input is blamed as the input and not as the first pass's output. Then, for each pass, in order:

1. structure discovery (``ctx.analyze``, once; the pass gets the same map) and a FLOP estimate;
2. the pass itself (:meth:`parekit.passes.base.Pass.call`);
3. when it changed the model: ``onnx_ir`` cleanup (remove unused nodes, functions and opsets,
   topological sort, unique names);
4. provenance: every node of the main graph (and its subgraphs) that was not there before gets
   ``metadata_props["parekit.pass"] = <pass name>``;
5. the report's node counts and FLOPs after;
6. ``after_pass(name, model)`` (``--print-ir-after``), then the verifier (``--verify-each``).

A structure error while analysing the model for a pass (typically a model that an earlier pass has
rewritten into a form the analysis does not follow) is reported as that pass's
:class:`~parekit.errors.PassNotApplicableError`, naming the pass. Log records of onnx-ir and onnx
during the run are demoted to DEBUG (:func:`parekit.progress.third_party_logs`), so a library's
warning traceback never comes before parekit's own error line.

At the end the canonical pipeline text goes into ``model.metadata_props["parekit.pipeline"]`` (appended
to what an earlier run wrote there) and the parekit version into ``parekit.version``. The model is
mutated in place: callers pass a model they own.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import onnx_ir as ir
from onnx_ir.passes import common as common_passes

from parekit.analysis.flops import FlopCount, dim_bindings, estimate_flops
from parekit.errors import ParekitError, PassNotApplicableError, StructureError, VerificationError, echo
from parekit.passes.base import Pass, PassContext, PassReport
from parekit.passes.pipeline import Pipeline, ResolvedPipeline, parse_pipeline
from parekit.progress import progress_bar, third_party_logs

if TYPE_CHECKING:
    from parekit.analysis.modelmap import ModelMap

__all__ = [
    "INPUT_NAME",
    "PROVENANCE_KEY",
    "PIPELINE_KEY",
    "VERSION_KEY",
    "PipelineResult",
    "check_model",
    "run_pipeline",
]

logger = logging.getLogger(__name__)

PROVENANCE_KEY = "parekit.pass"
"""Node metadata key naming the pass that inserted the node."""
PIPELINE_KEY = "parekit.pipeline"
"""Model metadata key holding the canonical pipeline text."""
VERSION_KEY = "parekit.version"
"""Model metadata key holding the parekit version that wrote the model."""


@dataclass
class PipelineResult:
    """Outcome of :func:`run_pipeline`.

    Attributes:
        model: the rewritten model (the same object that was passed in).
        reports: one report per pass, in order.
        canonical: canonical pipeline text.
    """

    model: ir.Model
    reports: list[PassReport] = field(default_factory=list)
    canonical: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the model)."""
        return {"pipeline": self.canonical, "passes": [r.to_dict() for r in self.reports]}


def check_model(model: ir.Model) -> None:
    """Default verifier: the ONNX checker with ``full_check`` (type and shape inference).

    Large initializers are swapped for graph inputs while checking, so models over the 2 GB protobuf
    limit can be checked too. That swap re-adds them at the end of the graph's initializers; their
    order is restored afterwards, so checking leaves the model exactly as it was.
    """
    initializers = model.graph.initializers
    order = list(initializers.values())
    try:
        common_passes.CheckerPass(full_check=True)(model)
    finally:
        if list(initializers.values()) != order:
            for value in order:
                initializers.pop(value.name)  # type: ignore[arg-type]
            for value in order:
                initializers[value.name] = value  # type: ignore[index]


class _AnalyzeOnce:
    """``ctx.analyze`` that hands out a precomputed map for one model object once, then delegates."""

    def __init__(self, analyze: Callable[[ir.Model], ModelMap], model: ir.Model, mm: ModelMap) -> None:
        self._analyze = analyze
        self._model: ir.Model | None = model
        self._mm = mm

    def __call__(self, model: ir.Model) -> ModelMap:
        if model is self._model:
            self._model = None
            return self._mm
        return self._analyze(model)


def _cleanup(model: ir.Model) -> None:
    ir.passes.Sequential(
        common_passes.RemoveUnusedNodesPass(),
        common_passes.RemoveUnusedFunctionsPass(),
        common_passes.RemoveUnusedOpsetsPass(),
        common_passes.TopologicalSortPass(),
        common_passes.NameFixPass(),
    )(model)


def _nodes(model: ir.Model) -> list[ir.Node]:
    return list(ir.traversal.RecursiveGraphIterator(model.graph))


def _resolve(pipeline: str | Pipeline | ResolvedPipeline) -> ResolvedPipeline:
    if isinstance(pipeline, ResolvedPipeline):
        return pipeline
    if isinstance(pipeline, str):
        pipeline = parse_pipeline(pipeline)
    return pipeline.resolve()


def _describe_error(error: BaseException) -> str:
    text = echo(" ".join(str(error).split()), 1000)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


INPUT_NAME = "the input model"
"""What :func:`run_pipeline`'s verification errors call the model before any pass."""


def _analyze(ctx: PassContext, model: ir.Model, pass_name: str, earlier: list[str]) -> ModelMap:
    """``ctx.analyze(model)``, with a structure error reported as the pass's refusal."""
    try:
        return ctx.analyze(model)
    except StructureError as e:
        raise _refusal(pass_name, earlier, e) from e


def _refusal(pass_name: str, earlier: list[str], error: ParekitError) -> PassNotApplicableError:
    where = f" as rewritten by {', '.join(repr(n) for n in earlier)}" if earlier else ""
    return PassNotApplicableError(
        f"{pass_name}: cannot apply to the model{where}: {error.message}", note=error.note
    )


def _run_pass(pass_: Pass[Any], model: ir.Model, earlier: list[str]) -> ir.passes.PassResult:
    """Run one pass; a :class:`StructureError` it raises names the pass (and the passes before it)."""
    try:
        return pass_(model)
    except StructureError as e:
        if e.message.startswith(f"{pass_.name}:"):
            raise
        raise _refusal(pass_.name, earlier, e) from e


def run_pipeline(
    model: ir.Model,
    pipeline: str | Pipeline | ResolvedPipeline,
    ctx: PassContext | None = None,
    *,
    verify_each: bool = True,
    verifier: Callable[[ir.Model], None] | None = None,
    input_verifier: Callable[[ir.Model], None] | None = check_model,
    after_pass: Callable[[str, ir.Model], None] | None = None,
    progress: bool = False,
) -> PipelineResult:
    """Run passes over a model in place.

    Args:
        model: the model; mutated in place.
        pipeline: pipeline text, a parsed :class:`Pipeline`, or a :class:`ResolvedPipeline`.
        ctx: the pass context (default: ``PassContext()``).
        verify_each: run the verifier after every pass.
        verifier: raises when a model is invalid; default :func:`check_model`. The CLI injects one that
            also loads the model in ONNX Runtime.
        input_verifier: run on the model before the first pass, so that an invalid input is reported
            as "the input model failed verification", not as a pass's fault; default
            :func:`check_model` (the ONNX checker: cheap, and part of every verifier); ``None`` skips it.
        after_pass: called with ``(pass name, model)`` after each pass, before verification.
        progress: show a rich progress bar.

    Returns:
        The model, one report per pass, and the canonical pipeline text.

    Raises:
        PipelineSyntaxError, UnknownPassError, OptionError: the pipeline is malformed.
        PassNotApplicableError: a pass cannot apply to the model.
        VerificationError: the input model, or the model after a pass, failed verification (the
            message says which).
    """
    ctx = ctx if ctx is not None else PassContext()
    resolved = _resolve(pipeline)
    canonical = str(resolved)
    check = verifier if verifier is not None else check_model
    result = PipelineResult(model=model, canonical=canonical)

    with third_party_logs():
        if input_verifier is not None and resolved.passes:
            _verify(input_verifier, model, None)
        _run_passes(
            model, resolved, ctx, result, check, verify_each=verify_each, after_pass=after_pass, progress=progress
        )

    from parekit import __version__

    earlier = model.metadata_props.get(PIPELINE_KEY)
    model.metadata_props[PIPELINE_KEY] = f"{earlier},{canonical}" if earlier else canonical
    model.metadata_props[VERSION_KEY] = __version__
    return result


def _run_passes(
    model: ir.Model,
    resolved: ResolvedPipeline,
    ctx: PassContext,
    result: PipelineResult,
    check: Callable[[ir.Model], None],
    *,
    verify_each: bool,
    after_pass: Callable[[str, ir.Model], None] | None,
    progress: bool,
) -> None:
    """The loop of :func:`run_pipeline` (see there)."""
    earlier: list[str] = []
    bar: Any = None
    task: Any = None
    if progress:
        bar = progress_bar()
        bar.start()
        task = bar.add_task("passes", total=len(resolved))
    try:
        previous: tuple[dict[str, int], FlopCount] | None = None
        for step in resolved:
            cls, options = step
            if bar is not None:
                bar.update(task, description=f"{cls.name}")
            cls(options, ctx).precheck(model)  # refusals that need no structure map come first
            mm = _analyze(ctx, model, cls.name, earlier) if cls.needs_structure else None
            dims = dim_bindings(ctx.flop_dims, mm)
            # The last pass's "after" is this pass's "before" when the dims did not change.
            before = (
                previous[1] if previous is not None and previous[0] == dims else estimate_flops(model, dims)
            )
            before_nodes = _nodes(model)

            once = ctx if mm is None else dataclasses.replace(ctx, analyze=_AnalyzeOnce(ctx.analyze, model, mm))
            pass_ = cls(options, once)
            logger.info("running %s", pass_.report.spec)
            outcome = _run_pass(pass_, model, earlier)
            if outcome.modified:
                _cleanup(model)

            after_nodes = _nodes(model)
            # Identity, not names: passes may reuse names. Both lists keep their nodes alive, so ids are unique.
            before_ids = {id(n) for n in before_nodes}
            after_ids = {id(n) for n in after_nodes}
            added = [n for n in after_nodes if id(n) not in before_ids]
            for node in added:
                node.metadata_props[PROVENANCE_KEY] = cls.name
            after = estimate_flops(model, dims) if (outcome.modified or added) else before
            previous = (dims, after)

            report = pass_.report
            report.spec = str(step)
            report.nodes_added = len(added)
            report.nodes_removed = sum(1 for n in before_nodes if id(n) not in after_ids)
            report.flops_before = before.total
            report.flops_after = after.total
            report.flops_removed = before.total - after.total
            report.flops_unknown = len(after.unknown)
            result.reports.append(report)
            logger.info(
                "%s: modified=%s, +%d/-%d nodes, FLOPs %d → %d%s",
                cls.name,
                report.modified,
                report.nodes_added,
                report.nodes_removed,
                before.total,
                after.total,
                f" (identity: {report.identity})" if report.identity else "",
            )

            if after_pass is not None:
                after_pass(cls.name, model)
            if verify_each:
                _verify(check, model, cls.name)
            earlier.append(cls.name)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    if not verify_each and resolved.passes:
        # MLIR-style: without --verify-each the result is still verified once, at the end.
        _verify(check, model, f"{resolved.passes[-1].pass_cls.name} (end of pipeline)")


def _verify(check: Callable[[ir.Model], None], model: ir.Model, pass_name: str | None) -> None:
    """Run the verifier; ``pass_name`` None means the input, before any pass."""
    try:
        check(model)
    except Exception as e:
        note = e.message if isinstance(e, ParekitError) else _describe_error(e)
        if isinstance(e, ParekitError) and e.note:
            note = f"{note}; {e.note}"
        if pass_name is None:
            raise VerificationError(
                f"{INPUT_NAME} failed verification, before any pass ran", note=f"the input is invalid: {note}"
            ) from e
        raise VerificationError(f"the model failed verification after pass '{pass_name}'", note=note) from e
