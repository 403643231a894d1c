"""Drafters for :func:`~parekit.runtime.speculative.speculative_generate`, and the ``--speculate`` syntax.

``ngram[:N]`` (model-free, prompt lookup): find the most recent earlier occurrence of the longest suffix
of the sequence, ``N`` tokens at most (default 4) and ``min(2, N)`` at least, and propose the tokens that
followed it. Small models repeat themselves and quote their prompt, so the drafts are often right; a
sequence with no repeated n-gram gets no draft (the step is a plain one, no cost). The index is updated
incrementally: each call registers the n-grams that end at the tokens added since the last call.

Model drafters (``exit:L``: the first layers and the model's head; ``skip:[...]``: a layer-skip variant)
are not built yet: their specs are refused with a one-line error saying so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from parekit.errors import OptionError
from parekit.runtime.decoder import DecoderSession
from parekit.runtime.speculative import Draft, Drafter, DraftView

__all__ = ["DRAFTER_KINDS", "NgramDrafter", "make_drafter"]

DRAFTER_KINDS = ("ngram[:N]",)
MAX_NGRAM = 64


class NgramDrafter:
    """Prompt/output lookup: the tokens after the latest earlier match of the longest suffix n-gram."""

    def __init__(self, longest: int = 4, shortest: int | None = None) -> None:
        if not 1 <= longest <= MAX_NGRAM:
            raise OptionError(f"ngram: N must be in [1, {MAX_NGRAM}], got {longest}")
        self.longest = longest
        self.shortest = min(2, longest) if shortest is None else shortest
        if not 1 <= self.shortest <= longest:
            raise OptionError(f"ngram: the shortest match must be in [1, {longest}], got {self.shortest}")
        self.name = f"ngram:{longest}"
        self._tokens: list[int] = []
        self._latest: dict[tuple[int, ...], int] = {}  # n-gram -> index just after its latest occurrence
        self._seen = 0

    def start(self, prompt: Sequence[int]) -> None:
        self._tokens, self._latest, self._seen = [], {}, 0

    def propose(self, view: DraftView, k: int) -> Draft:
        toks = self._tokens
        toks.extend(int(t) for t in view.tokens[len(toks) :])
        end = len(toks)
        # register n-grams ending before the last token: their continuation exists
        for stop in range(max(self._seen, 1), end):
            for n in range(self.shortest, self.longest + 1):
                if stop - n >= 0:
                    self._latest[tuple(toks[stop - n : stop])] = stop
        self._seen = max(self._seen, end)
        for n in range(min(self.longest, end - 1), self.shortest - 1, -1):
            at = self._latest.get(tuple(toks[end - n :]))
            if at is not None:
                return Draft(toks[at : at + k])
        return Draft([])


_NGRAM = re.compile(r"ngram(?::(\d{1,3}))?")


def make_drafter(spec: str, session: DecoderSession, *, model: str | Path | None = None) -> Drafter:
    """A drafter from its ``--speculate`` text.

    Args:
        spec: ``ngram`` or ``ngram:N``.
        session: The verifying model.
        model: Its file (model drafters derive their graphs from it).

    Raises:
        OptionError: Unknown drafter or bad argument (one line, the text shown escaped).
    """
    text = spec.strip()
    m = _NGRAM.fullmatch(text)
    if m:
        return NgramDrafter(int(m.group(1)) if m.group(1) else 4)
    kind = text.split(":", 1)[0]
    if kind in ("exit", "skip"):
        raise OptionError(
            f"--speculate: the {kind} drafter is not built yet", note=f"drafters: {', '.join(DRAFTER_KINDS)}"
        )
    raise OptionError(
        f"--speculate: unknown drafter {text[:40]!r}", note=f"drafters: {', '.join(DRAFTER_KINDS)}"
    )
