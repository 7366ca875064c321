"""The contracts every part of flow2one shares: action space, observation layout, topics, frames.

Changing a value here changes it for training, export, the ROS nodes and the tests at once, which is
why none of them hard-codes these.
"""

from __future__ import annotations

# Action: absolute end-effector target in the robot base frame, 6-D rotation (first two columns of the
# rotation matrix, Zhou et al. 2019, as in PointFlowMatch) and gripper opening in metres.
ACTION_NAMES: tuple[str, ...] = ("x", "y", "z", "r0", "r1", "r2", "r3", "r4", "r5", "gripper")
ACTION_DIM = len(ACTION_NAMES)
# Proprioception uses the same layout, measured instead of commanded.
PROPRIO_NAMES = ACTION_NAMES
PROPRIO_DIM = ACTION_DIM
# Per-component loss weights (PointFlowMatch: xyz 10, rot6d 10, gripper 1).
ACTION_LOSS_WEIGHTS: tuple[float, ...] = (10.0,) * 3 + (10.0,) * 6 + (1.0,)

HORIZON = 32  # steps per action chunk (H)
N_POINTS = 4096  # points per observation cloud
STEP_DT = 0.05  # seconds between chunk steps (20 Hz); franky re-targets reliably at this rate
POLICY_RATE_HZ = 125.0
GRIPPER_OPEN = 0.08  # metres, Franka Hand
GRIPPER_CLOSED = 0.0

BASE_FRAME = "panda_link0"

# Topics. Cameras follow realsense-ros naming so the real driver and ours are interchangeable.
CAMERA_NS = "/camera/{name}"
COLOR_TOPIC = CAMERA_NS + "/color/image_raw"
COLOR_INFO_TOPIC = CAMERA_NS + "/color/camera_info"
DEPTH_TOPIC = CAMERA_NS + "/aligned_depth_to_color/image_raw"
DEPTH_INFO_TOPIC = CAMERA_NS + "/aligned_depth_to_color/camera_info"
POINTS_TOPIC = "/flow2one/points"  # sensor_msgs/PointCloud2, N_POINTS xyz float32 in BASE_FRAME
JOINT_STATES_TOPIC = "/flow2one/robot/joint_states"  # sensor_msgs/JointState, 7 joints + "gripper_width"
EE_POSE_TOPIC = "/flow2one/robot/ee_pose"  # geometry_msgs/PoseStamped in BASE_FRAME
CHUNK_TOPIC = "/flow2one/action_chunk"  # trajectory_msgs/JointTrajectory, joint_names = ACTION_NAMES
COMMAND_TOPIC = "/flow2one/robot/command"  # JointTrajectory with one point: what was sent to the robot
PREDICTION_MARKERS_TOPIC = "/flow2one/predicted_trajectories"  # visualization_msgs/MarkerArray
ESTOP_TOPIC = "/flow2one/estop"  # std_msgs/Bool, True = stop
EPISODE_TOPIC = "/flow2one/episode"  # std_msgs/String: "start", "stop", "discard", "success", "failure"
SIM_RESET_TOPIC = "/flow2one/sim/reset"  # std_msgs/Int64 seed: randomise the sim task for a new episode
SIM_STATUS_TOPIC = "/flow2one/sim/task_status"  # std_msgs/String JSON {episode, seed, task, success, mode, ...}
DIAGNOSTICS_TOPIC = "/diagnostics"  # diagnostic_msgs/DiagnosticArray
TRACE_TOPIC = "/flow2one/trace"  # diagnostic_msgs/DiagnosticArray: per-stage latency stamps (flow2one/ros/trace.py)


def camera_topics(name: str) -> dict[str, str]:
    """Topic names of one camera, keyed by stream."""
    return {
        "color": COLOR_TOPIC.format(name=name),
        "color_info": COLOR_INFO_TOPIC.format(name=name),
        "depth": DEPTH_TOPIC.format(name=name),
        "depth_info": DEPTH_INFO_TOPIC.format(name=name),
    }
