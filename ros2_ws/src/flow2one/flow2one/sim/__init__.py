"""The embedded default world: franky-sim's MuJoCo FR3 (served over the real libfranka protocol), a table,
simulated RGB-D cameras, three multimodal tasks, scripted experts, demo generation and closed-loop eval.

scene (MJCF additions, cameras) -> world (SimWorld: server + task logic in the sim thread) -> cameras
(render from snapshots) -> robot (control.FrankyRobot) -> experts / rollout -> demos (`flow2one sim-demos`),
evaluate (`flow2one sim-eval`); nodes/sim_world.py puts the same world on ROS topics.
"""
