"""Output: composites -> rows in KVG-Bench's schema, as `dprl world` writes them.

Layout of the output folder (the world's, so dprl.data.kvg and `dprl sft/grpo/eval` read it as
they read the world's files):
    kvg_<split>.jsonl             one grounding sample per line
    images/kvg_<split>/<id>.<ext> the composites
    skipped.jsonl                 every picture, category or sample skipped: reason, where, message

A row carries the world's fields: question_id, question (the world's grounding question),
image (relative to the file's folder), answer (Qwen2-VL box string, 0-1000), category (the
domain, as KVG-Bench names it), domain, entity, seen, split, prompt (question + the R1
instruction), gt_boxes (0-1000), gt_boxes_px, image_width, image_height, candidate_entities,
candidate_boxes (0-1000); and the composition's own: candidate_boxes_px, candidate_sources, layout.

`response`, the chain of thought SFT learns, is written only when one is given: a composite
nobody has reasoned about yet has no `response` field at all (not an empty one), so `dprl sft`
refuses such a file by naming the missing field, while `dprl grpo` and `dprl eval`, which need
no response, read it as it is.
"""
from __future__ import annotations

import json
import os
import re

from dprl.data.engine.compose import Composite
from dprl.data.engine.sources import Skipped
from dprl.data.prompts import R1_INSTRUCTION, box_string, grounding_question


def norm1000(box, width: int, height: int) -> list[float]:
    """Pixel box -> Qwen2-VL's 0-1000 coordinates (x over the width, y over the height)."""
    x1, y1, x2, y2 = box
    return [float(round(x1 * 1000 / width)), float(round(y1 * 1000 / height)),
            float(round(x2 * 1000 / width)), float(round(y2 * 1000 / height))]


def sample_id(split: str, domain: str, index: int) -> str:
    """A sample's question_id; the domain made safe for a file name."""
    return f"engine-{split}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', domain)}-{index:05d}"


def image_relpath(split: str, qid: str, image_format: str) -> str:
    return os.path.join("images", f"kvg_{split}", f"{qid}.{image_format}")


def grounding_row(comp: Composite, split: str, image: str, seen: bool, response: str | None = None) -> dict:
    """The sample's row; `image` is its path relative to the output folder."""
    target = comp.placements[comp.target]
    gt = norm1000(target.box, comp.width, comp.height)
    question = grounding_question(target.entity.category)
    row = {
        # KVG-Bench's schema
        "question_id": comp.sample_id,
        "question": question,
        "image": image,
        "answer": box_string(gt),
        "category": comp.domain,
        # what SFT / GRPO / the baselines need, as the world writes them
        "domain": comp.domain,
        "entity": target.entity.category,
        "seen": seen,
        "split": split,
        "prompt": question + R1_INSTRUCTION,
    }
    if response is not None:
        row["response"] = response
    row |= {
        "gt_boxes": [gt],
        "gt_boxes_px": [[float(v) for v in target.box]],
        "image_width": comp.width,
        "image_height": comp.height,
        "candidate_entities": [p.entity.category for p in comp.placements],
        "candidate_boxes": [norm1000(p.box, comp.width, comp.height) for p in comp.placements],
        # the composition's own
        "candidate_boxes_px": [[float(v) for v in p.box] for p in comp.placements],
        "candidate_sources": [p.entity.source_id for p in comp.placements],
        "layout": comp.layout,
    }
    return row


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def write_samples(output_dir: str, split: str, rows: list[dict]) -> str:
    """Writes `<output_dir>/kvg_<split>.jsonl`; -> its path."""
    os.makedirs(output_dir, exist_ok=True)
    return write_jsonl(os.path.join(output_dir, f"kvg_{split}.jsonl"), rows)


def write_skipped(output_dir: str, skipped: list[Skipped]) -> str:
    """Writes `<output_dir>/skipped.jsonl` (empty when nothing was skipped); -> its path."""
    os.makedirs(output_dir, exist_ok=True)
    return write_jsonl(os.path.join(output_dir, "skipped.jsonl"), [s.to_dict() for s in skipped])
