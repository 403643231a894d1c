"""Names of the usual symbolic dimensions, by role, shared by FLOP estimates and feed generation.

Roles: ``batch``, ``seq`` (new tokens), ``past`` (cached tokens), ``total`` (past + new). Exporters
and hand-written models spell them differently; :data:`DIM_ROLE_ALIASES` lists the spellings
recognised. Single letters (``n``, ``b``, ``s``) are deliberately absent: they mean different things
in different models.
"""

from __future__ import annotations

from collections.abc import Mapping

DIM_ROLE_ALIASES: Mapping[str, tuple[str, ...]] = {
    "batch": ("batch", "batch_size", "batchsize", "bs", "batch_dim"),
    "seq": (
        "seq", "seq_len", "seq_length", "sequence", "sequence_length", "sequence_len", "num_tokens",
        "input_len", "tokens",
    ),
    "past": (
        "past", "past_seq_len", "past_sequence_length", "past_len", "past_length", "past_key_values_length",
        "cache_len", "past_seq_length",
    ),
    "total": (
        "total", "total_seq_len", "total_sequence_length", "total_length", "kv_len", "kv_seq_len",
        "total_seq_length", "attention_mask_len", "attn_len",
    ),
}  # fmt: skip

_ROLE_OF = {alias: role for role, aliases in DIM_ROLE_ALIASES.items() for alias in aliases}


def dim_role(name: str) -> str | None:
    """The role of a symbolic dim name (``"sequence_length"`` → ``"seq"``), or ``None``."""
    return _ROLE_OF.get(name) or _ROLE_OF.get(name.lower())
