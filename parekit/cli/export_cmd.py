"""``parekit export``: hand an (optimized) model to a serving system; today NVIDIA Triton Inference Server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from parekit.cli.common import Group, console, json_text, plain, quiet_onnxruntime, safe, styled
from parekit.cli.load import load

__all__ = ["export_cmd"]


@click.group("export", cls=Group)
def export_cmd() -> None:
    """Export a model for a serving system (Triton Inference Server model repositories)."""


@export_cmd.command("triton")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", "repo", required=True, type=click.Path(file_okay=False),
              help="model repository folder (created if missing; other models in it are left alone)")
@click.option("--name", default=None, help="model name in the repository (default: from MODEL's file name)")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt", "python"]), default="onnxruntime",
              show_default=True, help="Triton backend; decoders on onnxruntime/tensorrt use implicit state, "
              "on python a model.py keeps each sequence's state")
@click.option("--max-batch", type=click.IntRange(0, 4096), default=None,
              help="encoders: max_batch_size (default 8; 0 keeps the batch axis in the dims); decoders: sequences "
                   "in flight per instance (default 16; each request is one sequence, max_batch_size 1)")
@click.option("--instances", type=click.IntRange(1, 256), default=1, show_default=True, help="model instances")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="instance kind (tensorrt: always gpu)")
@click.option("--plan", type=click.Path(dir_okay=False), default=None,
              help="TensorRT engine plan of MODEL for --backend tensorrt (parekit build MODEL -o MODEL.plan)")
@click.option("--queue-delay-us", type=click.IntRange(0, 10_000_000), default=500, show_default=True,
              help="how long the batcher waits to fill a batch")
@click.option("--sequence-idle-s", type=click.FloatRange(0.001, 86_400), default=60.0, show_default=True,
              help="decoders: a sequence idle this long is ended and its state dropped")
@click.option("--threads", type=click.IntRange(0, 1024), default=0, show_default=True,
              help="onnxruntime/python backends: ONNX Runtime threads per instance (intra_op_thread_count; 0: ORT's default)")
@click.option("--overwrite", is_flag=True, help="replace REPO/NAME if it exists")
@click.option("--json", "as_json", is_flag=True, help="print the export report as JSON on stdout")
def triton_cmd(model: str, repo: str, name: str | None, backend: str, max_batch: int | None, instances: int,
               device: str, plan: str | None, queue_delay_us: int, sequence_idle_s: float, threads: int,
               overwrite: bool, as_json: bool) -> None:
    """Write MODEL as a Triton model repository entry REPO/NAME (config.pbtxt + 1/).

    \b
    Encoders: the graph's inputs and outputs, dynamic batching, instance groups; 1/model.onnx (or
    1/model.plan). Decoders (the KV I/O contract): --backend python writes a model.py that keeps each
    sequence's state (input_ids in; next_token and last-position logits out; START/END/CORRID
    controls); onnxruntime/tensorrt use Triton's implicit state (one state per past/present pair; the
    state-reset pass makes the graph empty its past on START). The config is validated offline with
    Triton's own schema and against the graph; on failure nothing is written.
    """
    from parekit.errors import ParekitError
    from parekit.serving import ExportRequest, export_triton

    quiet_onnxruntime()
    source = Path(model)
    if not source.is_file():
        raise ParekitError(f"MODEL {safe(model)}: no such file")
    ir_model = load(model)
    req = ExportRequest(repo=Path(repo), name=name, backend=backend, max_batch=max_batch, instances=instances,
                        device=device, queue_delay_us=queue_delay_us, idle_us=int(sequence_idle_s * 1e6),
                        threads=threads, plan=Path(plan) if plan else None, overwrite=overwrite)
    report = export_triton(ir_model, source, req)
    if as_json:
        click.echo(json_text(report))
        return
    _summary(report)


def _summary(report: dict[str, Any]) -> None:
    err = console(stderr=True)
    what = "sequences in flight" if report["kind"] == "decoder" else "max batch"
    err.print(styled("green", f"{report['name']}", f": {report['kind']} for Triton's {report['backend']} backend, "
                     f"{what} {report['max_batch']}, {report['instances']} instance(s)"
                     + (f", {report['states']} states" if report["states"] else "")))
    for file in report["files"]:
        err.print(plain(f"  {file}"))
    checked = ", ".join(report["validation"]["checked"])
    err.print(plain(f"validated: {checked}"))
    for line in report["validation"]["unchecked"]:
        err.print(styled("yellow", "not checked: ", line))
    for note in report["notes"]:
        err.print(styled("yellow", "note: ", note))
    err.print(plain(f"wrote {report['folder']}"))


@export_cmd.command("validate")
@click.argument("repo", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print the summaries as JSON on stdout")
def validate_cmd(repo: str, as_json: bool) -> None:
    """Validate every model of a Triton model repository offline: each config.pbtxt through Triton's
    schema, its files, and its inputs, outputs, states and controls against the ONNX graph."""
    from parekit.serving import validate_repository

    quiet_onnxruntime()
    found = validate_repository(repo)
    if as_json:
        click.echo(json_text(found))
        return
    err = console(stderr=True)
    for entry in found:
        err.print(styled("green", entry["name"], f": {entry['kind']}, {entry['backend']} backend: "
                         + ", ".join(entry["checked"])))
        for line in entry["unchecked"]:
            err.print(styled("yellow", "  not checked: ", line))
    err.print(plain(f"{len(found)} model(s) valid"))
