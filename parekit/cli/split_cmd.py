"""``parekit split``: cut a model into a segments directory (at its exits, or at plain layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from parekit.cli.common import console, echo_json, plain, safe, styled
from parekit.cli.load import external_files, load
from parekit.cli.outputs import Outputs
from parekit.errors import OptionError, ParekitError

__all__ = ["exits_option", "open_model", "parse_layers", "refuse_existing", "split", "write_plan"]


def exits_option(func: Any) -> Any:
    """``--exits/--no-exits``: segments directories stop rows whose exit fired (per-row exits), or run whole."""
    return click.option("--exits/--no-exits", "exits", default=True, show_default=True,
                        help="segments directories: stop the rows whose exit fired, or run every segment on every "
                             "row (exact recombination)")(func)


def open_model(path: str, *, providers: Any = None, native: bool | None = None, threads: int | None = None,
               exits: bool = True) -> tuple[Any, Any]:
    """``(model for the feeds, what to run)`` for a MODEL argument.

    A model file gives its loaded model and its own path. A segments directory gives a
    :class:`~parekit.segments.runner.SegmentRunner` and segment 0's model with every input of the source
    model (those of later segments appended, unused), which is what feeds are built from.
    """
    if not Path(path).is_dir():
        return load(path), path
    import onnx_ir as ir

    from parekit.segments.runner import SegmentRunner

    runner = SegmentRunner(path, providers=providers, native=native, threads=threads, exits=exits)
    model = load(str(runner.manifest.path(runner.manifest.segments[0])))
    have = {v.name: v for v in model.graph.inputs}
    model.graph.inputs.clear()
    for spec in runner.input_specs:
        value = have.get(spec.name)
        if value is None:
            dims = [d if isinstance(d, int) else ir.SymbolicDim(d) for d in spec.shape or ()]
            value = ir.Value(name=spec.name, type=ir.TensorType(ir.DataType.from_numpy(spec.dtype)),
                             shape=None if spec.shape is None else ir.Shape(dims))
        model.graph.inputs.append(value)
    return model, runner


def parse_layers(text: str) -> list[int]:
    """``--at 3,4`` as a list of layers; a one-line error for anything else.

    Raises:
        OptionError: An item is not a non-negative integer.
    """
    items = [t.strip() for t in text.split(",")]
    if len(text) > 10_000 or not all(t.isascii() and t.isdigit() and len(t) <= 6 for t in items):
        raise OptionError(f"--at '{safe(text, limit=60)}': expected layer numbers separated by commas, e.g. --at 3,4")
    return [int(t) for t in items]


def refuse_existing(what: str, path: str) -> None:
    """A segments directory is created new: refuse a path that exists (a folder or a file)."""
    target = Path(path)
    if target.exists() or target.is_symlink():
        kind = "a folder" if target.is_dir() else "a file"
        raise ParekitError(f"{what} '{path}' exists ({kind})",
                           note="a segments directory is written new and replaces nothing; remove it or choose another path")


def write_plan(plan: Any, output: str, source: str) -> dict[str, int]:
    """Write the segments with a progress bar; returns file name → bytes."""
    from parekit.progress import progress_bar
    from parekit.segments.manifest import write_segments

    with progress_bar() as bar:
        task = bar.add_task(f"writing {len(plan.segments)} segments", total=len(plan.segments))
        return write_segments(plan, output, source, on_segment=lambda k, p: bar.advance(task))


def summary(plan: Any, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """One JSON-ready row per segment: layers, exit, I/O counts, recomputed nodes, file and size."""
    rows = []
    for seg in plan.segments:
        rows.append({
            "segment": seg.index,
            "layers": list(seg.layers),
            "exit": None if seg.exit is None else seg.exit["layer"],
            "inputs": len(seg.inputs),
            "outputs": len(seg.outputs),
            "recomputed_nodes": seg.recomputed,
            "file": seg.file,
            "bytes": sum(n for f, n in sizes.items() if f.startswith(seg.file)),
        })
    return rows


def print_summary(title: str, rows: list[dict[str, Any]], err: bool = False) -> None:
    """The summary table (on stdout, or on stderr for commands whose stdout is something else)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("segment", "layers", "exit", "inputs", "outputs", "recomputed", "file", "MiB"):
        table.add_column(col, justify="left" if col in ("file", "layers") else "right")
    for r in rows:
        first, last = r["layers"]
        table.add_row(
            str(r["segment"]), f"{first}–{last}" if first != last else str(first),
            "-" if r["exit"] is None else str(r["exit"]), str(r["inputs"]), str(r["outputs"]),
            str(r["recomputed_nodes"]), plain(r["file"]), f"{r['bytes'] / 2**20:.2f}",
        )
    console(stderr=err).print(table)


@click.command("split")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="segments directory to create (must not exist)")
@click.option("--at", "at", default=None, metavar="L1,L2,...",
              help="cut after these layers (0-based, not the last); default: the model's exits")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON on stdout instead of the table")
def split(model: str, output: str, at: str | None, as_json: bool) -> None:
    """Cut MODEL into a segments directory OUTPUT: manifest.json + segment<k>.onnx.

    Segment k holds the blocks after the previous cut up to cut k (segment 0 also the embeddings, the
    last one the real head) and the exit branch of cut k. Without --at the cuts are the exits recorded in
    the model's parekit.exits metadata. `parekit check` and `parekit bench` run a segments directory like a model.
    Nothing is written on failure.
    """
    from parekit.segments.split import split_model

    files = Outputs()
    files.add_input("MODEL", model)
    files.add_output("-o", output)
    files.check()
    refuse_existing("-o", output)
    layers = parse_layers(at) if at is not None else None
    ir_model = load(model)
    for path in external_files(ir_model):
        files.add_input("MODEL's external data", path)
    files.check()
    plan = split_model(ir_model, layers)
    sizes = write_plan(plan, output, Path(model).name)
    rows = summary(plan, sizes)
    if as_json:
        echo_json({"model": model, "output": output, "cuts": plan.cuts, "kind": plan.kind,
                   "exits": plan.exits is not None, "segments": rows})
        return
    print_summary(f"{len(rows)} segments, cut after layers {plan.cuts}", rows)
    console().print(styled("green", "wrote ", f"{output} (manifest.json + {len(rows)} segment files)"))
