"""Static FLOP estimates on small graphs written as ONNX text."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from parekit.analysis.flops import dim_bindings, estimate_flops

DIMS = {"batch": 2, "seq": 16, "past": 0, "total": 16}


def model(text: str, opset: int = 18) -> ir.Model:
    return ir.from_onnx_text(f'<ir_version: 10, opset_import: ["": {opset}]>\n' + text)


def test_matmul_with_broadcast_batch_dims() -> None:
    m = model("""
    g (float[batch, seq, 64] x, float[64, 256] w, float[batch, 4, seq, 32] q, float[batch, 4, 32, seq] k)
        => (float[batch, seq, 256] y, float[batch, 4, seq, seq] s)
    {
      y = MatMul(x, w)
      s = MatMul(q, k)
    }
    """)
    count = estimate_flops(m, DIMS)
    assert sorted(count.by_node.values()) == sorted([2 * 2 * 16 * 64 * 256, 2 * 2 * 4 * 16 * 16 * 32])
    assert count.total == sum(count.by_node.values())
    assert count.unknown == []


def test_elementwise_is_ignored_and_shapes_are_inferred() -> None:
    # The MatMul's input is an intermediate value without a declared shape: inference runs on a copy.
    m = model("""
    g (float[batch, seq, 64] x, float[64, 64] w) => (float[batch, seq, 64] y)
    {
      h = Relu(x)
      a = Add(h, h)
      y = MatMul(a, w)
    }
    """)
    assert m.graph.node(1).outputs[0].shape is None
    count = estimate_flops(m, DIMS)
    assert count.total == 2 * 2 * 16 * 64 * 64
    assert len(count.by_node) == 1
    assert m.graph.node(1).outputs[0].shape is None  # the model itself is untouched


def test_gemm_transposes() -> None:
    m = model("""
    g (float[8, 32] a, float[16, 32] b) => (float[8, 16] y)
    {
      y = Gemm<transB: int = 1>(a, b)
    }
    """)
    assert estimate_flops(m, DIMS).total == 2 * 8 * 16 * 32


def test_conv() -> None:
    m = model("""
    g (float[1, 8, 10, 10] x, float[16, 4, 3, 3] w) => (float[1, 16, 8, 8] y)
    {
      y = Conv<group: int = 2>(x, w)
    }
    """)
    assert estimate_flops(m, DIMS).total == 2 * (16 * 8 * 8) * 4 * 9


def test_attention_op_with_past() -> None:
    m = model(
        """
    g (float[batch, 8, seq, 64] q, float[batch, 2, seq, 64] k, float[batch, 2, seq, 64] v,
       float[batch, 2, past, 64] pk, float[batch, 2, past, 64] pv)
        => (float[batch, 8, seq, 64] y)
    {
      y, pres_k, pres_v = Attention(q, k, v, , pk, pv)
    }
    """,
        opset=23,
    )
    dims = {"batch": 1, "seq": 4, "past": 12, "total": 16}
    # QK^T and PV over the 16 cached + new keys: 4 * B * H * S_q * S_kv * D
    assert estimate_flops(m, dims).total == 4 * 1 * 8 * 4 * 16 * 64


def test_attention_op_3d_inputs() -> None:
    m = model(
        """
    g (float[batch, seq, 512] q, float[batch, seq, 128] k, float[batch, seq, 128] v) => (float[batch, seq, 512] y)
    {
      y = Attention<q_num_heads: int = 8, kv_num_heads: int = 2>(q, k, v)
    }
    """,
        opset=23,
    )
    assert estimate_flops(m, DIMS).total == 4 * 2 * 8 * 16 * 16 * 64


def test_symbol_resolution() -> None:
    m = model("""
    g (float[batch_size, sequence_length, 8] x, float[8, kv] w, float[s0, 8] z, float[8, 8] w2)
        => (float[batch_size, sequence_length, kv] y, float[s0, 8] u)
    {
      y = MatMul(x, w)
      u = MatMul(z, w2)
    }
    """)
    # The text format has no dim expressions; exporters write them (e.g. for the total KV length).
    m.graph.inputs[1].shape = ir.Shape([8, ir.SymbolicDim("past_sequence_length + sequence_length")])
    dims = {"batch": 1, "seq": 3, "past": 5, "total": 8}
    count = estimate_flops(m, dims)
    assert count.total == 2 * 1 * 3 * 8 * 8  # K=8, N=past+seq=8
    assert len(count.unknown) == 1  # s0 is nobody's name for anything
    assert estimate_flops(m, {**dims, "s0": 10}).total == count.total + 2 * 10 * 8 * 8


def test_dim_bindings_from_model_map() -> None:
    class FakeMap:
        batch_dim = "s0"
        seq_dim = "s1"

    assert dim_bindings(DIMS, FakeMap()) == {**DIMS, "s0": 2, "s1": 16}  # type: ignore[arg-type]
    assert dim_bindings(DIMS, None) == DIMS


def test_node_filter_and_unknown() -> None:
    m = model("""
    g (float[batch, 8] x, float[8, 8] w, float[weird, 8] z) => (float[batch, 8] y, float[weird, 8] u)
    {
      y = MatMul(x, w)
      u = MatMul(z, w)
    }
    """)
    m.graph.node(0).name = "first"
    m.graph.node(1).name = "second"
    count = estimate_flops(m, DIMS)
    assert count.by_node == {"first": 2 * 2 * 8 * 8}
    assert count.unknown == ["second"]
    assert estimate_flops(m, DIMS, nodes=["second"]).total == 0
    assert estimate_flops(m, DIMS, nodes=["first"]).total == 256


@pytest.mark.parametrize(
    "a_shape,b_shape,expected", [("[8]", "[8, 4]", 2 * 8 * 4), ("[3, 8]", "[8]", 2 * 3 * 8)]
)
def test_matmul_vectors(a_shape: str, b_shape: str, expected: int) -> None:
    m = model(f"""
    g (float{a_shape} a, float{b_shape} b) => (float y)
    {{
      y = MatMul(a, b)
    }}
    """)
    assert estimate_flops(m, DIMS).total == expected


@pytest.mark.parametrize("family", ["gpt2-tiny", "llama-tiny"])
def test_decomposed_and_native_attention_agree(load_sample, family: str) -> None:
    """The opset-18 export (MatMul/Softmax) and the opset-23 one (``Attention``) cost the same."""
    dims = {"batch": 2, "seq": 7, "past": 5, "total": 12}
    a, b = estimate_flops(load_sample(family, 18), dims), estimate_flops(load_sample(family, 23), dims)
    assert a.unknown == [] and b.unknown == []
    assert a.total == b.total
    assert a.total > 2 * 2 * 7 * 64 * 64  # more than one [B·S, 64] × [64, 64] projection


def test_an_unsorted_graph_is_estimated_without_shape_inference() -> None:
    """A graph onnx-ir cannot clone (a node reads a value defined later) still gets an estimate."""
    m = model("""
    g (float[batch, 8] x, float[8, 8] w) => (float[batch, 8] y)
    {
      y = MatMul(h, w)
      h = Relu(x)
    }
    """)
    m.graph.node(0).name = "late"
    count = estimate_flops(m, {**DIMS, "batch": 2})
    assert count.by_node == {}
    assert count.unknown == ["late"]
