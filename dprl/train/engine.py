"""The DeepSpeed engine every training stage builds (SFT and GRPO share it).

`init_distributed` creates the training world first: a colocated rollout engine built afterwards
joins it (vLLM creating the world itself under torchrun fails on rank 1). `build_deepspeed_engine`
wraps a model with ZeRO 0-3, bf16 or fp32, gradient accumulation and clipping, a torch AdamW (DeepSpeed's
own fused/CPU Adam would be JIT-compiled first, minutes on CPU) and a cosine schedule with linear
warmup.
"""
from __future__ import annotations

import math
import os
import socket

import torch

from dprl.config import TrainerConfig


def is_vision_param(name: str) -> bool:
    """Vision tower and merger of Qwen2-VL / Qwen2.5-VL (transformers 5 names, any wrapper)."""
    return ".visual." in f".{name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(cfg: TrainerConfig) -> None:
    """Creates the torch.distributed world (gloo on CPU, nccl on GPU) if none exists yet.

    Under torchrun the launcher's RANK / WORLD_SIZE / MASTER_* are used; a plain `python` run
    becomes a world of one.
    """
    import deepspeed

    if torch.distributed.is_initialized():
        return
    on_gpu = torch.cuda.is_available()
    if not on_gpu and not cfg.cpu_shm_comm:
        # DeepSpeed builds its shared-memory all-reduce for every CPU world from source (about a
        # minute per fresh machine) if its probe calls the op compatible; marking it unavailable
        # makes DeepSpeed use plain gloo collectives, which is all a CPU run needs.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                         ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, default)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")


def lr_multiplier(step: int, cfg: TrainerConfig) -> float:
    """lr(step) / cfg.lr: linear warmup over `warmup_steps` (the first step already moves), then a
    half cosine from 1 down to `min_lr_ratio` at `total_steps`, flat after that."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def plain_grad_norm(ds_engine, cfg: TrainerConfig) -> float | None:
    """The global grad norm (before clipping) where DeepSpeed does not report one: ZeRO-0 in fp32
    clips with torch and keeps no norm. Call it before `ds_engine.step()` at the accumulation
    boundary; gradients are whole there and already averaged over ranks. None elsewhere."""
    if cfg.zero_stage != 0 or cfg.dtype != "float32":
        return None
    grads = [p.grad for p in ds_engine.module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def step_grad_norm(ds_engine, plain: float | None) -> float | None:
    """The last optimizer step's global grad norm: `plain` (from plain_grad_norm) where DeepSpeed
    keeps none, else DeepSpeed's; None where neither measured one."""
    norm = plain if plain is not None else ds_engine.get_global_grad_norm()
    return None if norm is None else float(norm)


def deepspeed_config(cfg: TrainerConfig) -> dict:
    """The DeepSpeed JSON config for `cfg` (the optimizer and schedule are passed as objects)."""
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        zero["stage3_param_persistence_threshold"] = cfg.param_persistence_threshold
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.dtype == "bfloat16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,  # the trainer logs; DeepSpeed's own prints stay quiet
    }


def build_deepspeed_engine(model: torch.nn.Module, cfg: TrainerConfig,
                           optimizer: torch.optim.Optimizer | None = None):
    """Wraps `model` in a DeepSpeed engine -> (ds_engine, optimizer, lr_scheduler).

    With `cfg.freeze_vision` the vision tower's parameters stop requiring grad first, so neither
    the optimizer nor the weight sync touches them. `optimizer` defaults to torch AdamW over the
    trainable parameters. Call `init_distributed` before this (and before any rollout engine).
    """
    import deepspeed

    if not torch.distributed.is_initialized():
        raise RuntimeError("build_deepspeed_engine: call dprl.train.engine.init_distributed(cfg) first")
    if cfg.freeze_vision:
        for name, p in model.named_parameters():
            if is_vision_param(name):
                p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("build_deepspeed_engine: the model has no trainable parameters")
    if optimizer is None:
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                      weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg))
    ds_engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg))
    return ds_engine, optimizer, scheduler


def build_reference_model(model: torch.nn.Module, cfg: TrainerConfig):
    """A model that is only run forward (GRPO's reference): under ZeRO-3 a DeepSpeed engine
    without an optimizer, so its parameters are partitioned over the ranks like the policy's
    and gathered layer by layer in the forward, instead of a full copy on every rank; under
    other stages the model itself (its memory is one copy per rank, as the policy's is)."""
    import deepspeed

    model.requires_grad_(False)
    if cfg.zero_stage != 3:
        return model
    if not torch.distributed.is_initialized():
        raise RuntimeError("build_reference_model: call dprl.train.engine.init_distributed(cfg) first")
    ds_engine, *_ = deepspeed.initialize(model=model, config=deepspeed_config(cfg))
    ds_engine.eval()
    return ds_engine
