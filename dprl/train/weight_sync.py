"""Pushing trained weights into the colocated rollout engine after an optimizer step.

Parameters are streamed in buckets: under ZeRO-3 each bucket is gathered from its partitions,
handed to the engine and released before the next one, so the extra memory is about one bucket,
not the model. A bucket always holds whole decoder blocks (or whole modules outside the blocks):
the engine fuses q/k/v, gate/up and weight/bias, and a reload that carries only part of a fused
module raises nothing but fills the rest with garbage.
"""
from __future__ import annotations

import contextlib
import re
import time
from typing import Iterable, Sequence

import torch

from dprl.config import WeightSyncConfig
from dprl.rollout.base import RolloutEngine

# Segments that wrappers add to parameter names and the checkpoint format does not have.
_WRAPPER_SEGMENTS = {"_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module"}
_LEADING_WRAPPERS = ("module.", "base_model.model.")
# A transformer block of the language model ("layers.N") or the vision tower ("blocks.N").
_BLOCK = re.compile(r"^(.*?\.(?:layers|blocks)\.\d+)\.")

NamedParams = Sequence[tuple[str, torch.nn.Parameter]]


def hf_name(name: str) -> str:
    """Training parameter name -> its HF checkpoint name (what the rollout engine loads and
    save_hf writes).

    DeepSpeed's `module.`, PEFT's `base_model.model.`, torch.compile's `_orig_mod` and checkpoint
    or FSDP wrapper segments are removed; transformers-5 Qwen2-VL names need nothing else (vLLM
    maps `model.language_model.*`, `model.visual.*`, `lm_head.*` itself).
    """
    changed = True
    while changed:
        changed = False
        for prefix in _LEADING_WRAPPERS:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_SEGMENTS)


def fusion_group(name: str) -> str:
    """The unit a bucket never splits: the decoder/vision block holding the parameter, or else
    its parent module (a weight with its bias)."""
    m = _BLOCK.match(name)
    return m.group(1) if m else name.rpartition(".")[0]


def full_numel(p: torch.Tensor) -> int:
    """Elements of the whole parameter, also when ZeRO-3 holds only a partition locally."""
    return int(getattr(p, "ds_numel", p.numel()))


def plan_buckets(named: NamedParams, bucket_bytes: int) -> list[list[tuple[str, torch.nn.Parameter]]]:
    """Consecutive whole fusion groups packed into buckets of at most `bucket_bytes` (a group
    larger than that is a bucket of its own). Order is kept."""
    groups: list[list] = []
    for name, p in named:
        key = fusion_group(hf_name(name))
        if groups and groups[-1][0] == key:
            groups[-1][1].append((name, p))
        else:
            groups.append((key, [(name, p)]))
    buckets, current, size = [], [], 0
    for _, members in groups:
        nbytes = sum(full_numel(p) * p.element_size() for _, p in members)
        if current and size + nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.extend(members)
        size += nbytes
    if current:
        buckets.append(current)
    return buckets


def params_to_sync(model: torch.nn.Module, trainable_only: bool = True) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) pairs a sync sends: those training changes, or all of them."""
    module = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad or not trainable_only]


def gathered(params: list[torch.nn.Parameter]):
    """Context in which ZeRO-3 partitioned `params` are whole on every rank (collective: all
    ranks must enter it with the same parameters in the same order). Other stages: a no-op."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)


def sync_weights(model: torch.nn.Module, rollout: RolloutEngine, cfg: WeightSyncConfig | None = None,
                 named: Iterable[tuple[str, torch.nn.Parameter]] | None = None) -> dict:
    """Sends the model's weights into `rollout`, bucket by bucket -> stats for the metrics.

    `model` is the DeepSpeed engine (or the bare module). Every rank calls this together (ZeRO-3
    gathering is collective); each rank loads its own rollout engine. It is woken first, since
    loading into a sleeping engine is what leaves it generating from old weights.
    """
    t0 = time.perf_counter()
    cfg = cfg or WeightSyncConfig()
    named = list(named) if named is not None else params_to_sync(model, cfg.trainable_only)
    buckets = plan_buckets(named, int(cfg.bucket_mb * 2**20))
    rollout.wake_up()
    total, largest = 0, 0
    for k, bucket in enumerate(buckets):
        params = [p for _, p in bucket]
        with gathered(params):
            tensors = [(hf_name(n), p.data) for n, p in bucket]
            nbytes = sum(t.numel() * t.element_size() for _, t in tensors)
            rollout.update_weights(tensors, final=k == len(buckets) - 1)
        total, largest = total + nbytes, max(largest, nbytes)
    if not buckets:
        rollout.update_weights([], final=True)
    return {"time/sync_s": time.perf_counter() - t0, "sync/bytes": total, "sync/tensors": len(named),
            "sync/buckets": len(buckets), "sync/largest_bucket_bytes": largest,
            "sync/weights_version": rollout.weights_version}
