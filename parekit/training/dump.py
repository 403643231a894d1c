"""What an exit adapter trains on: the frozen model's states at the exit layer and its own outputs.

    second half of the offline text ──► feeds ──► ONNX Runtime (calibration.collect) ──► ExitDump
        decoders: fixed windows, fresh sequences (empty past)       states  [N, H]  (layer l's output, per token)
                                                                    teacher top-k next-token distribution [N, k]
        encoders: paragraphs, padded batches + attention mask       states  [P, S, H], final [P, S, H]
                                                                    teacher head output (sentence embedding) [P, D]

Everything comes from the second half of ``pydoc_data.topics`` (:func:`training_blocks`,
second-half paragraphs): the first half is the evaluation prose of ``parekit check``/``eval``, never
seen in training. The held-out split (early stopping, the reported agreement) is the END of that
second half, whole windows or paragraphs, disjoint from the training rows.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from parekit.analysis.modelmap import ModelMap
from parekit.backends.specs import specs_from_ir_values
from parekit.calibration.collect import CalibrationSet, collect
from parekit.data.prose import prose_paragraphs
from parekit.data.text_feeds import tokenize_feeds
from parekit.errors import DataError

__all__ = ["ExitDump", "dump_decoder", "dump_encoder", "second_half_paragraphs", "training_blocks"]

logger = logging.getLogger(__name__)

TOP_K = 64
"""Teacher next-token distribution kept per token: the top-k probabilities, renormalised."""
LOGITS_PER_FEED = 1 << 26
"""Most logits one decoder feed returns (windows per feed are sized to stay under it: 256 MiB)."""


@dataclass
class ExitDump:
    """Dumped training data for an exit at ``layer``.

    Attributes:
        kind: ``decoder`` or ``encoder``.
        layer: the exit layer (its block's output is ``states``).
        output: the head output the teacher values are of (``logits``, ``sentence_embedding``).
        states: decoders ``[N, H]`` (one row per token); encoders ``[P, S, H]`` (one row per paragraph).
        inputs: graph inputs per row: decoders ``input_ids [N]``; encoders every feed input ``[P, S]``.
        train, held_out: row indices of the two splits (tokens for decoders, paragraphs for encoders).
        top_idx, top_p: decoders: the teacher's top-k token ids (int32) and renormalised probabilities
            (float32), ``[N, k]``, sorted by probability (column 0 is the full model's top-1).
        target: encoders: the teacher's head output ``[P, D]``.
        final: encoders: the final residual stream ``[P, S, H]``; decoders: that of the first window
            ``[1, W, H]`` (checks the torch head against ``check_output``).
        check_output: the model's head output for ``final`` (decoders: the full logits of the first window).
        window: decoders: tokens per window.
        source: where the rows came from, for the record.
        seconds: time the dump took.
    """

    kind: str
    layer: int
    output: str
    states: np.ndarray
    inputs: dict[str, np.ndarray]
    train: np.ndarray
    held_out: np.ndarray
    top_idx: np.ndarray | None = None
    top_p: np.ndarray | None = None
    target: np.ndarray | None = None
    final: np.ndarray | None = None
    check_output: np.ndarray | None = None
    window: int = 0
    source: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def tokens(self, rows: np.ndarray) -> int:
        """Real tokens in ``rows`` (decoders: one per row; encoders: the attention mask's ones)."""
        if self.kind == "decoder":
            return len(rows)
        mask = self.inputs.get("attention_mask")
        return int(mask[rows].sum()) if mask is not None else len(rows) * self.states.shape[1]


def second_half_paragraphs() -> list[str]:
    """The second half of the prose paragraphs (``parekit.cli.feeds``'s calibration half), minus repeats.

    Some topics share text: about a fifth of the second half's paragraphs repeat a first-half
    (evaluation) paragraph verbatim. Those, and repeats within the half, are left out here.
    """
    corpus = prose_paragraphs()
    seen = set(corpus[: len(corpus) // 2])
    out = []
    for p in corpus[len(corpus) // 2 :]:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def training_blocks() -> list[str]:
    """Every text block of ``pydoc_data.topics`` from the first calibration paragraph on, in corpus order.

    The evaluation prose is the first half of :func:`parekit.data.prose_paragraphs` (cleaned
    paragraphs of the topics in sorted order), the calibration prose the second half. Training text
    is all of the text from the first calibration paragraph on: prose, code samples and tables alike
    (≈ 57 K SmolLM2 tokens; the cleaned second-half paragraphs alone give ≈ 20 K), each block once,
    without the blocks that repeat an evaluation paragraph verbatim (some topics share text), so no
    evaluation paragraph is ever trained on.
    """
    from pydoc_data.topics import topics

    corpus = prose_paragraphs()
    half = len(corpus) // 2
    seen = set(corpus[:half])
    blocks: list[str] = []
    found = 0  # prose paragraphs met so far (they come in corpus order)
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(block.split())
            if not text:
                continue
            if found < len(corpus) and text == corpus[found]:
                found += 1
            if found > half and text not in seen:
                seen.add(text)
                blocks.append(block.strip("\n"))
    return blocks


def _token_stream(tokenizer: Any, blocks: Sequence[str]) -> list[int]:
    ids: list[int] = []
    for block in blocks:
        ids.extend(tokenizer.encode(block + "\n\n", add_special_tokens=False))
    return ids


def _split_windows(n_windows: int, window: int, tokens: int | None, held_out: int) -> tuple[int, int]:
    hold = max(1, math.ceil(held_out / window))
    train = n_windows - hold if tokens is None else math.ceil(tokens / window)
    if train < 1 or train + hold > n_windows:
        want = (tokens or window) + held_out
        raise DataError(
            f"train-exit: the training text gives {n_windows * window} tokens in windows of {window}, "
            f"{want} were asked for (training + held-out)",
            note="lower --tokens or --held-out",
        )
    return train, hold


def _empty_past(model: ir.Model, batch: int) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for spec in specs_from_ir_values(model.graph.inputs):
        if spec.name.startswith("past") and spec.shape is not None:
            dims = [d if isinstance(d, int) else 0 for d in spec.shape]
            if dims and not isinstance(spec.shape[0], int):
                dims[0] = batch
            feeds[spec.name] = np.zeros(dims, dtype=spec.dtype)
    return feeds


def _top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = logits.reshape(-1, logits.shape[-1])
    k = min(k, flat.shape[1])
    idx = np.argpartition(-flat, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(flat, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx, vals = np.take_along_axis(idx, order, 1), np.take_along_axis(vals, order, 1).astype(np.float64)
    p = np.exp(vals - vals[:, :1])
    return idx.astype(np.int32), (p / p.sum(1, keepdims=True)).astype(np.float32)


def dump_decoder(
    model: ir.Model,
    mm: ModelMap,
    layer: int,
    tokenizer: Any,
    output: str,
    *,
    tokens: int | None = None,
    held_out: int = 8192,
    window: int = 256,
    top_k: int = TOP_K,
    progress: bool = False,
) -> ExitDump:
    """Layer ``layer``'s states and the teacher's top-k next-token distribution on windows of training text.

    Args:
        model: the decoder (not modified).
        mm: its structure map.
        layer: the exit layer.
        tokenizer: anything with ``encode(text, add_special_tokens=False)``.
        output: the logits output.
        tokens: training tokens (rounded up to whole windows); ``None``: all the text minus ``held_out``.
        held_out: held-out tokens (whole windows at the end of the text).
        window: tokens per window; each window runs as a fresh sequence with an empty past.
        top_k: teacher probabilities kept per token.
        progress: show a progress bar.

    Raises:
        DataError: the text is too short for the tokens asked for.
    """
    start = time.perf_counter()
    ids = _token_stream(tokenizer, training_blocks())  # held-out = the END of all of it, whatever --tokens
    n_windows = len(ids) // window
    n_train, n_hold = _split_windows(n_windows, window, tokens, held_out)
    chosen = list(range(n_train)) + list(range(n_windows - n_hold, n_windows))
    vocab = _vocab(model, output)
    per_feed = max(1, min(16, LOGITS_PER_FEED // (window * max(vocab, 1))))
    inputs = {v.name for v in model.graph.inputs}
    feeds = []
    for lo in range(0, len(chosen), per_feed):
        rows = chosen[lo : lo + per_feed]
        arr = np.asarray([ids[w * window : (w + 1) * window] for w in rows], dtype=np.int64)
        feed = {"input_ids": arr, "attention_mask": np.ones_like(arr)}
        if "position_ids" in inputs:
            feed["position_ids"] = np.broadcast_to(np.arange(window, dtype=np.int64), arr.shape).copy()
        feed.update(_empty_past(model, len(rows)))
        feeds.append({k: v for k, v in feed.items() if k in inputs})
    state_name = mm.layers[layer].output
    states, idx_parts, p_parts = [], [], []
    final = check = None
    bar = _bar(progress, f"dumping layer {layer} + teacher over {len(chosen)} windows of {window}", len(feeds))
    try:
        for _, values in collect(model, [state_name, mm.final_output, output], CalibrationSet(feeds, "train-exit")):
            logits = values[output]
            states.append(values[state_name].reshape(-1, values[state_name].shape[-1]).astype(np.float32))
            i, p = _top_k(logits, top_k)
            idx_parts.append(i)
            p_parts.append(p)
            if final is None:
                final, check = values[mm.final_output][:1].copy(), logits[:1].copy()
            if bar is not None:
                bar.advance(bar.task_ids[0])
    finally:
        if bar is not None:
            bar.stop()
    n = len(chosen) * window
    return ExitDump(
        kind="decoder",
        layer=layer,
        output=output,
        states=np.concatenate(states),
        inputs={"input_ids": np.concatenate([f["input_ids"].reshape(-1) for f in feeds])},
        train=np.arange(n_train * window),
        held_out=np.arange(n_train * window, n),
        top_idx=np.concatenate(idx_parts),
        top_p=np.concatenate(p_parts),
        final=final,
        check_output=check,
        window=window,
        source=(
            f"pydoc_data.topics after the evaluation half: {n_train} + {n_hold} held-out windows of {window} tokens "
            f"(of {n_windows}), fresh sequences"
        ),
        seconds=time.perf_counter() - start,
    )


def dump_encoder(
    model: ir.Model,
    mm: ModelMap,
    layer: int,
    tokenizer: Any,
    output: str,
    *,
    tokens: int | None = None,
    held_out: int = 64,
    seq: int = 128,
    batch: int = 8,
    min_chars: int = 64,
    progress: bool = False,
) -> ExitDump:
    """Layer ``layer``'s states, the final residual stream and the head output on second-half text.

    Training rows are the :func:`training_blocks` of at least ``min_chars`` characters (whitespace
    collapsed) except the held-out paragraphs; held-out rows are the last ``held_out`` of
    :func:`second_half_paragraphs` (prose, like the evaluation half). Counts are rounded down to
    whole batches.

    Args:
        model: the encoder (not modified).
        mm: its structure map.
        layer: the exit layer.
        tokenizer: a Hugging Face tokenizer (see :func:`parekit.data.tokenize_feeds`).
        output: the head output (e.g. ``sentence_embedding``).
        tokens: real training tokens (whole rows, in order); ``None``: all of them.
        held_out: held-out paragraphs.
        seq: tokens per row (longer ones are truncated, shorter ones padded and masked).
        batch: rows per ONNX Runtime run.
        min_chars: shortest training block kept.
        progress: show a progress bar.

    Raises:
        DataError: too few paragraphs or tokens for the split asked for.
    """
    start = time.perf_counter()
    paragraphs = second_half_paragraphs()
    n_hold = held_out - held_out % batch
    if not batch <= n_hold < len(paragraphs):
        raise DataError(
            f"train-exit: --held-out {held_out}: the second half has {len(paragraphs)} distinct paragraphs, "
            f"the held-out part takes whole batches of {batch} and leaves some",
        )
    hold = paragraphs[-n_hold:]
    keep = set(hold)
    texts = [t for t in (" ".join(b.split()) for b in training_blocks()) if len(t) >= min_chars and t not in keep]
    texts = texts[: len(texts) - len(texts) % batch]
    if tokens is not None:
        lengths = [len(tokenizer.encode(t)) for t in texts]
        count = int(np.searchsorted(np.cumsum(np.minimum(lengths, seq)), tokens)) + 1
        if count > len(texts):
            raise DataError(
                f"train-exit: --tokens {tokens}: the training text gives {int(np.minimum(lengths, seq).sum())} "
                f"tokens in rows of at most {seq}",
                note="lower --tokens",
            )
        texts = texts[: math.ceil(count / batch) * batch]
    n_train = len(texts)
    feeds = tokenize_feeds(model, texts + hold, tokenizer, seq_len=seq, batch=batch)
    state_name = mm.layers[layer].output
    parts: dict[str, list[np.ndarray]] = {"states": [], "final": [], "target": []}
    bar = _bar(progress, f"dumping layer {layer} + teacher over {n_train + n_hold} rows", len(feeds))
    try:
        for _, values in collect(model, [state_name, mm.final_output, output], CalibrationSet(feeds, "train-exit")):
            parts["states"].append(values[state_name].astype(np.float32))
            parts["final"].append(values[mm.final_output].astype(np.float32))
            parts["target"].append(values[output].astype(np.float32))
            if bar is not None:
                bar.advance(bar.task_ids[0])
    finally:
        if bar is not None:
            bar.stop()
    inputs = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
    target = np.concatenate(parts["target"])
    return ExitDump(
        kind="encoder",
        layer=layer,
        output=output,
        states=np.concatenate(parts["states"]),
        inputs=inputs,
        train=np.arange(n_train),
        held_out=np.arange(n_train, n_train + n_hold),
        target=target,
        final=np.concatenate(parts["final"]),
        check_output=target,
        source=(
            f"pydoc_data.topics from the calibration half on: {n_train} text blocks (>= {min_chars} characters) "
            f"+ {n_hold} held-out prose paragraphs, {seq} tokens each"
        ),
        seconds=time.perf_counter() - start,
    )


def _vocab(model: ir.Model, output: str) -> int:
    for value in model.graph.outputs:
        if value.name == output and value.shape is not None and isinstance(value.shape[-1], int):
            return int(value.shape[-1])
    return 1 << 16


def _bar(progress: bool, text: str, total: int) -> Any:
    if not progress:
        return None
    from parekit.progress import progress_bar

    bar = progress_bar()
    bar.start()
    bar.add_task(text, total=total)
    return bar
