"""The freshest observation of a running policy, assembled from asynchronous streams and checked.

Clouds, robot state and images arrive at their own rates; the policy ticks at its own. This keeps the
newest valid sample of each, refuses samples that do not fit the model (frame, point count, shape) so
they can never reach it, and hands out a batch-1 input dict only when every part is younger than the
configured maximum age: a stale observation yields no action rather than an outdated one. A model with
a cloud history (card.history_steps) also gets `points_prev`: the kept cloud stamped nearest to
history_steps * dt before the newest (the oldest kept one until that much history exists, as training
repeats an episode's first cloud). A model with motion (card.motion_steps) gets proprio followed by its
change since motion_steps * dt before, from the kept poses and gripper widths the same way.

`state_at_cloud` pairs the cloud with the robot state of the cloud's own instant (the kept pose and width
stamped nearest to it) instead of the newest state, as a message_filters time synchroniser would. Training
windows pair each cloud with the proprio of its instant, while a cloud reaches the policy after newer states
(perception; on the robot the camera's own latency too), so a newest-state pairing shows the model its arm
where its cloud does not yet show it. The chunk then starts at the cloud's instant, and the executor drops
the steps that have passed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from flow2one.geometry import matrix_to_rot6d, quat_to_matrix
from flow2one.runtime.card import ModelCard


class InputRejected(ValueError):
    """A message that does not fit the model; it was dropped and the previous sample kept."""


@dataclass(frozen=True)
class Observation:
    inputs: dict[str, np.ndarray]  # batch-1 model inputs without noise
    stamp_ns: int  # the oldest part's stamp: freshness is judged on it
    version: int  # increases with every accepted sample
    origin_ns: int  # when the predicted chunk starts: the stamp of the robot state it was given (training
    #                 windows start at the proprio sample, with camera data from at or before it); the oldest
    #                 part without one


class History:
    """Samples of one stream kept for `span_ns` back from the newest (and the one just before that)."""

    def __init__(self, span_ns: int) -> None:
        self.span_ns = span_ns
        self._kept: deque[tuple[Any, int]] = deque()  # oldest first

    def push(self, value: Any, stamp_ns: int) -> None:
        if self._kept and stamp_ns < self._kept[-1][1]:
            self._kept.clear()  # time went back (a replayed bag restarted): old samples are not the past
        self._kept.append((value, stamp_ns))
        target = stamp_ns - self.span_ns
        while len(self._kept) > 1 and self._kept[1][1] <= target:
            self._kept.popleft()  # the next one is at least as near to every later target

    def nearest(self, stamp_ns: int) -> tuple[Any, int]:
        """(value, stamp) of the kept sample stamped nearest to `stamp_ns` (the older one on a tie)."""
        best = self._kept[-1]
        for p in reversed(self._kept):  # stamps ascend: the distance falls, then rises; targets lie near the end
            if abs(p[1] - stamp_ns) > abs(best[1] - stamp_ns):
                break
            best = p
        return best

    def before(self) -> Any:
        """The kept sample nearest to span_ns before the newest (the oldest until there is that much)."""
        return self.nearest(self._kept[-1][1] - self.span_ns)[0]


STATE_KEPT_S = 1.0  # robot state kept for state_at_cloud: a cloud older than this is stale anyway


class ObservationAssembler:
    def __init__(self, card: ModelCard, base_frame: str, state_at_cloud: bool = False) -> None:
        self.card, self.base_frame = card, base_frame
        self.state_at_cloud = state_at_cloud and "points" in card.inputs
        self.version = 0
        self._points: tuple[np.ndarray, int] | None = None
        self._clouds = History(int(round(card.history_steps * card.dt * 1e9))) if card.history_steps else None
        self._motion_ns = int(round(card.motion_steps * card.dt * 1e9))
        kept_ns = self._motion_ns + (int(STATE_KEPT_S * 1e9) if self.state_at_cloud else 0)
        self._poses, self._widths = (History(kept_ns), History(kept_ns)) if kept_ns else (None, None)
        self._pose: tuple[np.ndarray, int] | None = None  # (9,) xyz + rot6d
        self._gripper: tuple[float, int] | None = None
        self._images: dict[tuple[str, int], tuple[np.ndarray, int]] = {}

    def _frame(self, what: str, frame_id: str) -> None:
        if frame_id != self.base_frame:
            raise InputRejected(f"{what} is in frame {frame_id!r}; model '{self.card.name}' takes the base frame "
                                f"{self.base_frame!r}")

    def set_points(self, xyz: np.ndarray, stamp_ns: int, frame_id: str) -> None:
        if "points" not in self.card.inputs:
            return  # a model without the point modality (an ablation) ignores clouds
        self._frame("point cloud", frame_id)
        if xyz.shape != (self.card.n_points, 3):
            raise InputRejected(f"point cloud has {xyz.shape[0]} points (shape {xyz.shape}); model "
                                f"'{self.card.name}' takes exactly {self.card.n_points} (shape ({self.card.n_points}, 3))")
        if not np.isfinite(xyz).all():
            raise InputRejected("point cloud contains NaN or inf")
        self._points = (np.array(xyz, dtype=np.float32), stamp_ns)
        if self._clouds is not None:
            self._clouds.push(self._points[0], stamp_ns)
        self.version += 1

    def set_pose(self, xyz: np.ndarray, quat_xyzw: np.ndarray, stamp_ns: int, frame_id: str) -> None:
        self._frame("end-effector pose", frame_id)
        self._pose = (np.concatenate([xyz, matrix_to_rot6d(quat_to_matrix(quat_xyzw))]).astype(np.float32), stamp_ns)
        if self._poses is not None:
            self._poses.push(self._pose[0], stamp_ns)
        self.version += 1

    def set_gripper(self, names: tuple[str, ...], position: np.ndarray, stamp_ns: int) -> None:
        if "gripper_width" not in names:
            raise InputRejected(f"joint state has no 'gripper_width' (names: {list(names)})")
        self._gripper = (float(position[names.index("gripper_width")]), stamp_ns)
        if self._widths is not None:
            self._widths.push(self._gripper[0], stamp_ns)
        self.version += 1

    def set_image(self, kind: str, camera: str, image: np.ndarray, stamp_ns: int) -> None:
        """kind 'rgb' (h, w, 3) uint8 or 'depth' (h, w) float32 metres, from one of the card's cameras."""
        if kind not in self.card.image_inputs or camera not in self.card.cameras:
            raise InputRejected(f"model '{self.card.name}' takes no {kind} image from camera {camera!r}")
        want = self.card.inputs[kind][1:]
        if image.shape != want:
            raise InputRejected(f"{kind} image of camera {camera!r} has shape {image.shape}; model "
                                f"'{self.card.name}' takes {want}")
        self._images[(kind, self.card.cameras.index(camera))] = (image, stamp_ns)
        self.version += 1

    def _parts(self) -> dict[str, tuple[object, int] | None]:
        parts = {}
        if "points" in self.card.inputs:
            parts["points"] = self._points
        if "proprio" in self.card.inputs:
            parts |= {"ee pose": self._pose, "gripper": self._gripper}
        return parts

    def missing(self) -> list[str]:
        out = [n for n, v in self._parts().items() if v is None]
        out += [f"{k} {cam}" for k in self.card.image_inputs for i, cam in enumerate(self.card.cameras)
                if (k, i) not in self._images]
        return out

    def _state(self) -> tuple[np.ndarray, int, float, int]:
        """(pose, its stamp, gripper width, its stamp) the observation pairs with its cloud."""
        if not self.state_at_cloud:
            return *self._pose, *self._gripper
        return *self._poses.nearest(self._points[1]), *self._widths.nearest(self._points[1])

    def assemble(self, now_ns: int, max_age_s: float) -> tuple[Observation | None, str]:
        """(observation, "") when complete and fresh, else (None, why not)."""
        missing = self.missing()
        if missing:
            return None, f"waiting for {', '.join(missing)}"
        stamps = {n: v[1] for n, v in self._parts().items()}
        if "proprio" in self.card.inputs:
            pose, stamps["ee pose"], width, stamps["gripper"] = self._state()
        stamps |= {f"{k} {self.card.cameras[i]}": s for (k, i), (_, s) in self._images.items()}
        oldest = min(stamps, key=stamps.get)
        age = (now_ns - stamps[oldest]) * 1e-9
        if age > max_age_s:
            return None, f"stale observation: {oldest} is {age * 1e3:.0f} ms old (max {max_age_s * 1e3:.0f} ms)"
        inputs = {}
        if "points" in self.card.inputs:
            inputs["points"] = self._points[0][None]
            if self._clouds is not None:
                inputs["points_prev"] = self._clouds.before()[None]
        if "proprio" in self.card.inputs:
            proprio = np.append(pose, np.float32(width))
            if self._motion_ns:
                proprio = np.concatenate([proprio, proprio - np.append(
                    self._poses.nearest(stamps["ee pose"] - self._motion_ns)[0],
                    self._widths.nearest(stamps["gripper"] - self._motion_ns)[0])])
            inputs["proprio"] = proprio[None].astype(np.float32)
        for kind in self.card.image_inputs:
            inputs[kind] = np.stack([self._images[(kind, i)][0] for i in range(len(self.card.cameras))])[None]
        origin = max(stamps["ee pose"], stamps["gripper"]) if "proprio" in self.card.inputs else stamps[oldest]
        return Observation(inputs, stamps[oldest], self.version, origin), ""
