"""Scoring answers against ground truth, and the metrics KVG-Bench reports.

Grounding: the box is parsed with the reward engine (dprl.rewards.parse_boxes); IoU is the best
over the sample's ground-truth boxes (dprl.rewards.best_iou); correct means IoU >= threshold
(Acc@0.5). FGVR: the option letter is parsed with dprl.rewards.parse_letters.
"""
from __future__ import annotations

import math

import numpy as np

from dprl.rewards import ParseOptions, analyze, best_iou, parse_letters


def score_grounding(texts: list[str], gt_boxes: list, parse_options: ParseOptions,
                    threshold: float = 0.5) -> list[dict]:
    """One dict per text: pred_box (None when unparsable), iou, correct, parse_fail."""
    boxes = analyze(list(texts), parse_options)[0]  # (N, 4), NaN rows = no box
    ious = best_iou(np.nan_to_num(boxes, nan=0.0), [np.asarray(g, np.float32).reshape(-1, 4) for g in gt_boxes])
    out = []
    for box, iou in zip(boxes, ious):
        fail = bool(np.isnan(box).any())
        iou = 0.0 if fail else float(iou)
        out.append({"pred_box": None if fail else [float(v) for v in box], "iou": iou,
                    "correct": iou >= threshold, "parse_fail": fail})
    return out


def score_choice(texts: list[str], answers: list[str], scope: str) -> list[dict]:
    letters = parse_letters(list(texts), scope=scope)  # (N,) "" where none
    return [{"pred_letter": str(l), "correct": str(l) == a.strip().upper(), "parse_fail": not str(l)}
            for l, a in zip(letters, answers)]


def _group(rows: list[dict]) -> dict:
    n = len(rows)
    m = {"n": n, "acc": sum(r["correct"] for r in rows) / n if n else math.nan,
         "parse_failures": sum(r["parse_fail"] for r in rows)}
    if rows and "iou" in rows[0]:
        m["mean_iou"] = sum(r["iou"] for r in rows) / n
    return m


def metrics(rows: list[dict]) -> dict:
    """Per domain (in data order), seen, unseen and overall. Averages are over samples (KVG-Bench's domains have
    different sizes; the paper's overall lies at the sample-weighted point of its two averages)."""
    domains: dict[str, list] = {}
    for r in rows:
        domains.setdefault(r["domain"], []).append(r)
    return {
        "domains": {d: _group(rs) | {"seen": rs[0]["seen"]} for d, rs in domains.items()},
        "seen": _group([r for r in rows if r["seen"]]),
        "unseen": _group([r for r in rows if not r["seen"]]),
        "overall": _group(rows),
    }


def random_entity_rows(samples, threshold: float = 0.5) -> list[dict]:
    """The random-entity baseline, as its expected score: each candidate counts 1/K."""
    rows = []
    for s in samples:
        cand = np.asarray(s.record["candidate_boxes"], np.float32)  # (K, 4)
        ious = best_iou(cand, [np.asarray(s.gt_boxes, np.float32)] * len(cand))  # (K,)
        rows.append({"question_id": s.question_id, "domain": s.domain, "seen": s.seen,
                     "iou": float(ious.mean()), "correct": float((ious >= threshold).mean()),
                     "parse_fail": False})
    return rows


def largest_entity_rows(samples, threshold: float = 0.5) -> list[dict]:
    rows = []
    for s in samples:
        cand = np.asarray(s.record["candidate_boxes"], np.float32)  # (K, 4)
        pick = cand[int(((cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1])).argmax())]  # (4,)
        iou = float(best_iou(pick[None], [np.asarray(s.gt_boxes, np.float32)])[0])
        rows.append({"question_id": s.question_id, "domain": s.domain, "seen": s.seen, "iou": iou,
                     "correct": iou >= threshold, "parse_fail": False})
    return rows
