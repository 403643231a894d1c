"""Token pruning and merging on MiniLM (real weights) and ViT-B/16: speed, FLOPs and fidelity in one run.

    python bench/token_reduction.py [--models minilm,vit] [--opset 23] [--iters 10] [--out docs/bench_token_reduction.md]

For each configuration: the estimated FLOP ratio (matrix products, from the pass report), the ORT CPU
speed-up measured interleaved with the unmodified model in the same process (batch 8), the share of the
FLOP bound it reaches (speed-up × FLOP ratio), and fidelity against the unmodified model:

* MiniLM: sentence-embedding cosine (mean / min) on 128-token windows of real prose (the first half of
  ``pydoc_data.topics``; every token real, no padding), batch 8;
* ViT-B/16 (seeded random weights: no ViT weights ship offline): cosine of the logits and top-1
  agreement of the classifier on scikit-image's bundled photos (and their mirror images), 224x224.

Needs the ``bench`` extra (scikit-image) for the photos.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parekit.backends.ort import check_loads
from parekit.backends.save import save_model
from parekit.bench import bench_models
from parekit.data import prose_paragraphs
from parekit.errors import MissingExtraError
from parekit.frontends import zoo
from parekit.frontends.onnx_file import load_model
from parekit.native import library_path
from parekit.parity import compare_models
from parekit.passes import PassContext, run_pipeline

CONFIGS = {
    "minilm": [
        "token-prune{keep=0.5,layers=[2]}",
        "token-prune{keep=0.45,layers=[2]}",
        "token-prune{keep=0.7,layers=[1,2]}",
        "token-prune{keep=0.5,layers=[1]}",
        "token-prune{keep=0.5,layers=[2],fuse=true}",
        "token-prune{keep=0.5,layers=[2],score=mean}",
        "token-merge{r=16}",
        "token-merge{r=32,layers=[2]}",
        "token-merge{r=16,unmerge=true}",
    ],
    "vit": [
        "token-merge{r=8}",
        "token-merge{r=12}",
        "token-merge{r=16}",
        "token-merge{r=20}",
        "token-merge{r=16,prop_attn=false}",
        "token-merge{r=32,unmerge=true}",
        "token-prune{keep=0.7,layers=[3,6,9]}",
        "token-prune{keep=0.7,layers=[3,6,9],fuse=true}",
        "token-prune{keep=0.5,layers=[3,6,9]}",
    ],
}

PHOTOS = [
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
    "colorwheel", "camera", "brick", "grass", "gravel", "moon", "page", "text", "coins", "clock", "logo",
    "microaneurysms", "cell",
]  # fmt: skip


def prose_windows(model, count: int, seq: int, batch: int) -> list[dict[str, np.ndarray]]:
    """``count`` windows of ``seq`` real tokens ([CLS] text [SEP]) cut from the first half of the prose."""
    tok = zoo.sample_of(model).tokenizer()  # type: ignore[union-attr]
    corpus = prose_paragraphs()
    text = "\n".join(corpus[: len(corpus) // 2])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    body = seq - 2
    rows = [[tok.cls_token_id, *ids[i * body : (i + 1) * body], tok.sep_token_id] for i in range(count)]
    rows = [r for r in rows if len(r) == seq]
    names = {v.name for v in model.graph.inputs}
    feeds = []
    for start in range(0, len(rows) - batch + 1, batch):
        ids_b = np.array(rows[start : start + batch], dtype=np.int64)
        feed = {"input_ids": ids_b, "attention_mask": np.ones_like(ids_b)}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids_b)
        feeds.append(feed)
    return feeds


def photo_batches(batch: int) -> list[dict[str, np.ndarray]]:
    """scikit-image's bundled photos and their mirror images, 224x224, normalized like HF ViT (mean/std 0.5)."""
    try:
        import skimage.data
        from skimage.transform import resize
    except ImportError as e:
        raise MissingExtraError("scikit-image", "bench", "photos for the ViT benchmark") from e
    images = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        if img.max() > 1.0:
            img = img / 255.0
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = resize(img[..., :3], (224, 224), anti_aliasing=True).astype(np.float32)
        chw = ((img - 0.5) / 0.5).transpose(2, 0, 1)
        images += [chw, chw[:, :, ::-1]]
    arr = np.ascontiguousarray(np.stack(images))
    return [{"pixel_values": arr[i : i + batch]} for i in range(0, len(arr) - batch + 1, batch)]


def run_model(
    name: str,
    opset: int,
    configs: Sequence[str],
    iters: int,
    batch: int,
    seq: int,
    forms: Sequence[bool] = (False,),
) -> str:
    src = zoo.export_sample(name, opset=opset)
    ref = load_model(src)
    extra: list[dict[str, np.ndarray]] = []
    if name == "minilm":
        feeds = prose_windows(ref, count=64, seq=seq, batch=batch)
        corpus = prose_paragraphs()
        extra = zoo.text_feeds(
            ref, corpus[:64], seq_len=seq, batch=batch, pad_to_max=False
        )  # natural lengths
        output, what = (
            "sentence_embedding",
            f"sentence-embedding cosine on {len(feeds) * batch} windows of {seq} real prose tokens "
            f"(speed is timed on these), and on the first 64 prose paragraphs as they come (padded batches)",
        )
    else:
        feeds = photo_batches(batch)
        output, what = (
            "logits",
            f"logits cosine / top-1 agreement on {len(feeds) * batch} photos (scikit-image, + mirrored)",
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(src)]
        for i, pipeline in enumerate(configs):
            result = run_pipeline(load_model(src), pipeline, PassContext(), verifier=check_loads)
            (rep,) = result.reports
            path = Path(tmp) / f"c{i}.onnx"
            save_model(result.model, path)
            paths.append(str(path))
            parity = compare_models(
                src, path, feeds, outputs=[output], thresholds=["cosine=0", "max_abs=inf", "top1=0"]
            )
            m = parity.outputs[output]
            para = None
            if extra:
                para = compare_models(
                    src, path, extra, outputs=[output], thresholds=["cosine=0", "max_abs=inf"]
                ).outputs[output]["cosine"]
            rows.append(
                (
                    pipeline,  # as written; the canonical form (all options) is in the pass report
                    rep.flops_after / rep.flops_before,
                    m["cosine"],
                    m["cosine_min"],
                    m.get("top1"),
                    para,
                )
            )
            print(f"  {pipeline}: FLOPs {rows[-1][1]:.3f}, cosine {m['cosine']:.4f}", flush=True)
        # the baseline (no parekit op) once, then every configuration in each form, interleaved
        timed_paths = [paths[0]] + [p for p in paths[1:] for _ in forms]
        natives = [False] + [f for _ in paths[1:] for f in forms]
        timing = bench_models(
            timed_paths, feeds[:1], warmup=2, iters=iters, measure_memory=False, progress=True, native=natives
        )
    base = timing.models[0].median_ms
    title = "MiniLM-L6 (real weights)" if name == "minilm" else "ViT-B/16 (seeded random weights)"
    lines = [
        f"### {title}, opset {opset}, batch {batch}"
        + (f" x {seq} tokens" if name == "minilm" else ", 224x224"),
        "",
        f"ORT CPU on {platform.machine()}, baseline median {base:.1f} ms over {iters} interleaved rounds; fidelity: {what}.",
        "",
        "| pipeline | ops | FLOPs vs original | speed-up | share of FLOP bound | cosine (mean / min) | "
        + ("cosine on paragraphs |" if name == "minilm" else "top-1 agreement |"),
        "|---|---|---|---|---|---|---|",
    ]
    timed_rows = iter(timing.models[1:])
    for pipeline, flops, cos, cos_min, top1, para in rows:
        last = f"{para:.4f}" if name == "minilm" else f"{top1:.3f}"
        for form in forms:
            timed = next(timed_rows)
            lines.append(
                f"| `{pipeline}` | {'kernels' if form else 'bodies'} | {flops:.3f} | {timed.ratio:.2f}x | "
                f"{timed.ratio * flops:.0%} | {cos:.4f} / {cos_min:.4f} | {last} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="minilm,vit")
    ap.add_argument("--opset", type=int, default=23, choices=[18, 23])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument(
        "--config", action="append", help="pipeline to measure (repeatable; default: the built-in list)"
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
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
    tables = []
    for name in args.models.split(","):
        print(f"{name}:", flush=True)
        tables.append(
            run_model(name, args.opset, args.config or CONFIGS[name], args.iters, args.batch, args.seq, forms)
        )
        print(tables[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = (
            f"python bench/token_reduction.py --models {args.models} --opset {args.opset} --iters {args.iters} "
            f"--native {args.native}"
        )
        args.out.write_text(
            "\n\n".join(tables) + f"\n\nReproduce: `{cmd}` (needs `pip install -e .[bench]`)\n"
        )


if __name__ == "__main__":
    main()
