"""Graph definition (flow2one.graph) -> keyword arguments of launch_ros.actions.Node, one per node.

`launch`/`launch_ros` are not installable from PyPI, so the launch files stay one line of glue around
this function, which is plain Python and tested here; `ros2 launch flow2one <graph>.launch.py` on the
robot then starts exactly the graph that `flow2one run <graph>` starts in one process here.
"""

from __future__ import annotations

from pathlib import Path

from flow2one.graph import NODES, graph, linked_params, on_sim_time, params_path, read_params_file

PACKAGE = "flow2one"


def node_descriptions(graph_name: str, params_file: str | Path | None = None,
                      extra_params_files: tuple[str | Path, ...] = (), view: bool = False) -> list[dict]:
    """One dict per node of `graph_name`: package, executable, name, parameters, remappings, output.

    `params_file` replaces the graph's config/<graph>.yaml (e.g. a copy edited for one robot);
    `extra_params_files` are applied after it, per node, in order (later files win, as in ROS 2);
    `view` adds the view node (flow2one/nodes/view.py), a subscriber that any graph can carry; a replay
    node then waits for it before playing (each node is a process of its own, started in no set order).
    """
    spec = graph(graph_name)
    base = Path(params_file) if params_file else params_path(graph_name)
    files = [base, *map(Path, extra_params_files)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"parameter file {f} does not exist")
    names = (*spec.nodes, *(("view",) if view else ()))
    # the view follows the graph's clock: bag time when the graph's nodes run on it (replay)
    extra = {"replay": {"wait_for_nodes": "view"},
             "view": {"use_sim_time": True} if on_sim_time(read_params_file(base)) else {}} if view else {}
    linked = linked_params([read_params_file(f) for f in files], names)
    return [
        {
            "package": PACKAGE,
            "executable": NODES[name].executable,
            "name": name,
            "parameters": [str(f) for f in files] + [d for d in (extra.get(name), linked.get(name)) if d],
            "remappings": list(spec.remappings.get(name, ())),
            "output": "screen",
            "emulate_tty": True,
        }
        for name in names
    ]


def launch_description(graph_name: str):
    """The LaunchDescription of a graph, with a `params_file` launch argument (robot only: needs launch)."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def nodes(context):
        override = LaunchConfiguration("params_file").perform(context) or None
        view = LaunchConfiguration("view").perform(context).lower() in ("true", "1", "yes")
        return [Node(**d) for d in node_descriptions(graph_name, override, view=view)]

    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value="",
                              description=f"parameter YAML replacing config/{graph(graph_name).params}"),
        DeclareLaunchArgument("view", default_value="false",
                              description="also start the view node: Rerun viewer of cameras, cloud, chunks, path"),
        OpaqueFunction(function=nodes),
    ])
