"""Shared fixtures: sample models exported once per machine (cached by content key), the CLI runner.

Torch policy (one place): everything that needs the ``samples`` extra (torch, transformers) goes through
the ``samples_extra`` fixture — ``sample_path``, ``load_sample`` and ``torch`` depend on it — so a run
without that extra *skips* those tests with one reason instead of failing them. Tests do not call
``pytest.importorskip("torch")`` themselves: they ask for the ``torch`` fixture.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAMPLES_EXTRA = ("torch", "transformers")
SAMPLES_SKIP_REASON = (
    "the samples extra is not installed (torch, transformers): pip install -e '.[samples]' "
    "(scripts/setup.sh installs it)"
)


def samples_extra_missing() -> list[str]:
    """Names of the samples extra's packages that cannot be imported."""
    missing = []
    for name in SAMPLES_EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


@pytest.fixture(scope="session")
def samples_extra() -> None:
    """Skip the test (one reason for all) when torch or transformers is missing (checked once)."""
    missing = samples_extra_missing()
    if missing:
        pytest.skip(f"{SAMPLES_SKIP_REASON}; missing: {', '.join(missing)}")


@pytest.fixture(scope="session")
def torch(samples_extra):
    """The ``torch`` module (the test is skipped without the samples extra)."""
    import torch as torch_module

    return torch_module


@pytest.fixture(scope="session")
def sample_path(samples_extra):
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


@pytest.fixture(autouse=True)
def _restore_logging_and_warnings():
    """The CLI configures logging and warning filters for its process (levels, handlers, filters); tests
    run it in-process, so each test gets back the state it started with."""
    import logging
    import warnings

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: (lg.level, lg.propagate, lg.disabled)
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    filters = warnings.filters[:]
    yield
    warnings.filters[:] = filters
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lg in logging.root.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            before, lg.propagate, lg.disabled = levels.get(name, (logging.NOTSET, True, False))
            lg.setLevel(before)  # (setLevel also clears logging's cached effective levels)


def native_build_missing() -> str | None:
    """Why the native library cannot be built here (no CMake or no C++ compiler), or ``None``."""
    import shutil

    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            return f"no '{tool}' on PATH: the native library cannot be built here"
    return None


@pytest.fixture(scope="session")
def native_library():
    """``libparekit_ort.so``, (re)built once per session (incremental: seconds when up to date).

    Skips only where no C++ toolchain exists; a failing build fails the tests that need it.
    """
    reason = native_build_missing()
    if reason:
        pytest.skip(reason)
    import parekit.native

    return parekit.native.build()


@pytest.fixture(scope="session")
def trt_plugin_library(native_library):
    """``libparekit_trt_plugins.so`` of the same build. Skips only where nvcc or TensorRT headers are
    missing (CMake then leaves the plugins out, saying so); where both exist a missing library fails."""
    import shutil

    from parekit.native.status import _cache_value

    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc on PATH: the CUDA kernels and TensorRT plugins are not built here")
    cache = native_library.parent / "CMakeCache.txt"
    headers = _cache_value(cache, "PAREKIT_TRT_FOUND_HEADERS") or _cache_value(cache, "PAREKIT_TRT_INCLUDE_DIR")
    kernel_lens = __import__("importlib.util").util.find_spec("kernel_lens")
    if not (headers and not headers.endswith("NOTFOUND")) and kernel_lens is None:
        pytest.skip("no TensorRT headers (PAREKIT_TRT_INCLUDE_DIR or pip install --no-deps kernel-lens==2.0.1)")
    path = native_library.parent / "plugins_trt" / "libparekit_trt_plugins.so"
    assert path.is_file(), f"nvcc and TensorRT headers exist but {path} was not built"
    return path
