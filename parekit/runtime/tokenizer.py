"""Tokenizers the runtime accepts, and a byte-level one for models without a real vocabulary.

    text ─► UTF-8 bytes ─► ids 0..255        (ByteTokenizer: seeded-weight samples, tests)

Anything with ``encode(text, add_special_tokens=...) -> list[int]`` and ``decode(ids) -> str`` works
(Hugging Face tokenizers do).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ByteTokenizer", "TokenizerLike", "load_tokenizer"]


class TokenizerLike(Protocol):
    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as token ids (0..255): for models with random weights and a vocabulary ≥ 256.

    It has no end-of-text token; decoding replaces ids ≥ 256 and invalid UTF-8 with U+FFFD.
    """

    eos_token_id: int | None = None
    pad_token_id: int = 0

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i if 0 <= i < 256 else 0xFF for i in ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def load_tokenizer(path: str) -> Any:
    """A Hugging Face tokenizer from a local folder (no hub access), or ``"bytes"`` for :class:`ByteTokenizer`.

    Raises:
        ParekitError: The folder does not hold a tokenizer, or transformers is missing.
    """
    if path == "bytes":
        return ByteTokenizer()
    import os
    from pathlib import Path

    from parekit.errors import MissingExtraError, ParekitError, one_line

    if not Path(path).is_dir():
        raise ParekitError(
            f"--tokenizer {path}: not a folder", note="give a local Hugging Face tokenizer folder, or 'bytes'"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover
        raise MissingExtraError("transformers", "samples", "loading a tokenizer") from exc
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ParekitError(f"--tokenizer {path}: cannot load a tokenizer: {one_line(exc)}") from exc
