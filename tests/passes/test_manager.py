"""The pass manager on a tiny hand-written model with toy passes registered for the test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

import parekit
from parekit.errors import PassNotApplicableError, PipelineSyntaxError, StructureError, VerificationError
from parekit.passes import manager, registry
from parekit.passes.base import Pass, PassContext
from parekit.passes.manager import PIPELINE_KEY, PROVENANCE_KEY, VERSION_KEY, check_model, run_pipeline

MODEL_TEXT = """
<ir_version: 10, opset_import: ["": 18]>
tiny (float[batch, 8] x) => (float[batch, 8] out)
{
  y = MatMul(x, w)
  out = Relu(y)
}
"""


def make_model() -> ir.Model:
    model = ir.from_onnx_text(MODEL_TEXT)
    w = ir.tensor(np.arange(64, dtype=np.float32).reshape(8, 8) / 64, name="w")
    value = ir.Value(name="w", shape=ir.Shape([8, 8]), type=ir.TensorType(ir.DataType.FLOAT), const_value=w)
    model.graph.register_initializer(value)
    model.graph.node(0).replace_input_with(1, value)
    return model


def _node(model: ir.Model, op_type: str) -> ir.Node:
    return next(n for n in model.graph if n.op_type == op_type)


@dataclass(frozen=True)
class InsertOptions:
    count: int = field(default=1, metadata={"help": "Identity nodes to chain after the MatMul", "min": 0})


@dataclass(frozen=True)
class NoOptions:
    pass


class InsertIdentity(Pass[InsertOptions]):
    """Chain Identity nodes after the MatMul output."""

    def run(self, model: ir.Model, mm: object) -> ir.passes.PassResult:
        if self.options.count == 0:
            self.report.set_identity("count=0 inserts nothing")
            return ir.passes.PassResult(model, modified=False)
        relu = _node(model, "Relu")
        value = relu.inputs[0]
        assert value is not None
        for i in range(self.options.count):
            node = ir.node("Identity", [value], name=f"inserted_{i}")
            model.graph.insert_after(value.producer(), node)
            value = node.outputs[0]
            value.name = f"y_id_{i}"
            self.report.note_site(after=relu.inputs[0].name, index=i)
        relu.replace_input_with(0, value)
        self.report.extra["chain"] = np.int64(self.options.count)
        return ir.passes.PassResult(model, modified=True)


class SkipMatMul(Pass[NoOptions]):
    """Feed the Relu from the graph input; cleanup removes the dead MatMul and its weight."""

    def run(self, model: ir.Model, mm: object) -> ir.passes.PassResult:
        _node(model, "Relu").replace_input_with(0, model.graph.inputs[0])
        return ir.passes.PassResult(model, modified=True)


class Breaker(Pass[NoOptions]):
    """Insert a node with an op type ONNX does not know."""

    def run(self, model: ir.Model, mm: object) -> ir.passes.PassResult:
        relu = _node(model, "Relu")
        bad = ir.node("NoSuchOp", [relu.inputs[0]], name="bad")
        model.graph.insert_before(relu, bad)
        relu.replace_input_with(0, bad.outputs[0])
        return ir.passes.PassResult(model, modified=True)


class StructureTripper(Pass[NoOptions]):
    """Fail inside the pass with a structure error that names a node, not the pass."""

    def run(self, model: ir.Model, mm: object) -> ir.passes.PassResult:
        raise StructureError("block starting at node 'y': expected one residual-stream input, found 2")


class NoisyLibrary(Pass[NoOptions]):
    """Log a warning with a traceback through an onnx-ir logger, as its shape inference does."""

    def run(self, model: ir.Model, mm: object) -> ir.passes.PassResult:
        try:
            raise RuntimeError("inference blew up")
        except RuntimeError as exc:
            logging.getLogger("onnx_ir.passes.common.shape_inference").warning(
                "Shape inference failed: %s. Model is left unchanged", exc, exc_info=exc
            )
        return ir.passes.PassResult(model, modified=False)


class Refuser(Pass[NoOptions]):
    """Always refuse."""

    def run(self, model: ir.Model, mm: object) -> ir.passes.PassResult:
        raise self.not_applicable("this model has no KV cache")


class NeedsCalibration(Pass[NoOptions]):
    """Refuse without calibration data."""

    def run(self, model: ir.Model, mm: object) -> ir.passes.PassResult:
        self.ctx.require_calibration(self.name)
        return ir.passes.PassResult(model, modified=False)


@pytest.fixture(autouse=True)
def toy_passes() -> Iterator[None]:
    with registry.temporary():
        registry.register("toy-insert-identity", options=InsertOptions)(InsertIdentity)
        registry.register("toy-skip-matmul", options=NoOptions, requires=("toy-insert-identity",))(SkipMatMul)
        registry.register("toy-breaker", options=NoOptions)(Breaker)
        registry.register("toy-refuser", options=NoOptions)(Refuser)
        registry.register("toy-structure", options=NoOptions)(StructureTripper)
        registry.register("toy-noisy", options=NoOptions)(NoisyLibrary)
        registry.register("toy-needs-calibration", options=NoOptions)(NeedsCalibration)
        yield


class AnalyzeStub:
    """A ModelMap-free analyze: counts calls, returns a marker object."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: ir.Model) -> object:
        self.calls += 1
        return object()


@pytest.fixture
def ctx() -> PassContext:
    return PassContext(analyze=AnalyzeStub())  # type: ignore[arg-type]


def test_insert_sets_provenance_and_report(ctx: PassContext) -> None:
    model = make_model()
    original = {id(n) for n in model.graph}
    result = run_pipeline(model, "toy-insert-identity{count=2}", ctx)

    assert result.model is model
    assert [n.op_type for n in model.graph] == ["MatMul", "Identity", "Identity", "Relu"]
    for node in model.graph:
        if id(node) in original:
            assert PROVENANCE_KEY not in node.metadata_props
        else:
            assert node.metadata_props[PROVENANCE_KEY] == "toy-insert-identity"

    (report,) = result.reports
    assert report.pass_name == "toy-insert-identity"
    assert report.spec == "toy-insert-identity{count=2}"
    assert report.modified and report.identity is None
    assert (report.nodes_added, report.nodes_removed) == (2, 0)
    assert report.sites == [{"after": "y", "index": 0}, {"after": "y", "index": 1}]
    # MatMul [1,8]x[8,8] with the default batch=1: 2*1*8*8 = 128; Identity nodes are free.
    assert (report.flops_before, report.flops_after, report.flops_removed) == (128, 128, 0)
    d = report.to_dict()
    assert d["extra"] == {"chain": 2} and type(d["extra"]["chain"]) is int
    assert ctx.analyze.calls == 1  # type: ignore[attr-defined]  # the manager's analysis is reused

    assert result.canonical == "toy-insert-identity{count=2}"
    assert model.metadata_props[PIPELINE_KEY] == "toy-insert-identity{count=2}"
    assert model.metadata_props[VERSION_KEY] == parekit.__version__
    assert result.to_dict()["passes"][0]["nodes_added"] == 2


def test_identity_configuration(ctx: PassContext) -> None:
    model = make_model()
    result = run_pipeline(model, "toy-insert-identity{count=0}", ctx)
    (report,) = result.reports
    assert not report.modified
    assert report.identity == "count=0 inserts nothing"
    assert (report.nodes_added, report.nodes_removed, report.flops_removed) == (0, 0, 0)
    assert [n.op_type for n in model.graph] == ["MatMul", "Relu"]


def test_cleanup_and_flops_removed(ctx: PassContext) -> None:
    model = make_model()
    result = run_pipeline(model, "toy-insert-identity,toy-skip-matmul", ctx)
    first, second = result.reports
    assert first.nodes_added == 1
    # The Identity and the MatMul are dead after the skip; cleanup removes both and the weight.
    assert [n.op_type for n in model.graph] == ["Relu"]
    assert "w" not in model.graph.initializers
    assert (second.nodes_added, second.nodes_removed) == (0, 2)
    assert (second.flops_before, second.flops_after, second.flops_removed) == (128, 0, 128)
    assert model.metadata_props[PIPELINE_KEY] == "toy-insert-identity{count=1},toy-skip-matmul"


def test_pipeline_metadata_appends_to_earlier_runs(ctx: PassContext) -> None:
    model = make_model()
    run_pipeline(model, "toy-insert-identity", ctx)
    run_pipeline(model, "toy-insert-identity{count=0}", ctx)
    assert model.metadata_props[PIPELINE_KEY] == "toy-insert-identity{count=1},toy-insert-identity{count=0}"


def test_flop_dims_apply(ctx: PassContext) -> None:
    ctx.flop_dims = {"batch": 4, "seq": 1, "past": 0, "total": 1}
    result = run_pipeline(make_model(), "toy-insert-identity", ctx)
    assert result.reports[0].flops_before == 2 * 4 * 8 * 8


def test_verifier_called_after_each_pass(ctx: PassContext) -> None:
    seen: list[int] = []
    after: list[tuple[str, int]] = []
    model = make_model()
    run_pipeline(
        model,
        "toy-insert-identity,toy-insert-identity",
        ctx,
        verifier=lambda m: seen.append(len(m.graph)),
        after_pass=lambda name, m: after.append((name, len(m.graph))),
    )
    assert seen == [3, 4]  # after each pass (the input went through input_verifier)
    assert after == [("toy-insert-identity", 3), ("toy-insert-identity", 4)]

    sizes: list[int] = []
    run_pipeline(
        make_model(),
        "toy-insert-identity,toy-insert-identity",
        ctx,
        verify_each=False,
        verifier=lambda m: sizes.append(len(m.graph)),
    )
    assert sizes == [4]  # without verify-each the result is still verified once, at the end

    inputs: list[int] = []
    sizes.clear()
    run_pipeline(
        make_model(),
        "toy-insert-identity",
        ctx,
        verifier=lambda m: sizes.append(len(m.graph)),
        input_verifier=lambda m: inputs.append(len(m.graph)),
    )
    assert (inputs, sizes) == ([2], [3])


def test_default_verifier_is_the_full_onnx_check(ctx: PassContext) -> None:
    model = make_model()
    result = run_pipeline(model, "toy-insert-identity", ctx)  # verified by check_model (no raise)
    assert result.reports[0].modified
    check_model(model)  # the rewritten model is valid ...
    broken = make_model()
    Breaker(NoOptions(), ctx).run(broken, None)
    with pytest.raises(Exception, match="NoSuchOp"):
        check_model(broken)  # ... and the same checker rejects a model with an unknown op


def test_invalid_input_is_blamed_on_the_input(ctx: PassContext) -> None:
    model = make_model()
    Breaker(NoOptions(), ctx).run(model, None)  # the input itself holds an unknown op
    with pytest.raises(VerificationError) as info:
        run_pipeline(model, "toy-insert-identity", ctx)
    assert info.value.message == "the input model failed verification, before any pass ran"
    assert "NoSuchOp" in (info.value.note or "")
    assert "after pass" not in str(info.value)
    assert [n.op_type for n in model.graph] == ["MatMul", "NoSuchOp", "Relu"]  # no pass ran

    def refuse(model: ir.Model) -> None:  # a custom input verifier (e.g. one that loads in ORT)
        raise RuntimeError("does not load in ONNX Runtime")

    with pytest.raises(VerificationError) as info:
        run_pipeline(make_model(), "toy-insert-identity", ctx, input_verifier=refuse)
    assert info.value.message == "the input model failed verification, before any pass ran"
    assert info.value.note == "the input is invalid: RuntimeError: does not load in ONNX Runtime"


def test_default_verifier_failure_names_the_pass(ctx: PassContext) -> None:
    with pytest.raises(VerificationError) as info:
        run_pipeline(make_model(), "toy-insert-identity,toy-breaker", ctx)
    assert info.value.message == "the model failed verification after pass 'toy-breaker'"
    assert "NoSuchOp" in (info.value.note or "")


def test_custom_verifier_failure(ctx: PassContext) -> None:
    def verifier(model: ir.Model) -> None:
        raise RuntimeError("session creation failed")

    with pytest.raises(VerificationError, match="after pass 'toy-insert-identity'") as info:
        run_pipeline(make_model(), "toy-insert-identity", ctx, verifier=verifier)
    assert info.value.note == "RuntimeError: session creation failed"


def test_requires_violation(ctx: PassContext) -> None:
    model = make_model()
    with pytest.raises(PipelineSyntaxError) as info:
        run_pipeline(model, "toy-skip-matmul", ctx)
    assert "'toy-skip-matmul' requires pass 'toy-insert-identity'" in info.value.message
    assert [n.op_type for n in model.graph] == ["MatMul", "Relu"]  # nothing ran


def test_not_applicable(ctx: PassContext) -> None:
    with pytest.raises(PassNotApplicableError, match="^toy-refuser: this model has no KV cache$"):
        run_pipeline(make_model(), "toy-refuser", ctx)


def test_require_calibration(ctx: PassContext) -> None:
    with pytest.raises(PassNotApplicableError, match="toy-needs-calibration: needs calibration data"):
        run_pipeline(make_model(), "toy-needs-calibration", ctx)
    ctx.calibration = object()
    run_pipeline(make_model(), "toy-needs-calibration", ctx)


def test_structure_error_after_a_pass_names_the_pass(ctx: PassContext) -> None:
    with pytest.raises(PassNotApplicableError) as info:
        run_pipeline(make_model(), "toy-insert-identity,toy-structure", ctx)
    assert info.value.message.startswith(
        "toy-structure: cannot apply to the model as rewritten by 'toy-insert-identity': block starting at node"
    )


def test_structure_error_in_analysis_names_the_pass() -> None:
    calls: list[int] = []

    def analyze(model: ir.Model) -> Any:  # the analysis of the model the first pass rewrote fails
        calls.append(1)
        if len(calls) > 1:
            raise StructureError("block starting at node 'Relu_0': no residual stream")
        return object()

    with pytest.raises(PassNotApplicableError) as info:
        run_pipeline(make_model(), "toy-insert-identity,toy-insert-identity{count=2}", PassContext(analyze=analyze))
    assert info.value.message == (
        "toy-insert-identity: cannot apply to the model as rewritten by 'toy-insert-identity': "
        "block starting at node 'Relu_0': no residual stream"
    )


def test_third_party_warnings_are_demoted(ctx: PassContext, caplog: pytest.LogCaptureFixture) -> None:
    # The CLI raises third-party loggers to CRITICAL when it runs in-process (earlier tests): start level.
    caplog.set_level(logging.NOTSET, logger="onnx_ir")
    first, second = make_model(), make_model()  # (building them logs an onnx-ir warning of its own)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_pipeline(first, "toy-noisy", ctx)
    assert [r for r in caplog.records if r.name.startswith("onnx_ir")] == []  # nothing reached the user
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="parekit.thirdparty"):
        run_pipeline(second, "toy-noisy", ctx)
    (record,) = [r for r in caplog.records if r.name == "parekit.thirdparty"]
    assert record.levelno == logging.DEBUG
    assert "Shape inference failed: inference blew up" in record.getMessage()
    assert record.exc_info is not None  # the traceback is kept for -vv
    # Outside the run the library's logger is as it was.
    assert logging.getLogger("onnx_ir.passes.common.shape_inference").propagate


class RecordingBar:
    """Stands in for the rich progress bar; records every call the manager makes on it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> int:
            self.calls.append((name, args + tuple(kwargs.values())))
            return 7  # the task id

        return record


def test_progress_bar_shows_each_pass(ctx: PassContext, monkeypatch: pytest.MonkeyPatch) -> None:
    bar = RecordingBar()
    monkeypatch.setattr(manager, "progress_bar", lambda: bar)
    run_pipeline(make_model(), "toy-insert-identity,toy-insert-identity{count=0}", ctx, progress=True)
    step = [("update", (7, "toy-insert-identity")), ("advance", (7,))]
    assert bar.calls == [("start", ()), ("add_task", ("passes", 2)), *step, *step, ("stop", ())]


def test_progress_bar_stops_when_a_pass_fails(ctx: PassContext, monkeypatch: pytest.MonkeyPatch) -> None:
    bar = RecordingBar()
    monkeypatch.setattr(manager, "progress_bar", lambda: bar)
    with pytest.raises(PassNotApplicableError):
        run_pipeline(make_model(), "toy-refuser", ctx, progress=True)
    assert bar.calls[-1] == ("stop", ())


def test_pass_outside_manager_is_an_onnx_ir_pass(ctx: PassContext) -> None:
    model = make_model()
    pass_ = InsertIdentity(InsertOptions(count=1), ctx)
    result = ir.passes.PassManager([pass_])(model)
    assert result.modified
    assert pass_.report.sites == [{"after": "y", "index": 0}]
