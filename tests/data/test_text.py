"""The prose corpus and tokenized text feeds (parekit.data)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from parekit.data import prose_paragraphs, prose_token_ids, tokenize_feeds
from parekit.errors import DataError
from parekit.runtime import ByteTokenizer

DECODER = """
<ir_version: 10, opset_import: ["" : 18]>
g (int64[batch, seq] input_ids, int64[batch, total] attention_mask, int64[batch, seq] position_ids,
   float[batch, 2, past, 4] past_0_key) => (int64[batch, seq] y) {
  y = Identity(input_ids)
}
"""


class _Tok:
    """A minimal Hugging Face-like tokenizer: one id per character, right padding with 0."""

    pad_token = None
    eos_token = "</s>"

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        assert truncation and return_tensors == "np"
        rows = [[ord(c) for c in t][:max_length] for t in texts]
        width = max_length if padding == "max_length" else max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), np.int32)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def test_prose_is_deterministic_and_bounded():
    first = prose_paragraphs(5)
    assert first == prose_paragraphs()[:5] and all(len(p) >= 200 for p in first)
    with pytest.raises(DataError, match="were asked for"):
        prose_paragraphs(10**6)
    ids = prose_token_ids(ByteTokenizer(), 100)
    assert len(ids) == 100 and ByteTokenizer().decode(ids).startswith(first[0][:50])


def test_tokenize_feeds_shapes_a_decoder_prefill():
    import onnx

    model = ir.from_proto(onnx.parser.parse_model(DECODER))
    tok = _Tok()
    feeds = tokenize_feeds(model, ["hello", "hi", "abc"], tok, seq_len=6, batch=2)
    assert len(feeds) == 1  # the third text does not fill a batch
    feed = feeds[0]
    assert sorted(feed) == ["attention_mask", "input_ids", "past_0_key", "position_ids"]
    assert feed["input_ids"].dtype == np.int64 and feed["input_ids"].shape == (2, 6)
    assert feed["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]
    assert feed["position_ids"].tolist() == [list(range(6))] * 2
    assert feed["past_0_key"].shape == (2, 2, 0, 4)
    assert tok.pad_token == "</s>"  # no pad token: end-of-sequence pads
    with pytest.raises(DataError, match="at least 2 texts"):
        tokenize_feeds(model, ["x"], tok, batch=2)


def test_prose_halves_are_disjoint_and_calibration_has_no_repeats():
    from parekit.data import prose_halves, prose_paragraphs

    evaluation, calibration = prose_halves()
    corpus = prose_paragraphs()
    assert evaluation == corpus[: len(corpus) // 2]
    assert not set(evaluation) & set(calibration)
    assert len(set(calibration)) == len(calibration)
    assert set(calibration) | set(evaluation) == set(corpus)  # only repeats were left out
