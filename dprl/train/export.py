"""Trained weights back to a standard HF checkpoint directory (loadable by transformers, vLLM
and `dprl eval`), from any ZeRO stage."""
from __future__ import annotations

import os

import torch


def export_hf(engine, processor, out_dir: str, is_main: bool = True) -> str:
    """Gathers the full weights (ZeRO-3 partitions included) and writes them with the processor.

    Collective under ZeRO-3: every rank must call it; only `is_main` writes.
    """
    module = getattr(engine, "module", engine)
    params = list(module.parameters())
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if partitioned:
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)
    else:
        from contextlib import nullcontext

        ctx = nullcontext()
    with ctx:
        if is_main:
            os.makedirs(out_dir, exist_ok=True)
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            module.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
            processor.save_pretrained(out_dir)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return out_dir
