"""Depth pruning on the real MiniLM: fidelity, estimated FLOPs and measured speed in one run.

    python bench/drop_layers.py [--batch 8] [--seq 128] [--iters 20] [--out docs/bench_drop_layers.md]

For each configuration: the layers dropped (ShortGPT block influence chooses them for ``count``,
calibrated on the second half of the ``pydoc_data.topics`` prose), the estimated FLOP ratio, the mean
and minimum sentence-embedding cosine against the unmodified model on the first half, and the
ORT CPU speed-up measured interleaved with the unmodified model in the same process.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

from parekit.backends.ort import check_loads
from parekit.backends.save import save_model
from parekit.bench import bench_models
from parekit.calibration import CalibrationSet
from parekit.data import prose_paragraphs
from parekit.frontends import zoo
from parekit.frontends.onnx_file import load_model
from parekit.parity import compare_models
from parekit.passes import PassContext, run_pipeline

CONFIGS = ["drop-layers{count=1}", "drop-layers{count=2}", "drop-layers{layers=[4,5]}", "drop-layers{count=3}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--texts", type=int, default=64, help="evaluation paragraphs")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = ap.parse_args()

    src = zoo.export_sample("minilm", opset=18)
    ref = load_model(src)
    corpus = prose_paragraphs()
    eval_feeds = zoo.text_feeds(ref, corpus[: args.texts], seq_len=args.seq, batch=args.batch)
    half = len(corpus) // 2  # calibrate on the second half, evaluate on the first (as the CLI does)
    calib = CalibrationSet(
        zoo.text_feeds(ref, corpus[half : half + args.texts], seq_len=args.seq, batch=args.batch),
        source="prose (second half)",
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(src)]
        for i, pipeline in enumerate(CONFIGS):
            result = run_pipeline(load_model(src), pipeline, PassContext(calibration=calib), verifier=check_loads)
            (rep,) = result.reports
            path = Path(tmp) / f"c{i}.onnx"
            save_model(result.model, path)
            paths.append(str(path))
            parity = compare_models(src, path, eval_feeds, outputs=["sentence_embedding"])
            emb = parity.outputs["sentence_embedding"]
            rows.append(
                {
                    "pipeline": result.canonical,
                    "dropped": sorted(s["layer"] for s in rep.sites),
                    "flops": rep.flops_after / rep.flops_before,
                    "cos": emb["cosine"],
                    "cos_min": emb["cosine_min"],
                }
            )
        timing = bench_models(paths, eval_feeds[:1], warmup=3, iters=args.iters, measure_memory=False)
    speed = [m.ratio for m in timing.models[1:]]
    base_ms = timing.models[0].median_ms
    lines = [
        f"MiniLM (real weights), batch {args.batch} x {args.seq} tokens, ORT CPU on {platform.machine()}, "
        f"baseline median {base_ms:.1f} ms; fidelity on {len(eval_feeds) * args.batch} paragraphs.",
        "",
        "| pipeline | dropped | FLOPs vs original | embedding cosine (mean / min) | speed-up |",
        "|---|---|---|---|---|",
    ]
    for row, ratio in zip(rows, speed):
        lines.append(
            f"| `{row['pipeline']}` | {row['dropped']} | {row['flops']:.3f} | "
            f"{row['cos']:.4f} / {row['cos_min']:.4f} | {ratio:.2f}x |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n\nReproduce: `python bench/drop_layers.py`\n")


if __name__ == "__main__":
    main()
