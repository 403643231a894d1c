"""Model drafters: a layer-skip variant of the verifier's own weights drafts, the full model verifies.

    verifier file ─► drop-layers{layers=S} ─► draft model (the kept layers, the model's own norm + head)
    view.state ─► the kept layers' past* arrays (same names) ─► k one-token draft steps ─► Draft

``exit:L`` keeps layers ``0..L`` (an early exit through the model's own final norm and head);
``skip:[i,j,...]`` drops exactly those layers; ``skip:auto[:N]`` searches the skip set by measured
speculative tokens/s (Draft & Verify): candidates in order of lowest ShortGPT block influence on
calibration prose, the set grown one candidate at a time while tokens/s improves.

Drafting reads the verifier's state and never writes it: the kept layers' caches are exactly the
verifier's (they are computed by the same weights over the same tokens), so the draft model needs no
cache of its own. Greedy drafts take the argmax; under sampling each draft token is drawn from the loop
sampler's distribution of the draft logits, returned as ``Draft.probs`` so the rejection rule stays exact.

Adaptive length (``@P``, Kangaroo / Draft & Verify style): drafting stops before a step whose draft
confidence — the top probability of the draft distribution (softmax of the draft logits; under sampling,
the sampler's distribution) — is below ``P``. The decision depends only on the distribution, never on
the token drawn from it, so sampled drafts stay distributed as ``Draft.probs`` says.

The graphs come from a :class:`LayerVariants` (``parekit.passes.layer_variants.LayerVariants``: the
runtime may not import the passes, so the caller builds it from the verifier's file).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from parekit.errors import DataError, OptionError
from parekit.runtime.decoder import DecoderSession, State, start_feeds
from parekit.runtime.speculative import Draft, DraftView, speculative_generate

__all__ = [
    "LayerDrafter",
    "LayerVariants",
    "SkipSearch",
    "exit_drafter",
    "search_skip_set",
    "skip_auto_drafter",
    "skip_drafter",
]

logger = logging.getLogger(__name__)


class LayerVariants(Protocol):
    """The verifier's model and its layer-drop variants (``parekit.passes.layer_variants.LayerVariants``)."""

    num_layers: int

    def without(self, layers: Sequence[int]) -> Any:
        """The model without ``layers`` (anything :class:`DecoderSession` loads)."""
        ...

    def influence(self, feeds: Sequence[dict[str, np.ndarray]], source: str = ...) -> list[float]:
        """Block influence of every layer on prefill ``feeds``."""
        ...


class LayerDrafter:
    """Drafts with ``draft``, a drop-layers variant of the verifier, from the verifier's own state.

    Args:
        draft: The draft model (its ``past*`` inputs: a subset, by name, of the verifier's).
        skipped: The verifier layers the draft model lacks.
        name: The drafter's name (``exit:L``, ``skip:[...]``, …).
        threshold: Stop drafting when the draft confidence is below it (``None``: always ``k`` tokens).
    """

    def __init__(
        self, draft: DecoderSession, skipped: Sequence[int], *, name: str, threshold: float | None = None
    ) -> None:
        self.draft = draft
        self.skipped = tuple(sorted(skipped))
        self.threshold = threshold
        self.name = name if threshold is None else f"{name}@{threshold:g}"
        self._names = [s.name for s in draft.state_specs]
        self.search_log: list[tuple[list[int], float]] = []
        """``skip:auto``: every skip set tried and its measured tokens/s (plain decoding first, as ``[]``)."""

    def start(self, prompt: Sequence[int]) -> None:
        """Nothing to reset: every draft starts from the verifier's state."""

    def propose(self, view: DraftView, k: int) -> Draft:
        """Up to ``k`` tokens drafted one step at a time from the kept layers' share of ``view.state``."""
        state = self._subset(view.state)
        greedy = view.sampler is None or view.sampler.options.greedy
        token, pos = int(view.tokens[-1]), len(view.tokens) - 1
        tokens: list[int] = []
        rows: list[np.ndarray] = []
        for j in range(k):
            ids = np.array([[token]], dtype=np.int64)
            mask = np.ones((1, pos + j + 1), dtype=np.int64)
            logits, state = self.draft.step(ids, mask, np.array([[pos + j]], dtype=np.int64), state)
            row = logits[0, -1]
            if greedy:
                if self.threshold is not None and _top_probability(row) < self.threshold:
                    break
                token = int(row.argmax())
            else:
                q = view.sampler.distribution(row)
                if self.threshold is not None and float(q.max()) < self.threshold:
                    break
                token = view.sampler.draw(q)
                rows.append(q)
            tokens.append(token)
        probs = np.stack(rows) if rows else None
        return Draft(tokens, probs if not greedy else None)

    def _subset(self, state: State) -> State:
        missing = [n for n in self._names if n not in state]
        if missing:
            raise DataError(
                f"{self.name}: the verifier's state has no {', '.join(repr(n) for n in missing[:4])}"
                f"{' …' if len(missing) > 4 else ''}, which the draft model reads",
                note="model drafters read the verifier's cache by name: derive them from the verifier's own file",
            )
        return {n: state[n] for n in self._names}


def _top_probability(logits: np.ndarray) -> float:
    x = logits.astype(np.float64)
    e = np.exp(x - x.max())
    return float(1.0 / e.sum())  # the top token's softmax probability: exp(0) / sum


def _session_like(verifier: DecoderSession, model: Any) -> DecoderSession:
    """A session for ``model`` with the verifier's providers, threads and native kernels."""
    runner = verifier.runner
    threads = runner.session.get_session_options().intra_op_num_threads or None
    return DecoderSession(
        model, providers=list(runner.providers), threads=threads, native=runner.native_library is not None
    )


def _derive(variants: LayerVariants, verifier: DecoderSession, drop: Sequence[int]) -> DecoderSession:
    """The verifier without layers ``drop``, as a session like the verifier's.

    Raises:
        DataError: The draft model reads a state the verifier does not carry (same name, dtype and fixed dims).
    """
    draft = _session_like(verifier, variants.without(drop))
    carried = {s.name: s for s in verifier.state_specs}
    for spec in draft.state_specs:
        mine = carried.get(spec.name)
        if mine is None or mine.dtype != spec.dtype or _fixed(mine.shape) != _fixed(spec.shape):
            raise DataError(
                f"skip {_format(drop)}: the draft model's state input {spec.name!r} is not one the verifier carries",
                note="model drafters read the verifier's cache by name: derive them from the verifier's own file",
            )
    return draft


def _fixed(shape: Sequence[Any] | None) -> tuple[Any, ...] | None:
    return None if shape is None else tuple(d if isinstance(d, int) else "?" for d in shape)


def _format(layers: Sequence[int]) -> str:
    return f"[{','.join(str(i) for i in sorted(layers))}]"


def exit_drafter(
    variants: LayerVariants, verifier: DecoderSession, layer: int, *, threshold: float | None = None
) -> LayerDrafter:
    """``exit:L``: layers ``0..L`` and the model's own final norm and head.

    Raises:
        OptionError: ``L`` is not below the last layer (exiting there is the model itself).
    """
    n = variants.num_layers
    if not 0 <= layer <= n - 2:
        raise OptionError(
            f"--speculate exit:{layer}: the exit layer must be in 0..{n - 2} "
            f"(the model has {n} layers; exiting at the last one is the model itself)"
        )
    drop = list(range(layer + 1, n))
    return LayerDrafter(_derive(variants, verifier, drop), drop, name=f"exit:{layer}", threshold=threshold)


def skip_drafter(
    variants: LayerVariants, verifier: DecoderSession, layers: Sequence[int], *, threshold: float | None = None
) -> LayerDrafter:
    """``skip:[i,j,...]``: the verifier without exactly those layers.

    Raises:
        OptionError: No layer, a repeated or out-of-range layer, or every layer.
    """
    _check_skip(layers, variants.num_layers)
    return LayerDrafter(
        _derive(variants, verifier, layers), layers, name=f"skip:{_format(layers)}", threshold=threshold
    )


def _check_skip(layers: Sequence[int], n: int) -> None:
    where = f"--speculate skip:{_format(layers)}"
    if not layers:
        raise OptionError(f"{where}: name at least one layer to skip (skipping none is the model itself)")
    if len(set(layers)) != len(layers):
        raise OptionError(f"{where}: a layer is named twice")
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise OptionError(f"{where}: layer {bad[0]} is out of range (the model has {n} layers: 0..{n - 1})")
    if len(layers) >= n:
        raise OptionError(f"{where}: skipping all {n} layers leaves no transformer to draft with")


@dataclass(frozen=True)
class SkipSearch:
    """Sizes of the ``skip:auto`` search (each candidate costs one draft model and one timed run).

    Attributes:
        max_count: Most layers skipped (``None``: half the layers).
        prompts: Calibration prompts (the calibration half of the prose corpus).
        prompt_tokens: Tokens per prompt (they are also the block-influence windows).
        new_tokens: Tokens generated per prompt per timed run.
        k: Draft tokens per verify step while timing.
        step: Candidates added per trial (``None``: a tenth of the layers, at least 1): one layer more
            changes a deep model's tokens/s by less than the timing noise of a short run.
        patience: Stop after this many trials in a row that did not raise tokens/s.
    """

    max_count: int | None = None
    step: int | None = None
    prompts: int = 2
    prompt_tokens: int = 48
    new_tokens: int = 32
    k: int = 4
    patience: int = 2


class _NoDraft:
    name = "none"

    def start(self, prompt: Sequence[int]) -> None:
        pass

    def propose(self, view: DraftView, k: int) -> Draft:
        return Draft([])


def _tokens_per_s(verifier: DecoderSession, prompts: list[list[int]], drafter: Any, sizes: SkipSearch) -> float:
    run = speculative_generate(verifier, prompts, sizes.new_tokens, drafter, k=sizes.k)
    return run.decode_tokens_per_s


def _calibration_prompts(tokenizer: Any, sizes: SkipSearch) -> list[list[int]]:
    from parekit.data import prose_halves

    texts = prose_halves()[1]
    if sizes.prompts > len(texts):
        raise OptionError(f"skip:auto: {sizes.prompts} prompts asked for, the calibration prose has {len(texts)}")
    prompts = [list(tokenizer.encode(t))[: sizes.prompt_tokens] for t in texts[: sizes.prompts]]
    if any(not p for p in prompts):
        raise DataError("skip:auto: a calibration paragraph encodes to no tokens")
    return prompts


def _influence(variants: LayerVariants, verifier: DecoderSession, prompts: list[list[int]]) -> list[float]:
    feeds = []
    for p in prompts:
        ids = np.array([p], dtype=np.int64)
        position = np.arange(len(p), dtype=np.int64)[None]
        state = verifier.empty_state(1)
        start = start_feeds(verifier.state_specs, state, 1) if verifier.start_input else {}
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": position,
                      **state, **start})
    return variants.influence(feeds, f"skip:auto: {len(prompts)} calibration paragraphs")


def search_skip_set(
    variants: LayerVariants,
    verifier: DecoderSession,
    tokenizer: Any,
    sizes: SkipSearch = SkipSearch(),
    *,
    threshold: float | None = None,
) -> tuple[list[int], list[tuple[list[int], float]]]:
    """The skip set with the best measured speculative tokens/s (greedy growth in block-influence order).

    The candidates, lowest block influence first, are taken ``step`` at a time: a trial adds the next
    ones to the set kept so far and keeps them when the measured tokens/s rose (the first trial is kept).

    Returns:
        ``(chosen layers, [(skip set tried, tokens/s)])``; the first entry of the log is plain decoding
        (``[]``), whose speed the result is not required to beat (a skip drafter can lose: that is a result).
    """
    n = variants.num_layers
    limit = sizes.max_count if sizes.max_count is not None else max(1, n // 2)
    if not 1 <= limit <= n - 1:
        raise OptionError(f"--speculate skip:auto:{limit}: the most layers skipped must be in 1..{n - 1}")
    prompts = _calibration_prompts(tokenizer, sizes)
    scores = _influence(variants, verifier, prompts)
    order = sorted(range(n), key=lambda i: scores[i])
    logger.info("skip:auto: block influence %s; candidates %s", [round(s, 4) for s in scores], order)
    plain = _tokens_per_s(verifier, prompts, _NoDraft(), sizes)
    log: list[tuple[list[int], float]] = [([], plain)]
    logger.info("skip:auto: plain decoding %.1f tokens/s", plain)
    step = sizes.step if sizes.step is not None else max(1, n // 10)
    if step < 1:
        raise OptionError(f"skip:auto: the step must be >= 1, got {step}")
    chosen: list[int] = []
    best = 0.0  # the first trial is always taken: some skip set must be chosen
    misses = 0
    for at in range(0, n, step):
        if len(chosen) >= limit or misses >= sizes.patience:
            break
        trial = sorted([*chosen, *order[at : at + min(step, limit - len(chosen))]])
        began = time.perf_counter()
        drafter = LayerDrafter(_derive(variants, verifier, trial), trial, name="trial", threshold=threshold)
        speed = _tokens_per_s(verifier, prompts, drafter, sizes)
        log.append((trial, speed))
        kept = speed > best
        logger.info("skip:auto: skip %s: %.1f tokens/s (%s; %.1f s)", _format(trial), speed,
                    "kept" if kept else "not kept", time.perf_counter() - began)
        if kept:
            chosen, best, misses = trial, speed, 0
        else:
            misses += 1
    logger.info("skip:auto: chose skip %s: %.1f tokens/s vs plain %.1f", _format(chosen), best, plain)
    return chosen, log


def skip_auto_drafter(
    variants: LayerVariants,
    verifier: DecoderSession,
    tokenizer: Any,
    sizes: SkipSearch = SkipSearch(),
    *,
    threshold: float | None = None,
) -> LayerDrafter:
    """``skip:auto[:N]``: :func:`search_skip_set`, then the drafter of the chosen set (named after it)."""
    if tokenizer is None:
        raise OptionError(
            "--speculate skip:auto: no tokenizer for the calibration prompts",
            note="pass tokenizer= (parekit generate passes the prompts' tokenizer)",
        )
    chosen, log = search_skip_set(variants, verifier, tokenizer, sizes, threshold=threshold)
    drafter = LayerDrafter(_derive(variants, verifier, chosen), chosen, name=f"skip:auto={_format(chosen)}",
                           threshold=threshold)
    drafter.search_log = log
    return drafter
