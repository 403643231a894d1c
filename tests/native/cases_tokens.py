"""Native test cases: TokenPrune, TokenMerge and TokenRestore (token reduction; EViT/ATS, ToMe).

Sweeps: batch 3, N = 1 and odd N, every ``keep`` edge (0, 1, just below 1), ``protect`` 0–3, ``fuse`` 0/1,
``r`` from 0 (identity) to above |A|, padding tokens (size 0, including protected and all-padding rows),
merged sizes (> 1), ranking ties (integer scores, duplicated and zero metric rows, float16 similarities),
a metric of another dtype than the tokens, the bench shapes (MiniLM prune, ViT-B/16 merge), and inputs the
kernels must refuse. Tolerances: the kernels compute in float64 in the reference's order, so against the
reference they are exact in practice; the stated tolerances are what the comparison with the function
bodies (float32/float16 MatMuls) needs as well: float64 1e-12, float32 1e-6, float16/bfloat16 one or two
units in the last place. ``assign`` (0/1) and kept rows compare exactly under any of them.
"""

from __future__ import annotations

from collections.abc import Iterator

import ml_dtypes
import numpy as np

from parekit.ops.token_merge import TOKEN_MERGE
from parekit.ops.token_prune import TOKEN_PRUNE
from parekit.ops.token_restore import TOKEN_RESTORE

from .cases import Case, reference_outputs

BF16 = np.dtype(ml_dtypes.bfloat16)
TOL = {
    np.dtype(np.float64): (1e-12, 1e-12),
    np.dtype(np.float32): (1e-6, 1e-6),
    np.dtype(np.float16): (2e-3, 2e-3),
    BF16: (1.6e-2, 1.6e-2),
}


def _name(dtype: np.dtype) -> str:
    return np.dtype(dtype).name


def _sizes(rng: np.random.Generator, b: int, n: int, kind: str, dtype: np.dtype) -> np.ndarray:
    """Token sizes: ``ones``; ``pad`` (a zero tail, a zero in the middle and at position 0 of batch 1);
    ``merged`` (1–4 with some zeros); ``allpad`` (every token padding)."""
    if kind == "ones":
        s = np.ones((b, n))
    elif kind == "pad":
        s = np.ones((b, n))
        s[:, n - max(1, n // 4) :] = 0
        s[:, n // 2] = 0
        if b > 1:
            s[1, 0] = 0
    elif kind == "merged":
        s = rng.integers(1, 5, (b, n)).astype(np.float64)
        s[rng.random((b, n)) < 0.2] = 0
    elif kind == "allpad":
        s = np.zeros((b, n))
    else:
        raise ValueError(kind)
    return s.astype(dtype)


def _scores(rng: np.random.Generator, b: int, n: int, ties: bool, dtype: np.dtype) -> np.ndarray:
    """Random scores in [-0.25, 1), or small integers (many ties)."""
    s = rng.integers(0, 3, (b, n)).astype(np.float64) if ties else rng.random((b, n)) * 1.25 - 0.25
    return s.astype(dtype)


def _bf16(inputs: list[np.ndarray]) -> tuple[int, ...]:
    return tuple(i for i, x in enumerate(inputs) if x.dtype == BF16)


def _case(op, name: str, inputs: list[np.ndarray], attrs: dict, dtype: np.dtype, **kw) -> Case:
    return Case(op, name, inputs, attrs, tol=TOL[np.dtype(dtype)], bf16=_bf16(inputs), **kw)


def prune_cases(rng: np.random.Generator) -> Iterator[Case]:
    kinds = ["ones", "pad", "merged", "allpad"]
    # attribute sweep (float32): every keep edge x protect 0-3 x fuse, on odd and even N, batch 3
    for b, n, c in [(3, 9, 4), (3, 10, 3)]:
        for ki, keep in enumerate([0.0, 0.3, 0.5, 0.999, 1.0]):
            for protect in range(4):
                for fuse in (0, 1):
                    kind = kinds[(ki + protect + fuse) % 4]
                    ties = (ki + fuse) % 2 == 0
                    x = rng.standard_normal((b, n, c)).astype(np.float32)
                    inputs = [x, _scores(rng, b, n, ties, np.float32), _sizes(rng, b, n, kind, np.float32)]
                    attrs = {"keep": keep, "protect": protect, "fuse": fuse}
                    name = f"b{b}n{n}c{c}.k{keep}p{protect}f{fuse}.{kind}{'.ties' if ties else ''}"
                    yield _case(TOKEN_PRUNE, name, inputs, attrs, np.float32)
    # dtypes and shapes: N = 1, N = 2, protect >= N, odd N, the MiniLM bench shape
    shapes = [(3, 1, 4, 0), (3, 1, 4, 1), (2, 2, 3, 1), (2, 3, 5, 4), (3, 17, 6, 1), (2, 128, 384, 1)]
    for dtype in (np.float32, np.float16, np.float64, BF16):
        for b, n, c, protect in shapes:
            for fuse in (0, 1):
                kind = "pad" if n > 2 else "ones"
                x = rng.standard_normal((b, n, c)).astype(dtype)
                inputs = [x, _scores(rng, b, n, n == 17, dtype), _sizes(rng, b, n, kind, dtype)]
                attrs = {"keep": 0.5, "protect": protect, "fuse": fuse}
                name = f"b{b}n{n}c{c}.k0.5p{protect}f{fuse}.{kind}.{_name(dtype)}"
                yield _case(TOKEN_PRUNE, name, inputs, attrs, dtype)
    # fuse with only negative scores among the pruned: weights clamp to 0, the fused token is the plain mean
    x = rng.standard_normal((3, 11, 5)).astype(np.float32)
    s = -rng.random((3, 11)).astype(np.float32)
    s[:, 1:4] = [2.0, 3.0, 1.0]
    inputs = [x, s, _sizes(rng, 3, 11, "merged", np.float32)]
    yield _case(TOKEN_PRUNE, "negative_scores.f1", inputs, {"keep": 0.3, "fuse": 1}, np.float32)
    # refused at the API edge
    t3, s2 = np.zeros((2, 5, 3), np.float32), np.ones((2, 5), np.float32)
    bad = [
        ("tokens_rank2", [np.zeros((2, 5), np.float32), s2, s2], "input 'tokens' must have rank 3"),
        ("scores_rank3", [t3, np.ones((2, 5, 1), np.float32), s2], "input 'scores' must have rank 2"),
        ("sizes_rank1", [t3, s2, np.ones(5, np.float32)], "input 'sizes' must have rank 2"),
        ("scores_n", [t3, np.ones((2, 4), np.float32), s2], "input 'scores' has shape [2, 4]"),
        ("sizes_b", [t3, s2, np.ones((3, 5), np.float32)], "input 'sizes' has shape [3, 5]"),
    ]
    for name, inputs, error in bad:
        yield Case(TOKEN_PRUNE, f"{name}.error", inputs, {}, error=error)


def _metric(
    rng: np.random.Generator,
    b: int,
    n: int,
    d: int,
    dtype: np.dtype,
    ties: bool,
    zero_row: bool | None = None,
) -> np.ndarray:
    """Random metric rows; with ``ties``, duplicated B rows (argmax ties), duplicated A rows (score ties)
    and (``zero_row``, default: unless float16) an all-zero row (the norm floor: cosine 0 with everything).

    Float16 metrics get no zero row by default: the function body's norm floor ``CastLike(1e-12)``
    underflows to 0 in float16, so its cosine of a zero row is 0/0 = NaN where the float64 reference has
    0; the ctest-only ``zero_metric_row`` cases cover that row for the kernel."""
    m = rng.standard_normal((b, n, d))
    if ties and n >= 8:
        m[:, 5] = m[:, 3]  # two B tokens every A token sees alike
        m[:, 7] = m[:, 3] * 2.0  # same direction, other norm
        m[:, 4] = m[:, 2]  # two A tokens with the same best match
        if zero_row if zero_row is not None else np.dtype(dtype) != np.float16:
            m[:, 6] = 0.0
    return m.astype(dtype)


def merge_cases(rng: np.random.Generator) -> Iterator[Case]:
    kinds = ["ones", "pad", "merged", "allpad"]
    # attribute sweep (float32): r 0 (identity) .. above |A| x protect 0-3, odd and even N, batch 3
    for b, n, c, d in [(3, 9, 4, 3), (3, 12, 5, 4)]:
        for ri, r in enumerate([0, 1, 2, 4, 100]):
            for protect in range(4):
                kind = kinds[(ri + protect) % 4]
                ties = (ri + protect) % 2 == 1
                x = rng.standard_normal((b, n, c)).astype(np.float32)
                inputs = [x, _metric(rng, b, n, d, np.float32, ties), _sizes(rng, b, n, kind, np.float32)]
                name = f"b{b}n{n}c{c}d{d}.r{r}p{protect}.{kind}{'.ties' if ties else ''}"
                yield _case(TOKEN_MERGE, name, inputs, {"r": r, "protect": protect}, np.float32)
    # dtypes and shapes: N = 1, N = 2, odd N, the ViT-B/16 shape (N 197, r 16; C cut to keep vectors small)
    shapes = [
        (3, 1, 4, 3, 1, 0),
        (3, 2, 4, 3, 1, 0),
        (2, 3, 4, 3, 1, 1),
        (3, 17, 8, 5, 5, 1),
        (2, 197, 24, 64, 16, 1),
    ]
    for dtype in (np.float32, np.float16, np.float64, BF16):
        for b, n, c, d, r, protect in shapes:
            for kind in ("merged", "pad") if n > 3 else ("ones",):
                x = rng.standard_normal((b, n, c)).astype(dtype)
                inputs = [x, _metric(rng, b, n, d, dtype, n == 17), _sizes(rng, b, n, kind, dtype)]
                name = f"b{b}n{n}c{c}d{d}.r{r}p{protect}.{kind}.{_name(dtype)}"
                yield _case(TOKEN_MERGE, name, inputs, {"r": r, "protect": protect}, dtype)
    # a metric of another float type than the tokens (the body casts only the similarities)
    for tdtype, mdtype in [
        (np.float32, np.float16),
        (np.float16, np.float32),
        (np.float64, np.float32),
        (np.float32, BF16),
    ]:
        x = rng.standard_normal((3, 15, 6)).astype(tdtype)
        inputs = [x, _metric(rng, 3, 15, 4, mdtype, True), _sizes(rng, 3, 15, "merged", tdtype)]
        name = f"metric_{_name(mdtype)}.tokens_{_name(tdtype)}"
        yield _case(TOKEN_MERGE, name, inputs, {"r": 4}, tdtype)
    # a zero metric row in float16 (the body gives NaN there, see _metric): kernel vs reference only
    for tdtype in (np.float16, np.float32):
        x = rng.standard_normal((3, 15, 6)).astype(tdtype)
        metric = _metric(rng, 3, 15, 4, np.float16, True, zero_row=True)
        inputs = [x, metric, _sizes(rng, 3, 15, "merged", tdtype)]
        name = f"zero_metric_row.metric_float16.tokens_{_name(tdtype)}"
        yield _case(TOKEN_MERGE, name, inputs, {"r": 4}, tdtype, ort=False)
    # Exact and near ties of the float64 cosines decide partners here. The function body computes the
    # cosines in the metric's type (float32/float16 ReduceL2, Div, MatMul), which breaks such ties its own
    # way (and gives NaN for a zero float16 row), so only the float64 variants also run in ONNX Runtime;
    # the others check the kernel against the reference (ctest).
    # integer metrics: many exactly tied cosines (the float32 screen must keep every tied candidate)
    for dtype in (np.float32, np.float16, np.float64):
        for d in (2, 3):
            x = rng.standard_normal((3, 33, 4)).astype(dtype)
            metric = rng.integers(-1, 2, (3, 33, d)).astype(dtype)
            inputs = [x, metric, _sizes(rng, 3, 33, "merged", dtype)]
            name = f"integer_metric.d{d}.{_name(dtype)}"
            yield _case(TOKEN_MERGE, name, inputs, {"r": 8}, dtype, ort=bool(dtype == np.float64))
    # near ties: two B tokens whose cosines with every A token differ far below float32 resolution (and,
    # for float32 tokens, by about one unit in the last place), so a float32 screen without its error
    # margin would pick the wrong partner
    for dtype, scale in ((np.float64, 1e-10), (np.float32, 3e-8)):
        b, n, d = 3, 41, 64
        base = rng.standard_normal((b, 1, d))
        metric = base + 0.3 * rng.standard_normal((b, n, d))
        metric[:, 5] = base[:, 0]
        metric[:, 9] = base[:, 0] + scale * rng.standard_normal((b, d))
        x = rng.standard_normal((b, n, 5)).astype(dtype)
        inputs = [x, metric.astype(dtype), _sizes(rng, b, n, "ones", dtype)]
        yield _case(
            TOKEN_MERGE, f"near_ties.{_name(dtype)}", inputs, {"r": 6}, dtype, ort=bool(dtype == np.float64)
        )
    # padding rules: real A tokens whose only free partners are padding, padding A tokens merging first
    x = rng.standard_normal((3, 13, 4)).astype(np.float32)
    sizes = np.ones((3, 13), np.float32)
    sizes[0, 1::2] = 0  # every B token of batch 0 is padding
    sizes[1, 2::2] = 0  # every free A token of batch 1 is padding
    sizes[2, 7:] = 0
    for r in (2, 6):
        inputs = [x, _metric(rng, 3, 13, 3, np.float32, False), sizes]
        yield _case(TOKEN_MERGE, f"padding_rules.r{r}", inputs, {"r": r}, np.float32)
    # refused at the API edge
    t3, s2 = np.zeros((2, 5, 3), np.float32), np.ones((2, 5), np.float32)
    bad = [
        ("tokens_rank4", [np.zeros((2, 5, 3, 1), np.float32), t3, s2], "input 'tokens' must have rank 3"),
        ("metric_rank2", [t3, s2, s2], "input 'metric' must have rank 3"),
        ("sizes_rank3", [t3, t3, t3], "input 'sizes' must have rank 2"),
        ("metric_n", [t3, np.zeros((2, 6, 3), np.float32), s2], "input 'metric' has shape [2, 6, 3]"),
        ("sizes_n", [t3, t3, np.ones((2, 4), np.float32)], "input 'sizes' has shape [2, 4]"),
        ("metric_b", [t3, np.zeros((1, 5, 3), np.float32), s2], "input 'metric' has shape [1, 5, 3]"),
    ]
    for name, inputs, error in bad:
        yield Case(TOKEN_MERGE, f"{name}.error", inputs, {}, error=error)


def restore_cases(rng: np.random.Generator) -> Iterator[Case]:
    # assignments the reducing ops really produce (one-hot rows; zero rows from pruning)
    for dtype in (np.float32, np.float16, np.float64, BF16):
        for b, n, c in [(3, 1, 4), (3, 9, 5), (2, 197, 24)]:
            x = rng.standard_normal((b, n, c)).astype(dtype)
            sizes = _sizes(rng, b, n, "pad" if n > 1 else "ones", dtype)
            producers = [
                (TOKEN_MERGE, [x, _metric(rng, b, n, 4, dtype, False), sizes], {"r": 16}),
                (TOKEN_PRUNE, [x, _scores(rng, b, n, False, dtype), sizes], {"keep": 0.5, "fuse": 0}),
                (TOKEN_PRUNE, [x, _scores(rng, b, n, False, dtype), sizes], {"keep": 0.3, "fuse": 1}),
            ]
            for op, inputs, attrs in producers:
                producer = Case(op, "producer", inputs, attrs)
                _, _, assign = reference_outputs(producer)
                m = assign.shape[2]
                reduced = rng.standard_normal((b, m, c)).astype(dtype)
                base = rng.standard_normal((b, n, c)).astype(dtype)
                label = op.op_type[5:].lower() + "".join(f"{k}{v}" for k, v in attrs.items())
                name = f"b{b}n{n}c{c}.from_{label}.{_name(dtype)}"
                yield _case(TOKEN_RESTORE, name, [reduced, assign, base], {}, dtype)
    # M = 0 (everything pruned away) and hand-made one-hot / zero rows
    yield _case(
        TOKEN_RESTORE,
        "m0",
        [
            np.zeros((2, 0, 3), np.float32),
            np.zeros((2, 4, 0), np.float32),
            rng.standard_normal((2, 4, 3)).astype(np.float32),
        ],
        {},
        np.float32,
    )
    # Rows that are not one-hot (several nonzeros, values other than 1, -0.0): the reference takes the
    # reduced token of the first nonzero entry, the function body computes assign @ reduced +
    # (1 - rowsum) * base; the two disagree there, so these run against the reference (ctest) only.
    assign = np.zeros((3, 7, 4), np.float32)
    assign[:, 0, 0] = 1
    assign[:, 1, [1, 2]] = 0.5
    assign[:, 2, 3] = 0.25
    assign[:, 3, [0, 3]] = [1.0, 1.0]
    assign[:, 4, 2] = -0.0
    assign[:, 5, [0, 1]] = [0.0, -2.0]
    reduced = rng.standard_normal((3, 4, 6)).astype(np.float32)
    base = rng.standard_normal((3, 7, 6)).astype(np.float32)
    yield Case(TOKEN_RESTORE, "general_assign", [reduced, assign, base], {}, ort=False)
    # refused at the API edge
    r3, a3, b3 = (
        np.zeros((2, 4, 3), np.float32),
        np.zeros((2, 6, 4), np.float32),
        np.zeros((2, 6, 3), np.float32),
    )
    bad = [
        ("reduced_rank2", [np.zeros((4, 3), np.float32), a3, b3], "input 'reduced' must have rank 3"),
        ("assign_rank2", [r3, np.zeros((6, 4), np.float32), b3], "input 'assign' must have rank 3"),
        ("base_rank4", [r3, a3, np.zeros((2, 6, 3, 1), np.float32)], "input 'base' must have rank 3"),
        ("assign_m", [r3, np.zeros((2, 6, 5), np.float32), b3], "input 'assign' has shape [2, 6, 5]"),
        ("assign_n", [r3, np.zeros((2, 7, 4), np.float32), b3], "input 'assign' has shape [2, 7, 4]"),
        ("reduced_c", [np.zeros((2, 4, 5), np.float32), a3, b3], "input 'reduced' has shape [2, 4, 5]"),
        ("reduced_b", [np.zeros((1, 4, 3), np.float32), a3, b3], "input 'reduced' has shape [1, 4, 3]"),
    ]
    for name, inputs, error in bad:
        yield Case(TOKEN_RESTORE, f"{name}.error", inputs, {}, error=error)


def cases() -> Iterator[Case]:
    rng = np.random.default_rng(10)
    yield from prune_cases(rng)
    yield from merge_cases(rng)
    yield from restore_cases(rng)
