"""Sim figures for the CPU budget (docs/ENVIRONMENT_FACTS.md): franky-sim's real-time factor alone and while the
cameras render in the same process, the camera rate reached, and the per-frame render cost with the
collision meshes we use against the visual meshes (baseline, same run)."""

from __future__ import annotations

import time

from flow2one.bench.timing import time_calls


def _rtf(world, seconds: float) -> float:
    w0, s0 = time.monotonic(), world.sim_time
    time.sleep(seconds)
    return (world.sim_time - s0) / (time.monotonic() - w0)


def _render_ms(world, visual: bool, frames: int) -> float:
    from flow2one.sim.cameras import SimCameras

    cams = SimCameras(world.model, world.config.cameras, visual_meshes=visual)
    try:
        snap = world.snapshot()
        # the warm-up call creates the GL context and buffers
        return time_calls(lambda: cams.render(snap), frames, warmup=1, cpu_clock=None).ms_median
    finally:
        cams.close()


def run(quick: bool = False) -> dict:
    from flow2one.sim.cameras import RenderLoop
    from flow2one.sim.world import SimWorld, WorldConfig

    seconds, frames, rate_hz = (3.0, 5, 15.0) if quick else (10.0, 20, 15.0)
    with SimWorld(WorldConfig(task="track")) as world:
        world.reset(0)
        rtf_idle = _rtf(world, seconds)
        fast = _render_ms(world, False, frames)
        slow = _render_ms(world, True, frames)
        loop = RenderLoop(world, rate_hz, lambda snap, rgbs, depths: None).start()  # SimWorldNode's loop
        time.sleep(1.0)
        c0, w0 = loop.frames, time.monotonic()
        rtf_cams = _rtf(world, seconds)
        fps = (loop.frames - c0) / (time.monotonic() - w0)
        loop.stop()
        spec = world.config.cameras[0]
    return {
        "cameras": len(world.config.cameras), "image": f"{spec.width}x{spec.height}", "target_rate_hz": rate_hz,
        "sim_rtf_idle": rtf_idle, "sim_rtf_with_cameras": rtf_cams, "camera_fps": fps,
        "render_ms_per_frame_all_cameras_rgbd": {"collision_meshes": fast, "visual_meshes_baseline": slow,
                                                 "speedup": slow / fast},
    }
