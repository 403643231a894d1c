"""Test harness for passes: small hand-built transformers, a pipeline, then structure, numerics, checker.

The recipe (onnxscript's rewriter tests): build a small graph → apply a pipeline through
:func:`parekit.passes.run_pipeline` → assert op types and structure through the ops' ``OpDef``
(``OP.matches(node)``) → compare outputs with the original under ONNX Runtime with graph optimizations
*off* (nothing folded, every function body inlined as written) → the ONNX checker (``full_check``).

The two graphs are torch-free and take milliseconds to build and run. They are what structure discovery
(:func:`parekit.analysis.discover`) recognises without exporter metadata, from graph patterns alone:

* :func:`encoder_model`: a post-norm BERT-like encoder at opset 18 (word embedding → LayerNorm →
  blocks of MatMul/Softmax attention with an additive padding mask, LayerNorm, ReLU MLP, LayerNorm);
* :func:`decoder_model`: a pre-norm GPT-2-like decoder at opset 18 with an explicit KV cache
  (``past.<i>.key/value`` → ``Concat`` → ``present.<i>.key/value``) and a causal + padding mask built
  from ``attention_mask`` and the past length as ``Where(bool, 0, lowest)`` added to the scores.

It also holds what the sample-model pass tests share: :func:`optimize` (the pipeline with ``--verify-each``
and an ORT load as verifier), :data:`TINY_DECODERS`, :data:`PROMPTS` and :func:`decode_side_by_side`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from parekit.backends.ort import OrtRunner, check_loads
from parekit.ops import OpDef
from parekit.passes import PassContext, PipelineResult, run_pipeline
from parekit.runtime import DecoderSession, left_pad

OPSET = 18
IR_VERSION = 10
LOWEST = float(np.finfo(np.float32).min)

TINY_DECODERS = [
    pytest.param(
        name, opset, marks=[] if (name, opset) == ("llama-tiny", 23) else [pytest.mark.slow], id=f"{name}-{opset}"
    )
    for name in ("llama-tiny", "gpt2-tiny")
    for opset in (18, 23)
]
"""The tiny decoder samples at both opsets (decomposed attention and the ``Attention`` op), as
``(name, opset)`` parameters. Only llama-tiny at opset 23 (the ``Attention`` op, grouped KV heads) is in
the fast run; the others are ``slow``: the harness's own decoder covers decomposed attention in milliseconds."""
PROMPTS = [[11, 42, 7, 300, 5, 99, 123, 8, 64, 1, 2], [17, 2, 250, 4]]
"""Two prompts of different lengths: the second row of a left-padded batch has 7 padding tokens."""


# ------------------------------------------------------------------------------------------------
# applying a pipeline


def optimize(
    model: ir.Model, pipeline: str, ctx: PassContext | None = None, *, verify: bool = True
) -> PipelineResult:
    """Run ``pipeline`` over ``model`` in place, verifying after each pass (checker + ORT load)."""
    return run_pipeline(
        model, pipeline, ctx or PassContext(), verify_each=verify, verifier=check_loads if verify else None
    )


def apply(model: ir.Model, pipeline: str, ctx: PassContext | None = None) -> tuple[ir.Model, PipelineResult]:
    """Run ``pipeline`` over a *copy* of ``model``; returns ``(rewritten, result)`` and checks the result.

    The original stays as it was (the reference for :func:`assert_same_outputs`).
    """
    copy = clone(model)
    result = optimize(copy, pipeline, ctx)
    check(copy)
    return copy, result


def clone(model: ir.Model) -> ir.Model:
    """A deep copy of a model (through its protobuf form)."""
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def check(model: ir.Model) -> None:
    """The ONNX checker with type and shape inference; raises on an invalid model."""
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)


def op_nodes(model: ir.Model, op: OpDef) -> list[ir.Node]:
    """The nodes of the main graph that are instances of ``op``."""
    return [n for n in model.graph if op.matches(n)]


def count_ops(model: ir.Model, *ops: OpDef) -> dict[str, int]:
    """``{op_type: count}`` of the given ops in the main graph."""
    return {op.op_type: len(op_nodes(model, op)) for op in ops}


def runner(model: ir.Model) -> OrtRunner:
    """An ONNX Runtime session with graph optimizations off."""
    return OrtRunner(model, optimization="disabled")


def run(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All outputs of ``model`` on ``feeds`` (ORT, optimizations off)."""
    return runner(model).run(feeds)


def assert_same_outputs(
    reference: ir.Model,
    candidate: ir.Model,
    feeds: Mapping[str, np.ndarray],
    *,
    outputs: Sequence[str] | None = None,
    atol: float = 1e-5,
) -> dict[str, np.ndarray]:
    """The named outputs (default: all of the reference's) agree within ``atol``; returns the candidate's."""
    want, got = run(reference, feeds), run(candidate, feeds)
    for name in outputs if outputs is not None else list(want):
        assert got[name].shape == want[name].shape, (name, got[name].shape, want[name].shape)
        np.testing.assert_allclose(got[name], want[name], atol=atol, rtol=1e-5, err_msg=name)
    return got


def _weight(value: ir.Value | None) -> ir.Value | None:
    """The initializer behind a weight input (directly, or through one ``Transpose``)."""
    if value is None:
        return None
    if value.const_value is not None:
        return value
    producer = value.producer()
    if producer is not None and producer.op_type == "Transpose" and producer.inputs[0] is not None:
        return producer.inputs[0] if producer.inputs[0].const_value is not None else None
    return None


def _zero(value: ir.Value) -> None:
    tensor = value.const_value
    assert tensor is not None
    value.const_value = ir.tensor(np.zeros_like(tensor.numpy()), name=value.name)


def zero_block_updates(model: ir.Model, layer: int) -> ir.Model:
    """Oracle for dropping a pre-norm block: a copy whose block ``layer`` adds nothing to the residual.

    The block's two residual updates — the attention output projection (the first weight MatMul/Gemm
    after the attention core) and the MLP down projection — get zero weights and biases, so the block's
    output equals its input; its other outputs (the KV cache) are unchanged.
    """
    from parekit.analysis import discover

    copy = clone(model)
    lm = discover(copy).layers[layer]
    names = set(lm.nodes)
    block = [n for n in copy.graph if n.name in names]
    core = max(i for i, n in enumerate(block) if n.name in lm.attention.nodes)
    projections = [
        n for n in block[core + 1 :] if n.op_type in ("MatMul", "Gemm") and _weight(n.inputs[1]) is not None
    ]
    down = next(n for n in block if n.name == lm.mlp.down) if lm.mlp is not None else None
    assert projections and down is not None, f"layer {layer}: no output projection or MLP down projection"
    for node in (projections[0], down):
        _zero(_weight(node.inputs[1]))  # type: ignore[arg-type]
        if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
            _zero(node.inputs[2])
        for user, index in node.outputs[0].uses():  # a bias Add right after the projection
            other = user.inputs[1 - index] if user.op_type == "Add" else None
            if other is not None and other.const_value is not None:
                _zero(other)
    return copy


# ------------------------------------------------------------------------------------------------
# a torch-free graph builder


class _Builder:
    """Emits ONNX nodes and random float32 initializers into one graph (default domain, opset 18)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        name = out or self._name(op_type.lower())
        self.nodes.append(
            onnx.helper.make_node(op_type, list(inputs), [name], name=self._name(op_type), **attrs)
        )
        return name

    def const(self, array: Any, stem: str = "c") -> str:
        name = self._name(stem)
        self.inits.append(onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape: int, scale: float | None = None) -> str:
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), "w")

    def layer_norm(self, x: str, width: int) -> str:
        gamma = self.const((1.0 + 0.1 * self.rng.standard_normal(width)).astype(np.float32), "ln_g")
        beta = self.const((0.1 * self.rng.standard_normal(width)).astype(np.float32), "ln_b")
        return self.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=1e-5)

    def linear(self, x: str, n_in: int, n_out: int, bias: bool) -> str:
        y = self.op("MatMul", x, self.weight(n_in, n_out))
        if bias:
            y = self.op("Add", y, self.const((0.1 * self.rng.standard_normal(n_out)).astype(np.float32), "b"))
        return y

    def heads(self, x: str, heads: int, head_dim: int, perm: Sequence[int]) -> str:
        """``[B, S, H·D] -> [B, H, S, D]`` (or ``[B, H, D, S]`` with ``perm=[0, 2, 3, 1]``)."""
        split = self.op("Reshape", x, self.const(np.array([0, 0, heads, head_dim], np.int64), "shape"))
        return self.op("Transpose", split, perm=list(perm))

    def merge_heads(self, ctx: str, hidden: int) -> str:
        joined = self.op("Transpose", ctx, perm=[0, 2, 1, 3])
        return self.op("Reshape", joined, self.const(np.array([0, 0, hidden], np.int64), "shape"))

    def attention(self, q: str, k_t: str, v: str, mask: str, head_dim: int) -> str:
        """``Softmax(Q·Kᵀ / √D + mask) · V``: the decomposed attention core discovery looks for."""
        scores = self.op("MatMul", q, k_t)
        scores = self.op("Div", scores, self.const(np.float32(np.sqrt(head_dim)), "scale"))
        scores = self.op("Add", scores, mask)
        probs = self.op("Softmax", scores, axis=-1)
        return self.op("MatMul", probs, v)

    def model(
        self, name: str, inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto]
    ) -> ir.Model:
        graph = onnx.helper.make_graph(self.nodes, name, list(inputs), list(outputs), self.inits)
        proto = onnx.helper.make_model(
            graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
        )
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
        onnx.checker.check_model(proto, full_check=True)
        return ir.serde.deserialize_model(proto)


def _info(name: str, elem: int, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(name, elem, list(shape))


_F, _I = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64


def encoder_model(
    *, layers: int = 2, hidden: int = 16, heads: int = 2, vocab: int = 40, seed: int = 0
) -> ir.Model:
    """A post-norm BERT-like encoder: ``input_ids, attention_mask [batch, seq] -> last_hidden_state``."""
    b = _Builder(seed)
    d = hidden // heads
    # The additive padding mask first (outside every block): 0 for real tokens, the lowest float for padding.
    real = b.op("Unsqueeze", b.op("Cast", "attention_mask", to=_F), b.const(np.array([1, 2], np.int64), "axes"))
    padding = b.op("Sub", b.const(np.float32(1.0), "one"), real)
    mask = b.op("Mul", padding, b.const(np.float32(LOWEST), "lowest"))
    x = b.layer_norm(b.op("Gather", b.weight(vocab, hidden, scale=1.0), "input_ids"), hidden)
    for index in range(layers):
        q = b.heads(b.linear(x, hidden, hidden, True), heads, d, [0, 2, 1, 3])
        k_t = b.heads(b.linear(x, hidden, hidden, True), heads, d, [0, 2, 3, 1])
        v = b.heads(b.linear(x, hidden, hidden, True), heads, d, [0, 2, 1, 3])
        context = b.merge_heads(b.attention(q, k_t, v, mask, d), hidden)
        h = b.layer_norm(b.op("Add", b.linear(context, hidden, hidden, True), x), hidden)
        up = b.op("Relu", b.linear(h, hidden, 2 * hidden, True))
        out = "last_hidden_state" if index == layers - 1 else None
        x = b.layer_norm(b.op("Add", b.linear(up, 2 * hidden, hidden, True), h), hidden)
        if out:
            b.nodes[-1].output[0] = out
            x = out
    return b.model(
        "tiny_encoder",
        [_info("input_ids", _I, ["batch", "seq"]), _info("attention_mask", _I, ["batch", "seq"])],
        [_info("last_hidden_state", _F, ["batch", "seq", hidden])],
    )


def decoder_model(
    *, layers: int = 2, hidden: int = 16, heads: int = 2, vocab: int = 40, seed: int = 0, cache: bool = True
) -> ir.Model:
    """A pre-norm GPT-2-like decoder with an explicit KV cache (the decoder I/O contract).

    Inputs ``input_ids [batch, seq]``, ``attention_mask [batch, total]`` (all tokens seen plus the new
    ones), ``past.<i>.key/value [batch, heads, past, head_dim]``; outputs ``logits [batch, seq, vocab]`` and
    ``present.<i>.key/value`` (the ``Concat`` outputs themselves). No position embedding: positions do not
    matter to what the KV passes rewrite. ``cache=False``: the same causal decoder without past/present.
    """
    b = _Builder(seed)
    d = hidden // heads
    # Causal + padding mask over the cache positions [0, past + seq), built before the first block.
    one = b.const(np.array([1], np.int64), "one")
    past_len = b.op("Shape", "past.0.key", start=2, end=3) if cache else b.const(np.array([0], np.int64), "past")
    new_len = b.op("Shape", "input_ids", start=1, end=2)
    total = b.op("Add", past_len, new_len)
    scalar = b.const(np.array([0], np.int64), "axes")
    keys = b.op("Range", b.const(np.int64(0), "zero"), b.op("Squeeze", total, scalar), b.op("Squeeze", one, scalar))
    queries = b.op(
        "Range", b.op("Squeeze", past_len, scalar), b.op("Squeeze", total, scalar), b.op("Squeeze", one, scalar)
    )
    causal = b.op(
        "LessOrEqual",
        b.op("Unsqueeze", keys, b.const(np.array([0], np.int64), "axes")),
        b.op("Unsqueeze", queries, b.const(np.array([1], np.int64), "axes")),
    )  # [S, T]
    visible = b.op(
        "And",
        b.op("Unsqueeze", causal, b.const(np.array([0, 1], np.int64), "axes")),
        b.op("Unsqueeze", b.op("Cast", "attention_mask", to=onnx.TensorProto.BOOL), b.const(np.array([1, 2], np.int64), "axes")),
    )  # [B, 1, S, T]
    mask = b.op("Where", visible, b.const(np.float32(0.0), "zero_f"), b.const(np.float32(LOWEST), "lowest"))
    x = b.op("Gather", b.weight(vocab, hidden, scale=1.0), "input_ids")
    cache_in, cache_out = [], []
    for index in range(layers):
        n = b.layer_norm(x, hidden)
        q = b.heads(b.linear(n, hidden, hidden, False), heads, d, [0, 2, 1, 3])
        k_new = b.heads(b.linear(n, hidden, hidden, False), heads, d, [0, 2, 1, 3])
        v_new = b.heads(b.linear(n, hidden, hidden, False), heads, d, [0, 2, 1, 3])
        k, v = k_new, v_new
        if cache:
            k = b.op("Concat", f"past.{index}.key", k_new, axis=2, out=f"present.{index}.key")
            v = b.op("Concat", f"past.{index}.value", v_new, axis=2, out=f"present.{index}.value")
        k_t = b.op("Transpose", k, perm=[0, 1, 3, 2])
        context = b.merge_heads(b.attention(q, k_t, v, mask, d), hidden)
        h = b.op("Add", x, b.linear(context, hidden, hidden, False))
        up = b.op("Relu", b.linear(b.layer_norm(h, hidden), hidden, 2 * hidden, False))
        x = b.op("Add", h, b.linear(up, 2 * hidden, hidden, False))
        for role in ("key", "value") if cache else ():
            cache_in.append(_info(f"past.{index}.{role}", _F, ["batch", heads, "past", d]))
            cache_out.append(_info(f"present.{index}.{role}", _F, ["batch", heads, "total", d]))
    b.op("MatMul", b.layer_norm(x, hidden), b.weight(hidden, vocab), out="logits")
    return b.model(
        "tiny_decoder",
        [_info("input_ids", _I, ["batch", "seq"]), _info("attention_mask", _I, ["batch", "total"]), *cache_in],
        [_info("logits", _F, ["batch", "seq", vocab]), *cache_out],
    )


# ------------------------------------------------------------------------------------------------
# feeds and decode loops


def encoder_feeds(*, batch: int = 2, seq: int = 7, vocab: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids; row 1 is right-padded (its last 3 tokens are padding)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    if batch > 1:
        mask[1, seq - 3 :] = 0
    return {"input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64), "attention_mask": mask}


def decoder_feeds(
    *, batch: int = 2, seq: int = 3, past: int = 4, heads: int = 2, head_dim: int = 8, layers: int = 2,
    vocab: int = 40, seed: int = 0,
) -> dict[str, np.ndarray]:
    """One step with a random past: row 1 has its first 2 cached tokens as (left) padding."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, past + seq), np.int64)
    if batch > 1:
        mask[1, :2] = 0
    feeds = {"input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64), "attention_mask": mask}
    for i in range(layers):
        for role in ("key", "value"):
            feeds[f"past.{i}.{role}"] = rng.standard_normal((batch, heads, past, head_dim)).astype(np.float32)
    return feeds


def session(model: ir.Model | str | Any) -> DecoderSession:
    """A :class:`DecoderSession`; in-memory models run with ORT graph optimizations off."""
    return DecoderSession(runner(model) if isinstance(model, ir.Model) else model)


def decode_side_by_side(
    base: DecoderSession,
    other: DecoderSession,
    steps: int = 12,
    prompts: Sequence[Sequence[int]] = PROMPTS,
) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]]:
    """Greedy decode of the left-padded prompts, both models fed the same tokens (the base model's choice).

    Yields ``(base logits, other logits, base state, other state, attention mask)`` after each step; the
    states are what each model returned (the next step's ``past``).
    """
    ids, mask, pos = left_pad(prompts, 0)
    batch = len(prompts)
    sa, sb = base.empty_state(batch), other.empty_state(batch)
    for _ in range(steps):
        la, sa = base.step(ids, mask, pos, sa)
        lb, sb = other.step(ids, mask, pos, sb)
        yield la, lb, sa, sb, mask
        ids = la[:, -1:].argmax(-1).astype(np.int64)
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], 1)
        pos = pos[:, -1:] + 1
