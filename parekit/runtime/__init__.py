"""Loops around a model: decoder generation and evaluation under the KV I/O contract.

- :class:`~parekit.runtime.decoder.DecoderSession`: one step (feeds ``present*`` back as ``past*``);
- :func:`~parekit.runtime.generate.generate`: prefill + decode, greedy or seeded sampling, batch ≥ 1;
- :func:`~parekit.runtime.evaluate.evaluate_perplexity`: several models side by side on prose;
- :func:`~parekit.runtime.speculative.speculative_generate`: lossless self-speculative decoding with a
  drafter (:func:`~parekit.runtime.drafters.make_drafter`; docs/speculative.md);
- :class:`~parekit.runtime.exit_decode.ExitSession`: per-token exits over kv-fill pieces (docs/exits_decode.md);
- :func:`~parekit.runtime.compare.compare_decoding`: plain vs speculative vs exits, side by side;
- :class:`~parekit.segments.runner.SegmentRunner`: a segments directory run segment by segment, rows whose
  exit fired stopping early (re-exported from :mod:`parekit.segments`).
"""

from parekit.runtime.compare import compare_decoding
from parekit.runtime.decoder import DecoderSession, left_pad, state_nbytes
from parekit.runtime.drafters import make_drafter
from parekit.runtime.evaluate import ModelEval, evaluate_perplexity, prose_token_ids
from parekit.runtime.exit_decode import ExitSession, exit_generate
from parekit.runtime.generate import Generation, generate
from parekit.runtime.sampling import Sampler, SamplingOptions
from parekit.runtime.speculative import speculative_generate
from parekit.runtime.tokenizer import ByteTokenizer, load_tokenizer
from parekit.segments.runner import SegmentRunner

__all__ = [
    "ByteTokenizer",
    "DecoderSession",
    "ExitSession",
    "Generation",
    "ModelEval",
    "Sampler",
    "SegmentRunner",
    "SamplingOptions",
    "compare_decoding",
    "evaluate_perplexity",
    "exit_generate",
    "generate",
    "left_pad",
    "load_tokenizer",
    "make_drafter",
    "prose_token_ids",
    "speculative_generate",
    "state_nbytes",
]
