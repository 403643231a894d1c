"""``parekit generate --speculate DRAFTER``: lossless self-speculative decoding from the command line.

    prompts ─► speculative_generate(session, drafter) ─► text (== plain greedy), then one stats line:
    decode tokens/s, acceptance, draft tokens accepted per verify step, draft / verify time shares

Model drafters (exit:L, skip:[...], skip:auto) are derived from MODEL's file by drop-layers; skip:auto
encodes its calibration prompts with the same tokenizer as the prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from parekit.cli.common import safe

__all__ = ["MAX_DRAFT_TOKENS", "build_drafter", "run_speculative", "speculate_options"]

MAX_DRAFT_TOKENS = 64


def speculate_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--speculate`` / ``--draft-tokens`` options of ``parekit generate``."""
    fn = click.option(
        "--draft-tokens",
        type=click.IntRange(1, MAX_DRAFT_TOKENS),
        default=8,
        show_default=True,
        help="most tokens drafted per verify step (with --speculate)",
    )(fn)
    return click.option(
        "--speculate",
        metavar="DRAFTER",
        default=None,
        help="draft and verify: ngram[:N] (prompt lookup of the longest suffix of <= N tokens), "
        "exit:L (layers 0..L + the model's head), skip:[i,j] (the model without those layers), "
        "skip:auto[:N] (the skip set of <= N layers with the best measured tokens/s); "
        "@P after a model drafter stops drafting below confidence P; greedy output unchanged",
    )(fn)


def build_drafter(spec: str, session: Any, model: str, tok: Any) -> Any:
    """The drafter ``spec`` names; model drafters are drop-layers variants of MODEL's file, made on demand."""
    from parekit.cli.load import load
    from parekit.passes.layer_variants import LayerVariants
    from parekit.runtime.drafters import make_drafter

    def variants() -> LayerVariants:
        return LayerVariants(lambda: load(model))

    if spec.strip().startswith("skip:auto"):
        click.echo("speculate skip:auto: timing skip sets on calibration prompts (-v shows each trial)", err=True)
    return make_drafter(spec, session, variants=variants, tokenizer=tok)


def run_speculative(
    session: Any,
    model: str,
    spec: str,
    k: int,
    prompts: Sequence[str],
    encoded: Sequence[Sequence[int]],
    tok: Any,
    max_new_tokens: int,
    options: Any,
    eos: int | None,
) -> None:
    """Generate with ``--speculate``, print each prompt's text, then the stats line on stderr."""
    from parekit.runtime.speculative import speculative_generate

    drafter = build_drafter(spec, session, model, tok)
    result = speculative_generate(
        session, encoded, max_new_tokens, drafter, k=k, sampling=options, eos_id=eos
    )
    for prompt, tokens in zip(prompts, result.tokens, strict=True):
        click.echo(safe(prompt + tok.decode(tokens), keep_newlines=True, limit=10_000_000))
    st = result.stats
    wall = result.decode_wall_s
    share = (lambda t: f"{100 * t / wall:.0f}%") if wall > 0 else (lambda t: "-")
    click.echo(safe(
        f"prefill: {result.prompt_tokens} tokens in {1e3 * result.prefill_s:.1f} ms; decode: "
        f"{result.decode_tokens} tokens in {1e3 * wall:.1f} ms ({result.decode_tokens_per_s:.1f} tokens/s); "
        f"speculate {drafter.name}: {st.accepted}/{st.drafted} drafts accepted ({100 * st.acceptance:.0f}%), "
        f"{st.tokens_per_run:.2f} tokens per model run, {st.replays} replays; "
        f"time drafting {share(st.draft_s)}, verifying {share(st.verify_s)}"),
        err=True,
    )
