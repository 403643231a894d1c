"""Keep third-party chatter of a model export out of the user's terminal, under ``-v`` instead.

Exporting with torch and transformers emits warnings and log lines that are not the user's business:
torch's ``torchvision is not installed. Skipping torchvision::nms`` log warnings, ``FutureWarning``
deprecations from torch's pytree internals, ``UserWarning: # The axis name: batch will not be used``
from the ONNX exporter's dynamic-shape renaming, onnxscript/onnx-ir optimizer INFO lines.
:func:`third_party_to_debug` routes all of them, while a block runs, to a parekit logger at DEBUG:
they show with ``parekit -vv`` (or any DEBUG logging of ``parekit``), never by default. parekit's own
log lines are untouched.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["THIRD_PARTY_LOGGERS", "third_party_to_debug"]

THIRD_PARTY_LOGGERS = ("torch", "transformers", "onnxscript", "onnx_ir", "onnx", "accelerate", "gguf")
"""Loggers (with their children) whose records are routed during an export."""


class _Forward(logging.Handler):
    """Re-log every record at DEBUG on ``target``, naming its origin."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__(logging.NOTSET)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a third-party record with bad format arguments: keep its raw text
            text = str(record.msg)
        self.target.debug("%s %s: %s", record.name, record.levelname, text)


def _third_party_loggers() -> list[logging.Logger]:
    """The root of each third-party logger tree, and every logger below it that stops propagation.

    torch gives dozens of its loggers (``torch.onnx``, ``torch.export``…) a stderr handler of their own
    and ``propagate = False``; each of them is rerouted, not only ``torch``. torch's structured-trace and
    artifact loggers (``torch.__trace``: a name part starting with ``__``) are left alone: they log at
    DEBUG into their own sinks, never to the terminal.
    """
    found = {name: logging.getLogger(name) for name in THIRD_PARTY_LOGGERS}
    for name, log in list(logging.root.manager.loggerDict.items()):
        if (
            isinstance(log, logging.Logger)
            and name.split(".", 1)[0] in THIRD_PARTY_LOGGERS
            and (log.handlers or not log.propagate)
            and not any(part.startswith("__") for part in name.split("."))  # torch's artifact/trace logs
        ):
            found[name] = log
    return list(found.values())


@contextlib.contextmanager
def third_party_to_debug(target: logging.Logger) -> Iterator[None]:
    """While the block runs, route third-party warnings and log records to ``target`` at DEBUG.

    Python warnings raised in the block (any category, from the export's third-party code) are
    recorded instead of printed and logged after it; records of :data:`THIRD_PARTY_LOGGERS` go to
    ``target`` instead of their own handlers (torch and transformers install stderr handlers of
    their own); no record reaches the root logger's handlers either. Levels are not changed: what a library would not have emitted stays unemitted.
    Everything is restored afterwards, also when the block raises.

    Args:
        target: The parekit logger that receives the records.
    """
    forward = _Forward(target)
    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    for log in _third_party_loggers():
        saved.append((log, list(log.handlers), log.propagate))
        for handler in list(log.handlers):
            log.removeHandler(handler)
        log.addHandler(forward)
        log.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                yield
            finally:
                for w in caught:
                    target.debug("%s: %s (%s:%s)", w.category.__name__, w.message, w.filename, w.lineno)
    finally:
        for log, handlers, propagate in saved:
            log.removeHandler(forward)
            for handler in handlers:
                log.addHandler(handler)
            log.propagate = propagate
