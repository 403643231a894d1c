"""The issue's own commands on the real SmolLM2-135M: ``parekit optimize … kv-window`` then ``parekit export
triton smollm2.w.onnx -o repo --backend python``, served by a real tritonserver on 127.0.0.1; the served
greedy ids equal ``generate``'s on the same file, for concurrent sequences."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.serving import served

pytestmark = [pytest.mark.serving, pytest.mark.slow]

# token ids of short English prompts (SmolLM2's tokenizer): fixed, so the test needs no tokenizer
PROMPTS = [[504, 3575, 282, 4649, 314], [9707, 2056, 253, 655], [1780, 3459, 30, 2030, 1326, 28]]


def test_served_smollm2_kv_window_equals_generate(tmp_path, sample_path, run_cli):
    from parekit.errors import BackendError
    from parekit.runtime import DecoderSession, generate
    from parekit.serving.triton_server import TritonServer, find_venv

    try:
        find_venv()
    except BackendError as exc:
        pytest.skip(str(exc))
    model = tmp_path / "smollm2.w.onnx"
    repo = tmp_path / "repo"
    run_cli("optimize", sample_path("smollm2"), "--passes", "kv-window{sink=4,window=508}", "-o", model)
    run_cli("export", "triton", model, "-o", repo, "--backend", "python")
    assert (repo / "smollm2_w" / "config.pbtxt").is_file()
    session = DecoderSession(model, threads=1)
    want = [generate(session, [p], 16).tokens[0] for p in PROMPTS]
    server = TritonServer(repo, log=tmp_path / "server.log")
    server.start()
    try:
        def run(i: int) -> list[int]:
            cl = served.client(server.http_url)
            try:
                return served.decode(cl, "smollm2_w", 1 + i, PROMPTS[i], 16)
            finally:
                cl.close()

        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            got = list(pool.map(run, range(len(PROMPTS)), timeout=served.TIMEOUT_S * 8))
    finally:
        orphans = server.stop()
    assert got == want
    assert orphans == []
