"""Child processes (franky-sim, the sim world, sim demos, bag writers in tests): never outliving the parent,
stopped cleanly."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys


def die_with_parent() -> None:
    """Linux `preexec_fn`: the child gets SIGTERM when its parent dies (a crashed run must not leave a
    simulator bound to its address)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Ask a child to end with `sig` (it cleans up), SIGKILL it after `timeout`; no-op if it has ended."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _child(send, fn, args) -> None:
    import threading

    from tqdm import tqdm

    die_with_parent()  # a killed parent must not leave its children running (they hold franky-sims)
    tqdm.set_lock(threading.RLock())  # its default lock holds a multiprocessing semaphore, which os._exit leaks
    try:
        send.send((True, fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent
        send.send((False, exc))
    finally:
        send.close()
        sys.stdout.flush()  # os._exit drops what is still buffered
        sys.stderr.flush()
        os._exit(0)  # skip interpreter teardown: abandoned libfranka clients must not be destroyed


def isolated(fn, *args, what: str, retries: int = 1):
    """fn(*args) in a fresh (spawned) child process; `what` names it in messages. The sim stack (MuJoCo + EGL +
    franky) can segfault or hang in teardown when the machine is starved; in a child that costs one retry of one
    task, not the whole run. An exception fn raises is raised here, without a retry."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for attempt in range(retries + 1):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(send, fn, args))
        proc.start()
        send.close()
        try:
            ok, value = recv.recv()
        except EOFError:  # the child died without an answer
            ok, value = None, None
        proc.join(10.0)
        if proc.is_alive():
            proc.kill()
        if ok:
            return value
        if ok is False:
            raise value
        if attempt == retries:
            raise RuntimeError(f"{what} died {attempt + 1} times (exit {proc.exitcode})")
        print(f"{what} died (exit {proc.exitcode}); retrying", file=sys.stderr)
