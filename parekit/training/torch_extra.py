"""``torch`` for the training room, or a one-line error naming the ``samples`` extra that provides it.

Modules of :mod:`parekit.training` that need torch import it from here (``from
parekit.training.torch_extra import torch``); nothing imports them before a command needs them, so
``parekit --help`` and the rest of parekit work without torch.
"""

from __future__ import annotations

from parekit.errors import MissingExtraError

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised by a test that hides torch
    raise MissingExtraError("torch", "samples", "training exit adapters") from exc

__all__ = ["torch"]
