"""Which sample × pass combinations build under TensorRT-RTX (CPU-only builder), with derived profiles.

    python bench/build_matrix.py [--opset 18] [--sample NAME ...] [--markdown docs/build_matrix.md]

For every sample of the zoo and each pass applicable to it at a typical configuration, optimizes the
export, runs ``parekit build --backend tensorrt-rtx`` with the profile parekit derives (no --profile),
and tabulates: built or the one-line error, network layers, parekit nodes (all inlined from their
function bodies under RTX), plan MiB, build seconds. The same matrix is the test
``tests/engines/test_build_matrix.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MATRIX: dict[str, tuple[str, ...]] = {
    "minilm": ("", "drop-layers{layers=[4,5]}", "token-prune{keep=0.5,layers=[2]}",
               "token-merge{r=8,layers=[1,2,3]}"),
    "vit": ("", "drop-layers{layers=[11]}", "token-prune{keep=0.7,layers=[3,6,9]}", "token-merge{r=8}"),
    "gpt2-tiny": ("", "drop-layers{layers=[1]}", "kv-window{sink=4,window=252}", "kv-evict{budget=256,policy=h2o}",
                  "kv-evict{budget=256,policy=snapkv}", "kv-quant{bits=8,group=8}", "kv-quant{bits=4,group=8}"),
    "llama-tiny": ("", "drop-layers{layers=[1]}", "kv-window{sink=4,window=252}", "kv-evict{budget=256,policy=h2o}",
                   "kv-evict{budget=256,policy=snapkv}", "kv-quant{bits=8,group=8}", "kv-quant{bits=4,group=8}"),
    "smollm2": ("", "drop-layers{layers=[25]}", "kv-window{sink=4,window=508}", "kv-evict{budget=512,policy=h2o}",
                "kv-evict{budget=512,policy=snapkv}", "kv-quant{bits=8}", "kv-quant{bits=4}"),
}  # fmt: skip
"""Sample → pipelines ("" = the unmodified export)."""


def run_one(sample: str, opset: int, pipeline: str, folder: Path) -> dict[str, object]:
    """Export (cached), optimize, build; returns the row."""
    from parekit.frontends import zoo

    model = Path(zoo.export_sample(sample, opset=opset))
    row: dict[str, object] = {"sample": sample, "opset": opset, "pipeline": pipeline or "(none)"}
    if pipeline:
        optimized = folder / "opt.onnx"
        done = subprocess.run(["parekit", "optimize", str(model), "--passes", pipeline, "-o", str(optimized),
                               "--no-verify-each"], capture_output=True, text=True, check=False)
        if done.returncode:
            row.update(built=False, error="optimize: " + (done.stderr.strip().splitlines() or ["?"])[0])
            return row
        model = optimized
    report = folder / "build.json"
    start = time.perf_counter()
    done = subprocess.run(["parekit", "build", str(model), "-o", str(folder / "model.plan"), "--backend",
                           "tensorrt-rtx", "--report", str(report)], capture_output=True, text=True, check=False)
    row["wall_s"] = time.perf_counter() - start
    if done.returncode:
        row.update(built=False, error=next((ln for ln in done.stderr.splitlines() if ln.startswith("error:")), "?"))
        return row
    facts = json.loads(report.read_text())
    nodes = facts["parekit_nodes"]
    row.update(built=True, layers=facts["layers"], parekit_nodes=len(nodes),
               inlined=sum(n["becomes"] == "function body" for n in nodes), plan_mib=facts["plan_bytes"] / 2**20,
               build_s=facts["build_s"], prepare_s=facts["prepare_s"],
               dims={k: [v["min"], v["opt"], v["max"]] for k, v in facts["profile"]["dims"].items()})
    return row


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| sample | opset | pipeline | built | network layers | parekit nodes (inlined) | plan MiB | build s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["built"]:
            lines.append(f"| {r['sample']} | {r['opset']} | `{r['pipeline']}` | yes | {r['layers']} | "
                         f"{r['parekit_nodes']} ({r['inlined']}) | {r['plan_mib']:.1f} | {r['build_s']:.1f} |")
        else:
            lines.append(f"| {r['sample']} | {r['opset']} | `{r['pipeline']}` | **no**: {r['error']} | | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opset", type=int, default=18, choices=(18, 23))
    parser.add_argument("--sample", action="append", choices=sorted(MATRIX))
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    for sample in args.sample or list(MATRIX):
        for pipeline in MATRIX[sample]:
            with tempfile.TemporaryDirectory() as tmp:
                row = run_one(sample, args.opset, pipeline, Path(tmp))
            rows.append(row)
            status = "built" if row["built"] else f"FAILED {row['error']}"
            print(f"{sample:11s} op{args.opset} {pipeline or '(none)':45s} {status}", flush=True)
    table = markdown(rows)
    print(table)
    built = sum(bool(r["built"]) for r in rows)
    print(f"{built}/{len(rows)} built")
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    sys.exit(0 if built == len(rows) else 1)


if __name__ == "__main__":
    main()
