"""The one definition of the node graphs: which nodes, their parameter files, their remappings.

Read by the launch files (launch/*.launch.py), the in-process runner (`flow2one run GRAPH`) and the
tests, so the robot, the sim demo and CI start the same graph. This module imports no rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flow2one.paths import config_dir
from flow2one.yamlio import load_yaml


@dataclass(frozen=True)
class NodeSpec:
    """A node kind: its Python class (for the in-process runner) and console script (for launch)."""

    entry: str  # "module:Class"
    executable: str  # console_scripts name installed by setup.py


@dataclass(frozen=True)
class GraphSpec:
    nodes: tuple[str, ...]  # node names; each is both the ROS node name and a key of NODES
    params: str  # parameter file name in config/
    remappings: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    description: str = ""


NODES: dict[str, NodeSpec] = {
    "sim_world": NodeSpec("flow2one.nodes.sim_world:SimWorldNode", "sim_world"),
    "camera": NodeSpec("flow2one.nodes.camera:CameraNode", "camera"),
    "pointcloud": NodeSpec("flow2one.nodes.pointcloud:PointCloudNode", "pointcloud"),
    "policy": NodeSpec("flow2one.nodes.policy:PolicyNode", "policy"),
    "executor": NodeSpec("flow2one.nodes.executor:ExecutorNode", "executor"),
    "teleop": NodeSpec("flow2one.nodes.teleop:TeleopNode", "teleop"),
    "recorder": NodeSpec("flow2one.nodes.recorder:RecorderNode", "recorder"),
    "replay": NodeSpec("flow2one.nodes.replay:ReplayNode", "replay"),
    "view": NodeSpec("flow2one.nodes.view:ViewNode", "view"),
}
# Nodes any graph may add (`--view`, launch argument view:=true); config files leave them out.
OPTIONAL_NODES: tuple[str, ...] = ("view",)

GRAPHS: dict[str, GraphSpec] = {
    "deploy": GraphSpec(
        ("camera", "pointcloud", "policy", "executor"),
        "deploy.yaml",
        description="Lab robot: RealSense cameras -> 4,096-point cloud -> student -> franky executor.",
    ),
    "sim": GraphSpec(
        ("sim_world", "pointcloud", "policy", "executor"),
        "sim.yaml",
        description="The deploy graph with franky-sim and simulated RGB-D cameras instead of hardware.",
    ),
    "teleop_record": GraphSpec(
        ("camera", "pointcloud", "executor", "teleop", "recorder"),
        "teleop_record.yaml",
        description="Record SpaceMouse demonstrations on the robot, one MCAP file per episode.",
    ),
    "sim_teleop_record": GraphSpec(
        ("sim_world", "pointcloud", "executor", "teleop", "recorder"),
        "sim_teleop_record.yaml",
        description="Record demonstrations in the sim world.",
    ),
    "replay": GraphSpec(
        ("replay", "pointcloud", "policy"),
        "replay.yaml",
        description="Play a recorded bag into perception + policy and score the predicted chunks.",
    ),
}


# Parameters a node takes from another node's section of its graph's files, so that the two cannot disagree:
# the policy checks its model card against, and the recorder writes into each episode, the crop that the
# pointcloud node applies (flow2one/perception/crop.py).
CLOUD_CROP_LINKS = {"cloud_workspace_min": "workspace_min", "cloud_workspace_max": "workspace_max",
                    "cloud_voxel_size": "voxel_size"}
LINKS: dict[tuple[str, str], tuple[str, str]] = {
    (node, param): ("pointcloud", source) for node in ("policy", "recorder") for param, source in CLOUD_CROP_LINKS.items()}


def graph(name: str) -> GraphSpec:
    if name not in GRAPHS:
        raise KeyError(f"unknown graph {name!r}; known graphs: {', '.join(GRAPHS)}")
    return GRAPHS[name]


def params_path(name: str) -> Path:
    return config_dir() / graph(name).params


def read_params_file(path: str | Path) -> dict[str, dict]:
    """{node name: {param: value}} of a ROS 2 parameter file, with its shape checked, so a broken file
    fails here naming the file instead of inside rcl's YAML parser."""
    path = Path(path)
    data = load_yaml(path, "parameter file", mapping=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must map node names to {{ros__parameters: {{...}}}}, got {type(data).__name__}")
    out: dict[str, dict] = {}
    for node, body in data.items():
        if not isinstance(body, dict) or set(body) != {"ros__parameters"} \
                or not isinstance(body["ros__parameters"] or {}, dict):
            raise ValueError(f"{path}: '{node}' must map to {{ros__parameters: {{...}}}}")
        out[str(node)] = dict(body["ros__parameters"] or {})
    return out


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """`--set NODE.PARAM=VALUE` items -> {node: {param: value}}, each VALUE parsed as YAML."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise SystemExit(f"--set expects NODE.PARAM=VALUE, got {item!r}")
        out.setdefault(node, {})[param] = yaml.safe_load(value)
    return out


def on_sim_time(params: dict[str, dict]) -> bool:
    """Whether a graph's nodes run on a /clock (`use_sim_time`, the replay graph on the bag's): a node added
    to the graph, the view, must run on the same clock."""
    return any(bool(p.get("use_sim_time")) for p in params.values())


def linked_params(sections: list[dict[str, dict]], nodes: tuple[str, ...] | list[str]) -> dict[str, dict]:
    """{node: {param: value}} that LINKS give the `nodes` from `sections` (parameter files then overrides, later
    ones win). A value set for the linked parameter itself wins over the link; a node of the graph that the
    sections leave unset links nothing, and the node then does without the check."""
    out: dict[str, dict] = {}
    for (node, param), (src_node, src_param) in LINKS.items():
        if node not in nodes or any(param in s.get(node, {}) for s in sections):
            continue
        values = [s[src_node][src_param] for s in sections if src_param in s.get(src_node, {})]
        if values:
            out.setdefault(node, {})[param] = values[-1]
    return out


def load_params(name: str) -> dict[str, dict]:
    """{node name: {param: value}} of a graph's parameter file; every node named must be in the graph."""
    path = params_path(name)
    out = read_params_file(path)
    unknown = sorted(set(out) - set(graph(name).nodes) - set(OPTIONAL_NODES) - {"/**"})
    if unknown:
        raise ValueError(f"{path}: nodes {unknown} are not in graph {name!r} ({', '.join(graph(name).nodes)})")
    return out
