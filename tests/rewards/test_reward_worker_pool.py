"""The C++ worker pool: batches split across warm workers, callers from several Python threads
at once (the pool takes one, the others use threads of their own), and a forked child (which
inherits the pool object but not its threads) all give the single-threaded result."""
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from dprl.rewards.backend import native_backend
from dprl.rewards import RewardFunction

from conftest import needs_native

pytestmark = needs_native

TERMS = [("format", 0.5), ("iou", 1.0), ("acc", 1.0, 0.5)]


def _batch(n: int, seed: int):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 500, (n, 2)).astype(np.float32)
    gt = np.concatenate([gt, gt + rng.integers(20, 400, (n, 2))], axis=1)  # (N, 4)
    pred = gt + rng.integers(-60, 61, (n, 4))
    # Long thoughts put the batch over the per-thread byte threshold, so it is really split.
    texts = [f"<think>{'w' * int(rng.integers(50, 600))}</think><answer>[{p[0]}, {p[1]}, {p[2]}, "
             f"{p[3]}]</answer>" if i % 7 else "garbage" for i, p in enumerate(pred.tolist())]
    return texts, gt


def _serial(texts, gt):
    return RewardFunction(TERMS, max_threads=1).score(texts, boxes=gt)[0]


def test_pool_splits_and_matches_serial():
    if native_backend().module.pool_workers() < 1:
        pytest.skip("one hardware thread: the pool has no workers")
    texts, gt = _batch(6000, 0)
    want = _serial(texts, gt)
    fn = RewardFunction(TERMS, max_threads=2)
    for _ in range(20):  # back to back: warm workers; the first call wakes a sleeping one
        np.testing.assert_array_equal(fn.score(texts, boxes=gt)[0], want)


def test_sleeping_workers_that_join_late_or_never_change_nothing():
    """With no polling, every job finds the worker asleep: it wakes during the job (and takes
    what chunks are left) or after the caller took them all (and must leave the finished job
    alone). Either way the result is the serial one; run in a child, since the polling time is
    read once per process."""
    if native_backend().module.pool_workers() < 1:
        pytest.skip("one hardware thread: the pool has no workers")
    code = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_reward_worker_pool import _batch, _serial, TERMS
        from dprl.rewards import RewardFunction
        texts, gt = _batch(6000, 2)
        want = _serial(texts, gt)
        fn = RewardFunction(TERMS, max_threads=2)
        for k in range(30):
            if k % 3 == 0:
                time.sleep(0.002)  # let the worker fall asleep between some calls
            np.testing.assert_array_equal(fn.score(texts, boxes=gt)[0], want)
        print("ok")
    """)
    env = dict(os.environ, DPRL_POOL_SPIN_US="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_concurrent_callers_from_python_threads():
    batches = [_batch(3000, seed) for seed in range(4)]
    wants = [_serial(*b) for b in batches]
    got, errors = {}, []

    def work(k):
        try:
            fn = RewardFunction(TERMS, max_threads=2)
            for _ in range(10):
                got[k] = fn.score(batches[k][0], boxes=batches[k][1])[0]
                np.testing.assert_array_equal(got[k], wants[k])
        except Exception as e:  # noqa: BLE001 - reported below with the thread's index
            errors.append((k, e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_builds_its_own_pool():
    texts, gt = _batch(6000, 1)
    fn = RewardFunction(TERMS, max_threads=2)
    want = fn.score(texts, boxes=gt)[0]  # the parent's pool now exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: score, send the bytes back, leave without running any cleanup
        signal.alarm(60)  # a child waiting on the parent's (absent) workers dies instead of hanging
        try:
            out = fn.score(texts, boxes=gt)[0].tobytes()
            os.write(write, out)
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    np.testing.assert_array_equal(np.frombuffer(b"".join(chunks), dtype=np.float32), want)
