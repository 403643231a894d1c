"""The pass manager on a tiny hand-written model with toy passes registered for the test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import pytest

import parekit
from parekit.errors import PassNotApplicableError, PipelineSyntaxError, VerificationError
from parekit.passes import registry
from parekit.passes.base import Pass, PassContext
from parekit.passes.manager import PIPELINE_KEY, PROVENANCE_KEY, VERSION_KEY, run_pipeline

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
    assert seen == [3, 4]
    assert after == [("toy-insert-identity", 3), ("toy-insert-identity", 4)]

    seen.clear()
    run_pipeline(
        make_model(), "toy-insert-identity,toy-insert-identity", ctx, verify_each=False, verifier=seen.append
    )
    assert len(seen) == 1  # without verify-each the result is still verified once, at the end


def test_default_verifier_passes_valid_models(ctx: PassContext) -> None:
    run_pipeline(make_model(), "toy-insert-identity", ctx)  # the ONNX checker, full check


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


def test_progress_bar_runs(ctx: PassContext) -> None:
    result = run_pipeline(make_model(), "toy-insert-identity", ctx, progress=True)
    assert result.reports[0].modified


def test_pass_outside_manager_is_an_onnx_ir_pass(ctx: PassContext) -> None:
    model = make_model()
    pass_ = InsertIdentity(InsertOptions(count=1), ctx)
    result = ir.passes.PassManager([pass_])(model)
    assert result.modified
    assert pass_.report.sites and pass_.report.seconds >= 0
