"""`dprl pipeline`: world -> CoT-SFT -> GRPO -> eval, each stage a `dprl <stage>` process.

Each stage runs in a fresh process, as a user would run it by hand: vLLM engines and
torch.distributed worlds never outlive their stage. The stage's resolved config is written next
to its outputs first, so every stage can be rerun or inspected on its own.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

from dprl.config import CheckpointConfig, PipelineConfig, save_config

STAGES = ("world", "sft", "grpo", "eval")


def stage_configs(cfg: PipelineConfig) -> dict:
    """The four stage configs with the paths that link them set under cfg.output_dir."""
    out = os.path.abspath(cfg.output_dir)
    rep = dataclasses.replace
    data = os.path.join(out, "world")
    world = rep(cfg.world, output_dir=data)
    sft_dir, grpo_dir = os.path.join(out, "sft"), os.path.join(out, "grpo")
    sft = rep(cfg.sft, output_dir=sft_dir, data=rep(
        cfg.sft.data, train_path=os.path.join(data, "kvg_train.jsonl"),
        knowledge_path=os.path.join(data, "knowledge_corpus.jsonl") if cfg.sft.data.knowledge_path else ""))
    grpo = rep(cfg.grpo, output_dir=grpo_dir,
               model=rep(cfg.grpo.model, path=os.path.join(sft_dir, "final")),
               data=rep(cfg.grpo.data, path=os.path.join(data, "kvg_train.jsonl")))
    # Evaluate the models this run makes (or made before): a stage left out and never run has
    # no checkpoint to score.
    candidates = [("untrained", os.path.join(sft_dir, "base_model"), "sft"),
                  ("cot-sft", os.path.join(sft_dir, "final"), "sft"),
                  ("cot-sft+grpo", os.path.join(grpo_dir, "final"), "grpo")]
    checkpoints = [CheckpointConfig(name, path) for name, path, stage in candidates
                   if stage in cfg.stages or os.path.isdir(path)]
    ev = rep(cfg.eval, output_dir=os.path.join(out, "eval"),
             data=rep(cfg.eval.data, path=os.path.join(data, "kvg_test.jsonl")), checkpoints=checkpoints)
    return {"world": world, "sft": sft, "grpo": grpo, "eval": ev}


def _done(stage: str, c) -> bool:
    """A finished stage leaves its final product; eval is resumable by itself and always runs."""
    if stage == "world":
        return os.path.isfile(os.path.join(c.output_dir, "world.json"))
    if stage in ("sft", "grpo"):
        return os.path.isfile(os.path.join(c.output_dir, "final", "model.safetensors"))
    return False


def run_pipeline(cfg: PipelineConfig) -> dict:
    configs = stage_configs(cfg)
    os.makedirs(cfg.output_dir, exist_ok=True)
    save_config(cfg, cfg.output_dir)
    seconds = {}
    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        c = configs[stage]
        if _done(stage, c):
            print(f"[pipeline] {stage}: already done in {c.output_dir}", flush=True)
            continue
        path = save_config(c, cfg.output_dir, f"{stage}.yaml")
        print(f"[pipeline] {stage}: dprl {stage} --config {path}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dprl.cli", stage, "--config", path])
        seconds[stage] = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}); fix it and rerun the "
                               "same command: finished stages are skipped")
    table = os.path.join(configs["eval"].output_dir, "table.md")
    return {"seconds": seconds, "table": open(table).read() if os.path.isfile(table) else None,
            "output_dir": cfg.output_dir}
