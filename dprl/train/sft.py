"""`dprl sft`: stage 1 of the recipe, supervised fine-tuning on chain-of-thought grounding data.

Top to bottom: build the world (torch.distributed), load the checkpoint and its processor, freeze
what the config says, plan the batches, wrap the model in the shared DeepSpeed engine, restore the
last saved state if there is one, then for each optimizer step run `grad_accum_steps` micro-batches
(forward, backward), step, log, and save. The run ends with an HF checkpoint in `final/`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time

import torch

from dprl.config import SFTConfig, save_config
from dprl.data.sft import check_data_files, collate, encode, load_sft_data, with_picture
from dprl.data.validate import report_bad_samples
from dprl.train.batches import BatchPlan
from dprl.train.checkpoint import save_state, stop_if_non_finite
from dprl.train.engine import is_vision_param, plain_grad_norm, step_grad_norm
from dprl.train.finite import describe_non_finite
from dprl.train.metrics import peak_memory_bytes, plot_loss, read_metrics
from dprl.train.stage_setup import (base_checkpoint, export_final, finished_before, metrics_logger, open_run,
                                    policy_engine)


def is_projector_param(name: str) -> bool:
    """The merger that projects vision features into the language model (Qwen2-VL, Qwen2.5-VL)."""
    return ".visual.merger." in f".{name}"


def apply_freezing(model: torch.nn.Module, vision_tower: bool, projector: bool) -> dict[str, int]:
    """Stops gradients to the vision tower and/or the projector -> trainable/frozen counts."""
    for name, p in model.named_parameters():
        if is_vision_param(name):
            frozen = projector if is_projector_param(name) else vision_tower
            p.requires_grad_(not frozen)
    counts = {"trainable": 0, "frozen": 0}
    for p in model.parameters():
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


def _schedule(cfg: SFTConfig, plan: BatchPlan):
    """(total optimizer steps, the trainer config with the schedule's length filled in)."""
    total = cfg.max_steps or cfg.epochs * plan.steps_per_epoch
    warmup = math.ceil(cfg.warmup_ratio * total) if cfg.warmup_ratio else cfg.trainer.warmup_steps
    if warmup > total:
        raise ValueError(f"trainer.warmup_steps={warmup} is more than the run's {total} steps")
    return total, dataclasses.replace(cfg.trainer, total_steps=total, warmup_steps=warmup,
                                      freeze_vision=False)  # freezing is applied here, per part


def _all_reduce_sum(values: list[float]) -> list[float]:
    from dprl.train.finite import collective_device

    t = torch.tensor(values, dtype=torch.float64, device=collective_device())  # nccl: CUDA tensors only
    torch.distributed.all_reduce(t)
    return t.tolist()


def _already_done(cfg: SFTConfig, total: int, rank: int, world: int, t_start: float) -> dict:
    """The summary of a run finished and exported before (check_rerun): nothing trained or written."""
    metrics = os.path.join(cfg.output_dir, "metrics.jsonl")
    rows = read_metrics(metrics) if os.path.isfile(metrics) else []
    return {"steps": total, "total_steps": total, "start_step": total,
            "final_loss": rows[-1].get("train/loss", float("nan")) if rows else float("nan"),
            "seconds": time.perf_counter() - t_start, "final_dir": os.path.join(cfg.output_dir, "final"),
            "rank": rank, "world_size": world, "output_dir": cfg.output_dir}


def run_sft(cfg: SFTConfig) -> dict:
    """Trains; returns a summary (steps, final loss, seconds, paths). All ranks call it."""
    t_start = time.perf_counter()
    # Missing data and an unwritable output_dir fail here, before anything loads.
    check_data_files(cfg.data)
    rank, world = open_run(cfg)
    torch.manual_seed(cfg.data.seed)

    from dprl.models.loading import load_model

    model_path, processor = base_checkpoint(cfg)
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # Data before the model, so a malformed file fails in seconds. Samples that could not be
    # encoded are set aside here, before the batch plan orders the rest (exact resume).
    grounding, knowledge, bad = load_sft_data(cfg.data, processor)

    t = cfg.trainer
    plan = BatchPlan(len(grounding), len(knowledge), t.micro_batch_size, cfg.data.knowledge_per_batch,
                     t.grad_accum_steps, world, rank, cfg.data.seed, cfg.data.shuffle)
    total, tcfg = _schedule(cfg, plan)
    if finished_before(cfg, total, "max_steps", "sft"):
        return _already_done(cfg, total, rank, world, t_start)
    if rank == 0:  # after the check: a refused rerun leaves the run's config as it was
        save_config(cfg, cfg.output_dir)

    # Loaded in the training precision: a bf16 7B is 15 GB per rank where fp32 would be 30.
    model = load_model(model_path, dtype=cfg.trainer.dtype)
    model.config.use_cache = False  # no KV cache while training
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    counts = apply_freezing(model, cfg.freeze_vision_tower, cfg.freeze_projector)

    ds_engine, _, scheduler, start = policy_engine(model, tcfg, cfg)
    stop = min(total, start + cfg.stop_after) if cfg.stop_after else total
    logger = metrics_logger(cfg, total, start, "sft")
    if rank == 0:
        print(f"sft: {len(grounding)} grounding + {len(knowledge)} knowledge samples, {world} rank(s), "
              f"{plan.samples_per_step} samples/step, {total} steps (from step {start}); "
              f"{counts['trainable']:,} trainable / {counts['frozen']:,} frozen parameters", flush=True)
    report_bad_samples("sft", bad, len(grounding) + len(knowledge), cfg.output_dir, enabled=rank == 0)

    ds_engine.train()
    last_saved = start if start else None
    last_loss = float("nan")
    for step in range(start, stop):
        t0 = time.perf_counter()
        loss_sum = tokens = reply_tokens = 0.0
        for micro in range(t.grad_accum_steps):
            g_idx, k_idx = plan.micro_batch(step, micro)
            pictures = plan.pictures(step, micro, cfg.data.knowledge_picture_share)
            convs = [grounding[i] for i in g_idx] + [
                knowledge[i] if p is None else with_picture(knowledge[i], grounding[p])
                for i, p in zip(k_idx, pictures)]
            batch = collate([encode(processor, c, cfg.data.max_length) for c in convs], pad_id)
            batch = {k: v.to(ds_engine.device) for k, v in batch.items()}
            loss = ds_engine(**batch).loss  # mean over this micro-batch's reply tokens
            ds_engine.backward(loss)
            if micro == t.grad_accum_steps - 1:
                own_norm = plain_grad_norm(ds_engine, tcfg)
            ds_engine.step()  # DeepSpeed steps the optimizer only at the accumulation boundary
            loss_sum += loss.item()
            tokens += float(batch["attention_mask"].sum())
            reply_tokens += float((batch["labels"] != -100).sum())
        loss_sum, tokens, reply_tokens = _all_reduce_sum([loss_sum, tokens, reply_tokens])
        seconds = time.perf_counter() - t0
        last_loss = loss_sum / (t.grad_accum_steps * world)
        done = step + 1
        grad_norm = step_grad_norm(ds_engine, own_norm)
        if done % cfg.log_every == 0 or done == stop:
            logger.log(done, {
                "train/loss": last_loss,
                "train/lr": scheduler.get_last_lr()[0],
                "train/grad_norm": grad_norm if grad_norm is not None else float("nan"),
                "train/epoch": done / plan.steps_per_epoch,
                "data/bad_samples": len(bad),
                "train/reply_tokens": reply_tokens,
                "time/step_s": seconds,
                "throughput/tokens_per_s": tokens / seconds,
                "memory/peak_gib": peak_memory_bytes() / 2**30,
            })
        logger.advance()
        # Every step, on every rank alike (the loss is summed over ranks, the norm is global): a
        # diverged step stops the run before its weights are saved, keeping the last good state.
        stop_if_non_finite(describe_non_finite({"loss": last_loss, "grad norm": grad_norm}),
                           cfg.output_dir, done)
        if cfg.save_every and done % cfg.save_every == 0 and done < stop:
            save_state(ds_engine, cfg.output_dir, done, cfg.keep_states, total)
            last_saved = done

    if last_saved != stop:  # decided on every rank alike: saving is collective
        save_state(ds_engine, cfg.output_dir, stop, cfg.keep_states, total)
    logger.close()
    final_dir = None
    if stop == total:
        final_dir = export_final(ds_engine, processor, cfg, stop)
        if rank == 0 and os.path.exists(logger.path):
            plot_loss(logger.path, os.path.join(cfg.output_dir, "loss.png"))
    return {"steps": stop, "total_steps": total, "start_step": start, "final_loss": last_loss,
            "seconds": time.perf_counter() - t_start, "final_dir": final_dir, "rank": rank,
            "world_size": world, "output_dir": cfg.output_dir}
