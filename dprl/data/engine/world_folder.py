"""The synthetic world as an image-folder source: `<out>/<domain>/<category>/<picture>.png`, one
tree per domain, read back with `EngineSourceConfig(kind="image_folder")`.

Two kinds of picture, both of one entity:
  fgvr       the world's fine-grained recognition pictures (fgvr_<split>.jsonl), copied whole:
             one entity, large and centred, on the world's background; what a recognition data
             set without boxes looks like.
  grounding  every entity of the grounding pictures (kvg_<split>.jsonl) cropped to its box
             (candidate_boxes): tiles that are the entity and nothing else.
"""
from __future__ import annotations

import json
import os
import shutil

from dprl.config import EngineSourceConfig


def _rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist: write the world first (`dprl world`)")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _pixel_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """0-1000 -> pixels. Exact for pictures of at most 1000 pixels a side, as the world's are:
    there one 0-1000 step is under a pixel, so rounding back lands on the pixel it came from."""
    x1, y1, x2, y2 = box
    return (round(x1 * width / 1000), round(y1 * height / 1000), round(x2 * width / 1000),
            round(y2 * height / 1000))


def world_image_folders(world_dir: str, out_dir: str, split: str = "train", pictures: str = "fgvr",
                        domains=()) -> dict[str, str]:
    """Writes the world's `split` as one image-folder tree per domain; -> {domain: tree}."""
    from PIL import Image

    if pictures not in ("fgvr", "grounding"):
        raise ValueError(f"pictures: expected 'fgvr' or 'grounding', got {pictures!r}")
    name = f"fgvr_{split}.jsonl" if pictures == "fgvr" else f"kvg_{split}.jsonl"
    trees: dict[str, str] = {}
    for row in _rows(os.path.join(world_dir, name)):
        domain = row["domain"]
        if domains and domain not in domains:
            continue
        tree = trees.setdefault(domain, os.path.join(out_dir, domain))
        src = os.path.join(world_dir, row["image"])
        if pictures == "fgvr":
            folder = os.path.join(tree, row["entity"])
            os.makedirs(folder, exist_ok=True)
            shutil.copyfile(src, os.path.join(folder, os.path.basename(src)))
            continue
        with Image.open(src) as im:
            im = im.convert("RGB")
        for j, (entity, box) in enumerate(zip(row["candidate_entities"], row["candidate_boxes"])):
            folder = os.path.join(tree, entity)
            os.makedirs(folder, exist_ok=True)
            crop = im.crop(_pixel_box(box, row["image_width"], row["image_height"]))
            crop.save(os.path.join(folder, f"{row['question_id']}-{j}.png"), compress_level=1)
    return trees


def world_sources(trees: dict[str, str], **options) -> list[EngineSourceConfig]:
    """One image_folder source per domain tree; `options` set the other source fields."""
    return [EngineSourceConfig(kind="image_folder", path=tree, domain=domain, **options)
            for domain, tree in trees.items()]
