"""ros2 launch flow2one deploy.launch.py [params_file:=my.yaml]: the lab robot: RealSense cameras -> point cloud -> policy -> franky executor.

The node list, parameter file (config/deploy.yaml) and remappings come from the graph 'deploy' in
flow2one/graph.py, the same definition `flow2one run deploy` uses; see flow2one/launch_graph.py.
"""

from flow2one.launch_graph import launch_description


def generate_launch_description():
    return launch_description("deploy")
