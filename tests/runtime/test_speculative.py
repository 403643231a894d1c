"""Speculative decoding: greedy output == plain greedy output, token for token, for every KV state kind."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.errors import DataError, OptionError
from parekit.runtime import DecoderSession, SamplingOptions, generate
from parekit.runtime.drafters import NgramDrafter, make_drafter
from parekit.runtime.speculative import Draft, speculative_generate

PROMPTS = [[11, 42, 7, 300, 5, 99, 123, 8, 64], [17, 2, 250], [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]]

# (pipeline, does a multi-token step stay append-only for the whole run?)
KV_VARIANTS = [
    ("", True),
    ("kv-window{sink=2,window=1024}", True),  # never reaches its bound: crop all along
    ("kv-window{sink=2,window=10}", False),  # evicts: replayed, then plain steps
    ("kv-evict{policy=h2o,budget=12,sink=2,recent=4}", False),  # scores take the drafts' attention
    ("kv-evict{policy=snapkv,budget=12,sink=2,recent=4}", False),
    ("kv-quant{bits=4,group=4,residual=8,fused=false}", False),  # a group moves into the codes
    ("kv-quant{bits=8,group=4,residual=8}", False),
]


@pytest.fixture(scope="module")
def variant(sample_path, tmp_path_factory):
    from parekit.backends.save import save_model
    from parekit.frontends.onnx_file import load_model
    from parekit.passes import PassContext, run_pipeline

    cache: dict[tuple[str, str, int], DecoderSession] = {}

    def get(pipeline: str, name: str = "llama-tiny", opset: int = 18) -> DecoderSession:
        key = (pipeline, name, opset)
        if key not in cache:
            path = sample_path(name, opset)
            if pipeline:
                model = run_pipeline(load_model(path), pipeline, PassContext()).model
                path = save_model(model, tmp_path_factory.mktemp("kv") / "m.onnx")
            cache[key] = DecoderSession(path)
        return cache[key]

    return get


@pytest.mark.parametrize(("name", "opset"), [("llama-tiny", 18), ("gpt2-tiny", 18), ("llama-tiny", 23)])
def test_greedy_ngram_equals_plain_greedy(variant, name, opset):
    s = variant("", name, opset)
    accepted = 0
    for prompt in PROMPTS:
        plain = generate(s, [prompt], 48).tokens[0]
        spec = speculative_generate(s, [prompt], 48, NgramDrafter(4), k=6)
        assert spec.tokens[0] == plain
        assert spec.stats.replays == 0
        accepted += spec.stats.accepted
    assert accepted > 0, "no draft was ever accepted: the test did not exercise verification"


@pytest.mark.parametrize(("pipeline", "append_only"), KV_VARIANTS)
def test_greedy_equality_under_each_kv_pass(variant, pipeline, append_only):
    s = variant(pipeline)
    spec_drafted = replays = 0
    for prompt in PROMPTS:
        plain = generate(s, [prompt], 40).tokens[0]
        spec = speculative_generate(s, [prompt], 40, NgramDrafter(3), k=4)
        assert spec.tokens[0] == plain, f"{pipeline}: prompt {prompt}"
        spec_drafted += spec.stats.drafted
        replays += spec.stats.replays
    assert spec_drafted > 0
    assert (replays == 0) == append_only


class _Fixed:
    """A drafter that always proposes the same tokens (some wrong): exercises rejection at every depth."""

    name = "fixed"

    def __init__(self, tokens):
        self.tokens = tokens

    def start(self, prompt):
        pass

    def propose(self, view, k):
        return Draft(list(self.tokens[:k]))


def test_wrong_drafts_never_change_the_output(variant):
    s = variant("")
    for prompt in PROMPTS:
        plain = generate(s, [prompt], 30).tokens[0]
        # the plain output's own tokens as drafts at the wrong offsets, plus out-of-pattern ids
        spec = speculative_generate(s, [prompt], 30, _Fixed([*plain[3:9], 1, 2]), k=8)
        assert spec.tokens[0] == plain


def test_eos_and_budget(variant):
    s = variant("")
    plain = generate(s, [PROMPTS[2]], 40).tokens[0]
    eos = plain[5]
    first = plain.index(eos)
    spec = speculative_generate(s, [PROMPTS[2]], 40, NgramDrafter(4), eos_id=eos)
    assert spec.tokens[0] == plain[: first + 1]
    for n in (1, 2, 7):
        assert speculative_generate(s, [PROMPTS[2]], n, NgramDrafter(4)).tokens[0] == plain[:n]


def test_several_prompts_run_one_after_another(variant):
    s = variant("")
    spec = speculative_generate(s, PROMPTS, 20, NgramDrafter(2))
    assert spec.tokens == [generate(s, [p], 20).tokens[0] for p in PROMPTS]
    assert spec.decode_tokens == 3 * 19
    assert spec.stats.produced == spec.decode_tokens


def test_ngram_drafter_lookup():
    from parekit.runtime.speculative import DraftView

    d = NgramDrafter(3)
    d.start([])

    def view(tokens):
        return DraftView(tokens, {}, None, None)  # type: ignore[arg-type]

    # suffix [7, 8] occurred at 2..3, followed by 9, 1
    assert d.propose(view([5, 6, 7, 8, 9, 1, 7, 8]), 4).tokens == [9, 1, 7, 8]
    # the longest suffix wins: [1, 7, 8] -> 4 (latest occurrence of [7, 8] would give 4 too; [5] differs)
    d = NgramDrafter(3)
    assert d.propose(view([1, 7, 8, 4, 2, 7, 8, 5, 1, 7, 8]), 2).tokens == [4, 2]
    assert NgramDrafter(3).propose(view([1, 2, 3, 4]), 4).tokens == []
    # incremental: the index grows with the sequence
    d = NgramDrafter(2)
    assert d.propose(view([1, 2, 3]), 3).tokens == []
    assert d.propose(view([1, 2, 3, 1, 2]), 3).tokens == [3, 1, 2]


def test_drafter_specs(variant):
    s = variant("")
    assert make_drafter("ngram", s).name == "ngram:4"
    assert make_drafter("ngram:6", s).name == "ngram:6"
    for bad in ("ngrams", "ngram:0", "ngram:x", "medusa:3", "ngram:\x1b[31m"):
        with pytest.raises(OptionError) as err:
            make_drafter(bad, s)
        assert "\x1b" not in str(err.value)
    for model_drafter in ("exit:20", "skip:[3]"):  # well-formed, but they need the model's layer variants
        with pytest.raises(OptionError, match="variants|model"):
            make_drafter(model_drafter, s)


def test_bad_arguments(variant):
    s = variant("")
    with pytest.raises(DataError):
        speculative_generate(s, [[1]], 0, NgramDrafter())
    with pytest.raises(DataError):
        speculative_generate(s, [[1]], 4, NgramDrafter(), k=0)
    with pytest.raises(DataError):
        speculative_generate(s, [[]], 4, NgramDrafter())


def test_seeded_sampling_is_reproducible(variant):
    s = variant("")
    hot = SamplingOptions(greedy=False, temperature=2.0, seed=5)
    a = speculative_generate(s, PROMPTS, 24, NgramDrafter(2), sampling=hot).tokens
    assert speculative_generate(s, PROMPTS, 24, NgramDrafter(2), sampling=hot).tokens == a
    assert np.all([len(t) == 24 for t in a])
