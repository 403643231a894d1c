"""The op registry: every parekit op type, the module that defines it, and its registered :class:`OpDef`.

Op modules are listed explicitly (:data:`_OP_MODULES`) and imported lazily, on first lookup, so that
:func:`op_names` costs nothing and :func:`get_op` imports only the op it is asked for. Each op module
calls :func:`register_op` once, at its bottom, which also checks the op's schema.
"""

from __future__ import annotations

import difflib
import importlib
import re
from typing import Final, TypeVar

from parekit.ops.attrs import normalize_attr
from parekit.ops.errors import UnknownOpError
from parekit.ops.opdef import OpDef
from parekit.ops.schema import PLUGIN_NAMESPACE_ATTR, PLUGIN_VERSION_ATTR

__all__ = ["all_ops", "get_op", "op_names", "register_op"]

_OP_TYPE_RE: Final = re.compile(r"^[A-Z][A-Za-z0-9]*$")

# The explicit list of op modules: op type -> module that defines and registers it. Modules are
# imported lazily, on first lookup. A new op adds one line here.
_OP_MODULES: Final[dict[str, str]] = {
    "KvWindow": "parekit.ops.kv_window",
    "KvWindowMask": "parekit.ops.kv_window_mask",
    "TokenMerge": "parekit.ops.token_merge",
    "TokenPrune": "parekit.ops.token_prune",
    "TokenRestore": "parekit.ops.token_restore",
    "KvQuantKey": "parekit.ops.kv_quant",
    "KvQuantValue": "parekit.ops.kv_quant",
    "KvDequantKey": "parekit.ops.kv_dequant",
    "KvDequantValue": "parekit.ops.kv_dequant",
    "KvEvictH2O": "parekit.ops.kv_evict",
    "KvEvictSnap": "parekit.ops.kv_evict",
    "KvSlotMask": "parekit.ops.kv_slot_mask",
    "KvMaskRemap": "parekit.ops.kv_slot_mask",
    "AttentionProbs": "parekit.ops.attention_probs",
    "KvQuantAttention": "parekit.ops.kv_quant_attention",
    # -- early exit
    "ExitGate": "parekit.ops.exit_gate",
}

_REGISTRY: dict[str, OpDef] = {}

_OpT = TypeVar("_OpT", bound=OpDef)


def register_op(op: _OpT) -> _OpT:
    """Registers an op instance; call once at the bottom of the op's module.

    Example::

        KV_WINDOW = register_op(KvWindow())

    Args:
        op: The op definition.

    Returns:
        ``op`` itself.

    Raises:
        ValueError: The op is not listed in the registry's module list, is registered twice, or its
            schema is malformed.
    """
    name = op.op_type
    if not _OP_TYPE_RE.match(name):
        raise ValueError(f"op type '{name}' must be CamelCase ([A-Z][A-Za-z0-9]*)")
    if _OP_MODULES.get(name) != type(op).__module__:
        raise ValueError(
            f"op {name} is defined in module {type(op).__module__}, but the op registry lists "
            f"{_OP_MODULES.get(name, 'no module')} for it: add it to _OP_MODULES in parekit/ops/registry.py"
        )
    if name in _REGISTRY:
        raise ValueError(f"op {name} is registered twice")
    _check_schema(op)
    _REGISTRY[name] = op
    return op


def _check_schema(op: OpDef) -> None:
    if not op.plugin_version:
        raise ValueError(f"op {op.op_type}: plugin_version must not be empty")
    if not op.outputs:
        raise ValueError(f"op {op.op_type} declares no outputs")
    for what, specs in (("inputs", op.inputs), ("outputs", op.outputs)):
        flags = [s.optional for s in specs]
        if flags != sorted(flags):
            raise ValueError(f"op {op.op_type}: optional {what} must come last")
    names = [s.name for s in op.attributes]
    if len(set(names)) != len(names) or {PLUGIN_NAMESPACE_ATTR, PLUGIN_VERSION_ATTR} & set(names):
        raise ValueError(f"op {op.op_type}: attribute names must be unique and not plugin_* ({names})")
    for spec in op.attributes:
        if spec.default is not None:
            normalize_attr(op.op_type, spec, spec.default)


def op_names() -> tuple[str, ...]:
    """The op types the registry knows (without importing any op module)."""
    return tuple(sorted(_OP_MODULES))


def get_op(name: str) -> OpDef:
    """Returns the registered op with op type ``name``, importing its module on first use.

    Args:
        name: The op type, e.g. as found in ``node.op_type``.

    Returns:
        The op definition.

    Raises:
        UnknownOpError: No op has that name; the note suggests the closest names.
    """
    op = _REGISTRY.get(name)
    if op is not None:
        return op
    module = _OP_MODULES.get(name)
    if module is None:
        known = op_names()
        lower = {k.lower(): k for k in known}
        close = [lower[m] for m in difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)]
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise UnknownOpError(f"unknown parekit op '{name}'", note=f"{hint}known ops: {', '.join(known)}")
    importlib.import_module(module)
    op = _REGISTRY.get(name)
    if op is None:
        raise RuntimeError(f"module {module} was imported but did not register op {name}")
    return op


def all_ops() -> tuple[OpDef, ...]:
    """Every registered op, sorted by op type (imports all op modules)."""
    return tuple(get_op(name) for name in op_names())
