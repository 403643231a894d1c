"""Native test cases: KvQuantKey/Value and KvDequantKey/Value (KIVI-style packed cache).

Every case is bit-exact: codes, float16 scale/min and the residual window are integers or copies, and the
dequantized floats are one float32 product and one float32 sum, as in the reference.

Besides random caches, the sweep has data built to catch a rounding mismatch: groups whose float16 scale
is an exact power of two and whose values sit exactly on ``.5`` code boundaries (``np.round`` rounds
half to even, ``std::round`` would not), constant groups (scale 0, divided by 1, with a float16-rounded
minimum that leaves a nonzero code), negative and large magnitudes (a minimum beyond float16's range
rounds to -inf), and store bytes whose high bits are set for ``bits`` 5…7 (dequantization keeps
``byte % 2^bits``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from parekit.ops.kv_dequant import KV_DEQUANT_KEY, KV_DEQUANT_VALUE
from parekit.ops.kv_quant import KV_QUANT_KEY, KV_QUANT_VALUE
from parekit.ops.kv_quant_attention import KV_QUANT_ATTENTION
from parekit.ops.kv_quant_format import quantize_reference
from parekit.ops.opdef import OpDef

from .cases import Case

# KvQuant* sweeps: (B, H, Nq, R, S, D, bits, group, residual). Decode steps (S = 1) that move no group and
# that move one; prefill (empty store, no window) with and without a partial last group; residual 0;
# L < residual; group 1; batch 3 with several heads; the SmolLM2 decode shape at 2048 cached tokens.
QUANT_SHAPES = [
    (1, 3, 64, 32, 1, 64, 8, 32, 32),  # decode, L = 33: nothing moves
    (1, 3, 64, 63, 1, 64, 8, 32, 32),  # decode, L = 64: one group moves
    (2, 2, 0, 0, 100, 64, 8, 32, 32),  # prefill: 64 quantized, 36 stay
    (2, 2, 0, 0, 96, 16, 4, 32, 32),  # prefill, whole groups
    (1, 2, 32, 40, 30, 32, 4, 32, 32),  # the OpDef example shape, int4
    (3, 4, 16, 5, 27, 8, 8, 16, 0),  # residual 0: everything whole moves
    (1, 1, 0, 3, 2, 8, 8, 4, 32),  # L < residual
    (2, 3, 12, 2, 9, 12, 6, 1, 3),  # group 1
    (1, 2, 14, 7, 9, 14, 5, 7, 4),  # group 7 divides D = 14; 5 bits
    (2, 1, 4, 3, 13, 6, 7, 2, 5),  # 7 bits
    (1, 3, 2016, 63, 1, 64, 8, 32, 32),  # SmolLM2 decode at 2048 tokens, one group moves
    (1, 3, 2016, 63, 1, 64, 4, 32, 32),
]

# KvDequant* sweeps: (B, H, Nq, R, D, bits, group).
DEQUANT_SHAPES = [
    (1, 3, 64, 33, 64, 8, 32),
    (2, 2, 96, 0, 16, 4, 32),  # R = 0
    (2, 2, 0, 5, 16, 4, 32),  # empty store
    (3, 4, 48, 7, 8, 8, 16),
    (2, 3, 12, 2, 12, 6, 1),  # group 1
    (1, 2, 14, 3, 14, 5, 7),
    (2, 1, 6, 1, 6, 7, 2),
    (1, 1, 200, 1, 10, 4, 40),  # groups wider than D (keys)
    (1, 3, 2016, 32, 64, 8, 32),  # SmolLM2: [1, 3, 2048, 64] cache
    (1, 3, 2016, 32, 64, 4, 32),
]


ATTENTION_TOL = (1e-5, 1e-5)
"""KvQuantAttention accumulates in float32 in its own order (the reference: float64)."""


def _values_group(group: int, d: int) -> int:
    """Values need group | D: the same group where it divides D, else D."""
    return group if d % group == 0 else d


def _boundary_groups(
    rng: np.random.Generator, lead: tuple[int, ...], length: int, group: int, bits: int
) -> np.ndarray:
    """``[*lead, length]`` float32 in groups of ``group`` along the last axis; each group's min is
    ``m * q`` and max ``m * q + levels * q`` for a power of two ``q``, so its float16 scale is exactly ``q``;
    the other values sit on ``k + 0.5`` code boundaries (exact ties) or on whole codes."""
    levels = 2**bits - 1
    ng = length // group
    q = 2.0 ** rng.integers(-6, 4, size=(*lead, ng, 1))
    m = rng.integers(-300, 300, size=(*lead, ng, 1))
    y = rng.integers(0, levels, size=(*lead, ng, group)) + np.where(
        rng.random((*lead, ng, group)) < 0.7, 0.5, 0.0
    )
    if group >= 2:
        y[..., 0], y[..., 1] = 0.0, float(levels)
    else:
        y[..., 0] = 0.0
    return (m * q + y * q).astype(np.float32).reshape(*lead, ng * group)


def _constant_groups(lead: tuple[int, ...], length: int, group: int) -> np.ndarray:
    """Constant groups (scale 0): values whose float16 rounding leaves ``x - min`` at -0.2 … 0.7."""
    consts = np.array([3000.7, 1000.3, -2.5, 0.1, -3000.7, 7.0], np.float32)
    ng = length // group
    vals = consts[np.arange(int(np.prod(lead)) * ng) % consts.size].reshape(*lead, ng, 1)
    return np.broadcast_to(vals, (*lead, ng, group)).astype(np.float32).reshape(*lead, ng * group)


def _full(
    kind: str, rng: np.random.Generator, shape: tuple[int, int, int, int], group: int, bits: int, keys: bool
) -> np.ndarray:
    """A float ``[B, H, L, D]`` of the given kind; structured kinds are built along the group axis."""
    b, h, length, d = shape
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "large":  # magnitudes near float16's limit, and a shifted band whose minimum overflows it
        x = rng.standard_normal(shape) * 2.0e4
        x[:, :, ::3] -= 7.0e4
        return x.astype(np.float32)
    axis_len = length if keys else d
    whole = axis_len // group * group
    lead = (b, h, d) if keys else (b, h, length)
    out = rng.standard_normal((*lead, axis_len)).astype(np.float32)
    if whole:
        make = (
            _boundary_groups(rng, lead, whole, group, bits)
            if kind == "ties"
            else _constant_groups(lead, whole, group)
        )
        out[..., :whole] = make
    return np.ascontiguousarray(np.swapaxes(out, 2, 3)) if keys else out


def _store(rng: np.random.Generator, b: int, h: int, nq: int, d: int, bits: int, group: int, keys: bool):
    stored = rng.standard_normal((b, h, nq, d)).astype(np.float32)
    return quantize_reference(stored, bits, group, keys)


def _quant_cases(op: OpDef, keys: bool) -> Iterator[Case]:
    rng = np.random.default_rng(20 if keys else 21)
    for b, h, nq, r, s, d, bits, group, keep in QUANT_SHAPES:
        g = group if keys else _values_group(group, d)
        attrs = {"bits": bits, "group": g, "residual": keep}
        kinds = ["normal"] if nq > 256 else ["normal", "ties", "constant", "large"]
        for kind in kinds:
            full = _full(kind, rng, (b, h, r + s, d), g, bits, keys)
            codes, scale, mn = _store(rng, b, h, nq, d, bits, g, keys)
            name = f"b{b}h{h}nq{nq}r{r}s{s}d{d}bits{bits}g{g}res{keep}.{kind}"
            yield Case(op, name, [codes, scale, mn, full[:, :, :r].copy(), full[:, :, r:].copy()], attrs)


def _dequant_cases(op: OpDef, keys: bool) -> Iterator[Case]:
    rng = np.random.default_rng(30 if keys else 31)
    for b, h, nq, r, d, bits, group in DEQUANT_SHAPES:
        g = group if keys else _values_group(group, d)
        attrs = {"bits": bits, "group": g}
        residual = rng.standard_normal((b, h, r, d)).astype(np.float32)
        codes, scale, mn = _store(rng, b, h, nq, d, bits, g, keys)
        name = f"b{b}h{h}nq{nq}r{r}d{d}bits{bits}g{g}"
        yield Case(op, name + ".quantized", [codes, scale, mn, residual], attrs)
        # any byte (high bits set for bits 5..7), any float16 scale/min: negative, subnormal, zero, large
        raw = rng.integers(-128, 128, size=codes.shape).astype(np.int8)
        pick = rng.random(scale.shape)
        s16 = np.where(pick < 0.1, 0.0, rng.standard_normal(scale.shape) * np.where(pick < 0.3, 1e-6, 50.0))
        m16 = rng.standard_normal(scale.shape) * 300.0
        yield Case(op, name + ".raw", [raw, s16.astype(np.float16), m16.astype(np.float16), residual], attrs)


def _errors() -> Iterator[Case]:
    f16, f32 = np.float16, np.float32

    def z(shape, dtype):
        return np.zeros(shape, dtype)

    i8 = np.int8
    for op, keys in ((KV_DEQUANT_KEY, True), (KV_DEQUANT_VALUE, False)):
        sc = (1, 2, 2, 16) if keys else (1, 2, 64, 1)  # Nq = 64, D = 16, group 32 (keys) / 16 (values)
        g = 32 if keys else 16
        res = z((1, 2, 3, 16), f32)
        good = [z((1, 2, 64, 16), i8), z(sc, f16), z(sc, f16)]
        yield Case(
            op,
            "codes_rank3.error",
            [z((2, 64, 16), i8), good[1], good[2], res],
            {"group": g},
            error="input 'codes' must have rank 4",
        )
        yield Case(
            op,
            "residual_rank5.error",
            [*good, z((1, 1, 2, 3, 16), f32)],
            {"group": g},
            error="input 'residual' must have rank 4",
        )
        yield Case(
            op,
            "codes_width.error",
            [*good, res],
            {"group": g, "bits": 4},
            error="expected [B, H, Nq, D/p] = [1, 2, 64, 8]",
        )
        yield Case(
            op,
            "odd_d_int4.error",
            [z((1, 2, 64, 7), i8), good[1], good[2], z((1, 2, 3, 15), f32)],
            {"group": g, "bits": 4},
            error="is not a multiple of 2 codes per byte",
        )
        yield Case(
            op,
            "batch_mismatch.error",
            [*good, z((2, 2, 3, 16), f32)],
            {"group": g},
            error="input 'codes' has shape [1, 2, 64, 16], expected",
        )
        bad_scale = (1, 2, 3, 16) if keys else (1, 2, 64, 2)
        yield Case(
            op,
            "scale_dims.error",
            [good[0], z(bad_scale, f16), good[2], res],
            {"group": g},
            error="input 'scale' has shape",
        )
        yield Case(
            op,
            "min_dims.error",
            [good[0], good[1], z(bad_scale, f16), res],
            {"group": g},
            error="input 'min' has shape",
        )
    yield Case(
        KV_DEQUANT_KEY,
        "nq_not_whole_groups.error",
        [z((1, 2, 40, 16), i8), z((1, 2, 1, 16), f16), z((1, 2, 1, 16), f16), z((1, 2, 3, 16), f32)],
        {"group": 32},
        error="not a multiple of group = 32",
    )
    yield Case(
        KV_DEQUANT_VALUE,
        "group_not_dividing_d.error",
        [z((1, 2, 4, 16), i8), z((1, 2, 4, 1), f16), z((1, 2, 4, 1), f16), z((1, 2, 3, 16), f32)],
        {"group": 12},
        error="group = 12 does not divide the head dim D = 16",
    )
    for op, keys in ((KV_QUANT_KEY, True), (KV_QUANT_VALUE, False)):
        sc = (1, 2, 1, 16) if keys else (1, 2, 32, 1)  # Nq = 32, D = 16, group 32 (keys) / 16 (values)
        g = 32 if keys else 16
        store = [z((1, 2, 32, 16), i8), z(sc, f16), z(sc, f16)]
        res, new = z((1, 2, 3, 16), f32), z((1, 2, 1, 16), f32)
        yield Case(
            op,
            "new_rank3.error",
            [*store, res, z((2, 1, 16), f32)],
            {"group": g},
            error="input 'new' must have rank 4",
        )
        yield Case(
            op,
            "new_channels.error",
            [*store, res, z((1, 2, 1, 8), f32)],
            {"group": g},
            error="input 'new' has shape [1, 2, 1, 8], expected [1, 2, *, 16]",
        )
        yield Case(
            op,
            "new_heads.error",
            [*store, res, z((1, 3, 1, 16), f32)],
            {"group": g},
            error="input 'new' has shape [1, 3, 1, 16]",
        )
        yield Case(
            op,
            "codes_width.error",
            [*store, res, new],
            {"group": g, "bits": 4},
            error="expected [B, H, Nq, D/p] = [1, 2, 32, 8]",
        )
        yield Case(
            op,
            "scale_rank3.error",
            [store[0], z((1, 2, 16), f16), store[2], res, new],
            {"group": g},
            error="input 'scale' must have rank 4",
        )
        bad = (1, 2, 2, 16) if keys else (1, 2, 32, 2)
        yield Case(
            op,
            "scale_dims.error",
            [store[0], z(bad, f16), z(bad, f16), res, new],
            {"group": g},
            error="input 'scale' has shape",
        )
        yield Case(
            op,
            "min_dims.error",
            [store[0], store[1], z(bad, f16), res, new],
            {"group": g},
            error="input 'min' has shape",
        )
    yield Case(
        KV_QUANT_VALUE,
        "group_not_dividing_d.error",
        [
            z((1, 2, 0, 16), i8),
            z((1, 2, 0, 1), f16),
            z((1, 2, 0, 1), f16),
            z((1, 2, 3, 16), f32),
            z((1, 2, 40, 16), f32),
        ],
        {"group": 12},
        error="group = 12 does not divide the head dim D = 16",
    )


# KvQuantAttention sweeps: (B, Hkv, rep, S, Nq, Tf, D, bits, group, mask heads, left padding).
ATTENTION_SHAPES = [
    (1, 3, 3, 1, 2016, 33, 64, 8, 32, 1, 0),  # SmolLM2 decode at 2049 tokens
    (1, 3, 3, 1, 2016, 33, 64, 4, 32, 1, 0),
    (2, 2, 1, 1, 32, 1, 16, 5, 16, 1, 3),  # no grouping, padded batch row
    (2, 1, 4, 5, 16, 9, 8, 8, 8, 4, 2),  # several new tokens, causal, per-head mask
    (1, 2, 2, 7, 0, 7, 8, 4, 4, 1, 0),  # prefill: empty store
    (1, 2, 2, 1, 24, 0, 8, 8, 4, 1, 0),  # no float tail
    (3, 2, 3, 2, 12, 3, 12, 6, 1, 6, 4),  # group 1, batch 3
    (1, 1, 2, 3, 42, 2, 14, 7, 14, 1, 0),  # group = D = 14, 7 bits
]


def _attention_inputs(rng, b, hkv, rep, s, nq, tf, d, bits, group, mask_heads, pad):
    t = nq + tf
    kc, ks, km = _store(rng, b, hkv, nq, d, bits, group, True)
    vc, vs, vm = _store(rng, b, hkv, nq, d, bits, _values_group(group, d), False)
    kt = rng.standard_normal((b, hkv, tf, d)).astype(np.float32)
    vt = rng.standard_normal((b, hkv, tf, d)).astype(np.float32)
    q = (rng.standard_normal((b, hkv * rep, s, d)) * 2).astype(np.float32)
    causal = np.arange(t)[None, :] <= np.arange(t - s, t)[:, None]
    mask = np.broadcast_to(causal, (b, mask_heads, s, t)).copy()
    if pad:
        mask[-1, :, :, :pad] = False
    return [q, kc, ks, km, kt, vc, vs, vm, vt, mask]


def _attention_cases() -> Iterator[Case]:
    rng = np.random.default_rng(40)
    for b, hkv, rep, s, nq, tf, d, bits, group, mh, pad in ATTENTION_SHAPES:
        attrs = {"bits": bits, "group": group}
        inputs = _attention_inputs(rng, b, hkv, rep, s, nq, tf, d, bits, group, mh, pad)
        name = f"b{b}hkv{hkv}rep{rep}s{s}nq{nq}tf{tf}d{d}bits{bits}g{group}mh{mh}pad{pad}"
        yield Case(KV_QUANT_ATTENTION, name, inputs, attrs, tol=ATTENTION_TOL)
    # a row that sees nothing (zeros), a mask broadcast over batch and heads, an explicit scale
    inputs = _attention_inputs(rng, 2, 2, 2, 3, 16, 4, 8, 8, 8, 1, 0)
    inputs[-1][0, :, 1, :] = False
    yield Case(KV_QUANT_ATTENTION, "masked_row.scale", inputs, {"group": 8, "scale": 0.3}, tol=ATTENTION_TOL)
    inputs = _attention_inputs(rng, 2, 2, 2, 3, 16, 4, 8, 8, 8, 1, 0)
    inputs[-1] = inputs[-1][:1].copy()
    yield Case(KV_QUANT_ATTENTION, "mask_broadcast", inputs, {"group": 8}, tol=ATTENTION_TOL)
    # refused at the API edge
    good = _attention_inputs(rng, 1, 2, 2, 1, 16, 2, 8, 8, 8, 1, 0)

    def swap(i, array):
        return [array if j == i else x for j, x in enumerate(good)]

    g8 = {"group": 8}
    yield Case(
        KV_QUANT_ATTENTION,
        "query_rank3.error",
        swap(0, good[0][0]),
        g8,
        error="input 'query' must have rank 4",
    )
    yield Case(
        KV_QUANT_ATTENTION,
        "heads_not_multiple.error",
        swap(0, np.zeros((1, 3, 1, 8), np.float32)),
        g8,
        error="query heads Hq = 3 are not a multiple of the KV heads Hkv = 2",
    )
    yield Case(
        KV_QUANT_ATTENTION,
        "v_tail_shape.error",
        swap(8, np.zeros((1, 2, 3, 8), np.float32)),
        g8,
        error="input 'v_tail' has shape [1, 2, 3, 8]",
    )
    yield Case(
        KV_QUANT_ATTENTION,
        "v_store_tokens.error",
        [*good[:5], good[5][:, :, :8].copy(), good[6][:, :, :8].copy(), good[7][:, :, :8].copy(), *good[8:]],
        g8,
        error="the value store holds 8 tokens, the key store 16",
    )
    yield Case(
        KV_QUANT_ATTENTION,
        "mask_length.error",
        swap(9, np.ones((1, 1, 1, 17), bool)),
        g8,
        error="input 'mask' has shape [1, 1, 1, 17], which does not broadcast to [B, Hq, S, T] = [1, 4, 1, 18]",
    )
    yield Case(
        KV_QUANT_ATTENTION,
        "k_scale_dims.error",
        swap(2, np.zeros((1, 2, 3, 8), np.float16)),
        g8,
        error="input 'k_scale' has shape [1, 2, 3, 8]",
    )


def cases() -> Iterator[Case]:
    yield from _quant_cases(KV_QUANT_KEY, keys=True)
    yield from _quant_cases(KV_QUANT_VALUE, keys=False)
    yield from _dequant_cases(KV_DEQUANT_KEY, keys=True)
    yield from _dequant_cases(KV_DEQUANT_VALUE, keys=False)
    yield from _errors()
    yield from _attention_cases()
