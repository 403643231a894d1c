"""parekit custom ops: the one home of every op a pass inserts (dual form: ONNX function + plugin).

Look ops up by object, not by string, from passes::

    from parekit.ops.kv_window import KV_WINDOW

    node = KV_WINDOW.make_node(model, [present_k], attributes={"sink": 4, "window": 512})
    graph.insert_after(present_k.producer(), node)

Backends and tools enumerate them with :func:`all_ops` (plugin identities) or :func:`get_op` (by the
``op_type`` found on a node). See ``docs/ops.md`` for how to add an op.
"""

from parekit.ops.base import (
    DEFAULT_ONNX_OPSET,
    FLOAT_DTYPES,
    PAREKIT_DOMAIN,
    PAREKIT_OPSET_VERSION,
    PLUGIN_NAMESPACE,
    PLUGIN_NAMESPACE_ATTR,
    PLUGIN_VERSION_ATTR,
    AttrKind,
    AttrSpec,
    AttrValue,
    OpAttributeError,
    OpDef,
    OpInputError,
    PluginField,
    PluginIdentity,
    TensorSpec,
    UnknownOpError,
    all_ops,
    const_ints,
    get_op,
    int_attr_ref,
    op_names,
    register_op,
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
    "PluginField",
    "PluginIdentity",
    "TensorSpec",
    "UnknownOpError",
    "all_ops",
    "const_ints",
    "get_op",
    "int_attr_ref",
    "op_names",
    "register_op",
]
