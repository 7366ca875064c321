"""ros2 launch flow2one teleop_record.launch.py [params_file:=my.yaml]: SpaceMouse demonstrations on the robot, one MCAP bag per episode.

The node list, parameter file (config/teleop_record.yaml) and remappings come from the graph 'teleop_record' in
flow2one/graph.py, the same definition `flow2one run teleop_record` uses; see flow2one/launch_graph.py.
"""

from flow2one.launch_graph import launch_description


def generate_launch_description():
    return launch_description("teleop_record")
