"""Run metrics: JSONL (one row per step) + TensorBoard, phase timers, peak memory, PNG curves.

Only rank 0 writes. The JSONL file is the source of truth (plot it with anything); TensorBoard
gets the same scalars; `plot_curves` draws the chosen series at the end of a run.
"""
from __future__ import annotations

import json
import os
import resource
import time
from contextlib import contextmanager

import torch


class PhaseTimer:
    """`with timer("rollout"): ...` accumulates wall seconds per phase into `timer.seconds`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        return {f"time/{k}_s": v for k, v in self.seconds.items()}


def peak_memory_gib() -> float:
    """Peak memory of this process: the CUDA allocator's peak on GPU, max RSS on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


class MetricsWriter:
    """Appends step rows to <dir>/metrics.jsonl and mirrors scalars to TensorBoard (<dir>/tb)."""

    def __init__(self, directory: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(directory, "metrics.jsonl")
        self._tb = None
        if enabled:
            os.makedirs(directory, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(os.path.join(directory, "tb"))
                except ImportError:  # tensorboard is optional; the JSONL is complete without it
                    self._tb = None

    def truncate_after(self, step: int) -> None:
        """Drops rows of steps > `step` (a resumed run rewrites them, so no step appears twice)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as fh:
            rows = [line for line in fh if line.strip() and json.loads(line).get("step", -1) <= step]
        with open(self.path, "w") as fh:
            fh.writelines(rows)

    def write(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **row}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_curves(metrics_path: str, keys: list[str], out_png: str, title: str = "") -> str | None:
    """One panel per key against step; keys missing from the run are skipped."""
    rows = read_metrics(metrics_path) if os.path.exists(metrics_path) else []
    keys = [k for k in keys if any(k in r for r in rows)]
    if not rows or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
