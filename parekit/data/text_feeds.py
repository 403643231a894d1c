"""Tokenized text as a model's feed dicts (encoders and prefill of decoders)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from parekit.errors import DataError

if TYPE_CHECKING:
    import onnx_ir as ir

__all__ = ["tokenize_feeds"]


def tokenize_feeds(
    model: ir.Model,
    texts: Sequence[str],
    tokenizer: Any,
    *,
    seq_len: int = 128,
    batch: int = 8,
    pad_to_max: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Tokenize ``texts`` with ``tokenizer`` into feed dicts for ``model``'s inputs.

    Texts are grouped ``batch`` at a time (a last, short group is dropped) and truncated to
    ``seq_len`` tokens; with ``pad_to_max`` every batch is padded to exactly ``seq_len`` (shapes
    stay fixed across feeds). Decoder feeds get ``position_ids`` and empty past KV tensors
    (prefill). Only the arrays the model takes are kept.

    Args:
        model: The model the feeds are for (its graph inputs decide which arrays are made).
        texts: The texts.
        tokenizer: A Hugging Face tokenizer (callable with ``padding``/``truncation``/``max_length``/
            ``return_tensors="np"``); without a pad token, its end-of-sequence token pads.
        seq_len: Tokens per row.
        batch: Rows per feed dict.
        pad_to_max: Pad every batch to ``seq_len`` (else to its longest row).

    Returns:
        The feed dicts.

    Raises:
        DataError: Fewer than ``batch`` texts.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    input_names = {v.name for v in model.graph.inputs}
    feeds: list[dict[str, np.ndarray]] = []
    for start in range(0, len(texts), batch):
        chunk = list(texts[start : start + batch])
        if len(chunk) < batch:
            break
        enc = tokenizer(
            chunk,
            padding="max_length" if pad_to_max else True,
            truncation=True,
            max_length=seq_len,
            return_tensors="np",
        )
        feed: dict[str, np.ndarray] = {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        }
        if "position_ids" in input_names:
            feed["position_ids"] = np.broadcast_to(
                np.arange(feed["input_ids"].shape[1], dtype=np.int64), feed["input_ids"].shape
            ).copy()
        for v in model.graph.inputs:
            if v.name and v.name.startswith("past") and v.shape is not None:
                dims = [d if isinstance(d, int) else 0 for d in v.shape]
                dims[0] = len(chunk)
                feed[v.name] = np.zeros(dims, dtype=np.float32)
        feeds.append({k: a for k, a in feed.items() if k in input_names})
    if not feeds:
        raise DataError(f"--data text: need at least {batch} texts for one batch, got {len(texts)}")
    return feeds
