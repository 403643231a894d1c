"""kv-window: structure, identity configuration, parity with a host-side (NumPy) windowing oracle, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.errors import OptionError, PassNotApplicableError
from parekit.ops.kv_window import KV_WINDOW, keep_window_reference
from parekit.ops.kv_window_mask import KV_WINDOW_MASK
from parekit.runtime import DecoderSession, generate

from .harness import PROMPTS, decode_side_by_side, op_nodes
from .harness import TINY_DECODERS as TINY
from .harness import optimize as _optimize


@pytest.mark.parametrize(("name", "opset"), TINY)
def test_structure(load_sample, name, opset):
    model = load_sample(name, opset)
    inputs = [v.name for v in model.graph.inputs]
    outputs = [v.name for v in model.graph.outputs]
    result = _optimize(model, "kv-window{sink=2,window=6}")
    m = result.model
    assert [v.name for v in m.graph.inputs] == inputs and [v.name for v in m.graph.outputs] == outputs
    windows = op_nodes(m, KV_WINDOW)
    masks = op_nodes(m, KV_WINDOW_MASK)
    assert len(windows) == 4 and len(masks) == 1
    for out in m.graph.outputs[1:]:  # every present.* comes out of a KvWindow that reads the Concat
        producer = out.producer()
        assert producer in windows
        assert producer.inputs[0].producer().op_type == "Concat"
        assert producer.inputs[0].name == out.name + ".full"
        # attention still reads the full Concat output (past + new tokens)
        assert any(user is not producer for user, _ in producer.inputs[0].uses())
    mask = next(v for v in m.graph.inputs if v.name == "attention_mask")
    readers = {user.op_type for user, _ in mask.uses()}
    assert readers == {"Shape", "Slice"}, "only the mask mapping reads the raw mask"
    (report,) = result.reports
    assert report.modified and [s["layer"] for s in report.sites] == [0, 1]
    assert report.extra["max_cached_tokens"] == 8
    assert m.metadata_props["parekit.pipeline"] == "kv-window{sink=2,window=6}"
    assert all(n.metadata_props.get("parekit.pass") == "kv-window" for n in windows + masks)


@pytest.mark.parametrize(("name", "opset"), TINY)
def test_identity_configuration_matches_original(load_sample, sample_path, name, opset):
    model = _optimize(load_sample(name, opset), "kv-window{sink=4,window=64}").model
    base, win = DecoderSession(sample_path(name, opset)), DecoderSession(model)
    # 11 prompt tokens + 12 steps < 68: nothing is evicted
    for step, (la, lb, sa, sb, _) in enumerate(decode_side_by_side(base, win, 12)):
        np.testing.assert_allclose(lb, la, atol=1e-5, rtol=1e-5, err_msg=f"step {step}")
        for k in sa:
            np.testing.assert_array_equal(sb[k], sa[k])


def _oracle_step_logits(base: DecoderSession, tokens: np.ndarray, prefill: int, sink: int, window: int):
    """StreamingLLM on the host: the unmodified model, with the cache and its mask windowed in NumPy."""
    batch, n = tokens.shape
    state = base.empty_state(batch)
    kept_mask = np.zeros((batch, 0), np.int64)
    bounds = [(0, prefill)] + [(i, i + 1) for i in range(prefill, n)]
    out = []
    for lo, hi in bounds:
        new_mask = np.ones((batch, hi - lo), np.int64)
        new_mask[1, : max(0, 3 - lo)] = 0  # row 1: its first 3 tokens are padding
        mask = np.concatenate([kept_mask, new_mask], 1)
        pos = np.maximum(np.arange(lo, hi)[None, :] - np.array([[0], [3]]), 0).astype(np.int64)
        logits, state = base.step(tokens[:, lo:hi], mask, pos, state)
        out.append(logits)
        state = {k: keep_window_reference(v, 2, sink, window) for k, v in state.items()}
        kept_mask = keep_window_reference(mask, 1, sink, window)
    return out


@pytest.mark.parametrize(("name", "opset"), TINY)
@pytest.mark.parametrize(("sink", "window"), [(2, 5), (0, 4)])
def test_matches_host_side_window_oracle(load_sample, sample_path, name, opset, sink, window):
    model = _optimize(load_sample(name, opset), f"kv-window{{sink={sink},window={window}}}").model
    base, win = DecoderSession(sample_path(name, opset)), DecoderSession(model)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 1000, (2, 24)).astype(np.int64)
    expected = _oracle_step_logits(base, tokens, 6, sink, window)
    state = win.empty_state(2)
    full_mask = np.zeros((2, 0), np.int64)
    bounds = [(0, 6)] + [(i, i + 1) for i in range(6, 24)]
    for (lo, hi), want in zip(bounds, expected, strict=True):
        new_mask = np.ones((2, hi - lo), np.int64)
        new_mask[1, : max(0, 3 - lo)] = 0
        full_mask = np.concatenate([full_mask, new_mask], 1)  # the runtime passes ALL tokens seen
        pos = np.maximum(np.arange(lo, hi)[None, :] - np.array([[0], [3]]), 0).astype(np.int64)
        got, state = win.step(tokens[:, lo:hi], full_mask, pos, state)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=f"tokens {lo}:{hi}")
        assert all(v.shape[2] == min(hi, sink + window) for v in state.values())
    # and it is a real change: the unmodified model disagrees once tokens are evicted
    plain, _ = base.step(
        tokens, np.ones((2, 24), np.int64), np.arange(24)[None].repeat(2, 0), base.empty_state(2)
    )
    assert not np.allclose(plain[0, -1], expected[-1][0, -1], atol=1e-3)


def test_generation_keeps_the_cache_bounded(load_sample):
    model = _optimize(load_sample("llama-tiny", 23), "kv-window{sink=1,window=3}").model
    result = generate(DecoderSession(model), PROMPTS, 10)
    assert result.kv_bytes == 2 * 2 * 2 * 2 * 4 * 16 * 4  # batch 2, 2 layers, K+V, 2 heads, 4 tokens, d 16


def test_refuses_encoders(load_sample):
    with pytest.raises(PassNotApplicableError, match="kv-window: the model is an encoder"):
        _optimize(load_sample("minilm", 18), "kv-window{window=8}")


def test_option_bounds(load_sample):
    with pytest.raises(OptionError, match="window"):
        _optimize(load_sample("llama-tiny", 18), "kv-window{window=0}")
    with pytest.raises(OptionError, match="sink"):
        _optimize(load_sample("llama-tiny", 18), "kv-window{sink=-1}")
