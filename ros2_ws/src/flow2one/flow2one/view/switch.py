"""`--view` / `--view-save FILE.rrd` of the commands that run a graph (run, demo, replay) or a sim loop
(sim-eval): the same two options everywhere, off by default."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ANNOUNCE = "flow2one view:"  # how a view prints where its live viewer is (flow2one.view.log)


def add_view_arguments(p: argparse.ArgumentParser, save_default: str = "") -> None:
    p.add_argument("--view", action="store_true",
                   help="watch it live in Rerun: the native viewer when there is a display, else the web "
                        "viewer (its URL is printed): cameras, cloud, candidate chunks, executed path, events (default: off)")
    p.add_argument("--view-save", metavar="FILE.rrd", default=save_default,
                   help="also record the view to this file; open it later with `flow2one view FILE.rrd`"
                        + (f" (default {save_default}; '' = none)" if save_default else " (default: none)"))


def view_params(args: argparse.Namespace) -> dict[str, Any] | None:
    """The view node's parameters for these options, or None when the view is off."""
    if not args.view and not args.view_save:
        return None
    return {"live": bool(args.view), "save": str(Path(args.view_save).resolve()) if args.view_save else ""}


def with_view(args: argparse.Namespace, nodes: list[str], overrides: dict[str, dict[str, Any]],
              own_process: bool = False, graph_name: str | None = None) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Add the view node to a run when asked; the policy then publishes its candidates with every chunk
    (markers_every 1) unless told otherwise, so each chunk's alternatives are in the view. Only a view in
    a process of its own lowers that process's priority (a shared one holds the policy too). In a graph
    whose nodes run on a /clock (`graph_name`'s parameters), the view runs on it too."""
    params = view_params(args)
    if params is None:
        return nodes, overrides
    if graph_name is not None:
        from flow2one.graph import load_params, on_sim_time

        if on_sim_time(load_params(graph_name)):
            params["use_sim_time"] = True
    overrides = {k: dict(v) for k, v in overrides.items()}
    overrides["view"] = {**params, **({} if own_process else {"nice": 0}), **overrides.get("view", {})}
    if "policy" in nodes:
        overrides.setdefault("policy", {}).setdefault("markers_every", 1)
    return [*nodes, "view"], overrides


def announce(lines: Iterable[str]) -> None:
    """Print a child process's view announcement (the web viewer's URL), which its captured output hides."""
    for line in list(lines):
        if line.startswith(ANNOUNCE):
            print(line, flush=True)


@contextlib.contextmanager
def announced(child) -> Iterator[Any]:
    """Start a NodeProcess running the view node and print its announcement here."""
    with child:
        announce(child.output)
        yield child
