"""Structure discovery on tiny hand-built graphs: the facts passes read, and malformed nodes.

Every malformed graph gets a :class:`~parekit.errors.StructureError` naming what and where (or is
handled), never an ``IndexError``/``TypeError`` from inside discovery.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest
from onnx_ir.passes.common import ShapeInferencePass

from parekit.analysis import discover
from parekit.analysis.graph_walk import SCOPES_KEY
from parekit.errors import OptionError, StructureError

# One post-embedding block: single-head attention (MatMul → Softmax → MatMul), output projection,
# residual Add, a two-MatMul MLP and the second residual Add. `x` (an Identity of the input) is the
# residual stream entering the block, `h` the value between attention and MLP.
_BLOCK = """
<ir_version: 10, opset_import: ["" : 18]>
tiny (float[1, 4, 8] x0) => (float[1, 4, 8] y)
<float[8, 8] wq = {SPLAT}, float[8, 8] wk = {SPLAT}, float[8, 8] wv = {SPLAT}, float[8, 8] wo = {SPLAT},
 float[8, 16] w1 = {SPLAT16}, float[16, 8] w2 = {SPLAT16}, int64[1] ax = {1}>
{
    x = Identity(x0)
    q3 = MatMul(x, wq)
    k3 = MatMul(x, wk)
    v3 = MatMul(x, wv)
    q = Unsqueeze(q3, ax)
    k = Unsqueeze(k3, ax)
    v = Unsqueeze(v3, ax)
    kt = Transpose<perm = [0, 1, 3, 2]>(k)
    s = MatMul(q, kt)
    p = Softmax<axis = -1>(s)
    c = MatMul(p, v)
    c3 = Squeeze(c, ax)
    o = MatMul(c3, wo)
    h = Add(x, o)
    m1 = MatMul(h, w1)
    a = Relu(m1)
    m2 = MatMul(a, w2)
    y = Add(h, m2)
}
"""


def _text() -> str:
    return _BLOCK.replace("{SPLAT16}", "{" + ", ".join(["0.1"] * 128) + "}").replace(
        "{SPLAT}", "{" + ", ".join(["0.1"] * 64) + "}"
    )


def _block() -> ir.Model:
    model = ir.from_onnx_text(_text())
    ShapeInferencePass()(model)
    for i, node in enumerate(model.graph):
        node.name = f"n{i}_{node.outputs[0].name}"
    return model


def _node(model: ir.Model, output: str) -> ir.Node:
    return next(n for n in model.graph if n.outputs[0].name == output)


def test_the_tiny_block_is_found_with_the_facts_passes_read():
    model = _block()
    mm = discover(model)
    (lm,) = mm.layers
    assert (mm.kind, mm.num_heads, mm.head_dim, mm.hidden_size) == ("encoder", 1, 8, 8)
    assert (lm.input, lm.output, lm.mid) == ("x", "y", "h")
    assert lm.attention.probs == "p" and lm.attention.mask_select is None
    shown = mm.to_dict()["layers"][0]
    assert "mid" not in shown and "mask_select" not in shown["attention"]


def test_unnamed_nodes_are_named_and_found():
    model = _block()
    for node in model.graph:
        node.name = None
    mm = discover(model)
    assert all(node.name for node in model.graph)
    assert mm.layers[0].nodes == tuple(node.name for node in list(model.graph)[1:])


def test_the_mask_where_is_found_and_hidden_from_inspect():
    text = _text().replace("(float[1, 4, 8] x0)", "(float[1, 4, 8] x0, bool[1, 1, 4, 4] keep)").replace(
        "    p = Softmax<axis = -1>(s)",
        "    zero = Constant<value = float {0.0}>()\n    low = Constant<value = float {-1e9}>()\n"
        "    madd = Where(keep, zero, low)\n    sm = Add(s, madd)\n    p = Softmax<axis = -1>(sm)",
    )
    model = ir.from_onnx_text(text)
    ShapeInferencePass()(model)
    mm = discover(model)
    where = next(n for n in model.graph if n.op_type == "Where")
    assert mm.layers[0].attention.mask_select == where.name
    assert "mask_select" not in mm.to_dict()["layers"][0]["attention"]


def test_select_layers_is_the_one_layer_list_check():
    mm = discover(_block())
    assert mm.select_layers([0], "toy") == mm.layers
    with pytest.raises(OptionError, match=r"^toy: layer\(s\) \[1\] out of range: the model has 1 layers \(0\.\.0\)$"):
        mm.select_layers([1], "toy")
    with pytest.raises(OptionError, match="out of range"):
        mm.select_layers([-1], "toy")
    with pytest.raises(OptionError, match=r"^toy: option 'layers' repeats a layer: \[0, 0\]$"):
        mm.select_layers([0, 0], "toy")


def _scoped(model: ir.Model) -> ir.Model:
    """Put every node of the block in the exporter scope ``layers.0`` (so blocks come from scopes)."""
    for node in model.graph:
        node.metadata_props[SCOPES_KEY] = "['', 'layers.0']"
    return model


@pytest.mark.parametrize(
    ("output", "keep", "message"),
    [
        ("s", 1, r"MatMul node 'n\d+_s' has no input 1 \(transposed key\): it has 1 input\(s\)"),
        ("c", 1, r"MatMul node 'n\d+_c' has no input 1 \(value\): it has 1 input\(s\)"),
    ],
)
def test_an_attention_matmul_with_too_few_inputs_is_named(output, keep, message):
    model = _scoped(_block())
    node = _node(model, output)
    for i in range(len(node.inputs) - 1, keep - 1, -1):
        node.replace_input_with(i, None)
    node.resize_inputs(keep)
    with pytest.raises(StructureError, match=message):
        discover(model)


def test_a_softmax_without_input_is_not_an_attention_core():
    model = _block()
    softmax = _node(model, "p")
    softmax.resize_inputs(0)
    with pytest.raises(StructureError, match="no transformer blocks found"):
        discover(model)


def test_an_attention_op_with_too_few_inputs_is_named():
    model = ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 23]>
        g (float[1, 2, 4, 8] q, float[1, 2, 4, 8] k) => (float[1, 2, 4, 8] y) {
            y = Attention(q, k)
        }
        """
    )
    att = model.graph.node(0)
    att.name = "att0"
    att.outputs[0].shape = ir.Shape([1, 2, 4, 8])
    _scoped(model)
    with pytest.raises(StructureError, match=r"^Attention node 'att0' has no input 2 \(value\): it has 2 input\(s\)$"):
        discover(model)


def _with_invalid_utf8(model: ir.Model) -> ir.Model:
    """The model round-tripped through protobuf with metadata values that are not valid UTF-8."""
    for node in model.graph:
        node.metadata_props["pkg.torch.onnx.class_hierarchy"] = "MARKER"
    data = ir.serde.serialize_model(model).SerializeToString().replace(b"MARKER", b"Bert\xff\xfe")
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    return ir.serde.deserialize_model(proto)


def test_metadata_that_is_not_utf8_is_read_not_raised_on():
    model = _with_invalid_utf8(_block())
    raw = next(iter(model.graph)).metadata_props["pkg.torch.onnx.class_hierarchy"]
    assert not isinstance(raw, str)  # what protobuf hands over for invalid UTF-8
    mm = discover(model)
    assert mm.num_layers == 1 and mm.family == "bert"


def test_scopes_that_are_not_utf8_fall_back_to_patterns():
    model = _block()
    for node in model.graph:
        node.metadata_props[SCOPES_KEY] = "['layers.X0']"
    data = ir.serde.serialize_model(model).SerializeToString()
    data = data.replace(b"['layers.X0']", b"['layers.\xff0']")  # same length: the wire format stays valid
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    mm = discover(ir.serde.deserialize_model(proto))
    assert [lm.scope for lm in mm.layers] == ["block.0"]
