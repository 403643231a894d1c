"""``parekit native`` (status, ``--json``, ``--path``, ``build``) and ``--native/--no-native`` on check, bench,
generate and eval: which library ran is in the JSON reports, ``--native`` without a library is a one-line
error, and the kernels give bit-exact results where the ops move data. Torch-free (the harness's decoder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from parekit.ops import all_ops
from tests.passes import harness as h

VOCAB = 256  # the bytes tokenizer's ids fit


@pytest.fixture()
def not_built(tmp_path, monkeypatch):
    """A session in which no library is built: the build folder is empty."""
    empty = tmp_path / "empty-build"
    empty.mkdir()
    monkeypatch.setenv("PAREKIT_NATIVE_BUILD_DIR", str(empty))
    monkeypatch.delenv("PAREKIT_ORT_LIBRARY", raising=False)
    return empty


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The harness decoder (256-token vocabulary), its kv-window identity and a real kv-window config."""
    folder = tmp_path_factory.mktemp("native-models")
    base = h.decoder_model(vocab=VOCAB)
    paths = {"base": folder / "base.onnx"}
    onnx.save(ir.to_proto(base), str(paths["base"]))
    for key, pipeline in (("identity", "kv-window{sink=2,window=64}"), ("window", "kv-window{sink=1,window=3}")):
        model, _ = h.apply(base, pipeline)
        paths[key] = folder / f"{key}.onnx"
        onnx.save(ir.to_proto(model), str(paths[key]))
    return paths


def _one_line_error(result, *needles: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.output
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("Note: ")), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.output
    return lines[0]


# ------------------------------------------------------------------------------------------------
# parekit native


def test_status_lists_the_built_library_its_kernels_and_the_toolchain(run_cli, native_library):
    payload = json.loads(run_cli("native", "--json").stdout)
    lib = payload["libraries"]["ort"]
    assert lib["built"] is True and Path(lib["path"]) == native_library
    assert {"KvWindow", "KvWindowMask"} <= set(lib["ops"])
    assert sorted(lib["ops"] + lib["ops_without_kernel"]) == sorted(op.op_type for op in all_ops())
    assert lib["loads"] is True and lib["ort_api_version"] >= 17
    assert payload["runtimes"]["onnxruntime"] == ort.__version__
    assert payload["tools"]["cmake"]["version"][0].isdigit() and payload["tools"]["c++"] is not None
    assert payload["headers"]["api_version"] == lib["ort_api_version"]
    text = run_cli("native").stdout
    assert str(native_library) in text and "KvWindow" in text and "loads in this ONNX Runtime: yes" in text
    assert run_cli("native", "--path", "ort").stdout.strip() == str(native_library)


def test_nothing_built_path_exits_1_and_native_is_a_one_line_error(run_cli, not_built, models):
    res = run_cli("native", "--path", "ort", code=1)
    assert res.stdout == "" and "not built" in res.stderr and "parekit native build" in res.stderr
    payload = json.loads(run_cli("native", "--json").stdout)
    assert payload["libraries"]["ort"]["built"] is False and payload["build_dir"] == str(not_built)
    assert "function bodies" in run_cli("native").stdout
    bad = run_cli("check", models["base"], models["window"], "--native", code=2)
    _one_line_error(bad, "libparekit_ort.so is not built", "parekit native build")
    for flag in ("--no-native", None):  # absent: the bodies, as no library is built
        args = ["check", models["base"], models["identity"], "--seq", 16, "--json", *([flag] if flag else [])]
        assert json.loads(run_cli(*args).stdout)["native"] == {"reference": None, "candidate": None}


def test_a_file_onnx_runtime_cannot_load_is_named_in_one_line(run_cli, tmp_path, monkeypatch, models):
    junk = tmp_path / "libjunk.so"
    junk.write_text("not a shared library\n")
    monkeypatch.setenv("PAREKIT_ORT_LIBRARY", str(junk))
    for flag in ("--native", None):
        res = run_cli("check", models["base"], models["window"], *([flag] if flag else []), code=2)
        line = _one_line_error(res, str(junk), "--no-native")
        assert "cannot load the native library" in line
    assert run_cli("check", models["base"], models["identity"], "--seq", 16, "--no-native").exit_code == 0
    sanitized = tmp_path / "libparekit_asan.so"  # what marks AddressSanitizer code (never dlopened here)
    sanitized.write_bytes(b"\x7fELF...__asan_init...")
    monkeypatch.setenv("PAREKIT_ORT_LIBRARY", str(sanitized))
    _one_line_error(run_cli("check", models["base"], models["window"], code=2), "sanitizer build", str(sanitized))
    assert "error: " in run_cli("native").stdout
    missing = tmp_path / "nowhere.so"
    monkeypatch.setenv("PAREKIT_ORT_LIBRARY", str(missing))
    _one_line_error(run_cli("native", "--path", "ort", code=2), "PAREKIT_ORT_LIBRARY", str(missing))


def test_build_is_incremental_and_refuses_what_it_must_not_touch(run_cli, native_library, tmp_path, monkeypatch):
    res = run_cli("native", "build", "--build-dir", native_library.parent)
    assert res.stdout.startswith(f"built {native_library} ") and "KvWindow" in res.stdout
    stray = tmp_path / "not-a-build"
    stray.mkdir()
    (stray / "keep.txt").write_text("mine")
    _one_line_error(run_cli("native", "build", "--clean", "--build-dir", stray, code=2), "not a CMake build folder")
    assert (stray / "keep.txt").read_text() == "mine"
    _one_line_error(run_cli("native", "build", "--sanitize", "address;rm", code=2), "--sanitize")
    _one_line_error(run_cli("native", "--json", "build", code=2), "--json and --path")
    monkeypatch.setenv("PATH", str(tmp_path))  # no cmake
    _one_line_error(run_cli("native", "build", "--build-dir", tmp_path / "b", code=2), "needs 'cmake'")


# ------------------------------------------------------------------------------------------------
# --native / --no-native on the commands that run models


def test_check_native_is_bit_exact_against_no_native(run_cli, native_library, models, tmp_path):
    """The bodies' outputs saved as golden, then the kernels compared with them: max_abs 0 on every output,
    for the identity configuration and for a window that evicts (past 4 + 3 new > 1 + 3 kept)."""
    for key in ("identity", "window"):
        golden, feeds = tmp_path / f"{key}.g.npz", tmp_path / f"{key}.f.npz"
        run_cli("check", models[key], models[key], "--no-native", "--dim", "past=4", "--dim", "seq=3",
                "--samples", 2, "--batch", 2, "--save-golden", golden, "--save-feeds", feeds)
        res = run_cli("check", golden, models[key], "--data", feeds, "--native", "--threshold", "max_abs=0", "--json")
        payload = json.loads(res.stdout)
        assert payload["passed"] and payload["native"] == {"reference": None, "candidate": str(native_library)}
        assert set(payload["outputs"]) == {"logits", "present.0.key", "present.0.value", "present.1.key",
                                           "present.1.value"}
        assert all(m["max_abs"] == 0.0 for m in payload["outputs"].values()), payload["outputs"]
    both = json.loads(run_cli("check", models["base"], models["identity"], "--seq", 16, "--native", "--json").stdout)
    assert both["native"] == {"reference": str(native_library), "candidate": str(native_library)}
    table = run_cli("check", models["base"], models["identity"], "--seq", 16, "--native").stdout
    assert f"native kernels from {native_library}" in table


def test_bench_and_eval_json_say_which_ran(run_cli, native_library, models):
    pair = (models["base"], models["window"])
    common = ("--iters", 1, "--warmup", 0, "--no-memory", "--batch", 1, "--samples", 1, "--json")
    for flag, want in (("--native", str(native_library)), ("--no-native", None)):
        bench = json.loads(run_cli("bench", *pair, *common, flag).stdout)
        assert [m["native"] for m in bench["models"]] == [want, want]
        ev = json.loads(run_cli("eval", *pair, "--tokenizer", "bytes", "--ctx", 24, "--prefill", 4, "--json",
                                flag).stdout)
        assert [m["native"] for m in ev["models"]] == [want, want]
        assert ev["models"][1]["tokens_decode"] == 19
    # the same numbers both ways (kv-window's ops only move data)
    evs = [json.loads(run_cli("eval", *pair, "--tokenizer", "bytes", "--ctx", 24, "--prefill", 4, "--json",
                              flag).stdout)["models"] for flag in ("--native", "--no-native")]
    for a, b in zip(*evs, strict=True):
        assert (a["nll_all"], a["top1_agreement_all"], a["kv_bytes"]) == (b["nll_all"], b["top1_agreement_all"],
                                                                          b["kv_bytes"])


def test_generate_native_and_verbose_says_which_ran(run_cli, native_library, models):
    args = ("generate", models["window"], "--prompt", "abc", "--tokenizer", "bytes", "--max-new-tokens", 5)
    texts = {flag: run_cli(*args, flag).stdout for flag in ("--native", "--no-native")}
    assert texts["--native"] == texts["--no-native"] and texts["--native"].startswith("abc")
    res = run_cli("-v", *args, "--native")
    assert "native library" in res.stderr and native_library.name in res.stderr
    res = run_cli("-v", *args, "--no-native")
    assert "function bodies" in res.stderr and "--no-native" in res.stderr


def test_runner_flags_and_outputs_agree(native_library, models, not_built):
    """With nothing built: ``None`` runs the bodies, ``True`` is the one-line error; an explicit library
    (``$PAREKIT_ORT_LIBRARY``) is what ``None`` and ``True`` register."""
    from parekit.backends.ort import OrtRunner
    from parekit.native import NativeError

    feeds = h.decoder_feeds(vocab=VOCAB, past=4)  # the window model caches at most 4
    assert OrtRunner(models["window"], native=None).native_library is None
    with pytest.raises(NativeError, match="not built") as info:
        OrtRunner(models["window"], native=True)
    assert "parekit native build" in (info.value.note or "")
    bodies = OrtRunner(models["window"], native=False).run(feeds)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAREKIT_ORT_LIBRARY", str(native_library))
        for native in (None, True):
            runner = OrtRunner(models["window"], native=native)
            assert runner.native_library == native_library
            got = runner.run(feeds)
            for name, want in bodies.items():
                np.testing.assert_array_equal(got[name], want, err_msg=name)
