"""KV-cache passes on the real SmolLM2-135M: perplexity, agreement, KV bytes and decode speed in one run.

    flock /tmp/parekit-bench.lock python bench/kv_cache.py [--ctx 2048] [--opset 23] [--config PIPELINE ...]
                                                           [--native both|on|off]
                                                           [--out docs/bench_kv.md] [--json results.json]

Every configuration is applied to the same export, then all models are evaluated side by side with
:func:`parekit.runtime.evaluate_perplexity`: the first ``--ctx`` tokens of the ``pydoc_data.topics``
prose, a 16-token prefill, then one token per decode step (the generation path, so compressed caches
are exercised for real), models interleaved step by step so that they share the machine's load.
Reported per model: perplexity and next-token top-1 agreement with the full cache over the decode
positions (the tokens fed one per step after the prefill; the JSON also holds the all-positions numbers,
``*_all``, which a long prefill dilutes), KV bytes fed at the last step (everything the cache carries
across the graph boundary), its ratio to the full cache, and decode ms/step at the end of the context
(median of the last ``--tail`` steps) with the speed-up.

``--native both`` (the default when libparekit_ort.so is built) runs every configuration twice, with
the parekit ops as function bodies and as native kernels (``ops`` column); the full cache holds no
parekit op and runs once. ``on``/``off`` run one form only.

Timings are sensitive to machine load, perplexity and agreement are not. ``--timing-only`` re-measures
just the decode step at the end of the context (a one-shot prefill of ``ctx - steps`` tokens gives the
cache its end-of-context shape, then ``--steps`` decode steps, models interleaved; the cache *contents*
differ from token-by-token decoding, its shapes and therefore the step cost do not), and ``--merge
PREV.json`` takes perplexity, agreement and KV bytes from an earlier full run: a quiet-machine re-timing
takes about a minute instead of a full run's quarter of an hour.

Opset 23 by default: ONNX Runtime runs SmolLM2's native ``Attention`` export faster than the
decomposed opset-18 graph (measured in an earlier proof of concept: 36.5 ms at 512 and 73.2 ms at 2048 tokens).
Default rows: the full cache, ``kv-window{sink=4,window=508}``, and the kv-evict / kv-quant rows when
those passes are registered.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from parekit.backends.save import save_model
from parekit.data import prose_token_ids
from parekit.frontends import zoo
from parekit.frontends.onnx_file import load_model
from parekit.native import library_path
from parekit.passes import PassContext, run_pipeline
from parekit.passes.registry import list_passes
from parekit.runtime import DecoderSession, evaluate_perplexity

WINDOW = "kv-window{sink=4,window=508}"
OPTIONAL = [
    "kv-evict{budget=512,policy=h2o,recent=64,decay=0.99}",
    "kv-evict{budget=512,policy=snapkv,recent=64}",
    "kv-quant{bits=8}",
    "kv-quant{bits=4}",
]


TARGETS = """Targets, 2048 tokens: kv-window{sink=4,window=508} decode step ≥ 1.8× faster than the full
cache with ppl ≤ +5 %; kv-evict at budget 512 ppl better than kv-window at the same budget; kv-quant int8 KV
bytes ≤ 0.30× with agreement ≥ 99 %, int4 ≤ 0.17× with agreement ≥ 97 %. Timings depend on machine load
(2 cores shared): compare rows of one run only.
"""


def default_configs() -> list[str]:
    names = {cls.name for cls in list_passes()}
    return [WINDOW] + [c for c in OPTIONAL if c.split("{", 1)[0] in names]


def render(
    rows: list[dict],
    ctx: int,
    opset: int,
    seconds: float,
    timing_only: bool = False,
    floor: float | None = None,
    prefill: int = 16,
) -> str:
    base = rows[0]
    how = (
        "ms/step re-measured in a separate run (one-shot prefill to the end-of-context cache shape, then decode steps); "
        "ppl, agreement and KV bytes from the full decode-path run"
        if timing_only
        else f"{prefill}-token prefill, then one token per decode step"
    )
    decoded = ctx - 1 - prefill
    lines = [
        f"SmolLM2-135M-Instruct (real weights), opset {opset}, ORT CPU ({platform.machine()}, "
        f"{platform.python_version()}), {ctx} tokens of `pydoc_data.topics` prose: {how}; "
        f"models interleaved in one run ({seconds / 60:.1f} min). "
        f"ppl and top-1 agreement over the {decoded} decode positions ({prefill} … {ctx - 2}: the tokens fed "
        f"through decode steps after the prefill, the positions a cache pass changes); the prefill's "
        f"{prefill} predictions are left out.",
        "",
        "| pass | config | ops | decode ppl | Δppl | decode top-1 agreement | KV bytes | KV ratio | ms/step | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name, _, cfg = r["config"].partition("{")
        lines.append(
            f"| {name} | {('{' + cfg) if cfg else '-'} | {r.get('ops', '-')} | {r['ppl_decode']:.4f} | "
            f"{100 * (r['ppl_decode'] / base['ppl_decode'] - 1):+.2f}% | "
            f"{100 * r['top1_agreement_decode']:.2f}% | {r['kv_bytes'] / 2**20:.2f} MiB | "
            f"{r['kv_bytes'] / max(base['kv_bytes'], 1):.3f} | "
            f"{r['ms_per_step']:.1f} | {base['ms_per_step'] / r['ms_per_step']:.2f}× |"
        )
    if all(isinstance(r.get("ppl_all"), float) for r in rows):
        diluted = ", ".join(
            f"{r['config']} {r['ppl_all']:.3f} ({100 * (r['ppl_all'] / base['ppl_all'] - 1):+.2f}%)"
            for r in rows
        )
        lines += ["", f"For comparison, ppl over all {ctx - 1} positions (prefill included): {diluted}."]
    if floor is not None:
        lines += [
            "",
            f"Bound on any cache compression: the unmodified model's decode step with only {FLOOR_TOKENS} cached "
            f"tokens takes {floor:.1f} ms, stepped in the same interleaved loop (weights, norms, logits: what does not "
            "grow with the cache), "
            f"so no KV pass can make the step at {ctx} tokens more than {base['ms_per_step'] / floor:.2f}× faster "
            "here.",
        ]
    return "\n".join(lines) + "\n"


FLOOR_TOKENS = 32


def time_decode(sessions: list[DecoderSession], tokens: list[int], steps: int) -> tuple[list[float], float]:
    """Median ms of ``steps`` decode steps after a one-shot prefill of ``len(tokens) - steps`` tokens.

    Also returns the floor: the first model's step with only ``FLOOR_TOKENS`` cached tokens, stepped in the
    same interleaved loop (so under the same load and cache pressure) — the cost no KV pass can remove.
    """
    ids = np.asarray(tokens, dtype=np.int64)[None, :]
    start = len(tokens) - steps
    runs = [(s, start) for s in sessions] + [(sessions[0], FLOOR_TOKENS)]
    states, times = [], [[] for _ in runs]
    for s, n in runs:
        _, state = s.step(ids[:, :n], np.ones((1, n), np.int64), np.arange(n)[None], s.empty_state(1))
        states.append(state)
    for j in range(steps):
        for k, (s, n) in enumerate(runs):
            i = n + j
            _, states[k] = s.step(
                ids[:, i : i + 1], np.ones((1, i + 1), np.int64), np.array([[i]]), states[k]
            )
            times[k].append(s.last_step_s)
    ms = [1e3 * statistics.median(t) for t in times]
    return ms[:-1], ms[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, default=2048, help="context length in tokens")
    ap.add_argument("--opset", type=int, default=23, choices=[18, 23])
    ap.add_argument("--config", action="append", default=None, help="pipeline to compare (repeatable)")
    ap.add_argument("--prefill", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=1, help="tokens per decode step (1 = as in generation)")
    ap.add_argument("--tail", type=int, default=8, help="decode steps whose median time is reported")
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    ap.add_argument("--json", type=Path, default=None, help="write the raw results here")
    ap.add_argument("--timing-only", action="store_true", help="only re-measure ms/step (see above)")
    ap.add_argument("--steps", type=int, default=32, help="decode steps timed by --timing-only")
    ap.add_argument(
        "--merge", type=Path, default=None, help="with --timing-only: ppl/agreement/bytes from this JSON"
    )
    ap.add_argument(
        "--native",
        choices=["both", "on", "off"],
        default=None,
        help="parekit ops as kernels (on), function bodies (off) or both rows (default: both when built)",
    )
    args = ap.parse_args()
    if args.native is None:
        args.native = "both" if library_path() is not None else "off"
    forms = {"both": [False, True], "on": [True], "off": [False]}[args.native]

    configs = args.config or default_configs()
    src = zoo.export_sample("smollm2", opset=args.opset)
    tokens = prose_token_ids(zoo.get_sample("smollm2").tokenizer(), args.ctx)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = [DecoderSession(src, threads=args.threads, native=False)]
        names, ops = ["full cache"], ["-"]
        for i, pipeline in enumerate(configs):
            model = run_pipeline(load_model(src), pipeline, PassContext(), verify_each=False).model
            path = Path(tmp) / f"c{i}.onnx"
            save_model(model, path)
            for native in forms:
                sessions.append(DecoderSession(path, threads=args.threads, native=native))
                names.append(pipeline)
                ops.append("kernels" if native else "bodies")
            print(f"built {pipeline}", flush=True)
        start = time.perf_counter()
        floor = None
        if args.timing_only:
            ms, floor = time_decode(sessions, tokens, args.steps)
            prev = (
                {
                    (r["config"], r.get("ops", "bodies" if r["config"] != "full cache" else "-")): r
                    for r in json.loads(args.merge.read_text())["rows"]
                }
                if args.merge
                else {}
            )
            empty = {"ppl_decode": float("nan"), "top1_agreement_decode": float("nan"), "kv_bytes": 0}
            rows = [
                {**empty, **prev.get((c, o), {}), "config": c, "ops": o, "ms_per_step": t}
                for c, o, t in zip(names, ops, ms, strict=True)
            ]
        else:
            results = evaluate_perplexity(
                sessions, tokens, prefill=args.prefill, chunk=args.chunk, tail=args.tail, progress=True
            )
            rows = [
                {"config": c, "ops": o, **r.to_dict()} for c, o, r in zip(names, ops, results, strict=True)
            ]
        seconds = time.perf_counter() - start
    table = render(
        rows, args.ctx, args.opset, seconds, timing_only=args.timing_only, floor=floor, prefill=args.prefill
    )
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(
            ["python", "bench/kv_cache.py", *(f"'{a}'" if "{" in a else a for a in sys.argv[1:])]
        )
        args.out.write_text(f"# KV-cache passes: benchmark\n\nWritten by `{command}`.\n\n{table}\n{TARGETS}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "ctx": args.ctx,
                    "prefill": args.prefill,
                    "opset": args.opset,
                    "floor_ms": floor,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
