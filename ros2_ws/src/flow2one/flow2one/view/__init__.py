"""The live and recorded view (Rerun): what the robot sees, what the policy proposed and chose, where the arm
went. `log` is the ROS-free logging module; nodes/view.py feeds it from topics, sim-eval from its loop,
`flow2one view` from a dataset episode or a bag."""
