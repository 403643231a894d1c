"""Per-token exits with KV fill on the tiny decoders: the fill against a torch oracle, D³ at α = 1 and a gate
that never fires against the full model, fewer layers with a complete cache, bad policies."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from parekit.errors import OptionError
from parekit.runtime import DecoderSession, generate
from parekit.runtime.evaluate import evaluate_perplexity
from parekit.runtime.exit_decode import ExitSession, exit_generate, margin, parse_policy

PROMPT = [11, 42, 7, 300, 5, 99, 123, 8, 64]
DECODERS = ["llama-tiny", "gpt2-tiny"]


@pytest.fixture(scope="module")
def path():
    from parekit.frontends import zoo

    return lambda name, opset=18: zoo.export_sample(name, opset=opset)


def _decode_one(session, prompt, token):
    """Prefill ``prompt`` (full model), then one decode step feeding ``token``; the states after each."""
    n = len(prompt)
    ids = np.array([prompt], np.int64)
    _, prefilled = session.step(ids, np.ones((1, n), np.int64), np.arange(n)[None], session.empty_state(1))
    logits, state = session.step(
        np.array([[token]], np.int64), np.ones((1, n + 1), np.int64), np.array([[n]], np.int64), prefilled
    )
    return prefilled, logits, state


def _torch_kv(name, tokens):
    """The oracle: layer 1's K/V of the last token computed in torch from layer 0's output (the exit)."""
    import torch

    from parekit.frontends import sample_models

    build = sample_models.build_llama_tiny if name == "llama-tiny" else sample_models.build_gpt2_tiny
    lm = build()[0].lm
    ids = torch.tensor([tokens])
    with torch.no_grad():
        hidden = lm(input_ids=ids, output_hidden_states=True).hidden_states[1][:, -1:]  # leaving block 0
        if name == "llama-tiny":
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

            layer = lm.model.layers[1]
            x = layer.input_layernorm(hidden)
            k = layer.self_attn.k_proj(x).view(1, 1, 2, 16).transpose(1, 2)
            v = layer.self_attn.v_proj(x).view(1, 1, 2, 16).transpose(1, 2)
            cos, sin = lm.model.rotary_emb(x, torch.tensor([[len(tokens) - 1]]))
            k, _ = apply_rotary_pos_emb(k, k, cos, sin)
        else:
            block = lm.transformer.h[1]
            _, k, v = block.attn.c_attn(block.ln_1(hidden)).split(64, dim=2)
            k, v = (t.view(1, 1, 4, 16).transpose(1, 2) for t in (k, v))
    return k.numpy(), v.numpy()


@pytest.mark.parametrize("name", DECODERS)
def test_kv_fill_equals_torch_oracle(path, torch, name):
    exits = ExitSession(path(name), "d3:0.01", every=1)  # decode steps exit after layer 0
    prefilled, _, state = _decode_one(exits, PROMPT, 77)
    assert exits.depths == [1]
    key, value = _torch_kv(name, [*PROMPT, 77])
    np.testing.assert_allclose(state["past.1.key"][:, :, -1:], key, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state["past.1.value"][:, :, -1:], value, rtol=1e-4, atol=1e-5)
    for k in prefilled:  # the earlier entries are the prefill's, every layer grew by one
        np.testing.assert_array_equal(state[k][:, :, :-1], prefilled[k])
    # the layer that ran in full has the full model's K/V (with 2 layers the one filled layer reads the
    # exited stream in the full model too: its K/V are the full model's; see the 4-layer test)
    _, _, full = _decode_one(DecoderSession(path(name)), PROMPT, 77)
    np.testing.assert_allclose(state["past.0.key"], full["past.0.key"], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def llama4(tmp_path_factory, samples_extra):
    """A seeded 4-layer llama-tiny (exported here, once per run: about 14 s) and its torch model."""
    import torch
    import transformers as tf

    from parekit.frontends import sample_models
    from parekit.frontends.torch_capture import capture

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1000, max_position_embeddings=512)
    lm = tf.LlamaForCausalLM(cfg).eval()
    module, kwargs, dyn, names_in, names_out = sample_models._decoder_wrapper(lm, 4, 2, 16, 1000)
    past = kwargs.pop("__past__")
    args = (kwargs.pop("input_ids"), kwargs.pop("attention_mask"), kwargs.pop("position_ids"), *past)
    model = capture(module, args, kwargs, dynamic_shapes=dyn, input_names=names_in, output_names=names_out,
                    opset=18)
    dest = tmp_path_factory.mktemp("llama4") / "model.onnx"
    import onnx_ir as ir

    ir.save(model, dest)
    return dest, lm


@pytest.mark.parametrize("exit_after", [0, 1])
def test_kv_fill_of_every_later_layer_equals_torch_oracle(llama4, exit_after):
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    path4, lm = llama4
    exits = ExitSession(path4, f"d3:0.01:{exit_after + 1}", every=1)
    _, _, state = _decode_one(exits, PROMPT, 77)
    _, _, full = _decode_one(DecoderSession(path4), PROMPT, 77)
    assert exits.depths == [exit_after + 1]
    tokens = torch.tensor([[*PROMPT, 77]])
    with torch.no_grad():
        hidden = lm(input_ids=tokens, output_hidden_states=True).hidden_states[exit_after + 1][:, -1:]
        for j in range(exit_after + 1, 4):  # every later layer: its norm + K/V (+ rotary) of the exited state
            layer = lm.model.layers[j]
            x = layer.input_layernorm(hidden)
            k = layer.self_attn.k_proj(x).view(1, 1, 2, 16).transpose(1, 2)
            v = layer.self_attn.v_proj(x).view(1, 1, 2, 16).transpose(1, 2)
            cos, sin = lm.model.rotary_emb(x, torch.tensor([[len(PROMPT)]]))
            k, _ = apply_rotary_pos_emb(k, k, cos, sin)
            np.testing.assert_allclose(state[f"past.{j}.key"][:, :, -1:], k.numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(state[f"past.{j}.value"][:, :, -1:], v.numpy(), rtol=1e-4, atol=1e-5)
            if j >= exit_after + 2:  # the full model's layer j reads another stream: the fill differs
                assert not np.allclose(state[f"past.{j}.value"][:, :, -1], full[f"past.{j}.value"][:, :, -1])
    for j in range(exit_after + 1):
        np.testing.assert_allclose(state[f"past.{j}.key"], full[f"past.{j}.key"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "opset"), [("llama-tiny", 18), ("gpt2-tiny", 18), ("llama-tiny", 23)])
@pytest.mark.parametrize("policy", ["d3:1", "full", "gate:1.5"])
def test_policies_that_never_exit_equal_the_full_model(path, name, opset, policy):
    full = DecoderSession(path(name, opset))
    exits = ExitSession(path(name, opset), policy, every=1)
    plain = generate(full, [PROMPT], 16)
    got = exit_generate(exits, PROMPT, 16)
    assert got.tokens == plain.tokens
    assert got.depths == [2] * 15 and got.mean_depth == 2
    tokens = list(np.random.default_rng(0).integers(0, 1000, 40))
    ref, ppl = evaluate_perplexity([full, exits], tokens, prefill=8)
    assert math.isclose(ppl.ppl_decode, ref.ppl_decode, rel_tol=1e-5)
    assert ppl.top1_agreement_decode == 1.0


@pytest.mark.parametrize("name", DECODERS)
def test_d3_runs_fewer_layers_with_a_complete_cache(path, name):
    exits = ExitSession(path(name), "d3:0.9", every=1)  # L = 2: floor(2 * 0.9^i) = 1 from i = 1 on
    full = exit_generate(ExitSession(path(name), "full", every=1), PROMPT, 12)
    n = len(PROMPT)
    ids = np.array([PROMPT], np.int64)
    logits, state = exits.step(ids, np.ones((1, n), np.int64), np.arange(n)[None], exits.empty_state(1))
    tokens = [int(logits[0, -1].argmax())]
    for i in range(1, 12):
        before = {k: a.shape[2] for k, a in state.items()}
        pos = np.array([[n + i - 1]], np.int64)
        logits, state = exits.step(np.array([[tokens[-1]]]), np.ones((1, n + i), np.int64), pos, state)
        assert {k: a.shape[2] for k, a in state.items()} == {k: v + 1 for k, v in before.items()}
        tokens.append(int(logits[0, -1].argmax()))
    assert exits.depths == [1] * 11
    assert tokens[0] == full.tokens[0][0]  # the prefill ran the full model
    assert exit_generate(exits, PROMPT, 12).tokens[0] == tokens  # the loop is this loop


def test_d3_schedule_rounds_up_to_a_cut(path):
    policy = parse_policy("d3:0.5:1")
    assert [policy.schedule(i, 30) for i in range(5)] == [30, 15, 7, 3, 1]
    assert parse_policy("d3:0.5:4").schedule(9, 30) == 4
    exits = ExitSession(path("llama-tiny"), "d3:0.6", cuts=[])  # no exit before the last layer
    assert exits.pieces.cuts == (1,) and exit_generate(exits, PROMPT, 4).depths == [2, 2, 2]


def test_gate_exits_where_the_margin_passes(path):
    exits = ExitSession(path("llama-tiny"), "gate:0", every=1)
    assert exit_generate(exits, PROMPT, 6).depths == [1] * 5
    assert exit_generate(ExitSession(path("llama-tiny"), "gate:0:2", every=1), PROMPT, 4).depths == [2] * 3
    assert margin(np.array([0.0, 0.0])) == 0.0
    assert margin(np.array([10.0, 0.0, 0.0])) > 0.99
    assert margin(np.array([np.nan, 1.0])) == -math.inf


def test_pieces_share_weights_and_say_what_they_are(path):
    from parekit.segments.kv_fill import KV_FILL_KEY, SHARE_MIN_BYTES

    exits = ExitSession(path("llama-tiny"), "full", every=1)
    kinds = []
    for piece in exits.pieces.pieces:
        meta = json.loads({p.key: p.value for p in piece.proto.metadata_props}[KV_FILL_KEY])
        assert meta["form"] == "kv-fill" and meta["cuts"] == [0, 1]
        kinds.append((meta["piece"], meta.get("layers_run", meta.get("layers_filled"))))
        for init in piece.proto.graph.initializer:
            assert init.data_location == onnx.TensorProto.EXTERNAL or len(init.raw_data) < SHARE_MIN_BYTES
    assert kinds == [("prelude", []), ("stage", [0]), ("stage", [1]), ("fill", [1]), ("head", [])]
    # the fill holds no attention or MLP of layer 1: its outputs are the K/V only, and it is small
    fill = exits.pieces.fills[0]
    assert fill.outputs == ("present.1.key", "present.1.value")
    assert len(fill.proto.graph.node) < len(exits.pieces.stages[1].proto.graph.node) / 2


@pytest.mark.parametrize(
    "text", ["d3", "d3:0", "d3:1.5", "d3:x", "gate:nan", "foo:1", "d3:0.5:0", "gate:1:2:3", "\x1b[31mred:1"]
)
def test_bad_policies_are_one_line_errors(text):
    with pytest.raises(OptionError) as err:
        parse_policy(text)
    message = str(err.value)
    assert "\n" not in message and "\x1b" not in message and message.startswith("--exit")


def test_bad_cuts_and_batches(path):
    from parekit.errors import DataError

    with pytest.raises(OptionError, match="every 3 layers"):
        ExitSession(path("llama-tiny"), "full", every=3)
    with pytest.raises(OptionError, match="out of range"):
        ExitSession(path("llama-tiny"), "full", cuts=[5])
    exits = ExitSession(path("llama-tiny"), "full")
    with pytest.raises(DataError, match="batch 1"):
        exits.step(np.zeros((2, 3), np.int64), np.ones((2, 3), np.int64), np.zeros((2, 3), np.int64),
                   exits.empty_state(2))


def test_cli_generate_and_eval_with_exits(run_cli, path):
    model = path("llama-tiny")
    plain = run_cli("generate", model, "--prompt", "Hello", "--max-new-tokens", "8")
    same = run_cli("generate", model, "--prompt", "Hello", "--max-new-tokens", "8", "--exit", "d3:1", "--exit-every", "1")
    assert same.stdout == plain.stdout and "2.00 of 2 layers per decode step" in same.stderr
    fewer = run_cli("generate", model, "--prompt", "Hello", "--max-new-tokens", "8", "--exit", "gate:0", "--exit-every", "1")
    assert "1.00 of 2 layers per decode step" in fewer.stderr
    res = run_cli("eval", model, "--ctx", "40", "--exit", "d3:1", "--exit", "d3:0.9", "--exit-every", "1", "--json")
    rows = json.loads(res.stdout)["models"]
    assert len(rows) == 3 and math.isclose(rows[1]["ppl_decode"], rows[0]["ppl_decode"], rel_tol=1e-5)
    assert rows[1]["layers_per_step"] == 2 and rows[2]["layers_per_step"] == 1 and "layers_per_step" not in rows[0]
    bad = run_cli("generate", model, "--prompt", "x", "--exit", "d3:\x1b[2J", code=2)
    assert "--exit" in bad.output and "\x1b" not in bad.output and "Traceback" not in bad.output
    both = run_cli("generate", model, "--prompt", "x", "--exit", "d3:1", "--speculate", "ngram", code=2)
    assert "not both" in both.output
    assert "--chunk 1" in run_cli("eval", model, "--ctx", "40", "--exit", "d3:1", "--chunk", "4", code=2).output


def test_the_models_own_exits_are_the_cuts_and_their_adapters_give_the_logits(path, run_cli, tmp_path):
    from parekit.backends.ort import OrtRunner
    from parekit.passes.exit_adapter import Adapter, save_adapters

    rng = np.random.default_rng(3)
    adapter = {"w": rng.standard_normal((64, 64)) * 0.3, "b": rng.standard_normal(64) * 0.3}
    save_adapters(tmp_path / "a.npz", [Adapter(0, "linear", {k: v.astype(np.float32) for k, v in adapter.items()}, {})])
    model = tmp_path / "exits.onnx"
    pipeline = f'early-exit{{layers=[0],head=adapter,adapter="{tmp_path / "a.npz"}",threshold=2}}'
    run_cli("optimize", path("llama-tiny"), "--passes", pipeline, "-o", model)
    exits = ExitSession(model, "gate:0")  # cuts: the model's exits
    assert exits.pieces.cuts == (0, 1) and set(exits.pieces.exit_heads) == {0}
    prefilled, logits, _ = _decode_one(exits, PROMPT, 77)
    assert exits.depths == [1]
    n = len(PROMPT)
    feeds = {"input_ids": np.array([[77]]), "attention_mask": np.ones((1, n + 1), np.int64),
             "position_ids": np.array([[n]]), **prefilled}
    want = OrtRunner(model).run(feeds, ["logits.exit0", "logits"])
    np.testing.assert_allclose(logits, want["logits.exit0"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits, want["logits"], atol=1e-3)
    lens = ExitSession(path("llama-tiny"), "gate:0", every=1)  # the logit lens at the same cut differs
    assert not np.allclose(_decode_one(lens, PROMPT, 77)[1], logits, atol=1e-3)


def test_one_global_thread_pool_gives_the_same_tokens(path):
    import subprocess
    import sys

    model = path("llama-tiny")
    want = exit_generate(ExitSession(model, "d3:0.9", every=1), PROMPT, 8).tokens[0]
    code = (
        "import sys; from parekit.runtime.exit_decode import ExitSession, exit_generate, use_global_threads\n"
        "use_global_threads(1); use_global_threads(1)\n"  # the second call is a no-op
        f"s = ExitSession(sys.argv[1], 'd3:0.9', every=1); print(exit_generate(s, {PROMPT}, 8).tokens[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.strip() == str(want)


@pytest.mark.parametrize(("threshold", "depth"), [(0.0, 1), (2.0, 2)])
def test_calibrated_gate_uses_the_models_own_thresholds(path, run_cli, tmp_path, threshold, depth):
    """``gate:calibrated`` reads each exit's threshold from the early-exit metadata: 0 always exits at the
    exit, 2 never does (the full model's tokens)."""
    model = tmp_path / "gated.onnx"
    run_cli("optimize", path("llama-tiny"), "--passes", f"early-exit{{layers=[0],threshold={threshold}}}", "-o", model)
    exits = ExitSession(model, "gate:calibrated")
    got = exit_generate(exits, PROMPT, 6)
    assert got.depths == [depth] * 5
    fixed = exit_generate(ExitSession(model, f"gate:{threshold}"), PROMPT, 6)
    assert got.tokens == fixed.tokens
    if depth == 2:
        assert got.tokens == generate(DecoderSession(path("llama-tiny")), [PROMPT], 6).tokens


def test_calibrated_gate_needs_a_gated_model(path):
    with pytest.raises(OptionError, match="no early-exit gate"):
        ExitSession(path("llama-tiny"), "gate:calibrated")
    session = ExitSession(path("llama-tiny"), "full")
    with pytest.raises(OptionError, match="no early-exit gate"):
        session.with_policy("gate:calibrated:1")
    for bad in ("gate:calibrated:0", "gate:calibrated:x", "gate:calibrated:1:2"):
        with pytest.raises(OptionError):
            parse_policy(bad)
    assert parse_policy("gate:calibrated:3").min_layers == 3
