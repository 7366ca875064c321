"""A newcomer finds each command, benchmark and node by its folder name, and README's "Layout" shows the tree."""

from __future__ import annotations

import re

from flow2one.bench import BENCHES
from flow2one.cli import COMMANDS
from flow2one.graph import GRAPHS
from flow2one.paths import repo_root

PACKAGE = repo_root() / "ros2_ws" / "src" / "flow2one" / "flow2one"


def layout_block() -> str:
    text = (repo_root() / "README.md").read_text()
    section = text[text.index("## Layout"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def test_every_command_is_a_module_of_apps_named_after_it() -> None:
    for name, (module, _) in COMMANDS.items():
        assert module == f"flow2one.apps.{name.replace('-', '_')}", name
    commands = {p.stem for p in (PACKAGE / "apps").glob("*.py")} - {"__init__"}
    assert {c for c in commands if not c.startswith("_")} == {n.replace("-", "_") for n in COMMANDS}


def test_every_benchmark_is_a_module_of_bench_named_after_its_key() -> None:
    assert {p.stem for p in (PACKAGE / "bench").glob("*.py")} - {"__init__", "timing"} == set(BENCHES)


def test_nodes_holds_the_nodes_only() -> None:
    nodes = {n for g in GRAPHS.values() for n in g.nodes} | {"view"}  # the view joins any graph (--view)
    assert {p.stem for p in (PACKAGE / "nodes").glob("*.py")} - {"__init__"} == nodes


def layout_paths(block: str) -> set[str]:
    """flow2one/... paths a line of the block starts with: `flow2one/a/ b/ c.py  text` names a, b and c.py."""
    named = set()
    for line in block.splitlines():
        words = line.split()
        if not words or not words[0].startswith("flow2one/"):
            continue
        parent = words[0].rstrip("/").rpartition("/")[0]
        named.add(words[0].rstrip("/"))
        for w in words[1:]:
            if not re.fullmatch(r"\w+/|\w+\.py", w):
                break
            named.add(f"{parent}/{w.rstrip('/')}")
    return named


def test_readme_layout_names_every_package_and_module_that_exists() -> None:
    named = layout_paths(layout_block())
    assert "flow2one/apps" in named and "flow2one/bench" in named
    for path in named:  # everything the block names exists
        assert (PACKAGE.parent / path).exists(), path
    packages = {p.parent.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("__init__.py")} - {"flow2one"}
    assert packages <= named, packages - named  # every package is in the block
    modules = {f"flow2one/{p.name}" for p in PACKAGE.glob("*.py")} - {"flow2one/__init__.py"}
    assert modules <= named, modules - named  # and every top-level module
