"""Every parekit op on its bench shape: ONNX Runtime with the native kernel vs the function body.

    python bench/native_ops.py [--threads 2] [--iters 50] [--ops KvWindow,...] [--out FILE.md]

Each op runs as a one-node model (the node a pass inserts, with its function attached) on the shape it
sees in the benchmarks of the passes: SmolLM2-135M decode at 2048 cached tokens (9 query heads, 3 KV
heads, head dim 64; kv-window/kv-evict at a 512-token budget, kv-quant group 32 with a 32-token float
window), MiniLM token-prune (batch 8 x 128 tokens x 384), ViT-B/16 token-merge (batch 8 x 197 x 768 with a
64-wide metric) and token-restore. Two sessions per
op (library registered / not), interleaved run by run, ``--iters`` timed runs each after warm-up;
reported: median ms and the ratio body / kernel. Outputs of the two sessions are compared on every op
(bit-exact or within 1e-5) so a fast wrong kernel cannot pass.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from parekit.native import require_library
from parekit.ops import OpDef, get_op

RNG = np.random.default_rng(0)

# SmolLM2-135M: 9 query heads, 3 KV heads, head dim 64.
HQ, HKV, D = 9, 3, 64


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _store(op_kind: str, tokens: int, bits: int = 8, group: int = 32) -> list[np.ndarray]:
    """A quantized store of ``tokens`` tokens (codes, scale, min) plus a 32-token float window."""
    per_byte = 8 // bits if bits == 4 else 1
    codes = RNG.integers(-128, 128, size=(1, HKV, tokens, D // per_byte), dtype=np.int8)
    if op_kind == "key":
        scale = (RNG.random((1, HKV, tokens // group, D)) * 0.01).astype(np.float16)
        mn = RNG.standard_normal((1, HKV, tokens // group, D)).astype(np.float16)
    else:
        scale = (RNG.random((1, HKV, tokens, D // group)) * 0.01).astype(np.float16)
        mn = RNG.standard_normal((1, HKV, tokens, D // group)).astype(np.float16)
    return [codes, scale, mn, _f32(1, HKV, 32, D)]


def _probs(s: int, t: int) -> np.ndarray:
    x = RNG.random((1, HQ, s, t)).astype(np.float32)
    return x / x.sum(-1, keepdims=True)


def _merge_inputs() -> list[np.ndarray]:
    return [_f32(8, 197, 768), _f32(8, 197, 64), np.ones((8, 197), np.float32)]


def _restore_inputs() -> list[np.ndarray]:
    # a real assign: the one TokenPrune produces for MiniLM's layer-2 prune
    tokens, scores, sizes = _f32(8, 128, 384), _f32(8, 128), np.ones((8, 128), np.float32)
    reduced, _, assign = get_op("TokenPrune").run_reference([tokens, scores, sizes], {"keep": 0.5})
    return [reduced, assign, _f32(8, 128, 384)]


# op -> (shape label, inputs, attributes)
BENCH: dict[str, Callable[[], tuple[str, list[np.ndarray], dict]]] = {
    "KvWindow": lambda: ("cache [1,3,513,64] -> 512", [_f32(1, HKV, 513, D)], {"sink": 4, "window": 508}),
    "KvWindowMask": lambda: (
        "mask [1,513] -> 512",
        [np.ones((1, 513), np.int64)],
        {"sink": 4, "window": 508},
    ),
    "KvQuantKey": lambda: (
        "store 2016 + window 32, new 1, int8",
        [*_store("key", 2016), _f32(1, HKV, 1, D)],
        {"bits": 8, "group": 32, "residual": 32},
    ),
    "KvQuantValue": lambda: (
        "store 2016 + window 32, new 1, int8",
        [*_store("value", 2016), _f32(1, HKV, 1, D)],
        {"bits": 8, "group": 32, "residual": 32},
    ),
    "KvDequantKey": lambda: ("store 2016 + 32 -> [1,3,2048,64], int8", _store("key", 2016), {"bits": 8}),
    "KvDequantValue": lambda: ("store 2016 + 32 -> [1,3,2048,64], int8", _store("value", 2016), {"bits": 8}),
    "KvEvictH2O": lambda: (
        "T 513 -> 512, Hq 9 / Hkv 3, S 1",
        [
            _f32(1, HKV, 513, D),
            _f32(1, HKV, 513, D),
            RNG.random((1, HKV, 512)).astype(np.float32),
            _probs(1, 513),
            np.ones((1, 513), np.int64),
        ],
        {"budget": 512, "sink": 4, "recent": 64, "decay": 0.99},
    ),
    "KvEvictSnap": lambda: (
        "T 513 -> 512, Hq 9 / Hkv 3, S 1",
        [
            _f32(1, HKV, 513, D),
            _f32(1, HKV, 513, D),
            np.arange(512, dtype=np.float32)[None, None].repeat(HKV, 1),
            _probs(1, 513),
            np.ones((1, 513), np.int64),
        ],
        {"budget": 512, "sink": 4, "recent": 64},
    ),
    "KvSlotMask": lambda: (
        "mask [1,1,1,513], 3 KV heads x 3",
        [np.ones((1, 1, 1, 513), np.bool_), RNG.random((1, HKV, 512)).astype(np.float32)],
        {"group": 3},
    ),
    "KvMaskRemap": lambda: (
        "mask [1,2049], past 512, 1 new",
        [np.ones((1, 2049), np.int64), _f32(1, HKV, 512, D), np.zeros((1, 1), np.int64)],
        {},
    ),
    "AttentionProbs": lambda: (
        "q [1,9,1,64], k [1,9,513,64]",
        [_f32(1, HQ, 1, D), _f32(1, HQ, 513, D), np.ones((1, 1, 1, 513), np.bool_)],
        {},
    ),
    "KvQuantAttention": lambda: (
        "q [1,9,1,64] over store 2016 + tail 33, int8",
        [
            _f32(1, HQ, 1, D),
            *_store("key", 2016)[:3],
            _f32(1, HKV, 33, D),
            *_store("value", 2016)[:3],
            _f32(1, HKV, 33, D),
            np.ones((1, 1, 1, 2049), np.bool_),
        ],
        {"bits": 8},
    ),
    "TokenPrune": lambda: (
        "[8,128,384] keep 0.5",
        [_f32(8, 128, 384), _f32(8, 128), np.ones((8, 128), np.float32)],
        {"keep": 0.5},
    ),
    "TokenMerge": lambda: ("[8,197,768], metric 64, r 16", _merge_inputs(), {"r": 16}),
    "TokenRestore": lambda: ("[8,65,384] -> [8,128,384]", _restore_inputs(), {}),
}


def one_node_model(op: OpDef, inputs: list[np.ndarray], attrs: dict) -> bytes:
    values = [
        ir.Value(name=f"in{i}", type=ir.TensorType(ir.DataType.from_numpy(a.dtype)), shape=ir.Shape(a.shape))
        for i, a in enumerate(inputs)
    ]
    graph = ir.Graph(values, [], nodes=[], opset_imports={"": 18}, name=f"bench_{op.op_type}")
    model = ir.Model(graph, ir_version=10, producer_name="parekit-bench")
    node = op.make_node(model, values, attributes=attrs)
    graph.append(node)
    for i, out in enumerate(node.outputs):
        out.name = f"out{i}"
        graph.outputs.append(out)
    return ir.serde.serialize_model(model).SerializeToString()


def floor_model(first: np.ndarray) -> bytes:
    """One ``Identity`` node on the op's first input: what any one-node run costs (session overhead)."""
    x = ir.Value(
        name="in0", type=ir.TensorType(ir.DataType.from_numpy(first.dtype)), shape=ir.Shape(first.shape)
    )
    node = ir.node("Identity", [x])
    node.outputs[0].name = "out0"
    graph = ir.Graph([x], node.outputs, nodes=[node], opset_imports={"": 18}, name="floor")
    return ir.serde.serialize_model(ir.Model(graph, ir_version=10)).SerializeToString()


def session(model: bytes, library: Path | None, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if library is not None:
        options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def bench_op(name: str, library: Path, threads: int, iters: int) -> dict:
    op = get_op(name)
    label, inputs, attrs = BENCH[name]()
    model = one_node_model(op, inputs, attrs)
    feeds = {f"in{i}": a for i, a in enumerate(inputs)}
    sessions = {"body": session(model, None, threads), "kernel": session(model, library, threads)}
    outs = {k: s.run(None, feeds) for k, s in sessions.items()}
    sessions["floor"] = session(floor_model(inputs[0]), None, threads)
    floor_feeds = {"in0": inputs[0]}
    for a, b in zip(outs["kernel"], outs["body"], strict=True):
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for round_ in range(3 + iters):
        for key, s in sessions.items():
            start = time.perf_counter()
            s.run(None, floor_feeds if key == "floor" else feeds)
            if round_ >= 3:
                times[key].append((time.perf_counter() - start) * 1e3)
    body, kernel, floor = (statistics.median(times[k]) for k in ("body", "kernel", "floor"))
    return {
        "op": name,
        "shape": label,
        "body_ms": body,
        "kernel_ms": kernel,
        "floor_ms": floor,
        "ratio": body / kernel,
    }


def render(rows: list[dict], threads: int, iters: int) -> str:
    lines = [
        f"ONNX Runtime {ort.__version__} CPU ({platform.machine()}), {threads} intra-op threads, median of {iters} "
        "interleaved runs per session (kernel, body, floor) after 3 warm-up rounds; one-node models.",
        "",
        "| op | bench shape | body ms | kernel ms | body / kernel | floor ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['body_ms']:.3f} | {r['kernel_ms']:.3f} | {r['ratio']:.1f}× "
            f"| {r['floor_ms']:.3f} |"
        )
    lines += [
        "",
        "floor: the same session running one `Identity` node on the op's first input (ORT's fixed cost per",
        "run); no kernel can be faster than it, so an op whose body is already near the floor cannot reach 3×.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--ops", default=",".join(BENCH), help="comma-separated op types")
    ap.add_argument("--out", type=Path, default=None, help="write the table into this markdown file")
    args = ap.parse_args(argv)
    library = require_library()
    names = [n.strip() for n in args.ops.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCH]
    if unknown:
        ap.error(f"no bench shape for {', '.join(unknown)}")
    rows = []
    for name in names:
        row = bench_op(name, library, args.threads, args.iters)
        print(
            f"{name:16s} body {row['body_ms']:8.3f} ms  kernel {row['kernel_ms']:8.3f} ms  {row['ratio']:6.1f}x",
            flush=True,
        )
        rows.append(row)
    table = render(rows, args.threads, args.iters)
    print(table)
    if args.out:
        command = "python bench/native_ops.py " + " ".join(argv)
        args.out.write_text(
            "# Native kernels vs function bodies, per op\n\n"
            f"Written by `{command.strip()}`. Target: every kernel >= 3x faster than its body.\n\n{table}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
