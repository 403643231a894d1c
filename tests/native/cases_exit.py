"""Native test cases: ExitGate (early exit: the gate's signal and decision per row).

Sweeps: every signal, float32 and float16, leading dims of rank 1 to 3 ([B, V], [B, S, V], [B, H, S, V]),
V = 1, small and odd V, the bench shapes (SmolLM2 logits over its 49152-token vocabulary, MiniLM's
384-wide embeddings), thresholds that split the rows (chosen in a wide gap between scores, so that the
float32 function body and the kernel agree on every decision), never-fire and always-fire thresholds;
edge rows: ties for the top, masked (-inf) logits, NaN and +inf (score NaN, never taken), an all -inf row,
huge logits, zero vectors and (anti)parallel vectors for cosine; and inputs the kernel must refuse.
Tolerance: the kernel sums in double and rounds the score once, so against the float64 reference it is
within a unit or two of float32 (1e-6); the comparison with the float32 body uses 1e-5.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from parekit.ops.exit_gate import EXIT_GATE, SIGNALS

from .cases import Case

TOL = (1e-6, 1e-6)
NEVER = {"margin": 1.01, "maxprob": 1.01, "cosine": 1.01, "entropy": -0.01}
ALWAYS = {"margin": -1.0, "maxprob": -1.0, "cosine": -1.01, "entropy": 1e9}


def _shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _inputs(rng: np.random.Generator, signal: str, shape: tuple[int, ...], dtype: type, scale: float = 3.0):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    if signal != "cosine":
        return [x]
    prev = (x.astype(np.float32) * 0.8 + rng.standard_normal(shape).astype(np.float32) * 0.6).astype(dtype)
    return [x, prev]


def _splitting_threshold(signal: str, inputs: list[np.ndarray]) -> float:
    """A threshold in the widest gap between the middle scores (rows on both sides where there are two)."""
    scores = np.sort(EXIT_GATE.run_reference(inputs, {"signal": signal, "threshold": 0.0})[0].ravel())
    scores = scores[np.isfinite(scores)].astype(np.float64)
    if scores.size < 2:
        return 0.5
    lo, hi = scores.size // 4, max(scores.size // 4 + 1, 3 * scores.size // 4)
    gaps = np.diff(scores)[lo:hi]
    k = lo + int(np.argmax(gaps))
    return float((scores[k] + scores[k + 1]) / 2)


def _case(signal: str, name: str, inputs: list[np.ndarray], threshold: float) -> Case:
    return Case(EXIT_GATE, f"{signal}.{name}", inputs, {"signal": signal, "threshold": threshold}, tol=TOL)


def sweep_cases(rng: np.random.Generator) -> Iterator[Case]:
    shapes = [(3, 7), (2, 5, 11), (4, 1), (2, 3, 2, 9), (5, 16), (2, 4, 1000)]
    for signal in SIGNALS:
        for dtype in (np.float32, np.float16):
            for shape in shapes:
                inputs = _inputs(rng, signal, shape, dtype)
                base = f"{_shape_name(shape)}.{np.dtype(dtype).name}"
                yield _case(signal, base, inputs, _splitting_threshold(signal, inputs))
            inputs = _inputs(rng, signal, (3, 4, 6), dtype)
            yield _case(signal, f"never.{np.dtype(dtype).name}", inputs, NEVER[signal])
            yield _case(signal, f"always.{np.dtype(dtype).name}", inputs, ALWAYS[signal])


def bench_cases(rng: np.random.Generator) -> Iterator[Case]:
    # SmolLM2's logits (vocabulary 49152) for 2 rows; MiniLM's embeddings [8, 384] for cosine.
    for signal in ("margin", "entropy", "maxprob"):
        inputs = _inputs(rng, signal, (1, 2, 49152), np.float32)
        yield _case(signal, "smollm2_logits", inputs, _splitting_threshold(signal, inputs))
    inputs = _inputs(rng, "cosine", (8, 384), np.float32, scale=0.05)
    yield _case("cosine", "minilm_embedding", inputs, _splitting_threshold("cosine", inputs))


def edge_cases() -> Iterator[Case]:
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    x = np.zeros((7, 6), np.float32)
    x[0, [1, 4]] = 5.0  # tie for the top: margin 0
    x[1] = np.arange(6)
    x[2, [0, 3]] = -inf  # masked logits: p = 0, 0 log 0 = 0
    x[3, 2] = nan  # NaN: score NaN, never taken
    x[4, 5] = inf  # +inf: score NaN
    x[5] = -inf  # nothing finite: NaN
    x[6] = [1e30, -1e30, 3e29, 0.0, 1e30 - 1e24, -5.0]  # huge logits: still stable
    for signal in ("margin", "entropy", "maxprob"):
        for dtype in (np.float32, np.float16):
            finite = np.where(np.isfinite(x), np.clip(x, -6e4, 6e4), x)  # huge values within float16's range
            xs = finite.astype(dtype) if dtype is np.float16 else x
            yield _case(signal, f"edges.{np.dtype(dtype).name}", [xs], ALWAYS[signal])
    one_hot = np.zeros((2, 3, 8), np.float32)
    one_hot[..., 0] = 80.0  # margin = maxprob = 1 exactly: a never-fire threshold must still not fire
    for signal in ("margin", "maxprob"):
        yield _case(signal, "one_hot.never", [one_hot], NEVER[signal])
        yield _case(signal, "one_hot.at_one", [one_hot], 1.0)
    yield _case("entropy", "one_hot.never", [one_hot], NEVER["entropy"])
    a = np.array([[1, 0], [0, 0], [1, 2], [3, 4], [0, 0], [nan, 1], [2, 2], [1e-20, 1e-20]], np.float32)
    b = np.array([[1, 1], [1, 1], [-2, -4], [0, 0], [0, 0], [1, 1], [3, 3], [1e-20, 1e-20]], np.float32)
    for dtype in (np.float32, np.float16):
        yield _case("cosine", f"edges.{np.dtype(dtype).name}", [a.astype(dtype), b.astype(dtype)], 0.5)
    yield _case("cosine", "parallel.never", [a[6:7], b[6:7]], NEVER["cosine"])


def error_cases() -> Iterator[Case]:
    x, p = np.zeros((2, 5), np.float32), np.zeros((2, 5), np.float32)
    bad = [
        ("cosine_without_prev", [x], {"signal": "cosine"}, "signal=cosine needs input 'prev'"),
        ("prev_with_margin", [x, p], {"signal": "margin"}, "input 'prev' is only read by signal=cosine"),
        ("prev_with_entropy", [x, p], {"signal": "entropy"}, "input 'prev' is only read by signal=cosine"),
        ("x_rank1", [np.zeros(5, np.float32)], {}, "input 'x' must have rank >= 2"),
        ("x_empty_axis", [np.zeros((2, 0), np.float32)], {}, "input 'x' must have a non-empty last axis"),
        ("prev_shape", [x, x[:, :4].copy()], {"signal": "cosine"}, "input 'prev' [2, 4] must have"),
        ("unknown_signal", [x], {"signal": "margn"}, "attribute 'signal' must be one of margin, entropy"),
        ("nan_threshold", [x], {"threshold": float("nan")}, "attribute 'threshold' = nan is out of range"),
    ]
    for name, inputs, attrs, error in bad:
        yield Case(EXIT_GATE, f"{name}.error", inputs, attrs, error=error)


def cases() -> Iterator[Case]:
    rng = np.random.default_rng(2024)
    yield from sweep_cases(rng)
    yield from bench_cases(rng)
    yield from edge_cases()
    yield from error_cases()
