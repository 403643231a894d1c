"""Third-party export chatter goes to parekit's logger at DEBUG, never to the terminal."""

from __future__ import annotations

import logging
import sys
import warnings

from parekit.frontends.export_log import third_party_to_debug


def test_third_party_warnings_and_logs_are_routed(capfd, caplog):
    noisy = logging.getLogger("torch.onnx._fake_registration")  # like torch: own stderr handler, no propagation
    own = logging.StreamHandler(sys.stderr)
    noisy.addHandler(own)
    noisy.propagate = False
    target = logging.getLogger("parekit.test_export_log")
    caplog.set_level(logging.DEBUG, logger="parekit")
    try:
        with third_party_to_debug(target):
            noisy.warning("torchvision is not installed. Skipping torchvision::nms")
            logging.getLogger("transformers.modeling_utils").error("some weights were not used")  # passes any verbosity
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
            warnings.warn("# The axis name: batch will not be used", UserWarning, stacklevel=1)
            logging.getLogger("parekit.frontends.zoo").info("exporting sample x")  # parekit's own progress
        assert capfd.readouterr().err == ""
        routed = [r.getMessage() for r in caplog.records if r.name == target.name]
        assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == target.name)
        assert any("torchvision is not installed" in m for m in routed)
        assert any(m.startswith("transformers.modeling_utils ERROR") for m in routed)
        assert any(m.startswith("FutureWarning: `isinstance") for m in routed)
        assert any(m.startswith("UserWarning: # The axis name") for m in routed)
        own_lines = [r for r in caplog.records if r.name == "parekit.frontends.zoo"]
        assert [r.levelno for r in own_lines] == [logging.INFO]  # untouched
        # everything is restored afterwards
        assert noisy.handlers == [own] and noisy.propagate is False
        noisy.warning("after")
        assert "after" in capfd.readouterr().err
    finally:
        noisy.removeHandler(own)
        noisy.propagate = True


def test_restored_when_the_block_raises(capfd):
    log = logging.getLogger("onnxscript._fake")
    before = (list(log.handlers), log.propagate)
    try:
        with third_party_to_debug(logging.getLogger("parekit.t")):
            raise KeyError("boom")
    except KeyError:
        pass
    assert (list(log.handlers), log.propagate) == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("visible again", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["visible again"]
