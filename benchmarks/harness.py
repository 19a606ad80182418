"""Shared benchmark plumbing: medians, environment facts, peak-RSS probes, JSONL result rows."""
from __future__ import annotations

import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import time

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def median_time(fn, repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_median_times(fns: dict, repeats: int = 7, warmup: int = 1,
                             shuffle_seed: int | None = None, lead_in: tuple = ()) -> dict:
    """Median wall time in seconds of each named fn, timed in turns (a, b, a, b, ...) so that a
    slow spell of a shared machine lands on every variant instead of on whichever ran then.

    shuffle_seed: each round runs the fns in a fresh random order, so that no fn always inherits
    the caches and branch history one particular predecessor left behind. lead_in: names whose
    timed call is preceded by one untimed call of their own, so that what is timed is a call in
    a row (steady state); a fn of a millisecond or two needs it, one of 100 ms warms itself."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    order = list(fns)
    rng = random.Random(shuffle_seed)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        if shuffle_seed is not None:
            rng.shuffle(order)
        for name in order:
            fn = fns[name]
            if name in lead_in:
                fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine_scaling_2t(nbytes: int = 8 << 20, repeats: int = 7) -> float:
    """What a second thread buys on this machine for plain compute: SHA-256 of two buffers on
    one thread vs on two (hashlib releases the GIL). Virtual CPUs often give well under 2x; a
    parallel result is judged against this ceiling, measured in the same run."""
    import hashlib
    import threading

    bufs = [os.urandom(nbytes), os.urandom(nbytes)]

    def one():
        for b in bufs:
            hashlib.sha256(b).digest()

    def two():
        t = threading.Thread(target=lambda: hashlib.sha256(bufs[1]).digest())
        t.start()
        hashlib.sha256(bufs[0]).digest()
        t.join()

    t = interleaved_median_times({"one": one, "two": two}, repeats)
    return t["one"] / t["two"]


def _proc_status(key: str) -> int:
    """A byte count from /proc/self/status (Linux reports KiB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss_peak_extra(fn) -> int:
    """Bytes of resident memory `fn` added at its peak, from the kernel's high-water mark (Linux).
    Run the process with MALLOC_MMAP_THRESHOLD_ set low so freed blocks leave RSS at once instead
    of hiding in a reused heap."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _proc_status("VmRSS")
    fn()
    return _proc_status("VmHWM") - base


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(RESULTS_DIR), check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown"


def environment() -> dict:
    """Device, versions and commit: what a result row needs to be comparable later."""
    import numpy
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()}"
    return {
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "numpy": numpy.__version__,
        "commit": git_commit(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def append_rows(name: str, rows: list[dict]) -> str:
    """Appends rows (each merged over `environment()`) to benchmarks/results/<name>.jsonl."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.jsonl")
    env = environment()
    with open(path, "a") as fh:
        for row in rows:
            fh.write(json.dumps({**env, **row}) + "\n")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)
