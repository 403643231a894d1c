"""``parekit inspect``: the structure map the passes see."""

from __future__ import annotations

import click

from parekit.cli.common import console, echo_json, plain, styled
from parekit.cli.load import load

__all__ = ["inspect"]


@click.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print the structure map as JSON on stdout instead of the tables")
@click.option("--layers/--no-layers", default=True, help="show the per-layer table")
def inspect(model: str, as_json: bool, layers: bool) -> None:
    """Print the transformer structure parekit finds in MODEL (what the passes will see)."""
    from parekit.analysis import discover

    mm = discover(load(model))
    if as_json:
        echo_json(mm.to_dict())
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
