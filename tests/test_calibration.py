"""ChArUco calibration on images rendered by MuJoCo (EGL) with known ground-truth poses.

Stated bounds (640x480, 45 deg vertical FOV, 28 x 20 cm board at 0.4-0.9 m): camera position error
<= 3 mm and rotation error <= 0.3 deg for every mode, including the `flow2one calibrate` CLI.
"""

from __future__ import annotations

import functools

import cv2
import mujoco
import numpy as np
import pytest
import yaml

from flow2one.cli import main as cli_main
from flow2one.geometry import matrix_to_quat
from flow2one.perception.calibrate import calibrate
from flow2one.perception.calibration import load_cameras, save_cameras
from flow2one.perception.camera_model import CameraIntrinsics, CameraModel
from flow2one.perception.charuco import BoardSpec, detect_board, rotation_deg
from flow2one.perception.synthetic import look_at

W, H, FOVY = 640, 480, 45.0
FY = (H / 2) / np.tan(np.radians(FOVY) / 2)
INTR = CameraIntrinsics(W, H, FY, FY, (W - 1) / 2, (H - 1) / 2)  # MuJoCo: square pixels, centred axis
SPEC = BoardSpec()
THICK = 0.001
MAX_T_ERR, MAX_R_ERR = 0.003, 0.3  # metres, degrees


def rot(axis: str, deg: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.radians(deg) * np.eye(3)["xyz".index(axis)])[0]
    return T


class BoardScene:
    """A textured ChArUco box and a camera, each on a mocap body placed in the base (= world) frame."""

    def __init__(self, tmp_path) -> None:
        png = tmp_path / "board.png"
        cv2.imwrite(str(png), SPEC.image(100))
        sx, sy = SPEC.size
        xml = f"""
        <mujoco>
          <visual><global offwidth="{W}" offheight="{H}"/><quality shadowsize="0" offsamples="0"/>
            <headlight ambient="0.8 0.8 0.8" diffuse="0.2 0.2 0.2" specular="0 0 0"/></visual>
          <asset><texture name="board" type="2d" file="{png}"/>
            <material name="board" texture="board" specular="0" shininess="0" reflectance="0"/></asset>
          <worldbody>
            <geom type="plane" size="2 2 0.1" pos="0 0 -0.3" rgba="0.4 0.4 0.45 1"/>
            <body name="board" mocap="true"><geom type="box" size="{sx / 2} {sy / 2} {THICK}" material="board"/></body>
            <body name="cam" mocap="true"><camera name="cam" quat="0 1 0 0" fovy="{FOVY}"/></body>
          </worldbody>
        </mujoco>"""
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.renderer = mujoco.Renderer(self.model, H, W)
        # Board frame (OpenCV: top-left corner, x right, y down the printed image, z into the board) in the
        # box geom's frame: MuJoCo maps the texture's first row to +y and first column to -x on the top face.
        self.T_geom_board = np.array([[1, 0, 0, -sx / 2], [0, -1, 0, sy / 2], [0, 0, -1, THICK], [0, 0, 0, 1.0]])

    def _place(self, body: str, T: np.ndarray) -> None:
        i = self.model.body(body).mocapid[0]
        self.data.mocap_pos[i] = T[:3, 3]
        self.data.mocap_quat[i] = np.roll(matrix_to_quat(T[:3, :3]), 1)  # MuJoCo wants w, x, y, z

    def render(self, T_base_camera: np.ndarray, T_base_board: np.ndarray) -> np.ndarray:
        """RGB image of the board at T_base_board from a camera whose OPTICAL frame is at T_base_camera."""
        self._place("cam", T_base_camera)  # the camera's quat (0 1 0 0) turns optical axes into MuJoCo's
        self._place("board", T_base_board @ np.linalg.inv(self.T_geom_board))
        mujoco.mj_forward(self.model, self.data)
        self.renderer.update_scene(self.data, camera="cam")
        return self.renderer.render().copy()

    def close(self) -> None:
        self.renderer.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    s = BoardScene(tmp_path_factory.mktemp("board"))
    yield s
    s.close()


def assert_pose_close(T: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    dt = float(np.linalg.norm(T[:3, 3] - T_true[:3, 3]))
    dr = rotation_deg(T[:3, :3], T_true[:3, :3])
    assert dt <= MAX_T_ERR and dr <= MAX_R_ERR, f"error {dt * 1000:.2f} mm, {dr:.3f} deg"
    return dt, dr


BOARD_ON_TABLE = np.array([[1, 0, 0, 0.36], [0, -1, 0, 0.1], [0, 0, -1, 0.0], [0, 0, 0, 1.0]]) @ rot("z", 20)
BOARD_CENTRE = (BOARD_ON_TABLE @ np.array([SPEC.size[0] / 2, SPEC.size[1] / 2, 0, 1]))[:3]


def test_rendered_board_is_detected_at_its_true_pose(scene):
    T_cam = look_at((0.9, -0.35, 0.6), BOARD_CENTRE)
    det = detect_board(scene.render(T_cam, BOARD_ON_TABLE), SPEC, INTR)
    assert det is not None and det.n_corners == 24 and det.rms_px < 0.5
    assert_pose_close(det.T_camera_board, np.linalg.inv(T_cam) @ BOARD_ON_TABLE)
    assert detect_board(np.zeros((H, W, 3), np.uint8), SPEC, INTR) is None


def test_fixed_board_external_camera(scene):
    T_true = look_at((1.0, 0.3, 0.55), BOARD_CENTRE)
    T, report = calibrate("fixed-board", {"a.png": scene.render(T_true, BOARD_ON_TABLE)}, INTR, SPEC,
                          board_pose=BOARD_ON_TABLE)
    assert_pose_close(T, T_true)
    assert report["views_used"] == 1


@functools.cache
def wrist_views(n: int = 10) -> tuple[np.ndarray, list[np.ndarray]]:
    """Ground-truth T_ee_camera and robot poses that look at the board from around it."""
    rng = np.random.default_rng(1)
    T_ee_cam = np.eye(4)
    T_ee_cam[:3, :3] = (rot("z", 90) @ rot("x", -12))[:3, :3]
    T_ee_cam[:3, 3] = (0.065, 0.0, 0.05)
    ee = []
    for _ in range(n):
        az, el, dist = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(45, 75)), rng.uniform(0.4, 0.6)
        eye = BOARD_CENTRE + dist * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
        T_cam = look_at(eye, BOARD_CENTRE + rng.uniform(-0.03, 0.03, 3)) @ rot("z", rng.uniform(-40, 40))
        ee.append(T_cam @ np.linalg.inv(T_ee_cam))
    return T_ee_cam, ee


def test_eye_in_hand_wrist_camera(scene):
    T_ee_cam, ee = wrist_views()
    images = {f"{i:02d}.png": scene.render(e @ T_ee_cam, BOARD_ON_TABLE) for i, e in enumerate(ee)}
    poses = {f"{i:02d}.png": e for i, e in enumerate(ee)}
    T, report = calibrate("eye-in-hand", images, INTR, SPEC, robot_poses=poses)
    assert report["views_used"] == len(ee)
    assert_pose_close(T, T_ee_cam)
    assert report["spread_m"] < 0.003  # the board stays put when re-derived from every view


def test_eye_to_hand_board_in_gripper(scene):
    rng = np.random.default_rng(2)
    T_cam = look_at((1.1, -0.45, 0.7), (0.5, 0.0, 0.25))
    T_ee_board = rot("x", 180)
    T_ee_board[:3, 3] = (-SPEC.size[0] / 2, SPEC.size[1] / 2, 0.03)
    images, poses = {}, {}
    for i in range(10):
        centre = np.array([0.5, 0.0, 0.25]) + rng.uniform(-0.1, 0.1, 3)
        # board facing the camera (its z away from it), tilted up to 30 deg, the centre at `centre`
        R = look_at(T_cam[:3, 3], centre) @ rot("x", rng.uniform(-30, 30)) @ rot("y", rng.uniform(-30, 30)) @ rot(
            "z", rng.uniform(-30, 30))
        T_board = R.copy()
        T_board[:3, 3] = centre - R[:3, :2] @ (np.array(SPEC.size) / 2)
        ee = T_board @ np.linalg.inv(T_ee_board)
        images[f"{i}.png"], poses[f"{i}.png"] = scene.render(T_cam, T_board), ee
    T, report = calibrate("eye-to-hand", images, INTR, SPEC, robot_poses=poses)
    assert_pose_close(T, T_cam)
    assert report["views_used"] >= 8


def test_calibrate_cli_updates_the_calibration_file(scene, tmp_path, capsys):
    T_ee_cam, ee = wrist_views()
    img_dir = tmp_path / "wrist"
    img_dir.mkdir()
    poses = {}
    for i, e in enumerate(ee[:6]):
        cv2.imwrite(str(img_dir / f"{i:02d}.png"), scene.render(e @ T_ee_cam, BOARD_ON_TABLE)[..., ::-1])
        poses[f"{i:02d}.png"] = {"xyz": e[:3, 3].tolist(), "quat_xyzw": matrix_to_quat(e[:3, :3]).tolist()}
    (img_dir / "poses.yaml").write_text(yaml.safe_dump(poses))
    calib = tmp_path / "lab.yaml"
    save_cameras(calib, [CameraModel("front", INTR, look_at((1, 0, 1), (0, 0, 0)), "base", "1"),
                         CameraModel("wrist", INTR, np.eye(4), "base", "2")])
    args = ["calibrate", "--calibration", str(calib), "--camera", "wrist", "--mode", "eye-in-hand",
            "--images", str(img_dir), "--poses", str(img_dir / "poses.yaml"), "--write"]
    before = calib.read_bytes()
    # A wrong board scale still finds the board in every view, but the result does not hold together:
    # --write refuses it and the file stays as it was.
    wrong = [f"--square={SPEC.square * 2}", f"--marker={SPEC.marker * 2}"]
    assert cli_main(args + wrong) == 1
    assert "spread" in capsys.readouterr().err and calib.read_bytes() == before
    rc = cli_main(args)
    assert rc == 0
    wrist = {c.name: c for c in load_cameras(calib)}["wrist"]
    assert wrist.mount == "ee" and wrist.serial == "2"
    assert_pose_close(wrist.T_base_camera, T_ee_cam)
    assert cli_main(["calibrate", "--calibration", str(calib), "--camera", "top", "--images", str(img_dir)]) == 2
    assert "not in" in capsys.readouterr().err


def test_calibrate_refuses_too_few_views(scene):
    T_ee_cam, ee = wrist_views()
    images = {"a.png": scene.render(ee[0] @ T_ee_cam, BOARD_ON_TABLE), "b.png": np.zeros((H, W, 3), np.uint8)}
    with pytest.raises(ValueError, match="board found in 1 image"):
        calibrate("eye-in-hand", images, INTR, SPEC, robot_poses={"a.png": ee[0], "b.png": ee[1]})
    with pytest.raises(ValueError, match="needs the robot pose"):
        calibrate("eye-to-hand", images, INTR, SPEC)
