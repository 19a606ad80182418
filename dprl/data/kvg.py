"""Loading data sets in KVG-Bench's schema (the real benchmark from a local file, or the world's).

Required fields: question_id, question, image, answer, category. `answer` holds one or more
Qwen2-VL boxes `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` (0-1000) for grounding, or an option
letter for FGVR. `image` is a path (relative to `image_root`, default the file's folder, or
absolute), a datasets Image dict with bytes, or a PIL image. A sample that cannot be used comes
back in `bad` with its id and the reason, never as a crash.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from dprl.data.prompts import answer_boxes

REQUIRED = ("question_id", "question", "image", "answer", "category")


@dataclass
class Sample:
    question_id: str
    question: str
    image: object  # a path or a dict with bytes, opened by `open_image`
    answer: str
    domain: str
    seen: bool
    gt_boxes: list = field(default_factory=list)  # [[x1, y1, x2, y2], ...] 0-1000 (grounding)
    record: dict = field(default_factory=dict)  # the raw row, for baselines and extra fields


def load_rows(path: str):
    """The file as a `datasets.Dataset` (JSONL/JSON or parquet)."""
    from datasets import load_dataset

    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    kind = "parquet" if path.endswith(".parquet") else "json"
    return load_dataset(kind, data_files={"test": path}, split="test")


def open_image(image, image_root: str):
    """PIL RGB image from a path / {"bytes", "path"} dict / PIL image; raises with the reason."""
    from PIL import Image

    if hasattr(image, "convert"):
        return image.convert("RGB")
    if isinstance(image, dict):
        if image.get("bytes"):
            return Image.open(io.BytesIO(image["bytes"])).convert("RGB")
        image = image.get("path")
    if not isinstance(image, str) or not image:
        raise ValueError(f"no image given ({image!r})")
    path = image if os.path.isabs(image) else os.path.join(image_root, image)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist")
    with Image.open(path) as im:
        return im.convert("RGB")


def load_samples(path: str, task: str = "kvg", image_root: str = "", domains=(),
                 max_per_domain: int = 0, seen_domains=()) -> tuple[list[Sample], list[dict]]:
    """(usable samples, bad samples as {"question_id", "error"}). Raises only for a missing or
    unreadable file or an empty selection."""
    rows = load_rows(path)
    missing = [f for f in REQUIRED if f not in rows.column_names]
    if missing:
        raise ValueError(f"{path!r} lacks the KVG-Bench field(s) {missing}; it has {rows.column_names}")
    root = image_root or os.path.dirname(os.path.abspath(path))
    samples, bad, per_domain = [], [], {}
    for i, row in enumerate(rows):
        qid = str(row["question_id"]) if row["question_id"] is not None else f"row-{i}"
        domain = str(row["category"])
        if domains and domain not in domains:
            continue
        if max_per_domain and per_domain.get(domain, 0) >= max_per_domain:
            continue
        answer = row["answer"]
        if not isinstance(answer, str) or not answer.strip():
            bad.append({"question_id": qid, "error": f"unreadable answer {answer!r}"})
            continue
        if not isinstance(row["question"], str) or not row["question"].strip():
            bad.append({"question_id": qid, "error": "empty question"})
            continue
        gt = []
        if task == "kvg":
            gt = answer_boxes(answer)
            if not gt:
                bad.append({"question_id": qid, "error": f"no (x1,y1),(x2,y2) box in answer {answer!r}"})
                continue
        elif not (len(answer.strip()) == 1 and answer.strip().isalpha()):
            bad.append({"question_id": qid, "error": f"answer {answer!r} is not an option letter"})
            continue
        image = row["image"]
        if isinstance(image, str) and not os.path.isabs(image):
            image = os.path.join(root, image)
        if isinstance(image, str) and not os.path.isfile(image):
            bad.append({"question_id": qid, "error": f"image {image!r} does not exist"})
            continue
        seen = row["seen"] if row.get("seen") is not None else domain in seen_domains
        per_domain[domain] = per_domain.get(domain, 0) + 1
        samples.append(Sample(qid, row["question"], image, answer.strip(), domain, bool(seen), gt, row))
    if not samples:
        raise ValueError(f"no usable samples in {path!r}"
                         + (f" for domains {list(domains)}" if domains else "")
                         + (f" ({len(bad)} bad, first: {bad[0]})" if bad else ""))
    return samples, bad
