"""`flow2one COMMAND ...`: one entry point for every user-facing command.

Each command lives in its own module of flow2one/apps/, named after it, exposing `add_arguments(parser)` and
`main(args) -> int`; it is imported only when chosen, so `flow2one --help` stays fast and a missing optional
dependency of one command does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command -> (module, one-line help). Keep in sync with README "Commands".
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("flow2one.apps.run", "run a node graph (deploy, sim, teleop_record, replay, ...) in one process"),
    "bench": ("flow2one.apps.bench", "run benchmarks and print JSON figures"),
    "calibrate": ("flow2one.apps.calibrate", "camera extrinsics / hand-eye from ChArUco images -> calibration/*.yaml"),
    "convert": ("flow2one.apps.convert", "recorded MCAP episodes -> training dataset (with per-bag report)"),
    "replay": ("flow2one.apps.replay", "replay a bag into pointcloud + policy and report open-loop metrics JSON"),
    "recover-bag": ("flow2one.apps.recover_bag", "repair an episode bag left unfinished by a crash or kill -9"),
    "train-teacher": ("flow2one.apps.train_teacher", "train the CFM teacher on an episode dataset"),
    "distill": ("flow2one.apps.distill", "teacher -> distillation set (K trajectories per observation)"),
    "train-student": ("flow2one.apps.train_student", "distil the one-step IMLE student from a distillation set"),
    "train-l1flow": ("flow2one.apps.train_l1flow", "train L1 Sample Flow (2-step) on an episode dataset"),
    "train-regression": ("flow2one.apps.train_regression", "train the MSE regression baseline"),
    "evaluate": ("flow2one.apps.evaluate", "offline evaluation of a checkpoint on held-out episodes (JSON)"),
    "multimodal-bench": ("flow2one.apps.multimodal_bench", "mode-collapse benchmark of every policy kind (JSON + PNG)"),
    "sim-demos": ("flow2one.apps.sim_demos", "scripted-expert demonstrations in the sim -> episode dataset"),
    "sim-eval": ("flow2one.apps.sim_eval", "closed-loop sim evaluation of a policy or the expert (success, modes, JSON)"),
    "export": ("flow2one.apps.export", "policy checkpoint -> ONNX (parity-checked), optionally a TensorRT engine"),
    "latency": ("flow2one.apps.latency", "per-stage latency trace of a graph (JSON + waterfall/CDF PNG); --compare: old scheduling too"),
    "demo": ("flow2one.apps.demo", "the main job: the deploy graph with the shipped student in the sim world, a few episodes per task"),
    "reproduce": ("flow2one.apps.reproduce", "sim demos -> teacher -> distillation set -> student (+ L1 Flow, regression) -> models/"),
    "table1": ("flow2one.apps.table1", "closed-loop sim comparison of every policy kind (success, Hz, modes) -> results/"),
    "doctor": ("flow2one.apps.doctor", "robot-PC preflight: ROS, franky/libfranka, FCI, real-time, cameras, calibration, model, TensorRT, disk"),
    "view": ("flow2one.apps.view", "open a dataset episode, an episode bag or a saved .rrd in the Rerun viewer"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout and shows every option's default (unless the help already
    names it, or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default in (None, False, "", argparse.SUPPRESS)
                or action.default == [] or not action.option_strings and action.nargs not in ("?", "*")):
            return text
        return text + " (default: %(default)s)"


# Errors that mean bad input (a file, a parameter, a value), not a bug: one line, no traceback. The libraries
# that read user files raise their own types; they are matched by module so none has to be imported here.
USER_ERRORS = (ValueError, KeyError, OSError, TimeoutError, LookupError)
USER_ERROR_MODULES = ("yaml", "rclpy", "onnxruntime", "safetensors", "mcap", "rosbags", "google.protobuf",
                      "onnx", "flow2one")


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, USER_ERRORS) or any(
        getattr(c, "__module__", "").startswith(USER_ERROR_MODULES) for c in type(exc).__mro__)


def error_line(exc: BaseException) -> str:
    """The exception as one line: newlines folded, KeyError's quotes dropped, a library's type named."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(str(text).split())
    return text if isinstance(exc, USER_ERRORS) and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FLOW2ONE_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = argparse.ArgumentParser(
        prog="flow2one",
        description="flow2one: one-step generative manipulation policies on a Franka Panda over ROS 2.",
        epilog="Run 'flow2one COMMAND --help' for a command's options. --debug (anywhere) shows the traceback "
               "of an error instead of its one-line message.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"flow2one {name}", description=module.__doc__,
                                         formatter_class=HelpFormatter)
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(rest)
    try:
        rc = int(module.main(args) or 0)
    except SystemExit as exc:  # commands exit with a message for bad arguments: same one-line form
        if debug or not isinstance(exc.code, str):
            raise
        print(f"flow2one {name}: error: {' '.join(exc.code.split())}", file=sys.stderr)
        rc = 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"flow2one {name}: interrupted", file=sys.stderr)
        rc = 130
    except Exception as exc:
        if debug or not is_user_error(exc):
            raise
        print(f"flow2one {name}: error: {error_line(exc)}", file=sys.stderr)
        rc = 2 if isinstance(exc, KeyError) else 1
    return rc


def entry() -> int:
    """The `flow2one` executable: main(), then an exit that skips interpreter teardown when a libfranka
    client was abandoned (its destructor can hang). Only here, never in main(), so a caller of main() (a test
    run, a script) keeps its own process and exit status."""
    rc = main()
    rig = sys.modules.get("flow2one.sim.rig")  # only loaded by the commands that drive a sim world
    if rig is not None:
        rig.exit_fast_if_abandoned(rc)
    return rc


if __name__ == "__main__":
    sys.exit(entry())
