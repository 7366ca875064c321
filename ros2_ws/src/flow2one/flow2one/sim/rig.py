"""One task's sim world with its libfranka client, cameras and cloud pipeline, restartable after a lost link.

Connecting a new libfranka client to the SAME franky-sim can hang inside libfranka's connect (after a lost
link on a starved machine, or in the gripper's connect after planner errors), so the client never
reconnects: a lost link or a troubled connection gets a whole new world. A broken client is abandoned, never
destroyed: its destructor can hang too, which is why a process that abandoned one leaves with os._exit
(`exit_fast_if_abandoned`); docs/decisions.md, "Results: how they were made", has the runs that hung.
"""

from __future__ import annotations

import os
import sys
import threading

ABANDONED: list = []  # broken libfranka clients, kept alive so that their destructors never run


class SimRig:
    """world + robot (+ cameras, + cloud pipeline) of one task; `restart()` replaces them all.

    The robot is control.FrankyRobot, the executor's adapter, with the executor configuration's limits
    (`executor`: the sim graph's in the evaluations; None: ExecutorConfig's defaults)."""

    def __init__(self, task: str, cameras: bool = True, cloud: bool = True, executor=None) -> None:
        from flow2one.control.config import ExecutorConfig

        self.task, self._want_cams, self._want_cloud = task, cameras or cloud, cloud
        self.executor_cfg = executor or ExecutorConfig(robot_host="127.0.0.1", realtime="ignore")
        self.restarts = self.renewals = 0
        self.troubled = False  # the last episode saw planner errors: the next one gets a new world
        self._open()

    def _open(self) -> None:
        from flow2one.sim.cameras import SimCameras, make_cloud_pipeline
        from flow2one.sim.world import SimWorld, WorldConfig

        world = SimWorld(WorldConfig(task=self.task))
        self.cams = None

        def warm_cameras() -> None:  # before franky-sim serves (SimCameras.warm_up)
            self.cams = SimCameras(world.model, world.config.cameras)
            self.cams.warm_up()

        self.world = world.start(before_serving=warm_cameras if self._want_cams else None)
        self.troubled = False
        try:
            self.connect_robot()
        except BaseException:
            if self.cams is not None:
                self.cams.close()
            self.world.close()
            raise
        self.pipeline = make_cloud_pipeline(self.world.cameras()) if self._want_cloud else None
        self.cloud = self.pipeline.process if self.pipeline is not None else None

    def connect_robot(self) -> None:
        """A new client of this world's franky-sim (the gripper width is read on every state read, as an
        expert's demonstration records it)."""
        from flow2one.control.franky_robot import FrankyRobot

        c = self.executor_cfg
        self.robot = FrankyRobot(self.world.hostname, c.limits(), jerk_factor=c.jerk_factor,
                                 gripper_speed=c.gripper_speed, gripper_force=c.gripper_force,
                                 gripper_close_below=c.gripper_close_below, gripper_deadband=c.gripper_deadband,
                                 gripper_period_s=0.0, realtime=c.realtime)

    def renew(self) -> None:
        """A new franky-sim and client after a clean disconnect, for a link that works but has seen planner
        errors: in long runs on a starved machine the episodes after a burst of them never grasped."""
        self.close()
        self.renewals += 1
        self._open()

    def restart(self) -> None:
        """A new franky-sim and client; the old world stops in the background."""
        ABANDONED.append(self.robot)
        if self.cams is not None:
            self.cams.close()
        threading.Thread(target=self.world.close, daemon=True).start()
        self.restarts += 1
        self._open()

    def close(self) -> None:
        if self.cams is not None:
            self.cams.close()
        self.robot.disconnect()  # before franky-sim stops: libfranka's destructors talk to it (hang/segfault otherwise)
        self.world.close()

    def __enter__(self) -> SimRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exit_fast_if_abandoned(code: int) -> None:
    """End the process now, skipping interpreter teardown, if a libfranka client was abandoned."""
    if ABANDONED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
