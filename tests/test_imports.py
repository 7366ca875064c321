"""The ROS-free core imports without rclpy, and no import cycle joins the package's modules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import flow2one

PACKAGE_DIR = Path(flow2one.__file__).resolve().parent
CORE = ("policy", "data", "train", "runtime", "perception", "control", "teleop", "sim")

# Every module of the core packages, imported in a fresh interpreter in which rclpy (and every ROS message
# package) cannot be imported: a finder at the front of sys.meta_path refuses them.
BLOCKED_IMPORT_SCRIPT = """
import importlib, json, pkgutil, sys

BLOCKED = ("rclpy", "rosidl_runtime_py", "std_msgs", "sensor_msgs", "geometry_msgs", "trajectory_msgs",
           "visualization_msgs", "diagnostic_msgs", "builtin_interfaces")

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the core must not need ROS")
        return None

sys.meta_path.insert(0, Blocker())
import flow2one
failed, done = {}, []
for pkg in json.loads(sys.argv[1]):
    base = importlib.import_module(f"flow2one.{pkg}")
    for info in pkgutil.walk_packages(base.__path__, prefix=f"flow2one.{pkg}."):
        try:
            importlib.import_module(info.name)
            done.append(info.name)
        except ImportError as exc:
            failed[info.name] = str(exc)
ros_layer = sorted(m for m in sys.modules if m.startswith(("flow2one.ros", "flow2one.nodes")))
print(json.dumps({"failed": failed, "done": done, "rclpy": "rclpy" in sys.modules, "ros_layer": ros_layer}))
"""


def test_core_imports_without_rclpy() -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT_SCRIPT, json.dumps(CORE)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] == {}, out["failed"]
    assert not out["rclpy"]
    assert out["ros_layer"] == []  # nor the ROS layer's modules: the core does not import them at import time
    for pkg in CORE:  # every package was walked, not an empty list
        assert any(m.startswith(f"flow2one.{pkg}.") for m in out["done"]), pkg
    assert "flow2one.sim.rollout" in out["done"] and "flow2one.runtime.policy_step" in out["done"]


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports, at module level or inside functions (a lazy import that
    closes a cycle is a cycle still: it only moves the failure to the first call)."""
    root = package_dir.parent
    modules = {}
    for f in package_dir.rglob("*.py"):
        name = ".".join(f.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = f
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, f in modules.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                # a package's own __init__ and its parents are not edges (importing a.b always runs a)
                if t and t != name and not name.startswith(t + "."):
                    graph[name].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(g) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph(PACKAGE_DIR)
    assert len(graph) > 100 and graph["flow2one.nodes.policy"] >= {"flow2one.runtime.policy_step"}
    assert find_cycles(graph) == []
