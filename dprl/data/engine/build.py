"""Sources -> composition -> output for one `EngineDataConfig`: the data half of the data engine.

Pictures are screened and composites drawn by worker processes. Every composite draws from its
own RNG seeded by (seed, domain, index), and results are gathered in index order, so the files
are byte-identical for a seed whatever the number of workers and however the work is chunked.
"""
from __future__ import annotations

import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext

from dprl.config import ConfigError, EngineDataConfig
from dprl.data.engine.compose import plan_composite, read_confusion, render
from dprl.data.engine.output import (grounding_row, image_relpath, sample_id, write_samples,
                                     write_skipped)
from dprl.data.engine.sources import EntityImage, Skipped, read_source

CHUNK = 32  # composites per task: enough to amortise a task's overhead, small enough to balance
SHOWN_PER_REASON = 5  # skip messages printed per reason; all of them go to skipped.jsonl

# A worker's copy of what every composite needs (set once per process by _init_worker).
_WORKER: dict = {}


def _init_worker(pools: dict, cfg: EngineDataConfig, confusion: dict) -> None:
    _WORKER.update(pools=pools, cfg=cfg, confusion=confusion)


def compose_range(pools: dict[str, dict[str, list[EntityImage]]], cfg: EngineDataConfig,
                  confusion: dict, domain: str, start: int, stop: int) -> tuple[list[dict], list[Skipped]]:
    """Rows of samples start..stop-1 of `domain`, their images written; the samples whose
    pictures failed to load (after screening passed them) are skipped and returned."""
    comp_cfg = cfg.composition
    rows, skipped = [], []
    image_dir = os.path.join(cfg.output_dir, "images", f"kvg_{cfg.split}")
    seen = domain in cfg.seen_domains
    for index in range(start, stop):
        rng = random.Random(f"{cfg.seed}-engine-{domain}-{index}")
        qid = sample_id(cfg.split, domain, index)
        comp = plan_composite(rng, qid, domain, pools[domain], comp_cfg, confusion)
        rel = image_relpath(cfg.split, qid, comp_cfg.image_format)
        try:
            picture = render(comp, tuple(comp_cfg.background))
        except (OSError, ValueError) as err:  # PIL raises both for a file that changed since screening
            skipped.append(Skipped("compose_failed", qid, f"sample {qid}: a picture failed to load "
                                   f"({type(err).__name__}: {err}); sample skipped"))
            continue
        path = os.path.join(image_dir, os.path.basename(rel))
        if comp_cfg.image_format == "png":
            picture.save(path, format="PNG", compress_level=1)
        else:
            picture.save(path, format="JPEG", quality=comp_cfg.jpeg_quality)
        rows.append(grounding_row(comp, cfg.split, rel, seen))
    return rows, skipped


def _compose_task(task: tuple[str, int, int]) -> tuple[list[dict], list[Skipped]]:
    return compose_range(_WORKER["pools"], _WORKER["cfg"], _WORKER["confusion"], *task)


def entity_pools(entities: list[EntityImage]) -> dict[str, dict[str, list[EntityImage]]]:
    """{domain: {category: pictures}}; sources of one domain pool their categories by name."""
    pools: dict[str, dict[str, list[EntityImage]]] = {}
    for e in entities:
        pools.setdefault(e.domain, {}).setdefault(e.category, []).append(e)
    return pools


def _announce(skipped: list[Skipped], shown: dict[str, int]) -> None:
    """Prints the first few skip messages of each reason (all of them go to skipped.jsonl)."""
    for s in skipped:
        shown[s.reason] = shown.get(s.reason, 0) + 1
        if shown[s.reason] <= SHOWN_PER_REASON:
            print(f"data engine: skipped ({s.reason}): {s.message}", flush=True)


def _rate(count: int, seconds: float) -> float:
    return count / max(seconds, 1e-9)


def build_samples(cfg: EngineDataConfig, progress: bool = True) -> dict:
    """Reads every source, composes `composition.samples_per_domain` samples per domain and
    writes them; -> {"counts", "skipped" (per reason), "metrics" (time/..., throughput/...),
    "files"}. Time goes to three stages: sources (listing and screening pictures), compose
    (drawing, rendering and saving composites) and output (writing the rows)."""
    from tqdm import tqdm

    if not cfg.sources:
        raise ConfigError("sources: expected at least one source (a data set on disk), got []")
    workers = cfg.workers or (os.cpu_count() or 1)
    skipped: list[Skipped] = []
    shown: dict[str, int] = {}
    os.makedirs(os.path.join(cfg.output_dir, "images", f"kvg_{cfg.split}"), exist_ok=True)

    # --- sources
    t0 = time.perf_counter()
    entities, listed = [], 0
    with (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool:
        for i, src in enumerate(cfg.sources):
            def screen_map(fn, items, i=i, src=src):
                chunk = max(1, min(64, len(items) // (4 * workers) or 1))
                results = pool.map(fn, items, chunksize=chunk) if pool else map(fn, items)
                return tqdm(results, total=len(items), desc=f"source {i} ({src.domain})", unit="picture",
                            disable=not progress)
            read = read_source(src, screen_map)
            entities += read.entities
            listed += read.listed
            skipped += read.skipped
            _announce(read.skipped, shown)
    t_sources = time.perf_counter() - t0

    # --- composition
    t0 = time.perf_counter()
    comp_cfg = cfg.composition
    pools = entity_pools(entities)
    for domain in [d for d, cats in pools.items() if len(cats) < comp_cfg.min_entities]:
        skipped.append(Skipped("small_domain", domain,
                               f"domain {domain!r} has {len(pools[domain])} usable categor"
                               f"{'y' if len(pools[domain]) == 1 else 'ies'}, fewer than "
                               f"composition.min_entities={comp_cfg.min_entities}; no samples of it"))
        _announce(skipped[-1:], shown)
        del pools[domain]
    confusion = read_confusion(comp_cfg.confusion) if comp_cfg.confusion else {}
    n = comp_cfg.samples_per_domain
    tasks = [(d, s, min(s + CHUNK, n)) for d in pools for s in range(0, n, CHUNK)]
    rows: list[dict] = []
    bar = tqdm(total=len(pools) * n, desc="compose", unit="sample", disable=not progress)
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers, initializer=_init_worker,
                                 initargs=(pools, cfg, confusion)) as pool:
            results = pool.map(_compose_task, tasks)
            for task, (task_rows, task_skipped) in zip(tasks, results):
                rows += task_rows
                skipped += task_skipped
                _announce(task_skipped, shown)
                bar.update(task[2] - task[1])
    else:
        for task in tasks:
            task_rows, task_skipped = compose_range(pools, cfg, confusion, *task)
            rows += task_rows
            skipped += task_skipped
            _announce(task_skipped, shown)
            bar.update(task[2] - task[1])
    bar.close()
    t_compose = time.perf_counter() - t0

    # --- output
    t0 = time.perf_counter()
    samples_path = write_samples(cfg.output_dir, cfg.split, rows)
    skipped_path = write_skipped(cfg.output_dir, skipped)
    t_output = time.perf_counter() - t0

    per_domain: dict[str, int] = {}
    for r in rows:
        per_domain[r["domain"]] = per_domain.get(r["domain"], 0) + 1
    counts = {
        "pictures_listed": listed,
        "entities": len(entities),
        "categories": {d: len(cats) for d, cats in pools.items()},
        "samples": len(rows),
        "samples_per_domain": per_domain,
    }
    by_reason: dict[str, int] = {}
    for s in skipped:
        by_reason[s.reason] = by_reason.get(s.reason, 0) + 1
    if skipped:
        print(f"data engine: {len(skipped)} skipped ({', '.join(f'{k} {v}' for k, v in by_reason.items())}); "
              f"every one in {skipped_path}", flush=True)
    metrics = {
        "time/sources_s": t_sources,
        "time/compose_s": t_compose,
        "time/output_s": t_output,
        "throughput/sources_pictures_per_s": _rate(listed, t_sources),
        "throughput/compose_samples_per_s": _rate(len(rows), t_compose),
        "throughput/output_samples_per_s": _rate(len(rows), t_output),
    }
    return {"counts": counts, "skipped": by_reason, "metrics": metrics,
            "files": {"samples": samples_path, "skipped": skipped_path}}
