"""flow2one: one-step generative manipulation policies on a Franka Panda, over ROS 2.

The core (policy, perception, control, data, sim, runtime) imports no rclpy; flow2one.nodes and
flow2one.ros are the thin ROS 2 layer on top.
"""

__version__ = "0.1.0"
