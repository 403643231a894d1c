"""The ``parekit`` command line.

Heavy packages (onnxruntime, torch) are imported inside the commands, so ``parekit --help`` works
without them. Every :class:`~parekit.errors.ParekitError` becomes ``error: <one line>`` (plus a
``Note:`` line) on stderr and exit status 2; nothing is written to an output path on failure.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from parekit import __version__
from parekit.errors import ParekitError

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("parekit")


def _console(stderr: bool = False) -> Any:
    import shutil

    from rich.console import Console

    # Tables need room: when output is not a terminal, rich would assume 80 columns.
    width = shutil.get_terminal_size((140, 24)).columns
    return Console(stderr=stderr, highlight=False, width=max(width, 100))


def _fail(exc: ParekitError) -> None:
    console = _console(stderr=True)
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True, soft_wrap=True)
    if exc.note:
        console.print(f"Note: {exc.note}", markup=False, soft_wrap=True)
    sys.exit(2)


class _Group(click.Group):
    """Turns errors raised by any command into one-line errors and exit status 2.

    A :class:`ParekitError` is a user-facing error. Anything else is a parekit bug: it is reported
    in one line too (``-vv`` shows the traceback instead).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ParekitError as exc:
            _fail(exc)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except OSError as exc:
            _fail(ParekitError(f"{exc.strerror or type(exc).__name__}: {exc.filename or exc}"))
        except Exception as exc:
            if logging.getLogger("parekit").getEffectiveLevel() <= logging.DEBUG:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _fail(ParekitError(f"internal error ({type(exc).__name__}): {first}",
                               note="this is a bug in parekit; rerun with -vv for the traceback"))


def _load(path: str) -> Any:
    from parekit.frontends.onnx_file import load_model

    return load_model(path)


def _write_json(path: str | None, payload: Any) -> None:
    _commit_json(_stage_json(path, payload))


def _stage_json(path: str | None, payload: Any) -> tuple[Path, Path] | None:
    """Write ``payload`` beside ``path`` under a temporary name; :func:`_commit_json` moves it."""
    if path is None:
        return None
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return tmp, target


def _commit_json(staged: tuple[Path, Path] | None) -> None:
    if staged is not None:
        os.replace(*staged)


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _data_options(func: F) -> F:
    """Options shared by commands that run models on data (check, bench, optimize's calibration)."""
    for decorator in reversed(
        [
            click.option("--samples", type=click.IntRange(min=1), default=64, show_default=True,
                         help="texts (text) or feed rows (random) to use"),
            click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="batch size"),
            click.option("--seq", type=click.IntRange(min=1), default=128, show_default=True,
                         help="tokens per sequence (text models)"),
            click.option("--seed", type=int, default=0, show_default=True, help="seed of --data random"),
            click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
                         help="size of a symbolic input dim for --data random (repeatable)"),
        ]
    ):
        func = decorator(func)
    return func


def _parse_dims(dims: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in dims:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise click.BadParameter(f"expected NAME=INTEGER, got '{item}'", param_hint="--dim")
        out[name.strip()] = int(value)
    return out


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="parekit")
@click.option("-v", "--verbose", count=True, help="more logging (-v info, -vv debug)")
def cli(verbose: int) -> None:
    """parekit: insert token-pruning, KV-compression, early-exit and depth-pruning nodes into
    transformer graphs, check output parity, and measure the speed-up.

    \b
    Typical flow:
      parekit samples export minilm -o minilm.onnx
      parekit inspect minilm.onnx
      parekit optimize minilm.onnx --passes "drop-layers{layers=[4,5]}" -o minilm.d.onnx
      parekit check minilm.onnx minilm.d.onnx --data text
      parekit bench minilm.onnx minilm.d.onnx
    """
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=_console(stderr=True), show_time=False, show_path=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("parekit").setLevel(level)


# ----------------------------------------------------------------------------------------------
# samples


@cli.group()
def samples() -> None:
    """The sample zoo: real and seeded models exported offline."""


@samples.command("list")
def samples_list() -> None:
    """List the sample models."""
    from rich.table import Table

    from parekit.frontends.zoo import SAMPLES

    table = Table(title="parekit samples")
    for col in ("name", "kind", "weights", "description"):
        table.add_column(col)
    for s in SAMPLES.values():
        table.add_row(s.name, s.kind, s.weights + (f" ({s.package})" if s.package else ""), s.description)
    _console().print(table)


@samples.command("export")
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="where to write the .onnx file")
@click.option("--opset", type=click.Choice(["18", "23"]), default="18", show_default=True,
              help="18: attention as MatMul/Softmax; 23: native Attention/RotaryEmbedding/RMSNormalization")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="export cache (default: $XDG_CACHE_HOME/parekit/samples)")
def samples_export(name: str, output: str, opset: str, cache_dir: str | None) -> None:
    """Export sample NAME to an ONNX file (cached: later exports are instant)."""
    from parekit.frontends import zoo

    sample = zoo.get_sample(name)
    console = _console(stderr=True)
    with console.status(f"exporting {sample.name} at opset {opset} (first export takes a while; cached after)"):
        path = zoo.export_sample(name, opset=int(opset), cache_dir=cache_dir)
    zoo.copy_export(path, output)
    console.print(f"wrote {output} ({Path(output).stat().st_size / 2**20:.1f} MiB, {sample.name}, opset {opset})")


# ----------------------------------------------------------------------------------------------
# inspect


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print the structure map as JSON")
@click.option("--layers/--no-layers", default=True, help="show the per-layer table")
def inspect(model: str, as_json: bool, layers: bool) -> None:
    """Print the transformer structure parekit finds in MODEL (what the passes will see)."""
    from parekit.analysis import discover

    mm = discover(_load(model))
    if as_json:
        click.echo(json.dumps(mm.to_dict(), indent=2))
        return
    from rich.table import Table

    console = _console()
    summary = Table.grid(padding=(0, 2))
    from rich.markup import escape

    for key, value in (
        ("model", model),
        ("kind", f"{mm.kind} ({mm.family})"),
        ("opset", mm.opset),
        ("layers", mm.num_layers),
        ("hidden size", mm.hidden_size),
        ("heads", f"{mm.num_heads} query, {mm.num_kv_heads} KV, head dim {mm.head_dim}"),
        ("dims", f"batch={mm.batch_dim or 'static'}, seq={mm.seq_dim or 'static'}"),
        ("inputs", ", ".join(f"{role}={name}" for role, name in mm.inputs.items()) or "-"),
        ("KV cache", "past/present inputs and outputs" if mm.has_kv_cache else "none"),
        ("residual stream", f"{mm.embedding_output} → … → {mm.final_output}"),
    ):
        summary.add_row(f"[bold]{key}[/]", escape(str(value)))
    console.print(summary)
    if not layers:
        return
    table = Table(title="layers")
    for col in ("#", "scope", "input → output", "attention", "norms", "mlp", "KV cache"):
        table.add_column(col, overflow="fold")
    for lm in mm.layers:
        att = lm.attention
        core = f"{att.form}: " + (f"probs={att.probs}" if att.probs else f"node={att.nodes[0]}")
        mlp = "-" if lm.mlp is None else ("gated " if lm.mlp.gate else "") + f"{lm.mlp.activation or '?'}, {len(lm.mlp.up) + (1 if lm.mlp.gate else 0) + 1} matmuls"
        kv = f"{att.past_key} → {att.present_key}" if att.past_key else "-"
        cells = (str(lm.index), lm.scope, f"{lm.input} → {lm.output}", core, str(len(lm.norms)), mlp, kv)
        table.add_row(*(escape(c) for c in cells))
    console.print(table)


# ----------------------------------------------------------------------------------------------
# passes


@cli.command("passes")
@click.argument("name", required=False)
def passes_cmd(name: str | None) -> None:
    """List the passes, or document pass NAME and its options."""
    from rich.table import Table

    from parekit.passes.options import describe_options
    from parekit.passes.registry import get_pass, list_passes

    console = _console()
    if name is None:
        table = Table(title="passes")
        table.add_column("name")
        table.add_column("summary")
        for cls in list_passes():
            table.add_row(cls.name, cls.summary)
        console.print(table)
        console.print('Use [bold]parekit passes NAME[/] for its options; pipelines look like "a{k=v},b".')
        return
    cls = get_pass(name)
    console.print(f"[bold]{cls.name}[/]: {cls.summary}")
    doc = sys.modules[cls.__module__].__doc__
    if doc:
        console.print(doc.strip(), markup=False)
    from rich.markup import escape

    table = Table(title="options")
    for col in ("option", "type", "default", "constraint", "help"):
        table.add_column(col)
    for opt in describe_options(cls.options_type):
        table.add_row(*(escape(str(x)) for x in (opt.name, opt.type, opt.default, opt.constraint, opt.help)))
    console.print(table)
    if cls.required_passes:
        console.print(f"requires earlier in the pipeline: {', '.join(cls.required_passes)}")


# ----------------------------------------------------------------------------------------------
# optimize


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--passes", "pipeline", required=True, help='pipeline, e.g. "drop-layers{layers=[4,5]}"')
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="optimized .onnx to write")
@click.option("--report", type=click.Path(dir_okay=False), help="write the per-pass report as JSON")
@click.option("--calib", "calib", default=None, metavar="text|random|FILE.npz",
              help="calibration data for passes that need it (e.g. drop-layers{count=N})")
@_data_options
@click.option("--verify-each/--no-verify-each", default=True, show_default=True,
              help="run the ONNX checker and an ORT load after every pass")
@click.option("--print-ir-after", is_flag=True, help="print a summary of the graph after every pass")
@click.option("--external-data/--no-external-data", default=None,
              help="store weights in a .data file beside the model (default: only above 1.8 GiB)")
def optimize(
    model: str,
    pipeline: str,
    output: str,
    report: str | None,
    calib: str | None,
    samples: int,
    batch: int,
    seq: int,
    seed: int,
    dims: tuple[str, ...],
    verify_each: bool,
    print_ir_after: bool,
    external_data: bool | None,
) -> None:
    """Run a pass pipeline on MODEL and write the result to OUTPUT.

    The input file is never modified; on any failure no output file is written.
    """
    from parekit.backends.ort import check_loads
    from parekit.backends.save import save_model
    from parekit.passes.base import PassContext
    from parekit.passes.manager import run_pipeline
    from parekit.passes.pipeline import parse_pipeline

    if _same_file(model, output):
        raise ParekitError(f"output '{output}' is the input model", note="write the optimized model to a new path")
    parsed = parse_pipeline(pipeline)  # syntax errors before the (slow) model load
    parsed.resolve()
    ir_model = _load(model)
    ctx = PassContext()
    if calib is not None:
        from parekit.calibration import CalibrationSet
        from parekit.cli.feeds import build_feeds

        feeds, source = build_feeds(
            ir_model, calib, samples=samples, batch=batch, seq=seq, seed=seed, dims=_parse_dims(dims), purpose="calib"
        )
        ctx.calibration = CalibrationSet(feeds=feeds, source=source)
    console = _console(stderr=True)

    def after(name: str, m: Any) -> None:
        if print_ir_after:  # MLIR style: the whole IR after each pass, on stderr
            click.echo(f"// -----// IR after {name} ({len(m.graph)} nodes) //----- //", err=True)
            click.echo(str(m.graph), err=True)

    from rich.markup import escape

    result = run_pipeline(
        ir_model, parsed, ctx, verify_each=verify_each, verifier=check_loads, after_pass=after, progress=True
    )
    payload = {
        "input": model,
        "output": output,
        "pipeline": result.canonical,
        "flop_dims": dict(ctx.flop_dims),
        "passes": [r.to_dict() for r in result.reports],
    }
    staged = _stage_json(report, payload)  # a report that cannot be written fails before the model is
    try:
        save_model(result.model, output, external_data=external_data)
    except BaseException:
        if staged is not None:
            staged[0].unlink(missing_ok=True)
        raise
    _commit_json(staged)
    for r in result.reports:
        if r.identity:
            console.print(f"[yellow]{escape(r.spec)}[/]: identity configuration — {escape(r.identity)}")
        else:
            flops = ""
            if r.flops_before and r.flops_removed is not None:
                flops = f", est. FLOPs −{100 * r.flops_removed / r.flops_before:.1f}%"
            sites = "; ".join(
                ", ".join(f"{k}={v}" for k, v in s.items()) for s in r.sites[:6]
            ) + (" …" if len(r.sites) > 6 else "")
            console.print(f"[green]{escape(r.spec)}[/]: +{r.nodes_added}/−{r.nodes_removed} nodes{flops} ({escape(sites)})")
            if "chosen" in r.extra:
                console.print(escape(f"  chosen: {r.extra['chosen']}; block influence: {r.extra.get('influence')}"))
    console.print(f"wrote {output}")


# ----------------------------------------------------------------------------------------------
# check


@cli.command()
@click.argument("reference", type=click.Path())
@click.argument("candidate", type=click.Path())
@click.option("--data", default="random", show_default=True, metavar="text|random|FILE.npz", help="feeds to compare on")
@_data_options
@click.option("--threshold", "thresholds", multiple=True, metavar="[OUTPUT:]METRIC=VALUE",
              help="bound on a metric, e.g. max_abs=1e-3 or sentence_embedding:cosine=0.98 (repeatable)")
@click.option("--output", "outputs", multiple=True, metavar="NAME", help="compare only this output (repeatable)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the parity report as JSON")
@click.option("--save-golden", type=click.Path(dir_okay=False), help="save the reference's outputs as .npz")
@click.option("--save-feeds", type=click.Path(dir_okay=False), help="save the feeds used as .npz (reusable with --data)")
@click.option("--provider", "providers", multiple=True, help="ONNX Runtime execution provider (default CPU)")
def check(
    reference: str,
    candidate: str,
    data: str,
    samples: int,
    batch: int,
    seq: int,
    seed: int,
    dims: tuple[str, ...],
    thresholds: tuple[str, ...],
    outputs: tuple[str, ...],
    json_path: str | None,
    save_golden: str | None,
    save_feeds: str | None,
    providers: tuple[str, ...],
) -> None:
    """Compare CANDIDATE's outputs with REFERENCE's on the same feeds; exit 1 if a threshold fails.

    REFERENCE is a model, or golden outputs saved earlier with --save-golden (a .npz; then --data
    must be the feeds file saved with --save-feeds).
    """
    from rich.markup import escape

    from parekit.cli.feeds import build_feeds
    from parekit.parity import Thresholds, compare_models, compare_to_golden, run_outputs
    from parekit.parity import save_golden as write_golden
    from parekit.parity.data import save_npz

    limits = Thresholds.parse(list(thresholds)) if thresholds else None
    cand_model = _load(candidate)  # fail early, with a clear message, on a bad candidate file
    golden_mode = reference.endswith(".npz")
    if golden_mode:
        if not data.endswith(".npz"):
            raise ParekitError("a golden reference (.npz) needs the feeds it was made from", note="pass --data FEEDS.npz")
        feeds, source = build_feeds(cand_model, data, samples=samples, batch=batch, seq=seq)
        report = compare_to_golden(
            candidate, feeds, reference, thresholds=limits, providers=list(providers) or None,
            outputs=list(outputs) or None, progress=True,
        )
    else:
        ref_model = _load(reference)
        feeds, source = build_feeds(
            ref_model, data, samples=samples, batch=batch, seq=seq, seed=seed, dims=_parse_dims(dims)
        )
        report = compare_models(
            reference, candidate, feeds, thresholds=limits, providers=list(providers) or None,
            outputs=list(outputs) or None, progress=True,
        )
        if save_golden:
            write_golden(save_golden, run_outputs(reference, feeds, providers=list(providers) or None))
    if save_feeds:
        save_npz(save_feeds, feeds)
    console = _console()
    console.print(f"data: {source}")
    console.print(report.render())
    payload = {"reference": reference, "candidate": candidate, "data": source, **report.to_dict()}
    _write_json(json_path, payload)
    if not report.passed:
        for line in report.failures:
            console.print(f"[red]FAIL[/] {escape(line)}")
        sys.exit(1)
    console.print("[green]parity: all thresholds met[/]")


# ----------------------------------------------------------------------------------------------
# bench


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--data", default="random", show_default=True, metavar="text|random|FILE.npz", help="feeds to time on")
@_data_options
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ORT intra-op threads")
@click.option("--memory/--no-memory", default=True, show_default=True, help="measure peak memory in child processes")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the timings as JSON")
@click.option("--provider", "providers", multiple=True, help="ONNX Runtime execution provider (default CPU)")
def bench(
    models: tuple[str, ...],
    data: str,
    samples: int,
    batch: int,
    seq: int,
    seed: int,
    dims: tuple[str, ...],
    warmup: int,
    iters: int,
    threads: int | None,
    memory: bool,
    json_path: str | None,
    providers: tuple[str, ...],
) -> None:
    """Time MODELS side by side (interleaved, after warm-up); ratios are against the first one."""
    from parekit.bench import bench_models
    from parekit.cli.feeds import build_feeds

    first = _load(models[0])
    for m in models[1:]:
        _load(m)
    feeds, source = build_feeds(first, data, samples=min(samples, batch), batch=batch, seq=seq, seed=seed, dims=_parse_dims(dims))
    report = bench_models(
        list(models), feeds, warmup=warmup, iters=iters, providers=list(providers) or None, threads=threads,
        measure_memory=memory, progress=True,
    )
    console = _console()
    console.print(f"data: {source}")
    console.print(report.render())
    _write_json(json_path, {"data": source, **report.to_dict()})


from parekit.cli.decode import eval_cmd, generate_cmd  # noqa: E402  (decoder commands, issue 4)

cli.add_command(generate_cmd)
cli.add_command(eval_cmd)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="parekit")


if __name__ == "__main__":  # pragma: no cover
    main()
