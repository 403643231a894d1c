"""Bad and hostile command lines: each is refused with one line (optionally + ``Note:``), exit 2,
no traceback, no new file, inputs byte-identical. Plus what must hold for good runs (``--json``
everywhere, help texts, terminal-safe echo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from parekit.cli.common import safe


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: file contents, or the kind of anything else."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "link:" + os.readlink(p)
        elif p.is_fifo():
            out[str(p)] = "fifo"
        elif p.is_dir():
            out[str(p)] = "dir"
        else:
            out[str(p)] = p.read_bytes()
    return out


def assert_refused(res, before: dict[str, bytes | str], root: Path, *words: str) -> None:
    """The error contract: exit 2, one line + optional Note, no traceback, nothing changed under root."""
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("error:"), res.output
    assert len(lines) == 1 or lines[1].startswith("Note:"), res.output  # a Note may show a caret under the text
    assert "Traceback" not in res.output and "internal error" not in res.output
    assert "\x1b" not in res.output and "\x07" not in res.output  # control characters never reach the terminal
    for word in words:
        assert word in res.output, res.output
    assert _tree(root) == before


@pytest.fixture()
def work(sample_path, tmp_path, monkeypatch):
    """tmp_path (the working folder) holding llama-tiny as m.onnx and a second copy as c.onnx."""
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(sample_path("llama-tiny"), tmp_path / "m.onnx")
    shutil.copyfile(sample_path("llama-tiny"), tmp_path / "c.onnx")
    return tmp_path


def _refuse(run_cli, work: Path, args: list[str], *words: str):
    before = _tree(work)
    res = run_cli(*args, code=None)
    assert_refused(res, before, work, *words)
    return res


DROP = ["--passes", "drop-layers{layers=[1]}"]

# §4.1: every output against every input and every other output
CLASHES = [
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--report", "m.onnx"], "--report"),
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--report", "o.onnx"], "--report"),
    (["optimize", "m.onnx", *DROP, "-o", "m.onnx"], "-o"),
    (["optimize", "m.onnx", *DROP, "-o", "./sub/../m.onnx"], "-o"),
    (["optimize", "m.onnx", *DROP, "-o", "alias.onnx"], "-o"),  # symlink to m.onnx
    (["optimize", "m.onnx", *DROP, "-o", "hard.onnx"], "-o"),  # hard link to m.onnx
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--report", "hard.onnx"], "--report"),
    (["optimize", "m.onnx", "--passes", "drop-layers{count=1}", "--calib", "f.npz", "-o", "o.onnx",
      "--report", "f.npz"], "--report"),
    (["check", "m.onnx", "c.onnx", "--json-file", "c.onnx"], "--json-file"),
    (["check", "m.onnx", "c.onnx", "--save-golden", "c.onnx"], "--save-golden"),
    (["check", "m.onnx", "c.onnx", "--save-feeds", "m.onnx"], "--save-feeds"),
    (["check", "m.onnx", "c.onnx", "--save-feeds", "x.npz", "--save-golden", "x.npz"], "--save-feeds"),
    (["check", "m.onnx", "c.onnx", "--json-file", "x.json", "--save-feeds", "alias2.json"], "--save-feeds"),
    (["check", "m.onnx", "c.onnx", "--data", "f.npz", "--save-feeds", "f.npz"], "--save-feeds"),
    (["bench", "m.onnx", "--json-file", "m.onnx"], "--json-file"),
    (["bench", "m.onnx", "c.onnx", "--json-file", "alias.onnx"], "--json-file"),
    (["eval", "m.onnx", "--json-file", "m.onnx"], "--json-file"),
]


@pytest.mark.parametrize(("args", "option"), CLASHES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CLASHES])
def test_an_output_never_replaces_an_input_or_another_output(run_cli, work, args, option):
    (work / "sub").mkdir()
    (work / "alias.onnx").symlink_to("m.onnx")
    (work / "alias2.json").symlink_to("x.json")
    os.link(work / "m.onnx", work / "hard.onnx")
    np_feeds = work / "f.npz"
    np_feeds.write_bytes(b"feeds stand-in")
    _refuse(run_cli, work, args, option, "same file")


PARTIAL = [
    (["optimize", "m.onnx", *DROP, "-o", "missing/o.onnx", "--report", "new/sub/r.json"], "missing"),
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--report", "new/sub/r.json"], "new/sub"),
    (["check", "m.onnx", "c.onnx", "--json-file", "p.json", "--save-feeds", "new/f.npz"], "new"),
    (["bench", "m.onnx", "--json-file", "new/b.json"], "new"),
    (["eval", "m.onnx", "--json-file", "new/e.json"], "new"),
    (["samples", "export", "llama-tiny", "-o", "new/x.onnx"], "new"),
    (["optimize", "m.onnx", *DROP, "-o", "fifo"], "not a regular file"),
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--report", "fifo"], "not a regular file"),
    (["check", "m.onnx", "c.onnx", "--json-file", "fifo"], "not a regular file"),
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--report", "folder"], "folder"),
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--report", "m.onnx/r.json"], "m.onnx/r.json"),
]


@pytest.mark.parametrize(("args", "word"), PARTIAL, ids=[" ".join(a[:1] + a[-2:]) for a, _ in PARTIAL])
def test_outputs_that_cannot_be_written_leave_nothing_behind(run_cli, work, args, word):
    """§4.7/§4.8: no folder is created, a FIFO is refused and stays a FIFO, the model is not written."""
    os.mkfifo(work / "fifo")
    (work / "folder").mkdir()
    _refuse(run_cli, work, args, word)
    assert (work / "fifo").is_fifo()


def test_all_outputs_of_a_good_run_appear_together_and_nothing_else(run_cli, work):
    run_cli("check", "m.onnx", "c.onnx", "--dim", "past=2", "--samples", "2", "--batch", "1", "--seq", "4", "--json-file", "p.json", "--save-golden", "g.npz",
            "--save-feeds", "f.npz")
    names = sorted(p.name for p in work.iterdir())
    assert names == ["c.onnx", "f.npz", "g.npz", "m.onnx", "p.json"]
    assert json.loads((work / "p.json").read_text())["passed"] is True
    umask = os.umask(0)
    os.umask(umask)
    assert (work / "p.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_staged_write_error_names_the_users_path(tmp_path):
    """§4.8: the temporary file's name never reaches the user."""
    from parekit.cli.outputs import Outputs
    from parekit.errors import DataError, ParekitError

    user = tmp_path / "out.npz"
    files = Outputs()
    files.add_output("--save-feeds", user)
    files.check()

    def failing(tmp: str) -> None:
        raise DataError(f"cannot write {tmp}: disk full")

    with pytest.raises(ParekitError) as info, files:
        files.stage(user, failing)
    assert str(user) in info.value.message and ".part" not in info.value.message

    def os_failing(tmp: str) -> None:
        raise OSError(28, "No space left on device", tmp)

    with pytest.raises(ParekitError) as info, files:
        files.stage(user, os_failing)
    assert str(user) in info.value.message and ".part" not in info.value.message
    assert list(tmp_path.iterdir()) == []


BIG = "9" * 5000
# §4.2/§4.4: bounds and bad values
BAD_VALUES = [
    (["bench", "m.onnx", "--threads", "1000000"], "--threads"),
    (["generate", "m.onnx", "--prompt", "x", "--threads", "1000000"], "--threads"),
    (["eval", "m.onnx", "--threads", "1000000"], "--threads"),
    (["check", "m.onnx", "c.onnx", "--seq", "100000000"], "--seq"),
    (["check", "m.onnx", "c.onnx", "--batch", "100000000"], "--batch"),
    (["check", "m.onnx", "c.onnx", "--batch", "4096", "--seq", "65536"], "tokens"),
    (["bench", "m.onnx", "--samples", "1000000000"], "--samples"),
    (["bench", "m.onnx", "--iters", "1000000000"], "--iters"),
    (["bench", "m.onnx", "--iters", "0"], "--iters"),
    (["generate", "m.onnx", "--prompt", "x", "--max-new-tokens", "1000000000"], "--max-new-tokens"),
    (["eval", "m.onnx", "--ctx", "1000000000"], "--ctx"),
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--calib", "random", "--samples", "1000000000"], "--samples"),
    (["check", "m.onnx", "c.onnx", "--dim", f"seq={BIG}"], "--dim"),
    (["check", "m.onnx", "c.onnx", "--dim", "batch=-1"], "--dim"),
    (["check", "m.onnx", "c.onnx", "--dim", "batch=0"], "--dim"),
    (["check", "m.onnx", "c.onnx", "--dim", "=3"], "--dim"),
    (["check", "m.onnx", "c.onnx", "--dim", "past"], "NAME=INTEGER"),
    (["check", "m.onnx", "c.onnx", "--dim", "nosuch=3"], "nosuch"),
    (["bench", "m.onnx", "--dim", "nosuch=3"], "nosuch"),
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--calib", "random", "--dim", "nosuch=3"], "nosuch"),
    (["optimize", "m.onnx", *DROP, "-o", "o.onnx", "--dim", "past=3"], "random"),
    (["check", "m.onnx", "c.onnx", "--data", "text", "--dim", "past=3"], "random"),
    (["check", "m.onnx", "c.onnx", "--seed", "-1"], "--seed"),
    (["generate", "m.onnx", "--prompt", "x", "--seed", "-1"], "--seed"),
    (["check", "m.onnx", "c.onnx", "--data", "text", "--seq", "1"], "--seq"),
    (["generate", "m.onnx", "--prompt", "x", "--sample", "--temperature", "nan"], "--temperature"),
    (["generate", "m.onnx", "--prompt", "x", "--sample", "--temperature", "inf"], "--temperature"),
    (["generate", "m.onnx", "--prompt", "x", "--sample", "--top-p", "nan"], "--top-p"),
    (["generate", "m.onnx", "--prompt", "ok", "--prompt", "a\udcffb", "--tokenizer", "bytes"], "--prompt #2"),
    (["check", "m.onnx", "c.onnx", "--bogus"], "--bogus"),
    (["--bogus"], "--bogus"),
    (["nosuch"], "nosuch"),
    (["samples", "nosuch"], "nosuch"),
    (["inspect", "m.onnx", "--\x1b]0;owned\x07"], "\\x1b]0;owned\\x07"),
    (["\x1b[2J"], "\\x1b[2J"),
]


@pytest.mark.parametrize(("args", "word"), BAD_VALUES, ids=[ascii(" ".join(a[:1] + a[-2:]))[:60] for a, _ in BAD_VALUES])
def test_bad_and_unbounded_values_are_one_line_errors(run_cli, work, args, word):
    res = _refuse(run_cli, work, args, word)
    assert len(res.output) < 600  # echoed input is capped


def test_unknown_dim_names_the_models_dims(run_cli, work):
    res = _refuse(run_cli, work, ["check", "m.onnx", "c.onnx", "--dim", "nosuch=3"])
    assert "past" in res.output and "batch" in res.output  # the model's own symbolic dims


def test_dims_the_model_has_still_work(run_cli, work):
    run_cli("check", "m.onnx", "c.onnx", "--dim", "past=3", "--dim", "batch=1", "--samples", "1", "--seq", "4")


# §4.6 / brief 8: what is echoed is terminal-safe


def test_safe_neutralizes_control_characters_and_caps_length():
    assert safe("a\x1b[2Jb\x07\x9b\u202e") == "a\\x1b[2Jb\\x07\\x9b\\u202e"
    assert safe("x\ny", keep_newlines=True) == "x\ny" and safe("x\ny") == "x\\ny"
    long = safe("\\" * 1_000_000, limit=100)
    assert len(long) < 200 and long.endswith("… (1,000,000 characters)")


def test_value_names_with_escapes_are_echoed_escaped(run_cli, work):
    import onnx_ir as ir

    from parekit.analysis import discover

    model = ir.load(work / "m.onnx")
    mm = discover(model)
    value = next(v for v in model.graph.all_nodes() for v in v.outputs if v.name == mm.layers[0].output)
    value.name = "\x1b]0;owned\x07\x1b[2J" + "\\" * 60_000
    ir.save(model, work / "evil.onnx")
    res = run_cli("inspect", work / "evil.onnx")
    assert "\x1b" not in res.output and "\x07" not in res.output and "\\x1b]0;owned" in res.output
    assert len(res.output) < 60_000


@pytest.mark.parametrize("text", ["\x1b[31mred", "drop-layers{layers=[1]}\x1b[2J", "\\" * 30_000 + "\x1b"],
                         ids=["esc", "esc-after", "backslashes"])
def test_pipeline_text_in_errors_is_escaped(run_cli, work, text):
    res = _refuse(run_cli, work, ["optimize", "m.onnx", "--passes", text, "-o", "o.onnx"])
    assert "\x1b" not in res.output


# §4.3 / §3: third-party noise and tracebacks


def test_an_unknown_op_is_a_one_line_error(run_cli, work):
    proto = onnx.load(str(work / "m.onnx"))
    next(n for n in reversed(proto.graph.node) if n.op_type == "Mul").op_type = "NoSuchOp"
    onnx.save(proto, str(work / "u.onnx"))
    _refuse(run_cli, work, ["optimize", "u.onnx", "--passes", "drop-layers{layers=[0]}", "-o", "o.onnx"], "NoSuchOp")


@pytest.fixture()
def noisy_command():
    """A command that makes the third-party noise parekit's commands meet (onnx-ir log lines with
    tracebacks, transformers log lines, torch/transformers warnings), added to the real group for one
    test; it returns what got through."""
    import logging
    import warnings

    import click

    from parekit.cli.main import cli

    seen: dict[str, object] = {}

    @click.command("noisy")
    def noisy() -> None:
        try:
            raise ValueError("inside onnx-ir")
        except ValueError:
            logging.getLogger("onnx_ir._shape_inference").warning("ONNX-IR NOISE", exc_info=True)
        seen["transformers logs"] = logging.getLogger("transformers.modeling_utils").isEnabledFor(logging.WARNING)
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn_explicit("TORCH NOISE", UserWarning, "torch/onnx/_x.py", 1, module="torch.onnx._x")
            warnings.warn_explicit("FUTURE NOISE", FutureWarning, "transformers/x.py", 1, module="transformers.x")
        seen["warnings"] = [str(w.message) for w in caught]
        logging.getLogger("parekit.passes").warning("parekit's own warning")
        click.echo("done", err=True)

    cli.add_command(noisy)
    yield seen
    cli.commands.pop("noisy")


def test_third_party_noise_is_hidden_unless_verbose(run_cli, noisy_command):
    quiet = run_cli("noisy").output
    assert "parekit's own warning" in quiet and "done" in quiet
    assert "ONNX-IR NOISE" not in quiet and "Traceback" not in quiet, quiet
    assert noisy_command == {"transformers logs": False, "warnings": []}
    loud = run_cli("-v", "noisy").output
    assert "ONNX-IR NOISE" in loud  # the test can fail: the noise is real, and -v shows it
    assert noisy_command == {"transformers logs": True, "warnings": ["TORCH NOISE", "FUTURE NOISE"]}


def _subprocess(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "parekit.cli.main", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)


def test_onnxruntime_native_log_is_hidden_unless_verbose(tmp_path):
    proto = onnx.parser.parse_model(
        '<ir_version: 10, opset_import: ["" : 18]> g (float[N] x) => (float[M] y)'
        "{ s = Constant<value = int64[1] {3}>() y = Reshape(x, s) }"
    )
    path = tmp_path / "reshape.onnx"
    onnx.save(proto, path)
    quiet = _subprocess("check", path, path, "--dim", "N=4")
    assert quiet.returncode == 2 and quiet.stderr.startswith("error:"), quiet.stderr
    assert "[E:onnxruntime" not in quiet.stderr and "Traceback" not in quiet.stderr
    loud = _subprocess("-v", "check", path, path, "--dim", "N=4")
    assert loud.returncode == 2 and "onnxruntime" in loud.stderr  # the test can fail: the noise is real


# --json has one meaning; help says what exists


def test_json_prints_json_on_stdout_for_every_command_that_has_it(run_cli, work):
    common = ["--dim", "past=2", "--samples", "1", "--batch", "1", "--seq", "4"]
    check = json.loads(run_cli("check", "m.onnx", "c.onnx", *common, "--json").stdout)
    assert check["passed"] is True
    bench = json.loads(run_cli("bench", "m.onnx", *common, "--iters", "1", "--warmup", "0", "--no-memory",
                               "--json").stdout)
    assert len(bench["models"]) == 1
    assert json.loads(run_cli("inspect", "m.onnx", "--json").stdout)["num_layers"] == 2
    run_cli("bench", "m.onnx", *common, "--iters", "1", "--warmup", "0", "--no-memory", "--json-file", "b.json")
    assert len(json.loads((work / "b.json").read_text())["models"]) == 1


def _all_commands():
    from parekit.cli.main import cli

    def walk(group, path):
        for name, cmd in group.commands.items():
            yield [*path, name]
            if hasattr(cmd, "commands"):
                yield from walk(cmd, [*path, name])

    return [[]] + list(walk(cli, []))


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "parekit")
def test_help_promises_only_what_exists(run_cli, path):
    text = run_cli(*path, "--help").output.lower()
    # early exit exists since issue 11, TensorRT plugins since issue 13 (`native`), engine plans since
    # issue 14 (`build`), Triton model repositories since issue 15 (`export`): only those speak of them
    if path[:1] not in (["export"], []):
        for word in ("triton", "model repository"):
            assert word not in text, (path, word)
    if path[:1] not in (["native"], ["build"], ["export"], []):
        assert "tensorrt" not in text, path


def test_cli_modules_are_small_and_never_import_main():
    import ast

    import parekit.cli

    folder = Path(parekit.cli.__file__).parent
    for path in folder.glob("*.py"):
        source = path.read_text()
        assert source.count("\n") <= 400, path
        if path.name == "main.py":
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "parekit.cli.main", path


@pytest.mark.slow
def test_a_fresh_export_prints_only_parekits_own_lines(tmp_path):
    """torch's ``torchvision is not installed`` lines and transformers' config notices stay hidden."""
    res = _subprocess("samples", "export", "gpt2-tiny", "-o", tmp_path / "g.onnx", "--cache-dir", tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines() == [f"wrote {tmp_path / 'g.onnx'} (1.0 MiB, gpt2-tiny, opset 18)"]
