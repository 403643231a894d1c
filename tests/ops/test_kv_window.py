"""KvWindow / KvWindowMask: body == reference, attribute/input validation, node and model plumbing.

The contract every op must meet and the registry are tested in ``test_contract.py``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from parekit.errors import OptionError
from parekit.ops import PAREKIT_DOMAIN, PLUGIN_NAMESPACE, OpAttributeError, OpInputError
from parekit.ops.keep_window import keep_window_reference, kept_length
from parekit.ops.kv_window import KV_WINDOW
from parekit.ops.kv_window_mask import KV_WINDOW_MASK

from .harness import assert_body_matches_reference, build_model, check_model, run_model

RNG = np.random.default_rng(0)


def _cache(b: int, h: int, t: int, d: int, dtype: type = np.float32) -> np.ndarray:
    return RNG.standard_normal((b, h, t, d)).astype(dtype)


def _empty_model(opset: int | None = 18) -> tuple[ir.Model, ir.Value]:
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["B", 2, "T", 8]))
    imports = {} if opset is None else {"": opset}
    graph = ir.Graph([x], [], nodes=[], opset_imports=imports, name="g")
    return ir.Model(graph, ir_version=10), x


# -- body == reference -------------------------------------------------------------------------------

# (B, H, T, D, sink, window): T below, at, just above and far above sink + window; sink = 0; T < sink.
SHAPES = [
    (1, 1, 5, 4, 2, 4),  # T < sink + window: identity
    (1, 1, 6, 4, 2, 4),  # T == sink + window: identity
    (1, 1, 7, 4, 2, 4),  # one token evicted
    (2, 3, 32, 8, 4, 8),  # B > 1, H > 1
    (2, 4, 17, 16, 0, 5),  # sink = 0
    (1, 2, 9, 4, 0, 1),  # sink = 0, window = 1
    (1, 2, 3, 4, 8, 2),  # T < sink
    (3, 2, 1, 4, 4, 16),  # one-token cache
    (1, 1, 40, 2, 39, 1),  # keep all but one
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize(("b", "h", "t", "d", "sink", "window"), SHAPES)
def test_kv_window_body_matches_reference(b, h, t, d, sink, window, dtype):
    cache = _cache(b, h, t, d, dtype)
    (out,) = assert_body_matches_reference(KV_WINDOW, [cache], {"sink": sink, "window": window})
    assert out.shape == (b, h, kept_length(t, sink, window), d)
    if t <= sink + window:
        np.testing.assert_array_equal(out, cache)  # identity configuration is bit-exact


def test_kv_window_static_shapes_and_opset_23():
    cache = _cache(2, 2, 20, 4)
    assert_body_matches_reference(KV_WINDOW, [cache], {"sink": 3, "window": 5}, static_shapes=True)
    assert_body_matches_reference(KV_WINDOW, [cache], {"sink": 3, "window": 5}, opset=23)


def test_one_function_serves_several_attribute_sets():
    """T is a runtime dim and attributes reach the body by reference: one model, many T."""
    model = build_model(KV_WINDOW, [_cache(1, 2, 4, 3)], {"sink": 1, "window": 2})
    for t in (1, 3, 4, 10):
        cache = _cache(1, 2, t, 3)
        (got,) = run_model(model, [cache])
        np.testing.assert_array_equal(got, keep_window_reference(cache, 2, 1, 2))


def test_keep_rule_reference_by_hand():
    x = np.arange(10)[None, None, :, None]
    out = KV_WINDOW.run_reference([x], {"sink": 2, "window": 3})[0]
    assert out[0, 0, :, 0].tolist() == [0, 1, 7, 8, 9]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.float32, np.float16, np.float64])
@pytest.mark.parametrize(
    ("b", "t", "sink", "window"), [(1, 5, 2, 4), (2, 6, 2, 4), (3, 20, 4, 8), (2, 9, 0, 3)]
)
def test_kv_window_mask_body_matches_reference(b, t, sink, window, dtype):
    mask = (RNG.random((b, t)) > 0.3).astype(dtype)
    (out,) = assert_body_matches_reference(KV_WINDOW_MASK, [mask], {"sink": sink, "window": window})
    assert out.shape == (b, kept_length(t, sink, window))


def test_mask_and_cache_stay_aligned():
    t, sink, window = 12, 2, 4
    positions = np.arange(t)
    cache = np.broadcast_to(positions[None, None, :, None], (1, 1, t, 1)).astype(np.float32)
    mask = positions[None, :].astype(np.int64)
    kept_cache = KV_WINDOW.run_reference([cache], {"sink": sink, "window": window})[0]
    kept_mask = KV_WINDOW_MASK.run_reference([mask], {"sink": sink, "window": window})[0]
    assert kept_cache[0, 0, :, 0].astype(np.int64).tolist() == kept_mask[0].tolist()


# -- attribute validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "fragment"),
    [
        ({"sink": -1}, "'sink' must be >= 0"),
        ({"window": 0}, "'window' must be >= 1"),
        ({"window": 2.5}, "'window' must be an int"),
        ({"window": "8"}, "'window' must be an int"),
        ({"sink": True}, "'sink' must be an int"),
        ({"window": 2**31}, "int32"),
        ({"windw": 8}, "has no attribute 'windw'"),
        ({"plugin_version": "2"}, "set by parekit"),
    ],
)
def test_attribute_validation(attributes, fragment):
    model, x = _empty_model()
    with pytest.raises(OpAttributeError) as info:
        KV_WINDOW.make_node(model, [x], attributes=attributes)
    message = str(info.value)
    assert KV_WINDOW.op_type in message
    assert fragment in message
    assert isinstance(info.value, OptionError) and isinstance(info.value, ValueError)
    assert not model.functions, "a failed make_node must not touch the model"


def test_unknown_attribute_did_you_mean():
    with pytest.raises(OpAttributeError, match="did you mean 'window'"):
        KV_WINDOW.validate_attributes({"windw": 8})


def test_defaults_filled_and_numpy_ints_accepted():
    attrs = KV_WINDOW.validate_attributes({"window": np.int64(16)})
    assert attrs == {"sink": 4, "window": 16}
    assert type(attrs["window"]) is int


def test_input_validation():
    model, x = _empty_model()
    with pytest.raises(OpInputError, match="takes 1 inputs"):
        KV_WINDOW.make_node(model, [x, x])
    ints = ir.Value(name="i", type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([1, 1, 4, 2]))
    with pytest.raises(OpInputError, match="dtype INT64"):
        KV_WINDOW.make_node(model, [ints])
    rank3 = ir.Value(name="r", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1, 4, 2]))
    with pytest.raises(OpInputError, match="rank 3"):
        KV_WINDOW.make_node(model, [rank3])
    old, x_old = _empty_model(opset=12)
    with pytest.raises(OpInputError, match="opset >= 13"):
        KV_WINDOW.make_node(old, [x_old])
    assert old.opset_imports == {"": 12} and not old.functions, "a failed make_node must not touch the model"


# -- node and model plumbing ------------------------------------------------------------------------


def test_node_carries_declared_and_plugin_attributes():
    model, x = _empty_model()
    node = KV_WINDOW.make_node(model, [x], attributes={"window": 512}, name="kvw0")
    assert (node.domain, node.op_type, node.name) == (PAREKIT_DOMAIN, KV_WINDOW.op_type, "kvw0")
    attrs = {name: attr.value for name, attr in node.attributes.items()}
    assert attrs == {
        "sink": 4,
        "window": 512,
        "plugin_namespace": PLUGIN_NAMESPACE,
        "plugin_version": KV_WINDOW.plugin_version,
    }
    assert node.attributes["sink"].type == ir.AttributeType.INT
    assert node.attributes["plugin_version"].type == ir.AttributeType.STRING
    assert KV_WINDOW.matches(node) and not KV_WINDOW_MASK.matches(node)
    # type/shape rule: dtype kept, symbolic T -> unknown, other dims kept
    out = node.outputs[0]
    assert out.dtype == ir.DataType.FLOAT
    assert out.shape is not None and out.shape[1] == 2 and out.shape[3] == 8 and out.shape[2].value is None


def test_static_t_gives_static_output_dim():
    model, _ = _empty_model()
    x = ir.Value(name="s", type=ir.TensorType(ir.DataType.FLOAT16), shape=ir.Shape([1, 2, 100, 8]))
    node = KV_WINDOW.make_node(model, [x], attributes={"sink": 4, "window": 60})
    assert node.outputs[0].shape == ir.Shape([1, 2, 64, 8])
    assert node.outputs[0].dtype == ir.DataType.FLOAT16


def test_function_and_opset_imports_added_once():
    model, x = _empty_model()
    first = KV_WINDOW.make_node(model, [x], attributes={"sink": 1, "window": 2})
    model.graph.append(first)
    second = KV_WINDOW.make_node(model, [first.outputs[0]], attributes={"sink": 0, "window": 1})
    model.graph.append(second)
    model.graph.outputs.append(second.outputs[0])
    assert list(model.functions) == [(PAREKIT_DOMAIN, KV_WINDOW.op_type, "")]
    function = model.functions[(PAREKIT_DOMAIN, KV_WINDOW.op_type, "")]
    assert function.opset_imports == {"": 18}
    assert {a.name: a.value for a in function.attributes.values()} == {"sink": 4, "window": 1024}
    assert model.opset_imports == {"": 18, PAREKIT_DOMAIN: 1}
    cache = _cache(2, 2, 9, 8)
    (got,) = run_model(model, [cache])
    np.testing.assert_array_equal(got, cache[:, :, -1:])


def test_two_ops_two_functions_one_import():
    model, x = _empty_model()
    model.graph.append(KV_WINDOW.make_node(model, [x]))
    mask = ir.Value(name="m", type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape(["B", "T"]))
    model.graph.inputs.append(mask)
    model.graph.append(KV_WINDOW_MASK.make_node(model, [mask]))
    for node in model.graph:
        model.graph.outputs.append(node.outputs[0])
    assert sorted(name for _, name, _ in model.functions) == sorted([KV_WINDOW.op_type, KV_WINDOW_MASK.op_type])
    assert model.opset_imports == {"": 18, PAREKIT_DOMAIN: 1}
    check_model(model)


def test_model_without_default_opset_gets_one():
    model, x = _empty_model(opset=None)
    KV_WINDOW.make_node(model, [x])
    assert model.opset_imports[""] == 18
    assert model.functions[(PAREKIT_DOMAIN, KV_WINDOW.op_type, "")].opset_imports == {"": 18}


def test_function_rebuilt_when_model_opset_changes():
    model, x = _empty_model()
    KV_WINDOW.make_node(model, [x])
    model.opset_imports[""] = 21
    KV_WINDOW.make_node(model, [x])
    assert model.functions[(PAREKIT_DOMAIN, KV_WINDOW.op_type, "")].opset_imports == {"": 21}


def test_foreign_parekit_opset_version_refused():
    model, x = _empty_model()
    model.opset_imports[PAREKIT_DOMAIN] = 2
    with pytest.raises(OpInputError, match="version 2"):
        KV_WINDOW.make_node(model, [x])
