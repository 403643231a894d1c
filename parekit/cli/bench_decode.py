"""``parekit bench-decode``: plain greedy decoding vs speculative drafters and per-token exits, on prose prompts.

    prose prompts ─► per prompt: generate (plain) ─► each --speculate DRAFTER ─► table / JSON
                     ratios of decode tokens/s against the plain loop; speculative output checked
                     token for token against the plain output (a difference is an error, after the report)
"""

from __future__ import annotations

import click

from parekit.cli.common import (
    console,
    deliver_json,
    json_options,
    native_line,
    native_option,
    plain,
    provider_option,
    safe,
    threads_option,
)
from parekit.cli.decode import MAX_NEW_TOKENS, _session, _tokenizer
from parekit.cli.exit_opts import exit_options, exit_sessions
from parekit.cli.outputs import Outputs
from parekit.cli.speculate_opts import MAX_DRAFT_TOKENS, build_drafter
from parekit.errors import ParekitError

__all__ = ["bench_decode_cmd"]

MAX_PROMPTS = 256


@click.command("bench-decode")
@click.argument("model", type=click.Path())
@click.option(
    "--speculate", "specs", multiple=True, metavar="DRAFTER", default=("ngram",), show_default=True,
    help="a drafter to compare with plain decoding (repeat for several; see generate --speculate)",
)
@click.option("--draft-tokens", type=click.IntRange(1, MAX_DRAFT_TOKENS), default=8, show_default=True)
@click.option("--prompts", "count", type=click.IntRange(1, MAX_PROMPTS), default=16, show_default=True,
              help="prose prompts (the first --words words of evaluation paragraphs of pydoc_data.topics)")
@click.option("--words", type=click.IntRange(1, 1000), default=60, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(2, MAX_NEW_TOKENS), default=128, show_default=True)
@exit_options(multiple=True)
@click.option("--exit-model", type=click.Path(), default=None,
              help="with --exit: the model whose exits run (e.g. with trained adapters; default MODEL)")
@click.option("--tokenizer", "tokenizer_path", default=None, help="as for generate")
@json_options
@threads_option
@provider_option
@native_option
def bench_decode_cmd(
    model: str,
    specs: tuple[str, ...],
    draft_tokens: int,
    count: int,
    words: int,
    max_new_tokens: int,
    exits: tuple[str, ...],
    exit_every: int | None,
    exit_prepack: bool,
    exit_model: str | None,
    tokenizer_path: str | None,
    as_json: bool,
    json_path: str | None,
    threads: int | None,
    providers: tuple[str, ...],
    native: bool | None,
) -> None:
    """Decode prose prompts with decoder MODEL plainly, with each drafter and each exit policy, greedy.

    Reports decode tokens/s and its ratio to plain decoding (per prompt and overall), whether each
    output is token-identical to the plain one, acceptance, draft tokens accepted per verify step,
    tokens per verifier run, replays, and the shares of time spent drafting and verifying; for --exit
    policies (lossy), agreement with the plain tokens and layers per token."""
    from parekit.data import prose_prompts
    from parekit.runtime.compare import compare_decoding, exit_config, speculative_config

    files = Outputs()
    files.add_input("MODEL", model)
    if exit_model is not None:
        files.add_input("--exit-model", exit_model)
    files.add_output("--json-file", json_path)
    files.check()
    session = _session(model, threads, providers, native)
    tok = _tokenizer(session, model, tokenizer_path)
    drafters = [(spec, build_drafter(spec, session, model, tok)) for spec in specs]
    prompts = [tok.encode(text) for text in prose_prompts(count, words)]
    if any(not p for p in prompts):
        raise ParekitError("a prose prompt encodes to no tokens", note="raise --words")
    configs = [(f"speculate {d.name}", "speculate", speculative_config(session, d, draft_tokens)) for _, d in drafters]
    for policy, ex in zip(exits, exit_sessions(exit_model or model, exits, exit_every, threads, providers, native, exit_prepack),
                          strict=True):
        configs.append((f"exit {policy}", "exit", exit_config(ex)))
    err = console(stderr=True)
    report = compare_decoding(session, prompts, max_new_tokens, configs,
                              progress=None if as_json else (lambda line: err.print(plain(line))))
    payload = {"model": model, "draft_tokens": draft_tokens, "words": words, **report.to_dict()}
    different = [r.name for r in report.rows if r.kind == "speculate" and r.identical != report.prompts]
    if not deliver_json(files, json_path, payload, as_json):
        click.echo(safe(report.markdown(), keep_newlines=True, limit=1_000_000))
        click.echo(safe(native_line([session.native_library])))
    if different:
        raise ParekitError(
            f"speculative output differs from plain greedy output for {', '.join(different)}",
            note="greedy speculation is lossless by construction: this is a bug, please report it",
        )
