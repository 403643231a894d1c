"""How much faster: interleaved latency and per-model peak memory under ONNX Runtime."""

from parekit.bench.timing import BenchReport, ModelTiming, bench_models

__all__ = ["BenchReport", "ModelTiming", "bench_models"]
