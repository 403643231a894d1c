"""``--exit POLICY`` of ``parekit generate`` and ``parekit eval``: per-token exits with KV fill.

    generate: prompt ─► ExitSession(MODEL, policy) ─► exit_generate() ─► text, then one stats line:
              decode tokens/s, mean layers per decode step
    eval:     MODEL… + one ExitSession(last MODEL, policy) per --exit ─► evaluate_perplexity() side by side
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from parekit.cli.common import safe

__all__ = ["exit_options", "exit_sessions", "run_exit_generate"]

MAX_EXIT_EVERY = 1024

_POLICY_HELP = (
    "per-token exits (batch 1; skipped layers get their K/V by state propagation): d3:ALPHA[:MIN] "
    "(decode step i runs max(MIN, floor(L*ALPHA^i)) layers, rounded up to an exit), gate:THRESH[:MIN] "
    "(stop at the first exit whose softmax margin >= THRESH), gate:calibrated[:MIN] (each exit's threshold "
    "from the model's early-exit gates), full"
)


def exit_options(*, multiple: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--exit`` / ``--exit-every`` / ``--exit-prepack`` options (``multiple``: ``--exit`` may repeat, as for eval)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option(
            "--exit-every",
            type=click.IntRange(1, MAX_EXIT_EVERY),
            default=None,
            help="with --exit: an exit after every this many layers (and after the last); default: at the "
            "model's own exits (early-exit, adapters included) if it has any, else every 2 layers",
        )(fn)
        fn = click.option(
            "--exit-prepack", is_flag=True,
            help="with --exit: let ONNX Runtime prepack the weights of every piece (faster on CPU, about 2x "
            "the weight memory; default: one shared copy)",
        )(fn)
        help_text = _POLICY_HELP + ("; repeat to compare policies side by side" if multiple else "")
        return click.option("--exit", "exits", metavar="POLICY", multiple=multiple, default=None,
                            help=help_text)(fn)

    return wrap


def exit_sessions(
    model: str,
    policies: Sequence[str],
    every: int | None,
    threads: int | None,
    providers: Sequence[str],
    native: bool | None,
    prepack: bool = False,
) -> list[Any]:
    """One :class:`~parekit.runtime.exit_decode.ExitSession` of ``model`` per policy (policies read first).

    Raises:
        OptionError: A bad policy, or ``every`` above the model's layers.
    """
    from parekit.runtime.exit_decode import ExitSession, parse_policy

    parsed = [parse_policy(p) for p in policies]  # a bad policy fails before any model is loaded
    if not parsed:
        return []
    first = ExitSession(model, parsed[0], every=every, threads=threads, providers=list(providers) or None,
                        native=native, prepack=prepack)
    return [first, *(first.with_policy(p) for p in parsed[1:])]  # one set of pieces and weights


def run_exit_generate(
    session: Any,
    prompts: Sequence[str],
    encoded: Sequence[Sequence[int]],
    tok: Any,
    max_new_tokens: int,
    options: Any,
    eos: int | None,
) -> None:
    """Generate every prompt alone (batch 1) with per-token exits; print texts, then a stats line (stderr)."""
    from parekit.runtime.exit_decode import exit_generate

    decode_s = 0.0
    steps = 0
    depths: list[int] = []
    prefill_tokens = 0
    prefill_s = 0.0
    for prompt, ids in zip(prompts, encoded, strict=True):
        result = exit_generate(session, ids, max_new_tokens, sampling=options, eos_id=eos)
        click.echo(safe(prompt + tok.decode(result.tokens[0]), keep_newlines=True, limit=10_000_000))
        decode_s += sum(result.decode_s)
        steps += len(result.decode_s)
        depths.extend(result.depths)
        prefill_tokens += result.prompt_tokens
        prefill_s += result.prefill_s
    rate = f"{steps / decode_s:.1f}" if decode_s > 0 else "-"
    mean = f"{sum(depths) / len(depths):.2f}" if depths else "-"
    click.echo(safe(
        f"prefill: {prefill_tokens} tokens in {1e3 * prefill_s:.1f} ms (full model); decode: {steps} tokens in "
        f"{1e3 * decode_s:.1f} ms ({rate} tokens/s); exit {session.policy.text}: {mean} of "
        f"{session.num_layers} layers per decode step (exits after layers {_cuts(session)})"),
        err=True,
    )


def _cuts(session: Any) -> str:
    return ",".join(str(c) for c in session.pieces.cuts)
