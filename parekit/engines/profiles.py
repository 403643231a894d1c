"""TensorRT optimization profiles derived from a model's inputs and structure.

A profile gives every dynamic input a minimum, optimum and maximum shape; TensorRT checks the network at
each of the three points, so the shapes of one point must be ones the model can really be fed together.
parekit names the primary dims by role (:func:`parekit.analysis.dims.dim_role`) and derives the rest:

* encoders: ``batch`` and ``seq`` (:data:`ENCODER_DEFAULTS`); every input dim is one of them or fixed;
* decoders (the README's KV I/O contract): ``batch``, ``seq`` (new tokens per step) and ``past`` (tokens
  already cached; :data:`DECODER_DEFAULTS`) are primary; ``total`` = past + seq at each point, and every
  state input ``past<suffix>`` takes the shape of the state after ``past`` tokens. Passes that compress
  the cache add state dims of their own (kv-quant's ``q_tokens`` / ``q_groups`` / ``res_tokens``,
  kv-evict's bounded cache): those are read from ``present<suffix>`` after a prefill of ``past`` tokens
  run on ONNX Runtime (:mod:`parekit.engines.state_shapes`), so any model that keeps the contract gets
  consistent points without parekit knowing its pass. The point ``(seq=min, past=min)`` covers the first
  decode step, ``(seq=1, past=opt)`` a typical decode step, ``(seq=max, past=max)`` the largest chunk.

``--profile NAME=MIN,OPT,MAX`` overrides a primary dim by its name in the graph or by its role; a derived
dim cannot be overridden (it would make a point TensorRT rejects).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from parekit.analysis.dims import DIM_ROLE_ALIASES, dim_role
from parekit.backends.specs import TensorSpec
from parekit.errors import OptionError, ParekitError

__all__ = [
    "DECODER_DEFAULTS",
    "ENCODER_DEFAULTS",
    "MAX_DIM",
    "DimRange",
    "Profile",
    "derive_profile",
    "parse_profile_options",
]

MAX_DIM = 1 << 20
"""Largest size a ``--profile`` value may take."""


@dataclass(frozen=True)
class DimRange:
    """One dim's sizes at TensorRT's three profile points."""

    min: int
    opt: int
    max: int

    def as_list(self) -> list[int]:
        return [self.min, self.opt, self.max]


ENCODER_DEFAULTS: Mapping[str, DimRange] = {"batch": DimRange(1, 1, 16), "seq": DimRange(1, 128, 512)}
"""Encoders: 1 to 16 rows of 1 to 512 tokens, tuned for one row of 128."""

DECODER_DEFAULTS: Mapping[str, DimRange] = {
    "batch": DimRange(1, 1, 4),
    "seq": DimRange(1, 1, 512),
    "past": DimRange(0, 512, 2048),
}
"""Decoders: 1 to 4 rows; 1 to 512 new tokens a step (prefill chunks), tuned for 1 (decode); 0 to 2048
cached tokens, tuned for 512. Where the graph bounds positions (a position table), ``past`` and ``seq``
shrink to fit it."""

POINTS = ("min", "opt", "max")

class StateSource(Protocol):
    """Runs a decoder to measure its state (:class:`parekit.engines.state_shapes.StateProbe`)."""

    def at(self, tokens: int) -> dict[str, tuple[int, ...]]:
        """The shape of every state input after ``tokens`` tokens (batch 1)."""

    def cover(self, tokens: int) -> tuple[int, dict[str, tuple[int, ...]]]:
        """A context length >= ``tokens`` whose state bounds every state of up to ``tokens`` tokens."""


@dataclass
class Profile:
    """The derived profile.

    Attributes:
        dims: Every symbolic dim of the inputs → its range.
        origin: dim → where its range came from (``default``, ``--profile``, ``past + seq``, ``state``).
        shapes: input name → ``[min, opt, max]`` shapes (dynamic inputs only).
        notes: Facts worth a line in the report (e.g. a position table that capped the defaults).
    """

    dims: dict[str, DimRange] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, list[list[int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": {k: {"min": r.min, "opt": r.opt, "max": r.max, "from": self.origin.get(k)} for k, r in self.dims.items()},
            "inputs": {k: dict(zip(POINTS, v, strict=True)) for k, v in self.shapes.items()},
            "notes": list(self.notes),
        }


_OPTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_.:\-]{0,99})=(\d{1,8}),(\d{1,8}),(\d{1,8})$")


def parse_profile_options(options: Sequence[str]) -> dict[str, DimRange]:
    """``["seq=1,64,256", ...]`` → ``{"seq": DimRange(1, 64, 256)}``.

    Raises:
        OptionError: A malformed value, MIN > OPT > MAX, a size over :data:`MAX_DIM`, a name given twice.
    """
    out: dict[str, DimRange] = {}
    for text in options:
        m = _OPTION.match(text)
        if m is None:
            raise OptionError(f"--profile {text!r}: expected NAME=MIN,OPT,MAX with non-negative integers",
                              note="e.g. --profile seq=1,128,512 (a dim name of the model or batch/seq/past)")
        name, low, opt, high = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        if not low <= opt <= high:
            raise OptionError(f"--profile {name}: MIN <= OPT <= MAX does not hold for {low},{opt},{high}")
        if high > MAX_DIM:
            raise OptionError(f"--profile {name}: {high} is over the limit of {MAX_DIM}")
        if name in out:
            raise OptionError(f"--profile {name}: given twice")
        out[name] = DimRange(low, opt, high)
    return out


def _role_of(name: str, roles: Mapping[str, str]) -> str | None:
    return roles.get(name) or dim_role(name)


def derive_profile(
    inputs: Sequence[TensorSpec],
    *,
    kind: str,
    overrides: Mapping[str, DimRange],
    roles: Mapping[str, str] | None = None,
    position_bound: int | None = None,
    state: StateSource | None = None,
) -> Profile:
    """Derive the profile of a model from its input specs.

    Args:
        inputs: The graph inputs.
        kind: ``encoder`` or ``decoder`` (a decoder has ``past*`` inputs: the KV I/O contract).
        overrides: ``--profile`` values by dim name or role.
        roles: dim name → role where the ModelMap knows better than the name (its batch/seq dims).
        position_bound: Size of the position table the graph gathers from (decoders: caps past + seq).
        state: Runs the decoder, for state inputs with dims other than batch and past.

    Raises:
        OptionError: An override names no dim of the model, or a derived dim.
        ParekitError: An input dim that is unnamed, or that has no role and no override.
    """
    roles = dict(roles or {})
    decoder = kind == "decoder"
    states = [s for s in inputs if decoder and s.name.startswith("past")]
    plain = [s for s in inputs if s not in states]
    profile = Profile()
    names: dict[str, str | None] = {}  # every symbolic dim of the inputs → role
    for spec in inputs:
        if spec.shape is None:
            raise ParekitError(f"input '{spec.name}' has no declared rank; TensorRT needs one to build a profile")
        for axis, d in enumerate(spec.shape):
            if d is None:
                raise ParekitError(f"input '{spec.name}' axis {axis} is dynamic without a name",
                                   note="name the dim in the model (e.g. with onnx-ir) so a profile can size it")
            if isinstance(d, str):
                names.setdefault(d, _role_of(d, roles))
    _check_overrides(overrides, names, decoder, states)
    primary = dict(DECODER_DEFAULTS if decoder else ENCODER_DEFAULTS)
    if decoder and position_bound:
        _fit_positions(primary, position_bound, profile)
    for name, rng in overrides.items():
        primary[names.get(name) or name] = rng
    overridden_roles = {names.get(n) or n for n in overrides}
    if decoder:
        if primary["seq"].min < 1 or primary["batch"].min < 1:
            raise OptionError("--profile: batch and seq need MIN >= 1")
        past = _state_profile(profile, states, primary, names, state)
        primary["past"] = past
        primary["total"] = DimRange(*(past.as_list()[i] + primary["seq"].as_list()[i] for i in range(3)))
    for name, role in names.items():
        if name in profile.dims:
            continue
        if name in overrides:
            profile.dims[name], profile.origin[name] = overrides[name], "--profile"
        elif role is not None and role in primary:
            profile.dims[name] = primary[role]
            profile.origin[name] = (
                "past + seq" if role == "total" else "--profile" if role in overridden_roles else "default"
            )
    for spec in plain:
        for d in _symbolic(spec):
            if d not in profile.dims:
                raise ParekitError(f"input '{spec.name}': dim '{d}' has no default profile",
                                   note=f"give it one: --profile {d}=MIN,OPT,MAX")
        profile.shapes[spec.name] = [[_size(d, profile.dims, i) for d in spec.shape or ()] for i in range(3)]
    return profile


def _symbolic(spec: TensorSpec) -> list[str]:
    return [d for d in spec.shape or () if isinstance(d, str)]


def _size(d: int | str | None, dims: Mapping[str, DimRange], point: int) -> int:
    if isinstance(d, int):
        return d
    assert isinstance(d, str)
    return dims[d].as_list()[point]


def _check_overrides(overrides: Mapping[str, DimRange], names: Mapping[str, str | None], decoder: bool,
                     state: Sequence[TensorSpec]) -> None:
    state_only = {d for s in state for d in _symbolic(s)} - {n for n, r in names.items() if r == "batch"}
    known_roles = set(DECODER_DEFAULTS if decoder else ENCODER_DEFAULTS)
    for name in overrides:
        role = names.get(name) or (name if name in DIM_ROLE_ALIASES else None)
        if name not in names and name not in known_roles:
            listed = ", ".join(sorted(names)) or "none"
            raise OptionError(f"--profile {name}: the model has no such dim", note=f"its input dims: {listed}")
        if decoder and (role == "total" or (name in state_only and role != "past")):
            raise OptionError(f"--profile {name}: derived from the others (total = past + seq; state dims from the"
                              " state after `past` tokens), so it cannot be set",
                              note="set batch, seq and past instead")
        if role == "past" and name in names and not decoder:
            raise OptionError(f"--profile {name}: only decoders have a cache")


def _fit_positions(primary: dict[str, DimRange], bound: int, profile: Profile) -> None:
    seq, past = primary["seq"], primary["past"]
    if seq.max + past.max <= bound:
        return
    seq_max = max(1, min(seq.max, bound // 4))
    past_max = max(0, bound - seq_max)
    primary["seq"] = DimRange(seq.min, min(seq.opt, seq_max), seq_max)
    primary["past"] = DimRange(min(past.min, past_max), min(past.opt, past_max // 2), past_max)
    profile.notes.append(f"the model's position table holds {bound} positions: past + seq capped to it")


def _state_profile(profile: Profile, states: Sequence[TensorSpec], primary: Mapping[str, DimRange],
                   names: Mapping[str, str | None], source: StateSource | None) -> DimRange:
    """Sets the state inputs' shapes; returns the context lengths (past) of the three points."""
    batch, past = primary["batch"], primary["past"]
    standard = all(names.get(d) in ("batch", "past") for s in states for d in _symbolic(s))

    def assumed(tokens: int) -> dict[str, tuple[int, ...]]:
        return {s.name: tuple((tokens if names.get(d) == "past" else 0) if isinstance(d, str) else int(d or 0)
                              for d in s.shape or ()) for s in states}

    if standard:
        points, lengths = [assumed(t) for t in past.as_list()], past.as_list()
    else:
        if source is None:
            raise ParekitError("the decoder's state inputs carry dims other than batch and past, and nothing "
                               "can run the model to measure them")
        longest, top = source.cover(past.max)
        points = [assumed(0) if past.min == 0 else source.at(past.min), source.at(past.opt) if past.opt else assumed(0), top]
        lengths = [past.min, past.opt, longest]
        if longest != past.max:
            profile.notes.append(f"past max {past.max} → {longest}: the first context whose state bounds every "
                                 "smaller one")
    for spec in states:
        shapes = []
        for i in range(3):
            shape = list(points[i][spec.name])
            if spec.shape and isinstance(spec.shape[0], str):
                shape[0] = batch.as_list()[i]
            shapes.append(shape)
        profile.shapes[spec.name] = shapes
        for axis, d in enumerate(spec.shape or ()):
            if isinstance(d, str) and d not in profile.dims and names.get(d) != "batch":
                profile.dims[d] = DimRange(*(shapes[i][axis] for i in range(3)))
                profile.origin[d] = "default" if names.get(d) == "past" and standard else "state after `past` tokens"
    return DimRange(*lengths)
