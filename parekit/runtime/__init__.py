"""Loops around a model: decoder generation and evaluation under the KV I/O contract.

- :class:`~parekit.runtime.decoder.DecoderSession`: one step (feeds ``present*`` back as ``past*``);
- :func:`~parekit.runtime.generate.generate`: prefill + decode, greedy or seeded sampling, batch ≥ 1;
- :func:`~parekit.runtime.evaluate.evaluate_perplexity`: several models side by side on prose;
- :class:`~parekit.segments.runner.SegmentRunner`: a segments directory run segment by segment, rows whose
  exit fired stopping early (re-exported from :mod:`parekit.segments`).
"""

from parekit.runtime.decoder import DecoderSession, left_pad, state_nbytes
from parekit.runtime.evaluate import ModelEval, evaluate_perplexity, prose_token_ids
from parekit.runtime.generate import Generation, generate
from parekit.runtime.sampling import Sampler, SamplingOptions
from parekit.runtime.tokenizer import ByteTokenizer, load_tokenizer
from parekit.segments.runner import SegmentRunner

__all__ = [
    "ByteTokenizer",
    "DecoderSession",
    "Generation",
    "ModelEval",
    "Sampler",
    "SegmentRunner",
    "SamplingOptions",
    "evaluate_perplexity",
    "generate",
    "left_pad",
    "load_tokenizer",
    "prose_token_ids",
    "state_nbytes",
]
