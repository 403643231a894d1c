"""Structure discovery on every sample at both opsets, the pattern fallback, and refusals."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest

from parekit.analysis import discover
from parekit.errors import StructureError

# name: (kind, layers, hidden, heads, kv_heads, head_dim, has_kv_cache)
EXPECTED = {
    "minilm": ("encoder", 6, 384, 12, 12, 32, False),
    "vit": ("encoder", 12, 768, 12, 12, 64, False),
    "gpt2-tiny": ("decoder", 2, 64, 4, 4, 16, True),
    "llama-tiny": ("decoder", 2, 64, 4, 2, 16, True),
    "smollm2": ("decoder", 30, 576, 9, 3, 64, True),
}


# Discovery itself takes ~0.5 s on SmolLM2's 30 layers; the minutes these cases took were its first
# export (torch), which the first test to ask for the sample pays. Exporting SmolLM2 is slow.
_NAMES = [pytest.param(n, marks=pytest.mark.slow) if n == "smollm2" else n for n in EXPECTED]


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("name", _NAMES)
def test_counts_on_every_sample(load_sample, name, opset):
    mm = discover(load_sample(name, opset))
    kind, layers, hidden, heads, kv_heads, head_dim, cache = EXPECTED[name]
    assert (mm.kind, mm.num_layers, mm.hidden_size) == (kind, layers, hidden)
    assert (mm.num_heads, mm.num_kv_heads, mm.head_dim) == (heads, kv_heads, head_dim)
    assert mm.has_kv_cache is cache
    assert mm.opset == opset
    # The residual stream is a chain from the embedding to the final output.
    assert mm.layers[0].input == mm.embedding_output
    assert mm.layers[-1].output == mm.final_output
    for prev, nxt in zip(mm.layers, mm.layers[1:]):
        assert prev.output == nxt.input
    for lm in mm.layers:
        att = lm.attention
        if opset == 18:
            assert att.form == "decomposed" and att.probs and att.scores
        else:
            assert att.form == "attention-op" and att.probs is None
        assert len(lm.norms) == 2
        assert lm.mlp is not None and lm.mlp.down
        if cache:
            assert att.past_key == f"past.{lm.index}.key" and att.present_value == f"present.{lm.index}.value"
    if name == "vit":
        assert mm.inputs == {"pixel_values": "pixel_values"} and mm.batch_dim == "batch"
    else:
        assert mm.inputs["input_ids"] == "input_ids" and mm.inputs["attention_mask"] == "attention_mask"
        assert (mm.batch_dim, mm.seq_dim) == ("batch", "seq")
    if name in ("llama-tiny", "smollm2"):
        assert mm.inputs["position_ids"] == "position_ids"
        assert all(lm.mlp.gate for lm in mm.layers)


@pytest.mark.parametrize("name", ["minilm", "vit", "gpt2-tiny", "llama-tiny"])
@pytest.mark.parametrize("opset", [18, 23])
def test_pattern_fallback_matches_scopes(load_sample, name, opset):
    """Without exporter metadata the same residual stream and attention sites are found."""
    model = load_sample(name, opset)
    by_scope = discover(model)
    for node in model.graph:
        node.metadata_props.clear()
    by_pattern = discover(model)
    assert [(lm.input, lm.output) for lm in by_pattern.layers] == [(lm.input, lm.output) for lm in by_scope.layers]
    assert [lm.attention for lm in by_pattern.layers] == [lm.attention for lm in by_scope.layers]
    assert (by_pattern.num_heads, by_pattern.num_kv_heads) == (by_scope.num_heads, by_scope.num_kv_heads)


def test_non_transformer_is_refused_with_what_was_found():
    proto = onnx.parser.parse_model(
        """
        <ir_version: 10, opset_import: ["" : 18]>
        mlp (float[N, 8] x) => (float[N, 8] y) {
            h = Relu(x)
            y = Add(h, x)
        }
        """
    )
    with pytest.raises(StructureError) as info:
        discover(ir.from_proto(proto))
    message = str(info.value)
    assert "no transformer blocks found" in message
    assert "Relu" in message  # says what it found


def test_map_is_json_ready(load_sample):
    import json

    d = discover(load_sample("llama-tiny", 23)).to_dict()
    text = json.dumps(d)
    assert d["num_layers"] == 2 and '"present.1.key"' in text


def _capture_hf(torch, module_factory, kwargs, opset):
    from parekit.frontends.torch_capture import capture

    torch.manual_seed(0)
    dyn = {k: {0: "batch", 1: "seq"} for k in kwargs}
    return capture(module_factory(), (), kwargs, dynamic_shapes=dyn, opset=opset)


@pytest.mark.slow  # exports a Llama with torch on every run (~10-50 s)
@pytest.mark.parametrize("opset", [18, 23])
def test_grouped_kv_heads_without_a_cache_and_unnamed_nodes(torch, opset):
    """GQA heads are read from the key path when there is no past input; unnamed nodes get names."""
    import transformers as tf

    cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=500)

    class NoCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = tf.LlamaForCausalLM(cfg).eval()

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    ids = torch.randint(0, 500, (2, 5))
    model = _capture_hf(torch, NoCache, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, opset)
    for node in model.graph:
        node.name = None
    mm = discover(model)
    assert (mm.kind, mm.num_layers, mm.num_heads, mm.num_kv_heads, mm.head_dim) == ("decoder", 2, 4, 2, 16)
    assert not mm.has_kv_cache
    assert all(node.name for node in model.graph)


@pytest.mark.slow  # exports a BERT with torch on every run (~10-20 s)
def test_token_type_ids_are_not_positions(torch):
    import transformers as tf

    cfg = tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        vocab_size=500)
    ids = torch.randint(0, 500, (2, 5))
    kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    mm = discover(_capture_hf(torch, lambda: tf.BertModel(cfg).eval(), kwargs, 18))
    assert mm.inputs == {"input_ids": "input_ids", "token_type_ids": "token_type_ids", "attention_mask": "attention_mask"}
    assert (mm.kind, mm.num_layers, mm.num_heads) == ("encoder", 2, 4)
