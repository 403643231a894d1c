"""Small Triton HTTP client calls for parekit's exported models (tests, the load bench, users' scripts).

``tritonclient``'s HTTP client is not meant to be shared between threads: make one per thread
(:func:`client`). ``decode`` drives a python-backend decoder the way its ``model.py`` expects: the prompt
with ``sequence_start``, then one token a request, ``sequence_end`` on the last.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TIMEOUT_S", "client", "decode", "embed"]

TIMEOUT_S = 60.0
"""Network timeout of every client call: a hung server fails the test instead of stalling it."""


def client(url: str) -> Any:
    """An HTTP client of the server at ``url`` (``host:port``) with bounded timeouts."""
    import tritonclient.http as http

    return http.InferenceServerClient(url, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)


def embed(cl: Any, model: str, ids: np.ndarray, mask: np.ndarray,
          outputs: tuple[str, ...] = ("sentence_embedding",)) -> dict[str, np.ndarray]:
    """One encoder request; the named outputs as arrays."""
    import tritonclient.http as http

    inputs = [http.InferInput("input_ids", list(ids.shape), "INT64"),
              http.InferInput("attention_mask", list(mask.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    result = cl.infer(model, inputs, outputs=[http.InferRequestedOutput(o) for o in outputs])
    return {o: result.as_numpy(o) for o in outputs}


def decode(cl: Any, model: str, sequence_id: int, prompt: list[int], steps: int) -> list[int]:
    """Greedy ids of one sequence: the prompt at START, then each new token, END on the last request."""
    import tritonclient.http as http

    ids = np.array([prompt], np.int64)
    tokens: list[int] = []
    for i in range(steps):
        inp = http.InferInput("input_ids", list(ids.shape), "INT64")
        inp.set_data_from_numpy(ids)
        result = cl.infer(model, [inp], sequence_id=sequence_id, sequence_start=i == 0, sequence_end=i == steps - 1)
        token = int(result.as_numpy("next_token")[0, 0])
        tokens.append(token)
        ids = np.array([[token]], np.int64)
    return tokens
