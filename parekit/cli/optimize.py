"""``parekit optimize``: run a pass pipeline on a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from parekit.cli.common import (
    check_feed_size,
    console,
    data_options,
    json_text,
    plain,
    quiet_onnxruntime,
    safe,
    styled,
)
from parekit.cli.feeds import check_dims, parse_dims
from parekit.cli.load import external_files, load
from parekit.cli.outputs import Outputs
from parekit.cli.split_cmd import print_summary, refuse_existing, summary, write_plan

__all__ = ["optimize"]


@click.command()
@click.argument("model", type=click.Path())
@click.option("--passes", "pipeline", required=True, help='pipeline, e.g. "drop-layers{layers=[4,5]}"')
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="optimized .onnx to write (a new segments directory when the pipeline's last exit pass has form=segments)")
@click.option("--report", type=click.Path(dir_okay=False), help="also write the per-pass report as JSON to this file")
@click.option("--calib", "calib", default=None, metavar="text|random|FILE.npz",
              help="calibration data for passes that need it (e.g. drop-layers{count=N})")
@data_options
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

    The input file is never modified; on any failure no output file is written. When the pipeline's last
    exit pass has form=segments, OUTPUT is a segments directory (as parekit split writes).
    """
    from parekit.backends.ort import check_loads
    from parekit.backends.save import save_model
    from parekit.passes.base import PassContext
    from parekit.passes.manager import run_pipeline
    from parekit.passes.pipeline import parse_pipeline
    from parekit.segments.split import split_model

    quiet_onnxruntime()
    outputs = Outputs()
    outputs.add_input("MODEL", model)
    if calib not in (None, "text", "random"):
        outputs.add_input("--calib", calib)
    outputs.add_output("-o", output)
    parsed = parse_pipeline(pipeline)  # syntax errors before the (slow) model load
    resolved = parsed.resolve()
    exits = [step for step in resolved if step.pass_cls.name == "early-exit"]  # early exit (issue 11)
    segments = bool(exits) and getattr(exits[-1].options, "form", None) == "segments"
    if external_data is not False and not segments:
        outputs.add_output("-o's external data", output + ".data")
    outputs.add_output("--report", report)
    outputs.check()  # before anything slow, and before anything is created
    if segments:
        refuse_existing("-o", output)
    check_feed_size(batch, seq)
    size_of = parse_dims(dims)
    ir_model = load(model)
    for path in external_files(ir_model):
        outputs.add_input("MODEL's external data", path)
    outputs.check()
    ctx = PassContext()
    if calib is not None:
        from parekit.calibration import CalibrationSet
        from parekit.cli.feeds import build_feeds

        check_dims(ir_model, size_of, calib)
        feeds, source = build_feeds(
            ir_model, calib, samples=samples, batch=batch, seq=seq, seed=seed, dims=size_of, purpose="calib"
        )
        ctx.calibration = CalibrationSet(feeds=feeds, source=source)
    elif size_of:
        check_dims(ir_model, size_of, "none")
    err = console(stderr=True)

    def after(name: str, m: Any) -> None:
        if print_ir_after:  # MLIR style: the whole IR after each pass, on stderr
            click.echo(safe(f"// -----// IR after {name} ({len(m.graph)} nodes) //----- //"), err=True)
            click.echo(safe(str(m.graph), keep_newlines=True, limit=100_000_000), err=True)

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
    plan = split_model(result.model, None) if segments else None
    with outputs:
        outputs.stage_text(report, json_text(payload))  # a report that cannot be written fails before the model
        if plan is not None:
            write_plan(plan, output, Path(model).name)
        else:
            save_model(result.model, output, external_data=external_data)
        outputs.commit()
    for r in result.reports:
        if r.identity:
            err.print(styled("yellow", r.spec, f": identity configuration — {r.identity}"))
        else:
            flops = ""
            if r.flops_before and r.flops_removed is not None:
                change = -100 * r.flops_removed / r.flops_before
                flops = f", est. FLOPs {'+' if change > 0 else '−'}{abs(change):.1f}%"
            sites = "; ".join(
                ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items())
                for s in r.sites[:6]
            ) + (" …" if len(r.sites) > 6 else "")
            err.print(styled("green", r.spec, f": +{r.nodes_added}/−{r.nodes_removed} nodes{flops} ({sites})"))
            if "chosen" in r.extra:
                err.print(plain(f"  chosen: {r.extra['chosen']}; block influence: {r.extra.get('influence')}"))
    if plan is not None:
        print_summary(f"{len(plan.segments)} segments, cut after layers {plan.cuts}",
                      summary(plan, {f.name: f.stat().st_size for f in Path(output).iterdir()}), err=True)
    err.print(plain(f"wrote {output}"))
