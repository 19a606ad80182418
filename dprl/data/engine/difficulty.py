"""The RL set's difficulty filter: keep the prompts the policy gets right sometimes but not always.

A GRPO group whose G answers all score the same has zero advantage everywhere and teaches
nothing. DeepPerception's later version samples the policy n times per prompt and keeps the
prompts with 1..n-1 right (Acc at an IoU threshold); the range is configurable."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from dprl.config.data_engine import DifficultyConfig
from dprl.data.engine.asking import Asker, image_request
from dprl.data.engine.teacher import chain_ious
from dprl.data.prompts import R1_INSTRUCTION


def difficulty_filter(asker: Asker, rows: list[dict], open_image: Callable, cfg: DifficultyConfig) -> tuple[list[dict], dict]:
    """The rows whose success count is in cfg.success_range, each with `policy_successes` set,
    asked as GRPO asks (dprl.train.grpo_data.grounding_request: question + the R1 instruction,
    with the picture); and counts."""
    requests = [image_request(r["question"] + R1_INSTRUCTION, open_image(r)) for r in rows]
    answers = asker.ask(requests, "difficulty")
    lo, hi = cfg.success_range
    kept, counts = [], Counter()
    for row, ious in zip(rows, chain_ious(answers, rows)):
        success = int((ious >= np.float32(cfg.iou_threshold)).sum())
        counts[success] += 1
        if lo <= success <= hi:
            kept.append(row | {"policy_successes": success})
    stats = {"samples": len(rows), "kept": len(kept), "range": [lo, hi],
             "success_histogram": {str(k): counts[k] for k in sorted(counts)}}
    return kept, stats
