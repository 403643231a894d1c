"""Model drafters (exit:L, skip:[...], skip:auto): greedy output == plain greedy output, token for token."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.errors import DataError, OptionError
from parekit.runtime import DecoderSession, SamplingOptions, generate
from parekit.runtime.drafters import make_drafter
from parekit.runtime.model_drafters import LayerDrafter, SkipSearch, search_skip_set
from parekit.runtime.sampling import Sampler
from parekit.runtime.speculative import DraftView, speculative_generate
from parekit.runtime.tokenizer import ByteTokenizer

PROMPTS = [[11, 42, 7, 300, 5, 99, 123, 8, 64], [17, 2, 250], [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]]
SPECS = ["exit:0", "skip:[1]", "skip:[0]"]  # the tiny samples have 2 layers
KV_PIPELINES = [
    "kv-window{sink=2,window=1024}",  # never reaches its bound: the state is cropped all along
    "kv-window{sink=2,window=10}",  # evicts: the drafts read an evicted cache (still only drafts)
    "kv-quant{bits=8,group=4,residual=8}",  # other state names: the drafter reads them all
]


@pytest.fixture(scope="module")
def model(sample_path, tmp_path_factory):
    """``model(name, pipeline="") -> (layer variants, session)`` of a sample, rewritten by ``pipeline``."""
    from parekit.backends.save import save_model
    from parekit.frontends.onnx_file import load_model
    from parekit.passes import PassContext, run_pipeline
    from parekit.passes.layer_variants import LayerVariants

    cache: dict[tuple[str, str], tuple[object, DecoderSession]] = {}

    def get(name: str = "llama-tiny", pipeline: str = "") -> tuple[object, DecoderSession]:
        if (name, pipeline) not in cache:
            path = sample_path(name, 18)
            if pipeline:
                rewritten = run_pipeline(load_model(path), pipeline, PassContext()).model
                path = save_model(rewritten, tmp_path_factory.mktemp("kv") / "m.onnx")
            cache[name, pipeline] = (LayerVariants(lambda p=path: load_model(p)), DecoderSession(path))
        return cache[name, pipeline]

    return get


def _check_greedy(session, drafter, new=40, k=4):
    accepted = drafted = 0
    for prompt in PROMPTS:
        plain = generate(session, [prompt], new).tokens[0]
        spec = speculative_generate(session, [prompt], new, drafter, k=k)
        assert spec.tokens[0] == plain, f"{drafter.name}: prompt {prompt}"
        accepted += spec.stats.accepted
        drafted += spec.stats.drafted
    return accepted, drafted


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("spec", SPECS)
def test_greedy_equals_plain(model, name, spec):
    variants, s = model(name)
    drafter = make_drafter(spec, s, variants=variants)
    assert drafter.name == spec
    accepted, drafted = _check_greedy(s, drafter)
    assert accepted > 0, "no draft was ever accepted: verification was not exercised"


def test_some_drafts_are_rejected(model):
    variants, s = model()
    accepted, drafted = _check_greedy(s, make_drafter("skip:[0]", s, variants=variants))
    assert 0 < accepted < drafted


@pytest.mark.parametrize("pipeline", KV_PIPELINES)
@pytest.mark.parametrize("spec", ["exit:0", "skip:[0]"])
def test_greedy_equals_plain_under_kv_passes(model, pipeline, spec):
    variants, s = model("llama-tiny", pipeline)
    _, drafted = _check_greedy(s, make_drafter(spec, s, variants=variants))
    assert drafted > 0


def _median_confidence(drafter: LayerDrafter, prompt: list[int]) -> float:
    """The median top probability of the draft model over a prompt (a threshold some tokens miss)."""
    ids = np.array([prompt], dtype=np.int64)
    logits, _ = drafter.draft.step(ids, np.ones_like(ids), np.arange(len(prompt))[None], drafter.draft.empty_state(1))
    x = logits[0].astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    return float(np.median((p / p.sum(-1, keepdims=True)).max(-1)))


@pytest.mark.parametrize("spec", ["exit:0", "skip:[0]"])
def test_confidence_threshold_is_lossless_and_shortens_drafts(model, spec):
    variants, s = model()
    full = make_drafter(spec, s, variants=variants)
    p = _median_confidence(full, PROMPTS[0])
    adaptive = make_drafter(f"{spec}@{p:.6f}", s, variants=variants)
    assert adaptive.name.startswith(f"{spec}@")
    _, drafted_full = _check_greedy(s, full)
    _, drafted = _check_greedy(s, adaptive)
    assert 0 < drafted < drafted_full


def test_threshold_under_a_kv_pass(model):
    variants, s = model("llama-tiny", KV_PIPELINES[0])
    p = _median_confidence(make_drafter("exit:0", s, variants=variants), PROMPTS[0])
    _check_greedy(s, make_drafter(f"exit:0@{p:.6f}", s, variants=variants))


def _view(session, prompt, sampler):
    ids = np.array([prompt[:-1]], dtype=np.int64)
    _, state = session.step(ids, np.ones_like(ids), np.arange(ids.shape[1])[None], session.empty_state(1))
    return DraftView(prompt, state, session, sampler)


@pytest.mark.parametrize("spec", ["exit:0", "skip:[1]"])
def test_drafting_never_changes_the_state(model, spec):
    variants, s = model()
    view = _view(s, PROMPTS[0], Sampler(SamplingOptions()))
    before = {n: a.copy() for n, a in view.state.items()}
    draft = make_drafter(spec, s, variants=variants).propose(view, 6)
    assert len(draft.tokens) == 6 and draft.probs is None
    assert set(view.state) == set(before)
    for n, a in before.items():
        assert np.array_equal(view.state[n], a), n


def test_sampled_drafts_carry_their_distributions(model):
    variants, s = model()
    sampler = Sampler(SamplingOptions(greedy=False, temperature=1.5, top_k=50, seed=3))
    draft = make_drafter("skip:[1]", s, variants=variants).propose(_view(s, PROMPTS[0], sampler), 5)
    assert draft.probs is not None and draft.probs.shape[0] == len(draft.tokens) == 5
    np.testing.assert_allclose(draft.probs.sum(-1), 1.0, rtol=1e-9)
    assert all(draft.probs[j, t] > 0 for j, t in enumerate(draft.tokens))
    hot = SamplingOptions(greedy=False, temperature=1.5, seed=3)
    drafter = make_drafter("exit:0", s, variants=variants)
    run = speculative_generate(s, PROMPTS, 24, drafter, k=4, sampling=hot)
    assert [len(t) for t in run.tokens] == [24] * 3 and run.stats.drafted > 0
    assert speculative_generate(s, PROMPTS, 24, drafter, k=4, sampling=hot).tokens == run.tokens


def test_sampled_model_drafts_keep_the_models_distribution(model):
    """Chi-square (p = 1e-3) of 3 sampled tokens with skip:[0] drafts against the enumerated exact distribution.

    At temperature 0.02 the draft's top 3 overlap the model's in one token, much likelier in the draft
    than in the model: drafts whose ``probs`` were not the distribution they were drawn from (a uniform
    ``q``, say) are accepted too often and fail the test by far.
    """
    from scipy import stats

    variants, s = model()
    opts = SamplingOptions(greedy=False, temperature=0.02, top_k=3, seed=11)
    dist = Sampler(opts).distribution
    prompt, n = PROMPTS[0], 1500

    def after(seq):
        ids = np.array([[*prompt, *seq]], dtype=np.int64)
        logits, _ = s.step(ids, np.ones_like(ids), np.arange(ids.shape[1])[None], s.empty_state(1))
        return dist(logits[0, -1])

    expected = {}
    p1 = after([])
    for a in np.flatnonzero(p1):
        p2 = after([a])
        for b in np.flatnonzero(p2):
            p3 = after([a, b])
            for c in np.flatnonzero(p3):
                expected[int(a), int(b), int(c)] = p1[a] * p2[b] * p3[c]
    run = speculative_generate(s, [prompt] * n, 3, make_drafter("skip:[0]", s, variants=variants), k=2, sampling=opts)
    counts: dict = {}
    for toks in run.tokens:
        counts[tuple(toks)] = counts.get(tuple(toks), 0) + 1
    assert set(counts) <= set(expected)
    assert 0 < run.stats.accepted < run.stats.drafted
    big = sorted(key for key, q in expected.items() if q * n >= 5)  # the rest pooled in one cell
    observed = [counts.get(key, 0) for key in big] + [n - sum(counts.get(key, 0) for key in big)]
    wanted = [expected[key] * n for key in big] + [n * (1 - sum(expected[key] for key in big))]
    assert stats.chisquare(observed, wanted).pvalue > 1e-3


def test_a_state_without_the_drafts_names_is_refused(model):
    variants, s = model()
    view = _view(s, PROMPTS[0], Sampler(SamplingOptions()))
    drafter = make_drafter("skip:[1]", s, variants=variants)
    with pytest.raises(DataError, match="past.0.key"):
        drafter.propose(DraftView(view.tokens, {}, s, view.sampler), 2)


def test_a_drafter_from_another_model_is_refused(model):
    gpt2, _ = model("gpt2-tiny")
    _, llama = model("llama-tiny")
    with pytest.raises(DataError, match="verifier"):
        make_drafter("skip:[1]", llama, variants=gpt2)


def test_skip_auto_returns_a_valid_set(model):
    variants, s = model()
    sizes = SkipSearch(max_count=1, prompts=1, prompt_tokens=8, new_tokens=6, k=2)
    chosen, log = search_skip_set(variants, s, ByteTokenizer(), sizes)
    assert len(chosen) == 1 and chosen[0] in (0, 1)
    assert log[0][0] == [] and chosen in [c for c, _ in log[1:]]
    drafter = make_drafter("skip:auto:1", s, variants=variants, tokenizer=ByteTokenizer())
    assert drafter.name.startswith("skip:auto=[") and len(drafter.skipped) == 1
    _check_greedy(s, drafter, new=16)


@pytest.mark.parametrize(
    "spec",
    ["exit:1", "exit:7", "exit:x", "exit:", "exit:0@1.5", "exit:0@0", "skip:[2]", "skip:[0,0]", "skip:[0,1]",
     "skip:[]", "skip:[1", "skip:1", "skip:auto:0", "skip:auto:2", "skip:autox", "exit:0@\x1b[31m", "skip:[\x1b]"],
)
def test_bad_specs_are_one_line_option_errors(model, spec):
    variants, s = model()
    with pytest.raises(OptionError) as err:
        make_drafter(spec, s, variants=variants)
    text = str(err.value)
    assert "\n" not in err.value.message and "\x1b" not in text


@pytest.mark.parametrize("spec", ["exit:0", "skip:[1]", "skip:auto"])
def test_model_drafters_need_the_model_file(model, spec):
    _, s = model()
    with pytest.raises(OptionError, match="model file"):
        make_drafter(spec, s)


def test_skip_auto_needs_a_tokenizer(model):
    variants, s = model()
    with pytest.raises(OptionError, match="tokenizer"):
        make_drafter("skip:auto", s, variants=variants)


def test_variants_are_made_only_for_a_model_drafter_that_parsed(model):
    layers, s = model()
    made = []

    def variants():
        made.append(1)
        return layers

    for bad in ("exit:x", "exit:0@2", "medusa"):
        with pytest.raises(OptionError):
            make_drafter(bad, s, variants=variants)
    assert made == []
    assert make_drafter("exit:0", s, variants=variants).name == "exit:0" and made == [1]


def test_cli_generate_speculate_skip(run_cli, sample_path):
    path = sample_path("llama-tiny", 18)
    args = ("generate", path, "--prompt", "The cat sat", "--max-new-tokens", "20")
    plain = run_cli(*args)
    spec = run_cli(*args, "--speculate", "skip:[1]", "--draft-tokens", "4")
    assert spec.stdout == plain.stdout
    assert "speculate skip:[1]" in spec.stderr
    bad = run_cli(*args, "--speculate", "exit:1", code=2)
    assert "exit layer" in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2


@pytest.mark.slow  # SmolLM2-135M real weights: three draft models, 2 prompts x 24 tokens each
def test_smollm2_model_drafters_are_lossless(sample_path):
    from parekit.data import prose_halves
    from parekit.frontends import zoo
    from parekit.frontends.onnx_file import load_model
    from parekit.passes.layer_variants import LayerVariants

    path = sample_path("smollm2", 18)
    s = DecoderSession(path)
    variants = LayerVariants(lambda: load_model(path))
    assert variants.num_layers == 30
    tok = zoo.get_sample("smollm2").tokenizer()
    prompts = [tok.encode(t)[:32] for t in prose_halves()[0][:2]]
    plain = [generate(s, [p], 24).tokens[0] for p in prompts]
    for spec in ("exit:20", "skip:[14,17,25,26]", "skip:[25]@0.5"):
        run = speculative_generate(s, prompts, 24, make_drafter(spec, s, variants=variants), k=4)
        assert run.tokens == plain, spec
        assert run.stats.drafted > 0, spec
