"""Loading data sets in KVG-Bench's schema (the real benchmark from a local file, or the world's).

Required fields: question_id, question, image, answer, category. `answer` holds one or more
Qwen2-VL boxes `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` (0-1000) for grounding, or an option
letter for FGVR. `image` is a path (relative to `image_root`, default the file's folder, or
absolute), a datasets Image dict with bytes, or a PIL image. A sample that cannot be used comes
back in `bad` with its id and the reason, never as a crash. Two exceptions are not per-sample:
a question_id used twice raises (predictions are keyed on it, so a duplicate would silently
overwrite an answer and skew the per-domain counts). A ground-truth box written with x2 < x1 or
y2 < y1 is reordered (as written it would score IoU 0 against every answer) and counted in
`Sample.boxes_repaired`; a box of zero area makes its sample bad.
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
    boxes_repaired: int = 0  # ground-truth boxes given with x2 < x1 or y2 < y1, reordered


def repair_boxes(boxes: list[list[float]]) -> tuple[list[list[float]], int, str | None]:
    """(boxes with each corner pair sorted, how many needed it, error or None). The error names
    the first box of zero width or height: no answer can overlap it, so it cannot be scored."""
    fixed, repaired = [], 0
    for x1, y1, x2, y2 in boxes:
        box = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
        repaired += box != [x1, y1, x2, y2]
        if box[0] == box[2] or box[1] == box[3]:
            return boxes, 0, f"ground-truth box ({x1:g},{y1:g}),({x2:g},{y2:g}) has zero area"
        fixed.append(box)
    return fixed, repaired, None


def check_unique_ids(ids: list, path: str) -> None:
    """Raises on the first question_id that appears twice, naming both rows (1-based)."""
    first: dict = {}
    for i, qid in enumerate(ids):
        if qid is None:
            continue
        key = str(qid)
        if key in first:
            raise ValueError(f"{path!r}: question_id {key!r} appears twice (rows {first[key] + 1} and "
                             f"{i + 1}, counting from 1). Predictions are keyed on question_id, so "
                             "each must be unique: renumber or remove one of the two rows.")
        first[key] = i


def load_rows(path: str):
    """The file as a `datasets.Dataset` (JSONL/JSON or parquet)."""
    from datasets import load_dataset

    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    kind = "parquet" if path.endswith(".parquet") else "json"
    return undecoded(load_dataset(kind, data_files={"test": path}, split="test"))


def undecoded(rows):
    """`rows` with its image columns left as {"bytes", "path"} dicts (open_image decodes them one
    at a time): reading the rows must not decode every picture, nor stop at the first corrupt one,
    which is then only its own sample's problem."""
    from datasets import Image

    for name, feature in rows.features.items():
        if isinstance(feature, Image) and feature.decode:
            rows = rows.cast_column(name, Image(decode=False))
    return rows


def open_image(image, image_root: str):
    """PIL RGB image from a path / {"bytes", "path"} dict / PIL image; raises with the reason."""
    from PIL import Image

    if hasattr(image, "convert"):
        return image.convert("RGB")
    with Image.open(image_source(image, image_root)) as im:
        return im.convert("RGB")


def image_source(image, image_root: str = ""):
    """What PIL opens for a path (relative to `image_root`) or a {"bytes", "path"} dict: a file
    path or a bytes buffer; raises with the reason when there is none."""
    if isinstance(image, dict):
        if image.get("bytes"):
            return io.BytesIO(image["bytes"])
        image = image.get("path")
    if not isinstance(image, str) or not image:
        raise ValueError(f"no image given ({image!r})")
    path = image if os.path.isabs(image) else os.path.join(image_root, image)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist")
    return path


def load_samples(path: str, task: str = "kvg", image_root: str = "", domains=(),
                 max_per_domain: int = 0, seen_domains=()) -> tuple[list[Sample], list[dict]]:
    """(usable samples, bad samples as {"question_id", "error"}). Raises only for a missing or
    unreadable file, a question_id used twice, or an empty selection."""
    rows = load_rows(path)
    missing = [f for f in REQUIRED if f not in rows.column_names]
    if missing:
        raise ValueError(f"{path!r} lacks the KVG-Bench field(s) {missing}; it has {rows.column_names}")
    check_unique_ids(rows["question_id"], path)
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
        gt, repaired = [], 0
        if task == "kvg":
            gt = answer_boxes(answer)
            if not gt:
                bad.append({"question_id": qid, "error": f"no (x1,y1),(x2,y2) box in answer {answer!r}"})
                continue
            gt, repaired, error = repair_boxes(gt)
            if error:
                bad.append({"question_id": qid, "error": error})
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
        samples.append(Sample(qid, row["question"], image, answer.strip(), domain, bool(seen), gt, row,
                              repaired))
    if not samples:
        raise ValueError(f"no usable samples in {path!r}"
                         + (f" for domains {list(domains)}" if domains else "")
                         + (f" ({len(bad)} bad, first: {bad[0]})" if bad else ""))
    return samples, bad
