"""Training metrics: one JSON line per logged step, TensorBoard scalars, a progress bar with ETA,
phase timers, and curves as PNG at the end. Only rank 0 writes; other ranks get a logger that does nothing."""
from __future__ import annotations

import json
import os
import resource
import secrets
import sys
import time
from contextlib import contextmanager

import torch


def peak_memory_bytes() -> int:
    """Peak device memory on CUDA, else the process's peak resident set (Linux reports KiB)."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class MetricsLogger:
    def __init__(self, out_dir: str, total_steps: int, start_step: int = 0, enabled: bool = True,
                 desc: str = "train", log_cfg=None, run_config: dict | None = None):
        """log_cfg: a dprl.config.LogConfig (wandb); run_config: the resolved config it records."""
        self.enabled = enabled
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.wandb_run = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        os.makedirs(out_dir, exist_ok=True)
        if start_step == 0 and os.path.exists(self.path):
            os.remove(self.path)  # a fresh run; a resumed one appends
        elif start_step:
            self._truncate_after(start_step)
        self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=start_step or None)
        self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step",
                        dynamic_ncols=True, file=sys.stderr)
        if log_cfg is not None and log_cfg.wandb:
            self.wandb_run = _start_wandb(log_cfg, out_dir, start_step, run_config)

    def _truncate_after(self, step: int) -> None:
        """Drops rows past `step` that an interrupted run logged after its last saved state, so
        the resumed run's rows follow on without duplicates."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as fh:
            rows = [line for line in fh if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w") as fh:
            fh.writelines(rows)

    def log(self, step: int, values: dict) -> None:
        """`step` counts optimizer steps done (1 after the first)."""
        if not self.enabled:
            return
        row = {"step": step, **values}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in values.items() if isinstance(v, (int, float))}
        for k, v in scalars.items():
            self.tb.add_scalar(k, v, step)
        if self.wandb_run is not None:
            self.wandb_run.log(scalars, step=step)
        self.bar.set_postfix(loss=f"{values.get('train/loss', float('nan')):.4f}",
                             lr=f"{values.get('train/lr', float('nan')):.2e}", refresh=False)

    def advance(self, n: int = 1) -> None:
        if self.enabled:
            self.bar.update(n)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.tb.close()
            if self.wandb_run is not None:
                self.wandb_run.finish()
                self.wandb_run = None


def _start_wandb(log_cfg, out_dir: str, start_step: int, run_config: dict | None):
    """A wandb run for this output directory. Its id is kept in the directory, so a resumed run
    logs into the same wandb run (steps it already logged past the checkpoint are dropped by
    wandb with a warning); a fresh run gets a new id."""
    import wandb

    id_path = os.path.join(out_dir, "wandb_run_id")
    run_id = None
    if start_step and os.path.isfile(id_path):
        with open(id_path) as fh:
            run_id = fh.read().strip() or None
    if run_id is None:
        run_id = secrets.token_hex(4)  # wandb ids are free-form; 8 hex digits as wandb's own
        with open(id_path, "w") as fh:
            fh.write(run_id + "\n")
    return wandb.init(project=log_cfg.wandb_project,
                      name=log_cfg.wandb_name or os.path.basename(os.path.abspath(out_dir)),
                      tags=list(log_cfg.wandb_tags) or None, id=run_id, resume="allow", dir=out_dir,
                      config=run_config)


def read_metrics(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_loss(metrics_path: str, png_path: str, title: str = "SFT loss") -> str:
    """Loss (and LR on a second axis) against optimizer step, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path) if "train/loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["train/loss"] for r in rows], label="loss", color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (reply tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot([r["step"] for r in rows], [r["train/lr"] for r in rows], color="tab:orange", alpha=0.6)
    lr_ax.set_ylabel("learning rate", color="tab:orange")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


class PhaseTimer:
    """`with timer("rollout"): ...` accumulates wall seconds per phase into `timer.seconds`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            with torch.profiler.record_function(phase):  # names the phase in profiler traces
                yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        return {f"time/{k}_s": v for k, v in self.seconds.items()}


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
