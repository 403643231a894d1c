"""``parekit samples list|export``: the sample zoo."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from parekit.cli.common import console, plain, quiet_torch
from parekit.cli.outputs import Outputs

__all__ = ["samples"]


@click.group()
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
        table.add_row(*(plain(c) for c in (s.name, s.kind, s.weights + (f" ({s.package})" if s.package else ""),
                                            s.description)))
    console().print(table)


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
    outputs = Outputs()
    outputs.add_output("-o", output)
    outputs.check()
    quiet_torch()
    err = console(stderr=True)
    with err.status(f"exporting {sample.name} at opset {opset} (first export takes a while; cached after)"):
        path = zoo.export_sample(name, opset=int(opset), cache_dir=cache_dir)
    outputs.add_input("the cached export", path)
    outputs.check()
    with outputs:
        outputs.stage(output, lambda tmp: shutil.copyfile(path, tmp))
        outputs.commit()
    err.print(plain(f"wrote {output} ({Path(output).stat().st_size / 2**20:.1f} MiB, {sample.name}, opset {opset})"))
