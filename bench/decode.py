"""Decoding on the real SmolLM2-135M: plain greedy vs speculative drafters vs per-token exits, in one run.

    flock /tmp/parekit-bench.lock python bench/decode.py [--model smollm2.onnx] [--opset 23]
        [--prompts 16] [--tokens 128] [--speculate ngram --speculate ngram:2 ...] [--draft-tokens 8]
        [--exit d3:0.99 ...] [--threads N] [--out docs/bench_decode.md] [--json results.json]

Prompts: the first ``--words`` words of ``--prompts`` evaluation paragraphs of the offline prose
(:func:`parekit.data.prose_prompts`), ``--tokens`` new tokens each, greedy. For every prompt
the plain loop (:func:`parekit.runtime.generate`) and every configuration run back to back, so that they
share the machine's load; ratios are of decode tokens per second (the prefill excluded; drafting,
verifying and bookkeeping included) against the plain loop over all prompts.

Speculative rows (lossless): ``identical`` counts prompts whose output equals the plain greedy output
token for token — anything below all prompts is a bug, and the script exits non-zero. Also reported:
acceptance (accepted / drafted tokens), mean accepted draft tokens per verify step, tokens per model run,
the share of decode time spent drafting and in model runs.

Per-token exit rows (lossy, ``--exit``, when :mod:`parekit.runtime.exit_decode` exists): agreement with
the plain greedy tokens (the share of prompts' tokens equal up to the first difference) and the mean
layers run per token; their perplexity comes from ``parekit eval --exit``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from parekit.data import prose_prompts
from parekit.frontends import zoo
from parekit.runtime import DecoderSession, generate
from parekit.runtime.drafters import make_drafter
from parekit.runtime.speculative import speculative_generate

DEFAULT_SPECULATE = ["ngram:2", "ngram:4", "ngram:8"]


def _prefix_agreement(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = args.model or str(zoo.export_sample("smollm2", opset=args.opset))
    session = DecoderSession(model, threads=args.threads)
    from parekit.frontends.samples import get_sample

    tokenizer = get_sample("smollm2").tokenizer()
    if tokenizer is None:
        sys.exit("bench/decode.py: the smollm2 sample has no tokenizer")
    texts = prose_prompts(args.prompts, args.words)
    prompts = [tokenizer.encode(t) for t in texts]
    drafters = {spec: make_drafter(spec, session, model=model) for spec in args.speculate}
    exits: dict[str, Any] = {}
    if args.exit:
        from parekit.runtime import exit_decode  # type: ignore[attr-defined]

        exits = {p: exit_decode.ExitDecoder.from_policy(model, p, threads=args.threads) for p in args.exit}
    rows: dict[str, dict[str, Any]] = {"plain": {"tokens": 0, "s": 0.0}}
    for spec in drafters:
        rows[f"speculate {spec}"] = {"tokens": 0, "s": 0.0, "identical": 0, "drafted": 0, "accepted": 0,
                                     "steps": 0, "replays": 0, "runs": 0, "produced": 0, "draft_s": 0.0,
                                     "verify_s": 0.0}
    for p in exits:
        rows[f"exit {p}"] = {"tokens": 0, "s": 0.0, "agree": 0, "layers": 0.0, "counted": 0}
    per_prompt: list[dict[str, Any]] = []
    for i, prompt in enumerate(prompts):
        began = time.perf_counter()
        plain = generate(session, [prompt], args.tokens)
        ref = plain.tokens[0]
        plain_s = sum(plain.decode_s)
        rows["plain"]["tokens"] += len(ref) - 1
        rows["plain"]["s"] += plain_s
        entry: dict[str, Any] = {"prompt_tokens": len(prompt), "plain_tokens_per_s": (len(ref) - 1) / plain_s}
        for spec, drafter in drafters.items():
            out = speculative_generate(session, [prompt], args.tokens, drafter, k=args.draft_tokens)
            r, st = rows[f"speculate {spec}"], out.stats
            r["tokens"] += out.decode_tokens
            r["s"] += out.decode_wall_s
            r["identical"] += int(out.tokens[0] == ref)
            for key in ("drafted", "accepted", "steps", "replays", "runs", "produced", "draft_s", "verify_s"):
                r[key] += getattr(st, key)
            entry[spec] = {"ratio": out.decode_tokens_per_s / entry["plain_tokens_per_s"],
                           "acceptance": st.acceptance, "identical": out.tokens[0] == ref}
        for p, dec in exits.items():
            got = dec.generate(prompt, args.tokens)
            r = rows[f"exit {p}"]
            r["tokens"] += len(got.tokens) - 1
            r["s"] += got.decode_s
            r["agree"] += _prefix_agreement(got.tokens, ref)
            r["layers"] += sum(got.layers)
            r["counted"] += len(got.layers)
            entry[f"exit {p}"] = {"ratio": ((len(got.tokens) - 1) / got.decode_s) / entry["plain_tokens_per_s"]}
        per_prompt.append(entry)
        print(f"prompt {i + 1}/{len(prompts)} ({len(prompt)} tokens) {time.perf_counter() - began:.1f} s: "
              + ", ".join(f"{k} {v['ratio']:.2f}x" for k, v in entry.items() if isinstance(v, dict)),
              file=sys.stderr, flush=True)
    base = rows["plain"]["tokens"] / rows["plain"]["s"]
    for r in rows.values():
        r["tokens_per_s"] = r["tokens"] / r["s"]
        r["ratio"] = r["tokens_per_s"] / base
    return {"model": Path(model).name, "prompts": len(prompts), "tokens": args.tokens, "words": args.words,
            "draft_tokens": args.draft_tokens, "threads": args.threads, "machine": platform.processor()
            or platform.machine(), "rows": rows, "per_prompt": per_prompt, "total_tokens": args.prompts * args.tokens}


def table(res: dict[str, Any]) -> str:
    lines = [
        "| configuration | decode tokens/s | × plain | identical | acceptance | accepted / verify | tokens / run "
        "| replays | drafting | model runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        if name.startswith("speculate"):
            d = r["drafted"]
            kept = r["steps"] - r["replays"]
            lines.append(
                f"| {name} | {r['tokens_per_s']:.1f} | {r['ratio']:.2f} | {r['identical']}/{res['prompts']} "
                f"| {r['accepted'] / d if d else 0:.2f} | {r['accepted'] / kept if kept else 0:.2f} "
                f"| {r['produced'] / r['runs'] if r['runs'] else 0:.2f} | {r['replays']} "
                f"| {100 * r['draft_s'] / r['s']:.0f} % | {100 * r['verify_s'] / r['s']:.0f} % |"
            )
        elif name.startswith("exit"):
            lines.append(
                f"| {name} | {r['tokens_per_s']:.1f} | {r['ratio']:.2f} | agree {r['agree'] / res['total_tokens']:.2f} "
                f"| layers/token {r['layers'] / max(r['counted'], 1):.1f} | | | | | |"
            )
        else:
            lines.append(f"| {name} | {r['tokens_per_s']:.1f} | 1.00 | – | – | – | 1.00 | – | – | 100 % |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="decoder .onnx (default: the smollm2 zoo export at --opset)")
    ap.add_argument("--opset", type=int, default=23)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--words", type=int, default=60)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--speculate", action="append", help=f"drafter spec (repeatable; default {DEFAULT_SPECULATE})")
    ap.add_argument("--draft-tokens", type=int, default=8)
    ap.add_argument("--exit", action="append", default=[], help="per-token exit policy (repeatable)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", help="write the markdown table here")
    ap.add_argument("--json", help="write all numbers here")
    args = ap.parse_args()
    args.speculate = args.speculate or DEFAULT_SPECULATE
    res = run(args)
    text = table(res)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(text + "\n")
    bad = [n for n, r in res["rows"].items() if "identical" in r and r["identical"] != res["prompts"]]
    if bad:
        sys.exit(f"bench/decode.py: speculative output differs from plain greedy for {', '.join(bad)}")


if __name__ == "__main__":
    main()
