"""``parekit passes [NAME]``: the registered passes and their options."""

from __future__ import annotations

import sys

import click

from parekit.cli.common import console, plain, styled

__all__ = ["passes_cmd"]


@click.command("passes")
@click.argument("name", required=False)
def passes_cmd(name: str | None) -> None:
    """List the passes, or document pass NAME and its options."""
    from rich.table import Table

    from parekit.passes.options import describe_options
    from parekit.passes.registry import get_pass, list_passes

    out = console()
    if name is None:
        table = Table(title="passes")
        table.add_column("name")
        table.add_column("summary")
        for cls in list_passes():
            table.add_row(plain(cls.name), plain(cls.summary))
        out.print(table)
        out.print(plain('Use "parekit passes NAME" for its options; pipelines look like "a{k=v},b".'))
        return
    cls = get_pass(name)
    out.print(styled("bold", cls.name, f": {cls.summary}"))
    doc = sys.modules[cls.__module__].__doc__
    if doc:
        out.print(plain(doc.strip(), keep_newlines=True, limit=20_000))
    table = Table(title="options")
    for col in ("option", "type", "default", "constraint", "help"):
        table.add_column(col)
    for opt in describe_options(cls.options_type):
        table.add_row(*(plain(x) for x in (opt.name, opt.type, opt.default, opt.constraint, opt.help)))
    out.print(table)
    if cls.required_passes:
        out.print(plain(f"requires earlier in the pipeline: {', '.join(cls.required_passes)}"))
