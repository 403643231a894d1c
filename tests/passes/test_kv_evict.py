"""kv-evict: structure, identity configuration (padding included), consistency of the evicted cache, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.errors import OptionError, PassNotApplicableError
from parekit.ops import PAREKIT_DOMAIN
from parekit.ops.attention_probs import ATTENTION_PROBS
from parekit.ops.kv_evict import KV_EVICT_H2O, KV_EVICT_SNAP
from parekit.ops.kv_slot_mask import KV_MASK_REMAP, KV_SLOT_MASK
from parekit.runtime import DecoderSession, left_pad

from .harness import PROMPTS, count_ops, decode_side_by_side
from .harness import TINY_DECODERS as TINY
from .harness import optimize as _optimize

POLICIES = ["h2o", "snapkv"]


@pytest.mark.parametrize(("name", "opset"), TINY)
def test_structure(load_sample, name, opset):
    result = _optimize(load_sample(name, opset), "kv-evict{budget=8,sink=2,recent=2}")
    m = result.model
    inputs = [v.name for v in m.graph.inputs]
    outputs = [v.name for v in m.graph.outputs]
    for i in range(2):
        assert {f"past.{i}.key", f"past.{i}.value", f"past.{i}.score"} <= set(inputs)
        assert {f"present.{i}.key", f"present.{i}.value", f"present.{i}.score"} <= set(outputs)
    ops = (KV_EVICT_H2O, KV_MASK_REMAP, KV_SLOT_MASK, ATTENTION_PROBS)
    want = {KV_EVICT_H2O.op_type: 2, KV_MASK_REMAP.op_type: 1, KV_SLOT_MASK.op_type: 2, ATTENTION_PROBS.op_type: 2 if opset == 23 else 0}
    assert count_ops(m, *ops) == {op.op_type: want[op.op_type] for op in ops}
    assert sum(1 for n in m.graph if n.domain == PAREKIT_DOMAIN) == sum(want.values()), "no other parekit op"
    mask = next(v for v in m.graph.inputs if v.name == "attention_mask")
    assert [KV_MASK_REMAP.matches(user) for user, _ in mask.uses()] == [True]
    for out in m.graph.outputs[1:]:
        assert KV_EVICT_H2O.matches(out.producer())
    (report,) = result.reports
    assert report.extra["group"] == (2 if name == "llama-tiny" else 1) and len(report.sites) == 2


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("name", "opset"), TINY)
def test_identity_configuration_matches_original(load_sample, sample_path, name, opset, policy):
    """budget >= context: every slot kept, left padding included, logits and K/V bit-for-bit close."""
    model = _optimize(
        load_sample(name, opset), f"kv-evict{{budget=64,policy={policy},sink=4,recent=8}}"
    ).model
    base, evict = DecoderSession(sample_path(name, opset)), DecoderSession(model)
    for step, (la, lb, sa, sb, mask) in enumerate(decode_side_by_side(base, evict, 10)):
        np.testing.assert_allclose(lb, la, atol=1e-5, rtol=1e-5, err_msg=f"step {step}")
        for k in sa:
            np.testing.assert_array_equal(sb[k], sa[k])
        pads = (sb["past.0.score"] < 0).any(axis=1)  # padding slots, per row
        np.testing.assert_array_equal(pads, mask == 0)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("name", "opset"), TINY)
def test_evicted_cache_is_what_attention_reads(load_sample, sample_path, name, opset, policy):
    """With eviction, each step equals the unmodified model fed the evicted cache (its mask from the state)."""
    model = _optimize(load_sample(name, opset), f"kv-evict{{budget=8,policy={policy},sink=2,recent=2}}").model
    base, evict = DecoderSession(sample_path(name, opset)), DecoderSession(model)
    ids, mask, pos = left_pad(PROMPTS, 0)  # row 1: 7 padding tokens, all sinks are padding
    state = evict.empty_state(2)
    for step in range(10):
        if step:
            kv = {k: v for k, v in state.items() if not k.endswith(".score")}
            visible = (state["past.0.score"][:, 0] >= 0).astype(
                np.int64
            )  # padding slots agree across heads here
            assert all(
                ((state[f"past.{i}.score"] >= 0) == visible[:, None].astype(bool)).all() for i in range(2)
            )
            want, _ = base.step(ids, np.concatenate([visible, np.ones((2, 1), np.int64)], 1), pos, kv)
        logits, state = evict.step(ids, mask, pos, state)
        if step:
            np.testing.assert_allclose(logits, want, atol=1e-5, rtol=1e-5, err_msg=f"step {step}")
        assert state["past.0.key"].shape[2] == min(mask.shape[1], 8)
        ids = logits[:, -1:].argmax(-1).astype(np.int64)
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], 1)
        pos = pos[:, -1:] + 1
    assert (state["past.1.score"][0] >= 0).all(), "row 0 has no padding"
    assert (state["past.1.score"][1] < 0).sum() == 2 * state["past.1.score"].shape[1], (
        "row 1 keeps its 2 padded sinks"
    )


@pytest.mark.slow
def test_smollm2_structure(load_sample):
    result = _optimize(load_sample("smollm2", 23), "kv-evict{budget=512,policy=snapkv}", verify=False)
    ops = (KV_EVICT_SNAP, ATTENTION_PROBS, KV_SLOT_MASK)
    assert count_ops(result.model, *ops) == {op.op_type: 30 for op in ops}
    slot = next(n for n in result.model.graph if KV_SLOT_MASK.matches(n))
    assert slot.attributes["group"].value == 3  # 9 query heads on 3 KV heads
    assert result.reports[0].extra["kv_heads"] == 3


def test_refusals(load_sample):
    with pytest.raises(PassNotApplicableError, match="kv-evict: the model is an encoder"):
        _optimize(load_sample("minilm", 18), "kv-evict")
    with pytest.raises(OptionError, match="sink \\+ recent"):
        _optimize(load_sample("llama-tiny", 18), "kv-evict{budget=16,sink=8,recent=9}")
    with pytest.raises(OptionError, match="budget"):
        _optimize(load_sample("llama-tiny", 18), "kv-evict{budget=4000}")
    with pytest.raises(OptionError, match="policy"):
        _optimize(load_sample("llama-tiny", 18), "kv-evict{policy=lru}")
