"""Tests of parekit.bench: report structure (never timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from rich.console import Console
from rich.table import Table

from parekit.bench import BenchReport, bench_models
from parekit.errors import BackendError, DataError

TEXT = """
<ir_version: 10, opset_import: ["" : 18]>
g (float[batch, 16] x) => (float[batch, 16] y) {
  y = MatMul(x, w)
}
"""
SLOWER = """
<ir_version: 10, opset_import: ["" : 18]>
g (float[batch, 16] x, float[1] unused) => (float[batch, 16] y) {
  a = MatMul(x, w)
  y = MatMul(a, w)
}
"""


def _save(path: Path, text: str) -> Path:
    proto = onnx.parser.parse_model(text)
    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    onnx.save(proto, path)
    return path


@pytest.fixture
def models(tmp_path: Path) -> list[Path]:
    return [_save(tmp_path / "a.onnx", TEXT), _save(tmp_path / "b.onnx", SLOWER)]


def _feeds() -> list[dict[str, np.ndarray]]:
    x = np.ones((2, 16), np.float32)
    return [{"x": x, "unused": np.zeros(1, np.float32)}, {"x": x * 2, "unused": np.zeros(1, np.float32)}]


def test_report_structure(models: list[Path]) -> None:
    report = bench_models(models, _feeds(), warmup=1, iters=3, threads=1, measure_memory=False)
    assert isinstance(report, BenchReport)
    assert [m.model for m in report.models] == [str(p) for p in models]
    assert (report.warmup, report.iters, report.feed_sets) == (1, 3, 2)
    assert report.providers == ["CPUExecutionProvider"]
    for m in report.models:
        assert m.runs == 3 * 2
        assert 0 < m.p10_ms <= m.median_ms <= m.p90_ms
        assert m.peak_rss_mib is None
    first, second = report.models
    assert first.ratio == 1.0
    assert second.ratio == pytest.approx(first.median_ms / second.median_ms)
    data = report.to_dict()
    json.dumps(data)
    assert data["models"][1]["model"] == str(models[1])
    table = report.render()
    assert isinstance(table, Table)
    console = Console(record=True, width=200)
    console.print(table)
    assert "b.onnx" in console.export_text()


def test_peak_memory_in_child_process(tmp_path: Path) -> None:
    # A 16 MiB weight: the child's peak must grow by at least that much, even while this
    # (parent) process is much bigger than the child (a peak inherited from it would hide this).
    ballast = np.ones(64 * 2**20, np.float32)  # 256 MiB held by the parent
    proto = onnx.parser.parse_model(TEXT.replace("16", "2048"))
    weight = np.full((2048, 2048), 1e-3, np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(weight, "w"))
    onnx.save(proto, tmp_path / "big.onnx")
    feeds = {"x": np.ones((1, 2048), np.float32)}
    report = bench_models([tmp_path / "big.onnx"], feeds, warmup=0, iters=1, measure_memory=True)
    del ballast
    peak = report.models[0].peak_rss_mib
    assert peak is not None and 16 <= peak < 2048


def test_errors(models: list[Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no models"):
        bench_models([], _feeds())
    with pytest.raises(DataError, match="iters >= 1"):
        bench_models(models, _feeds(), iters=0)
    with pytest.raises(DataError, match="no feed for input 'unused'"):
        bench_models(models, [{"x": np.ones((2, 16), np.float32)}], measure_memory=False)
    with pytest.raises(BackendError, match="no such model file"):
        bench_models([tmp_path / "absent.onnx"], _feeds(), measure_memory=False)
