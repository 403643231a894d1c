"""Capturing torch modules and ExportedPrograms with the torch.export-based exporter."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from parekit.backends.ort import OrtRunner  # noqa: E402
from parekit.errors import ModelLoadError  # noqa: E402
from parekit.frontends.torch_capture import capture  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.proj(x)) + x


@pytest.mark.parametrize("as_program", [False, True])
def test_capture_module_and_exported_program(as_program):
    module = Tiny().eval()
    x = torch.randn(2, 5, 8)
    dyn = {"x": {0: "batch", 1: "seq"}}
    if as_program:
        ep_dyn = {"x": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}}
        target = torch.export.export(module, (x,), dynamic_shapes=ep_dyn)
    else:
        target = module
    model = capture(target, (x,), dynamic_shapes=None if as_program else dyn, output_names=["y"])
    assert [v.name for v in model.graph.outputs] == ["y"]
    dims = list(model.graph.inputs[0].shape)[:2]
    assert all(not isinstance(d, int) for d in dims)  # batch and seq stay symbolic
    if not as_program:  # a module's dynamic_shapes names survive; an ExportedProgram's are torch's own
        assert [str(d) for d in dims] == ["batch", "seq"]
    feed = np.random.default_rng(0).standard_normal((3, 7, 8)).astype(np.float32)
    got = OrtRunner(model).run({"x": feed})["y"]
    with torch.no_grad():
        want = module(torch.from_numpy(feed)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_unsupported_opset_is_refused():
    with pytest.raises(ModelLoadError, match="opset 12"):
        capture(Tiny(), (torch.randn(1, 2, 8),), opset=12)


def test_exporter_noise_goes_to_debug(capfd, caplog):
    class Two(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    caplog.set_level(logging.DEBUG, logger="parekit")
    x = torch.randn(2, 5)
    capture(Two().eval(), (x, x), dynamic_shapes={"x": {0: "batch"}, "y": {0: "batch"}}, output_names=["z"])
    assert capfd.readouterr().err == ""  # the axis-name UserWarning (and friends) are not printed ...
    debug = [r.getMessage() for r in caplog.records if r.name == "parekit.frontends.torch_capture"]
    assert any("The axis name: batch will not be used" in m for m in debug)  # ... they are logged at DEBUG
