"""The data engine on natural photos that an installed package ships (matplotlib's sample data,
installed with dprl's train extra): a CUB-layout source with object boxes and an image folder
without, composed; each box in the composites holds its photo's region, found back by comparing
pixels, and a box shifted by a third of its size does not."""
import json
import os

import numpy as np
import pytest
from engine_layouts import cub, write_lines
from PIL import Image

from dprl.config import CompositionConfig, EngineDataConfig, EngineSourceConfig
from dprl.data.engine.build import build_samples

cbook = pytest.importorskip("matplotlib.cbook")

# Regions of the photo (x1, y1, x2, y2) that differ from each other: the face, the hat, the
# medals, the background; each is one "category".
REGIONS = {"face": (150, 120, 370, 380), "hat": (120, 0, 420, 150), "medals": (60, 380, 300, 600),
           "flag": (380, 300, 512, 600)}


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return im.convert("RGB")  # 512 x 600, a JPEG photograph


def _cub_source(root: str, photo: Image.Image) -> str:
    """CUB-200-2011's files over copies of the photo: one class per region, its box that region."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    images, classes, labels, boxes = [], [], [], []
    for c, (name, (x1, y1, x2, y2)) in enumerate(REGIONS.items(), 1):
        classes.append(f"{c} {c:03d}.{name}")
        for k in range(2):
            i = len(images) + 1
            rel = f"{c:03d}.{name}/{k}.jpg"
            os.makedirs(os.path.join(root, "images", os.path.dirname(rel)), exist_ok=True)
            photo.save(os.path.join(root, "images", rel), quality=95)
            images.append(f"{i} {rel}")
            labels.append(f"{i} {c}")
            boxes.append(f"{i} {x1} {y1} {x2 - x1} {y2 - y1}")  # CUB: x y width height
    for name, lines in (("images.txt", images), ("classes.txt", classes),
                        ("image_class_labels.txt", labels), ("bounding_boxes.txt", boxes)):
        write_lines(os.path.join(root, name), lines)
    return root


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_each_box_holds_its_photo_region(photo, tmp_path):
    src = _cub_source(str(tmp_path / "cub"), photo)
    cfg = EngineDataConfig(output_dir=str(tmp_path / "out"), workers=1,
                           sources=[EngineSourceConfig(kind="cub", path=src, domain="bird")],
                           composition=CompositionConfig(samples_per_domain=6, max_pixels=448 * 448,
                                                         image_format="png"))
    result = build_samples(cfg, progress=False)
    assert result["counts"]["samples"] == 6 and result["skipped"] == {}
    rows = [json.loads(line) for line in open(result["files"]["samples"])]
    checked = 0
    for row in rows:
        with Image.open(os.path.join(cfg.output_dir, row["image"])) as im:
            canvas = np.asarray(im.convert("RGB"))  # (H, W, 3)
        for name, box in zip(row["candidate_entities"], row["candidate_boxes_px"]):
            x1, y1, x2, y2 = (int(v) for v in box)
            want = np.asarray(photo.crop(REGIONS[name]).resize((x2 - x1, y2 - y1), Image.BILINEAR))
            got = canvas[y1:y2, x1:x2]
            # The same region resized: close (JPEG and the resampling filter differ a little).
            assert _mae(got, want) < 12, (row["question_id"], name)
            # A box a third of its size to the right holds something else.
            dx = (x2 - x1) // 3
            if x2 + dx <= canvas.shape[1]:
                assert _mae(canvas[y1:y2, x1 + dx:x2 + dx], want) > _mae(got, want) + 10
            checked += 1
    assert checked >= 12


def test_a_photo_folder_without_boxes_uses_the_central_crop(photo, tmp_path):
    root = tmp_path / "folder"
    for name, region in REGIONS.items():
        (root / name).mkdir(parents=True)
        photo.crop(region).save(root / name / "a.jpg", quality=95)
    cfg = EngineDataConfig(output_dir=str(tmp_path / "out"), workers=1,
                           sources=[EngineSourceConfig(kind="image_folder", path=str(root), domain="dog",
                                                       crop=0.5)],
                           composition=CompositionConfig(samples_per_domain=4, max_pixels=224 * 224,
                                                         image_format="png", min_entities=2, max_entities=4))
    result = build_samples(cfg, progress=False)
    assert result["counts"]["samples"] == 4 and result["counts"]["categories"] == {"dog": 4}
    for row in map(json.loads, open(result["files"]["samples"])):
        with Image.open(os.path.join(cfg.output_dir, row["image"])) as im:
            canvas = np.asarray(im.convert("RGB"))  # (H, W, 3)
        for name, box in zip(row["candidate_entities"], row["candidate_boxes_px"]):
            x1, y1, x2, y2 = (int(v) for v in box)
            w, h = REGIONS[name][2] - REGIONS[name][0], REGIONS[name][3] - REGIONS[name][1]
            central = photo.crop(REGIONS[name]).crop((w // 4, h // 4, w - w // 4, h - h // 4))
            want = np.asarray(central.resize((x2 - x1, y2 - y1), Image.BILINEAR))
            whole = np.asarray(photo.crop(REGIONS[name]).resize((x2 - x1, y2 - y1), Image.BILINEAR))
            # The central half of the picture, not all of it (JPEG pictures are decoded at a
            # reduced scale when the tile is small, so the match is looser than from PNG).
            got = canvas[y1:y2, x1:x2]
            assert _mae(got, want) < 20 and _mae(got, want) + 8 < _mae(got, whole), (row["question_id"], name)
