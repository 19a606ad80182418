"""Builds the shared DeepSpeed engine on a toy model in a world of one and records what happened
over a few optimizer steps (run as its own process: DeepSpeed's world is process-global).
Usage: engine_run.py OUT_JSON ZERO_STAGE DTYPE"""
from __future__ import annotations

import json
import sys

import torch

from dprl.config import TrainerConfig
from dprl.train.engine import build_deepspeed_engine, init_distributed, lr_multiplier


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.visual = torch.nn.Linear(4, 4)
        self.model.language_model = torch.nn.Linear(4, 4)

    def forward(self, x):  # x: (B, 4)
        return self.model.language_model(self.model.visual(x)).pow(2).mean()


def main() -> None:
    out, stage, dtype = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cfg = TrainerConfig(zero_stage=stage, dtype=dtype, lr=0.1, warmup_steps=2, total_steps=6,
                        min_lr_ratio=0.1, grad_accum_steps=2, micro_batch_size=2, grad_clip=0.5,
                        param_persistence_threshold=0)
    init_distributed(cfg)
    torch.manual_seed(0)
    model = Toy()
    vis0 = model.model.visual.weight.detach().clone()
    lm0 = model.model.language_model.weight.detach().clone()
    ds_engine, opt, sched = build_deepspeed_engine(model, cfg)
    lrs, boundaries = [], []
    for micro in range(8):  # 4 optimizer steps of 2 micro-batches
        x = torch.randn(2, 4).to(next(ds_engine.module.parameters()).dtype)
        loss = ds_engine(x)
        ds_engine.backward(loss)
        boundaries.append(ds_engine.is_gradient_accumulation_boundary())
        ds_engine.step()
        if boundaries[-1]:
            lrs.append(opt.param_groups[0]["lr"])
    from dprl.train.weight_sync import gathered

    params = list(ds_engine.module.parameters())
    dtype_ = params[0].dtype
    with gathered(params):
        vis = ds_engine.module.model.visual.weight.detach().float().clone()
        lm = ds_engine.module.model.language_model.weight.detach().float().clone()
    json.dump({
        "lrs": lrs,
        "expected_lrs": [0.1 * lr_multiplier(s, cfg) for s in range(1, 5)],
        "boundaries": boundaries,
        "vision_requires_grad": model.model.visual.weight.requires_grad,
        "trainable_params": sum(p.requires_grad for p in model.parameters()),
        # Compared in the engine's dtype: casting to bf16 alone moves the weights by ~1e-3.
        "vision_changed": (vis - vis0.to(dtype_).float()).abs().max().item(),
        "lm_changed": (lm - lm0.to(dtype_).float()).abs().max().item(),
        "module_dtype": str(next(ds_engine.module.parameters()).dtype),
    }, open(out, "w"))


if __name__ == "__main__":
    main()
