"""A run directory has one owner, and a command's child processes die with it.

Two runs writing into one output_dir would interleave their metrics rows and overwrite each
other's checkpoints without an error, so a command holds an exclusive lock on
`<output_dir>/.lock` for as long as it lives. flock releases the lock when the holder exits,
however it exits, so a `.lock` file left by a killed run does not block the next one; the pid
written in it only says who holds it.

A stage child (`dprl pipeline` runs each stage as `python -m dprl.cli <stage>`) must not outlive
its parent: killed with SIGKILL, the parent gets no chance to stop it, and the orphan would keep
training into the directory the next run resumes from.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import threading

from dprl.errors import UserFacingError

LOCK_NAME = ".lock"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_STOP_GRACE_S = 10.0  # a stopped child gets this long to exit before SIGKILL


class RunDirBusy(UserFacingError):
    """Another live process holds the run directory's lock."""


class Terminated(Exception):
    """SIGTERM arrived while a tied child was running (raised in place of dying at once, so the
    child is stopped first)."""


def is_lock_rank() -> bool:
    """Whether this process takes the run lock: torchrun starts one process per rank of the same
    run, and only rank 0 (or a process started without torchrun) owns the directory."""
    return os.environ.get("RANK", "0") == "0"


def lock_run_dir(output_dir: str):
    """Takes `<output_dir>/.lock` without waiting and returns the open file that holds it (the
    lock lasts until that file is closed or the process exits). Returns None on ranks other than
    0. Raises RunDirBusy naming the holder's pid when another process has it."""
    if not is_lock_rank():
        return None
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_NAME)
    fh = open(path, "a+")  # not "w": truncating before holding the lock would erase the holder's pid
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise RunDirBusy(
            f"{output_dir} is in use by another run (pid {holder}, see {path}); two runs in one "
            f"output_dir would mix their files. Wait for it to finish, stop it (kill {holder}), or "
            "choose another output_dir.") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def die_with_parent(parent_pid: int, libc=None) -> None:
    """Asks Linux to send this process SIGTERM when its parent dies, and sends it at once if the
    parent died before the request (between the fork and this call). Elsewhere a no-op. The
    signal follows the parent *thread* that started this process: start children from a thread
    that lives as long as they should (the main thread). `libc`: preloaded when called between
    fork and exec, where only system calls are safe."""
    if not sys.platform.startswith("linux"):
        return
    libc = libc or ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


def _tie_to_parent(parent_pid: int, libc) -> None:
    """Runs in the child between fork and exec: its own process group (so stopping it reaches
    the processes it starts, and a terminal's Ctrl-C goes to the parent alone, which stops it),
    and SIGTERM from the kernel when the parent dies."""
    os.setpgid(0, 0)
    die_with_parent(parent_pid, libc)


def spawn_tied(cmd: list[str], **popen_kwargs) -> subprocess.Popen:
    """Starts `cmd` as a child that dies with this process, even when this one is SIGKILLed.

    The kernel's death signal follows the thread that forks, so call this from a thread that
    lives as long as the child should (the main thread)."""
    parent = os.getpid()
    # Loaded here: the child, between fork and exec, should only make system calls.
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    return subprocess.Popen(cmd, preexec_fn=lambda: _tie_to_parent(parent, libc), **popen_kwargs)


def stop(child: subprocess.Popen, grace_s: float = _STOP_GRACE_S) -> None:
    """SIGTERM to the child's process group, SIGKILL after `grace_s`; returns once it is gone."""
    if child.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal_group(child, sig)
        try:
            child.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        # Only a group the child leads: its group is ours if setpgid failed, and that would hit us.
        if os.getpgid(child.pid) == child.pid:
            os.killpg(child.pid, sig)
        else:
            child.send_signal(sig)
    except ProcessLookupError:
        pass


def _raise_terminated(signum, frame):
    raise Terminated(f"stopped by signal {signum}")


def run_tied(cmd: list[str], **popen_kwargs) -> int:
    """subprocess.run for a child that must not outlive us: on Ctrl-C (KeyboardInterrupt) or
    SIGTERM the child is stopped and waited for before the exception goes on; on SIGKILL the
    kernel stops it. Returns the child's exit code."""
    main = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    # The handler goes in before the child starts: a SIGTERM that comes while the child is being
    # started must stop it too, not kill this process without a word.
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    child = None
    try:
        child = spawn_tied(cmd, **popen_kwargs)
        return child.wait()
    except BaseException:
        if child is not None:  # else it never started, or dies by its death signal when we exit
            stop(child)
        raise
    finally:
        if main:  # None: a handler set outside Python, which cannot be put back; use the default
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
