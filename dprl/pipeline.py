"""`dprl pipeline`: world -> CoT-SFT -> GRPO -> eval, each stage a `dprl <stage>` process.

Each stage runs in a fresh process, as a user would run it by hand: vLLM engines and
torch.distributed worlds never outlive their stage, and the stage process dies with the pipeline.
The stage's resolved config is written next to its outputs first, so every stage can be rerun or
inspected on its own.

A rerun reuses a finished stage only if it would make the same thing again: its settings are
unchanged and the stages it read from are the ones it was made from. A finished stage records
both in `<stage>/stage_done.json`. Anything else on disk (other settings, a redone input, a
resumable state from other settings) stops the pipeline before any work, naming what changed:
quietly retraining would throw away a long run, and quietly reusing would report settings that
were never used.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import uuid
from typing import Any

import yaml

from dprl.config import CheckpointConfig, EngineSourceConfig, PipelineConfig, save_config, to_dict
from dprl.models.loading import tiny_model_dir
from dprl.run_dir import run_tied

STAGES = ("world", "sft", "data_engine", "grpo", "eval")
DONE_NAME = "stage_done.json"
# What each stage reads from the stages before it (eval is resumable by itself and always runs).
# GRPO also reads the data engine's RL set when that stage is selected (upstream()).
UPSTREAM = {"world": (), "sft": ("world",), "data_engine": ("world", "sft"), "grpo": ("world", "sft")}
# Settings that change how a stage logs, checkpoints or splits its work, never what it makes:
# world samples are seeded one by one (not by worker); GRPO's prompts and seeds are functions of
# the step, so where it saves does not matter; stop_after is how a long run is done in chunks.
NOT_OUTPUT = {"world": ("workers",),
              "sft": ("log", "log_every", "save_every", "keep_states", "resume", "stop_after"),
              "data_engine": ("batch_size",),
              "grpo": ("log", "save_every", "resume")}
ENGINE_SOURCES = "sources"  # the world's FGVR pictures as image folders, under data_engine/
_ABSENT = "(absent)"


def upstream(stage: str, cfg: PipelineConfig) -> tuple[str, ...]:
    """The stages `stage` reads from in this run."""
    if stage == "grpo" and "data_engine" in cfg.stages:
        return UPSTREAM["grpo"] + ("data_engine",)
    return UPSTREAM[stage]


class StaleStages(RuntimeError):
    """The run directory holds stages this command would not make; nothing was run."""


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
    engine = _engine_config(cfg, out, data, os.path.join(sft_dir, "final"))
    grpo_prompts = (os.path.join(engine.output_dir, "kvg_rl.jsonl") if "data_engine" in cfg.stages
                    else os.path.join(data, "kvg_train.jsonl"))
    grpo = rep(cfg.grpo, output_dir=grpo_dir,
               model=rep(cfg.grpo.model, path=os.path.join(sft_dir, "final")),
               data=rep(cfg.grpo.data, path=grpo_prompts))
    # Evaluate the models this run makes (or made before): a stage left out and never run has
    # no checkpoint to score.
    candidates = [("untrained", _sft_start(cfg, sft_dir), "sft"),
                  ("cot-sft", os.path.join(sft_dir, "final"), "sft"),
                  ("cot-sft+grpo", os.path.join(grpo_dir, "final"), "grpo")]
    checkpoints = [CheckpointConfig(name, path) for name, path, stage in candidates
                   if stage in cfg.stages or os.path.isdir(path)]
    ev = rep(cfg.eval, output_dir=os.path.join(out, "eval"),
             data=rep(cfg.eval.data, path=os.path.join(data, "kvg_test.jsonl")), checkpoints=checkpoints,
             probe=rep(cfg.eval.probe, path=os.path.join(data, "knowledge_base.jsonl") if cfg.eval.probe.path else ""))
    return {"world": world, "sft": sft, "data_engine": engine, "grpo": grpo, "eval": ev}


def _engine_config(cfg: PipelineConfig, out: str, world_dir: str, checkpoint: str):
    """The data engine after CoT-SFT: the SFT checkpoint as model (teacher and policy unless
    named), the world's seen domains as sources unless the section names its own, and for the
    knowledge probe's questions the world's knowledge base unless it names a file."""
    rep = dataclasses.replace
    c = cfg.data_engine
    engine_dir = os.path.join(out, "data_engine")
    sources = c.data.sources or [
        EngineSourceConfig(kind="image_folder", path=os.path.join(engine_dir, ENGINE_SOURCES, d), domain=d,
                           crop=0.72)  # the world's FGVR entity fills about 0.7 of its picture
        for d in cfg.world.seen_domains]
    knowledge = c.knowledge
    if knowledge.kind != "identify" and not knowledge.knowledge_path:
        knowledge = rep(knowledge, knowledge_path=os.path.join(world_dir, "knowledge_base.jsonl"))
    return rep(c, output_dir=engine_dir, model=rep(c.model, path=checkpoint),
               data=rep(c.data, sources=sources, seen_domains=list(cfg.world.seen_domains)),
               knowledge=knowledge)


def _write_engine_sources(cfg: PipelineConfig, configs: dict) -> None:
    """The world's FGVR training pictures as the image folders the data engine's default sources
    name (before its config is loaded: a source must exist)."""
    from dprl.data.engine.world_folder import world_image_folders

    if cfg.data_engine.data.sources:
        return
    world_image_folders(configs["world"].output_dir,
                        os.path.join(configs["data_engine"].output_dir, ENGINE_SOURCES), "train", "fgvr",
                        domains=tuple(cfg.world.seen_domains))


def _sft_start(cfg: PipelineConfig, sft_dir: str) -> str:
    """The checkpoint SFT starts from: sft.model.path, or the tiny model it builds in its run
    directory (dprl.models.loading.resolve_checkpoint). Runs made before the tiny model's folder
    had one name for every stage keep theirs in sft/base_model."""
    if cfg.sft.model.path:
        return os.path.expanduser(cfg.sft.model.path)
    legacy = os.path.join(sft_dir, "base_model")
    tiny = tiny_model_dir(sft_dir)
    return legacy if os.path.isdir(legacy) and not os.path.isdir(tiny) else tiny


def _done(stage: str, c) -> bool:
    """A finished stage leaves its final product; eval is resumable by itself and always runs."""
    if stage == "world":
        return os.path.isfile(os.path.join(c.output_dir, "world.json"))
    if stage == "data_engine":
        return os.path.isfile(os.path.join(c.output_dir, "report.json"))
    if stage in ("sft", "grpo"):
        return os.path.isfile(os.path.join(c.output_dir, "final", "model.safetensors"))
    return False


def _resumable(stage: str, c) -> bool:
    """An unfinished training stage that its next start continues (dprl.train.checkpoint's
    state/trainer.json, written once a save is complete)."""
    return (stage in ("sft", "grpo") and c.resume
            and os.path.isfile(os.path.join(c.output_dir, "state", "trainer.json")))


# -- what a stage was made with ------------------------------------------------------------------
def _portable(value: Any, root: str) -> Any:
    """`value` with paths inside the run directory `root` written as "$output_dir/...", so a
    stage's settings compare equal wherever the run directory lives."""
    if isinstance(value, dict):
        return {k: _portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, root) for v in value]
    if isinstance(value, str) and (value == root or value.startswith(root + os.sep)):
        return "$output_dir" + value[len(root):]
    return value


def settings_of(stage_dict: dict) -> dict:
    """A stage's resolved config (to_dict or its saved YAML) in the form runs are compared in;
    its output_dir is <run dir>/<stage>, which names the run directory it was wired in."""
    return _portable(stage_dict, os.path.dirname(stage_dict["output_dir"]))


def _flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are values."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_settings(stage: str, old: dict, new: dict) -> list[str]:
    """"<stage>.<key>: old -> new" for each setting that differs, those in NOT_OUTPUT left out."""
    a, b = _flatten(old), _flatten(new)
    keys = list(b) + [k for k in a if k not in b]
    ignored = NOT_OUTPUT.get(stage, ())
    return [f"{stage}.{k}: {a.get(k, _ABSENT)} -> {b.get(k, _ABSENT)}" for k in keys
            if k.split(".")[0] not in ignored and a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _stage_yaml(run_dir: str, stage: str) -> dict | None:
    """The settings the stage was last started with (written just before it starts)."""
    path = os.path.join(run_dir, f"{stage}.yaml")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return settings_of(yaml.safe_load(fh))


def _record(c) -> dict | None:
    path = os.path.join(c.output_dir, DONE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _fingerprint(c) -> str | None:
    """The stage's done record, hashed: it changes whenever the stage is made again."""
    path = os.path.join(c.output_dir, DONE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _write_record(stage: str, configs: dict, cfg: PipelineConfig) -> None:
    """Marks `stage` finished: with the settings it was made with and the fingerprints of the
    stages it read. Written last, so a stage without one never counts as done."""
    c = configs[stage]
    # `made` differs every time, so a remake with the same settings still changes the fingerprint.
    record = {"stage": stage, "made": uuid.uuid4().hex, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "config": settings_of(to_dict(c)),
              "inputs": {u: _fingerprint(configs[u]) for u in upstream(stage, cfg)}}
    path = os.path.join(c.output_dir, DONE_NAME)
    with open(path + ".tmp", "w") as fh:
        json.dump(record, fh, indent=1)
    os.replace(path + ".tmp", path)


def _clear_record(c) -> None:
    path = os.path.join(c.output_dir, DONE_NAME)
    if os.path.isfile(path):
        os.remove(path)


# -- may the outputs on disk be reused? ------------------------------------------------------------
def _check_stage(stage: str, configs: dict, run_dir: str, status: dict,
                 cfg: PipelineConfig) -> tuple[str, list[str]]:
    """(status, reasons) of one stage, its upstream stages already checked. status: "done"
    (reuse), "adopt" (finished before stages kept records, made with these settings: reuse and
    record), "run" (nothing to continue, or a state to resume with these settings) or "stale"
    (reasons say why what is on disk cannot be reused or continued)."""
    c = configs[stage]
    new = settings_of(to_dict(c))
    redone = [f"made from {u}, which cannot be reused (above)" if status[u] == "stale"
              else f"made from {u}, which is to be made again" for u in upstream(stage, cfg)
              if status[u] in ("run", "stale")]
    record = _record(c) if _done(stage, c) else None
    if record is not None:
        moved = [f"made from {u}, which was made again or removed since" for u in upstream(stage, cfg)
                 if status[u] == "done" and record["inputs"].get(u) != _fingerprint(configs[u])]
        reasons = changed_settings(stage, record["config"], new) + (redone or moved)
        return ("stale" if reasons else "done"), reasons
    if not (_done(stage, c) or _resumable(stage, c)):
        return "run", []
    old = _stage_yaml(run_dir, stage)
    reasons = (changed_settings(stage, old, new) if old is not None
               else [f"no record of the settings it was made with ({stage}.yaml is missing)"])
    reasons += redone
    if reasons:
        return "stale", reasons
    return ("adopt" if _done(stage, c) else "run"), []


def _refusal(run_dir: str, stale: dict, configs: dict) -> str:
    lines = [f"{run_dir} holds stages made with other settings or inputs than this command's; "
             "nothing was run:"]
    for stage, reasons in stale.items():
        what = "finished" if _done(stage, configs[stage]) else "a resumable state"
        lines.append(f"  {stage} ({what} in {configs[stage].output_dir}):")
        lines += [f"    {r}" for r in reasons]
    dirs = " ".join(configs[s].output_dir for s in stale)
    lines.append("To keep them, use a new output_dir or put those settings back. To make them "
                 f"again here, delete {dirs} and run the same command again.")
    return "\n".join(lines)


def check_stages(cfg: PipelineConfig, configs: dict) -> dict:
    """The status of world, sft and grpo (see _check_stage), selected or not: the run's
    config.yaml speaks for every stage on disk. Raises StaleStages naming what changed."""
    run_dir = os.path.abspath(cfg.output_dir)
    status, stale = {}, {}
    for stage in UPSTREAM:
        status[stage], reasons = _check_stage(stage, configs, run_dir, status, cfg)
        if reasons:
            stale[stage] = reasons
    if stale:
        raise StaleStages(_refusal(run_dir, stale, configs))
    return status


def run_pipeline(cfg: PipelineConfig) -> dict:
    configs = stage_configs(cfg)
    status = check_stages(cfg, configs)
    # Only now: config.yaml must always be the config that made what is in the directory.
    os.makedirs(cfg.output_dir, exist_ok=True)
    save_config(cfg, cfg.output_dir)
    for stage in UPSTREAM:  # in order: a record names its inputs' records
        if status[stage] == "adopt":
            _write_record(stage, configs, cfg)
    seconds = {}
    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        c = configs[stage]
        if status.get(stage) in ("done", "adopt"):
            print(f"[pipeline] {stage}: already done in {c.output_dir}", flush=True)
            continue
        _clear_record(c)  # a record whose product is gone
        path = save_config(c, cfg.output_dir, f"{stage}.yaml")
        command = stage.replace("_", "-")
        print(f"[pipeline] {stage}: dprl {command} --config {path}", flush=True)
        t0 = time.perf_counter()
        if stage == "data_engine":
            _write_engine_sources(cfg, configs)
        returncode = run_tied([sys.executable, "-m", "dprl.cli", command, "--config", path])
        seconds[stage] = time.perf_counter() - t0
        if returncode != 0:
            raise RuntimeError(f"stage {stage} failed (exit {returncode}); fix it and rerun the "
                               "same command: finished stages are skipped")
        if stage in UPSTREAM:
            _write_record(stage, configs, cfg)
    table = os.path.join(configs["eval"].output_dir, "table.md")
    return {"seconds": seconds, "table": open(table).read() if os.path.isfile(table) else None,
            "output_dir": cfg.output_dir}
