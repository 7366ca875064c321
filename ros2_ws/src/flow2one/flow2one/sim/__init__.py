"""The embedded default world: franky-sim's MuJoCo FR3 (served over the real libfranka protocol), a table,
simulated RGB-D cameras, three multimodal tasks, scripted experts, demo generation and closed-loop eval.

scene (MJCF additions, cameras) -> world (SimWorld: server + task logic in the sim thread) -> cameras
(render from snapshots) -> robot (control.FrankyRobot) -> experts / rollout -> demos (`flow2one sim-demos`),
evaluate (`flow2one sim-eval`); nodes/sim_world.py puts the same world on ROS topics.
"""

import os

# MuJoCo picks its GL backend when first imported, and every module here that imports it is below this package:
# the sim renders offscreen only, and EGL does that on a headless machine (Mesa llvmpipe) and a desktop GPU
# alike, where MuJoCo's own default (GLFW) needs a display and fails on a lab's headless training box.
os.environ.setdefault("MUJOCO_GL", "egl")
