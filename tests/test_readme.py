"""The README's "Command line" block and samples/quickstart.sh, run as tests so the docs cannot drift.

The commands are read from the files themselves (never copied here). The fast tests check every
command against the CLI's declared commands and options; the slow ones run them in a temporary folder,
``parekit`` replaced by ``python -m parekit.cli.main`` of this checkout, on the cached MiniLM export.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICKSTART = ROOT / "samples" / "quickstart.sh"
PAREKIT = [sys.executable, "-m", "parekit.cli.main"]


def readme_commands() -> list[list[str]]:
    """The ``parekit`` commands of the first bash block under the README's "## Command line" heading."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Command line\s*$(.*?)(?=^## )", text, flags=re.M | re.S)
    assert section, "README.md has no '## Command line' section"
    block = re.search(r"^```bash\s*$(.*?)^```", section.group(1), flags=re.M | re.S)
    assert block, "the README's Command line section has no ```bash block"
    return _commands(block.group(1))


def quickstart_commands() -> list[list[str]]:
    """The ``parekit`` commands of samples/quickstart.sh."""
    return _commands(QUICKSTART.read_text(encoding="utf-8"))


def _commands(script: str) -> list[list[str]]:
    joined = re.sub(r"\\\n", " ", script)  # line continuations
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "parekit":
            commands.append(words)
    assert commands, "no parekit command found"
    return commands


def _resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a word list names, and the words after the command path."""
    from parekit.cli.main import cli

    command: click.Command = cli
    rest = words[1:]
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


def _option_names(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


@pytest.mark.parametrize(
    "source", [pytest.param(readme_commands, id="readme"), pytest.param(quickstart_commands, id="quickstart")]
)
def test_documented_commands_exist_with_their_options(source):
    for words in source():
        command, rest = _resolve(words)
        assert not isinstance(command, click.Group) or not rest or rest[0].startswith("-"), (
            f"{shlex.join(words)}: no command {rest[0]!r}"
        )
        options = [w.split("=", 1)[0] for w in rest if w.startswith("-") and w != "-"]
        unknown = [o for o in options if o not in _option_names(command)]
        assert not unknown, f"{shlex.join(words)}: {command.name} has no option {', '.join(unknown)}"


def _env(bin_dir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")
    if bin_dir is not None:
        env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return env


def _written(commands: list[list[str]], folder: Path) -> list[Path]:
    """Every ``.onnx``/``.json`` file a command names: inputs and outputs must all exist afterwards."""
    return sorted({folder / w for words in commands for w in words if w.endswith((".onnx", ".json"))})


@pytest.mark.slow
def test_readme_command_line_block_runs(sample_path, tmp_path):
    sample_path("minilm")  # the export the block's `samples export` copies (cached once per machine)
    commands = readme_commands()
    for words in commands:
        done = subprocess.run(
            [*PAREKIT, *words[1:]], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, (
            f"{shlex.join(words)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
        assert "Traceback" not in done.stderr, done.stderr
    missing = [p.name for p in _written(commands, tmp_path) if not p.is_file()]
    assert not missing, f"the README's commands did not write {missing}"


@pytest.mark.slow
def test_quickstart_runs_without_its_setup_step(sample_path, tmp_path):
    """samples/quickstart.sh --no-setup in a copy of the samples folder, `parekit` on PATH being this checkout."""
    sample_path("minilm")
    (tmp_path / "samples").mkdir()
    script = tmp_path / "samples" / "quickstart.sh"
    script.write_text(QUICKSTART.read_text(encoding="utf-8"), encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "parekit"
    shim.write_text(f'#!/bin/sh\nexec {shlex.join(PAREKIT)} "$@"\n', encoding="utf-8")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    done = subprocess.run(
        ["bash", str(script), "--no-setup"], cwd=tmp_path, env=_env(bin_dir), capture_output=True, text=True,
        timeout=1200,
    )
    assert done.returncode == 0, f"quickstart.sh exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    assert "setup.sh" not in done.stderr, "--no-setup ran the setup step"
    missing = [p.name for p in _written(quickstart_commands(), tmp_path) if not p.is_file()]
    assert not missing, f"quickstart.sh did not write {missing}"
