"""The zoo's cache key, catalogue and copies (no export: the cached entries are reused)."""

from __future__ import annotations

import hashlib
import os

import onnx_ir as ir
import pytest

from parekit.errors import ParekitError
from parekit.frontends import zoo


def test_cache_key_recipe_is_unchanged():
    """The key of existing cache entries: sample|opset|recipe|torch|transformers, sha256, 16 hex digits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    text = f"llama-tiny|18|1|{torch.__version__}|{transformers.__version__}"
    assert zoo.cache_key("llama-tiny", 18) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert zoo.cache_key("llama-tiny", 18) != zoo.cache_key("llama-tiny", 23)


def test_export_reuses_the_cache_entry(sample_path):
    path = sample_path("llama-tiny", 18)
    assert path.parent.name == f"llama-tiny-op18-{zoo.cache_key('llama-tiny', 18)}"
    assert zoo.export_sample("llama-tiny", opset=18) == path
    model = ir.load(path)
    assert zoo.sample_of(model) is zoo.SAMPLES["llama-tiny"]


def test_copy_export_is_complete_with_the_default_mode(sample_path, tmp_path):
    src = sample_path("llama-tiny", 18)
    dest = zoo.copy_export(src, tmp_path / "sub" / "m.onnx")
    assert dest.read_bytes() == src.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m.onnx"]  # no temporary left behind


def test_unknown_sample_and_opset():
    with pytest.raises(ParekitError, match="did you mean 'minilm'"):
        zoo.get_sample("minilmm")
    with pytest.raises(ParekitError, match="opset 12"):
        zoo.export_sample("llama-tiny", opset=12)


def test_text_feeds_need_a_text_sample(sample_path):
    model = ir.load(sample_path("llama-tiny", 18))  # a sample, but without a real tokenizer
    with pytest.raises(ParekitError, match="needs a tokenizer"):
        zoo.text_feeds(model, ["a"] * 8)
    model.metadata_props[zoo.SAMPLE_METADATA_KEY] = "vit"
    with pytest.raises(ParekitError, match="image model"):
        zoo.text_feeds(model, ["a"] * 8)
