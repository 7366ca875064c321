"""`flow2one COMMAND ...`: one entry point for every user-facing command.

Each command lives in its own module exposing `add_arguments(parser)` and `main(args) -> int`; it is
imported only when chosen, so `flow2one --help` stays fast and a missing optional dependency of one
command does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help). Keep in sync with README "Commands".
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("flow2one.ros.run_cli", "run a node graph (deploy, sim, teleop_record, replay, ...) in one process"),
    "bench": ("flow2one.bench", "run benchmarks and print JSON figures"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="flow2one",
        description="flow2one: one-step generative manipulation policies on a Franka Panda over ROS 2.",
        epilog="Run 'flow2one COMMAND --help' for a command's options.",
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
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(cmd_parser)
    return int(module.main(cmd_parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
