"""Profiles derived for ``parekit build``: defaults, overrides, and consistent decoder points."""

from __future__ import annotations

import numpy as np
import pytest

from parekit.backends.specs import TensorSpec
from parekit.engines.profiles import (
    DECODER_DEFAULTS,
    ENCODER_DEFAULTS,
    DimRange,
    derive_profile,
    parse_profile_options,
)
from parekit.errors import OptionError, ParekitError

I64, F32 = np.dtype(np.int64), np.dtype(np.float32)
ENCODER = [TensorSpec("input_ids", I64, ("batch", "seq")), TensorSpec("attention_mask", I64, ("batch", "seq"))]
DECODER = [
    TensorSpec("input_ids", I64, ("batch", "seq")),
    TensorSpec("attention_mask", I64, ("batch", "total")),
    TensorSpec("position_ids", I64, ("batch", "seq")),
    TensorSpec("past.0.key", F32, ("batch", 2, "past", 16)),
    TensorSpec("past.0.value", F32, ("batch", 2, "past", 16)),
]


def test_encoder_defaults_and_overrides():
    p = derive_profile(ENCODER, kind="encoder", overrides={})
    assert p.dims == dict(ENCODER_DEFAULTS)
    assert p.shapes["input_ids"] == [[1, 1], [1, 128], [16, 512]]
    p = derive_profile(ENCODER, kind="encoder", overrides=parse_profile_options(["seq=8,64,256"]))
    assert p.dims["seq"] == DimRange(8, 64, 256) and p.origin["seq"] == "--profile"
    assert p.shapes["attention_mask"][2] == [16, 256]


def test_decoder_points_are_consistent():
    p = derive_profile(DECODER, kind="decoder", overrides=parse_profile_options(["past=0,100,1000", "seq=1,2,64"]))
    for i in range(3):
        seq = p.shapes["input_ids"][i][1]
        total = p.shapes["attention_mask"][i][1]
        past = p.shapes["past.0.key"][i][2]
        assert total == past + seq, (i, p.shapes)
        assert p.shapes["past.0.key"][i][0] == p.shapes["input_ids"][i][0]  # the state's batch axis follows batch
    assert p.dims["total"] == DimRange(1, 102, 1064) and p.origin["total"] == "past + seq"
    defaults = derive_profile(DECODER, kind="decoder", overrides={})
    assert defaults.dims["past"] == DECODER_DEFAULTS["past"]


def test_position_table_caps_the_defaults():
    p = derive_profile(DECODER, kind="decoder", overrides={}, position_bound=1024)
    assert p.dims["total"].max <= 1024
    assert any("position table" in n for n in p.notes)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["seq"], "expected NAME=MIN,OPT,MAX"),
        (["seq=4,2,8"], "MIN <= OPT <= MAX"),
        (["seq=1,2,99999999"], "over the limit"),
        (["seq=1,2,8", "seq=1,2,8"], "given twice"),
        (["seq=1,-2,8"], "expected NAME=MIN,OPT,MAX"),
    ],
)
def test_bad_profile_options(options, message):
    with pytest.raises(OptionError, match=message):
        parse_profile_options(options)


def test_overrides_name_real_primary_dims():
    with pytest.raises(OptionError, match="no such dim"):
        derive_profile(ENCODER, kind="encoder", overrides={"tokens_x": DimRange(1, 2, 3)})
    with pytest.raises(OptionError, match="derived from the others"):
        derive_profile(DECODER, kind="decoder", overrides={"total": DimRange(1, 2, 3)})
    with pytest.raises(OptionError, match="MIN >= 1"):
        derive_profile(DECODER, kind="decoder", overrides={"seq": DimRange(0, 1, 3)})


def test_dims_without_a_role_need_a_profile():
    specs = [TensorSpec("x", F32, ("batch", "frames", 80))]
    with pytest.raises(ParekitError, match="dim 'frames' has no default profile"):
        derive_profile(specs, kind="encoder", overrides={})
    p = derive_profile(specs, kind="encoder", overrides={"frames": DimRange(10, 100, 300)})
    assert p.shapes["x"] == [[1, 10, 80], [1, 100, 80], [16, 300, 80]]
    with pytest.raises(ParekitError, match="axis 1 is dynamic without a name"):
        derive_profile([TensorSpec("x", F32, ("batch", None))], kind="encoder", overrides={})


class FakeState:
    """A kv-quant-like state: ``q`` grows a group of 8 at a time, ``r`` cycles in [4, 11]."""

    def __init__(self):
        self.calls = []

    def split(self, tokens):
        q = max(0, (tokens - 4) // 8 * 8)
        return q, tokens - q

    def shapes(self, tokens):
        q, r = self.split(tokens)
        return {"past.0.codes": (1, 2, q, 16), "past.0.res": (1, 2, r, 16)}

    def at(self, tokens):
        self.calls.append(("at", tokens))
        return self.shapes(tokens)

    def cover(self, tokens):
        self.calls.append(("cover", tokens))
        longest = tokens
        while self.split(longest)[1] != 11:
            longest += 1
        return longest, self.shapes(longest)


def test_state_dims_come_from_the_state_source():
    specs = [*DECODER[:3], TensorSpec("past.0.codes", np.dtype(np.int8), ("batch", 2, "q_tokens", 16)),
             TensorSpec("past.0.res", F32, ("batch", 2, "res_tokens", 16))]
    source = FakeState()
    p = derive_profile(specs, kind="decoder", overrides=parse_profile_options(["past=0,100,1000"]), state=source)
    assert ("cover", 1000) in source.calls and ("at", 100) in source.calls
    assert p.dims["res_tokens"].max == 11  # the cycle's top, not the residual at exactly 1000 tokens
    for i in range(3):  # one real state per point: q + r = past, total = past + seq
        q, r = p.shapes["past.0.codes"][i][2], p.shapes["past.0.res"][i][2]
        assert p.shapes["attention_mask"][i][1] == q + r + p.shapes["input_ids"][i][1]
    assert any("1000 →" in n for n in p.notes)
    with pytest.raises(ParekitError, match="nothing can run the model"):
        derive_profile(specs, kind="decoder", overrides={})
    with pytest.raises(OptionError, match="derived from the others"):
        derive_profile(specs, kind="decoder", overrides={"q_tokens": DimRange(0, 1, 2)}, state=source)
