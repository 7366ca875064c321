"""ros2 launch flow2one sim.launch.py [params_file:=my.yaml]: the deploy graph against franky-sim with simulated cameras.

The node list, parameter file (config/sim.yaml) and remappings come from the graph 'sim' in
flow2one/graph.py, the same definition `flow2one run sim` uses; see flow2one/launch_graph.py.
"""

from flow2one.launch_graph import launch_description


def generate_launch_description():
    return launch_description("sim")
