"""Decoding side by side: plain greedy vs speculative drafters (lossless) vs per-token exits (lossy).

For every prompt the plain loop (:func:`parekit.runtime.generate`) and every configuration run back to
back, so that they share the machine's load; ratios are of decode tokens per second (prefill excluded;
drafting, verifying and bookkeeping included) against the plain loop over all prompts together.

Speculative rows report ``identical`` (prompts whose output equals plain greedy token for token: anything
short of all of them is a bug), acceptance (accepted / drafted tokens), accepted draft tokens per kept
verify step, tokens per model run, replays, and the shares of decode time spent drafting and in model
runs. Exit rows report agreement with the plain greedy tokens (tokens equal up to the first difference,
over all tokens) and the mean number of layers run per generated token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from parekit.runtime.decoder import DecoderSession
from parekit.runtime.generate import generate

__all__ = ["DecodeReport", "Outcome", "Row", "compare_decoding", "exit_config", "speculative_config"]


@dataclass
class Outcome:
    """One configuration's run on one prompt."""

    tokens: list[int]
    decode_s: float
    counts: dict[str, float] = field(default_factory=dict)
    """Summed over prompts: drafted, accepted, steps, replays, runs, produced, draft_s, verify_s, layers…"""


Config = Callable[[Sequence[int], int], Outcome]


@dataclass
class Row:
    name: str
    kind: str  # plain | speculate | exit
    tokens: int = 0
    seconds: float = 0.0
    identical: int = 0
    agree: int = 0
    total: int = 0
    counts: dict[str, float] = field(default_factory=dict)
    ratios: list[float] = field(default_factory=list)
    """Per prompt: tokens/s over the plain loop's on the same prompt."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("inf")

    def get(self, key: str) -> float:
        return self.counts.get(key, 0.0)


@dataclass
class DecodeReport:
    prompts: int
    max_new_tokens: int
    rows: list[Row]

    def ratio(self, row: Row) -> float:
        return row.tokens_per_s / self.rows[0].tokens_per_s

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompts": self.prompts, "max_new_tokens": self.max_new_tokens, "rows": []}
        for r in self.rows:
            out["rows"].append({
                "name": r.name, "kind": r.kind, "decode_tokens": r.tokens, "decode_s": round(r.seconds, 4),
                "tokens_per_s": round(r.tokens_per_s, 3), "speedup": round(self.ratio(r), 4),
                "identical": r.identical, "agree": r.agree, "total": r.total,
                "per_prompt_speedup": [round(x, 3) for x in r.ratios],
                **{k: round(v, 4) for k, v in r.counts.items()},
            })
        return out

    def markdown(self) -> str:
        lines = [
            "| configuration | decode tokens/s | × plain | per prompt (min–max) | identical to plain | acceptance "
            "| accepted / verify | tokens / verifier run | replays | drafting | verifier runs |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            spread = f"{min(r.ratios):.2f}–{max(r.ratios):.2f}" if r.ratios else "–"
            head = f"| {r.name} | {r.tokens_per_s:.1f} | {self.ratio(r):.2f} | {spread} "
            if r.kind == "speculate":
                drafted, kept = r.get("drafted"), r.get("steps") - r.get("replays")
                lines.append(
                    head + f"| {r.identical}/{self.prompts} | {r.get('accepted') / drafted if drafted else 0:.2f} "
                    f"| {r.get('accepted') / kept if kept else 0:.2f} "
                    f"| {r.get('produced') / r.get('runs') if r.get('runs') else 0:.2f} | {int(r.get('replays'))} "
                    f"| {100 * r.get('draft_s') / r.seconds:.0f} % | {100 * r.get('verify_s') / r.seconds:.0f} % |"
                )
            elif r.kind == "exit":
                layers = r.get("layers") / r.get("counted") if r.get("counted") else 0.0
                lines.append(
                    head + f"| agree {r.agree / r.total if r.total else 0:.2f} | layers/token {layers:.1f} "
                    "| | | | | |"
                )
            else:
                lines.append(head + "| – | – | – | 1.00 | – | – | 100 % |")
        return "\n".join(lines)


def speculative_config(session: DecoderSession, drafter: Any, k: int) -> Config:
    """A configuration that runs :func:`~parekit.runtime.speculative.speculative_generate` (greedy)."""
    from parekit.runtime.speculative import speculative_generate

    keys = ("drafted", "accepted", "steps", "replays", "runs", "produced", "draft_s", "verify_s")

    def run(prompt: Sequence[int], n: int) -> Outcome:
        out = speculative_generate(session, [prompt], n, drafter, k=k)
        return Outcome(out.tokens[0], out.decode_wall_s, {key: getattr(out.stats, key) for key in keys})

    return run


def exit_config(session: Any) -> Config:
    """A configuration that decodes with per-token exits (an :class:`~parekit.runtime.exit_decode.ExitSession`)."""
    from parekit.runtime.exit_decode import exit_generate

    def run(prompt: Sequence[int], n: int) -> Outcome:
        out = exit_generate(session, prompt, n)
        return Outcome(out.tokens[0], sum(out.decode_s), {"layers": float(sum(out.depths)), "counted": len(out.depths)})

    return run


def _prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def compare_decoding(
    session: DecoderSession,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    configs: Sequence[tuple[str, str, Config]],
    *,
    progress: Callable[[str], None] | None = None,
) -> DecodeReport:
    """Run the plain loop and every ``(name, kind, config)`` on each prompt, back to back."""
    rows = [Row("plain", "plain"), *[Row(name, kind) for name, kind, _ in configs]]
    for i, prompt in enumerate(prompts):
        began = time.perf_counter()
        plain = generate(session, [prompt], max_new_tokens)
        ref, plain_s = plain.tokens[0], sum(plain.decode_s)
        base = rows[0]
        base.tokens += len(ref) - 1
        base.seconds += plain_s
        base.ratios.append(1.0)
        plain_rate = (len(ref) - 1) / plain_s if plain_s > 0 else float("inf")
        for row, (_, _, config) in zip(rows[1:], configs, strict=True):
            got = config(prompt, max_new_tokens)
            row.tokens += len(got.tokens) - 1
            row.seconds += got.decode_s
            row.identical += int(list(got.tokens) == list(ref))
            row.agree += _prefix(got.tokens, ref)
            row.total += len(ref)
            for key, value in got.counts.items():
                row.counts[key] = row.counts.get(key, 0.0) + value
            rate = (len(got.tokens) - 1) / got.decode_s if got.decode_s > 0 else float("inf")
            row.ratios.append(rate / plain_rate)
        if progress is not None:
            progress(
                f"prompt {i + 1}/{len(prompts)} ({len(prompt)} tokens, {time.perf_counter() - began:.1f} s): "
                + ", ".join(f"{r.name} {r.ratios[-1]:.2f}x" for r in rows[1:])
            )
    return DecodeReport(len(prompts), max_new_tokens, rows)
