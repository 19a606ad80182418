"""Sources -> composition -> output for one `EngineDataConfig`: the data half of the data engine.

`build_samples` runs the three stages; a stage that decides which categories to keep (the
knowledge filter) runs in between as its `keep`. `read_sources` and `compose_samples` are the
first two on their own.

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
from dataclasses import dataclass, field
from typing import Callable, Collection

from dprl.config import ConfigError, EngineDataConfig
from dprl.data.engine.compose import plan_composite, read_confusion, render
from dprl.data.engine.output import (grounding_row, image_relpath, sample_id, write_samples,
                                     write_skipped)
from dprl.data.engine.sources import EntityImage, Skipped, read_source

CHUNK = 32  # composites per task: enough to amortise a task's overhead, small enough to balance
SHOWN_PER_REASON = 5  # skip messages printed per reason

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


@dataclass
class StageLog:
    """What the stages skipped, and the first few messages of each reason printed as they come
    (all of them go to skipped.jsonl)."""

    skipped: list[Skipped] = field(default_factory=list)
    shown: dict[str, int] = field(default_factory=dict)

    def add(self, skipped: list[Skipped]) -> None:
        self.skipped += skipped
        for s in skipped:
            self.shown[s.reason] = self.shown.get(s.reason, 0) + 1
            if self.shown[s.reason] <= SHOWN_PER_REASON:
                print(f"data engine: skipped ({s.reason}): {s.message}", flush=True)

    def by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[s.reason] = counts.get(s.reason, 0) + 1
        return counts


def _workers(cfg: EngineDataConfig) -> int:
    return cfg.workers or (os.cpu_count() or 1)


def read_sources(cfg: EngineDataConfig, log: StageLog,
                 progress: bool = True) -> tuple[list[EntityImage], int]:
    """(usable entities of every source, in config then source order; pictures listed)."""
    from tqdm import tqdm

    if not cfg.sources:
        raise ConfigError("sources: expected at least one source (a data set on disk), got []")
    workers = _workers(cfg)
    entities, listed = [], 0
    with (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool:
        for i, src in enumerate(cfg.sources):
            def screen_map(fn, items, i=i, src=src):
                chunk = max(1, min(64, len(items) // (4 * workers)))
                results = pool.map(fn, items, chunksize=chunk) if pool else map(fn, items)
                return tqdm(results, total=len(items), desc=f"source {i} ({src.domain})", unit="picture",
                            disable=not progress)
            read = read_source(src, screen_map)
            entities += read.entities
            listed += read.listed
            log.add(read.skipped)
    return entities, listed


def compose_samples(cfg: EngineDataConfig, entities: list[EntityImage], log: StageLog,
                    progress: bool = True) -> tuple[list[dict], dict[str, int]]:
    """(rows of `composition.samples_per_domain` composites per domain, images written;
    categories per domain composed from). A domain with too few categories is skipped."""
    from tqdm import tqdm

    comp_cfg = cfg.composition
    pools = entity_pools(entities)
    for domain in [d for d, cats in pools.items() if len(cats) < comp_cfg.min_entities]:
        n_cats = len(pools.pop(domain))
        log.add([Skipped("small_domain", domain,
                         f"domain {domain!r} has {n_cats} usable categor{'y' if n_cats == 1 else 'ies'}, "
                         f"fewer than composition.min_entities={comp_cfg.min_entities}; no samples of it")])
    os.makedirs(os.path.join(cfg.output_dir, "images", f"kvg_{cfg.split}"), exist_ok=True)
    confusion = read_confusion(comp_cfg.confusion) if comp_cfg.confusion else {}
    n = comp_cfg.samples_per_domain
    tasks = [(d, s, min(s + CHUNK, n)) for d in pools for s in range(0, n, CHUNK)]
    workers = _workers(cfg)
    rows: list[dict] = []
    with tqdm(total=len(pools) * n, desc="compose", unit="sample", disable=not progress) as bar:
        if workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(workers, initializer=_init_worker,
                                     initargs=(pools, cfg, confusion)) as pool:
                results = pool.map(_compose_task, tasks)
                for task, (task_rows, task_skipped) in zip(tasks, results):
                    rows += task_rows
                    log.add(task_skipped)
                    bar.update(task[2] - task[1])
        else:
            for task in tasks:
                task_rows, task_skipped = compose_range(pools, cfg, confusion, *task)
                rows += task_rows
                log.add(task_skipped)
                bar.update(task[2] - task[1])
    return rows, {d: len(cats) for d, cats in pools.items()}


def _rate(count: int, seconds: float) -> float:
    return count / max(seconds, 1e-9)


def build_samples(cfg: EngineDataConfig, progress: bool = True,
                  keep: Callable[[list[tuple[str, str]]], Collection[tuple[str, str]]] | None = None,
                  log: StageLog | None = None) -> dict:
    """Reads every source, composes `composition.samples_per_domain` samples per domain and
    writes them. `keep(categories)`: given every (domain, category) the sources hold, sorted,
    the ones that go on to composition (all when None), e.g. those the model knows. `log`
    collects what is skipped (a fresh one when None). -> {"counts", "skipped" (per reason),
    "metrics" (time/<stage>_s, throughput/...), "files", "rows"}, the stages being sources
    (listing and screening pictures), compose (drawing, rendering, saving composites) and output
    (writing the rows); the time `keep` takes is in none of them."""
    log = log if log is not None else StageLog()
    t0 = time.perf_counter()
    entities, listed = read_sources(cfg, log, progress)
    t_sources = time.perf_counter() - t0

    usable = len(entities)
    listed_categories = sorted({(e.domain, e.category) for e in entities})
    if keep is not None:
        kept = set(keep(listed_categories))
        entities = [e for e in entities if (e.domain, e.category) in kept]
    t0 = time.perf_counter()
    rows, categories = compose_samples(cfg, entities, log, progress)
    t_compose = time.perf_counter() - t0

    t0 = time.perf_counter()
    samples_path = write_samples(cfg.output_dir, cfg.split, rows)
    skipped_path = write_skipped(cfg.output_dir, log.skipped)
    t_output = time.perf_counter() - t0

    per_domain: dict[str, int] = {}
    for r in rows:
        per_domain[r["domain"]] = per_domain.get(r["domain"], 0) + 1
    by_reason = log.by_reason()
    if log.skipped:
        reasons = ", ".join(f"{k} {v}" for k, v in by_reason.items())
        print(f"data engine: {len(log.skipped)} skipped ({reasons}); every one in {skipped_path}", flush=True)
    counts = {
        "pictures_listed": listed,
        "entities": usable,
        "categories_listed": len(listed_categories),
        "entities_kept": len(entities),  # after `keep`
        "categories": categories,
        "samples": len(rows),
        "samples_per_domain": per_domain,
    }
    metrics = {
        "time/sources_s": t_sources,
        "time/compose_s": t_compose,
        "time/output_s": t_output,
        "throughput/sources_pictures_per_s": _rate(listed, t_sources),
        "throughput/compose_samples_per_s": _rate(len(rows), t_compose),
        "throughput/output_samples_per_s": _rate(len(rows), t_output),
    }
    return {"counts": counts, "skipped": by_reason, "metrics": metrics,
            "files": {"samples": samples_path, "skipped": skipped_path}, "rows": rows}
