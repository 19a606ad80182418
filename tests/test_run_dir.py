"""One run per output_dir, and stage processes that die with `dprl pipeline` (Linux: /proc and
PR_SET_PDEATHSIG)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from cli_runner import REPO, child_env, run_cli
from dprl.run_dir import RunDirBusy, lock_run_dir

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's /proc")

TINY_WORLD = ["world.seen_domains=[bird]", "world.unseen_domains=[]", "world.train_per_domain=2",
              "world.val_per_domain=0", "world.test_per_domain=1", "world.fgvr_train_per_domain=0",
              "world.fgvr_test_per_domain=0", "world.workers=1"]
# Big enough that the world stage is still running when the test stops the pipeline.
SLOW_WORLD = ["stages=[world]", "world.workers=1", "world.train_per_domain=100000"]

HOLD_LOCK = ("import sys, time; from dprl.run_dir import lock_run_dir; "
             "held = lock_run_dir(sys.argv[1]); print('locked', flush=True); time.sleep(120)")


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _wait_for(predicate, timeout: float):
    """predicate()'s first truthy value within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return None


def _stage_child(parent: int, timeout: float = 60) -> int:
    """The pid of `parent`'s `dprl.cli <stage>` child, once it runs the stage's code."""
    def find():
        for pid in _children(parent):
            try:
                if b"dprl.cli" in open(f"/proc/{pid}/cmdline", "rb").read():
                    return pid
            except FileNotFoundError:
                continue
        return None

    pid = _wait_for(find, timeout)
    assert pid, f"no stage process appeared under {parent}"
    return pid


def _as_from_a_shell() -> None:
    """Ctrl-C and SIGTERM as a shell leaves them to a command it starts: at their defaults and
    not blocked. A library an earlier test loaded into this process may have set SIGINT to be
    ignored, which a child would inherit (and then never see the SIGINT the test sends)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _start_pipeline(out, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dprl.cli", "pipeline", "--config",
                             "configs/pipeline_tiny.yaml", f"output_dir={out}", *SLOW_WORLD],
                            cwd=REPO, env=child_env(), preexec_fn=_as_from_a_shell, **popen)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_the_lock_goes_with_its_holder(tmp_path):
    held = lock_run_dir(str(tmp_path))
    with pytest.raises(RunDirBusy, match=rf"pid {os.getpid()}\b.*choose another output_dir"):
        lock_run_dir(str(tmp_path))
    held.close()
    lock_run_dir(str(tmp_path)).close()
    # A holder killed without a chance to clean up leaves its .lock file; it must not block.
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    again = lock_run_dir(str(tmp_path))
    assert open(tmp_path / ".lock").read().strip() == str(os.getpid())
    again.close()


def test_only_rank_0_takes_the_lock(tmp_path, monkeypatch):
    held = lock_run_dir(str(tmp_path))
    monkeypatch.setenv("RANK", "1")  # another process of the same torchrun launch
    assert lock_run_dir(str(tmp_path)) is None
    held.close()


def test_a_second_run_in_the_same_directory_fails_at_once(tmp_path):
    out = tmp_path / "world"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        tiny = [o.removeprefix("world.") for o in TINY_WORLD]
        proc = run_cli("world", "--config", "configs/world_tiny.yaml", f"output_dir={out}", *tiny, timeout=120)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"in use by another run (pid {holder.pid}" in proc.stderr
        assert not (out / "world.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_pipeline_stages_lock_their_own_directories(tmp_path):
    out = tmp_path / "p"
    proc = run_cli("pipeline", "--config", "configs/pipeline_tiny.yaml", f"output_dir={out}",
                   "stages=[world]", *TINY_WORLD, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / ".lock").is_file() and (out / "world" / ".lock").is_file()


def test_a_tied_child_dies_with_its_killed_parent():
    code = ("import sys; from dprl.run_dir import run_tied; "
            "run_tied([sys.executable, '-c', 'import time; time.sleep(120)'])")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    child = None
    try:
        child = _wait_for(lambda: next(iter(_children(parent.pid)), None), 30)
        assert child
        time.sleep(0.5)  # past the fork, into the child's own program
        parent.kill()
        parent.wait()
        assert _wait_for(lambda: not _alive(child), 10), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
        if child:
            _kill(child)


def test_a_killed_pipeline_takes_its_stage_with_it(tmp_path):
    pipeline = _start_pipeline(tmp_path / "p", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    try:
        child = _stage_child(pipeline.pid)
        pipeline.kill()
        pipeline.wait()
        assert _wait_for(lambda: not _alive(child), 10), "the world stage outlived its SIGKILLed pipeline"
    finally:
        pipeline.kill()
        if child:
            _kill(child)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                            (signal.SIGTERM, 143, "terminated")])
def test_a_stopped_pipeline_stops_its_stage_and_says_how_to_resume(tmp_path, sig, code, word):
    pipeline = _start_pipeline(tmp_path / "p", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    child = None
    try:
        child = _stage_child(pipeline.pid)
        pipeline.send_signal(sig)  # to the pipeline alone, as `kill` or a job scheduler sends it
        _, err = pipeline.communicate(timeout=60)
        assert pipeline.returncode == code, err[-3000:]
        assert not _alive(child)
        # One line from the pipeline (a progress bar may end where it starts), none from the stage.
        assert err.count("dprl ") == 1, err[-3000:]
        assert err.endswith(f"dprl pipeline: {word}; run the same command again to resume\n"), err[-3000:]
        assert "Traceback" not in err
    finally:
        pipeline.kill()
        if child:
            _kill(child)
