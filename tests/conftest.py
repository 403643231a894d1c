"""Shared fixtures: sample models exported once per machine (cached by content key)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def sample_path():
    """``sample_path(name, opset=18) -> Path`` of the cached export (never modify it)."""
    from parekit.frontends import zoo

    def get(name: str, opset: int = 18) -> Path:
        return zoo.export_sample(name, opset=opset)

    return get


@pytest.fixture()
def load_sample(sample_path):
    """``load_sample(name, opset=18) -> onnx_ir.Model``: a fresh in-memory copy."""
    from parekit.frontends.onnx_file import load_model

    def get(name: str, opset: int = 18):
        return load_model(sample_path(name, opset))

    return get


@pytest.fixture()
def run_cli():
    """``run_cli(*args, code=0) -> click.testing.Result``: run the ``parekit`` command line in-process.

    Arguments are turned into strings; ``code`` is the expected exit status (``None``: any), checked with
    the command's output in the assertion message.
    """
    from click.testing import CliRunner

    from parekit.cli.main import cli

    def run(*args: object, code: int | None = 0):
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, result.output
        return result

    return run
