"""Launch files: every graph has one, and each builds exactly the graph of flow2one/graph.py.

`launch`/`launch_ros` are not installable here (not on PyPI), so the launch files are executed against
minimal stand-in modules that record what the files construct; the real API names used are the ones
the stand-ins define (LaunchDescription, DeclareLaunchArgument, OpaqueFunction, LaunchConfiguration,
launch_ros.actions.Node). On the robot `ros2 launch flow2one <graph>.launch.py` runs the same code.
"""

from __future__ import annotations

import re
import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

from flow2one.graph import GRAPHS, NODES, linked_params, params_path, read_params_file
from flow2one.launch_graph import node_descriptions
from flow2one.paths import repo_root

ROOT = repo_root()
LAUNCH = ROOT / "launch"
PKG = ROOT / "ros2_ws" / "src" / "flow2one"


def _console_scripts() -> set[str]:
    return set(re.search(r"NODES = \[(.*?)\]", (PKG / "setup.py").read_text()).group(1)
               .replace('"', "").replace(" ", "").split(","))


def test_node_descriptions_follow_the_graph() -> None:
    scripts = _console_scripts()
    for name, spec in GRAPHS.items():
        descs = node_descriptions(name)
        assert [d["name"] for d in descs] == list(spec.nodes)
        params = yaml.safe_load(params_path(name).read_text())
        linked = linked_params([read_params_file(params_path(name))], spec.nodes)
        for d in descs:
            assert d["package"] == "flow2one"
            assert d["executable"] == NODES[d["name"]].executable and d["executable"] in scripts
            # the file, then what LINKS copy into the node from another node's section of it
            assert d["parameters"] == [str(params_path(name)), *([linked[d["name"]]] if d["name"] in linked else [])]
            assert d["name"] in params, f"config/{spec.params} has no section for node {d['name']}"
            assert d["remappings"] == list(spec.remappings.get(d["name"], ()))


def test_params_override_and_missing_file(tmp_path: Path) -> None:
    mine = tmp_path / "robot.yaml"
    mine.write_text("executor:\n  ros__parameters: {}\n")
    descs = node_descriptions("deploy", params_file=mine)
    assert all(d["parameters"] == [str(mine)] for d in descs)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        node_descriptions("deploy", params_file=tmp_path / "nope.yaml")
    with pytest.raises(KeyError, match="unknown graph"):
        node_descriptions("moon")


class _Recorded:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def _stand_in_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    class LaunchConfiguration(_Recorded):
        def perform(self, context) -> str:
            return context[self.args[0]]

    mods = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
    }
    mods["launch"].LaunchDescription = type("LaunchDescription", (_Recorded,), {})
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorded,), {})
    mods["launch.actions"].OpaqueFunction = type("OpaqueFunction", (_Recorded,), {})
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (_Recorded,), {})
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_launch_file_builds_the_graph(graph_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = LAUNCH / f"{graph_name}.launch.py"
    assert path.is_file(), f"launch/{graph_name}.launch.py missing"
    assert (PKG / "launch").resolve() == LAUNCH.resolve()  # what setup.py installs to share/flow2one/launch
    _stand_in_launch(monkeypatch)
    ld = runpy.run_path(str(path))["generate_launch_description"]()
    declare, view, opaque = ld.args[0]
    assert declare.args[0] == "params_file" and view.args[0] == "view" and view.kwargs["default_value"] == "false"
    nodes = opaque.kwargs["function"]({"params_file": "", "view": "false"})
    assert [n.kwargs["name"] for n in nodes] == list(GRAPHS[graph_name].nodes)
    assert [n.kwargs for n in nodes] == node_descriptions(graph_name)
    mine = tmp_path / "mine.yaml"
    mine.write_text("{}\n")
    nodes = opaque.kwargs["function"]({"params_file": str(mine), "view": "true"})  # view:=true adds the view node
    assert [n.kwargs["name"] for n in nodes] == [*GRAPHS[graph_name].nodes, "view"]
    assert nodes[-1].kwargs["executable"] == "view" and "view" in _console_scripts()
    # the replay node waits for the view's process before it plays (nodes/replay.py, wait_for_nodes)
    assert all(n.kwargs["parameters"] == [str(mine)] + ([{"wait_for_nodes": "view"}] if n.kwargs["name"] == "replay"
                                                       else []) for n in nodes)
    # the view runs on the graph's clock: bag time where the graph's own nodes do (replay.yaml's use_sim_time)
    view_params = node_descriptions(graph_name, view=True)[-1]["parameters"]
    assert ({"use_sim_time": True} in view_params) == (graph_name == "replay")
