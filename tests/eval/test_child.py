"""The per-checkpoint child process: it ends with its parent, and its crash is an error, not a hang."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dprl.eval.child import run_in_child

PARENT = textwrap.dedent("""
    import multiprocessing as mp, threading, time
    from dprl.eval.child import run_in_child

    def report():
        while not mp.active_children():
            time.sleep(0.05)
        print(mp.active_children()[0].pid, flush=True)

    if __name__ == "__main__":
        threading.Thread(target=report, daemon=True).start()
        run_in_child(time.sleep, (120,), "sleeping")
""")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has ended
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_child_ends_when_its_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # let the child arm its death signal (it would exit as an orphan anyway)
    parent.send_signal(signal.SIGKILL)  # no finally block runs: only the kernel can end the child
    parent.wait()
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = not _gone(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the child outlived its killed parent"


def test_child_result_and_crash():
    assert run_in_child(abs, (-3,), "abs") == 3
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="crashing failed.*code 3"):
        run_in_child(os._exit, (3,), "crashing", poll_s=0.2)
    assert time.monotonic() - t0 < 30
