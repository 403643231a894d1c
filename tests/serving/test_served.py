"""Exported repositories served by a real ``tritonserver`` (nvidia-pytriton's, Python backend only) on
127.0.0.1, queried over HTTP with ``tritonclient``; results equal local ONNX Runtime / ``generate``.

The repositories are written by the CLI exactly as a user would (``parekit export triton``). The
onnxruntime-backend repository is served through a *Python-based backend* named ``onnxruntime`` (the
encoder ``model.py`` under ``backends/onnxruntime/``): the server has no real ONNX Runtime backend, so
this checks the repository's layout, config, names, dims and batching in a real Triton, not NVIDIA's
backend itself. Needs ``build/triton-venv`` (``scripts/triton_venv.sh``; ``scripts/setup.sh`` makes it).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.serving import served

pytestmark = pytest.mark.serving

PROMPTS = [[3, 17, 42, 5], [9, 1], [11, 12, 13, 14, 15, 16], [250, 7, 7, 7, 31]]


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_path):
    from click.testing import CliRunner

    from parekit.cli.main import cli
    from parekit.errors import BackendError
    from parekit.serving.triton_server import TritonServer, find_venv

    try:
        find_venv()
    except BackendError as exc:
        pytest.skip(str(exc))
    work = tmp_path_factory.mktemp("served")
    repo = work / "repo"
    minilm_p = work / "minilm.p.onnx"
    llama_w = work / "llama.w.onnx"

    def run(*args) -> None:
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output

    run("optimize", sample_path("minilm"), "--passes", "token-prune{keep=0.5,layers=[2]}", "-o", minilm_p)
    run("optimize", sample_path("llama-tiny"), "--passes", "kv-window{sink=2,window=6}", "-o", llama_w)
    run("export", "triton", minilm_p, "-o", repo)  # the default: onnxruntime backend, name minilm_p
    run("export", "triton", sample_path("minilm"), "-o", repo, "--backend", "python", "--name", "minilm_py")
    run("export", "triton", sample_path("llama-tiny"), "-o", repo, "--backend", "python", "--name", "llama")
    run("export", "triton", llama_w, "-o", repo, "--backend", "python", "--name", "llama_w")
    from parekit.serving import triton_models

    standin = Path(triton_models.__file__).parent / "encoder.py"
    srv = TritonServer(repo, python_backends={"onnxruntime": standin}, log=work / "server.log")
    srv.start()
    srv.sources = {"minilm_p": minilm_p, "minilm_py": sample_path("minilm"), "llama": sample_path("llama-tiny"),
                   "llama_w": llama_w}
    yield srv
    stubs = served.children(srv.pid)
    orphans = srv.stop()
    assert srv.proc is not None and srv.proc.poll() is not None, "the server outlived its stop"
    assert stubs, "the Python backend ran no stub processes"
    assert orphans == [], f"backend stubs outlived the server: {orphans}"


def test_every_socket_of_the_server_and_its_stubs_listens_on_loopback_only(server):
    pids = [server.pid, *served.children(server.pid)]
    addresses = served.listening_addresses(pids)
    assert len(addresses) >= 3, addresses  # HTTP, gRPC, metrics
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses


def test_every_exported_model_is_ready(server):
    cl = served.client(server.http_url)
    try:
        for name in server.sources:
            assert cl.is_model_ready(name), name
        meta = cl.get_model_metadata("minilm_p")
        assert {i["name"] for i in meta["inputs"]} == {"input_ids", "attention_mask"}
    finally:
        cl.close()


@pytest.mark.parametrize("model", ["minilm_p", "minilm_py"])
def test_served_embeddings_equal_local_onnxruntime(server, model):
    import onnxruntime as ort

    local = ort.InferenceSession(str(server.sources[model]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    feeds = []
    for batch, seq in [(1, 9), (3, 16), (2, 5), (1, 64)]:
        ids = rng.integers(1000, 5000, size=(batch, seq)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[-1, seq - 2:] = 0  # padding on the last row
        feeds.append((ids, mask))

    def one(item):
        cl = served.client(server.http_url)
        try:
            return served.embed(cl, model, *item, outputs=("sentence_embedding", "last_hidden_state"))
        finally:
            cl.close()

    # concurrent requests of one shape can meet in a dynamic batch; each must still get its own rows
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, feeds * 2, timeout=served.TIMEOUT_S * 2))
    for (ids, mask), got in zip(feeds * 2, results):
        want = local.run(["sentence_embedding", "last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
        np.testing.assert_allclose(got["sentence_embedding"], want[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["last_hidden_state"], want[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", ["llama", "llama_w"])
def test_served_greedy_ids_equal_generate(server, model):
    from parekit.runtime import DecoderSession, generate

    session = DecoderSession(server.sources[model])
    cl = served.client(server.http_url)
    try:
        for i, prompt in enumerate(PROMPTS):
            assert served.decode(cl, model, 100 + i, prompt, 12) == generate(session, [prompt], 12).tokens[0]
    finally:
        cl.close()


def test_sixteen_concurrent_sequences_each_equal_their_solo_run(server):
    from parekit.runtime import DecoderSession, generate

    session = DecoderSession(server.sources["llama_w"])
    rng = np.random.default_rng(5)
    prompts = [rng.integers(1, 999, size=int(rng.integers(2, 9))).tolist() for _ in range(16)]
    solo = [generate(session, [p], 10).tokens[0] for p in prompts]

    def run(i: int) -> list[int]:
        cl = served.client(server.http_url)
        try:
            return served.decode(cl, "llama_w", 5000 + i, prompts[i], 10)
        finally:
            cl.close()

    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(run, range(16), timeout=served.TIMEOUT_S * 4))
    assert together == solo


def test_a_request_for_a_sequence_never_started_is_an_error(server):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    cl = served.client(server.http_url)
    try:
        inp = http.InferInput("input_ids", [1, 1], "INT64")
        inp.set_data_from_numpy(np.array([[4]], np.int64))
        with pytest.raises(InferenceServerException, match="START"):  # Triton refuses it before model.py
            cl.infer("llama", [inp], sequence_id=777, sequence_start=False)
        # and the server goes on
        assert served.decode(cl, "llama", 778, [1, 2, 3], 2)
    finally:
        cl.close()
