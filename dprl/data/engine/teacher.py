"""Teacher chains of thought, kept by rejection sampling.

A teacher checkpoint (any local model the rollout engine serves) reasons about each composed
picture with the prompt template; the box in its answer is read by the reward parser, and a
chain is kept only when that box has IoU >= iou_threshold with the ground truth. Up to `keep`
distinct accepted chains (best IoU first) per sample become SFT samples, asked with the plain R1
prompt the trained model will see (the teacher's longer instructions are not part of them).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dprl.config.data_engine import TeacherConfig
from dprl.data.engine.asking import Asker, image_request
from dprl.data.prompts import R1_INSTRUCTION


def chain_ious(answers: list[list[str]], rows: list[dict]) -> list[np.ndarray]:
    """IoU of each answer's box with its sample's ground truth (0 for no box), per sample."""
    from dprl.rewards import reward_fn

    flat = [a for group in answers for a in group]
    gts = [row["gt_boxes"] for row, group in zip(rows, answers) for _ in group]
    ious = np.asarray(reward_fn("iou")(flat, boxes=gts), dtype=np.float32) if flat else np.zeros(0)
    out, start = [], 0
    for group in answers:
        out.append(ious[start:start + len(group)])
        start += len(group)
    return out


def accepted(answers: list[str], ious: np.ndarray, threshold: float, keep: int) -> list[tuple[str, float]]:
    """Up to `keep` distinct answers with IoU >= threshold, best first (ties: first sampled)."""
    order = sorted(range(len(answers)), key=lambda i: (-float(ious[i]), i))
    out, seen = [], set()
    for i in order:
        if ious[i] < threshold or answers[i] in seen:
            continue
        seen.add(answers[i])
        out.append((answers[i], float(ious[i])))
        if len(out) == keep:
            break
    return out


def teacher_samples(asker: Asker, rows: list[dict], open_image: Callable, cfg: TeacherConfig) -> tuple[list[dict], dict]:
    """SFT rows (each composed row with `prompt`, `response` and `teacher_iou` set) and counts."""
    requests = [image_request(cfg.template.format(question=r["question"], entity=r["entity"],
                                                  domain=r["domain"]), open_image(r)) for r in rows]
    answers = asker.ask(requests, "teacher")
    per_sample = chain_ious(answers, rows)
    out, chains, kept_samples = [], 0, 0
    for row, group, ious in zip(rows, answers, per_sample):
        chains += len(group)
        good = accepted(group, ious, cfg.iou_threshold, cfg.keep)
        kept_samples += bool(good)
        for j, (text, iou) in enumerate(good):
            qid = row["question_id"] if j == 0 else f"{row['question_id']}-{j}"
            out.append(row | {"question_id": qid, "prompt": row["question"] + R1_INSTRUCTION,
                              "response": text, "teacher_iou": iou})
    stats = {"samples": len(rows), "chains": chains, "accepted_chains": len(out),
             "samples_kept": kept_samples,
             "acceptance_rate": len(out) / chains if chains else 0.0,
             "mean_iou": float(np.mean(np.concatenate(per_sample))) if chains else 0.0}
    return out, stats
