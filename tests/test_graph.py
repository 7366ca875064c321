"""The single graph definition: every graph's parameter file, every node entry, and clear errors for
broken parameter files. Static checks (no DDS); test_runner.py starts nodes for real."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import typing
from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter

from flow2one.graph import GRAPHS, NODES, GraphSpec, graph, load_params, params_path, read_params_file
from flow2one.paths import repo_root

SETUP_PY = repo_root() / "ros2_ws/src/flow2one/setup.py"


def declared_params_class(module) -> type:
    """The dataclass a node module passes to declare_params(self, X) (found in its source)."""
    calls = [n for n in ast.walk(ast.parse(inspect.getsource(module)))
             if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "declare_params"]
    assert len(calls) == 1, f"{module.__name__}: expected one declare_params(self, Params) call"
    arg = calls[0].args[1]
    if isinstance(arg, ast.Attribute):  # declare_params(self, self.PARAMS): the node class's PARAMS
        return next(v.PARAMS for v in vars(module).values()
                    if isinstance(v, type) and v.__module__ == module.__name__ and hasattr(v, "PARAMS"))
    return getattr(module, arg.id)


def as_field_value(value, hint):
    """A YAML value as declare_params hands it to the dataclass (lists become tuples for tuple fields)."""
    if isinstance(value, list) and typing.get_origin(hint) is tuple:
        return tuple(value)
    return value


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_params_load_and_name_only_its_nodes(name: str) -> None:
    spec = graph(name)
    assert params_path(name).is_file()
    params = load_params(name)
    assert set(params) <= set(spec.nodes), f"{name}: params for nodes outside the graph"
    assert set(spec.nodes) <= set(NODES)
    assert set(spec.remappings) <= set(spec.nodes)
    assert len(set(spec.nodes)) == len(spec.nodes)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_params_are_valid_for_their_nodes(name: str) -> None:
    """Every key is a parameter the node declares, and the values pass the node's own validation."""
    for node, values in load_params(name).items():
        # use_sim_time is ROS's own, declared by rclpy on every node; it must be a bool
        assert isinstance(values.pop("use_sim_time", False), bool), f"{name}.yaml: {node}.use_sim_time not a bool"
        module = importlib.import_module(NODES[node].entry.split(":")[0])
        cls = declared_params_class(module)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        assert not unknown, f"{name}.yaml: node {node} declares no parameter(s) {unknown}"
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(cls)}
        for key, value in values.items():  # rclpy parameters are statically typed: 125 is not 125.0
            want = Parameter.Type.from_parameter_value(list(defaults[key]) if isinstance(defaults[key], tuple)
                                                      else defaults[key])
            got = Parameter.Type.from_parameter_value(value)
            assert got == want or value == [], f"{name}.yaml: {node}.{key}={value!r} is {got.name}, not {want.name}"
        hints = typing.get_type_hints(cls)
        try:
            cls(**{k: as_field_value(v, hints[k]) for k, v in values.items()})
        except ValueError as exc:  # acceptable only if the defaults fail alike (a value required at run time)
            with pytest.raises(ValueError, match=re.escape(str(exc))):
                cls()


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_rcl_parses_graph_params_file(name: str, domain_id: int) -> None:
    """rcl's own YAML parser (what launch and the runner use) accepts the file."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(params_path(name))], context=ctx, domain_id=domain_id)
    rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("node", sorted(NODES))
def test_node_entry_has_class_and_main(node: str) -> None:
    from rclpy.node import Node

    module_name, cls_name = NODES[node].entry.split(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    assert issubclass(cls, Node)
    assert "node_name" in inspect.signature(cls).parameters
    assert callable(module.main)
    # the console script (setup.py: "<executable> = flow2one.nodes.<executable>:main") runs this module
    assert module_name == f"flow2one.nodes.{NODES[node].executable}"


def test_setup_py_installs_a_console_script_per_node() -> None:
    tree = ast.parse(SETUP_PY.read_text())
    lists = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "NODES"]
    assert ast.literal_eval(lists[0].value) == [spec.executable for spec in NODES.values()]


def test_unknown_graph_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown graph 'nope'; known graphs: deploy"):
        graph("nope")


@pytest.mark.parametrize("text,match", [
    ("recorder: [unclosed", "not valid YAML"),
    ("- recorder\n- policy\n", "must map node names"),
    ("recorder: 3\n", "'recorder' must map to"),
    ("recorder:\n  params: {a: 1}\n", "'recorder' must map to"),
    ("recorder:\n  ros__parameters: [1, 2]\n", "'recorder' must map to"),
])
def test_bad_params_file_is_a_clear_error(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        read_params_file(path)
    assert str(path) in str(info.value)


def test_missing_params_file_and_foreign_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="cannot read parameter file"):
        read_params_file(tmp_path / "absent.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing set\n")
    assert read_params_file(tmp_path / "empty.yaml") == {}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"recorder": {"ros__parameters": {"task": "x"}},
                                    "policy": {"ros__parameters": {}}}))
    # GraphSpec.params is joined to config/, so an absolute path points the graph at this file
    monkeypatch.setitem(GRAPHS, "test_only", GraphSpec(("recorder",), str(path)))
    with pytest.raises(ValueError, match=r"nodes \['policy'\] are not in graph 'test_only'"):
        load_params("test_only")
