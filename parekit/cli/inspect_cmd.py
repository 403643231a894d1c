"""``parekit inspect``: the structure map the passes see, a model's early exits, a segments directory."""

from __future__ import annotations

from typing import Any

import click

from parekit.cli.common import console, echo_json, plain, styled
from parekit.cli.load import load

__all__ = ["inspect"]


@click.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print the structure map as JSON on stdout instead of the tables")
@click.option("--layers/--no-layers", default=True, help="show the per-layer table")
def inspect(model: str, as_json: bool, layers: bool) -> None:
    """Print the transformer structure parekit finds in MODEL (what the passes will see) and the exits
    its metadata records; for a segments directory (parekit split), its segments."""
    from pathlib import Path

    from parekit.analysis import discover
    from parekit.segments.split import read_exits

    if Path(model).is_dir():
        _segments(model, as_json)
        return
    ir_model = load(model)
    exits = read_exits(ir_model)
    mm = discover(ir_model)
    if as_json:
        echo_json({**mm.to_dict(), "exits": exits})
        return
    from rich.table import Table

    out = console()
    summary = Table.grid(padding=(0, 2))
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
        summary.add_row(styled("bold", key), plain(value))
    out.print(summary)
    if exits is not None:
        _exits_table(out, exits)
    if not layers:
        return
    table = Table(title="layers")
    for col in ("#", "scope", "input → output", "attention", "norms", "mlp", "KV cache"):
        table.add_column(col, overflow="fold")
    for lm in mm.layers:
        att = lm.attention
        core = f"{att.form}: " + (f"probs={att.probs}" if att.probs else f"node={att.nodes[0]}")
        mlp = "-" if lm.mlp is None else (
            ("gated " if lm.mlp.gate else "")
            + f"{lm.mlp.activation or '?'}, {len(lm.mlp.up) + (1 if lm.mlp.gate else 0) + 1} matmuls"
        )
        kv = f"{att.past_key} → {att.present_key}" if att.past_key else "-"
        cells = (str(lm.index), lm.scope, f"{lm.input} → {lm.output}", core, str(len(lm.norms)), mlp, kv)
        table.add_row(*(plain(c, limit=300) for c in cells))
    out.print(table)


def _exits_table(out: Any, exits: dict[str, Any]) -> None:
    """The exits the early-exit pass recorded (``parekit.exits`` metadata)."""
    from rich.table import Table

    table = Table(title=f"early exits (form={exits.get('form')}, gate reads {exits.get('gated_output')})")
    for col in ("layer", "head", "adapter params", "signal", "threshold", "outputs"):
        table.add_column(col, overflow="fold")
    for e in exits["exits"]:
        adapter = e.get("adapter")
        params = adapter.get("params") if isinstance(adapter, dict) else None
        cells = (e["layer"], e.get("head", "?"), "-" if params is None else params, e.get("signal", "?"),
                 e.get("threshold", "?"), ", ".join(f"{k}→{v}" for k, v in e["outputs"].items()))
        table.add_row(*(plain(c, limit=300) for c in cells))
    out.print(table)


def _segments(directory: str, as_json: bool) -> None:
    """A segments directory: what it was cut from, its exits and one row per segment."""
    from rich.table import Table

    from parekit.segments.manifest import read_manifest

    m = read_manifest(directory)
    sizes = [m.path(e).stat().st_size for e in m.segments]
    if as_json:
        echo_json({
            "segments_directory": directory, "source": m.source, "kind": m.kind, "outputs": list(m.outputs),
            "exits": m.exits,
            "segments": [
                {"file": e.file, "layers": list(e.layers), "bytes": size,
                 "inputs": [io.to_dict() for io in e.inputs], "outputs": [io.to_dict() for io in e.outputs],
                 "exit": e.exit}
                for e, size in zip(m.segments, sizes, strict=True)
            ],
        })
        return
    out = console()
    summary = Table.grid(padding=(0, 2))
    for key, value in (("segments directory", directory), ("cut from", m.source), ("kind", m.kind),
                       ("segments", len(m.segments)), ("outputs", ", ".join(m.outputs))):
        summary.add_row(styled("bold", key), plain(value, limit=500))
    out.print(summary)
    if m.exits is not None:
        _exits_table(out, m.exits)
    table = Table(title="segments")
    for col in ("#", "file", "layers", "exit", "inputs", "outputs", "not per row", "MiB"):
        table.add_column(col, overflow="fold")
    for k, (e, size) in enumerate(zip(m.segments, sizes, strict=True)):
        fixed = sum(io.batch_axis is None for io in (*e.inputs, *e.outputs))
        cells = (k, e.file, f"{e.layers[0]}–{e.layers[1]}", "-" if e.exit is None else e.exit["layer"],
                 len(e.inputs), len(e.outputs), fixed, f"{size / 2**20:.2f}")
        table.add_row(*(plain(c, limit=300) for c in cells))
    out.print(table)
