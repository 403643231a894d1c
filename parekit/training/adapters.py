"""Exit adapters as torch modules: exactly :meth:`parekit.passes.exit_adapter.Adapter.apply`, trainable.

    x [..., H] ──► linear: x + x @ w + b
               └─► mlp:    x + silu(rms(x) * g @ w1 + b1) @ w2 + b2       (rms eps = exit_adapter.RMS_EPS)

The output projection starts at zero (``w`` / ``w2``, ``b`` / ``b2``), so an untrained adapter is the
identity and training starts from the logit lens (the model's own head on the layer's state).
:func:`to_adapter` turns a trained module into the :class:`~parekit.passes.exit_adapter.Adapter` the
``.npz`` file and the ONNX exit branch are made of.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from parekit.errors import OptionError
from parekit.passes.exit_adapter import ADAPTER_KINDS, RMS_EPS, Adapter
from parekit.training.torch_extra import torch

__all__ = ["LinearAdapter", "MlpAdapter", "adapter_params", "make_adapter", "to_adapter"]

nn = torch.nn


class LinearAdapter(nn.Module):
    """``y = x + x @ w + b`` (``w [H, H]``, ``b [H]``), zero-initialised."""

    kind = "linear"

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(hidden, hidden))
        self.b = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: Any) -> Any:
        return x + x @ self.w + self.b


class MlpAdapter(nn.Module):
    """``y = x + silu(rms(x) * g @ w1 + b1) @ w2 + b2``; ``w1`` random (seeded by the caller), output zero."""

    kind = "mlp"

    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(hidden))
        self.w1 = nn.Parameter(torch.randn(hidden, ffn) / math.sqrt(hidden))
        self.b1 = nn.Parameter(torch.zeros(ffn))
        self.w2 = nn.Parameter(torch.zeros(ffn, hidden))
        self.b2 = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: Any) -> Any:
        h = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + RMS_EPS) * self.g
        return x + torch.nn.functional.silu(h @ self.w1 + self.b1) @ self.w2 + self.b2


def adapter_params(kind: str, hidden: int, ffn: int) -> int:
    """Trained parameters of an adapter of this kind and size."""
    return hidden * hidden + hidden if kind == "linear" else 2 * hidden * ffn + ffn + 2 * hidden


def make_adapter(kind: str, hidden: int, ffn: int) -> Any:
    """A fresh adapter module (``ffn`` is ignored for ``linear``); seed torch before calling.

    Raises:
        OptionError: an unknown kind or a non-positive size.
    """
    if kind not in ADAPTER_KINDS:
        raise OptionError(f"train-exit: unknown adapter kind {kind!r} (expected one of {', '.join(ADAPTER_KINDS)})")
    if hidden < 1 or (kind == "mlp" and ffn < 1):
        raise OptionError(f"train-exit: adapter sizes must be positive (hidden {hidden}, ffn {ffn})")
    return LinearAdapter(hidden) if kind == "linear" else MlpAdapter(hidden, ffn)


def to_adapter(module: Any, layer: int, record: Mapping[str, Any] | None = None) -> Adapter:
    """The trained ``module`` as an :class:`Adapter` of ``layer`` (float32 copies of its tensors)."""
    tensors = {
        name: np.ascontiguousarray(p.detach().cpu().numpy(), np.float32) for name, p in module.named_parameters()
    }
    return Adapter(layer, module.kind, tensors, dict(record or {}))
