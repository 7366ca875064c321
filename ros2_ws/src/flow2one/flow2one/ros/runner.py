"""In-process graph runner: starts any subset of a graph's nodes in one rclpy context.

One process with several nodes keeps their messages off the inter-process transport (a 640x480 image:
~4 ms instead of ~17 ms, docs/TRANSPORT.md); the same graph definition is what the launch files start
one process per node.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from flow2one.graph import NODES, graph, linked_params, load_params, params_path, read_params_file
from flow2one.ros.node_process import NodeProcess
from flow2one.ros.params import build_params

# The rclpy executor of an in-process graph. "single" by default: rclpy's MultiThreadedExecutor re-yields
# callbacks it has queued but not started and returns from its wait at once, so its spin loop can hold the
# GIL in a busy loop while its pool's workers wait to start; beside a policy node it intermittently starved
# every other node of the process (a 30 Hz probe published 62 of 120 observations; docs/decisions.md,
# "Latency"). Nodes whose work is long run it on threads of their own (policy inference, executor control,
# camera capture, bag replay), so one thread dispatching callbacks is enough.
# FLOW2ONE_ROS_EXECUTOR sets it for a whole run, child processes included (`flow2one latency --before`).
ROS_EXECUTORS = ("single", "events", "multi")
EXECUTOR_ENV = "FLOW2ONE_ROS_EXECUTOR"


def make_executor(kind: str, context: Context, num_threads: int = 4) -> Executor:
    if kind == "single":
        return SingleThreadedExecutor(context=context)
    if kind == "events":
        # rclpy's experimental EventsExecutor (not in every distribution's rclpy): no better than "single" here
        from rclpy.experimental.events_executor import EventsExecutor
        return EventsExecutor(context=context)
    if kind == "multi":
        return MultiThreadedExecutor(num_threads=num_threads, context=context)
    raise ValueError(f"ROS executor {kind!r} is not one of {ROS_EXECUTORS}")


def node_class(name: str) -> type[Node]:
    if name not in NODES:
        raise KeyError(f"unknown node {name!r}; known: {', '.join(NODES)}")
    module, cls = NODES[name].entry.split(":")
    return getattr(importlib.import_module(module), cls)


def check_params(graph_name: str, nodes: Iterable[str], overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 params_files: Iterable[str | Path] = ()) -> None:
    """Every node's parameters (graph file, extra files, overrides) against its declaration, without
    starting anything: a misspelled or wrong-typed parameter fails before a sim world or a child process
    spends seconds starting up."""
    files = [load_params(graph_name), *map(read_params_file, params_files)]
    for name in nodes:
        values: dict[str, Any] = {}
        for params in files:
            values.update(params.get(name, {}))
        values.update((overrides or {}).get(name, {}))
        build_params(node_class(name).PARAMS, values, name)


def with_links(graph_name: str, nodes: Iterable[str], overrides: Mapping[str, Mapping[str, Any]],
               params_files: Iterable[str | Path] = ()) -> dict[str, dict[str, Any]]:
    """`overrides` plus the values flow2one.graph.LINKS give `nodes` from the graph's files and `overrides`."""
    sections = [load_params(graph_name), *map(read_params_file, params_files), {k: dict(v) for k, v in overrides.items()}]
    out = {k: dict(v) for k, v in overrides.items()}
    for node, values in linked_params(sections, tuple(nodes)).items():
        out.setdefault(node, {}).update(values)
    return out


class GraphRunner:
    """Context manager owning an rclpy context, the graph's nodes and a spinning executor thread.

    `overrides` maps node name -> {param: value} and wins over the parameter files, which is how tests
    and CLIs change a graph without editing its YAML. `executor` is one of ROS_EXECUTORS (`num_threads`
    is the "multi" one's; default: $FLOW2ONE_ROS_EXECUTOR or "single").
    """

    def __init__(
        self,
        graph_name: str,
        nodes: Iterable[str] | None = None,
        params_files: Iterable[str | Path] = (),
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        domain_id: int | None = None,
        extra_nodes: Iterable[Node] = (),
        num_threads: int = 4,
        executor: str | None = None,
    ) -> None:
        spec = graph(graph_name)
        self.graph_name = graph_name
        self.node_names = tuple(nodes) if nodes is not None else spec.nodes
        unknown = [n for n in self.node_names if n not in NODES]
        if unknown:
            raise KeyError(f"unknown nodes {unknown}; known: {', '.join(NODES)}")
        self.params_files = [params_path(graph_name), *map(Path, params_files)]
        # Read the files here too: a broken file fails with a clear ValueError before rcl parses it, and
        # the node names + keys let start() catch parameters that no node declares (rclpy ignores them).
        self._file_params: dict[str, set[str]] = {}
        for params in [load_params(graph_name), *map(read_params_file, self.params_files[1:])]:
            for node, values in params.items():
                self._file_params.setdefault(node, set()).update(values)
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        stray = sorted(set(self.overrides) - set(self.node_names))
        if stray:
            raise ValueError(f"parameter overrides for nodes that are not started: {stray}")
        self.overrides = with_links(graph_name, self.node_names, self.overrides, self.params_files[1:])
        check_params(graph_name, self.node_names, self.overrides, self.params_files[1:])
        self.domain_id = domain_id
        executor = executor or os.environ.get(EXECUTOR_ENV) or "single"
        if executor not in ROS_EXECUTORS:
            raise ValueError(f"ROS executor {executor!r} is not one of {ROS_EXECUTORS}")
        self.num_threads, self.executor_kind = num_threads, executor
        self.context = Context()
        self.nodes: dict[str, Node] = {}
        self._extra = list(extra_nodes)
        self._executor: Executor | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> GraphRunner:
        args = ["--ros-args"]
        for p in self.params_files:
            args += ["--params-file", str(p)]
        domain = self.domain_id if self.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", 0))
        rclpy.init(args=args, context=self.context, domain_id=domain)
        try:
            remaps = graph(self.graph_name).remappings
            for name in self.node_names:
                cli = ["--ros-args"] + [a for src, dst in remaps.get(name, ()) for a in ("-r", f"{src}:={dst}")]
                overrides = [Parameter(k, value=v) for k, v in self.overrides.get(name, {}).items()]
                self.nodes[name] = node_class(name)(
                    node_name=name, context=self.context, cli_args=cli, parameter_overrides=overrides
                )
                # rclpy ignores values of undeclared parameters: a typo would silently do nothing.
                given = {p.name for p in overrides} | self._file_params.get(name, set())
                typos = sorted(k for k in given if not self.nodes[name].has_parameter(k))
                if typos:
                    raise ValueError(f"node '{name}' has no parameter(s) {typos} (set in overrides or "
                                     f"{', '.join(map(str, self.params_files))})")
            self._executor = make_executor(self.executor_kind, self.context, self.num_threads)
            for node in [*self.nodes.values(), *self._extra]:
                self._executor.add_node(node)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._spin, name=f"graph-{self.graph_name}", daemon=True)
        self._thread.start()
        return self

    def add_node(self, node: Node) -> None:
        """Spin an extra node (a test probe, say) in this graph's executor."""
        assert self._executor is not None, "start() first"
        self._executor.add_node(node)

    def _spin(self) -> None:
        # spin_once in a loop instead of spin(): stop() ends the loop BEFORE the executor's thread pool is
        # shut down, so no callback is ever submitted to a closed pool.
        while not self._stopping.is_set() and self.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except ExternalShutdownException:
                return

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Idempotent; a node whose close() fails does not keep the others (or the context) alive."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=2.0)
        errors: list[BaseException] = []
        for node in reversed(list(self.nodes.values())):
            close = getattr(node, "close", None)
            try:
                if callable(close):
                    close()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the rest is released
                errors.append(exc)
            node.destroy_node()
        self.nodes.clear()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        if errors:
            raise errors[0]

    def __enter__(self) -> GraphRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def process_groups(own: Iterable[str]) -> list[list[str]]:
    """`--own-process` entries -> the node names of each child process: "a" alone, "a+b" together."""
    return [[n for n in entry.split("+") if n] for entry in own if entry.strip("+")]


def placed_nodes(own: Iterable[str]) -> set[str]:
    """Every node `--own-process` entries put in a child process."""
    return {n for group in process_groups(own) for n in group}


@contextlib.contextmanager
def split_graph(graph_name: str, nodes: Iterable[str], own: Iterable[str],
                overrides: Mapping[str, Mapping[str, Any]] | None = None, params_files: Iterable[str | Path] = (),
                domain_id: int | None = None) -> Iterator[tuple[GraphRunner, list[NodeProcess]]]:
    """`nodes` of a graph, the `own` ones in child processes (each entry one process: "a" alone, "a+b"
    together, as a component container would hold them), the rest in a GraphRunner here. The runner is built
    first, so an unreadable params file or an override for a node not in the run fails before any child
    starts, and so does a parameter that no node declares or of the wrong type (check_params); the children
    start in order (the sim world before an executor that connects to it)."""
    nodes, own, params_files = list(nodes), list(own), list(params_files)
    overrides = with_links(graph_name, nodes, overrides or {}, params_files)  # a child's link may be another's node
    groups, placed = process_groups(own), placed_nodes(own)
    check_params(graph_name, nodes, overrides, params_files)
    runner = GraphRunner(graph_name, nodes=[n for n in nodes if n not in placed], params_files=params_files,
                         overrides={n: v for n, v in overrides.items() if n not in placed}, domain_id=domain_id)
    children = [NodeProcess(graph_name, g, {n: overrides[n] for n in g if n in overrides} or None, domain_id,
                            params_files=params_files) for g in groups]
    with contextlib.ExitStack() as stack:
        for child in children:
            stack.enter_context(child)
        stack.enter_context(runner)
        yield runner, children


def run_node_main(name: str, args: list[str] | None = None) -> None:
    """Entry point of each node's console script (what launch files execute, one process per node)."""
    rclpy.init(args=args)
    node = node_class(name)(node_name=name)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):  # Ctrl-C / SIGTERM (rclpy's handler) stop it
        pass
    except Exception:
        # SIGTERM can shut the context down while the executor builds its next wait set, which raises
        # RCLError ("context is not valid") instead of ExternalShutdownException: a stop all the same.
        if rclpy.ok():
            raise
    finally:
        close = getattr(node, "close", None)
        if callable(close):
            close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
