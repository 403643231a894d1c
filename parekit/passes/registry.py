"""The pass registry: pass name → pass class.

Built-in passes live one per module, listed explicitly in :data:`_PASS_MODULES` (``kv-window`` →
``parekit.passes.kv_window``). The modules are imported lazily, on the first lookup, so importing the
pass machinery stays cheap. A module that fails to import is logged and left out of
:func:`list_passes`; asking for its pass by name raises an error that carries the import failure.

Tests register throwaway passes with :func:`register` inside :func:`temporary`, which restores the
registry on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import inspect
import logging
import re
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

from parekit.errors import UnknownPassError
from parekit.passes.base import Pass
from parekit.passes.options import describe_options

__all__ = ["get_pass", "list_passes", "register", "temporary", "unregister"]

logger = logging.getLogger(__name__)

_PASS_MODULES: tuple[str, ...] = (
    "parekit.passes.drop_layers",
    "parekit.passes.kv_window",
    "parekit.passes.token_merge",
    "parekit.passes.token_prune",
    "parekit.passes.kv_quant",
    "parekit.passes.kv_evict",
    "parekit.passes.precision",
    # early exit (issue 11)
    "parekit.passes.early_exit",
    # serving (issue 15): a START control input for Triton's implicit state
    "parekit.passes.state_reset",
)
"""Modules holding the built-in passes, one pass per module, named after the pass."""

_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*\Z")

_REGISTRY: dict[str, type[Pass]] = {}
_FAILED: dict[str, tuple[str, BaseException]] = {}  # pass name (by module convention) → (module, error)
_loaded = False

P = TypeVar("P", bound=type[Pass])


def _pass_name_of_module(module: str) -> str:
    return module.rsplit(".", 1)[-1].replace("_", "-")


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _PASS_MODULES:
        try:
            importlib.import_module(module)
        except Exception as e:  # a broken pass module must not take the others down
            logger.warning("could not import pass module %s: %s: %s", module, type(e).__name__, e)
            _FAILED[_pass_name_of_module(module)] = (module, e)


def _summary_of(cls: type) -> str:
    doc = inspect.getdoc(cls) if cls.__doc__ else None
    if not doc:
        doc = inspect.getdoc(sys.modules.get(cls.__module__)) if cls.__module__ in sys.modules else None
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


def register(name: str, *, options: type, requires: tuple[str, ...] = ()) -> Callable[[P], P]:
    """Class decorator: register a :class:`~parekit.passes.base.Pass` under ``name``.

    Sets the class attributes ``name``, ``options_type``, ``required_passes`` and ``summary``.

    Args:
        name: pass name as written in pipelines: lowercase words joined by ``-`` (``kv-window``).
        options: the options dataclass (frozen; see :mod:`parekit.passes.options`).
        requires: names of passes that must appear earlier in the same pipeline.

    Returns:
        The decorator.

    Raises:
        TypeError: the class is not a Pass, the options type is not a frozen dataclass of supported
            field types, or ``requires`` is not a tuple of names.
        ValueError: the name is malformed or taken by another class.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid pass name {name!r}: use lowercase words joined by '-'")
    if isinstance(requires, str) or not all(isinstance(r, str) for r in requires):
        raise TypeError(f"register({name!r}): requires must be a tuple of pass names, got {requires!r}")
    if not (dataclasses.is_dataclass(options) and isinstance(options, type)):
        raise TypeError(f"register({name!r}): options must be a dataclass type, got {options!r}")
    if not options.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"register({name!r}): options dataclass {options.__qualname__} must be frozen")
    describe_options(options)  # fail at definition time on unsupported field types

    def decorate(cls: P) -> P:
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise TypeError(f"register({name!r}) decorates Pass subclasses, got {cls!r}")
        existing = _REGISTRY.get(name)
        same = existing is not None and (existing.__module__, existing.__qualname__) == (
            cls.__module__,
            cls.__qualname__,
        )
        if existing is not None and not same:  # re-registering the same class (a reload) is fine
            raise ValueError(f"pass name {name!r} is taken by {existing.__module__}.{existing.__qualname__}")
        cls.name = name
        cls.options_type = options
        cls.required_passes = tuple(requires)
        cls.summary = _summary_of(cls)
        _REGISTRY[name] = cls
        return cls

    return decorate


def unregister(name: str) -> None:
    """Remove a pass from the registry (no-op when absent). Meant for tests."""
    _REGISTRY.pop(name, None)


def get_pass(name: str) -> type[Pass]:
    """Look up a pass class by name.

    Raises:
        UnknownPassError: no pass has this name (with a did-you-mean), or its module failed to import.
    """
    _ensure_loaded()
    cls = _REGISTRY.get(name)
    if cls is not None:
        return cls
    if name in _FAILED:
        module, error = _FAILED[name]
        raise UnknownPassError(
            f"pass '{name}' is not available: its module {module} failed to import",
            note=f"{type(error).__name__}: {error}",
        )
    known = sorted(_REGISTRY)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    listing = ", ".join(known) if known else "(none registered)"
    raise UnknownPassError(f"unknown pass '{name}'", note=f"{hint}available passes: {listing}")


def list_passes() -> list[type[Pass]]:
    """All registered passes, sorted by name (passes whose modules failed to import are left out)."""
    _ensure_loaded()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


@contextlib.contextmanager
def temporary() -> Iterator[None]:
    """Restore the registry on exit, dropping passes registered inside the block (for tests).

    Example::

        with registry.temporary():
            @register("toy-identity", options=ToyOptions)
            class Toy(Pass[ToyOptions]): ...
            run_pipeline(model, "toy-identity", ctx)
    """
    _ensure_loaded()
    saved = dict(_REGISTRY)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)
