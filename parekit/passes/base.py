"""The pass base class, the context passes run in, and the report they fill.

A pass is an ``onnx_ir`` in-place pass with declared options. It receives the model and its
:class:`~parekit.analysis.modelmap.ModelMap`, rewrites the model, and records what it did in
``self.report``::

    @register("drop-layers", options=DropLayersOptions)
    class DropLayersPass(Pass[DropLayersOptions]):
        \"\"\"Remove whole transformer blocks, wiring each block's input to its output.\"\"\"

        def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
            if not self.options.layers:
                self.report.set_identity("no layers to drop")
                return ir.passes.PassResult(model, modified=False)
            ...
            self.report.note_site(layer=4, action="dropped")
            return ir.passes.PassResult(model, modified=True)

The manager (:func:`parekit.passes.manager.run_pipeline`) cleans up after each pass, stamps provenance on
new nodes, and fills the report's node and FLOP counts.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import onnx_ir as ir

from parekit.errors import PassNotApplicableError
from parekit.passes.options import format_options

if TYPE_CHECKING:
    from parekit.analysis.modelmap import ModelMap

__all__ = ["DEFAULT_FLOP_DIMS", "Pass", "PassContext", "PassReport", "pass_spec"]

logger = logging.getLogger(__name__)

O = TypeVar("O")  # noqa: E741 (the options type, as in Pass[O])

DEFAULT_FLOP_DIMS: Mapping[str, int] = {"batch": 1, "seq": 128, "past": 0, "total": 128}
"""Dimension values FLOP estimates use: batch size, new tokens, cached tokens, cached + new tokens."""


def _default_analyze(model: ir.Model) -> ModelMap:
    from parekit.analysis import discover  # lazy: analysis is heavier than the pass machinery

    return discover(model)


def pass_spec(name: str, options: Any) -> str:
    """Canonical pipeline text of one configured pass: ``name{opt=value,...}`` (``name`` if none)."""
    text = format_options(options)
    return f"{name}{{{text}}}" if text else name


@dataclass
class PassContext:
    """What passes may use besides the model: structure discovery, calibration data, FLOP dims.

    Attributes:
        analyze: model → :class:`ModelMap`; defaults to :func:`parekit.analysis.discover`. Tests inject
            stubs here.
        calibration: calibration data object (see :mod:`parekit.calibration`), or ``None`` when none
            was given. Passes that need it call :meth:`require_calibration`.
        flop_dims: dimension values for FLOP estimates, by role (``batch``, ``seq``, ``past``,
            ``total``) or by the model's own symbolic dim names.
    """

    analyze: Callable[[ir.Model], ModelMap] = field(default_factory=lambda: _default_analyze)
    calibration: Any | None = None
    flop_dims: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_FLOP_DIMS))

    def require_calibration(self, pass_name: str) -> Any:
        """Return the calibration data, or refuse the pass when there is none.

        Args:
            pass_name: the pass asking, named in the error.

        Returns:
            The calibration data object.

        Raises:
            PassNotApplicableError: no calibration data was given.
        """
        if self.calibration is None:
            raise PassNotApplicableError(
                f"{pass_name}: needs calibration data, and none was given",
                note="pass calibration data to the pipeline (PassContext.calibration, "
                "or the CLI's calibration option)",
            )
        return self.calibration


@dataclass
class PassReport:
    """What one pass did to the model.

    A pass fills ``sites``, ``identity`` and ``extra`` during :meth:`Pass.run`; the manager fills the
    rest.

    Attributes:
        pass_name: registered pass name.
        spec: canonical pipeline text of the configured pass, e.g. ``drop-layers{count=0,layers=[4]}``.
        modified: whether the pass changed the model.
        identity: why the configuration is the identity (nothing changed), or ``None``.
        sites: one dict of facts per place the pass acted on (e.g. ``{"layer": 4, "action": "dropped"}``).
        nodes_added: nodes in the main graph (and its subgraphs) after the pass that were not there before.
        nodes_removed: nodes there before and gone after.
        flops_before: estimated FLOPs of the model before the pass (``None`` if not estimated).
        flops_after: estimated FLOPs after the pass.
        flops_removed: ``flops_before - flops_after``.
        flops_unknown: nodes whose FLOPs could not be estimated after the pass (shapes unknown).
        extra: pass-specific facts (chosen layers, influence scores, ...), JSON-ready where possible.
        seconds: wall time of the pass's rewrite itself (analysis included, cleanup and checks not).
    """

    pass_name: str
    spec: str
    modified: bool = False
    identity: str | None = None
    sites: list[dict[str, Any]] = field(default_factory=list)
    nodes_added: int = 0
    nodes_removed: int = 0
    flops_before: int | None = None
    flops_after: int | None = None
    flops_removed: int | None = None
    flops_unknown: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def note_site(self, **facts: Any) -> None:
        """Record one place the pass acted on, e.g. ``note_site(layer=4, action="dropped")``."""
        self.sites.append(facts)

    def set_identity(self, reason: str) -> None:
        """Record that this configuration changes nothing, and why (the pass returns ``modified=False``)."""
        self.identity = reason

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists, NumPy scalars and arrays become Python values)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if hasattr(value, "tolist") and callable(value.tolist):  # NumPy scalars and arrays
        return value.tolist()
    return value


class Pass(ir.passes.InPlacePass, Generic[O]):
    """Base class of parekit passes: an in-place ``onnx_ir`` pass with declared options.

    Subclasses are registered with :func:`parekit.passes.registry.register`, which sets the class
    attributes below, and implement :meth:`run`.

    Attributes:
        name: registered pass name (``kv-window``).
        options_type: the options dataclass.
        required_passes: names of passes that must run earlier in the same pipeline (``requires=`` of
            :func:`~parekit.passes.registry.register`; named so because ``onnx_ir``'s ``PassBase``
            already has a ``requires()`` precondition method).
        summary: first line of the class (or module) docstring, for ``parekit passes``.
        options: this instance's options.
        ctx: the pass context.
        report: the report this run fills.
        model_map: the structure map the last :meth:`call` computed (``None`` before).
    """

    name: ClassVar[str] = ""
    options_type: ClassVar[type]
    required_passes: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    needs_structure: ClassVar[bool] = True
    """``False`` for a pass whose rewrite reads only the graph's inputs and outputs: no structure discovery
    runs for it (:meth:`call` and the manager hand :meth:`run` ``None``), so it also applies after passes
    whose graphs discovery no longer follows."""

    def __init__(self, options: O, ctx: PassContext | None = None) -> None:
        super().__init__()
        if not self.name:
            raise TypeError(f"{type(self).__qualname__} is not registered; decorate it with @register(...)")
        self.options: O = options
        self.ctx = ctx if ctx is not None else PassContext()
        self.report = PassReport(pass_name=self.name, spec=pass_spec(self.name, options))
        self.model_map: ModelMap | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Analyze the model, then :meth:`run` the rewrite (the ``onnx_ir`` pass entry point)."""
        start = time.perf_counter()
        self.precheck(model)
        mm = self.ctx.analyze(model) if self.needs_structure else None
        self.model_map = mm
        result = self.run(model, mm)  # type: ignore[arg-type]  # None only where needs_structure is False
        self.report.seconds = time.perf_counter() - start
        if not isinstance(result, ir.passes.PassResult):
            raise TypeError(f"{type(self).__qualname__}.run must return an onnx_ir PassResult")
        self.report.modified = bool(result.modified)
        if self.report.identity is not None and result.modified:
            logger.warning(
                "%s: reported an identity configuration (%s) but says it modified the model",
                self.name,
                self.report.identity,
            )
        return result

    def precheck(self, model: ir.Model) -> None:  # noqa: B027 (optional hook, empty by default)
        """Refuse, before structure analysis, a model this pass can never apply to (default: accept all).

        Raises:
            PassNotApplicableError: use :meth:`not_applicable`.
        """

    @abc.abstractmethod
    def run(self, model: ir.Model, mm: ModelMap) -> ir.passes.PassResult:
        """Rewrite ``model`` in place.

        Args:
            model: the model, mutated in place.
            mm: the model's structure map.

        Returns:
            ``PassResult(model, modified)``.

        Raises:
            PassNotApplicableError: the pass cannot apply to this model (use :meth:`not_applicable`).
        """

    def not_applicable(self, reason: str, note: str | None = None) -> PassNotApplicableError:
        """Build the error that refuses this pass: ``raise self.not_applicable("no KV cache")``."""
        return PassNotApplicableError(f"{self.name}: {reason}", note=note)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.report.spec})"
