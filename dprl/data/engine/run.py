"""`dprl data-engine`: every stage in order, for one DataEngineConfig.

sources -> knowledge filter (text only: which categories the model knows) -> composition of the
known categories -> the SFT set (teacher chains of thought kept by IoU) and the RL set (prompts
the policy gets right sometimes). Each model-driven stage runs in its own process with its own
rollout engine (one vLLM engine per process), so teacher and policy may be different
checkpoints. The report (report.json, report.md) has counts at every stage, acceptance rates,
knowledge scores per domain and each stage's samples/s.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

from dprl.config import DataEngineConfig, save_config
from dprl.data.engine.build import StageLog, build_samples
from dprl.data.engine.output import write_jsonl

COMPOSED = "composed"  # kvg_composed.jsonl: every composite, before any chain of thought


def _asker(model_path: str, rollout_cfg, cfg: DataEngineConfig, progress: bool):
    from dprl.data.engine.asking import Asker
    from dprl.models.loading import load_processor
    from dprl.rollout import answer_text, build_rollout_engine

    processor = load_processor(model_path)
    rollout = build_rollout_engine(model_path, rollout_cfg, dtype=cfg.model.dtype)
    return Asker(rollout, lambda c: answer_text(processor.tokenizer, c.token_ids), cfg.batch_size, progress)


def _image_opener(root: str):
    from dprl.data.kvg import open_image

    return lambda row: open_image(row["image"], root)


def _knowledge_in_child(cfg: DataEngineConfig, categories: list, progress: bool) -> list[dict]:
    from dprl.data.engine.knowledge import SourceCategory, knowledge_scores

    asker = _asker(os.path.expanduser(cfg.model.path), cfg.knowledge.rollout, cfg, progress)
    return knowledge_scores(asker, [SourceCategory(d, c) for d, c in categories], cfg.knowledge, cfg.data.seed)


def _teacher_in_child(cfg: DataEngineConfig, rows: list[dict], progress: bool):
    from dprl.data.engine.teacher import teacher_samples

    path = os.path.expanduser(cfg.teacher.model_path or cfg.model.path)
    return teacher_samples(_asker(path, cfg.teacher.rollout, cfg, progress), rows,
                           _image_opener(cfg.output_dir), cfg.teacher)


def _difficulty_in_child(cfg: DataEngineConfig, rows: list[dict], progress: bool):
    from dprl.data.engine.difficulty import difficulty_filter

    path = os.path.expanduser(cfg.difficulty.policy_path or cfg.model.path)
    return difficulty_filter(_asker(path, cfg.difficulty.rollout, cfg, progress), rows,
                             _image_opener(cfg.output_dir), cfg.difficulty)


def split_sets(rows: list[dict], rl_share: float) -> tuple[list[dict], list[dict]]:
    """(SFT rows, RL rows): the last round(rl_share x n) composites of each domain go to RL."""
    by_domain: dict[str, list[dict]] = {}
    for r in rows:
        by_domain.setdefault(r["domain"], []).append(r)
    sft, rl = [], []
    for group in by_domain.values():
        cut = len(group) - round(rl_share * len(group))
        sft += group[:cut]
        rl += group[cut:]
    return sft, rl


def _timed(report: dict, stage: str, count: int, t0: float, **extra) -> None:
    seconds = time.perf_counter() - t0
    report["stages"][stage] = {"seconds": round(seconds, 3),
                               "samples_per_s": round(count / max(seconds, 1e-9), 3), **extra}


def run_data_engine(cfg: DataEngineConfig, progress: bool = True) -> dict:
    """Runs every enabled stage; -> the report (also in output_dir/report.json)."""
    from dprl.data.engine.knowledge import summary
    from dprl.eval.child import run_in_child

    out = cfg.output_dir
    data = dataclasses.replace(cfg.data, output_dir=out, split=COMPOSED)
    if not data.sources:
        raise ValueError("data.sources is empty: name at least one data set on disk "
                         "(kind: image_folder | cub | fgvc_aircraft | hf_dataset, path, domain)")
    k = cfg.knowledge
    if k.enabled and k.kind != "identify" and not k.knowledge_path:
        raise ValueError(f"knowledge.knowledge_path: expected a .jsonl knowledge file (kind: {k.kind} "
                         "asks about each category from it), got ''")
    if cfg.needs_model and not os.path.isfile(os.path.join(os.path.expanduser(cfg.model.path), "config.json")):
        raise ValueError(f"model.path: expected a local checkpoint (the model the data is for) while "
                         f"knowledge, teacher or difficulty uses it, got {cfg.model.path!r}")
    os.makedirs(out, exist_ok=True)
    save_config(cfg, out)
    log, report = StageLog(), {"stages": {}, "files": {}}

    def known_categories(categories: list) -> set:
        """The knowledge filter, between reading the sources and composing."""
        t0 = time.perf_counter()
        scores = run_in_child(_knowledge_in_child, (cfg, categories, progress), "knowledge filtering")
        report["files"]["knowledge_scores"] = write_jsonl(os.path.join(out, "knowledge_scores.jsonl"), scores)
        known = {(r["domain"], r["entity"]) for r in scores if r["known"]}
        _timed(report, "knowledge", len(categories), t0, categories=len(categories), known=len(known),
               per_domain=summary(scores))
        return known

    built = build_samples(data, progress, keep=known_categories if cfg.knowledge.enabled else None, log=log)
    counts, metrics, composed = built["counts"], built["metrics"], built["rows"]
    report["stages"] = {"sources": {
        "seconds": round(metrics["time/sources_s"], 3),
        "samples_per_s": round(metrics["throughput/sources_pictures_per_s"], 3),
        "pictures": counts["pictures_listed"], "entities": counts["entities"],
        "categories": counts["categories_listed"]}} | report["stages"]
    if not counts["entities_kept"]:
        raise ValueError("no category is left to compose: the knowledge filter kept none (scores in "
                         f"{os.path.join(out, 'knowledge_scores.jsonl')}); lower knowledge.threshold, "
                         "ask another way (knowledge.kind) or turn the filter off")
    report["files"]["composed"] = built["files"]["samples"]
    report["stages"]["compose"] = {
        "seconds": round(metrics["time/compose_s"], 3),
        "samples_per_s": round(metrics["throughput/compose_samples_per_s"], 3),
        "samples": counts["samples"], "categories_per_domain": counts["categories"]}

    sft_rows, rl_rows = split_sets(composed, cfg.rl_share)
    if cfg.teacher.enabled and sft_rows:
        t0 = time.perf_counter()
        sft, stats = run_in_child(_teacher_in_child, (cfg, sft_rows, progress), "teacher chains of thought")
        report["files"]["sft"] = write_jsonl(os.path.join(out, "kvg_sft.jsonl"), sft)
        _timed(report, "teacher", len(sft_rows), t0, **stats)
    if cfg.difficulty.enabled and rl_rows:
        t0 = time.perf_counter()
        rl, stats = run_in_child(_difficulty_in_child, (cfg, rl_rows, progress), "difficulty filtering")
        report["files"]["rl"] = write_jsonl(os.path.join(out, "kvg_rl.jsonl"), rl)
        _timed(report, "difficulty", len(rl_rows), t0, **stats)

    report["skipped"] = built["skipped"]
    report["files"]["skipped"] = built["files"]["skipped"]
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write(markdown(report))
    return report


def markdown(report: dict) -> str:
    """The report as a table per stage: what went in, what came out, and how fast."""
    s = report["stages"]
    lines = ["| stage | in | out | rate | samples/s |", "|---|---:|---:|---:|---:|"]
    if "sources" in s:
        lines.append(f"| sources | {s['sources']['pictures']} pictures | {s['sources']['entities']} entities, "
                     f"{s['sources']['categories']} categories | | {s['sources']['samples_per_s']:.1f} |")
    if "knowledge" in s:
        k = s["knowledge"]
        lines.append(f"| knowledge filter | {k['categories']} categories | {k['known']} known | "
                     f"{k['known'] / max(k['categories'], 1):.0%} | {k['samples_per_s']:.2f} |")
    if "compose" in s:
        lines.append(f"| compose | | {s['compose']['samples']} composites | | {s['compose']['samples_per_s']:.1f} |")
    if "teacher" in s:
        t = s["teacher"]
        lines.append(f"| teacher | {t['samples']} samples, {t['chains']} chains | {t['accepted_chains']} chains "
                     f"({t['samples_kept']} samples) | {t['acceptance_rate']:.0%} of chains | {t['samples_per_s']:.2f} |")
    if "difficulty" in s:
        d = s["difficulty"]
        lines.append(f"| difficulty | {d['samples']} prompts | {d['kept']} kept (successes "
                     f"{d['range'][0]}..{d['range'][1]}) | {d['kept'] / max(d['samples'], 1):.0%} | "
                     f"{d['samples_per_s']:.2f} |")
    out = "\n".join(lines) + "\n"
    if "knowledge" in s:
        out += "\n| domain | categories | known | mean knowledge score |\n|---|---:|---:|---:|\n"
        for domain, d in s["knowledge"]["per_domain"].items():
            out += f"| {domain} | {d['categories']} | {d['known']} | {d['mean_score']:.2f} |\n"
    if report.get("skipped"):
        out += "\nskipped: " + ", ".join(f"{k} {v}" for k, v in report["skipped"].items()) + "\n"
    return out
