"""ROS-free logging of one robot episode stream into a Rerun recording, shared by every producer.

The view node (topics), sim-eval (its rollout loop) and `flow2one view` (episodes, bags) all log through
`ViewLog`, so a live run, a replayed bag and a dataset episode show the same entity paths, colours and
timelines in the viewer:

  cameras/<name>/color, cameras/<name>/depth   images as published (depth in metres or raw mm)
  world/cloud                                   the fused 4,096-point cloud in the base frame
  world/policy/candidates, world/policy/chosen  the M sampled chunks (end-effector xyz, H steps) and the one
                                                published
  world/ee/path, world/ee/now                   the executed end-effector path of the episode, its tip
  world/ee/commanded                            the last command handed to franky (its position)
  plots/...                                     gripper width, latency, rate, task success as time series
  events/safety, events/task                    clamps, rejections, faults; episode start and outcome

Two timelines: `wall_time` (the robot's ROS clock: message stamps; a replayed bag's own time) and
`sim_time` (the sim task clock, where there is one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import quote

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from flow2one.view.switch import ANNOUNCE

APP_ID = "flow2one"
CHOSEN_COLOR = (40, 220, 60)
CANDIDATE_COLOR = (150, 150, 150, 140)
EE_COLOR = (20, 20, 20)
COMMAND_COLOR = (230, 40, 200)
EE_PATH_MAX = 4000  # path points kept per episode: the path is re-logged whole, so it must stay bounded
LEVELS = {0: "INFO", 1: "WARN", 2: "ERROR", 3: "WARN"}  # diagnostic_msgs levels OK, WARN, ERROR, STALE


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def height_colors(xyz: np.ndarray, lo: float = 0.0, hi: float = 0.3) -> np.ndarray:
    """Blue (table) to orange (high) by z: objects stand out of the ~94% of points that are table."""
    s = np.clip((xyz[:, 2] - lo) / (hi - lo), 0.0, 1.0)[:, None]
    return (np.array([60, 90, 200]) * (1 - s) + np.array([255, 140, 20]) * s).astype(np.uint8)


def blueprint(cameras: Sequence[str]) -> rrb.Blueprint:
    """3-D world beside the cameras, time series and events below: the layout the screenshots show."""
    cams = [rrb.Vertical(rrb.Spatial2DView(origin=f"cameras/{c}/color", name=f"{c} color"),
                         rrb.Spatial2DView(origin=f"cameras/{c}/depth", name=f"{c} depth")) for c in cameras]
    eye = rrb.EyeControls3D(position=(1.05, -0.6, 0.55), look_target=(0.5, 0.0, 0.12), eye_up=(0.0, 0.0, 1.0))
    top = rrb.Horizontal(rrb.Spatial3DView(origin="world", name="base frame", eye_controls=eye), *cams,
                         column_shares=[3] + [1] * len(cams))
    bottom = rrb.Horizontal(
        rrb.TimeSeriesView(origin="plots/timing", name="latency / rate"),
        rrb.TimeSeriesView(origin="plots/robot", name="gripper, task"),
        rrb.TextLogView(origin="events", name="events"))
    return rrb.Blueprint(rrb.Vertical(top, bottom, row_shares=[3, 2]), rrb.BlueprintPanel(state="collapsed"),
                         rrb.SelectionPanel(state="collapsed"), rrb.TimePanel(state="collapsed", timeline="wall_time"))


class ViewLog:
    """One Rerun recording and the producer's current time. Not thread-safe on its own: rerun's time cursor
    is per thread, so callers log from one thread (the view node has one callback group)."""

    def __init__(self, live: bool = False, save: str = "", recording_id: str | None = None,
                 cameras: Sequence[str] = (), grpc_port: int = 9876, web_port: int = 9090,
                 stream: rr.RecordingStream | None = None) -> None:
        self.rec = stream or rr.RecordingStream(APP_ID, recording_id=recording_id or None)
        self.url = ""
        self._cameras = list(cameras)
        self._path: list[np.ndarray] = []
        sinks: list = []
        if save:
            os.makedirs(os.path.dirname(os.path.abspath(save)), exist_ok=True)
            sinks.append(rr.FileSink(save))
        if live:
            if has_display():  # the native viewer, in its own process (it outlives this one)
                rr.spawn(port=grpc_port, connect=False, recording=self.rec)
                sinks.append(rr.GrpcSink(f"rerun+http://127.0.0.1:{grpc_port}/proxy"))
                self.url = "native viewer"
            else:  # headless: serve the web viewer (its assets ship in rerun-sdk: works offline)
                server = rr.GrpcServerSink(port=grpc_port)
                sinks.append(server)
                grpc = server.uri.replace("0.0.0.0", "localhost")
                self.url = f"http://localhost:{web_port}/?url={quote(grpc, safe='')}"
        if sinks:
            self.rec.set_sinks(*sinks, default_blueprint=blueprint(self._cameras) if self._cameras else None)
        if live and not has_display():
            rr.serve_web_viewer(web_port=web_port, open_browser=False, connect_to=grpc)
        if live:  # a parent running this in a child process (NodeProcess) relays lines starting like this
            print(f"{ANNOUNCE} {'web viewer at ' if self.url.startswith('http') else ''}{self.url}", flush=True)
        self.rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)

    # --- time ------------------------------------------------------------------------------------------
    def at(self, wall_ns: int | None = None, sim_s: float | None = None) -> None:
        """Set the time of what is logged next (a timeline left None keeps its last value)."""
        if wall_ns is not None:
            self.rec.set_time("wall_time", timestamp=np.datetime64(int(wall_ns), "ns"))
        if sim_s is not None:
            self.rec.set_time("sim_time", duration=float(sim_s))

    # --- what the robot sees ---------------------------------------------------------------------------
    def camera(self, name: str, rgb: np.ndarray | None = None, depth: np.ndarray | None = None,
               depth_meter: float = 1.0) -> None:
        """rgb (h, w, 3) uint8; depth (h, w) in units of 1/depth_meter m (1000 for 16UC1 millimetres)."""
        if name not in self._cameras:
            self._cameras.append(name)
            self.rec.send_blueprint(blueprint(self._cameras), make_active=True)
        if rgb is not None:
            # JPEG: a tenth of the bytes (a 640x480 RealSense frame is 0.9 MB raw); encoded in the view process
            self.rec.log(f"cameras/{name}/color", rr.Image(rgb, color_model="RGB").compress(jpeg_quality=85))
        if depth is not None:
            self.rec.log(f"cameras/{name}/depth", rr.DepthImage(depth, meter=depth_meter, colormap="turbo"))

    def cloud(self, xyz: np.ndarray) -> None:
        self.rec.log("world/cloud", rr.Points3D(xyz, colors=height_colors(xyz), radii=0.003))

    # --- what the policy proposed and chose ------------------------------------------------------------
    def candidates(self, strips: Sequence[np.ndarray], best: int | None = None, colors: Sequence | None = None) -> None:
        """Each candidate chunk's end-effector xyz, (H, 3); the chosen one (`best`) drawn thicker, green unless
        `colors` (one per strip) says otherwise. Widths in screen points: readable at any zoom."""
        if colors is None:
            colors = [CHOSEN_COLOR if i == best else CANDIDATE_COLOR for i in range(len(strips))]
        self.rec.log("world/policy/candidates", rr.LineStrips3D(
            [np.asarray(s, dtype=np.float32) for s in strips], colors=colors,
            radii=[rr.Radius.ui_points(3.0 if i == best else 1.5) for i in range(len(strips))]))

    def chosen(self, actions: np.ndarray) -> None:
        """The published chunk (H, 10): its path in 3-D, its first gripper width as a time series."""
        self.rec.log("world/policy/chosen", rr.LineStrips3D([actions[:, :3].astype(np.float32)],
                                                            colors=[CHOSEN_COLOR], radii=rr.Radius.ui_points(4.0)))
        self.rec.log("plots/robot/gripper_planned", rr.Scalars(float(actions[0, -1])))

    # --- what the arm did ------------------------------------------------------------------------------
    def ee(self, xyz: np.ndarray, gripper: float | None = None, path: bool = True) -> None:
        """The measured end-effector position; `path` re-logs the episode's path so far (callers decimate)."""
        self._path.append(np.asarray(xyz, dtype=np.float32))
        del self._path[:-EE_PATH_MAX]
        self.rec.log("world/ee/now", rr.Points3D([xyz], colors=[EE_COLOR], radii=0.008))
        if path and len(self._path) > 1:
            self.rec.log("world/ee/path", rr.LineStrips3D([np.stack(self._path)], colors=[EE_COLOR],
                                                          radii=rr.Radius.ui_points(2.0)))
        if gripper is not None:
            self.rec.log("plots/robot/gripper_width", rr.Scalars(float(gripper)))

    def commanded(self, action: np.ndarray) -> None:
        """The command handed to franky (10-D action layout): its point beside the measured tip tells an arm that
        does not follow its commands from one commanded to stay; its gripper width as a time series."""
        self.rec.log("world/ee/commanded", rr.Points3D([np.asarray(action[:3], dtype=np.float32)],
                                                       colors=[COMMAND_COLOR], radii=0.006))
        self.rec.log("plots/robot/gripper_commanded", rr.Scalars(float(action[-1])))

    def new_episode(self, text: str) -> None:
        """A new episode: the path starts again; the text goes to the task events."""
        self._path.clear()
        self.rec.log("world/ee/path", rr.Clear(recursive=False))
        self.event("task", text)

    # --- events and series -----------------------------------------------------------------------------
    def event(self, source: str, text: str, level: str = "INFO") -> None:
        self.rec.log(f"events/{source}", rr.TextLog(text, level=level))

    def scalar(self, name: str, value: float) -> None:
        """A time series under plots/ (e.g. 'timing/obs_age_ms')."""
        if np.isfinite(value):
            self.rec.log(f"plots/{name}", rr.Scalars(float(value)))

    def close(self) -> None:
        self.rec.flush()
        self.rec.disconnect()
