"""What both training stages (sft.py, grpo.py) set up and finish alike, in the order they call it.

  open_run          the output_dir is writable and the torch.distributed world exists
  finished_before   a rerun that would overwrite a further-along run fails; the same run, finished
                    and exported, is reported and left alone
  base_checkpoint   the checkpoint to train (model.path or the tiny model) and its processor
  policy_engine     the policy in its DeepSpeed engine, restored from the last save on resume
  metrics_logger    metrics.jsonl, TensorBoard, wandb and the progress bar, on rank 0
  export_final      the trained policy as an HF checkpoint in final/
"""
from __future__ import annotations

import os

import torch

from dprl.config import to_dict
from dprl.train.checkpoint import check_rerun, load_state, save_hf
from dprl.train.engine import build_deepspeed_engine, init_distributed
from dprl.train.metrics import MetricsLogger
from dprl.train.writable import check_writable


def open_run(cfg) -> tuple[int, int]:
    """Fails on an unwritable output_dir before anything loads, then creates the training world
    (before any rollout engine, which joins it) -> (rank, world size)."""
    check_writable(cfg.output_dir)
    init_distributed(cfg.trainer)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def finished_before(cfg, total_steps: int, length_key: str, stage: str) -> str | None:
    """Before the model loads: raises RunStateError when this run would overwrite a further-along
    one (check_rerun). The same run again, finished and exported, has nothing to do: rank 0 says
    so and the message is returned (None for a run to train). Writes nothing: the caller writes
    the run's config after this, so a refused rerun leaves the config on disk as it was."""
    finished = check_rerun(cfg.output_dir, total_steps, cfg.resume, length_key)
    if finished and torch.distributed.get_rank() == 0:
        print(f"{stage}: {finished}", flush=True)
    return finished


def base_checkpoint(cfg):
    """(path, processor) of the checkpoint the stage starts from: model.path, or the tiny model
    built into the output_dir (dprl.models.loading.resolve_checkpoint; all ranks call)."""
    from dprl.models.loading import load_processor, resolve_checkpoint

    path = resolve_checkpoint(cfg.model.path, cfg.model.tiny, cfg.output_dir)
    return path, load_processor(path)


def policy_engine(model: torch.nn.Module, trainer_cfg, cfg):
    """The policy wrapped for training -> (ds_engine, optimizer, lr_scheduler, steps already done):
    restored from the last completed save in cfg.output_dir when cfg.resume (0 steps otherwise)."""
    ds_engine, optimizer, scheduler = build_deepspeed_engine(model, trainer_cfg)
    start = load_state(ds_engine, cfg.output_dir) if cfg.resume else 0
    return ds_engine, optimizer, scheduler, start


def metrics_logger(cfg, total_steps: int, start_step: int, stage: str) -> MetricsLogger:
    """The run's metrics writer and progress bar; a do-nothing logger on ranks other than 0."""
    return MetricsLogger(cfg.output_dir, total_steps, start_step, enabled=torch.distributed.get_rank() == 0,
                         desc=stage, log_cfg=cfg.log, run_config=to_dict(cfg))


def export_final(ds_engine, processor, cfg, steps: int) -> str | None:
    """The policy after `steps` steps as an HF checkpoint in <output_dir>/final (all ranks call;
    rank 0 writes and gets the path, the others None)."""
    return save_hf(ds_engine, processor, os.path.join(cfg.output_dir, "final"), steps)
