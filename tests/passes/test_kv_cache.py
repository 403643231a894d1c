"""The shared KV rewiring helpers: site discovery, and a toy state rewrite that the runtime drives unchanged."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from parekit.analysis import discover
from parekit.backends.ort import check_loads
from parekit.errors import StructureError
from parekit.passes import kv_cache
from parekit.runtime import DecoderSession, generate


@pytest.mark.parametrize(("name", "opset"), [("llama-tiny", 18), ("gpt2-tiny", 23)])
def test_kv_layers_finds_every_cache(load_sample, name, opset):
    model = load_sample(name, opset)
    layers = kv_cache.kv_layers(model, discover(model))
    assert [layer.index for layer in layers] == [0, 1]
    for layer in layers:
        for site in layer.sites:
            assert site.suffix == f".{layer.index}.{site.role}"
            assert site.past.name == "past" + site.suffix and site.present.name == "present" + site.suffix
            assert site.concat.op_type == "Concat" and site.full is site.present  # unmodified export
            assert site.new.shape is not None and site.new.shape.rank() == 4 and site.axis == 2


def test_kv_layers_refuses_models_without_cache(load_sample):
    model = load_sample("minilm", 18)
    with pytest.raises(StructureError, match="no explicit KV cache"):
        kv_cache.kv_layers(model, discover(model))


def test_half_precision_state_round_trip(load_sample, sample_path):
    """Carry layer 0's key cache as float16 state under a new name: the runtime needs no change."""
    model = load_sample("llama-tiny", 18)
    mm = discover(model)
    site = kv_cache.kv_layers(model, mm)[0].key
    state = kv_cache.add_state_input(model, ".0.key.f16", ir.DataType.FLOAT16, ["batch", 2, "past", 16])
    up = ir.node("Cast", [state], attributes={"to": ir.DataType.FLOAT})
    up.outputs[0].dtype = ir.DataType.FLOAT
    kv_cache.insert_at_top(model, [up])
    kv_cache.replace_past(model, site, up.outputs[0])
    down = ir.node("Cast", [site.full], attributes={"to": ir.DataType.FLOAT16})
    with pytest.raises(ValueError, match="needs a type"):
        kv_cache.set_present(model, site, down.outputs[0])
    down.outputs[0].dtype = ir.DataType.FLOAT16
    down.outputs[0].shape = ir.Shape(["batch", 2, None, 16])
    model.graph.insert_after(site.concat, down)
    kv_cache.set_present(model, site, down.outputs[0])  # takes the name present.0.key ...
    model.graph.outputs.remove(down.outputs[0])  # ... which this toy drops: the state is present.0.key.f16
    kv_cache.add_state_output(model, ".0.key.f16", down.outputs[0])
    check_loads(model)

    assert "past.0.key" not in [v.name for v in model.graph.inputs]
    rewritten = DecoderSession(model)
    assert rewritten.empty_state(3)["past.0.key.f16"].dtype == np.float16
    prompts = [[5, 9, 200, 31, 7], [8, 1]]
    got = generate(rewritten, prompts, 8)
    want = generate(DecoderSession(sample_path("llama-tiny", 18)), prompts, 8)
    assert got.tokens == want.tokens
    assert got.kv_bytes < want.kv_bytes  # one of four caches at half the bytes
