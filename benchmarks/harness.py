"""Shared benchmark plumbing: environment facts, peak-RSS probes, result rows."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()}"
    return {"device": device, "torch": torch.__version__, "triton": triton_version,
            "python": platform.python_version(), "commit": git_commit(),
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def append_rows(name: str, rows: list[dict]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss_peak_extra(fn) -> int:
    """Bytes of resident memory `fn` added at its peak (Linux; run the process with
    MALLOC_MMAP_THRESHOLD_ set low so freed blocks leave RSS at once)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _status("VmRSS")
    fn()
    return _status("VmHWM") - base


def print_table(rows: list[dict], cols: list[str]) -> None:
    fmt = [max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, fmt)))
    for r in rows:
        print("  ".join(_cell(r.get(c)).ljust(w) for c, w in zip(cols, fmt)))


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)
