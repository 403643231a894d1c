"""The package layout docs/design.md promises: small modules, no import circle, rooms import as designed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_layout", ROOT / "scripts" / "check_layout.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_package_layout_holds():
    problems, _ = _checker().check(ROOT)
    assert problems == []


def test_checker_finds_circles_big_modules_and_forbidden_rooms(tmp_path):
    pkg = tmp_path / "parekit"
    for room in ("ops", "passes", "cli"):
        (pkg / room).mkdir(parents=True)
        (pkg / room / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "ops" / "a.py").write_text("from parekit.passes import b\n" + "x = 1\n" * 401)
    (pkg / "passes" / "b.py").write_text("def f():\n    from parekit.ops import a\n    from parekit.cli import c\n")
    (pkg / "cli" / "c.py").write_text("import parekit.passes.b\n")
    problems, _ = _checker().check(tmp_path)
    text = "\n".join(problems)
    assert "parekit/ops/a.py: 402 lines" in text
    assert "import circle: " in text and "parekit.ops.a" in text
    assert "room ops imports passes" in text
    assert "nothing may import cli" in text
