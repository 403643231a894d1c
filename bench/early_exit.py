"""Early exit on the real models: MiniLM per-row exits (segments, If, outputs) and SmolLM2 exit adapters.

    python bench/early_exit.py [--opset 18] [--iters 15] [--minilm-adapter FILE.npz] \
        [--smollm2-exit S.exit.onnx] [--out docs/bench_early_exit.md]

MiniLM (all-MiniLM-L6-v2, real weights): exits after the chosen blocks, each gate's threshold
calibrated (``early-exit{...,budget=sentence_embedding:cosine=B}``) on paragraphs from the second half of
``pydoc_data.topics``; evaluated on paragraphs from the first half (disjoint), padded batches as they come.
For each configuration and budget: the exit rate per exit, the sentence-embedding cosine to the full
model over the evaluation rows (mean / min), and the ORT CPU latency of the segments (per-row exits,
batch compacted) against the full model, interleaved in the same process. At one configuration, every
form side by side at the same thresholds: ``outputs`` (exits computed, every block runs), ``if``
(batch-wide ONNX If), ``segments`` (per-row), at batch 8 and batch 1.

SmolLM2-135M (real weights): next-token top-1 agreement with the full model on 256-token windows of the
first half of the prose (fresh sequences), for the model's own head at the exit layer (logit lens) and
for a trained adapter (``parekit train-exit``; pass its ONNX with ``--smollm2-exit``), plus coverage and
agreement of the tokens whose exit margin passes a threshold.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parekit.backends.ort import OrtRunner, check_loads
from parekit.backends.save import save_model
from parekit.bench import bench_models
from parekit.calibration import CalibrationSet
from parekit.data import prose_halves
from parekit.frontends import zoo
from parekit.frontends.onnx_file import load_model
from parekit.passes import PassContext, run_pipeline
from parekit.segments import SegmentRunner, split_model, write_segments

EXITS_KEY = "parekit.exits"
MINILM_CONFIGS = [
    ("own", [1, 2, 3, 4]),
    ("adapter", [1, 2, 3, 4]),
    ("adapter", [2, 3]),
]
BUDGETS = [0.99, 0.98, 0.95, 0.90]


def paragraph_feeds(model: Any, first: bool, count: int, batch: int) -> list[dict[str, np.ndarray]]:
    evaluation, calibration = prose_halves()  # disjoint: calibration leaves out first-half repeats
    texts = (evaluation if first else calibration)[:count]
    return zoo.text_feeds(model, texts, seq_len=128, batch=batch, pad_to_max=False)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(-1) / (np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1) + 1e-12)


def evaluate_segments(seg_dir: Path, ref: OrtRunner, feeds: Sequence[dict[str, np.ndarray]], layers: list[int]):
    runner = SegmentRunner(seg_dir, exits=True)
    cos: list[np.ndarray] = []
    exited: list[int | None] = []
    for feed in feeds:
        got = runner.run(feed, outputs=["sentence_embedding"])["sentence_embedding"]
        want = ref.run(feed, outputs=["sentence_embedding"])["sentence_embedding"]
        cos.append(cosine_rows(got, want))
        exited += runner.last_exit_layers
    c = np.concatenate(cos)
    rates = {layer: sum(1 for e in exited if e == layer) / len(exited) for layer in layers}
    return runner, c, rates


def minilm(opset: int, iters: int, adapter_file: str | None) -> list[str]:
    src = zoo.export_sample("minilm", opset=opset)
    ref_model = load_model(src)
    calib = CalibrationSet(paragraph_feeds(ref_model, False, 184, 8), source="text: 184 second-half paragraphs")
    evals = paragraph_feeds(ref_model, True, 128, 8)
    ref = OrtRunner(src)
    configs = list(MINILM_CONFIGS)
    if adapter_file:
        configs.append((f"adapter={adapter_file}", [2, 3]))
    lines = [
        f"### MiniLM-L6 (real weights), opset {opset}: per-row exits, segments form, batch 8",
        "",
        f"ORT CPU on {platform.machine()}; calibration on 184 paragraphs of the second half of the prose (first-half repeats left out), "
        f"evaluation on {len(evals) * 8} paragraphs of the first half (padded batches as they come). "
        "Cosine: sentence embedding vs the full model's, per row. Speed-up: median latency of the full model "
        f"over the segments' (per-row exits, batch compacted), {iters} interleaved rounds over all evaluation batches.",
        "",
        "| head | exits after blocks | budget (calibration) | calibrated exit rates | eval exit rates | eval cosine mean / min | FLOP speed-up (expected) | measured speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    forms_case: tuple[str, list[int], float, dict[int, float]] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for head, layers in configs:
            head_opt = "head=own" if head == "own" else ("head=adapter" if head == "adapter" else f"head=adapter,{head}")
            runners: list[Any] = []
            rows: list[tuple[str, str, str, str, float | None]] = []
            for budget in BUDGETS:
                pipeline = (
                    f"early-exit{{layers=[{','.join(map(str, layers))}],{head_opt},"
                    f"budget=\"sentence_embedding:cosine={budget}\",form=segments}}"
                )
                t0 = time.perf_counter()
                result = run_pipeline(load_model(src), pipeline, PassContext(calibration=calib), verifier=check_loads)
                exits = json.loads(result.model.metadata_props[EXITS_KEY])
                seg_dir = Path(tmp) / f"s{len(list(Path(tmp).iterdir()))}"
                write_segments(split_model(result.model), seg_dir, "minilm.onnx")
                runner, cos, rates = evaluate_segments(seg_dir, ref, evals, layers)
                runners.append(runner)
                cal = [e.get("calibration") or {} for e in exits["exits"]]
                overall = (cal[0] or {}).get("overall", {})
                rows.append(
                    (
                        f"cosine ≥ {budget}",
                        " / ".join(f"{c.get('exit_rate', 0):.2f}" for c in cal),
                        " / ".join(f"{rates[lyr]:.2f}" for lyr in layers),
                        f"{cos.mean():.4f} / {cos.min():.4f}",
                        overall.get("expected_speedup"),
                    )
                )
                print(f"  {head} {layers} {budget}: eval cos {cos.mean():.4f}, rates {rates} ({time.perf_counter() - t0:.0f} s)", flush=True)
                if head == "adapter" and layers == [1, 2, 3, 4] and budget == 0.98:
                    forms_case = (head_opt, layers, budget, {e["layer"]: e["threshold"] for e in exits["exits"]})
            timing = bench_models([ref, *runners], evals, warmup=1, iters=iters, measure_memory=False, progress=True)
            for (budget_text, cal_rates, eval_rates, cos_text, flop), timed in zip(rows, timing.models[1:], strict=True):
                flop_text = f"{flop:.2f}x" if flop else "–"
                lines.append(
                    f"| {head.split('=')[0]} | {layers} | {budget_text} | {cal_rates} | {eval_rates} | {cos_text} | {flop_text} | {timed.ratio:.2f}x |"
                )
        if forms_case is not None:
            lines += ["", *forms_table(src, tmp, evals, calib, forms_case, iters)]
    return lines


def forms_table(
    src: Path, tmp: str, evals: list[dict[str, np.ndarray]], calib: CalibrationSet, case: Any, iters: int
) -> list[str]:
    """Every form at the same thresholds (those the segments calibration chose), batch 8 and 1."""
    head_opt, layers, budget, thresholds = case
    out = [
        f"### Every form at the same exit decisions (MiniLM, exits after {layers}, thresholds calibrated for cosine ≥ {budget})",
        "",
        "Thresholds per exit: " + ", ".join(f"block {k}: {v:.4g}" for k, v in thresholds.items()) + ". "
        "`outputs` computes every exit and runs every block; `if` nests ONNX If nodes with a batch-wide predicate "
        "(the rest of the model is skipped only when every row of the batch exits); `segments` stops rows one by one.",
        "",
        "| form | batch | eval cosine mean / min | measured speed-up |",
        "|---|---|---|---|",
    ]
    for batch in (8, 1):
        feeds = evals if batch == 8 else [{k: v[i : i + 1] for k, v in f.items()} for f in evals[:4] for i in range(8)]
        candidates: list[Any] = []
        names: list[str] = []
        for form in ("outputs", "if", "segments"):
            model = load_model(src)
            values = ",".join(f"{thresholds[layer]:.9g}" for layer in layers)
            pipeline = f"early-exit{{layers=[{','.join(map(str, layers))}],{head_opt},thresholds=[{values}],form={form}}}"
            result = run_pipeline(model, pipeline, PassContext(calibration=calib), verifier=check_loads)
            if form == "segments":
                seg_dir = Path(tmp) / f"forms{batch}"
                write_segments(split_model(result.model), seg_dir, "minilm.onnx")
                candidates.append(SegmentRunner(seg_dir, exits=True))
            else:
                path = Path(tmp) / f"form-{form}-{batch}.onnx"
                save_model(result.model, path)
                candidates.append(OrtRunner(path))
            names.append(form)
        ref = OrtRunner(src)
        timing = bench_models([ref, *candidates], feeds, warmup=1, iters=iters, measure_memory=False, progress=True)
        for name, runner, timed in zip(names, candidates, timing.models[1:], strict=True):
            cos = np.concatenate(
                [
                    cosine_rows(
                        runner.run(f, outputs=["sentence_embedding"])["sentence_embedding"],
                        ref.run(f, outputs=["sentence_embedding"])["sentence_embedding"],
                    )
                    for f in feeds
                ]
            )
            out.append(f"| {name} | {batch} | {cos.mean():.4f} / {cos.min():.4f} | {timed.ratio:.2f}x |")
    return out


def decoder_windows(model: Any, count: int, window: int) -> list[dict[str, np.ndarray]]:
    """``count`` fresh-sequence windows of ``window`` tokens from the first (evaluation) half of the prose."""
    from parekit.backends.specs import specs_from_ir_values

    tok = zoo.sample_of(model).tokenizer()  # type: ignore[union-attr]
    evaluation, _ = prose_halves()
    ids: list[int] = []
    for text in evaluation:
        ids += tok.encode(text + "\n\n", add_special_tokens=False)
        if len(ids) >= count * window:
            break
    feeds = []
    for i in range(count):
        row = np.asarray(ids[i * window : (i + 1) * window], np.int64)[None]
        feed = {"input_ids": row, "attention_mask": np.ones_like(row), "position_ids": np.arange(window)[None]}
        for spec in specs_from_ir_values(model.graph.inputs):
            if spec.name.startswith("past"):
                dims = [1 if k == 0 else (d if isinstance(d, int) else 0) for k, d in enumerate(spec.shape or [])]
                feed[spec.name] = np.zeros(dims, np.float32)
        feeds.append(feed)
    return feeds


def smollm2(exit_model: str, windows: int) -> list[str]:
    """Top-1 agreement of the exit's next token with the full model's: own head vs the trained adapter."""
    trained = load_model(exit_model)
    meta = json.loads(trained.metadata_props[EXITS_KEY])
    (e,) = meta["exits"]
    layer, record = e["layer"], (e.get("adapter") or {}).get("record", {})
    src = zoo.export_sample("smollm2", opset=18)
    own = run_pipeline(load_model(src), f"early-exit{{layers=[{layer}],threshold=2.0}}", PassContext(), verifier=check_loads).model
    feeds = decoder_windows(own, windows, 256)
    rows = []
    for name, model in (("own head (logit lens)", own), (f"trained {e['adapter']['kind']} adapter", trained)):
        runner = OrtRunner(model)
        agree, margin = [], []
        for feed in feeds:
            out = runner.run(feed, outputs=["logits", f"logits.exit{layer}", e["score"]])
            agree.append(out["logits"].argmax(-1).reshape(-1) == out[f"logits.exit{layer}"].argmax(-1).reshape(-1))
            margin.append(out[e["score"]].reshape(-1))
        a, m = np.concatenate(agree), np.concatenate(margin)
        cover = [(t, float((m >= t).mean()), float(a[m >= t].mean()) if (m >= t).any() else float("nan")) for t in (0.3, 0.5, 0.8)]
        rows.append((name, a.mean(), cover))
        del runner
    n_params = sum(int(np.prod(v.const_value.shape.dims)) for v in load_model(src).graph.initializers.values() if v.const_value is not None)
    params = e["adapter"]["params"]
    lines = [
        f"### SmolLM2-135M (real weights): an exit after block {layer} of 30, next-token top-1 agreement with the full model",
        "",
        f"Evaluation: {len(feeds)} windows of 256 tokens of the first half of the prose (fresh sequences; training used the "
        f"second half). Adapter: {params:,} parameters ({100 * params / n_params:.2f} % of the model's {n_params:,}); "
        f"training record: {record.get('tokens', '?')} tokens, {record.get('epochs', '?')} epochs, "
        f"{record.get('seconds', float('nan')):.0f} s on this machine, seed {record.get('seed', '?')}, "
        f"held-out agreement during training {record.get('held_out_top1_agreement', '?')}.",
        "",
        "| exit head | top-1 agreement | margin ≥ 0.3: coverage / agreement | margin ≥ 0.5 | margin ≥ 0.8 |",
        "|---|---|---|---|---|",
    ]
    for name, agree_mean, cover in rows:
        cells = " | ".join(f"{c:.3f} / {g:.3f}" for _, c, g in cover)
        lines.append(f"| {name} | {agree_mean:.3f} | {cells} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--opset", type=int, default=18)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--minilm-adapter", default=None, help="a trained MiniLM adapter file (parekit train-exit)")
    ap.add_argument("--smollm2-exit", default=None, help="the ONNX written by parekit train-exit for SmolLM2")
    ap.add_argument("--windows", type=int, default=32, help="SmolLM2 evaluation windows of 256 tokens")
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--out", default="docs/bench_early_exit.md")
    args = ap.parse_args()
    lines = ["# Early exit: measured", "", f"Written by `python bench/early_exit.py` ({time.strftime('%Y-%m-%d')}).", ""]
    if not args.skip_minilm:
        lines += minilm(args.opset, args.iters, args.minilm_adapter)
    if args.smollm2_exit:
        lines += ["", *smollm2(args.smollm2_exit, args.windows)]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
