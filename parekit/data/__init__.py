"""Text data: the prose corpus and turning text into model feeds.

A leaf room (standard library, NumPy, onnx-ir and a caller's tokenizer; no backend, no frontend):

- :mod:`parekit.data.prose`: English paragraphs from the Python docs shipped with the standard
  library (``pydoc_data.topics``), and a token stream cut from them;
- :mod:`parekit.data.text_feeds`: tokenized batches shaped as a model's feed dicts.

Random feeds and ``.npz`` files live in :mod:`parekit.parity` (they need a model's input specs).
"""

from parekit.data.prose import prose_halves, prose_paragraphs, prose_prompts, prose_token_ids
from parekit.data.text_feeds import tokenize_feeds

__all__ = ["prose_halves", "prose_paragraphs", "prose_prompts", "prose_token_ids", "tokenize_feeds"]
