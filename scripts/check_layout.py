#!/usr/bin/env python3
"""Checks the package layout that docs/design.md promises; exit status 1 when it does not hold.

* no module of ``parekit`` over ``--max-lines`` lines (400);
* no import circle between modules (every ``import`` counts, also those inside functions);
* every room imports only the rooms its row in ``ALLOWED`` names (docs/design.md, "Who may import whom").

Usage: ``python3 scripts/check_layout.py [--graph]`` from the repository root (``--graph`` prints the
room-level import graph as it is).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

import networkx as nx

# Room -> the rooms it may import (besides itself). A room is the first component under ``parekit``;
# ``parekit`` itself is the package's __init__ (its version string).
LEAVES = {"errors", "progress", "atomic", "parekit"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "progress": set(),
    "atomic": set(),
    "parekit": {"errors"},
    "data": set(),
    "ops": set(),
    "native": set(),
    "analysis": {"ops"},
    "frontends": {"analysis", "data"},
    "backends": {"ops", "native"},
    "calibration": {"analysis", "backends"},
    "passes": {"analysis", "ops", "calibration"},
    "parity": {"analysis", "backends", "data"},
    "bench": {"backends", "data"},
    "runtime": {"analysis", "backends", "data", "segments"},  # segments: SegmentRunner re-exported (issue 11)
    "testing": {"backends", "parity"},
    # early exit (issue 11): segments cut a model at exits; the runtime re-exports their runner
    "segments": {"analysis", "ops", "backends"},
    "cli": {"*"},
    # lowering (issue 14): profiles from the structure, state shapes from the runtime, the precision pass
    "engines": {"analysis", "backends", "ops", "passes", "runtime"},
    # early exit (issue 11): trained exit adapters (torch lazily, samples extra)
    "training": {"analysis", "backends", "calibration", "data", "passes"},
    # serving (issue 15): Triton model repositories; the contract's names from runtime, state-reset from passes
    "serving": {"backends", "passes", "runtime"},
}


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for f in sorted((root / "parekit").rglob("*.py")):
        name = ".".join(f.relative_to(root).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            candidates = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for cand in candidates:
            while cand and cand not in mods:
                cand = cand.rpartition(".")[0]
            # A package and its own submodules are one unit (as Python imports them).
            if cand and cand != name and not cand.startswith(name + ".") and not name.startswith(cand + "."):
                found.add(cand)
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "parekit"


def check(root: Path, max_lines: int = 400) -> tuple[list[str], nx.DiGraph]:
    """Returns the list of violations and the room-level import graph."""
    mods = _modules(root)
    problems: list[str] = []
    graph = nx.DiGraph()
    rooms = nx.DiGraph()
    for name, path in mods.items():
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines > max_lines:
            problems.append(f"{path.relative_to(root)}: {lines} lines (at most {max_lines})")
        graph.add_node(name)
        for dep in _imports(name, path, mods):
            graph.add_edge(name, dep)
            src, dst = _room(name), _room(dep)
            if src != dst:
                rooms.add_edge(src, dst)
    for cycle in sorted(nx.simple_cycles(graph), key=lambda c: (len(c), c))[:10]:
        problems.append("import circle: " + " -> ".join([*cycle, cycle[0]]))
    for src, dst in sorted(rooms.edges):
        allowed = ALLOWED.get(src)
        if allowed is None:
            problems.append(f"room parekit/{src}/ is not in docs/design.md's import table")
        elif dst not in allowed | LEAVES and "*" not in allowed:
            problems.append(f"room {src} imports {dst}: not allowed by docs/design.md")
        if dst == "cli":
            problems.append(f"room {src} imports cli: nothing may import cli")
    return problems, rooms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--max-lines", type=int, default=400)
    parser.add_argument("--graph", action="store_true", help="print the room-level import graph")
    args = parser.parse_args()
    problems, rooms = check(args.root, args.max_lines)
    if args.graph:
        deps: dict[str, list[str]] = defaultdict(list)
        for src, dst in sorted(rooms.edges):
            deps[src].append(dst)
        for src in sorted(deps):
            print(f"{src:12s} -> {', '.join(deps[src])}")
    mods = _modules(args.root)
    largest = max(mods.values(), key=lambda p: p.read_text(encoding="utf-8").count("\n"))
    print(
        f"{len(mods)} modules; largest {largest.relative_to(args.root)} "
        f"({largest.read_text(encoding='utf-8').count(chr(10))} lines); "
        f"{'no problems' if not problems else f'{len(problems)} problem(s)'}"
    )
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
