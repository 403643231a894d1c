"""What every ``parekit`` command shares: the console, terminal-safe text, error reporting, bounds and
the options defined once (``--threads``, ``--provider``, ``--native``, ``--json``/``--json-file``, the data
options).

Nothing here imports a command module, so command modules and :mod:`parekit.cli.main` import this one
and never each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click

from parekit.errors import ParekitError, echo

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("parekit")

# ------------------------------------------------------------------------------------------------
# Bounds of resource options: far above any real use, far below what exhausts the machine.
MAX_THREADS = 256
MAX_SAMPLES = 100_000
MAX_BATCH = 4096
MAX_SEQ = 65_536
MAX_TOKENS_PER_FEED = 1 << 22  # batch × seq
MAX_ITERS = 1_000_000
MAX_DIM = 1 << 20
MAX_SEED = 2**32 - 1
MAX_NEW_TOKENS = 65_536
MAX_CTX = 65_536
MAX_TOP_K = 1 << 24

_ECHO_LIMIT = 2000  # characters of one echoed text (an error line, a table cell) before it is cut


# ------------------------------------------------------------------------------------------------
# Terminal-safe text


def safe(text: object, limit: int = _ECHO_LIMIT, keep_newlines: bool = False) -> str:
    """``text`` made safe to print: :func:`parekit.errors.echo` with the CLI's longer limit.

    Args:
        text: Anything; ``str()`` is taken.
        limit: Most characters kept (of the original text).
        keep_newlines: Keep ``\\n`` as a line break (for multi-line output such as generated text).
    """
    return echo(text, limit, keep_newlines=keep_newlines)


class _SafeRecords(logging.Filter):
    """Makes every log record terminal-safe before a handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = safe(record.getMessage(), keep_newlines=True)
        record.args = None
        return True


# ------------------------------------------------------------------------------------------------
# Console, errors


def console(stderr: bool = False) -> Any:
    """A rich console (tables need room: when output is not a terminal, rich would assume 80 columns)."""
    import shutil

    from rich.console import Console

    width = shutil.get_terminal_size((140, 24)).columns
    return Console(stderr=stderr, highlight=False, width=max(width, 100))


def styled(style: str, head: str, rest: object = "") -> Any:
    """A rich ``Text``: ``head`` in ``style``, then ``rest`` as terminal-safe plain text (never markup)."""
    from rich.text import Text

    return Text.assemble((head, style), safe(rest))


def plain(text: object, **kwargs: Any) -> Any:
    """Terminal-safe plain text for rich (a ``Text``, so ``[`` in names is never read as markup)."""
    from rich.text import Text

    return Text(safe(text, **kwargs))


def fail(exc: ParekitError) -> NoReturn:
    """Print ``error: <message>`` (and ``Note: <note>``) on stderr and exit with status 2."""
    err = console(stderr=True)
    err.print(styled("bold red", "error: ", " ".join(exc.message.split())), soft_wrap=True)
    if exc.note:
        err.print(plain(f"Note: {exc.note}", keep_newlines=True), soft_wrap=True)
    sys.exit(2)


def verbosity() -> int:
    """0 by default, 1 with ``-v`` (info), 2 with ``-vv`` (debug)."""
    level = logging.getLogger("parekit").getEffectiveLevel()
    return 0 if level > logging.INFO else 1 if level > logging.DEBUG else 2


@contextlib.contextmanager
def _native_stderr_hidden(ctx: click.Context) -> Iterator[None]:
    """Send what native libraries write to file descriptor 2 (ONNX Runtime's ``[E:onnxruntime…]``
    lines) to a scratch file, unless ``-v``; Python's ``sys.stderr`` (parekit's own lines) keeps the terminal.

    Only in a real process whose ``sys.stderr`` is descriptor 2 (not under click's test runner).
    """
    try:
        real = sys.stderr.fileno() == 2 and not ctx.params.get("verbose")
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = open(  # noqa: SIM115  (closed in the finally below)
        saved, "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace"
    )
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            sys.stderr.close()
            sys.stderr = python_stderr


# `parekit` or `parekit samples` alone: click shows the help (a usage error only in name).
_NO_ARGS_IS_HELP: type[Exception] = getattr(click.exceptions, "NoArgsIsHelpError", type("_Never", (Exception,), {}))


class Group(click.Group):
    """Turns errors raised by any command into one-line errors and exit status 2.

    A :class:`ParekitError` is a user-facing error. Anything else is a parekit bug: it is reported
    in one line too (``-vv`` shows the traceback instead).
    """

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # `parekit --bogus`: one line as well
            if isinstance(exc, _NO_ARGS_IS_HELP):
                raise
            fail(ParekitError(f"{info_name or 'parekit'}: {exc.format_message()}",
                              note=f"see: {info_name or 'parekit'} --help"))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings(), _native_stderr_hidden(ctx):  # both end with the command
                return super().invoke(ctx)
        except ParekitError as exc:
            fail(exc)
        except click.UsageError as exc:  # one line too, not click's usage block
            if isinstance(exc, _NO_ARGS_IS_HELP):
                raise
            where = exc.ctx.command_path if exc.ctx is not None else "parekit"
            fail(ParekitError(f"{where}: {exc.format_message()}", note=f"see: {where} --help"))
        except click.ClickException as exc:
            fail(ParekitError(exc.format_message()))
        except (click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except OSError as exc:
            fail(ParekitError(f"{exc.strerror or type(exc).__name__}: {exc.filename or exc}"))
        except Exception as exc:
            if verbosity() >= 2:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            fail(ParekitError(f"internal error ({type(exc).__name__}): {first}",
                              note="this is a bug in parekit; rerun with -vv for the traceback"))


# ------------------------------------------------------------------------------------------------
# Logging and third-party noise

_THIRD_PARTY_LOGGERS = ("onnx_ir", "onnxscript", "torch", "torch.onnx", "transformers", "huggingface_hub")
_THIRD_PARTY_WARNINGS = r"(torch|torchvision|transformers|onnxscript|onnx_ir|onnx|huggingface_hub)(\.|$)"


def setup_logging(verbose: int) -> None:
    """parekit's own log at WARNING/INFO/DEBUG; known third-party noise hidden unless ``-v``."""
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=console(stderr=True), show_time=False, show_path=False, markup=False)
    handler.addFilter(_SafeRecords())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("parekit").setLevel(level)
    _third_party_levels(verbose)
    if verbose == 0:
        warnings.filterwarnings("ignore", module=_THIRD_PARTY_WARNINGS)
        warnings.filterwarnings("ignore", category=FutureWarning)


def _third_party_levels(verbose: int) -> None:
    for name in _THIRD_PARTY_LOGGERS:
        # onnx-ir logs whole tracebacks as warnings (shape inference): not the user's business by default.
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.CRITICAL)


def quiet_torch() -> None:
    """Import torch and transformers (if installed) and, unless ``-v``, hide their log lines.

    Both configure their loggers when first imported (torch's ``W… torchvision is not installed``
    lines, transformers' config notices), so the levels are set again after the import.
    """
    verbose = verbosity()
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401
    with contextlib.suppress(ImportError):
        import transformers

        if not verbose:
            transformers.logging.set_verbosity_error()
    _third_party_levels(verbose)


def quiet_onnxruntime() -> None:
    """ONNX Runtime's native log (``[E:onnxruntime:…]`` lines) only under ``-v``; parekit says what failed."""
    try:
        import onnxruntime as ort
    except ImportError:  # the command reports the missing package itself
        return
    ort.set_default_logger_severity(2 if verbosity() >= 1 else 4)


# ------------------------------------------------------------------------------------------------
# Shared options


def threads_option(func: F) -> F:
    """``--threads N``: ONNX Runtime intra-op threads."""
    return click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None,
                        help=f"ONNX Runtime intra-op threads (1..{MAX_THREADS})")(func)


def provider_option(func: F) -> F:
    """``--provider NAME`` (repeatable): ONNX Runtime execution providers."""
    return click.option("--provider", "providers", multiple=True,
                        help="ONNX Runtime execution provider (default CPU; repeatable)")(func)


def native_option(func: F) -> F:
    """``--native/--no-native``: parekit's native kernels (absent: the library when it is built)."""
    return click.option("--native/--no-native", "native", default=None,
                        help="run parekit ops as native kernels (libparekit_ort.so; an error when not built) "
                             "or as their function bodies; default: the kernels when built")(func)


def native_line(libraries: list[str | None]) -> str:
    """The line tables print under them: which native library ran the parekit ops, or none."""
    built = sorted({lib for lib in libraries if lib is not None})
    if not built:
        return "parekit ops: function bodies (no native library registered)"
    some = "" if None not in libraries else " (some models: function bodies)"
    return f"parekit ops: native kernels from {', '.join(built)}{some}"


def json_options(func: F) -> F:
    """``--json`` (print JSON on stdout instead of the table) and ``--json-file PATH`` (also write it)."""
    func = click.option("--json-file", "json_path", type=click.Path(dir_okay=False), default=None,
                        help="also write the results as JSON to this file")(func)
    return click.option("--json", "as_json", is_flag=True,
                        help="print the results as JSON on stdout instead of the table")(func)


def data_options(func: F) -> F:
    """Options shared by commands that run models on data (check, bench, optimize's calibration)."""
    for decorator in reversed(
        [
            click.option("--samples", type=click.IntRange(1, MAX_SAMPLES), default=64, show_default=True,
                         help="texts (text) or feed rows (random) to use"),
            click.option("--batch", type=click.IntRange(1, MAX_BATCH), default=8, show_default=True,
                         help="batch size"),
            click.option("--seq", type=click.IntRange(1, MAX_SEQ), default=128, show_default=True,
                         help="tokens per sequence (text models)"),
            click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
                         help="seed of --data random"),
            click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
                         help="size of a symbolic input dim for --data random (repeatable)"),
        ]
    ):
        func = decorator(func)
    return func


def check_feed_size(batch: int, seq: int) -> None:
    """Refuse feeds of more than :data:`MAX_TOKENS_PER_FEED` tokens."""
    if batch * seq > MAX_TOKENS_PER_FEED:
        raise ParekitError(f"--batch {batch} × --seq {seq} = {batch * seq} tokens per feed set is too many",
                           note=f"at most {MAX_TOKENS_PER_FEED} tokens per feed set")


def finite(name: str, value: float) -> float:
    """``value`` when it is a finite number, else a one-line error naming option ``name``."""
    if not math.isfinite(value):
        raise ParekitError(f"{name} {value}: not a finite number")
    return value


def echo_json(payload: Any) -> None:
    """Print ``payload`` as JSON on stdout (``json`` escapes control characters: terminal-safe)."""
    click.echo(json.dumps(payload, indent=2, default=str))


def json_text(payload: Any) -> str:
    """The JSON text parekit writes to files."""
    return json.dumps(payload, indent=2, default=str) + "\n"


def deliver_json(files: Any, json_path: str | None, payload: Any, as_json: bool) -> bool:
    """Write ``payload`` to ``--json-file`` (with the command's staged outputs, all or none) and, with
    ``--json``, print it; returns True when printed (the caller then prints no table).

    Args:
        files: The command's :class:`parekit.cli.outputs.Outputs`, with its other outputs already staged.
        json_path: ``--json-file``, or None.
        payload: The JSON-ready result.
        as_json: ``--json``.
    """
    with files:
        files.stage_text(json_path, json_text(payload))
        files.commit()
    if as_json:
        echo_json(payload)
    return as_json
