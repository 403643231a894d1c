"""``parekit generate`` and ``parekit eval``: decoders driven through the KV I/O contract.

    MODEL ─► DecoderSession ─► generate() ─► text, prefill tok/s, decode tok/s
    MODEL… ─► DecoderSession × n ─► evaluate_perplexity() ─► ppl, top-1 agreement, KV bytes, ms/step

The tokenizer comes from the model's zoo sample (metadata ``parekit.sample``); seeded-weight samples
without a vocabulary use bytes; any other model needs ``--tokenizer PATH``.
"""

from __future__ import annotations

from typing import Any

import click

from parekit.cli.common import (
    MAX_CTX,
    MAX_ITERS,
    MAX_NEW_TOKENS,
    MAX_SEED,
    MAX_TOP_K,
    console,
    deliver_json,
    finite,
    json_options,
    native_line,
    native_option,
    plain,
    provider_option,
    quiet_onnxruntime,
    safe,
    threads_option,
)
from parekit.cli.exit_opts import exit_options, exit_sessions, run_exit_generate
from parekit.cli.outputs import Outputs
from parekit.cli.speculate_opts import run_speculative, speculate_options
from parekit.errors import ParekitError

__all__ = ["eval_cmd", "generate_cmd"]

_TOKENIZER_HELP = "local Hugging Face tokenizer folder, or 'bytes' (default: the zoo sample's tokenizer)"


def _tokenizer(session: Any, model: str, path: str | None) -> Any:
    from parekit.runtime.tokenizer import ByteTokenizer, load_tokenizer

    if path is not None:
        return load_tokenizer(path)
    from parekit.frontends.zoo import SAMPLE_METADATA_KEY, SAMPLES

    meta = getattr(session, "metadata", None) or session.runner.session.get_modelmeta().custom_metadata_map
    sample = SAMPLES.get(meta.get(SAMPLE_METADATA_KEY, ""))
    if sample is None:
        raise ParekitError(
            f"{model}: not a parekit zoo sample, so its tokenizer is unknown",
            note="pass --tokenizer PATH (a local Hugging Face tokenizer folder) or --tokenizer bytes",
        )
    return sample.tokenizer() or ByteTokenizer()


def _session(model: str, threads: int | None, providers: tuple[str, ...], native: bool | None) -> Any:
    from parekit.runtime.decoder import DecoderSession

    quiet_onnxruntime()
    return DecoderSession(model, providers=list(providers) or None, threads=threads, native=native)


def _depth(session: Any) -> dict[str, Any]:
    """``layers_per_step`` (mean over decode steps) of an ``--exit`` session; nothing for a plain one."""
    depths = getattr(session, "depths", None)
    if depths is None:
        return {}
    return {"exit_policy": session.policy.text, "layers_per_step": sum(depths) / len(depths) if depths else
            float("nan"), "num_layers": session.num_layers, "exit_cuts": list(session.pieces.cuts)}


def _bytes(n: int) -> str:
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _check_prompts(prompts: tuple[str, ...]) -> None:
    for i, prompt in enumerate(prompts, 1):
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ParekitError(
                f"--prompt #{i}: not valid text (character {exc.start + 1} cannot be encoded as UTF-8)",
                note="give prompts as UTF-8 text",
            ) from None


@click.command("generate")
@click.argument("model", type=click.Path())
@click.option("--prompt", "prompts", multiple=True, required=True, help="prompt text (repeat for a batch)")
@click.option("--max-new-tokens", type=click.IntRange(1, MAX_NEW_TOKENS), default=32, show_default=True)
@click.option("--greedy/--sample", default=True, show_default=True, help="argmax, or sample")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--top-k", type=click.IntRange(0, MAX_TOP_K), default=0, show_default=True, help="0: all tokens")
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True, help="seed of --sample")
@click.option("--tokenizer", "tokenizer_path", default=None, help=_TOKENIZER_HELP)
@click.option("--ignore-eos", is_flag=True, help="do not stop at the end-of-text token")
@speculate_options
@exit_options(multiple=False)
@threads_option
@provider_option
@native_option
def generate_cmd(
    model: str,
    prompts: tuple[str, ...],
    max_new_tokens: int,
    greedy: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int,
    tokenizer_path: str | None,
    ignore_eos: bool,
    speculate: str | None,
    draft_tokens: int,
    exits: str | None,
    exit_every: int | None,
    exit_prepack: bool,
    threads: int | None,
    providers: tuple[str, ...],
    native: bool | None,
) -> None:
    """Generate text with decoder MODEL (prefill, then one token per step; any KV pass included).

    With --speculate, a drafter proposes up to --draft-tokens tokens and one step of MODEL verifies
    them: greedy output is the same text as without, sampled output has the same distribution.
    With --exit, each prompt alone, every decode step running as many layers as the policy says.
    """
    from parekit.runtime.generate import generate
    from parekit.runtime.sampling import SamplingOptions

    finite("--temperature", temperature)
    finite("--top-p", top_p)
    _check_prompts(prompts)
    if exits is not None and speculate is not None:
        raise ParekitError("give --exit or --speculate, not both")
    session = (exit_sessions(model, [exits], exit_every, threads, providers, native, exit_prepack)[0] if exits is not None
               else _session(model, threads, providers, native))
    tok = _tokenizer(session, model, tokenizer_path)
    encoded = [tok.encode(p) for p in prompts]
    if any(not ids for ids in encoded):
        raise ParekitError("a prompt encodes to no tokens", note="give a non-empty --prompt")
    eos = None if ignore_eos else getattr(tok, "eos_token_id", None)
    pad = getattr(tok, "pad_token_id", None)
    pad = pad if pad is not None else (eos if eos is not None else 0)
    options = SamplingOptions(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    if exits is not None:
        run_exit_generate(session, prompts, encoded, tok, max_new_tokens, options, eos)
        return
    if speculate is not None:
        run_speculative(session, model, speculate, draft_tokens, prompts, encoded, tok, max_new_tokens,
                        options, eos)
        return
    result = generate(session, encoded, max_new_tokens, sampling=options, pad_id=pad, eos_id=eos)
    for prompt, tokens in zip(prompts, result.tokens, strict=True):
        click.echo(safe(prompt + tok.decode(tokens), keep_newlines=True, limit=10_000_000))
    decode_tokens = len(result.decode_s) * len(result.tokens)
    click.echo(safe(
        f"prefill: {result.prompt_tokens} tokens in {1e3 * result.prefill_s:.1f} ms "
        f"({result.prefill_tokens_per_s:.1f} tokens/s); decode: {decode_tokens} tokens in "
        f"{1e3 * sum(result.decode_s):.1f} ms ({result.decode_tokens_per_s:.1f} tokens/s); "
        f"KV state {_bytes(result.kv_bytes)}"),
        err=True,
    )


@click.command("eval")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option(
    "--task",
    type=click.Choice(["ppl"]),
    default="ppl",
    show_default=True,
    help="ppl: teacher-forced perplexity through prefill + decode steps",
)
@click.option(
    "--data",
    type=click.Choice(["text"]),
    default="text",
    show_default=True,
    help="text: prose from the standard library (pydoc_data.topics)",
)
@click.option(
    "--ctx", type=click.IntRange(2, MAX_CTX), default=512, show_default=True, help="context length in tokens"
)
@click.option(
    "--prefill",
    type=click.IntRange(1, MAX_CTX),
    default=16,
    show_default=True,
    help="tokens of the prefill step; the rest is fed through decode steps",
)
@click.option(
    "--chunk",
    type=click.IntRange(1, MAX_CTX),
    default=1,
    show_default=True,
    help="tokens per decode step (1 = as in generation; >1 is faster, slightly optimistic for KV passes)",
)
@click.option(
    "--tail",
    type=click.IntRange(1, MAX_ITERS),
    default=8,
    show_default=True,
    help="ms/step = median over this many last decode steps",
)
@click.option("--tokenizer", "tokenizer_path", default=None, help=_TOKENIZER_HELP)
@exit_options(multiple=True)
@json_options
@threads_option
@provider_option
@native_option
def eval_cmd(
    models: tuple[str, ...],
    task: str,
    data: str,
    ctx: int,
    prefill: int,
    chunk: int,
    tail: int,
    tokenizer_path: str | None,
    exits: tuple[str, ...],
    exit_every: int | None,
    exit_prepack: bool,
    as_json: bool,
    json_path: str | None,
    threads: int | None,
    providers: tuple[str, ...],
    native: bool | None,
) -> None:
    """Evaluate decoder MODELS side by side: perplexity, top-1 agreement with the first, KV bytes, ms/step.

    Each --exit POLICY adds the last MODEL under per-token exits (one token per step, batch 1): e.g. the
    plain model first (the reference), then the same model with early-exit adapters.
    """
    from parekit.runtime.evaluate import evaluate_perplexity, prose_token_ids

    if prefill >= ctx:
        raise ParekitError(f"--prefill ({prefill}) must be below --ctx ({ctx})")
    files = Outputs()
    for i, m in enumerate(models):
        files.add_input(f"MODEL #{i + 1}", m)
    files.add_output("--json-file", json_path)
    files.check()
    if exits and chunk != 1:
        raise ParekitError(f"--exit evaluates one token per step: give --chunk 1, not {chunk}")
    sessions = [_session(m, threads, providers, native) for m in models]
    sessions += exit_sessions(models[-1], exits, exit_every, threads, providers, native, exit_prepack)
    tok = _tokenizer(sessions[0], models[0], tokenizer_path)
    tokens = prose_token_ids(tok, ctx)
    results = evaluate_perplexity(sessions, tokens, prefill=prefill, chunk=chunk, tail=tail, progress=True)
    payload = {
        "task": task,
        "data": "text: pydoc_data.topics prose",
        "ctx": ctx,
        "prefill": prefill,
        "chunk": chunk,
        "models": [{**r.to_dict(), **_depth(s)} for r, s in zip(results, sessions, strict=True)],
    }
    if deliver_json(files, json_path, payload, as_json):
        return
    from rich.table import Table

    base = results[0]
    table = Table(
        title=f"ppl on {ctx} tokens of prose (prefill {prefill}, {chunk} token(s)/step): "
        f"'decode' = the {base.tokens_decode} positions fed through decode steps, 'all' = all {base.tokens_all}"
    )
    columns = ("model", "ppl decode", "Δppl decode", "top-1 agree decode", "ppl all", "Δppl all", "KV bytes",
               "ms/step", "speed-up")
    for col in columns:
        table.add_column(col, overflow="fold")

    def delta(x: float, ref: float) -> str:
        return f"{100 * (x / ref - 1):+.2f}%" if x == x and ref == ref else "-"

    for r in results:
        table.add_row(
            plain(r.model),
            f"{r.ppl_decode:.3f}",
            delta(r.ppl_decode, base.ppl_decode),
            f"{100 * r.top1_agreement_decode:.2f}%",
            f"{r.ppl_all:.3f}",
            delta(r.ppl_all, base.ppl_all),
            _bytes(r.kv_bytes),
            f"{r.ms_per_step:.2f}",
            f"{base.ms_per_step / r.ms_per_step:.2f}×",
        )
    out = console()
    out.print(table)
    for s in sessions[len(models):]:
        out.print(plain(f"{s.name}: {_depth(s)['layers_per_step']:.2f} of {s.num_layers} layers per decode step"))
    out.print(plain(native_line([r.native for r in results])))
