"""parekit custom ops: the one home of every op a pass inserts (dual form: ONNX function + plugin).

Look ops up by object, not by string, from passes::

    from parekit.ops.kv_window import KV_WINDOW

    node = KV_WINDOW.make_node(model, [present_k], attributes={"sink": 4, "window": 512})
    graph.insert_after(present_k.producer(), node)

Backends and tools enumerate them with :func:`all_ops` (plugin identities) or :func:`get_op` (by the
``op_type`` found on a node). See ``docs/ops.md`` for how to add an op.

The package is laid out by responsibility: :mod:`~parekit.ops.schema` (constants and spec
dataclasses), :mod:`~parekit.ops.dtypes` (allowed element types), :mod:`~parekit.ops.attrs`
(attribute validation), :mod:`~parekit.ops.body` (body-building helpers), :mod:`~parekit.ops.opdef`
(the :class:`OpDef` base), :mod:`~parekit.ops.registry` (the op list), :mod:`~parekit.ops.errors`;
then one module per op (or op family) and the family helpers ``keep_window``, ``kv_quant_format`` and
``token_common``.
"""

from parekit.ops.body import const_ints, int_attr_ref
from parekit.ops.dtypes import FLOAT_DTYPES
from parekit.ops.errors import OpAttributeError, OpInputError, UnknownOpError
from parekit.ops.opdef import OpDef
from parekit.ops.registry import all_ops, get_op, op_names, register_op
from parekit.ops.schema import (
    DEFAULT_ONNX_OPSET,
    PAREKIT_DOMAIN,
    PAREKIT_OPSET_VERSION,
    PLUGIN_NAMESPACE,
    PLUGIN_NAMESPACE_ATTR,
    PLUGIN_VERSION_ATTR,
    AttrKind,
    AttrSpec,
    AttrValue,
    ParamSpec,
    PluginField,
    PluginIdentity,
)

__all__ = [
    "DEFAULT_ONNX_OPSET",
    "FLOAT_DTYPES",
    "PAREKIT_DOMAIN",
    "PAREKIT_OPSET_VERSION",
    "PLUGIN_NAMESPACE",
    "PLUGIN_NAMESPACE_ATTR",
    "PLUGIN_VERSION_ATTR",
    "AttrKind",
    "AttrSpec",
    "AttrValue",
    "OpAttributeError",
    "OpDef",
    "OpInputError",
    "ParamSpec",
    "PluginField",
    "PluginIdentity",
    "UnknownOpError",
    "all_ops",
    "const_ints",
    "get_op",
    "int_attr_ref",
    "op_names",
    "register_op",
]
