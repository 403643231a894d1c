"""Real weights: SmolLM2-135M, `parekit generate --speculate ngram` prints what plain greedy prints.

Bounded in time (≈ 30–60 s on 2 shared cores): 3 prose prompts × 64 new tokens, each twice.
"""

from __future__ import annotations

import re

import pytest

from parekit.data import prose_prompts

pytestmark = pytest.mark.slow  # SmolLM2-135M real weights


def test_ngram_speculation_prints_the_plain_greedy_text(sample_path, run_cli):
    path = sample_path("smollm2", 23)
    accepted = 0
    for prompt in prose_prompts(3):
        args = ("generate", path, "--prompt", prompt, "--max-new-tokens", 64)
        plain = run_cli(*args)
        spec = run_cli(*args, "--speculate", "ngram", "--draft-tokens", 8)
        assert spec.stdout == plain.stdout
        assert len(plain.stdout) > len(prompt) + 100  # 64 tokens of text were printed
        m = re.search(r"(\d+)/(\d+) drafts accepted", spec.stderr)
        assert m is not None, spec.stderr
        accepted += int(m.group(1))
    assert accepted > 0, "no draft was accepted: verification was not exercised"
