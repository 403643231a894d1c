"""``parekit train-exit``: train an exit adapter on the frozen model and build it into an exit branch.

    MODEL ─► ModelMap ─► own head in torch ─► dump (ORT: layer L states + teacher) ─► train (torch)
                                                                                      │
        OUT.npz (the adapter: exit_adapter's format, with the training record)  ◄─────┤
        OUT.onnx (MODEL + early-exit{layers=[L],head=adapter,...}, form=outputs) ◄────┘

``-o X.npz`` writes only the adapter; ``-o X.onnx`` writes the model with the exit branch and the
adapter beside it (``X.npz``, or ``--adapter-file``). Outputs are checked writable before anything
slow, written last, and nothing is written on failure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from parekit.cli.common import (
    MAX_SEED,
    MAX_THREADS,
    console,
    finite,
    plain,
    quiet_onnxruntime,
    quiet_torch,
    safe,
)
from parekit.cli.load import external_files, load
from parekit.cli.outputs import Outputs
from parekit.errors import ParekitError

__all__ = ["train_exit_cmd"]

MAX_FFN = 1 << 16
MAX_EPOCHS = 10_000
MAX_TOKENS = 1 << 24
MAX_WINDOW = 8192


def _tokenizer(model: Any, kind: str, path: str | None) -> Any:
    from parekit.frontends.samples import sample_of
    from parekit.runtime.tokenizer import ByteTokenizer, load_tokenizer

    if path is not None:
        return load_tokenizer(path)
    sample = sample_of(model)
    if sample is None:
        raise ParekitError(
            "MODEL: not a parekit zoo sample, so its tokenizer is unknown",
            note="pass --tokenizer PATH (a local Hugging Face tokenizer folder) or --tokenizer bytes",
        )
    tok = sample.tokenizer()
    if tok is None and kind == "encoder":
        raise ParekitError(f"sample '{sample.name}' has no tokenizer; encoder exits train on tokenized paragraphs")
    return tok or ByteTokenizer()


def _exit_pipeline(layer: int, adapter_file: str, signal: str, threshold: float) -> str:
    from parekit.passes.option_format import format_value

    return (
        f"early-exit{{layers=[{layer}],head=adapter,adapter={format_value(adapter_file)},"
        f"signal={signal},threshold={format_value(threshold)},form=outputs}}"
    )


@click.command("train-exit")
@click.argument("model", type=click.Path())
@click.option("--layer", type=int, required=True, help="exit after this block (0-based; not the last one)")
@click.option("--adapter", "kind", type=click.Choice(["linear", "mlp"]), default="mlp", show_default=True,
              help="adapter kind (exit_adapter's format)")
@click.option("--hidden", "ffn", type=click.IntRange(1, MAX_FFN), default=1024, show_default=True,
              help="inner width of the mlp adapter")
@click.option("--tokens", type=click.IntRange(1, MAX_TOKENS), default=None,
              help="training tokens (default: all of the training text minus the held-out part)")
@click.option("--held-out", type=click.IntRange(1, MAX_TOKENS), default=None,
              help="held-out tokens (decoders, default 8192) or paragraphs (encoders, default 64)")
@click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=30, show_default=True,
              help="most epochs (training stops earlier when the held-out metric stops improving)")
@click.option("--patience", type=click.IntRange(1, MAX_EPOCHS), default=3, show_default=True,
              help="epochs without held-out gain before stopping")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True, max=1.0), default=1e-3, show_default=True,
              help="peak learning rate (warm-up, then cosine decay)")
@click.option("--batch", type=click.IntRange(1, 1 << 16), default=None,
              help="rows per step: tokens (decoders, default 512) or paragraphs (encoders, default 16)")
@click.option("--window", type=click.IntRange(8, MAX_WINDOW), default=256, show_default=True,
              help="decoders: tokens per training window (each a fresh sequence)")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--signal", type=click.Choice(["auto", "margin", "entropy", "maxprob", "cosine"]), default="auto",
              show_default=True, help="the exit gate's signal (auto: margin for decoders, cosine for encoders)")
@click.option("--threshold", type=float, default=0.9, show_default=True, help="the exit gate's threshold")
@click.option("--tokenizer", "tokenizer_path", default=None,
              help="local Hugging Face tokenizer folder, or 'bytes' (default: the zoo sample's tokenizer)")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None,
              help="torch CPU threads (default: every core)")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="X.onnx: the model with the exit branch (+ the adapter beside it); X.npz: the adapter only")
@click.option("--adapter-file", type=click.Path(dir_okay=False), default=None,
              help="where the adapter goes with an .onnx -o (default: -o with .npz)")
def train_exit_cmd(
    model: str,
    layer: int,
    kind: str,
    ffn: int,
    tokens: int | None,
    held_out: int | None,
    epochs: int,
    patience: int,
    lr: float,
    batch: int | None,
    window: int,
    seed: int,
    signal: str,
    threshold: float,
    tokenizer_path: str | None,
    threads: int | None,
    output: str,
    adapter_file: str | None,
) -> None:
    """Train an exit adapter at --layer of MODEL (frozen) and write it, with the model's exit branch.

    Decoders learn the full model's next-token distribution (KL to its top-64), encoders its final
    embedding (1 − cosine), from the second half of the offline text (the first half stays unseen
    for evaluation); the record (tokens, epochs, loss curve, held-out agreement, seed) goes into the
    adapter file.
    """
    finite("--threshold", threshold)
    only_adapter = output.endswith(".npz")
    if only_adapter and adapter_file is not None:
        raise ParekitError("--adapter-file goes with an .onnx -o; with -o X.npz the adapter is -o itself")
    npz = output if only_adapter else (adapter_file or str(Path(output).with_suffix(".npz")))
    files = Outputs()
    files.add_input("MODEL", model)
    files.add_output("-o" if only_adapter else "--adapter-file", npz)
    if not only_adapter:
        files.add_output("-o", output)
        files.add_output("-o's external data", output + ".data")
    files.check()  # before anything slow, and before anything is created
    pipeline_text = None
    if not only_adapter:
        from parekit.passes.pipeline import parse_pipeline

        pipeline_text = _exit_pipeline(layer, os.path.basename(npz), signal, threshold)
        parse_pipeline(pipeline_text).resolve()  # the early-exit pass must exist before hours of work
    quiet_onnxruntime()
    ir_model = load(model)
    for path in external_files(ir_model):
        files.add_input("MODEL's external data", path)
    files.check()
    from parekit.analysis import discover

    mm = discover(ir_model)
    _check_layer(mm, layer)
    quiet_torch()
    from parekit.training import TrainOptions, build_head, dump_decoder, dump_encoder, train_exit

    head = build_head(ir_model, mm)
    tok = _tokenizer(ir_model, mm.kind, tokenizer_path)
    if mm.kind == "decoder":
        dump = dump_decoder(ir_model, mm, layer, tok, head.output, tokens=tokens, held_out=held_out or 8192,
                            window=window, progress=True)
    else:
        dump = dump_encoder(ir_model, mm, layer, tok, head.output, tokens=tokens, held_out=held_out or 64,
                            progress=True)
    options = TrainOptions(kind=kind, ffn=ffn, epochs=epochs, lr=lr, batch=batch, patience=patience, seed=seed,
                           threads=threads, progress=True)
    result = train_exit(dump, head, options, model_params=_model_params(ir_model))
    _write(files, ir_model, result.adapter, npz, None if only_adapter else output, layer, signal, threshold)
    _summary(result.record, npz, None if only_adapter else output)


def _check_layer(mm: Any, layer: int) -> None:
    mm.select_layers([layer], "train-exit", "--layer")
    if layer == mm.num_layers - 1:
        raise ParekitError(
            f"train-exit: --layer {layer} is the last layer; the model's own head is there",
            note=f"choose a layer from 0 to {mm.num_layers - 2}",
        )


def _model_params(model: Any) -> int:
    import math

    import onnx_ir as ir

    total = 0
    for value in model.graph.initializers.values():
        dims = list(value.shape) if value.shape is not None else []
        if value.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16) and all(
            isinstance(d, int) for d in dims
        ):
            total += math.prod(dims)
    return total


def _write(files: Outputs, model: Any, adapter: Any, npz: str, onnx_out: str | None, layer: int,
           signal: str, threshold: float) -> None:
    from parekit.passes.exit_adapter import save_adapters

    with files:
        def write(tmp: str) -> str:
            save_adapters(tmp, [adapter])
            return tmp

        staged = files.stage(npz, write)
        if onnx_out is not None:
            _write_exit_model(model, staged, npz, onnx_out, layer, signal, threshold)
        files.commit()


def _write_exit_model(model: Any, staged: str, npz: str, onnx_out: str, layer: int, signal: str,
                      threshold: float) -> None:
    from parekit.backends.ort import check_loads
    from parekit.backends.save import save_model
    from parekit.passes.base import PassContext
    from parekit.passes.manager import PIPELINE_KEY, run_pipeline
    from parekit.passes.pipeline import parse_pipeline

    # the pass reads the staged adapter; the pipeline recorded in the model names the final file
    earlier = model.metadata_props.get(PIPELINE_KEY)
    parsed = parse_pipeline(_exit_pipeline(layer, staged, signal, threshold))
    result = run_pipeline(model, parsed, PassContext(), verify_each=True, verifier=check_loads, progress=True)
    final = str(parse_pipeline(_exit_pipeline(layer, os.path.basename(npz), signal, threshold)).resolve())
    result.model.metadata_props[PIPELINE_KEY] = f"{earlier},{final}" if earlier else final
    save_model(result.model, onnx_out)


def _summary(record: dict[str, Any], npz: str, onnx_out: str | None) -> None:
    err = console(stderr=True)
    decoder = "held_out_top1_agreement" in record
    metric = "top-1 agreement" if decoder else "embedding cosine"
    own = record.get("own_head_top1_agreement" if decoder else "own_head_cosine")
    got = record.get("held_out_top1_agreement" if decoder else "held_out_cosine")
    frac = record.get("params_fraction")
    err.print(plain(
        f"exit at layer {record['layer']}: {record['kind']} adapter, {record['params']:,} parameters"
        + (f" ({100 * frac:.2f}% of the model)" if frac else "")
        + f"; {record['tokens']:,} training tokens, {record['epochs']} epoch(s) (best {record['best_epoch']}), "
        f"{record['seconds']:.1f} s training + {record['dump_seconds']:.1f} s dump"
    ))
    err.print(plain(f"held-out {metric}: own head {own:.4f} -> adapter {got:.4f} ({record['held_out_tokens']:,} tokens)"))
    for name, rows in (record.get("gate") or {}).items():
        cells = ", ".join(f"{t:g}: {c:.1%}@{a:.3f}" for t, c, a in rows if a is not None)
        err.print(plain(f"  gate {name} >= t (coverage@agreement): {cells or 'nothing passes'}"))
    err.print(plain(f"wrote {safe(npz)}" + (f" and {safe(onnx_out)}" if onnx_out else "")))
