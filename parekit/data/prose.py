"""English prose from the standard library: the same text on every machine with the same Python.

The corpus is ``pydoc_data.topics`` (the help topics of the Python documentation, ≈ 500 paragraphs
of at least 200 characters); no download, no data package.
"""

from __future__ import annotations

import re
from typing import Any

from parekit.errors import DataError

__all__ = ["prose_halves", "prose_paragraphs", "prose_prompts", "prose_token_ids"]


def prose_paragraphs(n: int | None = None, min_chars: int = 200) -> list[str]:
    """English prose paragraphs from the Python documentation shipped in the standard library.

    Topics are visited in sorted order; code samples, headings and signature lines are skipped and
    whitespace is collapsed, so the result is the same on every machine with the same Python.

    Args:
        n: How many paragraphs to return (the first ``n``); ``None`` for all.
        min_chars: Shortest paragraph kept, in characters.

    Returns:
        The paragraphs.

    Raises:
        DataError: Fewer than ``n`` paragraphs are available.
    """
    from pydoc_data.topics import topics

    paragraphs: list[str] = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            text = _prose(block)
            if text is not None and len(text) >= min_chars:
                paragraphs.append(text)
    if n is not None:
        if n > len(paragraphs):
            raise DataError(
                f"only {len(paragraphs)} prose paragraphs of at least {min_chars} characters are "
                f"available, {n} were asked for",
                note="lower the count or min_chars",
            )
        paragraphs = paragraphs[:n]
    return paragraphs


def prose_halves(min_chars: int = 200) -> tuple[list[str], list[str]]:
    """The corpus cut in two disjoint parts: ``(evaluation, calibration)``.

    Evaluation is the first half of :func:`prose_paragraphs`; calibration is the second half without
    the paragraphs that also occur in the first (some help topics share text: 59 of the 262
    second-half paragraphs repeat a first-half one verbatim) and without repeats, so nothing a pass is
    calibrated or trained on is evaluated on.
    """
    corpus = prose_paragraphs(min_chars=min_chars)
    half = len(corpus) // 2
    evaluation = corpus[:half]
    seen = set(evaluation)
    calibration: list[str] = []
    for text in corpus[half:]:
        if text not in seen:
            seen.add(text)
            calibration.append(text)
    return evaluation, calibration


def prose_prompts(count: int, words: int = 60) -> list[str]:
    """``count`` prompts: the first ``words`` words of evaluation paragraphs (:func:`prose_halves`), evenly spaced.

    Raises:
        DataError: ``count`` is not in ``[1, number of evaluation paragraphs]``.
    """
    evaluation, _ = prose_halves()
    if not 1 <= count <= len(evaluation):
        raise DataError(f"prose prompts: count must be in [1, {len(evaluation)}], got {count}")
    step = len(evaluation) // count
    return [" ".join(evaluation[i * step].split()[:words]) for i in range(count)]


def prose_token_ids(tokenizer: Any, n: int) -> list[int]:
    """The first ``n`` tokens of the prose: paragraphs joined by blank lines, encoded one by one.

    Args:
        tokenizer: Anything with ``encode(text, add_special_tokens=False) -> list[int]`` (a Hugging
            Face tokenizer, :class:`parekit.runtime.ByteTokenizer`).
        n: How many tokens.

    Returns:
        The token ids.

    Raises:
        DataError: The prose gives fewer than ``n`` tokens.
    """
    ids: list[int] = []
    for paragraph in prose_paragraphs():
        ids.extend(tokenizer.encode(paragraph + "\n\n", add_special_tokens=False))
        if len(ids) >= n:
            return ids[:n]
    raise DataError(f"the prose only gives {len(ids)} tokens, {n} were asked for")


def _prose(block: str) -> str | None:
    lines = [line for line in block.split("\n") if line.strip()]
    if not lines:
        return None
    if any(line.lstrip().startswith((">>>", "...")) for line in lines):
        return None  # interactive code sample
    if set(lines[-1].strip()) <= set("*=-~^"):
        return None  # heading with its underline
    text = " ".join(" ".join(lines).split())
    letters = sum(c.isalpha() or c.isspace() for c in text) / len(text)
    if letters < 0.9 or not text.endswith((".", ":")):
        return None  # code, tables, signatures
    return text
