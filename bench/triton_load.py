"""Load on exported Triton repositories served by a real tritonserver on 127.0.0.1 (nvidia-pytriton's,
Python backend; ``bash scripts/triton_venv.sh`` first).

    python bench/triton_load.py [--clients 1 4 16] [--requests 240] [--seq 32] [--sequences 1 4 16]
        [--tokens 24] [--instances 1] [--threads 1] [--out FILE.md] [--json FILE]

Encoder (MiniLM, exported with ``--backend python`` and, through the stand-in Python-based backend of
the tests, the onnxruntime-backend repository): for each client count N, N threads (one HTTP client
each) send ``--requests`` requests in all (batch 1, ``--seq`` tokens), as fast as answers come back.
Reported: req/s, p50 / p99 latency, errors (must be 0), and every answer checked against local ONNX
Runtime (max |diff| ≤ 1e-5). The baseline in the same run: the same requests through one in-process
ONNX Runtime session with the server's thread count, one after another; ``× local`` is served req/s
over that.

Decoder (``--decoder``: llama-tiny, or the real SmolLM2-135M, with kv-window; ``--backend python``): for each count S, S sequences decode
``--tokens`` greedy tokens concurrently (one thread and sequence id each). Reported: generated tokens/s,
p50 / p99 step latency, errors, and **state leaks**: sequences whose ids differ from their solo
``generate`` run (must be 0); ``× local`` is served tokens/s over those solo runs' tokens/s (the
baseline, one sequence after another in-process). The machine may be shared: only the ratios and the zero counts are facts
to quote; absolute figures are this machine's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _export(repo: Path, args: argparse.Namespace) -> dict[str, Path]:
    import onnx_ir as ir

    from parekit.frontends import zoo
    from parekit.passes import run_pipeline
    from parekit.serving import ExportRequest, export_triton

    minilm = zoo.export_sample("minilm")
    window = "kv-window{sink=2,window=6}" if args.decoder == "llama-tiny" else "kv-window{sink=4,window=508}"
    llama = run_pipeline(ir.load(zoo.export_sample(args.decoder)), window).model
    common = {"instances": args.instances, "threads": args.threads}
    export_triton(ir.load(minilm), minilm, ExportRequest(repo=repo, name="enc_py", backend="python", **common))
    export_triton(ir.load(minilm), minilm, ExportRequest(repo=repo, name="enc_ort", **common))
    export_triton(llama, Path("decoder.w.onnx"), ExportRequest(repo=repo, name="dec_py", backend="python", **common))
    return {"enc": repo / "enc_py" / "1" / "model.onnx", "dec": repo / "dec_py" / "1" / "model.onnx"}


def _encoder_level(url: str, model: str, clients: int, feeds: list[tuple[np.ndarray, np.ndarray]],
                   want: list[np.ndarray]) -> dict[str, object]:
    from parekit.serving.client import client, embed

    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    worst = [0.0]
    todo = iter(range(len(feeds)))

    def worker() -> None:
        cl = client(url)
        try:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    got = embed(cl, model, *feeds[i])["sentence_embedding"]
                except Exception:  # noqa: BLE001 - counted, the run goes on
                    with lock:
                        errors[0] += 1
                    continue
                dt = time.perf_counter() - t0
                diff = float(np.max(np.abs(got - want[i])))
                with lock:
                    latencies.append(dt)
                    worst[0] = max(worst[0], diff)
        finally:
            cl.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result(timeout=600)
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(feeds), "req_s": len(latencies) / wall,
            "p50_ms": _pct(latencies, 50) * 1e3, "p99_ms": _pct(latencies, 99) * 1e3, "errors": errors[0],
            "max_abs_diff": worst[0]}


def _decoder_level(url: str, sequences: int, tokens: int, prompts: list[list[int]],
                   solo: list[list[int]]) -> dict[str, object]:
    import tritonclient.http as http

    from parekit.serving.client import client

    lock = threading.Lock()
    steps: list[float] = []
    errors = [0]

    def run(i: int) -> list[int] | None:
        cl = client(url)
        ids = np.array([prompts[i]], np.int64)
        out: list[int] = []
        try:
            for k in range(tokens):
                inp = http.InferInput("input_ids", list(ids.shape), "INT64")
                inp.set_data_from_numpy(ids)
                t0 = time.perf_counter()
                result = cl.infer("dec_py", [inp], sequence_id=9000 + i, sequence_start=k == 0,
                                  sequence_end=k == tokens - 1)
                with lock:
                    steps.append(time.perf_counter() - t0)
                out.append(int(result.as_numpy("next_token")[0, 0]))
                ids = np.array([[out[-1]]], np.int64)
            return out
        except Exception:  # noqa: BLE001 - counted
            with lock:
                errors[0] += 1
            return None
        finally:
            cl.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(sequences) as pool:
        outs = list(pool.map(run, range(sequences), timeout=600))
    wall = time.perf_counter() - t0
    leaks = sum(1 for i, o in enumerate(outs) if o is not None and o != solo[i])
    return {"sequences": sequences, "tokens_s": len(steps) / wall, "p50_ms": _pct(steps, 50) * 1e3,
            "p99_ms": _pct(steps, 99) * 1e3, "errors": errors[0], "state_leaks": leaks}


def _warm_up(url: str, feeds: list[tuple[np.ndarray, np.ndarray]], prompt: list[int]) -> None:
    """A few untimed requests per model: the first ones pay for session set-up and memory growth."""
    from parekit.serving.client import client, decode, embed

    cl = client(url)
    try:
        for model in ("enc_py", "enc_ort"):
            for ids, mask in feeds[:5]:
                embed(cl, model, ids, mask)
        decode(cl, "dec_py", 8999, prompt, 5)
    finally:
        cl.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--sequences", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--decoder", choices=["llama-tiny", "smollm2"], default="llama-tiny",
                        help="the served decoder (with kv-window); smollm2 is the real 135M model")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per instance (and baseline)")
    parser.add_argument("--out", type=Path, help="write the markdown tables here")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()

    import onnxruntime as ort

    from parekit.runtime import DecoderSession, generate
    from parekit.serving import triton_models
    from parekit.serving.triton_server import TritonServer

    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(args.requests):
        ids = rng.integers(1000, 5000, size=(1, args.seq)).astype(np.int64)
        feeds.append((ids, np.ones_like(ids)))
    with tempfile.TemporaryDirectory(prefix="parekit-load-") as tmp:
        sources = _export(Path(tmp) / "repo", args)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        local = ort.InferenceSession(str(sources["enc"]), options, providers=["CPUExecutionProvider"])
        t0 = time.perf_counter()
        want = [local.run(["sentence_embedding"], {"input_ids": i, "attention_mask": m})[0] for i, m in feeds]
        local_req_s = len(feeds) / (time.perf_counter() - t0)
        session = DecoderSession(sources["dec"], threads=args.threads)
        top = max(args.sequences)
        vocab = 999 if args.decoder == "llama-tiny" else 49000
        prompts = [rng.integers(1, vocab, size=int(rng.integers(2, 12))).tolist() for _ in range(top)]
        generate(session, [prompts[0]], 4)  # warm-up
        t0 = time.perf_counter()
        solo = [generate(session, [p], args.tokens).tokens[0] for p in prompts]
        local_tok_s = len(prompts) * args.tokens / (time.perf_counter() - t0)
        standin = Path(triton_models.__file__).parent / "encoder.py"
        server = TritonServer(Path(tmp) / "repo", python_backends={"onnxruntime": standin})
        server.start()
        try:
            _warm_up(server.http_url, feeds, prompts[0])
            enc = []
            for model in ("enc_py", "enc_ort"):
                for n in args.clients:
                    row = _encoder_level(server.http_url, model, n, feeds, want)
                    row.update(model=model, x_local=row["req_s"] / local_req_s)  # type: ignore[operator]
                    enc.append(row)
                    print(json.dumps(row), flush=True)
            dec = []
            for s in args.sequences:
                row = _decoder_level(server.http_url, s, args.tokens, prompts[:s], solo[:s])
                row["x_local"] = row["tokens_s"] / local_tok_s  # type: ignore[operator]
                dec.append(row)
                print(json.dumps(row), flush=True)
        finally:
            orphans = server.stop()
    if orphans:
        sys.exit(f"triton_load: backend stubs outlived the server: {orphans}")
    text = _tables(enc, dec, local_req_s, local_tok_s, args)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"encoder": enc, "decoder": dec, "local_req_s": local_req_s,
                                         "local_tokens_s": local_tok_s}, indent=1))
    if any(r["errors"] for r in enc + dec) or any(r["state_leaks"] for r in dec) \
            or any(r["max_abs_diff"] > 1e-5 for r in enc):  # type: ignore[operator]
        sys.exit("triton_load: errors, state leaks or wrong answers (see the tables)")


def _tables(enc: list[dict], dec: list[dict], local_req_s: float, local_tok_s: float,
            args: argparse.Namespace) -> str:
    lines = [f"Encoder (MiniLM, batch 1 × {args.seq} tokens, {args.requests} requests per row, {args.instances} "
             f"instance(s), {args.threads} ORT thread(s); local ORT baseline {local_req_s:.0f} req/s):", "",
             "| repository | clients | req/s | × local ORT | p50 ms | p99 ms | errors | max abs diff |",
             "|---|---|---|---|---|---|---|---|"]
    names = {"enc_py": "python backend", "enc_ort": "onnxruntime (stand-in)"}
    for r in enc:
        lines.append(f"| {names[r['model']]} | {r['clients']} | {r['req_s']:.0f} | {r['x_local']:.2f}× | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['max_abs_diff']:.1e} |")
    lines += ["", f"Decoder ({args.decoder} kv-window, python backend, {args.tokens} greedy tokens per sequence; local "
              f"`generate` baseline {local_tok_s:.0f} tokens/s, one sequence after another):", "",
              "| sequences | tokens/s | × local | p50 step ms | p99 step ms | errors | state leaks |",
              "|---|---|---|---|---|---|---|"]
    for r in dec:
        lines.append(f"| {r['sequences']} | {r['tokens_s']:.0f} | {r['x_local']:.2f}× | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['errors']} | {r['state_leaks']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
