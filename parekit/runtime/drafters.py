"""Drafters for :func:`~parekit.runtime.speculative.speculative_generate`, and the ``--speculate`` syntax.

``ngram[:N]`` (model-free, prompt lookup): find the most recent earlier occurrence of the longest suffix
of the sequence, ``N`` tokens at most (default 4) and ``min(2, N)`` at least, and propose the tokens that
followed it. Small models repeat themselves and quote their prompt, so the drafts are often right; a
sequence with no repeated n-gram gets no draft (the step is a plain one, no cost). The index is updated
incrementally: each call registers the n-grams that end at the tokens added since the last call.

Model drafters (:mod:`parekit.runtime.model_drafters`; they need the verifier's layer variants,
``variants=parekit.passes.layer_variants.LayerVariants(load)``, which ``parekit generate`` builds from MODEL):

- ``exit:L``: layers ``0..L`` and the model's own final norm and head (``L`` below the last layer);
- ``skip:[i,j,...]``: the model without exactly those layers;
- ``skip:auto`` / ``skip:auto:N``: the skip set (at most ``N`` layers, default half) chosen by measured
  speculative tokens/s on calibration prompts, candidates in order of lowest block influence.

Each takes an optional ``@P`` (``0 < P < 1``): stop drafting when the draft's confidence is below ``P``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from parekit.errors import OptionError
from parekit.runtime.decoder import DecoderSession
from parekit.runtime.speculative import Draft, Drafter, DraftView

if TYPE_CHECKING:
    from parekit.runtime.model_drafters import LayerVariants

__all__ = ["DRAFTER_KINDS", "NgramDrafter", "make_drafter"]

DRAFTER_KINDS = ("ngram[:N]", "exit:L[@P]", "skip:[i,j,...][@P]", "skip:auto[:N][@P]")
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
_P = r"(?:@(\d{0,3}\.\d{1,6}|\d{1,3}))?"
_EXIT = re.compile(r"exit:(\d{1,5})" + _P)
_SKIP = re.compile(r"skip:\[\s*(\d{1,5}(?:\s*,\s*\d{1,5}){0,999})?\s*\]" + _P)
_AUTO = re.compile(r"skip:auto(?::(\d{1,5}))?" + _P)


def make_drafter(
    spec: str,
    session: DecoderSession,
    *,
    variants: LayerVariants | Callable[[], LayerVariants] | None = None,
    tokenizer: Any = None,
) -> Drafter:
    """A drafter from its ``--speculate`` text.

    Args:
        spec: ``ngram[:N]``, ``exit:L[@P]``, ``skip:[i,j,...][@P]`` or ``skip:auto[:N][@P]``.
        session: The verifying model.
        variants: The verifier's layer-drop variants (model drafters are built from them), or a function
            that makes them (called only for a model drafter whose text parsed).
        tokenizer: Encodes ``skip:auto``'s calibration prompts.

    Raises:
        OptionError: Unknown drafter, bad argument, or a model drafter without ``variants`` (one line,
            the text shown escaped).
    """
    text = spec.strip()
    m = _NGRAM.fullmatch(text)
    if m:
        return NgramDrafter(int(m.group(1)) if m.group(1) else 4)
    kinds = f"drafters: {', '.join(DRAFTER_KINDS)}"
    exit_m, skip_m, auto_m = _EXIT.fullmatch(text), _SKIP.fullmatch(text), _AUTO.fullmatch(text)
    if exit_m is None and skip_m is None and auto_m is None:
        kind = text.split(":", 1)[0]
        what = f"bad {kind} drafter" if kind in ("exit", "skip") else "unknown drafter"
        raise OptionError(f"--speculate: {what} {text[:40]!r}", note=kinds)
    if variants is None:
        raise OptionError(
            f"--speculate {text[:40]!r}: a model drafter needs the verifier's model file to derive its graph",
            note="pass variants=parekit.passes.layer_variants.LayerVariants(load) (parekit generate does, from MODEL)",
        )
    from parekit.runtime import model_drafters as md

    found = exit_m or skip_m or auto_m
    assert found is not None
    threshold = _threshold(found.group(found.re.groups), text)
    layers_of: LayerVariants = variants if hasattr(variants, "without") else variants()  # type: ignore[operator,assignment]
    if exit_m:
        return md.exit_drafter(layers_of, session, int(exit_m.group(1)), threshold=threshold)
    if skip_m:
        layers = [int(x) for x in skip_m.group(1).split(",")] if skip_m.group(1) else []
        return md.skip_drafter(layers_of, session, layers, threshold=threshold)
    assert auto_m is not None
    sizes = md.SkipSearch(max_count=int(auto_m.group(1)) if auto_m.group(1) else None)
    return md.skip_auto_drafter(layers_of, session, tokenizer, sizes, threshold=threshold)


def _threshold(text: str | None, spec: str) -> float | None:
    if text is None:
        return None
    p = float(text)
    if not 0 < p < 1:
        raise OptionError(f"--speculate {spec[:40]!r}: the confidence threshold @P must be in (0, 1), got {p:g}")
    return p
