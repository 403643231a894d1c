"""Decode tokens/s of the C++ host (samples/cpp) vs the Python runtime, side by side on one model.

    python bench/cpp_host_decode.py [--sample smollm2 --opset 23 | --model FILE.onnx] [--passes PIPELINE]...
        [--prompt TEXT] [--max-new-tokens 64] [--rounds 5] [--threads 2] [--native] [--host PATH] [--out FILE.md]

Per pipeline, both sides decode the same prompt greedily for the same number of new tokens, with the
same ONNX Runtime release (the host dlopens the imported wheel's library), the same session options and
thread count, ``--rounds`` times, interleaved (the order alternates each round so both share the
machine's load). Their tokens must be equal in every round (a fast wrong host cannot pass). Reported: the
ratio C++ / Python of each round (its two runs share the machine's load), median and range over rounds, of

* model runs: rows x decode steps / the time of the decode steps' model runs, as each side reports it
  (Python: ``Generation.decode_tokens_per_s``; C++: ``decode_tokens_per_s``);
* loop: the same tokens over the wall time of the whole decode loop (feeds, run, argmax, state
  feed-back). Python: ``generate``'s wall time minus its prefill step; C++: ``decode_wall_s``.

Model loading and the prefill are excluded on both sides; each side is warmed up first (Python: one
short generation on its session, kept across rounds; C++: ``--warmup``, one untimed generation in each
round's process). Python runs ONNX Runtime through its pybind module, which carries its own static
build of the same release as the wheel's capi library the host opens. Only ratios belong in docs (the machine is shared).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOST = ROOT / "build" / "cpp_host" / "parekit-host"


def _ort_library() -> str:
    import onnxruntime

    found = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*")))
    if not found:
        sys.exit("cpp_host_decode: the onnxruntime wheel holds no capi/libonnxruntime.so.<version>")
    return found[-1]


def _model(args: argparse.Namespace, pipeline: str, tmp: Path) -> Path:
    from parekit.frontends import zoo
    from parekit.frontends.onnx_file import load_model

    path = Path(args.model) if args.model else zoo.export_sample(args.sample, opset=args.opset)
    if not pipeline:
        return path
    from parekit.backends.save import save_model
    from parekit.passes import PassContext, run_pipeline

    model = run_pipeline(load_model(path), pipeline, PassContext()).model
    return save_model(model, tmp / f"{len(list(tmp.iterdir()))}.onnx")


def _prompt_ids(args: argparse.Namespace) -> list[int]:
    from parekit.frontends import zoo

    if args.ids:
        return [int(t) for t in args.ids.split(",")]
    sample = zoo.get_sample(args.sample)
    tok = sample.tokenizer() if sample else None
    if tok is None:
        sys.exit("cpp_host_decode: no tokenizer for this model; pass --ids 1,2,3")
    return list(tok.encode(args.prompt))


def _python_round(session, ids: list[int], new: int) -> tuple[list[int], float, float]:
    from parekit.runtime import generate

    start = time.perf_counter()
    g = generate(session, [ids], new)
    wall = time.perf_counter() - start
    steps = len(g.decode_s)
    loop = wall - g.prefill_s
    return g.tokens[0], g.decode_tokens_per_s, steps / loop if loop > 0 else float("nan")


def _host_round(args: argparse.Namespace, host: Path, model: Path, ids: list[int], native: str | None):
    cmd = [str(host), "generate", str(model), "--json", "--ort", _ort_library(), "--threads", str(args.threads),
           "--max-new-tokens", str(args.max_new_tokens), "--ids", ",".join(map(str, ids)), "--warmup"]
    if native:
        cmd += ["--custom-ops", native]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"cpp_host_decode: {done.stderr.strip()}")
    out = json.loads(done.stdout)
    return out["tokens"][0], out["decode_tokens_per_s"], out["decode_wall_tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", default="smollm2")
    parser.add_argument("--opset", type=int, default=23)
    parser.add_argument("--model", help="an .onnx decoder instead of a zoo sample (needs --ids)")
    parser.add_argument("--passes", action="append", help="pipeline (repeatable; '' = unmodified)")
    parser.add_argument("--prompt", default="The history of the printing press begins in")
    parser.add_argument("--ids", help="prompt token ids instead of --prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--native", action="store_true", help="register libparekit_ort.so on both sides")
    parser.add_argument("--host", type=Path, default=DEFAULT_HOST)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    if not args.host.is_file():
        sys.exit(f"cpp_host_decode: no C++ host at {args.host}: cmake -S samples/cpp -B build/cpp_host && "
                 "cmake --build build/cpp_host -j1")
    from parekit.native import require_library
    from parekit.runtime import DecoderSession

    native = str(require_library("ort")) if args.native else None
    ids = _prompt_ids(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pipeline in args.passes or [""]:
            model = _model(args, pipeline, Path(tmp))
            session = DecoderSession(model, threads=args.threads, native=args.native)
            _python_round(session, ids, 4)  # warm-up (first-run allocations) on the Python side
            py_run, py_loop, cc_run, cc_loop = [], [], [], []
            for r in range(args.rounds):
                order = ["py", "cc"] if r % 2 == 0 else ["cc", "py"]
                got = {}
                for side in order:
                    if side == "py":
                        got["py"], a, b = _python_round(session, ids, args.max_new_tokens)
                        py_run.append(a)
                        py_loop.append(b)
                    else:
                        got["cc"], a, b = _host_round(args, args.host, model, ids, native)
                        cc_run.append(a)
                        cc_loop.append(b)
                if got["py"] != got["cc"]:
                    sys.exit(f"cpp_host_decode: {pipeline or 'unmodified'}: C++ and Python tokens differ in round {r}")
            run_ratios = [c / p for c, p in zip(cc_run, py_run, strict=True)]
            loop_ratios = [c / p for c, p in zip(cc_loop, py_loop, strict=True)]
            rows.append((pipeline or "unmodified", run_ratios, loop_ratios))
    title = (f"{args.model or f'{args.sample} opset {args.opset}'}, {len(ids)}-token prompt, {args.max_new_tokens} new "
             f"tokens, {args.threads} threads, {'kernels' if args.native else 'bodies'}, {args.rounds} rounds, "
             f"{platform.machine()}")
    lines = [f"C++ host vs Python runtime decode ({title}); ratio = C++ tokens/s / Python tokens/s per round, "
             "median (min-max over rounds)", "",
             "| model | model runs: C++ / Python | whole decode loop: C++ / Python |", "|---|---|---|"]

    def cell(ratios: list[float]) -> str:
        return f"{statistics.median(ratios):.3f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    for name, run_ratios, loop_ratios in rows:
        lines.append(f"| `{name}` | {cell(run_ratios)} | {cell(loop_ratios)} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
