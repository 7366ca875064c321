"""Open a dataset episode (.npz), a recorded episode bag (.mcap) or a saved view (.rrd) in the Rerun viewer.

Episodes and bags are logged through the same module as the live view (flow2one/view/log.py), so they show
the same entities: cameras, cloud, executed end-effector path and gripper width (bags also the chunks and
commands they recorded; episodes their recorded action path). With a display the native viewer opens;
without one the web viewer is served and its URL printed (Ctrl-C stops it).

Examples:
  flow2one view outputs/demo/demo.rrd
  flow2one view data/sim/episode_00003.npz
  flow2one view demos/episode_00000.mcap --save episode.rrd --no-viewer    # convert only
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="an episode .npz, an episode bag .mcap or a view recording .rrd")
    p.add_argument("--save", default="", metavar="FILE.rrd", help="also write the view of an episode or bag here (default: no file)")
    p.add_argument("--no-viewer", action="store_true", help="open no viewer (with --save: convert only)")
    p.add_argument("--web-port", type=int, default=9090, help="port of the web viewer when there is no display (default %(default)s)")
    p.add_argument("--grpc-port", type=int, default=9876, help="port the viewer receives data on (default %(default)s)")


def log_episode(log, path: Path) -> int:
    """Every step of a dataset episode, on the episode's clock (sim_time) -> steps logged."""
    import rerun as rr

    from flow2one.data.episodes import read_episode

    ep = read_episode(path)
    log.at(sim_s=0.0)
    log.new_episode(f"{path.name}: {ep.meta.task} ({ep.meta.source}), {len(ep)} steps, "
                    f"{'success' if ep.meta.success else 'failure'}")
    log.rec.log("world/demo/actions", rr.LineStrips3D([ep.action[:, :3]], colors=[(230, 80, 40)], radii=0.002),
                static=True)
    for k in range(len(ep)):
        log.at(sim_s=float(ep.t[k]))
        for v, cam in enumerate(ep.meta.camera_names if ep.rgb is not None or ep.depth is not None else ()):
            log.camera(cam, rgb=None if ep.rgb is None else ep.rgb[k, v],
                       depth=None if ep.depth is None else ep.depth[k, v])
        log.cloud(ep.points[k])
        log.ee(ep.proprio[k, :3], float(ep.proprio[k, -1]), path=k % 5 == 0 or k == len(ep) - 1)
        log.commanded(ep.action[k])
    return len(ep)


def log_bag(log, path: Path) -> int:
    """Every message of an episode bag, at its log time, through the view node's translation -> messages."""
    from rclpy.serialization import deserialize_message

    from flow2one.data.bags import read_messages
    from flow2one.nodes.recorder import message_class
    from flow2one.nodes.view import TopicView, ViewParams

    # a recording keeps every frame the bag has: no rate caps
    view = TopicView(log, ViewParams(max_image_hz=1e6, max_cloud_hz=1e6, max_pose_hz=1e6))
    n = 0
    for m in read_messages(path):
        if m.msgtype:
            view.handle(m.topic, deserialize_message(m.data, message_class(m.msgtype)), m.log_time_ns)
            n += 1
    return n


def open_rrd(path: Path, args: argparse.Namespace) -> int:
    """The viewer on a saved recording: the `rerun` executable rerun-sdk installs (does not return)."""
    import rerun_cli  # the package of the viewer binary (what `python -m rerun` runs in a child process)

    from flow2one.view.log import has_display

    cmd = [os.path.join(os.path.dirname(rerun_cli.__file__), "rerun"), str(path)]
    if not has_display():
        cmd[1:1] = ["--serve-web", "--web-viewer-port", str(args.web_port), "--port", str(args.grpc_port)]
        print(f"flow2one view: serving {path} at http://localhost:{args.web_port} (Ctrl-C stops)", flush=True)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)  # the viewer replaces this process: no orphan server when this one is stopped


def main(args: argparse.Namespace) -> int:
    path = args.path
    if not path.exists():
        print(f"flow2one view: {path} does not exist", file=sys.stderr)
        return 2
    if path.suffix == ".rrd":
        return 0 if args.no_viewer else open_rrd(path, args)
    if path.suffix not in (".npz", ".mcap"):
        print(f"flow2one view: {path}: expected an episode .npz, a bag .mcap or a .rrd", file=sys.stderr)
        return 2
    if args.no_viewer and not args.save:
        print("flow2one view: --no-viewer without --save has nothing to do", file=sys.stderr)
        return 2
    from flow2one.data.bags import BagError
    from flow2one.view.log import ViewLog, has_display

    log = ViewLog(live=not args.no_viewer, save=args.save, grpc_port=args.grpc_port, web_port=args.web_port)
    try:
        n = log_episode(log, path) if path.suffix == ".npz" else log_bag(log, path)
    except (ValueError, BagError) as exc:  # read_episode / read_messages say which file and why
        print(f"flow2one view: {exc}", file=sys.stderr)
        return 1
    print(f"flow2one view: logged {n} {'steps' if path.suffix == '.npz' else 'messages'} of {path}"
          + (f" to {args.save}" if args.save else ""), flush=True)
    if not args.no_viewer and not has_display():  # the web viewer lives as long as this process
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    log.close()
    return 0
