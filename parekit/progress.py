"""Progress display for long work: one construction shared by the pipeline, parity and bench.

Bars go to stderr (stdout stays clean for ``--json`` and tables), vanish when done, and are not
drawn at all when stderr is not a terminal (CI logs, pipes, tests).
"""

from __future__ import annotations

from typing import Any


def progress_bar() -> Any:
    """A started-on-demand ``rich.progress.Progress`` writing to stderr, disabled off a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(transient=True, console=console, disable=not console.is_terminal)
