"""Checkpoints: the model in HF format (what transformers, vLLM and `dprl eval` load) and the full
training state (DeepSpeed's: weights, optimizer and LR schedule, partitioned as trained) for resume.

Layout under a run directory:
    state/<tag>/...        DeepSpeed checkpoint, one per save; state/latest names the newest
    state/trainer.json     {"step": optimizer steps done, "tag": ...} written after the save completed
    final/                 HF checkpoint: config.json, model.safetensors, tokenizer, processor
"""
from __future__ import annotations

import json
import os
import shutil

import torch

from dprl.train.weight_sync import engine_name, gathered, plan_buckets


def full_state_dict(engine, bucket_bytes: int = 512 * 2**20) -> dict[str, torch.Tensor]:
    """Every parameter whole, on CPU, on rank 0 (other ranks get {}). Collective under ZeRO-3:
    parameters are gathered a bucket of whole blocks at a time, so the extra device memory is
    about one bucket."""
    module = getattr(engine, "module", engine)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    out: dict[str, torch.Tensor] = {}
    for bucket in plan_buckets(list(module.named_parameters()), bucket_bytes):
        with gathered([p for _, p in bucket]):
            if rank == 0:
                for name, p in bucket:
                    out[engine_name(name)] = p.data.detach().to("cpu", copy=True)
    return out


def save_hf(engine, processor, out_dir: str) -> str | None:
    """Writes the trained model as an HF checkpoint to `out_dir` (rank 0 writes; all ranks call)."""
    state = full_state_dict(engine)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        module = getattr(engine, "module", engine)
        os.makedirs(out_dir, exist_ok=True)
        module.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
        processor.save_pretrained(out_dir)
        processor.tokenizer.save_pretrained(out_dir)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return out_dir if rank == 0 else None


def save_state(engine, run_dir: str, step: int, keep: int = 1) -> None:
    """Saves the resumable state after `step` optimizer steps (all ranks call), then deletes all
    but the newest `keep` saves (a 7B state with its Adam moments is ~100 GB)."""
    state_dir = os.path.join(run_dir, "state")
    tag = f"step{step:08d}"
    engine.save_checkpoint(state_dir, tag=tag, client_state={"step": step})
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        # Written last: a state without this file was interrupted mid-save and is not trusted.
        tmp = os.path.join(state_dir, "trainer.json.tmp")
        with open(tmp, "w") as fh:
            json.dump({"step": step, "tag": tag}, fh)
        os.replace(tmp, os.path.join(state_dir, "trainer.json"))
        tags = sorted(d for d in os.listdir(state_dir)
                      if d.startswith("step") and os.path.isdir(os.path.join(state_dir, d)))
        for old in tags[:-keep] if keep > 0 else []:
            shutil.rmtree(os.path.join(state_dir, old))


def saved_step(run_dir: str) -> dict | None:
    """{"step", "tag"} of the last completed save under `run_dir`, or None."""
    path = os.path.join(run_dir, "state", "trainer.json")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def load_state(engine, run_dir: str) -> int:
    """Restores weights, optimizer and schedule from the last completed save -> steps done."""
    info = saved_step(run_dir)
    if info is None:
        return 0
    path, client = engine.load_checkpoint(os.path.join(run_dir, "state"), tag=info["tag"])
    if path is None:
        raise RuntimeError(f"could not load the training state {info['tag']} from {run_dir}/state")
    return int(client["step"])
