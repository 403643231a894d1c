"""``parekit build``: lower an (optimized) ONNX model to a TensorRT or TensorRT-RTX engine plan."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from parekit.cli.common import console, json_text, plain, quiet_onnxruntime, safe, styled
from parekit.cli.load import external_files, load
from parekit.cli.outputs import Outputs
from parekit.engines.profiles import DECODER_DEFAULTS, ENCODER_DEFAULTS

__all__ = ["build_cmd"]


def _defaults(table: Any) -> str:
    return ", ".join(f"{k} {r.min},{r.opt},{r.max}" for k, r in table.items())


@click.command("build")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="engine plan to write (e.g. MODEL.plan)")
@click.option("--backend", type=click.Choice(["tensorrt", "tensorrt-rtx"]), default="tensorrt", show_default=True,
              help="TensorRT (pip install 'parekit[tensorrt]') or TensorRT-RTX (builds without a GPU; 'parekit[tensorrt-rtx]')")
@click.option("--plugins", type=click.Path(dir_okay=False), default=None,
              help="plugin library to register (default with --backend tensorrt: the built libparekit_trt_plugins.so, when built)")
@click.option("--no-plugins", is_flag=True, help="build every parekit op from its ONNX function body")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="fp16/bf16: run the precision pass first (explicit casts; norms, softmax, logits stay float32)")
@click.option("--profile", "profiles", multiple=True, metavar="NAME=MIN,OPT,MAX",
              help=f"size of a dynamic dim (a dim name of the model or batch/seq/past); encoder defaults "
                   f"{_defaults(ENCODER_DEFAULTS)}; decoder defaults {_defaults(DECODER_DEFAULTS)} (total = past + seq "
                   "and the KV state follow)")
@click.option("--report", type=click.Path(dir_okay=False), help="also write the build report as JSON to this file")
@click.option("--decomposable-attention/--fused-attention", default=True, show_default=True,
              help="let TensorRT decompose an ONNX Attention op it has no fused kernel for (RTX: every float32 one)")
@click.option("--timeout", type=click.IntRange(1, 86_400), default=3600, show_default=True, help="seconds before the build is abandoned")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON on stdout instead of the summary")
def build_cmd(model: str, output: str, backend: str, plugins: str | None, no_plugins: bool, precision: str,
              profiles: tuple[str, ...], report: str | None, decomposable_attention: bool, timeout: int,
              as_json: bool) -> None:
    """Build a TensorRT engine plan of MODEL (an ONNX file, optimized or not) into OUTPUT.

    The optimization profile is derived from the model (encoders: batch, seq; decoders: batch, seq,
    past, with total and the KV state consistent at every point, so the plan serves prefill and decode
    steps); --profile overrides a primary dim. The input is never modified; on failure nothing is written.
    """
    from parekit.engines.build import BACKENDS
    from parekit.engines.profiles import parse_profile_options
    from parekit.errors import ParekitError

    quiet_onnxruntime()
    outputs = Outputs()
    outputs.add_input("MODEL", model)
    outputs.add_input("--plugins", plugins)
    outputs.add_output("-o", output)
    outputs.add_output("--report", report)
    outputs.check()
    overrides = parse_profile_options(profiles)
    spec = BACKENDS[backend]
    if plugins and no_plugins:
        raise ParekitError("--plugins and --no-plugins contradict each other")
    if plugins and not spec.plugins:
        raise ParekitError("TensorRT-RTX has no plugin layers: --plugins cannot be used with --backend tensorrt-rtx",
                           note="RTX builds every parekit op from its ONNX function body")
    library = _plugin_library(plugins, no_plugins, spec.plugins)
    ir_model = load(model)
    for path in external_files(ir_model):
        outputs.add_input("MODEL's external data", path)
    outputs.check()
    err = console(stderr=True)
    from parekit.engines.plan import prepare_build

    with tempfile.TemporaryDirectory(prefix="parekit-build-") as scratch:
        prepared = prepare_build(Path(model), ir_model, Path(scratch), backend=backend, precision=precision,
                                 overrides=overrides, log=lambda line: err.print(plain(line)))

        def build(tmp: str) -> dict[str, Any]:
            with _Status(err) as status:
                return prepared.build(Path(tmp), library=library, decomposable=decomposable_attention,
                                      timeout=timeout, on_start=status.start,
                                      on_progress=status.progress if status.live else None)

        with outputs:
            result = outputs.stage(output, build)
            outputs.stage_text(report, json_text(result))
            outputs.commit()
    if as_json:
        click.echo(json_text(result))
    else:
        _summary(err, result)
    err.print(plain(f"wrote {output}"))


class _Status:
    """A spinner on stderr with TensorRT's current build phase (terminals only; a plain line otherwise)."""

    def __init__(self, err: Any) -> None:
        self.err = err
        self.live = bool(err.is_terminal)
        self.name = "TensorRT"
        self._status: Any = None

    def __enter__(self) -> _Status:
        return self

    def start(self, name: str) -> None:
        self.name = name
        if self.live:
            self._status = self.err.status(safe(f"building with {name} …"))
            self._status.start()
        else:
            self.err.print(plain(f"building with {name} (this can take minutes) …"))

    def progress(self, event: dict[str, Any]) -> None:
        if self._status is not None and not event.get("done"):
            steps = f" {event.get('step', 0)}/{event['steps']}" if event.get("steps") else ""
            self._status.update(safe(f"building with {self.name}: {event.get('phase', '')}{steps}", limit=120))

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()


def _plugin_library(plugins: str | None, no_plugins: bool, allowed: bool) -> Path | None:
    if not allowed or no_plugins:
        return None
    if plugins:
        path = Path(plugins)
        if not path.is_file():
            from parekit.errors import ParekitError

            raise ParekitError(f"--plugins '{plugins}': no such file")
        return path
    from parekit.native.paths import library_path

    return library_path("trt")


def _summary(err: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    err.print(styled("green", f"{result['backend_display']} {result['version']}",
                     f": {result['layers']} network layers, plan {result['plan_bytes'] / 2**20:.1f} MiB, "
                     f"build {result['build_s']:.1f} s, precision {result['precision']}"))
    table = Table("dim", "min", "opt", "max", "from", title="optimization profile", title_justify="left")
    for name, rng in result["profile"]["dims"].items():
        table.add_row(safe(name), str(rng["min"]), str(rng["opt"]), str(rng["max"]), safe(rng["from"]))
    err.print(table)
    nodes = result["parekit_nodes"]
    if nodes:
        counts: dict[tuple[str, str], int] = {}
        for n in nodes:
            key = (n["becomes"], n["reason"] or "")
            counts[key] = counts.get(key, 0) + 1
        for (becomes, reason), count in sorted(counts.items()):
            err.print(plain(f"  {count} parekit node(s) → {becomes}" + (f" ({reason})" if reason else "")))
    for note in result["profile"]["notes"] + result["notes"]:
        err.print(styled("yellow", "note: ", note))
    warnings = [m for m in result["tensorrt_log"] if m["level"] == "warning"]
    if warnings:
        err.print(plain(f"  {len(warnings)} TensorRT warning(s) (in the report), first: {warnings[0]['message'][:200]}"))
