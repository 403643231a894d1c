"""Progress display for long work, and keeping third-party log noise off the user's terminal.

Bars go to stderr (stdout stays clean for ``--json`` and tables), vanish when done, and are not
drawn at all when stderr is not a terminal (CI logs, pipes, tests).

Libraries parekit drives (onnx-ir, onnx) log warnings of their own, some with a full traceback
(onnx-ir's shape inference on a node of an unknown op). Inside :func:`third_party_logs` such records
do not reach the root handlers; they are re-logged at DEBUG on the ``parekit.thirdparty`` logger, so
the user sees parekit's own error line first and the details under ``-vv``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["THIRD_PARTY_LOGGERS", "progress_bar", "third_party_logs"]

THIRD_PARTY_LOGGERS = ("onnx_ir", "onnx", "onnxscript", "onnxruntime")
"""Loggers whose records :func:`third_party_logs` demotes to DEBUG."""

_TARGET = logging.getLogger("parekit.thirdparty")


def progress_bar() -> Any:
    """A started-on-demand ``rich.progress.Progress`` writing to stderr, disabled off a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(transient=True, console=console, disable=not console.is_terminal)


class _Demote(logging.Handler):
    """Re-log a third-party record at DEBUG on ``parekit.thirdparty`` (traceback kept)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not _TARGET.isEnabledFor(logging.DEBUG):
            return
        try:
            message = record.getMessage()
        except Exception:  # a malformed third-party record must not break the run
            message = str(record.msg)
        _TARGET.debug(
            "%s %s: %s", record.name, record.levelname.lower(), message, exc_info=record.exc_info
        )


@contextlib.contextmanager
def third_party_logs(names: Sequence[str] = THIRD_PARTY_LOGGERS) -> Iterator[None]:
    """Within the block, keep the named libraries' log records off the root handlers.

    Each record is re-logged at DEBUG on the ``parekit.thirdparty`` logger instead (with its
    traceback), and is dropped when that logger is not enabled for DEBUG. Nesting is safe; the
    loggers' settings are restored on exit.

    Args:
        names: Logger names (a name covers its children, e.g. ``onnx_ir`` covers ``onnx_ir.passes``).
    """
    saved: list[tuple[logging.Logger, bool, _Demote]] = []
    try:
        for name in names:
            lib = logging.getLogger(name)
            handler = _Demote(logging.NOTSET)
            saved.append((lib, lib.propagate, handler))
            lib.addHandler(handler)
            lib.propagate = False
        yield
    finally:
        for lib, propagate, handler in reversed(saved):
            lib.removeHandler(handler)
            lib.propagate = propagate
