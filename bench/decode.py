"""Decoding on the real SmolLM2-135M: plain greedy vs speculative drafters (and per-token exits), one run.

    flock /tmp/parekit-bench.lock python bench/decode.py [--model smollm2.onnx] [--opset 23]
        [--prompts 16] [--words 60] [--tokens 128] [--speculate ngram:2 --speculate ngram ...]
        [--draft-tokens 8] [--exit d3:0.99:20 --exit gate:0.9:24 ...] [--exit-model smollm2.lin.onnx]
        [--prepack] [--threads N] [--out table.md] [--json results.json]

The prompts are :func:`parekit.data.prose_prompts` (the first ``--words`` words of evaluation paragraphs of
the offline prose), ``--tokens`` new tokens each, greedy; every configuration runs right after the plain
loop on the same prompt (:func:`parekit.runtime.compare.compare_decoding`, which ``parekit bench-decode``
also runs). ``--exit`` policies run the kv-fill pieces of ``--exit-model`` (e.g. the model with linear
exit adapters from ``early-exit{...,head=adapter,threshold=2}``; its main outputs are the original's).
Exits non-zero when a speculative output differs from the plain greedy output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from parekit.data import prose_prompts
from parekit.frontends import zoo
from parekit.frontends.onnx_file import load_model
from parekit.passes.layer_variants import LayerVariants
from parekit.runtime import DecoderSession
from parekit.runtime.compare import compare_decoding, exit_config, speculative_config
from parekit.runtime.drafters import make_drafter

DEFAULT_SPECULATE = ["ngram:2", "ngram:4", "ngram:8"]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--model", help="decoder .onnx (default: the smollm2 zoo export at --opset)")
    ap.add_argument("--opset", type=int, default=23)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--words", type=int, default=60)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--speculate", action="append", help=f"drafter (repeatable; default {DEFAULT_SPECULATE})")
    ap.add_argument("--draft-tokens", type=int, default=8)
    ap.add_argument("--exit", action="append", default=[], help="per-token exit policy (repeatable)")
    ap.add_argument("--exit-model", help="model whose exits run (default --model)")
    ap.add_argument("--exit-every", type=int, default=None)
    ap.add_argument("--prepack", action="store_true", help="exits: let ORT prepack weights (about 2x memory)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", help="write the markdown table here")
    ap.add_argument("--json", help="write all numbers here")
    args = ap.parse_args()
    model = args.model or str(zoo.export_sample("smollm2", opset=args.opset))
    session = DecoderSession(model, threads=args.threads)
    tokenizer = zoo.get_sample("smollm2").tokenizer()
    if tokenizer is None:
        sys.exit("bench/decode.py: the smollm2 sample has no tokenizer")
    prompts = [tokenizer.encode(t) for t in prose_prompts(args.prompts, args.words)]
    configs = []
    for spec in args.speculate or DEFAULT_SPECULATE:
        drafter = make_drafter(spec, session, variants=lambda: LayerVariants(lambda: load_model(model)), tokenizer=tokenizer)
        configs.append((f"speculate {drafter.name}", "speculate", speculative_config(session, drafter, args.draft_tokens)))
    if args.exit:
        from parekit.runtime.exit_decode import ExitSession

        first = ExitSession(args.exit_model or model, args.exit[0], every=args.exit_every, threads=args.threads,
                            prepack=args.prepack)
        for policy in args.exit:
            configs.append((f"exit {policy}", "exit", exit_config(first.with_policy(policy))))
    report = compare_decoding(session, prompts, args.tokens, configs,
                              progress=lambda line: print(line, file=sys.stderr, flush=True))
    table = report.markdown()
    print(table)
    meta = {"model": Path(model).name, "opset": args.opset, "words": args.words, "draft_tokens": args.draft_tokens,
            "threads": args.threads, "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores"}
    if args.json:
        Path(args.json).write_text(json.dumps({**meta, **report.to_dict()}, indent=1))
    if args.out:
        Path(args.out).write_text(table + "\n")
    bad = [r.name for r in report.rows if r.kind == "speculate" and r.identical != report.prompts]
    if bad:
        sys.exit(f"bench/decode.py: speculative output differs from plain greedy for {', '.join(bad)}")


if __name__ == "__main__":
    main()
