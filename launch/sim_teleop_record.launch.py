"""ros2 launch flow2one sim_teleop_record.launch.py [params_file:=my.yaml]: SpaceMouse demonstrations in the sim world.

The node list, parameter file (config/sim_teleop_record.yaml) and remappings come from the graph 'sim_teleop_record' in
flow2one/graph.py, the same definition `flow2one run sim_teleop_record` uses; see flow2one/launch_graph.py.
"""

from flow2one.launch_graph import launch_description


def generate_launch_description():
    return launch_description("sim_teleop_record")
