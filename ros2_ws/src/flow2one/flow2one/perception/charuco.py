"""ChArUco board detection and the three camera calibrations the lab needs (OpenCV aruco + calib3d).

- fixed board: the board lies at a known pose in the base frame (a fixture) -> external camera pose;
- eye-to-hand: the board is held by the gripper, the external camera is fixed -> T_base_camera;
- eye-in-hand: the board is fixed, the wrist camera moves with the arm -> T_ee_camera (hand-eye).
All poses are 4x4 homogeneous matrices in metres; "camera" is the optical frame (z forward, y down).
The board frame is OpenCV's: origin at the board's top-left outer corner, x along the columns, y down
the rows of the printed image, z into the board.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from flow2one.perception.camera_model import CameraIntrinsics

HAND_EYE_METHODS = {"park": cv2.CALIB_HAND_EYE_PARK, "tsai": cv2.CALIB_HAND_EYE_TSAI,
                    "horaud": cv2.CALIB_HAND_EYE_HORAUD, "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
                    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS}


@dataclass(frozen=True)
class BoardSpec:
    squares_x: int = 7
    squares_y: int = 5
    square: float = 0.04  # metres, as printed (measure it!)
    marker: float = 0.03
    dictionary: str = "DICT_5X5_100"

    def __post_init__(self) -> None:
        if not 0 < self.marker < self.square:
            raise ValueError(f"marker size must be in (0, square), got {self.marker} vs {self.square}")
        if min(self.squares_x, self.squares_y) < 2:
            raise ValueError("a ChArUco board needs at least 2x2 squares")
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown aruco dictionary {self.dictionary!r}")

    def board(self) -> cv2.aruco.CharucoBoard:
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square, self.marker, d)

    def image(self, px_per_square: int = 100) -> np.ndarray:
        """The printable board, exactly squares_x x squares_y squares (no margin), uint8 gray."""
        size = (self.squares_x * px_per_square, self.squares_y * px_per_square)
        return self.board().generateImage(size, marginSize=0)

    @property
    def size(self) -> tuple[float, float]:
        return self.squares_x * self.square, self.squares_y * self.square


@dataclass(frozen=True)
class BoardDetection:
    T_camera_board: np.ndarray
    n_corners: int
    rms_px: float  # reprojection error of the detected corners under the estimated pose


def to_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t).reshape(3)
    return T


def detect_board(image: np.ndarray, spec: BoardSpec, intr: CameraIntrinsics, min_corners: int = 6
                 ) -> BoardDetection | None:
    """Board pose in the camera, or None when fewer than `min_corners` ChArUco corners are found."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    board = spec.board()
    corners, ids, _, _ = cv2.aruco.CharucoDetector(board).detectBoard(gray)
    if ids is None or len(ids) < min_corners:
        return None
    obj, img = board.matchImagePoints(corners, ids)
    dist = np.asarray(intr.distortion, np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, intr.K, dist, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return None
    proj, _ = cv2.projectPoints(obj, rvec, tvec, intr.K, dist)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img.reshape(-1, 2)) ** 2, axis=1))))
    return BoardDetection(to_T(cv2.Rodrigues(rvec)[0], tvec), len(ids), rms)


def average_poses(Ts: list[np.ndarray]) -> np.ndarray:
    """Mean translation and chordal-mean rotation (SVD projection of the summed matrices)."""
    if not Ts:
        raise ValueError("no poses to average")
    U, _, Vt = np.linalg.svd(sum(T[:3, :3] for T in Ts))
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    return to_T(R, np.mean([T[:3, 3] for T in Ts], axis=0))


def camera_from_fixed_board(T_base_board: np.ndarray, detections: list[np.ndarray]) -> np.ndarray:
    """External camera pose from views of a board at a known base-frame pose (averaged over views)."""
    return average_poses([T_base_board @ np.linalg.inv(T_cb) for T_cb in detections])


def _hand_eye(A: list[np.ndarray], B: list[np.ndarray], method: str) -> np.ndarray:
    if len(A) != len(B) or len(A) < 3:
        raise ValueError(f"hand-eye calibration needs >= 3 robot poses with a board view each, got {len(A)}/{len(B)}")
    if method not in HAND_EYE_METHODS:
        raise ValueError(f"unknown hand-eye method {method!r}; known: {sorted(HAND_EYE_METHODS)}")
    R, t = cv2.calibrateHandEye([a[:3, :3] for a in A], [a[:3, 3] for a in A],
                                [b[:3, :3] for b in B], [b[:3, 3] for b in B], method=HAND_EYE_METHODS[method])
    return to_T(R, t)


def eye_in_hand(T_base_ee: list[np.ndarray], T_camera_board: list[np.ndarray], method: str = "park") -> np.ndarray:
    """Wrist camera: T_ee_camera from (robot pose, board view) pairs with the board fixed in the world."""
    return _hand_eye(T_base_ee, T_camera_board, method)


def eye_to_hand(T_base_ee: list[np.ndarray], T_camera_board: list[np.ndarray], method: str = "park") -> np.ndarray:
    """Fixed camera, board in the gripper: T_base_camera (cv2.calibrateHandEye with inverted robot poses)."""
    return _hand_eye([np.linalg.inv(T) for T in T_base_ee], T_camera_board, method)


def pose_spread(Ts: list[np.ndarray]) -> tuple[float, float]:
    """(max translation deviation in m, max rotation deviation in deg) of poses that should be equal."""
    mean = average_poses(Ts)
    dt = max(float(np.linalg.norm(T[:3, 3] - mean[:3, 3])) for T in Ts)
    dr = max(rotation_deg(T[:3, :3], mean[:3, :3]) for T in Ts)
    return dt, dr


def rotation_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
