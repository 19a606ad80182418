"""Running one evaluation in a child process that cannot outlive its parent.

Multi-checkpoint vLLM evaluation gives each checkpoint a fresh process (one vLLM engine per
process). Without care, killing the parent leaves the child writing predictions, and a child
that crashes leaves the parent waiting on its queue for ever.
"""
from __future__ import annotations

import os
import queue as queue_mod

from dprl.run_dir import die_with_parent


def _child_main(target, args: tuple, results, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    results.put(target(*args))


def run_in_child(target, args: tuple, what: str, poll_s: float = 1.0):
    """target(*args) in a spawned process; returns its result. Raises RuntimeError naming `what`
    when the child dies without a result (its own traceback is printed above by the child).
    The child is ended when this call ends in any way (Ctrl-C included), and gets SIGTERM if
    this process is killed outright. `target` must be importable (a module-level function)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    # Not daemonic: a daemonic process may not start processes of its own, and vLLM can.
    proc = ctx.Process(target=_child_main, args=(target, args, results, os.getpid()))
    proc.start()
    try:
        while True:
            try:
                result = results.get(timeout=poll_s)
                break
            except queue_mod.Empty:
                if proc.is_alive():
                    continue
                try:  # it may have put its result just before exiting
                    result = results.get(timeout=poll_s)
                    break
                except queue_mod.Empty:
                    raise RuntimeError(f"{what} failed: its process exited with code {proc.exitcode} "
                                       "without a result (see its error above)") from None
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{what} failed (exit {proc.exitcode})")
        return result
    finally:
        _stop(proc)


def _stop(proc, grace_s: float = 10.0) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(grace_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
