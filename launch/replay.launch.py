"""ros2 launch flow2one replay.launch.py [params_file:=my.yaml]: replay a recorded bag into point cloud + policy (open-loop evaluation).

The node list, parameter file (config/replay.yaml) and remappings come from the graph 'replay' in
flow2one/graph.py, the same definition `flow2one run replay` uses; see flow2one/launch_graph.py.
"""

from flow2one.launch_graph import launch_description


def generate_launch_description():
    return launch_description("replay")
